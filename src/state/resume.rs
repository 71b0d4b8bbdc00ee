//! `--resume RUN`: whether the named run may be continued by this command, decided the same
//! way by both stores (only where the runs are looked up differs).
use super::{differences, RunHeader, StateError};

fn refuse(id: &str, why: String) -> StateError {
    StateError::ResumeRefused {
        run_id: id.to_string(),
        why,
    }
}

/// What `existing` (this identity's unfinished run, if any) decides for `--resume id`: that
/// run itself, or a refusal naming the other one. None: look for run `id` elsewhere.
pub(crate) fn against_existing(
    id: &str,
    existing: Option<String>,
) -> Option<Result<String, StateError>> {
    match existing {
        Some(e) if e == id => Some(Ok(e)),
        Some(e) => Some(Err(refuse(
            id,
            format!(
                "this workflow with these inputs has another unfinished run, {e}; resume that one (`--resume {e}`), or give it up with `auditflow runs abandon {e}`"
            ),
        ))),
        None => None,
    }
}

/// The refusal of a run that is not unfinished.
pub(crate) fn not_unfinished(id: &str) -> StateError {
    refuse(
        id,
        "it is not unfinished (`auditflow runs show` tells how it ended); nothing to resume".into(),
    )
}

/// Run `id` (its recorded `theirs` header) is this command's run (`ours`), or why not.
pub(crate) fn check_same_run(
    id: &str,
    theirs: Option<RunHeader>,
    ours: &RunHeader,
) -> Result<(), StateError> {
    let theirs = theirs.ok_or_else(|| refuse(id, "its journal has no readable header".into()))?;
    let differ = differences(&theirs, ours);
    if differ.is_empty() {
        Ok(())
    } else {
        Err(refuse(
            id,
            format!("it is not this command's run: {}", differ.join("; ")),
        ))
    }
}
