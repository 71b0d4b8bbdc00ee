//! Why a command did not succeed: one error type, its exit code, and the one place it is
//! printed.
use std::path::PathBuf;

use crate::report::ReportError;
use crate::workflow::diag::Diagnostic;

/// Exit codes (documented in docs/reference/exit-codes.md, checked there by a test).
pub mod exit {
    /// Everything succeeded.
    pub const OK: u8 = 0;
    /// A step failed.
    pub const FAILED: u8 = 1;
    /// Invalid workflow, inputs or usage.
    pub const USAGE: u8 = 2;
    /// Pending: a poll reached `max_wait`; run again later to continue (EX_TEMPFAIL).
    pub const PENDING: u8 = 75;
    /// Interrupted by SIGINT (Ctrl-C): 128 + the signal.
    pub const INTERRUPTED: u8 = 130;
    /// Interrupted by SIGTERM (a cancelled CI job): 128 + the signal.
    pub const TERMINATED: u8 = 143;
    /// Every exit code the tool gives, in ascending order.
    pub const ALL: [u8; 6] = [OK, FAILED, USAGE, PENDING, INTERRUPTED, TERMINATED];
}

/// How a command ended when it did not succeed. Its `Display` is the exact text printed on
/// stderr (empty when everything was already said); [`CliError::exit_code`] is the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// clap's own: bad usage (exit 2), or `--help`/`--version` (printed on stdout, exit 0).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// A flag's value is wrong (exit 2).
    #[error("error: {0}")]
    Usage(String),
    /// Workflow files with errors: their diagnostics (exit 2).
    #[error("{}", diagnostics(.0))]
    InvalidWorkflow(Vec<Diagnostic>),
    /// `validate`: how many of the files are invalid (exit 2).
    #[error("{bad} of {total} file{} invalid", if *.total == 1 { "" } else { "s" })]
    InvalidFiles {
        /// Files with errors.
        bad: usize,
        /// Files checked.
        total: usize,
    },
    /// Inputs, the state directory or a run id cannot be used (exit 2).
    #[error("error: {0}")]
    Invalid(String),
    /// The run was refused before any request was sent (exit 2).
    #[error("{}: error: {message}", .workflow.display())]
    RunRefused {
        /// The workflow file given.
        workflow: PathBuf,
        /// Why (missing input, bad connection, state directory busy...).
        message: String,
    },
    /// Another runner holds this run: not yet, like a pending export (exit 75).
    #[error("{}: {message}", .workflow.display())]
    Held {
        /// The workflow file given.
        workflow: PathBuf,
        /// Who holds the run, and what to do.
        message: String,
    },
    /// Something else failed: a key, a file, the simulator, the runtime (exit 1).
    #[error("error: {0}")]
    Failed(String),
    /// The demo did not succeed (exit 1); each failed run printed its own error.
    #[cfg(feature = "sim")]
    #[error("error: {0}")]
    Demo(#[from] crate::demo::DemoError),
    /// A `--dry-run=sim` rehearsal could not be set up (exit 1).
    #[cfg(feature = "sim")]
    #[error("error: {0}")]
    Rehearsal(#[from] crate::rehearse::RehearsalError),
    /// A report file could not be written (exit 1).
    #[error("error: {0}")]
    Report(#[from] ReportError),
    /// A step failed, with its error when there is one (exit 1).
    #[error("{}", .0.as_ref().map(|e| format!("error: {e}")).unwrap_or_default())]
    StepFailed(Option<String>),
    /// `decrypt`: some files were not decrypted (exit 1).
    #[error("{failed} of {total} file(s) failed; no plaintext was left for them")]
    DecryptFailed {
        /// Files not decrypted.
        failed: usize,
        /// Files given.
        total: usize,
    },
    /// `verify`: artifacts differ from the manifest (exit 1).
    #[error("{}: {differ} of {checked} artifact(s) differ from the manifest", .dir.display())]
    Differs {
        /// The directory verified.
        dir: PathBuf,
        /// Artifacts missing, or with another size or SHA-256.
        differ: usize,
        /// Artifacts the manifest lists.
        checked: usize,
    },
    /// A poll detached at `--max-wait`: run again later (exit 75).
    #[error("{}", pending(.waiting_for.as_deref(), .state_dir.as_ref(), .run_id))]
    Pending {
        /// What the poll waits for, when known.
        waiting_for: Option<String>,
        /// The run's directory, when state is kept (where the next run resumes from).
        state_dir: Option<PathBuf>,
        /// The pending run's id.
        run_id: String,
    },
    /// Ctrl-C (exit 130); the notice was printed when it arrived.
    #[error("")]
    Interrupted,
    /// Several problems in the order they happened; the exit code is the highest.
    #[error("{}", several(.0))]
    Several(Vec<CliError>),
}

impl CliError {
    /// `errors` as one error: none, the only one, or [`CliError::Several`].
    pub fn all(mut errors: Vec<CliError>) -> Result<(), CliError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(CliError::Several(errors)),
        }
    }

    /// The process's exit code (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Clap(e) if !e.use_stderr() => exit::OK,
            CliError::Clap(_)
            | CliError::Usage(_)
            | CliError::InvalidWorkflow(_)
            | CliError::InvalidFiles { .. }
            | CliError::Invalid(_)
            | CliError::RunRefused { .. } => exit::USAGE,
            #[cfg(feature = "sim")]
            CliError::Demo(_) | CliError::Rehearsal(_) => exit::FAILED,
            CliError::Failed(_)
            | CliError::Report(_)
            | CliError::StepFailed(_)
            | CliError::DecryptFailed { .. }
            | CliError::Differs { .. } => exit::FAILED,
            CliError::Pending { .. } | CliError::Held { .. } => exit::PENDING,
            CliError::Interrupted => super::interrupted_exit_code(),
            CliError::Several(all) => all
                .iter()
                .map(CliError::exit_code)
                .max()
                .unwrap_or(exit::OK),
        }
    }

    /// Prints the error where it belongs (clap: its own stream; else stderr, unless there is
    /// nothing left to say).
    fn print(&self) {
        match self {
            CliError::Clap(e) => {
                let _ = e.print();
            }
            other => {
                let text = other.to_string();
                if !text.is_empty() {
                    crate::errln!("{text}");
                }
            }
        }
    }
}

/// The one place a command's outcome is printed: returns its exit code.
pub fn conclude(result: Result<(), CliError>) -> u8 {
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            e.print();
            e.exit_code()
        }
    }
}

/// Diagnostics as they print (each ends its own line; the last newline is the caller's).
fn diagnostics(diags: &[Diagnostic]) -> String {
    let text: String = diags.iter().map(std::string::ToString::to_string).collect();
    match text.strip_suffix('\n') {
        Some(t) => t.to_string(),
        None => text,
    }
}

fn pending(waiting_for: Option<&str>, state_dir: Option<&PathBuf>, run_id: &str) -> String {
    let Some(w) = waiting_for else {
        return String::new();
    };
    let saved = state_dir
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "nowhere (no --state-dir)".into());
    format!(
        "pending (exit {}): {w}\n  state saved in {saved}; run the same command again later to continue run {run_id}",
        exit::PENDING
    )
}

fn several(all: &[CliError]) -> String {
    all.iter()
        .map(std::string::ToString::to_string)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_problems_print_in_order_and_exit_with_the_worst() {
        let e = CliError::Several(vec![
            CliError::Report(ReportError::JUnit("disk full".into())),
            CliError::Pending {
                waiting_for: Some("export 7".into()),
                state_dir: Some(PathBuf::from("st")),
                run_id: "r1".into(),
            },
        ]);
        assert_eq!(e.exit_code(), exit::PENDING);
        assert_eq!(
            e.to_string(),
            "error: junit: disk full\npending (exit 75): export 7\n  state saved in st; run the same command again later to continue run r1"
        );
        let quiet = CliError::Several(vec![CliError::Interrupted, CliError::StepFailed(None)]);
        assert_eq!(quiet.to_string(), "");
        assert_eq!(quiet.exit_code(), exit::INTERRUPTED);
    }

    #[test]
    fn every_kind_of_failure_has_its_documented_exit_code() {
        let cases = [
            (CliError::Usage("--shard x".into()), 2),
            (CliError::InvalidFiles { bad: 1, total: 2 }, 2),
            (CliError::Invalid("inputs".into()), 2),
            (CliError::StepFailed(Some("boom".into())), 1),
            (
                CliError::DecryptFailed {
                    failed: 1,
                    total: 1,
                },
                1,
            ),
            (CliError::Interrupted, 130),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code(), code, "{e:?}");
        }
        assert_eq!(conclude(Ok(())), exit::OK);
        assert_eq!(
            CliError::InvalidFiles { bad: 1, total: 2 }.to_string(),
            "1 of 2 files invalid"
        );
    }
}
