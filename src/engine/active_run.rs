//! The run in progress: its journal, replay of earlier processes, connections and scopes.
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::failure::ActionError;
use super::for_each::Shard;
use super::loop_reads::LoopReadsCache;
use crate::events::{Emitter, Event, Sink, StepStatus};
use crate::state::keep::Referenced;
use crate::state::{self, DoneStatus, Journal, Record, Replay};
use crate::steps::at_most_once::Ledger;
use crate::steps::overwrite::OverwriteGuard;
use crate::vendors::{Connection, ConnectionCache};
use crate::workflow::plan::{PlannedStep, PlannedWorkflow};
use crate::workflow::Loaded;

/// Shared state of the run in progress.
pub(super) struct ActiveRun {
    pub(super) emitter: Emitter,
    pub(super) env: Value,
    pub(super) run_info: Value,
    pub(super) dry_run: bool,
    /// A rehearsal: no poll waits longer than this between two polls.
    pub(super) poll_wait_cap: Option<Duration>,
    /// `--max-wait`: polls still waiting at this instant detach.
    pub(super) detach_at: Option<Instant>,
    pub(super) cancel: CancellationToken,
    /// The journal this process appends to, and what earlier processes recorded.
    pub(super) journal: Option<Journal>,
    pub(super) replay: Option<Replay>,
    /// Files every step recorded or claimed in earlier processes (built from `replay`).
    pub(super) earlier_files: Arc<crate::steps::at_most_once::EarlierFiles>,
    pub(super) shard: Option<Shard>,
    /// Connections, built on first use.
    pub(super) connections: ConnectionCache,
    /// Which existing files steps may replace (None: any, `--overwrite`).
    pub(super) overwrite: Option<Arc<OverwriteGuard>>,
    /// The step outputs later templates read: what the journal keeps.
    pub(super) referenced: Arc<Referenced>,
    /// Set when a step failed on a vendor's terminal state (a poll's `fail_if`): the reason.
    pub(super) terminal: std::sync::Mutex<Option<String>>,
    /// What each loop's iterations read of the scope around them.
    pub(super) loop_reads: LoopReadsCache,
    /// The quota budgets calls spend from.
    pub(super) budgets: crate::state::budget::Budgets,
    /// Creates adopt a usable request the vendor already holds, from listings read once per
    /// run (None with `--fresh`).
    pub(super) adopt_existing: Option<Arc<crate::steps::at_most_once::Listings>>,
    /// The state store, where cursors are kept (None: nowhere, or a dry run).
    pub(super) store: Option<crate::state::Store>,
    /// Set when a `repeat` stopped at `max_iterations` with data left: the run ends pending
    /// but is not resumed (its cursors say where the next run continues).
    pub(super) more_data: std::sync::atomic::AtomicBool,
}

impl ActiveRun {
    /// Notes that `error` of the step at `path` is a vendor's terminal state, if it is one.
    pub(super) fn note_terminal(&self, path: &str, error: &ActionError) {
        if let ActionError::Step(crate::steps::StepError::PollFailed { message, .. }) = error {
            if let Ok(mut t) = self.terminal.lock() {
                t.get_or_insert_with(|| {
                    format!("step `{path}`: {}", self.emitter.secrets().mask(message))
                });
            }
        }
    }

    /// The vendor's terminal failure the run ended in, if a step noted one.
    pub(super) fn terminal_failure(&self) -> Option<String> {
        self.terminal.lock().ok().and_then(|t| t.clone())
    }

    /// Gives back the in-flight quota units held by steps under `prefix` (their workflow file
    /// ended); a ledger that cannot be written is warned about (its units free when the run
    /// ends).
    pub(super) async fn release_budgets(&self, prefix: &str) {
        if self.dry_run {
            return;
        }
        if let Err(e) = self.budgets.release(prefix).await {
            self.emitter.warn(e.to_string());
        }
    }

    /// The guard of `step`'s writes: none when the step says `overwrite: true`.
    pub(super) fn overwrite_guard(&self, step: &PlannedStep) -> Option<&OverwriteGuard> {
        self.overwrite.as_deref().filter(|_| !step.overwrite)
    }

    pub(super) fn record(&self, rec: Record) {
        if let Some(j) = &self.journal {
            j.append(&rec);
        }
    }

    /// Replays a step an earlier process finished: emits its events, returns its outputs.
    pub(super) fn replayed(
        &self,
        (path, label): (&str, Option<&str>),
        step: &PlannedStep,
        name: &str,
    ) -> Option<Value> {
        let done = self.replayable(path)?;
        let status = match done.status {
            DoneStatus::Succeeded => StepStatus::Recorded,
            DoneStatus::Skipped => StepStatus::Skipped,
            DoneStatus::FailedContinued => StepStatus::FailedContinued,
        };
        self.step_started((path, label), step, name);
        self.step_finished(
            (path, label),
            (step, name),
            status,
            0,
            Instant::now(),
            None,
            &done.outputs,
        );
        Some(done.outputs.clone())
    }

    /// Records a step's end for good; outputs are kept as [`Referenced::keep`] says (masked,
    /// only what later steps read, bounded), and not replayed if cleaning changed what later
    /// steps read (the step runs again instead).
    pub(super) fn record_done(
        &self,
        path: &str,
        status: DoneStatus,
        attempts: u32,
        outputs: &Value,
    ) {
        if self.journal.is_none() || self.dry_run {
            return;
        }
        let kept = self.referenced.keep(path, outputs, self.emitter.secrets());
        if let Some(note) = &kept.note {
            self.emitter.warn(format!("step `{path}`: {note}"));
        }
        self.record(Record::Done {
            step: path.to_string(),
            at: chrono::Utc::now(),
            status,
            attempts,
            outputs: kept.value,
            replayable: kept.replayable,
        });
    }

    /// The journal and what earlier processes recorded for the step at `path`.
    pub(super) fn ledger(&self, path: &str) -> Option<Ledger> {
        let journal = self.journal.clone()?;
        let r = self.replay.as_ref();
        Some(Ledger {
            journal,
            referenced: self.referenced.clone(),
            intent: r.and_then(|r| r.intents.get(path).cloned()),
            response: r.and_then(|r| r.responses.get(path).cloned()),
            artifacts: r
                .and_then(|r| r.artifacts.get(path).cloned())
                .unwrap_or_default(),
            polls: r.and_then(|r| r.polls.get(path).map(|p| p.0)).unwrap_or(0),
            earlier: self.earlier_files.clone(),
            adopt: self.adopt_existing.clone(),
        })
    }

    /// How long ago an earlier process first started the step at `path`.
    pub(super) fn started_before(&self, path: &str) -> Duration {
        self.replay
            .as_ref()
            .and_then(|r| r.first_started.get(path))
            .and_then(|t| (chrono::Utc::now() - *t).to_std().ok())
            .unwrap_or(Duration::ZERO)
    }

    /// The record of a step an earlier process finished, when its outputs can be reused.
    pub(super) fn replayable(&self, path: &str) -> Option<&state::journal::DoneStep> {
        self.replay
            .as_ref()?
            .done
            .get(path)
            .filter(|d| d.replayable)
    }

    /// The connection `name` of `file` (None: the plain one for `url:` calls).
    pub(super) fn connection(
        &self,
        file: &Loaded,
        name: Option<&str>,
        ctx: &Value,
    ) -> Result<Connection, ActionError> {
        let secrets = self.emitter.secrets();
        Ok(self
            .connections
            .get(file, name, ctx, secrets, |w| self.emitter.warn(w))?)
    }

    /// `label`: the path with loop items, inside loops ([`Scope::label`]).
    pub(super) fn step_started(
        &self,
        (path, label): (&str, Option<&str>),
        step: &PlannedStep,
        name: &str,
    ) {
        self.emitter.emit(Event::StepStarted {
            step: path.to_string(),
            name: name.into(),
            kind: step.kind(),
            label: label.map(str::to_string),
        });
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the facts the StepFinished event carries, each from another place in the caller"
    )]
    pub(super) fn step_finished(
        &self,
        (path, label): (&str, Option<&str>),
        (step, name): (&PlannedStep, &str),
        status: StepStatus,
        attempts: u32,
        started: Instant,
        error: Option<String>,
        outputs: &Value,
    ) {
        self.emitter.emit(Event::StepFinished {
            step: path.to_string(),
            name: name.to_string(),
            kind: step.kind(),
            status,
            attempts,
            duration: started.elapsed(),
            error,
            outputs: summarize(outputs),
            label: label.map(str::to_string),
        });
    }
}

/// The name reporters show: `name:` rendered in the step's scope (it may read inputs, the
/// loop's item, earlier steps), else the id. Validation checked the template; should it still
/// fail to render, the text as written is shown rather than stopping the run over a label.
pub(super) fn step_name(run: &ActiveRun, step: &PlannedStep, scope: &Scope) -> String {
    match &step.name {
        Some(n) if n.source().contains("{{") => n
            .render_string(&scope.ctx(run))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| n.source().to_string()),
        _ => step.display_name().to_string(),
    }
}

/// Variables in scope at one point: the file, its inputs, loop variables, earlier steps.
#[derive(Clone)]
pub(super) struct Scope {
    pub(super) workflow: Arc<PlannedWorkflow>,
    pub(super) inputs: Value,
    /// `item` and `index` inside a loop.
    pub(super) item: Option<(Value, usize)>,
    /// Outputs of steps already run, visible here.
    pub(super) steps: Map<String, Value>,
    /// Event path prefix (`loop[2].`, `caller/`).
    pub(super) prefix: String,
    /// The prefix as people read it inside loops (`loop[2: store-a].`); empty outside.
    pub(super) label_prefix: String,
    /// Inside a `for_each` (only the outermost loops are sharded).
    pub(super) in_loop: bool,
    /// The cursors of the file (shared by its loops' iterations).
    pub(super) cursors: Arc<super::cursors::CursorSet>,
    /// Steps an earlier process finished are replayed from the journal (false inside a
    /// `repeat` iteration that runs again from the cursors).
    pub(super) replay: bool,
}

impl Scope {
    /// Inside loops, the path of step `id` with each loop's item (`loop[2: store-a].id`).
    pub(super) fn label(&self, id: &str) -> Option<String> {
        (!self.label_prefix.is_empty()).then(|| format!("{}{id}", self.label_prefix))
    }

    pub(super) fn ctx(&self, run: &ActiveRun) -> Value {
        let mut m = Map::new();
        m.insert("inputs".into(), self.inputs.clone());
        m.insert("env".into(), run.env.clone());
        m.insert("steps".into(), Value::Object(self.steps.clone()));
        let mut info = run.run_info.clone();
        if let Some(o) = info.as_object_mut() {
            o.insert("workflow".into(), json!(self.workflow.file.workflow.name));
            o.insert(
                "workflow_dir".into(),
                json!(self.workflow.file.dir().display().to_string()),
            );
        }
        m.insert("run".into(), info);
        if run.dry_run {
            m.insert(
                crate::template::placeholder::DRY_RUN.into(),
                Value::Bool(true),
            );
        }
        if let Some(c) = self.cursors.values() {
            m.insert("cursors".into(), c);
        }
        if let Some((item, index)) = &self.item {
            m.insert("item".into(), item.clone());
            m.insert("index".into(), json!(index));
        }
        let ctx = Value::Object(m);
        #[cfg(test)]
        ctx_count::add(&ctx);
        ctx
    }
}

/// Forwards finished files to the run's journal (a resumed step skips them).
pub(super) struct JournalArtifacts(pub(super) Journal);

impl Sink for JournalArtifacts {
    fn event(&self, e: &Event) {
        if let Event::Artifact { step, artifact } = e {
            self.0.append(&Record::Artifact {
                step: step.clone(),
                artifact: artifact.clone(),
            });
        }
    }
}

/// A small summary of outputs for reports (never whole bodies).
pub(super) fn summarize(outputs: &Value) -> Value {
    let Some(o) = outputs.as_object() else {
        return Value::Null;
    };
    let mut m = Map::new();
    for (k, v) in o {
        let s = match (k.as_str(), v) {
            ("body", v) => json!({"bytes": v.to_string().len()}),
            ("headers", _) => continue,
            ("results", Value::Array(a)) => json!(a.len()),
            (_, Value::Array(a)) if a.len() > 20 => json!(format!("{} items", a.len())),
            (_, v) => v.clone(),
        };
        m.insert(k.clone(), s);
    }
    Value::Object(m)
}

/// Counts the JSON values copied into template contexts on this thread (tests: the per-item
/// cost of a loop must not grow with its item count).
#[cfg(test)]
pub(super) mod ctx_count {
    use std::cell::Cell;

    use serde_json::Value;

    thread_local! {
        static NODES: Cell<u64> = const { Cell::new(0) };
    }

    fn nodes(v: &Value) -> u64 {
        1 + match v {
            Value::Array(a) => a.iter().map(nodes).sum(),
            Value::Object(m) => m.values().map(nodes).sum(),
            _ => 0,
        }
    }

    pub(in crate::engine) fn add(ctx: &Value) {
        NODES.with(|n| n.set(n.get() + nodes(ctx)));
    }

    /// Values counted since the last call.
    pub(in crate::engine) fn take() -> u64 {
        NODES.with(|n| n.replace(0))
    }
}
