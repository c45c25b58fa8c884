//! The two builds every comparing command takes (baseline and fixed, each with its debug
//! information), opened and loaded.

use crate::input::BinaryInput;
use anyhow::{Result, bail};
use hotpatch_image::Loaded;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PairArgs {
    /// The baseline build (PE or ELF).
    pub base: PathBuf,
    /// The fixed build.
    pub fixed: PathBuf,
    /// PDB of the baseline PE (default: beside it, then the path recorded in the image).
    #[arg(long, value_name = "PDB")]
    pub base_pdb: Option<PathBuf>,
    /// PDB of the fixed PE.
    #[arg(long, value_name = "PDB")]
    pub fixed_pdb: Option<PathBuf>,
    /// Separate DWARF debug file of the baseline ELF.
    #[arg(long, value_name = "FILE", conflicts_with = "base_pdb")]
    pub base_debug: Option<PathBuf>,
    /// Separate DWARF debug file of the fixed ELF.
    #[arg(long, value_name = "FILE", conflicts_with = "fixed_pdb")]
    pub fixed_debug: Option<PathBuf>,
}

/// Both builds, mapped.
pub struct Pair {
    pub base: BinaryInput,
    pub fixed: BinaryInput,
}

impl PairArgs {
    pub fn open(&self) -> Result<Pair> {
        let base = BinaryInput::open(
            &self.base,
            self.base_pdb.as_deref().or(self.base_debug.as_deref()),
        )?;
        let fixed = BinaryInput::open(
            &self.fixed,
            self.fixed_pdb.as_deref().or(self.fixed_debug.as_deref()),
        )?;
        Ok(Pair { base, fixed })
    }
}

impl Pair {
    /// Loads both builds; they must be of one format.
    pub fn load(&self) -> Result<(Loaded<'_>, Loaded<'_>)> {
        let base = self.base.load()?;
        let fixed = self.fixed.load()?;
        if base.image.format != fixed.image.format {
            bail!(
                "{} is {:?} but {} is {:?}: a comparison needs two builds of the same binary",
                self.base.path.display(),
                base.image.format,
                self.fixed.path.display(),
                fixed.image.format
            );
        }
        Ok((base, fixed))
    }
}
