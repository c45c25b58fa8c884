//! `hotpatch inspect`: what the readers make of one binary.

use crate::input::BinaryInput;
use anyhow::Result;
use hotpatch_image::{DebugInfoSource, Diagnostic, Image};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The PE or ELF file, or a hotpatch package.
    file: PathBuf,
    /// The PDB of a PE file (default: beside the file, then the path recorded in the image).
    #[arg(long, value_name = "PDB", conflicts_with = "debug")]
    pdb: Option<PathBuf>,
    /// A separate DWARF debug file of an ELF file (from `objcopy --only-keep-debug`).
    #[arg(long, value_name = "FILE")]
    debug: Option<PathBuf>,
    /// Print the whole model as JSON.
    #[arg(long)]
    json: bool,
}

/// The JSON document: the model, plus what could not be read.
#[derive(Serialize)]
struct InspectReport<'a> {
    schema: &'static str,
    #[serde(flatten)]
    image: &'a Image<'a>,
    diagnostics: &'a [Diagnostic],
}

pub fn run(args: &Args, out: &mut dyn Write) -> Result<u8> {
    // A package is a zip: shown from its manifest, not read as a binary.
    let head = {
        use std::io::Read;
        let mut head = [0u8; 4];
        let mut file = fs_err::File::open(&args.file)?;
        let n = file.read(&mut head)?;
        head.get(..n).map(<[u8]>::to_vec).unwrap_or_default()
    };
    if head == crate::package::ZIP_MAGIC {
        let bytes = fs_err::read(&args.file)?;
        return crate::package::inspect(&args.file, &bytes, args.json, out);
    }
    let input = BinaryInput::open(&args.file, args.pdb.as_deref().or(args.debug.as_deref()))?;
    let loaded = input.load()?;
    if args.json {
        let report = InspectReport {
            schema: "hotpatch-inspect/1",
            image: &loaded.image,
            diagnostics: &loaded.diagnostics,
        };
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        summary(&input, &loaded.image, &loaded.diagnostics, out)?;
    }
    Ok(0)
}

fn summary(
    input: &BinaryInput,
    image: &Image<'_>,
    diagnostics: &[Diagnostic],
    out: &mut dyn Write,
) -> Result<()> {
    let debug = match (image.debug_info, &input.debug) {
        (DebugInfoSource::Pdb, Some((path, _))) => format!("PDB {}", path.display()),
        (DebugInfoSource::Dwarf, Some((path, _))) => format!("DWARF from {}", path.display()),
        (DebugInfoSource::Dwarf, None) => "DWARF".into(),
        _ => "none (symbols only)".into(),
    };
    let format = match image.format {
        hotpatch_image::Format::Pe => "PE32+",
        hotpatch_image::Format::Elf => "ELF64",
    };
    writeln!(
        out,
        "{}: {format} {}, debug info: {debug}",
        input.path.display(),
        image.identity.machine.name()
    )?;
    writeln!(out, "  sha256        {}", image.identity.sha256)?;
    if let Some(pe) = &image.identity.pe {
        writeln!(
            out,
            "  pe            TimeDateStamp {:#010x}  SizeOfImage {:#x}  CheckSum {:#010x}",
            pe.time_date_stamp, pe.size_of_image, pe.checksum
        )?;
        if let Some(cv) = &pe.codeview {
            writeln!(
                out,
                "  codeview      {{{}}} age {}  {}",
                cv.guid, cv.age, cv.pdb_path
            )?;
        }
    }
    if let Some(elf) = &image.identity.elf {
        let build_id = elf.build_id.as_deref().unwrap_or("(none)");
        writeln!(
            out,
            "  elf           {}  build-id {build_id}",
            elf.elf_type.name()
        )?;
    }
    let described = image.functions.iter().filter(|f| f.has_debug_info).count();
    let aliases: usize = image.functions.iter().map(|f| f.aliases.len()).sum();
    writeln!(
        out,
        "  functions     {} ({described} with debug info, {aliases} folded names)",
        image.functions.len()
    )?;
    writeln!(out, "  data symbols  {}", image.data_symbols.len())?;
    writeln!(out, "  types         {}", image.types.len())?;
    writeln!(
        out,
        "  lines         {} rows in {} files, {} inline sites",
        image.lines.len(),
        image.source_files.len(),
        image.inline_sites.len()
    )?;
    writeln!(
        out,
        "  sections      {}; imports {}, exports {}, relocations {}, unwind entries {}",
        image.sections.len(),
        image.imports.len(),
        image.exports.len(),
        image.relocations.len(),
        image.unwind.len()
    )?;
    let tls = match &image.tls {
        Some(tls) => format!("{} bytes per thread", tls.block_size),
        None => "none".into(),
    };
    writeln!(
        out,
        "  tls           {tls}; initializers {}",
        image.initializers.len()
    )?;
    if let Some(entry) = image.entry_point {
        writeln!(out, "  entry point   {entry:#x}")?;
    }
    if !diagnostics.is_empty() {
        writeln!(out, "  diagnostics   {}", diagnostics.len())?;
        for diagnostic in diagnostics {
            writeln!(out, "    {}: {}", diagnostic.location, diagnostic.message)?;
        }
    }
    Ok(())
}
