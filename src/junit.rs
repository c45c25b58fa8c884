//! `hotpatch check --format junit`: the assessment as JUnit XML for the test tab of CI systems
//! (GitLab, Jenkins, Azure DevOps): one test suite per pair, one test case for the binary and
//! one per changed, added or line-only function; a blocking finding is a failure naming its
//! rule and reason, an eligible function passes.

use crate::source::Sources;
use hotpatch_policy::{Assessment, Finding, Verdict};
use std::fmt::Write as _;

/// What a JUnit report is written from.
pub struct Input<'a> {
    pub assessment: &'a Assessment,
    pub sources: &'a Sources,
    /// The fixed build, the suite's name.
    pub binary: &'a str,
    pub baseline: &'a str,
    /// Readable names of functions by symbol name, for test case names.
    pub names: &'a crate::check::ReadableNames<'a>,
}

/// Escapes text for an XML attribute or element, dropping characters XML 1.0 cannot hold.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if u32::from(c) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// One `<testcase>`: its name, where its source is, and the findings that make it fail.
struct Case<'a> {
    name: String,
    file: Option<(String, u32)>,
    failures: Vec<&'a Finding>,
    /// Findings that do not block (info, waived), shown as output.
    notes: Vec<&'a Finding>,
}

fn finding_line(finding: &Finding) -> String {
    let mut line = format!(
        "{} {} ({}): {}",
        finding.rule,
        finding.name,
        finding.severity.as_str(),
        finding.reason
    );
    if let Some(waiver) = &finding.waived {
        let _ = write!(
            line,
            " [waived by {}: {}]",
            waiver.approved_by, waiver.reason
        );
    }
    line
}

fn write_case(xml: &mut String, suite: &str, case: &Case<'_>) {
    let _ = write!(
        xml,
        "    <testcase name=\"{}\" classname=\"{}\"",
        escape(&case.name),
        escape(suite)
    );
    if let Some((file, line)) = &case.file {
        let _ = write!(xml, " file=\"{}\" line=\"{line}\"", escape(file));
    }
    xml.push_str(" time=\"0\">\n");
    if let Some(first) = case.failures.first() {
        let rules: Vec<&str> = case.failures.iter().map(|f| f.rule.as_str()).collect();
        let body: Vec<String> = case
            .failures
            .iter()
            .map(|f| format!("{}\nInstead: {}", finding_line(f), f.remedy))
            .collect();
        let _ = writeln!(
            xml,
            "      <failure message=\"{}\" type=\"{}\">{}</failure>",
            escape(&format!(
                "reboot-required: {} {}: {}",
                first.rule, first.name, first.reason
            )),
            escape(&rules.join(" ")),
            escape(&body.join("\n\n"))
        );
    }
    if !case.notes.is_empty() {
        let notes: Vec<String> = case.notes.iter().map(|f| finding_line(f)).collect();
        let _ = writeln!(
            xml,
            "      <system-out>{}</system-out>",
            escape(&notes.join("\n"))
        );
    }
    xml.push_str("    </testcase>\n");
}

/// The JUnit XML document.
pub fn render(input: &Input<'_>) -> String {
    let assessment = input.assessment;
    let mut cases = Vec::new();
    let binary_findings: Vec<&Finding> = assessment
        .findings
        .iter()
        .filter(|f| f.function.is_none())
        .collect();
    // The binary's case carries the binary's verdict: it fails whenever the binary needs a
    // reboot, naming its own findings, or else the functions' blocking findings.
    let mut binary_failures: Vec<&Finding> = binary_findings
        .iter()
        .copied()
        .filter(|f| f.blocks())
        .collect();
    if assessment.verdict == Verdict::RebootRequired && binary_failures.is_empty() {
        binary_failures = assessment.findings.iter().filter(|f| f.blocks()).collect();
    }
    cases.push(Case {
        name: format!("binary {}", input.binary),
        file: None,
        failures: binary_failures,
        notes: binary_findings
            .iter()
            .copied()
            .filter(|f| !f.blocks())
            .collect(),
    });
    for function in &assessment.functions {
        let own = |blocks: bool| -> Vec<&Finding> {
            assessment
                .findings
                .iter()
                .filter(|f| f.function.as_deref() == Some(function.function.as_str()))
                .filter(|f| f.blocks() == blocks)
                .collect()
        };
        let mut failures = own(true);
        if function.verdict == Verdict::RebootRequired && failures.is_empty() {
            // Blocked by a binary-scope finding about data its new code uses.
            failures = binary_findings
                .iter()
                .copied()
                .filter(|f| f.blocks() && function.rules.contains(&f.rule))
                .collect();
        }
        let file = input
            .sources
            .get(&function.function)
            .and_then(|source| source.primary())
            .map(|line| (line.file.shown().to_owned(), line.line));
        cases.push(Case {
            name: format!(
                "{} ({})",
                input.names.get(&function.function),
                function.change
            ),
            file,
            failures,
            notes: own(false),
        });
    }
    let n_failures = cases.iter().filter(|c| !c.failures.is_empty()).count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"hotpatch check\" tests=\"{}\" failures=\"{n_failures}\" errors=\"0\" time=\"0\">",
        cases.len()
    );
    let _ = writeln!(
        xml,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{n_failures}\" errors=\"0\" skipped=\"0\" time=\"0\">",
        escape(input.binary),
        cases.len()
    );
    xml.push_str("    <properties>\n");
    for (name, value) in [
        ("baseline", input.baseline),
        ("fixed", input.binary),
        ("verdict", assessment.verdict.as_str()),
    ] {
        let _ = writeln!(
            xml,
            "      <property name=\"{name}\" value=\"{}\"/>",
            escape(value)
        );
    }
    xml.push_str("    </properties>\n");
    for case in &cases {
        write_case(&mut xml, input.binary, case);
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}
