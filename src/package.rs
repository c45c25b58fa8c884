//! `hotpatch keygen`, `hotpatch verify`, `hotpatch trust` and the package view of
//! `hotpatch inspect`: key files on disk, and the verdict on a package file.

use crate::exit;
use anyhow::{Context, Result};
use hotpatch_package::{
    Limits, Manifest, PublicKey, Redirect, SecretKey, TargetIdentity, Trust, TrustFile,
};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The first bytes of a zip archive, hence of a package.
pub const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";
/// File names `keygen` writes.
const SECRET_KEY_FILE: &str = "hotpatch.key";
const PUBLIC_KEY_FILE: &str = "hotpatch.pub";

#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Directory to write `hotpatch.key` (mode 0600) and `hotpatch.pub` into; created if
    /// missing. Existing key files are never overwritten.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The package file.
    package: PathBuf,
    /// A public key file (`hotpatch.pub`) or a trust file.
    #[arg(long, value_name = "PUBKEY|TRUSTFILE")]
    trust: PathBuf,
    /// Check the validity window at this instant (unix seconds) instead of now.
    #[arg(long, value_name = "UNIX_SECONDS")]
    at: Option<u64>,
}

#[derive(clap::Subcommand)]
pub enum TrustCommand {
    /// Write version 1 of a trust file, holding the given public keys.
    Init {
        /// A public key file; repeat for several keys.
        #[arg(long = "key", value_name = "PUBKEY", required = true)]
        keys: Vec<PathBuf>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write the next version of a trust file, signed by a key of the current one.
    Rotate {
        /// The current trust file.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// A secret key whose public key is active in the current trust file.
        #[arg(long, value_name = "KEY")]
        sign_with: PathBuf,
        /// A public key file to add; repeatable.
        #[arg(long, value_name = "PUBKEY")]
        add: Vec<PathBuf>,
        /// A key ID to retire; repeatable.
        #[arg(long, value_name = "KEYID")]
        retire: Vec<String>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// A secret key file that others can read: refused, because a leaked signing key signs
/// hotpatches that every trusting machine runs.
#[derive(Debug)]
pub struct InsecureKeyFile {
    pub path: PathBuf,
    pub mode: u32,
}

impl std::fmt::Display for InsecureKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "secret key {} is readable by group or others (mode {:o})",
            self.path.display(),
            self.mode & 0o777
        )
    }
}

impl std::error::Error for InsecureKeyFile {}

pub fn keygen(args: &KeygenArgs, out: &mut dyn Write) -> Result<u8> {
    fs_err::create_dir_all(&args.out)?;
    let secret = SecretKey::generate()?;
    let secret_path = args.out.join(SECRET_KEY_FILE);
    let public_path = args.out.join(PUBLIC_KEY_FILE);
    write_new_file(&secret_path, secret.to_text().as_bytes(), 0o600)?;
    write_new_file(
        &public_path,
        secret.public_key().to_text().as_bytes(),
        0o644,
    )?;
    writeln!(out, "key id {}", secret.key_id())?;
    writeln!(out, "secret key {}", secret_path.display())?;
    writeln!(out, "public key {}", public_path.display())?;
    Ok(0)
}

/// Creates `path` with `mode` from the start (no window where a secret is world-readable), and
/// refuses to replace an existing file.
fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut options = fs_err::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use fs_err::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// Loads a secret key for signing, refusing a file readable by group or others.
pub fn load_secret_key(path: &Path) -> Result<SecretKey> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs_err::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(InsecureKeyFile {
                path: path.to_path_buf(),
                mode,
            }
            .into());
        }
    }
    let text = fs_err::read_to_string(path)?;
    SecretKey::from_text(&text).with_context(|| format!("cannot read {}", path.display()))
}

pub fn load_public_key(path: &Path) -> Result<PublicKey> {
    let text = fs_err::read_to_string(path)?;
    PublicKey::from_text(&text).with_context(|| format!("cannot read {}", path.display()))
}

/// A public key file or a trust file, told apart by the public key file's tag.
fn load_trust(path: &Path) -> Result<Trust> {
    let bytes = fs_err::read(path)?;
    if bytes.starts_with(b"hotpatch-public-key-v1") {
        return Ok(Trust::from_public_key(load_public_key(path)?));
    }
    let file = TrustFile::load(&bytes, None)
        .with_context(|| format!("cannot read trust file {}", path.display()))?;
    Ok(Trust::from_trust_file(&file))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

pub fn verify(args: &VerifyArgs, out: &mut dyn Write) -> Result<u8> {
    let trust = load_trust(&args.trust)?;
    let limits = Limits::default();
    // The size cap holds before the file is read into memory.
    let size = fs_err::metadata(&args.package)?.len();
    if size > limits.max_archive_bytes {
        eprintln!(
            "error: verification refused: {}: {}",
            args.package.display(),
            hotpatch_package::Error::TooLarge {
                what: "archive".to_owned(),
                size,
                limit: limits.max_archive_bytes,
            }
        );
        return Ok(exit::VERIFY_REFUSED);
    }
    let bytes = fs_err::read(&args.package)?;
    let now = args.at.unwrap_or_else(unix_now);
    match hotpatch_package::open(&bytes, &trust, now, &limits) {
        Ok(package) => {
            let m = &package.manifest;
            writeln!(
                out,
                "{}: verified: {} {} {} {:?} sequence {}, signed by {}, valid until {}, {} entries",
                args.package.display(),
                m.product,
                m.channel,
                m.release,
                m.kind,
                m.sequence,
                m.key_id,
                utc(m.expires_at),
                m.entries.len()
            )?;
            Ok(0)
        }
        Err(error) => {
            eprintln!(
                "error: verification refused: {}: {error}",
                args.package.display()
            );
            Ok(exit::VERIFY_REFUSED)
        }
    }
}

pub fn trust(command: &TrustCommand, out: &mut dyn Write) -> Result<u8> {
    let (file, path) = match command {
        TrustCommand::Init { keys, out } => {
            let keys = keys
                .iter()
                .map(|path| load_public_key(path))
                .collect::<Result<Vec<_>>>()?;
            (TrustFile::initial(&keys)?, out)
        }
        TrustCommand::Rotate {
            from,
            sign_with,
            add,
            retire,
            out,
        } => {
            let current = TrustFile::load(&fs_err::read(from)?, None)
                .with_context(|| format!("cannot read trust file {}", from.display()))?;
            let signer = load_secret_key(sign_with)?;
            let add = add
                .iter()
                .map(|path| load_public_key(path))
                .collect::<Result<Vec<_>>>()?;
            (current.rotate(&add, retire, &signer)?, out)
        }
    };
    write_new_file(path, &file.to_bytes(), 0o644)?;
    writeln!(
        out,
        "trust file {} version {}: {} active key(s)",
        path.display(),
        file.version,
        file.keys.iter().filter(|key| !key.retired).count()
    )?;
    Ok(0)
}

/// `hotpatch inspect` on a package: what its manifest claims, clearly marked unverified.
pub fn inspect(path: &Path, bytes: &[u8], json: bool, out: &mut dyn Write) -> Result<u8> {
    let package = hotpatch_package::read_unverified(bytes, &Limits::default())
        .with_context(|| format!("cannot read package {}", path.display()))?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &package.manifest)?;
        writeln!(out)?;
        return Ok(0);
    }
    summary(path, &package.manifest, &package.archive_entries, out)?;
    Ok(0)
}

fn summary(
    path: &Path,
    m: &Manifest,
    archive_entries: &[(String, u64)],
    out: &mut dyn Write,
) -> Result<()> {
    writeln!(
        out,
        "{}: hotpatch package, format {} (signature not checked: use `hotpatch verify`)",
        path.display(),
        m.format
    )?;
    writeln!(
        out,
        "  product       {} / {}, release {}",
        m.product, m.channel, m.release
    )?;
    writeln!(
        out,
        "  kind          {:?}, sequence {} (follows {} or later), baseline {}",
        m.kind, m.sequence, m.min_sequence, m.baseline_id
    )?;
    writeln!(
        out,
        "  valid         {} to {}",
        utc(m.issued_at),
        utc(m.expires_at)
    )?;
    writeln!(out, "  key           {}", m.key_id)?;
    writeln!(out, "  entries       {}", archive_entries.len())?;
    for (name, len) in archive_entries {
        writeln!(out, "    {name:<28} {len:>10} bytes")?;
    }
    writeln!(out, "  targets       {}", m.targets.len())?;
    for target in &m.targets {
        let identity = match &target.identity {
            TargetIdentity::Pe {
                time_date_stamp,
                checksum,
                size_of_image,
                ..
            } => format!(
                "PE TimeDateStamp {time_date_stamp:#010x} CheckSum {checksum:#010x} SizeOfImage {size_of_image:#x}"
            ),
            TargetIdentity::Elf { build_id, .. } => {
                format!("ELF build-id {}", build_id.as_deref().unwrap_or("(none)"))
            }
        };
        writeln!(out, "    {}  {identity}", target.name)?;
        writeln!(
            out,
            "      payload {} ({} bytes), {} site(s), {} relocation(s)",
            target.payload.as_deref().unwrap_or("(none)"),
            target.payload_len,
            target.sites.len(),
            target.relocations.len()
        )?;
        for site in &target.sites {
            let redirect = match site.redirect {
                Redirect::Entry { .. } => "entry",
                Redirect::Padding { .. } => "padding",
            };
            writeln!(
                out,
                "      {:#010x} +{:#x}  {} -> payload +{:#x} ({} bytes, {redirect})",
                site.baseline_rva,
                site.baseline_size,
                site.function,
                site.payload_offset,
                site.payload_size
            )?;
        }
    }
    Ok(())
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
fn utc(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rem = seconds % 86_400;
    // Howard Hinnant's days-to-civil algorithm, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
