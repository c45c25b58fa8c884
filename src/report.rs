//! `hotpatch report`: the audit report of one binary in JSON, Markdown or one self-contained
//! HTML page; and `hotpatch rules`: the rule catalogue.

use crate::check::{ReadableNames, SourceArgs, assess, exit_code, read_policy};
use crate::pair::PairArgs;
use crate::source::{FunctionSource, SourceRoots, Sources};
use anyhow::Result;
use hotpatch_diff::{ChangedFunction, Diff};
use hotpatch_image::Image;
use hotpatch_policy::{Assessment, Finding};
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ReportFormat {
    Json,
    Markdown,
    Html,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pair: PairArgs,
    /// Policy file (TOML), as for `check`.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value = "markdown")]
    format: ReportFormat,
    /// Write the report to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    sources: SourceArgs,
}

#[derive(clap::Args)]
pub struct RulesArgs {
    /// Print the catalogue as JSON instead of Markdown.
    #[arg(long)]
    json: bool,
}

/// One build as the report shows it.
#[derive(Serialize)]
struct BuildSummary {
    path: String,
    format: hotpatch_image::Format,
    identity: hotpatch_image::Identity,
}

/// The JSON report: both builds, the diff and the assessment.
#[derive(Serialize)]
struct Report<'a> {
    schema: &'static str,
    baseline: BuildSummary,
    fixed: BuildSummary,
    assessment: &'a Assessment,
    diff: &'a Diff,
    /// Markdown and HTML name functions by their readable names; JSON by symbol names.
    #[serde(skip)]
    names: ReadableNames<'a>,
    /// Source locations of the changed, added and line-only functions, by the name
    /// `assessment` and `diff` use (added after the first release of the schema).
    sources: &'a Sources,
}

fn summary(path: &std::path::Path, image: &Image<'_>) -> BuildSummary {
    BuildSummary {
        path: path.display().to_string(),
        format: image.format,
        identity: image.identity.clone(),
    }
}

pub fn run(args: &Args, out: &mut dyn Write) -> Result<u8> {
    let policy = read_policy(args.policy.as_deref())?;
    let pair = args.pair.open()?;
    let (base, fixed) = pair.load()?;
    let outcome = assess(&pair, &base, &fixed, &policy);
    let roots = SourceRoots::new(&args.sources.source_roots);
    let sources = crate::source::locate(&base.image, &fixed.image, &outcome.diff, &roots);
    let report = Report {
        schema: "hotpatch-report/1",
        baseline: summary(&pair.base.path, &base.image),
        fixed: summary(&pair.fixed.path, &fixed.image),
        assessment: &outcome.assessment,
        diff: &outcome.diff,
        names: ReadableNames::new(&base.image, &fixed.image),
        sources: &sources,
    };
    let text = match args.format {
        ReportFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        ReportFormat::Markdown => markdown(&report),
        ReportFormat::Html => html(&report),
    };
    match &args.output {
        Some(path) => fs_err::write(path, text)?,
        None => out.write_all(text.as_bytes())?,
    }
    Ok(exit_code(outcome.assessment.verdict))
}

/// The self-contained HTML audit report of one binary of a release (`hotpatch build` puts it
/// into the package). Both builds are named by `name`, the binary's path relative to its release
/// tree, so the page does not depend on where the trees were.
pub fn release_html(
    name: &str,
    base: &Image<'_>,
    fixed: &Image<'_>,
    outcome: &crate::check::Outcome,
) -> String {
    let path = std::path::Path::new(name);
    let roots = SourceRoots::new(&[]);
    let sources = crate::source::locate(base, fixed, &outcome.diff, &roots);
    html(&Report {
        schema: "hotpatch-report/1",
        baseline: summary(path, base),
        fixed: summary(path, fixed),
        assessment: &outcome.assessment,
        diff: &outcome.diff,
        names: ReadableNames::new(base, fixed),
        sources: &sources,
    })
}

pub fn rules(args: &RulesArgs, out: &mut dyn Write) -> Result<u8> {
    if args.json {
        serde_json::to_writer_pretty(&mut *out, hotpatch_policy::CATALOGUE)?;
        writeln!(out)?;
    } else {
        out.write_all(hotpatch_policy::catalogue_markdown().as_bytes())?;
    }
    Ok(0)
}

fn format_name(format: hotpatch_image::Format) -> &'static str {
    match format {
        hotpatch_image::Format::Pe => "PE32+",
        hotpatch_image::Format::Elf => "ELF64",
    }
}

fn identity_line(build: &BuildSummary) -> String {
    let identity = &build.identity;
    let mut line = format!(
        "{}, {} bytes, SHA-256 `{}`",
        format_name(build.format),
        identity.file_size,
        identity.sha256
    );
    if let Some(pe) = &identity.pe {
        let _ = write!(
            line,
            ", TimeDateStamp {:#010x}, CheckSum {:#010x}",
            pe.time_date_stamp, pe.checksum
        );
        if let Some(cv) = &pe.codeview {
            let _ = write!(line, ", PDB {{{}}} age {}", cv.guid, cv.age);
        }
    }
    if let Some(build_id) = identity.elf.as_ref().and_then(|e| e.build_id.as_ref()) {
        let _ = write!(line, ", build-id `{build_id}`");
    }
    line
}

fn markdown(report: &Report<'_>) -> String {
    let assessment = report.assessment;
    let mut md = String::new();
    let _ = writeln!(md, "# Hotpatch audit report: `{}`\n", report.fixed.path);
    let _ = writeln!(md, "**Verdict: {}**\n", assessment.verdict.as_str());
    let _ = writeln!(md, "| build | path | identity |\n|---|---|---|");
    let _ = writeln!(
        md,
        "| baseline | `{}` | {} |",
        report.baseline.path,
        identity_line(&report.baseline)
    );
    let _ = writeln!(
        md,
        "| fixed | `{}` | {} |\n",
        report.fixed.path,
        identity_line(&report.fixed)
    );
    let diff = report.diff;
    let _ = writeln!(
        md,
        "{} changed, {} added, {} removed, {} renamed, {} line-only, {} unchanged functions; {} data symbols added, {} removed, {} changed; {} type layouts changed.\n",
        diff.changed.len(),
        diff.added.len(),
        diff.removed.len(),
        diff.renamed.len(),
        diff.line_only.len(),
        diff.unchanged,
        diff.data.added.len(),
        diff.data.removed.len(),
        diff.data.changed.len(),
        diff.types.len()
    );
    md.push_str("## Functions\n\n");
    if assessment.functions.is_empty() {
        md.push_str("No function changed.\n\n");
    } else {
        md.push_str("| function | change | source | verdict | rules |\n|---|---|---|---|---|\n");
        for function in &assessment.functions {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | {} |",
                report.names.get(&function.function),
                function.change,
                report
                    .sources
                    .get(&function.function)
                    .map(source_cell)
                    .unwrap_or_default(),
                function.verdict.as_str(),
                function
                    .rules
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        md.push('\n');
    }
    md.push_str("## Findings\n");
    for finding in &assessment.findings {
        markdown_finding(&mut md, finding, &report.names, report.sources);
    }
    if assessment.findings.is_empty() {
        md.push_str("\nNone.\n");
    }
    if !diff.changed.is_empty() {
        md.push_str("\n## Changed code\n");
        for changed in &diff.changed {
            let _ = writeln!(md, "\n### `{}`\n", changed.display_name);
            if let Some(source) = report.sources.get(&changed.name) {
                let _ = writeln!(md, "{}\n", source_sentence(source));
            }
            md.push_str("```diff\n");
            md.push_str(&crate::diff::unified(changed));
            md.push_str("```\n");
        }
    }
    if !diff.types.is_empty() {
        md.push_str("\n## Type layouts\n");
        for layout in &diff.types {
            let _ = writeln!(
                md,
                "\n### `{}` ({} -> {} bytes)\n",
                layout.name, layout.baseline_size, layout.fixed_size
            );
            if layout.fields.is_empty() {
                md.push_str("No field differs; only the size does.\n");
            } else {
                md.push_str("| field | change | baseline | fixed |\n|---|---|---|---|\n");
                for row in field_rows(layout) {
                    let cell = |place: &str| {
                        if place.is_empty() {
                            String::new()
                        } else {
                            format!("`{place}`")
                        }
                    };
                    let _ = writeln!(
                        md,
                        "| `{}` | {} | {} | {} |",
                        row.name,
                        row.changes,
                        cell(&row.baseline),
                        cell(&row.fixed)
                    );
                }
            }
            let _ = writeln!(
                md,
                "\nUsed by (parameters or locals): {}",
                users_sentence(layout)
            );
        }
    }
    if !assessment.disabled_rules.is_empty() {
        let _ = writeln!(
            md,
            "\n## Rules disabled by policy\n\n{}",
            assessment.disabled_rules.join(", ")
        );
    }
    md
}

/// `fixed.c:15-20, fix at line 17`, for the function tables.
fn source_cell(source: &FunctionSource) -> String {
    let mut cell = source.range_text().unwrap_or_default();
    if let Some(line) = &source.first_difference {
        if !cell.is_empty() {
            cell.push_str(", ");
        }
        let _ = write!(cell, "fix at {}:{}", line.file.shown(), line.line);
    }
    cell
}

/// Where a changed function is and where its first difference lies, in one sentence.
fn source_sentence(source: &FunctionSource) -> String {
    let mut sentence = match source.range_text() {
        Some(range) => format!("Source: {range}"),
        None => "Source: unknown (no line table covers it)".to_owned(),
    };
    if let Some(line) = &source.first_difference {
        let _ = write!(
            sentence,
            "; first difference at {}:{}",
            line.file.shown(),
            line.line
        );
    }
    if let Some(inlined) = &source.inlined_from {
        let _ = write!(sentence, ", in code inlined from {}", inlined.inlinee);
        if let Some(line) = &inlined.line {
            let _ = write!(sentence, " ({}:{})", line.file.shown(), line.line);
        }
    }
    sentence.push('.');
    sentence
}

fn markdown_finding(
    md: &mut String,
    finding: &Finding,
    names: &ReadableNames<'_>,
    sources: &Sources,
) {
    let scope = finding
        .function
        .as_deref()
        .map(|f| {
            let at = sources
                .get(f)
                .and_then(FunctionSource::primary)
                .map(|line| format!(" at `{}:{}`", line.file.shown(), line.line))
                .unwrap_or_default();
            format!("`{}`{at}", names.get(f))
        })
        .unwrap_or_else(|| "binary".into());
    let _ = writeln!(
        md,
        "\n### {} `{}` ({}) on {scope}\n\n{}\n",
        finding.rule,
        finding.name,
        finding.severity.as_str(),
        finding.reason
    );
    for (key, value) in &finding.evidence {
        if value.contains('\n') {
            let _ = writeln!(md, "- {key}:\n\n```\n{}\n```", value.trim_end());
        } else {
            let _ = writeln!(md, "- {key}: `{value}`");
        }
    }
    let _ = writeln!(md, "\nInstead: {}", finding.remedy);
    if let Some(waiver) = &finding.waived {
        let _ = writeln!(md, "\nWaived by {}: {}", waiver.approved_by, waiver.reason);
    }
}

/// One field of a changed type, as the report's layout table shows it.
struct FieldRow {
    name: String,
    /// `moved`, `added`, `moved, retyped`, ...
    changes: String,
    /// `+4 unsigned int`, empty when the build lacks the field.
    baseline: String,
    fixed: String,
}

fn field_rows(layout: &hotpatch_diff::TypeChange) -> Vec<FieldRow> {
    let place = |place: &Option<hotpatch_diff::FieldPlace>| {
        place.as_ref().map_or_else(String::new, |p| match p.bits {
            Some((bit, width)) => format!("+{} bits {bit}:{width} {}", p.offset, p.type_name),
            None => format!("+{} {}", p.offset, p.type_name),
        })
    };
    layout
        .fields
        .iter()
        .map(|field| FieldRow {
            name: field.name.clone(),
            changes: field
                .changes
                .iter()
                .map(|kind| match kind {
                    hotpatch_diff::FieldChangeKind::Added => "added",
                    hotpatch_diff::FieldChangeKind::Removed => "removed",
                    hotpatch_diff::FieldChangeKind::Moved => "moved",
                    hotpatch_diff::FieldChangeKind::Retyped => "type changed",
                    hotpatch_diff::FieldChangeKind::Grew => "grew",
                    hotpatch_diff::FieldChangeKind::Shrank => "shrank",
                    hotpatch_diff::FieldChangeKind::BitsChanged => "bits changed",
                })
                .collect::<Vec<_>>()
                .join(", "),
            baseline: place(&field.baseline),
            fixed: place(&field.fixed),
        })
        .collect()
}

/// `session_open (changed), main (unchanged)`, or a sentence saying there are none.
fn users_sentence(layout: &hotpatch_diff::TypeChange) -> String {
    if layout.users.is_empty() {
        return "no function, as the debug information types them.".to_owned();
    }
    layout
        .users
        .iter()
        .map(|user| {
            let status = match user.status {
                hotpatch_diff::UserStatus::Changed => "changed",
                hotpatch_diff::UserStatus::Added => "added",
                hotpatch_diff::UserStatus::Removed => "removed",
                hotpatch_diff::UserStatus::Unchanged => "unchanged",
            };
            match &user.through {
                Some(through) => format!("{} ({status}, through {through})", user.display_name),
                None => format!("{} ({status})", user.display_name),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}\
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;margin-top:2em}code,pre,td.asm{font-family:ui-monospace,monospace;font-size:12px}\
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top}\
.verdict{display:inline-block;padding:4px 12px;border-radius:4px;font-weight:bold;color:#fff}\
.hotpatch-eligible{background:#2e7d32}.reboot-required{background:#c62828}.review{background:#ef6c00}.info{background:#607d8b}\
.sev{color:#fff;border-radius:3px;padding:0 6px;font-size:12px}td.del{background:#fde7e9}td.ins{background:#e6f4ea}\
pre{background:#f6f8fa;padding:8px;overflow:auto}details{margin:.5em 0}td.src{font-family:ui-monospace,monospace;font-size:12px;background:#fff8c5}";

fn html(report: &Report<'_>) -> String {
    let assessment = report.assessment;
    let diff = report.diff;
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>hotpatch report: {}</title><style>{STYLE}</style></head><body>\n",
        escape(&report.fixed.path)
    );
    let _ = writeln!(
        page,
        "<h1>Hotpatch audit report: <code>{}</code></h1>",
        escape(&report.fixed.path)
    );
    let verdict = assessment.verdict.as_str();
    let _ = writeln!(
        page,
        "<p><span class=\"verdict {verdict}\">{verdict}</span></p>"
    );
    page.push_str("<table><tr><th>build</th><th>path</th><th>identity</th></tr>\n");
    for (label, build) in [("baseline", &report.baseline), ("fixed", &report.fixed)] {
        let _ = writeln!(
            page,
            "<tr><td>{label}</td><td><code>{}</code></td><td>{}</td></tr>",
            escape(&build.path),
            escape(&identity_line(build).replace('`', ""))
        );
    }
    page.push_str("</table>\n<h2>Functions</h2>\n");
    if assessment.functions.is_empty() {
        page.push_str("<p>No function changed.</p>\n");
    } else {
        page.push_str(
            "<table><tr><th>function</th><th>change</th><th>source</th><th>verdict</th><th>rules</th></tr>\n",
        );
        for function in &assessment.functions {
            let verdict = function.verdict.as_str();
            let _ = writeln!(
                page,
                "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td><span class=\"sev {verdict}\">{verdict}</span></td><td>{}</td></tr>",
                escape(report.names.get(&function.function)),
                function.change,
                escape(
                    &report
                        .sources
                        .get(&function.function)
                        .map(source_cell)
                        .unwrap_or_default()
                ),
                function
                    .rules
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        page.push_str("</table>\n");
    }
    page.push_str("<h2>Findings</h2>\n");
    if assessment.findings.is_empty() {
        page.push_str("<p>None.</p>\n");
    }
    for finding in &assessment.findings {
        let severity = finding.severity.as_str();
        let scope = match finding.function.as_deref() {
            Some(function) => match report
                .sources
                .get(function)
                .and_then(FunctionSource::primary)
            {
                Some(line) => format!(
                    "{} at {}:{}",
                    report.names.get(function),
                    line.file.shown(),
                    line.line
                ),
                None => report.names.get(function).to_owned(),
            },
            None => "binary".to_owned(),
        };
        let _ = writeln!(
            page,
            "<h3>{} <code>{}</code> <span class=\"sev {severity}\">{severity}</span> on <code>{}</code></h3><p>{}</p><table>",
            finding.rule,
            finding.name,
            escape(&scope),
            escape(&finding.reason)
        );
        for (key, value) in &finding.evidence {
            let _ = writeln!(
                page,
                "<tr><th>{}</th><td><pre>{}</pre></td></tr>",
                escape(key),
                escape(value)
            );
        }
        let _ = writeln!(page, "</table><p>Instead: {}</p>", escape(finding.remedy));
        if let Some(waiver) = &finding.waived {
            let _ = writeln!(
                page,
                "<p>Waived by {}: {}</p>",
                escape(&waiver.approved_by),
                escape(&waiver.reason)
            );
        }
    }
    if !diff.changed.is_empty() {
        page.push_str("<h2>Changed code</h2>\n");
        let cwd = std::env::current_dir().unwrap_or_default();
        for changed in &diff.changed {
            let source = report.sources.get(&changed.name);
            // The fixed build's source line of the first difference, when the file is readable
            // here (after --source-root).
            let fix_line = source
                .and_then(|s| s.first_difference.as_ref())
                .and_then(|line| {
                    let text = crate::source::read_line(&line.file, line.line, &cwd)?;
                    Some(format!(
                        "{}:{}: {}",
                        line.file.shown(),
                        line.line,
                        text.trim()
                    ))
                });
            let _ = writeln!(
                page,
                "<details open><summary><code>{}</code></summary><p>{}</p>{}</details>",
                escape(&changed.display_name),
                escape(&source.map(source_sentence).unwrap_or_default()),
                side_by_side(changed, fix_line.as_deref())
            );
        }
    }
    if !diff.types.is_empty() {
        page.push_str("<h2>Type layouts</h2>\n");
        for layout in &diff.types {
            let _ = writeln!(
                page,
                "<h3><code>{}</code> ({} -&gt; {} bytes)</h3><table><tr><th>field</th><th>change</th><th>baseline</th><th>fixed</th></tr>",
                escape(&layout.name),
                layout.baseline_size,
                layout.fixed_size,
            );
            for row in field_rows(layout) {
                let _ = writeln!(
                    page,
                    "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>",
                    escape(&row.name),
                    escape(&row.changes),
                    escape(&row.baseline),
                    escape(&row.fixed)
                );
            }
            let _ = writeln!(
                page,
                "</table><p>Used by (parameters or locals): {}</p>",
                escape(&users_sentence(layout))
            );
        }
    }
    if !assessment.disabled_rules.is_empty() {
        let _ = writeln!(
            page,
            "<h2>Rules disabled by policy</h2><p>{}</p>",
            escape(&assessment.disabled_rules.join(", "))
        );
    }
    page.push_str("</body></html>\n");
    page
}

/// The normalized disassembly of both builds in two columns, differing rows marked.
/// `fix_line`, the source line of the first difference, stands in a third column beside the
/// first differing row.
fn side_by_side(changed: &ChangedFunction, fix_line: Option<&str>) -> String {
    let old: Vec<&str> = changed
        .baseline_listing
        .iter()
        .map(String::as_str)
        .collect();
    let new: Vec<&str> = changed.fixed_listing.iter().map(String::as_str).collect();
    let mut table =
        String::from("<table><tr><th>baseline</th><th>fixed</th><th>source</th></tr>\n");
    let mut fix_line = fix_line;
    for op in similar::capture_diff_slices(similar::Algorithm::Myers, &old, &new) {
        let (old_range, new_range) = (op.old_range(), op.new_range());
        let rows = old_range.len().max(new_range.len());
        let equal = matches!(op, similar::DiffOp::Equal { .. });
        for row in 0..rows {
            let cell = |lines: &[&str], range: &std::ops::Range<usize>, class: &str| match range
                .clone()
                .nth(row)
            {
                Some(idx) => format!(
                    "<td class=\"asm {}\">{}</td>",
                    if equal { "" } else { class },
                    escape(lines[idx])
                ),
                None => "<td class=\"asm\"></td>".to_owned(),
            };
            let source = if equal { None } else { fix_line.take() };
            let _ = writeln!(
                table,
                "<tr>{}{}<td class=\"src\">{}</td></tr>",
                cell(&old, &old_range, "del"),
                cell(&new, &new_range, "ins"),
                source.map(escape).unwrap_or_default()
            );
        }
    }
    table.push_str("</table>");
    table
}
