//! The state directory (`--state-dir`, default `/var/lib/hotpatch`): the persisted
//! high-water mark of package sequences per product and channel (replay and downgrade
//! protection), what is installed, the installed packages themselves (for `rollback --to SEQ`
//! and for new processes), and the highest trust-file version seen.
//!
//! `state.json` is replaced by write-to-temporary, fsync, rename, fsync of the directory, so a
//! crash leaves either the old or the new state, never a torn one; `lock` serializes appliers.

use crate::error::Error;
use crate::identity::PeHeaders;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The default state directory.
#[cfg(not(windows))]
pub const DEFAULT_DIR: &str = "/var/lib/hotpatch";
/// Where the state is kept when `--state-dir` is not given.
#[cfg(windows)]
pub const DEFAULT_DIR: &str = r"C:\ProgramData\hotpatch";

/// Everything the state directory records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    /// Keyed by `product/channel`.
    pub products: BTreeMap<String, ProductState>,
    /// The highest trust-file version ever accepted.
    #[serde(default)]
    pub trust_version: u64,
}

/// What is known of one product and channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductState {
    /// The highest sequence ever installed: lower or equal ones are refused.
    pub high_water: u64,
    /// The sequence applied now; `None` after a rollback to the baseline.
    pub installed: Option<u64>,
    /// SHA-256 of the installed package's signed manifest bytes.
    pub installed_manifest_sha256: Option<String>,
    /// Stored package files by sequence (names inside `packages/`).
    pub packages: BTreeMap<u64, String>,
    /// The identities of the installed package's targets, so that `status` can name processes
    /// that map one without carrying the patch.
    pub targets: Vec<InstalledTarget>,
}

/// A target of the installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledTarget {
    pub name: String,
    pub sha256: String,
    pub build_id: Option<String>,
    /// For a PE target, the header fields of its image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pe: Option<PeHeaders>,
    /// Whether the package replaces code in it (a process mapping it should carry a payload).
    pub patched: bool,
}

/// An open, locked state directory.
pub struct StateDir {
    path: PathBuf,
    // Held for its flock: released when the directory handle is dropped.
    _lock: File,
}

impl StateDir {
    /// Opens (creating it when missing) and locks the state directory.
    pub fn open(path: &Path) -> Result<StateDir, Error> {
        let fail = |source| Error::State {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(path.join("packages")).map_err(fail)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("lock"))
            .map_err(fail)?;
        lock_exclusive(&lock).map_err(fail)?;
        Ok(StateDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads `state.json`; a missing file is the empty state.
    pub fn load(&self) -> Result<State, Error> {
        let file = self.path.join("state.json");
        match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| Error::StateFormat { path: file, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                version: 1,
                ..State::default()
            }),
            Err(source) => Err(Error::State { path: file, source }),
        }
    }

    /// Replaces `state.json` atomically and durably.
    pub fn save(&self, state: &State) -> Result<(), Error> {
        let mut bytes = serde_json::to_vec_pretty(state).map_err(|source| Error::StateFormat {
            path: self.path.join("state.json"),
            source,
        })?;
        bytes.push(b'\n');
        self.write_atomically("state.json", &bytes)
    }

    /// Stores a package file under `packages/` and returns its name there.
    pub fn store_package(
        &self,
        product_key: &str,
        sequence: u64,
        bytes: &[u8],
    ) -> Result<String, Error> {
        let safe: String = product_key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = format!("{safe}-{sequence}.hpkg");
        self.write_atomically(&format!("packages/{name}"), bytes)?;
        Ok(name)
    }

    /// Reads a stored package.
    pub fn read_package(&self, name: &str) -> Result<Vec<u8>, Error> {
        let path = self.path.join("packages").join(name);
        std::fs::read(&path).map_err(|source| Error::State { path, source })
    }

    fn write_atomically(&self, relative: &str, bytes: &[u8]) -> Result<(), Error> {
        let target = self.path.join(relative);
        let temporary = self.path.join(format!("{relative}.tmp"));
        let fail = |source| Error::State {
            path: target.clone(),
            source,
        };
        let mut file = File::create(&temporary).map_err(fail)?;
        file.write_all(bytes).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        drop(file);
        std::fs::rename(&temporary, &target).map_err(fail)?;
        // The rename itself is made durable by syncing the directory (Unix); Windows has no
        // handle on a directory to sync and makes MoveFileEx durable itself.
        #[cfg(unix)]
        {
            let directory = target.parent().unwrap_or(&self.path);
            File::open(directory)
                .and_then(|d| d.sync_all())
                .map_err(fail)?;
        }
        Ok(())
    }
}

fn lock_exclusive(file: &File) -> std::io::Result<()> {
    // flock on Unix, LockFileEx on Windows: released when the handle closes.
    file.lock()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_through_rename() {
        let dir = std::env::temp_dir().join(format!("hotpatch-state-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state_dir = StateDir::open(&dir).unwrap();
        assert_eq!(state_dir.load().unwrap().products.len(), 0);
        let mut state = state_dir.load().unwrap();
        state.products.insert(
            "demo/stable".into(),
            ProductState {
                high_water: 3,
                installed: Some(3),
                ..ProductState::default()
            },
        );
        state_dir.save(&state).unwrap();
        assert_eq!(state_dir.load().unwrap(), state);
        assert!(!dir.join("state.json.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
