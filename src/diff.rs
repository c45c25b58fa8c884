//! `hotpatch diff`: the functions and data a fix changed between two builds.

use crate::pair::PairArgs;
use anyhow::Result;
use hotpatch_diff::{Config, DataChangeKind, Diff};
use std::io::Write;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pair: PairArgs,
    /// Print the diff as JSON (schema hotpatch-diff/1, see docs/diff-json.md).
    #[arg(long)]
    json: bool,
    /// Add a unified diff of the normalized disassembly of each changed function.
    #[arg(long)]
    disasm: bool,
    /// Count functions whose only change is a shifted __LINE__ constant as unchanged.
    #[arg(long)]
    ignore_line_only: bool,
}

pub fn run(args: &Args, out: &mut dyn Write) -> Result<u8> {
    let pair = args.pair.open()?;
    let (base, fixed) = pair.load()?;
    let diff = hotpatch_diff::diff(
        &base.image,
        &fixed.image,
        Config {
            ignore_line_only: args.ignore_line_only,
        },
    );
    if args.json {
        let mut value = serde_json::to_value(&diff)?;
        if args.disasm {
            for (entry, changed) in value["changed"]
                .as_array_mut()
                .into_iter()
                .flatten()
                .zip(&diff.changed)
            {
                entry["disasm"] = serde_json::Value::String(unified(changed));
            }
        }
        serde_json::to_writer_pretty(&mut *out, &value)?;
        writeln!(out)?;
    } else {
        summary(args, &diff, out)?;
    }
    Ok(0)
}

pub fn unified(changed: &hotpatch_diff::ChangedFunction) -> String {
    let old = changed.baseline_listing.join("\n") + "\n";
    let new = changed.fixed_listing.join("\n") + "\n";
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(
            // Readable names for people; a match under another name shows that name.
            &format!("baseline {}", changed.display_name),
            &format!(
                "fixed {}",
                changed.fixed_name.as_ref().unwrap_or(&changed.display_name)
            ),
        )
        .to_string()
}

fn summary(args: &Args, diff: &Diff, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "baseline {}", args.pair.base.display())?;
    writeln!(out, "fixed    {}", args.pair.fixed.display())?;
    writeln!(
        out,
        "functions: {} changed, {} added, {} removed, {} renamed, {} line-only, {} unchanged",
        diff.changed.len(),
        diff.added.len(),
        diff.removed.len(),
        diff.renamed.len(),
        diff.line_only.len(),
        diff.unchanged
    )?;
    for changed in &diff.changed {
        let causes: Vec<String> = changed
            .causes
            .iter()
            .map(|cause| cause.describe())
            .collect();
        writeln!(
            out,
            "  changed   {} ({})",
            changed.display_name,
            causes.join("; ")
        )?;
        if let Some(first) = &changed.first_difference {
            writeln!(
                out,
                "            - {}\n            + {}",
                first.baseline, first.fixed
            )?;
        }
        if args.disasm {
            for line in unified(changed).lines() {
                writeln!(out, "            {line}")?;
            }
        }
    }
    for added in &diff.added {
        writeln!(
            out,
            "  added     {} ({} bytes)",
            added.display_name, added.size
        )?;
    }
    for removed in &diff.removed {
        writeln!(
            out,
            "  removed   {} ({} bytes)",
            removed.display_name, removed.size
        )?;
    }
    for renamed in &diff.renamed {
        writeln!(out, "  renamed   {} -> {}", renamed.from, renamed.to)?;
    }
    for line_only in &diff.line_only {
        writeln!(
            out,
            "  line-only {} (moved {:+} lines)",
            line_only.name, line_only.line_delta
        )?;
    }
    for added in &diff.data.added {
        writeln!(
            out,
            "  data added    {} ({:?}, {} bytes)",
            added.name, added.kind, added.size
        )?;
    }
    for removed in &diff.data.removed {
        writeln!(
            out,
            "  data removed  {} ({:?}, {} bytes)",
            removed.name, removed.kind, removed.size
        )?;
    }
    for changed in &diff.data.changed {
        let changes: Vec<String> = changed
            .changes
            .iter()
            .map(|change| match change {
                DataChangeKind::Resized { baseline, fixed } => {
                    format!("resized {baseline} -> {fixed} bytes")
                }
                DataChangeKind::TypeChanged { baseline, fixed } => {
                    format!("type {baseline} -> {fixed}")
                }
                DataChangeKind::LayoutChanged { type_name } => {
                    format!("layout of {type_name} changed")
                }
                DataChangeKind::InitialValueChanged => "initial value changed".to_owned(),
            })
            .collect();
        writeln!(
            out,
            "  data changed  {} ({})",
            changed.name,
            changes.join("; ")
        )?;
    }
    for layout in &diff.types {
        writeln!(
            out,
            "  type changed  {} ({} -> {} bytes)",
            layout.name, layout.baseline_size, layout.fixed_size
        )?;
        for field in &layout.fields {
            writeln!(out, "    field  {}", field.describe())?;
        }
        let users: Vec<&str> = layout
            .users
            .iter()
            .filter(|user| user.status != hotpatch_diff::UserStatus::Unchanged)
            .map(|user| user.display_name.as_str())
            .collect();
        if !users.is_empty() {
            writeln!(out, "    used by changed code  {}", users.join(", "))?;
        }
    }
    Ok(())
}
