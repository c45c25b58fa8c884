//! The crate's one error type: every way a package, a key or a trust file can be refused, each
//! variant naming the entry, target, offset or key that caused it.

/// Why a package, key or trust file was refused, or a relocation could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- the archive container -------------------------------------------------------------
    /// The zip container cannot be read (truncated, corrupt central directory, bad local header).
    #[error("the archive cannot be read: {reason}")]
    BadArchive { reason: String },
    /// A size is above its cap (the archive, an entry, the manifest, a payload).
    #[error("{what} is {size} bytes, above the limit of {limit}")]
    TooLarge { what: String, size: u64, limit: u64 },
    /// A count is above its cap (entries, targets, sites, relocations).
    #[error("{what}: {count}, above the limit of {limit}")]
    TooMany {
        what: String,
        count: u64,
        limit: u64,
    },
    /// An entry name is absolute, climbs with `..`, holds a backslash or is otherwise not a plain
    /// relative path.
    #[error("unsafe entry name {name:?}")]
    UnsafeEntryName { name: String },
    /// An entry is a symbolic link (unix mode in the external attributes).
    #[error("entry {name:?} is a symbolic link")]
    SymlinkEntry { name: String },
    /// Two archive entries carry the same name.
    #[error("entry {name:?} appears more than once")]
    DuplicateEntry { name: String },
    /// The archive holds an entry the signed manifest does not list.
    #[error("entry {name:?} is not listed in the manifest")]
    UnlistedEntry { name: String },
    /// The signed manifest lists an entry the archive does not hold (also `manifest.json` or
    /// `manifest.sig` themselves).
    #[error("entry {name:?} is listed but missing from the archive")]
    MissingEntry { name: String },

    // --- signature --------------------------------------------------------------------------
    /// The manifest names a key the trust set does not hold.
    #[error("key {key_id} is not trusted")]
    UnknownKey { key_id: String },
    /// The manifest names a key the trust set lists as retired.
    #[error("key {key_id} is retired")]
    RetiredKey { key_id: String },
    /// The signature does not verify (strictly) over the exact manifest bytes.
    #[error("the signature by key {key_id} does not verify")]
    BadSignature { key_id: String },

    // --- entries against the signed manifest ------------------------------------------------
    /// An entry's length differs from the one the manifest lists.
    #[error("entry {name:?} is {actual} bytes, the manifest says {expected}")]
    EntryLengthMismatch {
        name: String,
        expected: u64,
        actual: u64,
    },
    /// An entry's SHA-256 differs from the one the manifest lists.
    #[error("entry {name:?} does not match its SHA-256 in the manifest")]
    EntryHashMismatch { name: String },

    // --- time and sequence ------------------------------------------------------------------
    /// `now` is at or after `expires_at`.
    #[error("the package expired at {expires_at} (now {now})")]
    Expired { expires_at: u64, now: u64 },
    /// `now` is before `issued_at` (less the allowed clock skew).
    #[error("the package is not valid before {issued_at} (now {now})")]
    NotYetValid { issued_at: u64, now: u64 },
    /// The package's sequence equals the installed high-water mark: a replay.
    #[error("sequence {sequence} is already installed (replay)")]
    Replay { sequence: u64 },
    /// The package's sequence is below the installed high-water mark: a downgrade.
    #[error("sequence {sequence} is older than the installed {installed} (downgrade)")]
    Downgrade { sequence: u64, installed: u64 },
    /// A hotpatch that needs an installed sequence of at least `min_sequence` found less.
    #[error(
        "this hotpatch follows sequence {min_sequence} or later, installed is {}",
        installed.map_or_else(|| "nothing".to_owned(), |n| n.to_string())
    )]
    SequenceGap {
        min_sequence: u64,
        installed: Option<u64>,
    },

    // --- manifest content -------------------------------------------------------------------
    /// `format` is not [`crate::FORMAT_VERSION`].
    #[error("package format {found} is not supported (this build reads {supported})")]
    UnsupportedFormat { found: u32, supported: u32 },
    /// The manifest (or trust file, or key text) is not what the format says: bad JSON, unknown
    /// field, bad hex, unsorted list.
    #[error("malformed {what}: {reason}")]
    Malformed { what: String, reason: String },
    /// A relocation's field lies (partly) outside the payload.
    #[error(
        "relocation at payload offset {offset:#x} lies outside the payload of {payload_len} bytes"
    )]
    RelocationOutOfPayload { offset: u64, payload_len: u64 },
    /// A relocation's `Payload` target lies outside the payload.
    #[error(
        "relocation at payload offset {offset:#x} points to payload offset {target_offset:#x}, outside the payload of {payload_len} bytes"
    )]
    RelocationTargetOutOfPayload {
        offset: u64,
        target_offset: u64,
        payload_len: u64,
    },
    /// A rel32 relocation's value does not fit in 32 signed bits.
    #[error("rel32 relocation at payload offset {offset:#x} does not reach (value {value})")]
    Rel32Overflow { offset: u64, value: i128 },
    /// An address computation left the 64-bit space.
    #[error("address arithmetic overflows at {address:#x}")]
    AddressOverflow { address: u64 },
    /// The jump from a patch site to its new code does not fit in rel32 (more than 2 GiB).
    #[error("the redirect of {function:?} at {from:#x} cannot reach {to:#x} with a rel32 jump")]
    RedirectOutOfReach {
        function: String,
        from: u64,
        to: u64,
    },
    /// A patch site's new code lies outside the payload, or its redirect cannot be placed.
    #[error("patch site {function:?} of {target:?} is out of range: {reason}")]
    SiteOutOfRange {
        target: String,
        function: String,
        reason: String,
    },
    /// A target's payload entry is missing or of another length than `payload_len`.
    #[error("payload of target {target:?}: {reason}")]
    BadPayload { target: String, reason: String },
    /// A target's function table does not lie inside its payload (or it has no payload, or no
    /// entries).
    #[error(
        "the unwind table of {target:?} ({count} entries at payload offset {offset:#x}) is not inside the payload of {payload_len} bytes"
    )]
    UnwindTableOutOfPayload {
        target: String,
        offset: u64,
        count: u64,
        payload_len: u64,
    },
    /// A target's function table does not start on a 4-byte boundary.
    #[error("the unwind table of {target:?} at payload offset {offset:#x} is not 4-byte aligned")]
    UnwindTableMisaligned { target: String, offset: u64 },
    /// A `RUNTIME_FUNCTION`'s code range is empty, reversed or not inside the payload.
    #[error(
        "unwind entry {index} of {target:?} covers [{begin:#x}, {end:#x}), not a non-empty range inside the payload of {payload_len} bytes"
    )]
    UnwindRangeOutOfPayload {
        target: String,
        index: u64,
        begin: u32,
        end: u32,
        payload_len: u64,
    },
    /// `RUNTIME_FUNCTION`s not sorted by `BeginAddress`, or overlapping the previous one (the
    /// unwinder's binary search would miss entries).
    #[error("unwind entry {index} of {target:?} at {begin:#x} is not after the previous entry")]
    UnwindTableUnsorted {
        target: String,
        index: u64,
        begin: u32,
    },
    /// A `RUNTIME_FUNCTION`'s `UNWIND_INFO` is misaligned, or it (header, codes, chained entry)
    /// does not lie inside the payload.
    #[error(
        "unwind entry {index} of {target:?}: its UNWIND_INFO at {info:#x} is not 4-byte aligned inside the payload of {payload_len} bytes"
    )]
    UnwindInfoOutOfPayload {
        target: String,
        index: u64,
        info: u32,
        payload_len: u64,
    },
    /// An `UNWIND_INFO` this format does not carry: a version other than 1 or 2, a language
    /// handler (its RVAs are the fixed build's), or a chained entry outside the payload.
    #[error("unwind entry {index} of {target:?}: the UNWIND_INFO at {info:#x} {reason}")]
    BadUnwindInfo {
        target: String,
        index: u64,
        info: u32,
        reason: String,
    },
    /// A relocation writes into the function table or an `UNWIND_INFO`, which must reach the
    /// unwinder as signed.
    #[error("the relocation at payload offset {offset:#x} of {target:?} writes into unwind data")]
    UnwindDataRelocated { target: String, offset: u64 },

    // --- keys and trust ---------------------------------------------------------------------
    /// A key's text form is not `hotpatch-{secret,public}-key-v1 <hex>` of 32 bytes, or the
    /// public key is not a valid Ed25519 point.
    #[error("bad {what}: {reason}")]
    BadKey { what: &'static str, reason: String },
    /// The system random source failed while generating a key.
    #[error("the system random source failed: {reason}")]
    Random { reason: String },
    /// A trust file older than the highest version already seen.
    #[error("trust file version {found} is older than version {seen} already seen")]
    TrustRollback { found: u64, seen: u64 },
    /// A trust file successor that is not exactly one version ahead.
    #[error("trust file version {found} does not follow version {previous}")]
    TrustVersionGap { found: u64, previous: u64 },
    /// A trust file (version > 1) whose signature is missing, by an unknown or retired key, or
    /// does not verify.
    #[error("trust file version {version}: {reason}")]
    TrustSignature { version: u64, reason: String },
}

impl Error {
    /// A stable, kebab-case name of the variant, for machine-readable output (the applier's
    /// `--json`): callers match on it, never on the message.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::BadArchive { .. } => "bad-archive",
            Error::TooLarge { .. } => "too-large",
            Error::TooMany { .. } => "too-many",
            Error::UnsafeEntryName { .. } => "unsafe-entry-name",
            Error::SymlinkEntry { .. } => "symlink-entry",
            Error::DuplicateEntry { .. } => "duplicate-entry",
            Error::UnlistedEntry { .. } => "unlisted-entry",
            Error::MissingEntry { .. } => "missing-entry",
            Error::UnknownKey { .. } => "unknown-key",
            Error::RetiredKey { .. } => "retired-key",
            Error::BadSignature { .. } => "bad-signature",
            Error::EntryLengthMismatch { .. } => "entry-length-mismatch",
            Error::EntryHashMismatch { .. } => "entry-hash-mismatch",
            Error::Expired { .. } => "expired",
            Error::NotYetValid { .. } => "not-yet-valid",
            Error::Replay { .. } => "replay",
            Error::Downgrade { .. } => "downgrade",
            Error::SequenceGap { .. } => "sequence-gap",
            Error::UnsupportedFormat { .. } => "unsupported-format",
            Error::Malformed { .. } => "malformed",
            Error::RelocationOutOfPayload { .. } => "relocation-out-of-payload",
            Error::RelocationTargetOutOfPayload { .. } => "relocation-target-out-of-payload",
            Error::Rel32Overflow { .. } => "rel32-overflow",
            Error::AddressOverflow { .. } => "address-overflow",
            Error::RedirectOutOfReach { .. } => "redirect-out-of-reach",
            Error::SiteOutOfRange { .. } => "site-out-of-range",
            Error::BadPayload { .. } => "bad-payload",
            Error::UnwindTableOutOfPayload { .. } => "unwind-table-out-of-payload",
            Error::UnwindTableMisaligned { .. } => "unwind-table-misaligned",
            Error::UnwindRangeOutOfPayload { .. } => "unwind-range-out-of-payload",
            Error::UnwindTableUnsorted { .. } => "unwind-table-unsorted",
            Error::UnwindInfoOutOfPayload { .. } => "unwind-info-out-of-payload",
            Error::BadUnwindInfo { .. } => "bad-unwind-info",
            Error::UnwindDataRelocated { .. } => "unwind-data-relocated",
            Error::BadKey { .. } => "bad-key",
            Error::Random { .. } => "random",
            Error::TrustRollback { .. } => "trust-rollback",
            Error::TrustVersionGap { .. } => "trust-version-gap",
            Error::TrustSignature { .. } => "trust-signature",
        }
    }
}
