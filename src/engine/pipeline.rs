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
use crate::workflow::model::{DecryptSpec, DownloadSpec};
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
    let Value::String(files) = &decrypt.files else {
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
    download: &'a DownloadSpec,
    pub(super) dec: &'a PlannedStep,
    decrypt: &'a DecryptSpec,
}

/// Runs a download and the decrypt of its files together; emits both steps' events.
pub(super) async fn run_pipelined(
    run: &Arc<ActiveRun>,
    pair: Pipelined<'_>,
    scope: &Scope,
) -> Result<(Value, Value), StopReason> {
    let Pipelined {
        dl,
        download: spec,
        dec,
        decrypt: dspec,
    } = pair;
    let ctx = scope.ctx(run);
    let paths = [
        format!("{}{}", scope.prefix, dl.id),
        format!("{}{}", scope.prefix, dec.id),
    ];
    let labels = [dl, dec].map(|s| scope.label(&s.id));
    let names = [dl, dec].map(|s| super::active_run::step_name(run, s, scope));
    for (i, (s, n)) in [dl, dec].iter().zip(&names).enumerate() {
        run.step_started((&paths[i], labels[i].as_deref()), s, n);
    }
    let started = Instant::now();
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
    for (p, label) in paths.iter().zip(&labels) {
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
        started,
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
    let result = async {
        // No connection: a plain one, and no auth headers on the downloads.
        let conn = run
            .connection(&scope.workflow.file, spec.connection.as_deref(), &ctx)
            .map_err(|e| (0, e, None))?;
        let fut = steps::download_and_decrypt::download_then_decrypt(
            spec,
            &conn,
            spec.connection.is_some(),
            dspec,
            &env_dl,
            &env_dec,
            &ctx,
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
    .await;
    let finish = |i: usize, status: StepStatus, error: Option<String>, outputs: &Value| {
        match (status, &error) {
            // A download whose decrypt failed has no outputs here: not recorded, its
            // verified files are skipped when the pair runs again.
            (StepStatus::Succeeded, _) if !outputs.is_null() => {
                run.record_done(&paths[i], DoneStatus::Succeeded, 1, outputs);
            }
            (StepStatus::Failed, Some(e)) if !run.cancel.is_cancelled() => {
                run.record(Record::Failed {
                    step: paths[i].clone(),
                    at: chrono::Utc::now(),
                    error: run.emitter.secrets().mask(e),
                });
            }
            _ => {}
        }
        run.step_finished(
            (&paths[i], labels[i].as_deref()),
            ([dl, dec][i], &names[i]),
            status,
            1,
            started,
            error,
            outputs,
        );
    };
    match result {
        Ok((a, b)) => {
            finish(0, StepStatus::Succeeded, None, &a);
            finish(1, StepStatus::Succeeded, None, &b);
            Ok((a, b))
        }
        // As for single steps: after Ctrl-C, any error of the pair is the cancellation.
        Err(_) if run.cancel.is_cancelled() => {
            finish(
                0,
                StepStatus::Failed,
                Some("cancelled".into()),
                &Value::Null,
            );
            finish(
                1,
                StepStatus::Failed,
                Some("cancelled".into()),
                &Value::Null,
            );
            Err(StopReason::Cancelled)
        }
        Err((i, e, downloads)) => {
            let msg = e.to_string();
            if i == 0 {
                finish(0, StepStatus::Failed, Some(msg.clone()), &Value::Null);
                finish(
                    1,
                    StepStatus::Skipped,
                    Some(format!("`{}` failed", dl.id)),
                    &Value::Null,
                );
            } else {
                let (status, why) = download_status(downloads.as_ref(), &dec.id);
                finish(0, status, why, &Value::Null);
                finish(1, StepStatus::Failed, Some(msg.clone()), &Value::Null);
            }
            Err(StopReason::Failed(WorkflowFailure::Step {
                step: paths[i].clone(),
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
