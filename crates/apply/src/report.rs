//! What the applier says it did: one `TargetResult` per process and target, printed as text or
//! JSON, and the exit code that summarizes them.

use crate::error::{Class, Error};
use serde::Serialize;

/// The outcome for one target in one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// The redirects are in place (or, for rollback, the originals are back).
    Applied,
    /// The baseline bytes are back and the payload is unmapped.
    RolledBack,
    /// The process already runs this package: nothing was changed.
    AlreadyApplied,
    /// Nothing to do here, and nothing wrong.
    Skipped { reason: String },
    /// The applier declined to change the process; it is unchanged.
    Refused { reason: String },
    /// Something failed; the process is unchanged or gone.
    Failed { reason: String },
}

/// One line of the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetResult {
    pub pid: i32,
    pub target: String,
    /// The sequence now applied in the process for this target (`None` = baseline).
    pub sequence: Option<u64>,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// For a refusal or failure: the stable kind of the error (`Error::kind`), or of the
    /// applier's own refusal (`identity-mismatch`, `not-superseding`).
    pub kind: Option<String>,
    /// Time from the first thread stop to the last thread release, in microseconds, for the
    /// window that wrote the redirects.
    pub stop_window_us: Option<u64>,
    /// Whether the applier ran at raised priority during that window (`SCHED_FIFO` on Linux,
    /// time-critical on Windows; `None`: not asked for).
    pub realtime: Option<bool>,
    /// How many stop windows were opened (more than one when a function was busy).
    pub attempts: u32,
    /// How many threads were stopped in the last window.
    pub threads: usize,
}

impl TargetResult {
    /// A result with only an outcome.
    pub fn new(pid: i32, target: &str, outcome: Outcome) -> TargetResult {
        TargetResult {
            pid,
            target: target.to_owned(),
            sequence: None,
            outcome,
            kind: None,
            stop_window_us: None,
            realtime: None,
            attempts: 0,
            threads: 0,
        }
    }

    /// The result for an error, refused or failed by its class.
    pub fn from_error(pid: i32, target: &str, error: &Error) -> TargetResult {
        let reason = error.to_string();
        let outcome = match error.class() {
            Class::Refused | Class::Verification => Outcome::Refused { reason },
            Class::Input | Class::Failed => Outcome::Failed { reason },
        };
        let mut result = TargetResult::new(pid, target, outcome);
        result.kind = Some(error.kind().to_owned());
        result
    }

    /// A refusal of the applier's own, with its stable kind.
    pub fn refused(pid: i32, target: &str, kind: &str, reason: String) -> TargetResult {
        let mut result = TargetResult::new(pid, target, Outcome::Refused { reason });
        result.kind = Some(kind.to_owned());
        result
    }

    /// One line of text.
    pub fn line(&self) -> String {
        let what = match &self.outcome {
            Outcome::Applied => "applied".to_owned(),
            Outcome::RolledBack => "rolled back to the baseline".to_owned(),
            Outcome::AlreadyApplied => "already applied".to_owned(),
            Outcome::Skipped { reason } => format!("skipped: {reason}"),
            Outcome::Refused { reason } => format!("refused: {reason}"),
            Outcome::Failed { reason } => format!("failed: {reason}"),
        };
        let mut line = format!("pid {} {}: {what}", self.pid, self.target);
        if let Some(sequence) = self.sequence {
            line.push_str(&format!(" (sequence {sequence})"));
        }
        if let Some(us) = self.stop_window_us {
            let priority = match self.realtime {
                Some(true) => crate::backend::RAISED_PRIORITY,
                Some(false) => crate::backend::NORMAL_PRIORITY,
                None => "normal priority (--no-realtime)",
            };
            line.push_str(&format!(
                "; stop window {us} us, {} threads, {} attempt(s), {priority}",
                self.threads, self.attempts
            ));
        }
        line
    }
}

/// Process exit codes (docs/apply.md).
pub mod exit {
    /// Everything applied, already applied or skipped.
    pub const OK: i32 = 0;
    /// Usage or input error.
    pub const USAGE: i32 = 2;
    /// The package failed verification; nothing was touched.
    pub const VERIFICATION: i32 = 3;
    /// A process was left unchanged because applying was refused.
    pub const REFUSED: i32 = 4;
    /// A process went away or an operation failed.
    pub const FAILED: i32 = 5;
}

/// The exit code for a set of results: the worst outcome wins.
pub fn exit_code(results: &[TargetResult]) -> i32 {
    let mut code = exit::OK;
    for result in results {
        let this = match result.outcome {
            Outcome::Failed { .. } => exit::FAILED,
            Outcome::Refused { .. } => exit::REFUSED,
            _ => exit::OK,
        };
        code = code.max(this);
    }
    code
}
