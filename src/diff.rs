//! `hotpatch diff`: the functions and data a fix changed between two builds.

use crate::input::BinaryInput;
use anyhow::{Result, bail};
use hotpatch_diff::{Cause, Config, DataChangeKind, Diff};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The baseline build (PE or ELF).
    base: PathBuf,
    /// The fixed build.
    fixed: PathBuf,
    /// PDB of the baseline PE (default: beside it, then the path recorded in the image).
    #[arg(long, value_name = "PDB")]
    base_pdb: Option<PathBuf>,
    /// PDB of the fixed PE.
    #[arg(long, value_name = "PDB")]
    fixed_pdb: Option<PathBuf>,
    /// Separate DWARF debug file of the baseline ELF.
    #[arg(long, value_name = "FILE", conflicts_with = "base_pdb")]
    base_debug: Option<PathBuf>,
    /// Separate DWARF debug file of the fixed ELF.
    #[arg(long, value_name = "FILE", conflicts_with = "fixed_pdb")]
    fixed_debug: Option<PathBuf>,
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
    let base_input = BinaryInput::open(
        &args.base,
        args.base_pdb.as_deref().or(args.base_debug.as_deref()),
    )?;
    let fixed_input = BinaryInput::open(
        &args.fixed,
        args.fixed_pdb.as_deref().or(args.fixed_debug.as_deref()),
    )?;
    let base = base_input.load()?;
    let fixed = fixed_input.load()?;
    if base.image.format != fixed.image.format {
        bail!(
            "{} is {:?} but {} is {:?}: a diff needs two builds of the same binary",
            args.base.display(),
            base.image.format,
            args.fixed.display(),
            fixed.image.format
        );
    }
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

fn unified(changed: &hotpatch_diff::ChangedFunction) -> String {
    let old = changed.baseline_listing.join("\n") + "\n";
    let new = changed.fixed_listing.join("\n") + "\n";
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("baseline {}", changed.name),
            &format!(
                "fixed {}",
                changed.fixed_name.as_ref().unwrap_or(&changed.name)
            ),
        )
        .to_string()
}

fn summary(args: &Args, diff: &Diff, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "baseline {}", args.base.display())?;
    writeln!(out, "fixed    {}", args.fixed.display())?;
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
            .map(|cause| match cause {
                Cause::Instructions => "instructions".to_owned(),
                Cause::References { .. } => "references".to_owned(),
                Cause::InlinedCode { inlinees } => {
                    format!("inlined code of {}", inlinees.join(", "))
                }
            })
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
    }
    Ok(())
}
