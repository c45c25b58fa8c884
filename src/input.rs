//! Opening a binary and finding its debug information.

use crate::mapped::Mapped;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// A binary and its debug information, mapped.
pub struct BinaryInput {
    pub path: PathBuf,
    pub binary: Mapped,
    /// The PDB (PE) or separate debug file (ELF), and where it was found.
    pub debug: Option<(PathBuf, Mapped)>,
}

impl BinaryInput {
    /// Opens `path` and its debug information: `debug` when given; for PE, otherwise the PDB
    /// beside the binary (same stem), then the path in the image's CodeView record.
    pub fn open(path: &Path, debug: Option<&Path>) -> Result<Self> {
        let binary =
            Mapped::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let debug_path = match debug {
            Some(debug) => Some(debug.to_path_buf()),
            None => find_pdb(path, binary.bytes()),
        };
        let debug = match debug_path {
            Some(debug_path) => {
                let mapped = Mapped::open(&debug_path)
                    .with_context(|| format!("cannot read {}", debug_path.display()))?;
                Some((debug_path, mapped))
            }
            None => None,
        };
        Ok(BinaryInput {
            path: path.to_path_buf(),
            binary,
            debug,
        })
    }

    /// Reads the binary into the model, then lets go of the resident pages of its files: what
    /// is read from them later is mapped again on demand, so peak memory holds no more than one
    /// input's whole file at a time.
    pub fn load(&self) -> Result<hotpatch_image::Loaded<'_>> {
        let debug = self.debug.as_ref().map(|(_, mapped)| mapped.bytes());
        let loaded = hotpatch_image::load(self.binary.bytes(), debug);
        self.binary.release_resident_pages();
        if let Some((_, mapped)) = &self.debug {
            mapped.release_resident_pages();
        }
        loaded.with_context(|| match &self.debug {
            Some((debug_path, _)) => format!(
                "cannot load {} with {}",
                self.path.display(),
                debug_path.display()
            ),
            None => format!("cannot load {}", self.path.display()),
        })
    }
}

fn find_pdb(path: &Path, binary: &[u8]) -> Option<PathBuf> {
    if hotpatch_image::sniff(binary).ok()? != hotpatch_image::Format::Pe {
        return None;
    }
    let beside = path.with_extension("pdb");
    if beside.is_file() {
        return Some(beside);
    }
    let recorded = hotpatch_image::codeview_record(binary)?.pdb_path;
    let recorded = PathBuf::from(recorded.replace('\\', "/"));
    let candidates = [
        recorded.clone(),
        path.parent().unwrap_or(Path::new(".")).join(&recorded),
        path.parent()
            .unwrap_or(Path::new("."))
            .join(recorded.file_name()?),
    ];
    candidates.into_iter().find(|candidate| candidate.is_file())
}
