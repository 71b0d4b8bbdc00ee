//! Why steps stop: the engine's typed failures, each keeping its cause as its source.
use crate::steps::StepError;
use crate::template::TemplateError;
use crate::vendors::BuildError;

use super::inputs::InputError;

/// Why a list of steps (a run's, a `uses` callee's, a loop iteration's) stopped early.
#[derive(Debug)]
pub(super) enum StopReason {
    Failed(WorkflowFailure),
    /// Still waiting (a poll detached, a quota spent).
    Pending(Waiting),
    Cancelled,
}

/// What a pending step waits for.
#[derive(Debug, Clone)]
pub(super) struct Waiting {
    /// For what, in words.
    pub text: String,
    /// A quota (it renews later), not a vendor state.
    pub quota: bool,
}

/// What failed in a workflow's steps or outputs. The text of each is the run's error.
#[derive(Debug, thiserror::Error)]
pub(super) enum WorkflowFailure {
    /// A step failed (after its retries).
    #[error("step `{step}` failed: {source}")]
    Step { step: String, source: ActionError },
    /// A step's `if` does not render.
    #[error("step `{step}`: `if`: {source}")]
    Condition { step: String, source: TemplateError },
    /// An entry of the workflow's `outputs` does not render.
    #[error("output `{name}`: {source}")]
    Output { name: String, source: TemplateError },
    /// The file's cursors could not be read when it started.
    #[error(transparent)]
    Cursors(#[from] super::cursors::CursorError),
    /// A loop iteration not started because an earlier one failed.
    #[error("not started after an earlier failure (fail_fast)")]
    NotStarted,
}

/// Why one step's action failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ActionError {
    #[error(transparent)]
    Step(#[from] StepError),
    /// The step's connection could not be built.
    #[error(transparent)]
    Connection(BuildError),
    /// A `uses` step's `with:` does not fit the callee's inputs.
    #[error("`uses: {target}`: {source}")]
    UsesInputs { target: String, source: InputError },
    /// A `set_cursor` step could not write its cursor.
    #[error(transparent)]
    SetCursor(#[from] super::cursors::SetCursorError),
    /// A step inside a `repeat` iteration failed; the text is that step's own.
    #[error("{0}")]
    Iteration(Box<WorkflowFailure>),
    /// The workflow a `uses` step runs failed; the text is the callee's own.
    #[error("{source}")]
    SubWorkflow {
        target: String,
        source: Box<WorkflowFailure>,
    },
}

impl ActionError {
    /// The attempts the failed action took (as reported in events and the journal).
    pub(super) fn attempts(&self) -> u32 {
        match self {
            ActionError::Step(StepError::Vendor { attempts, .. }) => *attempts,
            _ => 1,
        }
    }
}

impl From<BuildError> for ActionError {
    /// A vendor error while setting a connection up counts as a vendor failure with no
    /// attempt made; other build errors keep their own type.
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Vendor(source) => ActionError::Step(StepError::Vendor {
                source,
                attempts: 0,
            }),
            other => ActionError::Connection(other),
        }
    }
}
