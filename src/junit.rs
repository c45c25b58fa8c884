//! `hotpatch check --format junit` and the release report of `hotpatch build`: assessments as
//! JUnit XML for the test tab of CI systems (GitLab, Jenkins, Azure DevOps): one test suite per
//! pair (or per release), one test case for each binary and one per changed, added or
//! line-only function; a blocking finding is a failure naming its rule and reason, an eligible
//! function passes.

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
    /// A failure without findings (a binary only one release tree has).
    failure_message: Option<String>,
    /// Why the case was skipped (a binary the policy leaves out of the release).
    skipped: Option<String>,
}

impl Case<'_> {
    fn fails(&self) -> bool {
        self.skipped.is_none() && (!self.failures.is_empty() || self.failure_message.is_some())
    }
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
    if let Some(why) = &case.skipped {
        let _ = writeln!(xml, "      <skipped message=\"{}\"/>", escape(why));
    } else if let Some(message) = &case.failure_message {
        let _ = writeln!(
            xml,
            "      <failure message=\"{}\" type=\"reboot-required\">{}</failure>",
            escape(message),
            escape(message)
        );
    } else if let Some(first) = case.failures.first() {
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

/// The JUnit XML document of one pair.
pub fn render(input: &Input<'_>) -> String {
    let cases = cases(input);
    let suite = Suite {
        name: input.binary,
        properties: vec![
            ("baseline", input.baseline),
            ("fixed", input.binary),
            ("verdict", input.assessment.verdict.as_str()),
        ],
        cases: cases.iter().map(|case| (input.binary, case)).collect(),
    };
    document("hotpatch check", &[suite])
}

/// One binary of a release, for [`render_release`].
pub enum ReleaseBinary<'a> {
    /// A compared pair.
    Compared(Input<'a>),
    /// A binary only one tree has, or one the policy leaves out: a case of its own.
    Status {
        name: &'a str,
        /// Why it fails (added or removed binaries need a baseline).
        failure: Option<String>,
        /// Why it is skipped (left out by the policy).
        skipped: Option<String>,
    },
}

/// The JUnit XML document of a release: one suite, each binary's cases under its name.
pub fn render_release(
    title: &str,
    properties: &[(&str, &str)],
    binaries: &[ReleaseBinary<'_>],
) -> String {
    let mut owned: Vec<(&str, Vec<Case<'_>>)> = Vec::new();
    for binary in binaries {
        match binary {
            ReleaseBinary::Compared(input) => owned.push((input.binary, cases(input))),
            ReleaseBinary::Status {
                name,
                failure,
                skipped,
            } => owned.push((
                name,
                vec![Case {
                    name: format!("binary {name}"),
                    file: None,
                    failures: Vec::new(),
                    notes: Vec::new(),
                    failure_message: failure.clone(),
                    skipped: skipped.clone(),
                }],
            )),
        }
    }
    let suite = Suite {
        name: title,
        properties: properties.to_vec(),
        cases: owned
            .iter()
            .flat_map(|(name, cases)| cases.iter().map(move |case| (*name, case)))
            .collect(),
    };
    document("hotpatch build", &[suite])
}

/// A `<testsuite>`: cases with their class names.
struct Suite<'a> {
    name: &'a str,
    properties: Vec<(&'a str, &'a str)>,
    cases: Vec<(&'a str, &'a Case<'a>)>,
}

fn document(title: &str, suites: &[Suite<'_>]) -> String {
    let n_tests: usize = suites.iter().map(|s| s.cases.len()).sum();
    let failures = |suite: &Suite<'_>| suite.cases.iter().filter(|(_, c)| c.fails()).count();
    let skipped = |suite: &Suite<'_>| {
        suite
            .cases
            .iter()
            .filter(|(_, c)| c.skipped.is_some())
            .count()
    };
    let n_failures: usize = suites.iter().map(failures).sum();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"{}\" tests=\"{n_tests}\" failures=\"{n_failures}\" errors=\"0\" time=\"0\">",
        escape(title)
    );
    for suite in suites {
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"0\">",
            escape(suite.name),
            suite.cases.len(),
            failures(suite),
            skipped(suite)
        );
        xml.push_str("    <properties>\n");
        for (name, value) in &suite.properties {
            let _ = writeln!(
                xml,
                "      <property name=\"{}\" value=\"{}\"/>",
                escape(name),
                escape(value)
            );
        }
        xml.push_str("    </properties>\n");
        for (classname, case) in &suite.cases {
            write_case(&mut xml, classname, case);
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// The cases of one pair: the binary, then each changed, added or line-only function.
fn cases<'a>(input: &Input<'a>) -> Vec<Case<'a>> {
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
        failure_message: None,
        skipped: None,
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
            failure_message: None,
            skipped: None,
        });
    }
    cases
}
