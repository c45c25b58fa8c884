//! The state directory (`--state-dir`, default `/var/lib/hotpatch`): the persisted
//! high-water mark of package sequences per product and channel (replay and downgrade
//! protection), what is installed, the installed packages themselves (for `rollback --to SEQ`
//! and for new processes), and the highest trust-file version seen.
//!
//! `state.json` is replaced by write-to-temporary, fsync, rename, fsync of the directory, so a
//! crash leaves either the old or the new state, never a torn one; `lock` serializes appliers.
//! An apply writes its new state (and stores its package) *before* it touches a process and
//! only renames it into place afterwards (`prepare` / `PreparedState::commit`), so a full disk
//! refuses the apply up front instead of losing the record of a patch already made.
//!
//! The directory is private to the applier's user (mode 0700, created so): whoever can write
//! it can lower the high-water mark (replay, downgrade) or swap the stored packages that
//! `watch` and `rollback --to` apply, and whoever can read it learns what is unpatched where.

use crate::error::Error;
use crate::identity::PeHeaders;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
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
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        builder.mode(0o700);
        builder.create(path.join("packages")).map_err(fail)?;
        check_private(path)?;
        check_private(&path.join("packages"))?;
        let lock = private_options()
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

    /// Writes `state` and stores `package` (when given) durably, but leaves `state.json` as it
    /// is until the returned value is committed; dropped uncommitted, it removes what it wrote.
    pub fn prepare(
        &self,
        state: &State,
        package: Option<(&str, &[u8])>,
    ) -> Result<PreparedState<'_>, Error> {
        let mut prepared = PreparedState {
            dir: self,
            new_package: None,
            committed: false,
        };
        if let Some((name, bytes)) = package {
            let relative = format!("packages/{name}");
            // A file of that name left by an apply killed before its commit may hold another
            // package of the same sequence: replaced unless it is this one.
            let existing = std::fs::read(self.path.join(&relative)).ok();
            if existing.as_deref() != Some(bytes) {
                self.write_atomically(&relative, bytes)?;
                if existing.is_none() {
                    prepared.new_package = Some(relative);
                }
            }
        }
        let mut bytes = serde_json::to_vec_pretty(state).map_err(|source| Error::StateFormat {
            path: self.path.join("state.json"),
            source,
        })?;
        bytes.push(b'\n');
        self.write_durably(STATE_TEMPORARY, &bytes)?;
        Ok(prepared)
    }

    /// The name under `packages/` a package of `product_key` and `sequence` is stored as.
    pub fn package_name(product_key: &str, sequence: u64) -> String {
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
        format!("{safe}-{sequence}.hpkg")
    }

    /// Reads a stored package.
    pub fn read_package(&self, name: &str) -> Result<Vec<u8>, Error> {
        let path = self.path.join("packages").join(name);
        std::fs::read(&path).map_err(|source| Error::State { path, source })
    }

    fn write_atomically(&self, relative: &str, bytes: &[u8]) -> Result<(), Error> {
        let temporary = format!("{relative}.tmp");
        self.write_durably(&temporary, bytes)?;
        self.rename_durably(&temporary, relative)
    }

    /// Writes `relative` (mode 0600) and fsyncs it; on failure (a full disk) removes it again.
    fn write_durably(&self, relative: &str, bytes: &[u8]) -> Result<(), Error> {
        let path = self.path.join(relative);
        let written = (|| {
            let mut file = private_options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            file.write_all(bytes)?;
            file.sync_all()
        })();
        written.map_err(|source| {
            let _ = std::fs::remove_file(&path);
            Error::State {
                path: path.clone(),
                source,
            }
        })
    }

    /// Renames `from` over `to` and fsyncs the directory that holds them.
    fn rename_durably(&self, from: &str, to: &str) -> Result<(), Error> {
        let target = self.path.join(to);
        let fail = |source| Error::State {
            path: target.clone(),
            source,
        };
        std::fs::rename(self.path.join(from), &target).map_err(fail)?;
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

/// Where `prepare` writes the next `state.json`.
const STATE_TEMPORARY: &str = "state.json.tmp";

/// A new state written beside `state.json`, and the package stored with it, waiting for
/// `commit`; dropped uncommitted, both are removed (the state directory is as before).
pub struct PreparedState<'a> {
    dir: &'a StateDir,
    /// The package file this preparation created (not one that was already stored).
    new_package: Option<String>,
    committed: bool,
}

impl PreparedState<'_> {
    /// Renames the prepared state over `state.json`: one rename, needing no new blocks.
    pub fn commit(mut self) -> Result<(), Error> {
        self.dir.rename_durably(STATE_TEMPORARY, "state.json")?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PreparedState<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let _ = std::fs::remove_file(self.dir.path.join(STATE_TEMPORARY));
        if let Some(package) = &self.new_package {
            let _ = std::fs::remove_file(self.dir.path.join(package));
        }
    }
}

/// Options that create a file only its owner can read and write (mode 0600 on Unix).
fn private_options() -> OpenOptions {
    #[cfg(unix)]
    {
        let mut options = OpenOptions::new();
        options.mode(0o600);
        options
    }
    #[cfg(not(unix))]
    OpenOptions::new()
}

/// Windows: the directory's ACL is not checked yet (the default under `C:\ProgramData` admits
/// administrators and SYSTEM); only that it is a directory.
#[cfg(not(unix))]
fn check_private(path: &Path) -> Result<(), Error> {
    let metadata = std::fs::symlink_metadata(path).map_err(|source| Error::State {
        path: path.to_owned(),
        source,
    })?;
    if !metadata.is_dir() {
        return Err(Error::State {
            path: path.to_owned(),
            source: std::io::Error::other("not a directory"),
        });
    }
    Ok(())
}

/// Refuses a state directory that is not a directory owned by this user with no access for
/// group or others.
#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), Error> {
    let metadata = std::fs::symlink_metadata(path).map_err(|source| Error::State {
        path: path.to_owned(),
        source,
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let mode = metadata.mode() & 0o7777;
    if !metadata.is_dir() || metadata.uid() != euid || mode & 0o077 != 0 {
        return Err(Error::InsecureStateDir {
            path: path.to_owned(),
            owner: metadata.uid(),
            mode,
            euid,
        });
    }
    Ok(())
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
