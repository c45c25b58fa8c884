//! The sequence rule, checked against the high-water mark the applier persists per (product,
//! channel): no replay, no downgrade, and a hotpatch only on top of what it supersedes.

use crate::Error;
use crate::manifest::{Manifest, PackageKind};

/// Refuses `manifest` when its sequence is not above `installed` (the highest sequence
/// installed so far, `None` on a fresh system), or when it is a hotpatch whose `min_sequence`
/// is above what is installed (the baseline or earlier hotpatch it builds on is missing).
pub fn check_sequence(manifest: &Manifest, installed: Option<u64>) -> Result<(), Error> {
    if let Some(installed) = installed {
        if manifest.sequence == installed {
            return Err(Error::Replay {
                sequence: manifest.sequence,
            });
        }
        if manifest.sequence < installed {
            return Err(Error::Downgrade {
                sequence: manifest.sequence,
                installed,
            });
        }
    }
    if manifest.kind == PackageKind::Hotpatch
        && installed.is_none_or(|installed| manifest.min_sequence > installed)
    {
        return Err(Error::SequenceGap {
            min_sequence: manifest.min_sequence,
            installed,
        });
    }
    Ok(())
}
