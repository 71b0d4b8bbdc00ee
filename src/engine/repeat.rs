//! `repeat` loops: the body runs again until `until` holds, at most `max_iterations` times in
//! one process. Iterations are journaled like `for_each` ones (`loop[3].get`); a resumed run
//! replays what an earlier process finished without counting it, up to the first step that
//! must run again; from there on everything runs again from the cursors (files already saved
//! are kept, not fetched again). Only the last
//! iteration's outputs are held, so a chain of thousands of files costs the memory of one.
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use super::active_run::{ActiveRun, Scope};
use super::failure::{ActionError, StopReason};
use super::run_steps;
use crate::steps::{StepEnv, StepError};
use crate::workflow::plan::{PlannedStep, RepeatPlan};
use crate::workflow::step_output::{outputs_object, StepOutput};

/// Runs the body until `until` holds. Reaching `max_iterations` first ends the run pending
/// (exit 75): more data remains, and the next run continues from the cursors.
pub(super) async fn repeat(
    run: &Arc<ActiveRun>,
    step: &PlannedStep,
    spec: &RepeatPlan,
    scope: &Scope,
    env: &StepEnv<'_>,
) -> Result<Value, ActionError> {
    let until = &spec.until;
    let shown = scope.label(&step.id);
    let shown = shown.as_deref().unwrap_or(env.step).to_string();
    let mut fresh = 0u32;
    let mut index = 0usize;
    let mut replaying = scope.replay;
    loop {
        let mut sub = scope.clone();
        sub.prefix = format!("{}[{index}].", env.step);
        sub.label_prefix = format!("{shown}[{index}].");
        sub.replay = replaying;
        iteration(run, &spec.steps, &mut sub).await?;
        if !sub.replay {
            fresh += 1;
        }
        replaying = sub.replay;
        let done = until
            .render_bool(&sub.ctx(run))
            .map_err(|e| StepError::template("repeat.until", e))?;
        // A dry run shows one iteration: its answers are placeholders.
        if done || run.dry_run {
            return Ok(outputs_object([
                (StepOutput::Iterations, json!(index + 1)),
                (StepOutput::Done, json!(done)),
            ]));
        }
        if fresh >= spec.max_iterations {
            run.more_data.store(true, Ordering::SeqCst);
            return Err(StepError::Pending {
                waiting_for: format!(
                    "more data remains: `{}` ran max_iterations ({}) iterations and `until` does not hold yet; the next run continues from the cursors",
                    env.step, spec.max_iterations
                ),
                polls: 0,
                quota: false,
            }
            .into());
        }
        index += 1;
    }
}

/// Runs one iteration's steps in order. Steps an earlier process finished are replayed up to
/// the first one that runs again; from there on nothing is replayed (`sub.replay` turns
/// false), as a request sent again may get another answer than the one recorded, and what
/// follows must be built on the new one. Files already saved are still kept, not fetched again.
async fn iteration(
    run: &Arc<ActiveRun>,
    steps: &[PlannedStep],
    sub: &mut Scope,
) -> Result<(), ActionError> {
    for step in steps {
        let recorded = sub.replay
            && run
                .replayable(&format!("{}{}", sub.prefix, step.id))
                .is_some();
        run_steps(run, std::slice::from_ref(step), sub)
            .await
            .map_err(stopped)?;
        if !recorded {
            sub.replay = false;
        }
    }
    Ok(())
}

/// An iteration's stop as the loop step's error.
fn stopped(reason: StopReason) -> ActionError {
    match reason {
        StopReason::Failed(f) => ActionError::Iteration(Box::new(f)),
        StopReason::Pending(w) => StepError::Pending {
            waiting_for: w.text,
            polls: 0,
            quota: w.quota,
        }
        .into(),
        StopReason::Cancelled => StepError::Cancelled.into(),
    }
}
