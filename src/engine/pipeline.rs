//! Download-then-decrypt pipelining: each file is decrypted as soon as it has arrived.
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::active_run::{ActiveRun, Scope};
use super::failure::{ActionError, StopReason, WorkflowFailure};
use super::merge_retry;
use crate::events::StepStatus;
use crate::state::{DoneStatus, Record};
use crate::steps::download_and_decrypt::{DownloadProgress, PipelineError};
use crate::steps::{self, StepEnv, StepError};
use crate::workflow::file_plan::{DecryptAction, DownloadAction};
use crate::workflow::plan::{Action, PlannedStep};

/// True when `next` decrypts exactly the files `step` downloads, with no condition or
/// error handling of their own: then both run pipelined (each file decrypted on arrival).
/// Returns both specs then.
pub(super) fn pipelined<'a>(step: &'a PlannedStep, next: &'a PlannedStep) -> Option<Pipelined<'a>> {
    let (Action::Download(download), Action::Decrypt(decrypt)) = (&step.action, &next.action)
    else {
        return None;
    };
    if step.when.is_some()
        || next.when.is_some()
        || step.continue_on_error
        || next.continue_on_error
    {
        return None;
    }
    let Value::String(files) = &decrypt.spec.files else {
        return None;
    };
    let compact: String = files.chars().filter(|c| !c.is_whitespace()).collect();
    (compact == format!("{{{{steps.{}.files}}}}", step.id)).then_some(Pipelined {
        dl: step,
        download,
        dec: next,
        decrypt,
    })
}

/// A download step and the decrypt step of its files.
pub(super) struct Pipelined<'a> {
    pub(super) dl: &'a PlannedStep,
    download: &'a DownloadAction,
    pub(super) dec: &'a PlannedStep,
    decrypt: &'a DecryptAction,
}

/// Runs a download and the decrypt of its files together; emits both steps' events.
pub(super) async fn run_pipelined(
    run: &Arc<ActiveRun>,
    pair: Pipelined<'_>,
    scope: &Scope,
) -> Result<(Value, Value), StopReason> {
    let ctx = scope.ctx(run);
    let steps = [pair.dl, pair.dec];
    let both = BothSteps {
        run,
        steps,
        paths: steps.map(|s| format!("{}{}", scope.prefix, s.id)),
        labels: steps.map(|s| scope.label(&s.id)),
        names: steps.map(|s| super::active_run::step_name(run, s, scope)),
        started: Instant::now(),
    };
    for (i, step) in steps.into_iter().enumerate() {
        run.step_started(both.at(i), step, &both.names[i]);
    }
    let result = execute_pair(&both, &pair, scope, &ctx).await;
    pair_outcome(&both, result)
}

/// The two steps of a pipelined pair as they run: download (0) and decrypt (1).
struct BothSteps<'a> {
    run: &'a Arc<ActiveRun>,
    steps: [&'a PlannedStep; 2],
    paths: [String; 2],
    labels: [Option<String>; 2],
    names: [String; 2],
    started: Instant,
}

/// Which step of the pair failed (0: the download, 1: the decrypt), why, and how far the
/// downloads got when the decrypt failed.
type PairFailure = (usize, ActionError, Option<DownloadProgress>);

impl BothSteps<'_> {
    fn at(&self, i: usize) -> (&str, Option<&str>) {
        (&self.paths[i], self.labels[i].as_deref())
    }

    /// Records (unless cancelled) and emits the end of step `i`.
    fn finish(&self, i: usize, status: StepStatus, error: Option<String>, outputs: &Value) {
        let run = self.run;
        match (status, &error) {
            // A download whose decrypt failed has no outputs here: not recorded, its
            // verified files are skipped when the pair runs again.
            (StepStatus::Succeeded, _) if !outputs.is_null() => {
                run.record_done(&self.paths[i], DoneStatus::Succeeded, 1, outputs);
            }
            (StepStatus::Failed, Some(e)) if !run.cancel.is_cancelled() => {
                run.record(Record::Failed {
                    step: self.paths[i].clone(),
                    at: chrono::Utc::now(),
                    error: run.emitter.secrets().mask(e),
                });
            }
            _ => {}
        }
        run.step_finished(
            self.at(i),
            (self.steps[i], &self.names[i]),
            status,
            1,
            self.started,
            error,
            outputs,
        );
    }
}

/// Records both starts and runs the pair within the longer of their timeouts.
async fn execute_pair(
    both: &BothSteps<'_>,
    pair: &Pipelined<'_>,
    scope: &Scope,
    ctx: &Value,
) -> Result<(Value, Value), PairFailure> {
    let (run, [dl, dec], paths) = (both.run, both.steps, &both.paths);
    let defaults = scope.workflow.defaults();
    let deadline = [dl, dec]
        .iter()
        .filter_map(|s| {
            s.timeout
                .or(defaults.timeout)
                .map(super::super::workflow::duration::Dur::get)
        })
        .max();
    let cancel = run.cancel.child_token();
    let ledgers = [run.ledger(&paths[0]), run.ledger(&paths[1])];
    for (p, label) in paths.iter().zip(&both.labels) {
        run.record(Record::Started {
            step: p.clone(),
            at: chrono::Utc::now(),
            label: label.clone(),
        });
    }
    let env_dl = StepEnv {
        step: &paths[0],
        emitter: &run.emitter,
        cancel: &cancel,
        retry: merge_retry(defaults.retry.as_ref(), dl.retry.as_ref()),
        dry_run: run.dry_run,
        started: both.started,
        deadline,
        max_wait: None,
        poll_wait_cap: run.poll_wait_cap,
        ledger: ledgers[0].as_ref(),
        overwrite: run.overwrite_guard(dl),
        budgets: None,
    };
    let env_dec = StepEnv {
        step: &paths[1],
        retry: merge_retry(defaults.retry.as_ref(), dec.retry.as_ref()),
        ledger: ledgers[1].as_ref(),
        overwrite: run.overwrite_guard(dec),
        ..env_dl
    };
    let spec = pair.download;
    // No connection: a plain one, and no auth headers on the downloads.
    let conn = run
        .connection(&scope.workflow.file, spec.connection.as_deref(), ctx)
        .map_err(|e| (0, e, None))?;
    let fut = steps::download_and_decrypt::download_then_decrypt(
        spec,
        &conn,
        spec.connection.is_some(),
        pair.decrypt,
        &env_dl,
        &env_dec,
        ctx,
    );
    let r = match deadline {
        None => fut.await,
        Some(limit) => match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => {
                cancel.cancel();
                Err(PipelineError::Download(StepError::Timeout { after: limit }))
            }
        },
    };
    r.map_err(|e| match e {
        PipelineError::Download(e) => (0, ActionError::Step(e), None),
        PipelineError::Decrypt { error, downloads } => (1, ActionError::Step(error), downloads),
    })
}

/// Records and reports how the pair ended: both succeeded, cancelled with the run, or one
/// failed (the other skipped, or the download's status by how far its files got).
#[allow(clippy::result_large_err)] // the engine's StopReason, passed on as the async fns do
fn pair_outcome(
    both: &BothSteps<'_>,
    result: Result<(Value, Value), PairFailure>,
) -> Result<(Value, Value), StopReason> {
    match result {
        Ok((a, b)) => {
            both.finish(0, StepStatus::Succeeded, None, &a);
            both.finish(1, StepStatus::Succeeded, None, &b);
            Ok((a, b))
        }
        // As for single steps: after Ctrl-C, any error of the pair is the cancellation.
        Err(_) if both.run.cancel.is_cancelled() => {
            for i in 0..2 {
                both.finish(
                    i,
                    StepStatus::Failed,
                    Some("cancelled".into()),
                    &Value::Null,
                );
            }
            Err(StopReason::Cancelled)
        }
        Err((i, e, downloads)) => {
            let msg = e.to_string();
            if i == 0 {
                both.finish(0, StepStatus::Failed, Some(msg), &Value::Null);
                both.finish(
                    1,
                    StepStatus::Skipped,
                    Some(format!("`{}` failed", both.steps[0].id)),
                    &Value::Null,
                );
            } else {
                let (status, why) = download_status(downloads.as_ref(), &both.steps[1].id);
                both.finish(0, status, why, &Value::Null);
                both.finish(1, StepStatus::Failed, Some(msg), &Value::Null);
            }
            Err(StopReason::Failed(WorkflowFailure::Step {
                step: both.paths[i].clone(),
                source: e,
            }))
        }
    }
}

/// The download step's status when its pipelined decrypt failed: "ok" only when every one
/// of its files was complete; failed ("incomplete") when some were stopped mid-transfer;
/// skipped when the decrypt failed before any download started.
fn download_status(d: Option<&DownloadProgress>, decrypt: &str) -> (StepStatus, Option<String>) {
    match d {
        Some(d) if d.is_complete() => (StepStatus::Succeeded, None),
        Some(d) => (
            StepStatus::Failed,
            Some(format!(
                "incomplete: {} of {} files downloaded and verified when `{decrypt}` failed; the \
                 others were stopped (their .part files are kept and resumed by the next run)",
                d.complete, d.of
            )),
        ),
        None => (
            StepStatus::Skipped,
            Some(format!("not started: `{decrypt}` failed first")),
        ),
    }
}
