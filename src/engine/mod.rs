//! The engine: walks a validated plan step by step, journals each step, and emits events.
//!
//! Jobs live beside it: `inputs` (input resolution), `pipeline` (download then decrypt),
//! `for_each` (loops and shards), `active_run` (the run's shared state), `failure` (why
//! steps stop). Vendor connections are built by `vendors::build`.
mod active_run;
mod cursors;
mod dry_run;
mod failure;
mod for_each;
mod inputs;
mod label;
mod loop_reads;
mod pipeline;
mod repeat;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::events::{Emitter, Event, RunStatus, StepStatus};
use crate::retry::RetryPolicy;
use crate::state::{self, Begin, DoneStatus, Record, StateError, Store};
use crate::steps::overwrite::OverwriteGuard;
use crate::steps::{self, call, poll, StepEnv, StepError};
use crate::vendors::ConnectionCache;
use crate::workflow::duration::Dur;
use crate::workflow::model::{Lifecycle, RetrySpec};
use crate::workflow::plan::{Action, Plan, PlannedStep, StepKind, UsesPlan};
use crate::workflow::step_output::StepOutput;

use active_run::{ActiveRun, JournalArtifacts, Scope};
use failure::{ActionError, StopReason, Waiting, WorkflowFailure};
use for_each::for_each;
pub(crate) use for_each::Shard;
use inputs::{key_inputs, register_secret_inputs};
pub(crate) use inputs::{resolve_inputs, InputError};
use pipeline::{pipelined, run_pipelined};

/// How to run.
pub(crate) struct RunOptions {
    /// Inputs as given (strings from the command line, typed values from a file).
    pub inputs: BTreeMap<String, Value>,
    /// The environment templates see as `env`.
    pub env: BTreeMap<String, String>,
    pub dry_run: bool,
    /// A rehearsal against the built-in simulator: connections reach loopback addresses
    /// only, and no poll waits longer than [`REHEARSAL_POLL_WAIT`] between two polls.
    pub rehearsal: bool,
    /// Detach (exit 75) when polling is still waiting this long after the run started.
    pub max_wait: Option<Duration>,
    pub cancel: CancellationToken,
    /// Where the run's state is kept (None: nowhere; nothing can be resumed).
    pub state: Option<Store>,
    /// Abandon an unfinished run of the same workflow and inputs instead of resuming it.
    pub fresh: bool,
    /// Continue this run (its full id) or refuse (`--resume`).
    pub resume: Option<String>,
    /// Run only this shard of the outermost `for_each` loops' items.
    pub shard: Option<Shard>,
    /// Which existing files steps may replace; it must also be a sink of the run's emitter
    /// (None: any file, `--overwrite`).
    pub overwrite: Option<Arc<OverwriteGuard>>,
    /// Writes the run's evidence (the manifest and reports) once its last event is out and
    /// before its end is recorded (see [`EvidenceWriter`]).
    pub write_evidence: Option<EvidenceWriter>,
}

/// Writes the evidence of a run that ended: given the run's directory in the state
/// directory, it writes the manifest and the reports and says whether everything was
/// written. The engine calls it before it records the run's end, so that a run recorded as
/// succeeded always left its evidence: a crash or a failed write in between leaves the run
/// unfinished, and the next run resumes it and writes the evidence again.
pub(crate) type EvidenceWriter =
    Box<dyn FnOnce(Option<&std::path::Path>) -> Result<(), String> + Send>;

/// The longest wait between two polls in a rehearsal: the simulator's fast timing finishes a
/// vendor process in a few polls, whatever the workflow's interval says.
pub(crate) const REHEARSAL_POLL_WAIT: Duration = Duration::from_secs(1);

/// Why a run could not start (exit 2): bad inputs, or state that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl RunError {
    /// Whether another process holds the run (not yet: run again later).
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self, RunError::State(StateError::Busy { .. }))
    }

    /// What to do about it on the command line, when that is more than the message says.
    pub(crate) fn hint(&self) -> Option<String> {
        match self {
            RunError::Input(e) => e.command_line_hint(),
            RunError::State(_) => None,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub(crate) struct RunResult {
    pub run_id: String,
    pub status: RunStatus,
    /// Why the run did not succeed (secrets masked).
    pub error: Option<RunFailure>,
    /// The run's directory in the state directory, when state is kept.
    pub state_dir: Option<PathBuf>,
}

/// Why a run did not succeed, as its last event and the command line say it (texts masked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RunFailure {
    /// A step or the workflow's outputs failed.
    #[error("{0}")]
    Failed(String),
    /// A step waits on the vendor: what for.
    #[error("{0}")]
    Waiting(String),
    /// Ctrl-C or SIGTERM stopped the run.
    #[error("cancelled")]
    Cancelled,
    /// The run's state could not record its end (or what follows it).
    #[error("{0}")]
    State(String),
    /// The steps succeeded but the evidence could not be written: the run is not recorded
    /// as succeeded, so the next run resumes it and writes the evidence.
    #[error("the steps succeeded but the evidence could not be written ({0}); the run is recorded as failed, not done: fix that and run the same command again to write it")]
    Evidence(String),
}

impl RunFailure {
    /// The same failure with every secret of `secrets` masked in its text.
    fn masked(self, secrets: &crate::secrets::Secrets) -> Self {
        match self {
            RunFailure::Failed(t) => RunFailure::Failed(secrets.mask(&t)),
            RunFailure::Waiting(t) => RunFailure::Waiting(secrets.mask(&t)),
            RunFailure::Cancelled => RunFailure::Cancelled,
            RunFailure::State(t) => RunFailure::State(secrets.mask(&t)),
            RunFailure::Evidence(t) => RunFailure::Evidence(secrets.mask(&t)),
        }
    }
}

/// Runs a validated plan to the end, resuming the unfinished run of the same workflow and
/// inputs when the state directory has one.
pub(crate) async fn run(
    plan: Plan,
    mut opts: RunOptions,
    emitter: Emitter,
) -> Result<RunResult, RunError> {
    let wf = &plan.root.workflow;
    let inputs = resolve_inputs(wf, &opts.inputs)?;
    let weak_secrets = register_secret_inputs(wf, &inputs, emitter.secrets());
    let _derived = crate::template::derive_secrets_into(emitter.secrets());
    crate::template::supply_key_check(steps::check_upload_key);
    let started = Instant::now();
    let masked_inputs = emitter.secrets().mask_json(&Value::Object(inputs.clone()));
    let base_emitter = emitter.clone();
    let mut opened = match open_run(&plan, &opts, &inputs, &masked_inputs, emitter).await? {
        Opening::Run(opened) => *opened,
        Opening::AlreadyDone(done) => {
            return Ok(report_already_done(
                &plan,
                &base_emitter,
                done,
                masked_inputs,
            ));
        }
    };
    let emitter = opened.emitter.clone();
    emitter.emit(Event::RunStarted {
        run_id: opened.run_id.clone(),
        workflow: wf.name.clone(),
        file: plan.root.path.display().to_string(),
        inputs: masked_inputs,
        started_at: opened.started_at,
        dry_run: opts.dry_run,
        resumed: opened.resumed.take(),
        files: workflow_files(&plan),
    });
    for note in weak_secrets {
        emitter.warn(note);
    }
    if let Some(r) = &opened.replay {
        report_earlier_processes(&base_emitter, r);
    }
    let run = start_active_run(&plan, &opts, &mut opened, started).await?;
    let result = run_workflow(&run, root_scope(&plan, inputs)).await;
    let (status, outputs, error) = run_end(result);
    if let Some(j) = &run.journal {
        // Every step's record on disk before the end is written (and before a crash test
        // stops here).
        let _ = j.flush().await;
    }
    crate::failpoint::hit("run-end");
    emitter.emit(Event::RunFinished {
        status,
        duration: started.elapsed(),
        outputs: outputs.clone(),
        error: error.as_ref().map(ToString::to_string),
    });
    let run_dir = opened.state.as_ref().and_then(|s| s.dir.clone());
    let (status, error) = match opts.write_evidence.take().map(|w| w(run_dir.as_deref())) {
        Some(Err(e)) if status == RunStatus::Succeeded => {
            (RunStatus::Failed, Some(RunFailure::Evidence(e)))
        }
        _ => (status, error),
    };
    crate::failpoint::hit("manifest-written");
    let (status, error) =
        record_run_end(&run, opened.state.as_ref(), status, error, &outputs).await;
    crate::failpoint::hit("run-recorded");
    Ok(RunResult {
        run_id: opened.run_id,
        status,
        error: error.map(|e| e.masked(emitter.secrets())),
        state_dir: opened.state.and_then(|s| s.dir),
    })
}

/// A run as it begins: its id and start (an unfinished run's when resumed), its state, what
/// earlier processes recorded, and the emitter (journaling artifacts when state is kept).
struct OpenedRun {
    run_id: String,
    started_at: chrono::DateTime<chrono::Utc>,
    state: Option<state::RunState>,
    replay: Option<state::Replay>,
    /// What the run start says about a resumed run.
    resumed: Option<String>,
    emitter: Emitter,
}

/// What the state directory says about starting the run.
enum Opening {
    /// Run it (new or resumed).
    Run(Box<OpenedRun>),
    /// A one-shot workflow that already succeeded with this identity.
    AlreadyDone(state::Completion),
}

/// Begins the run in the state directory (unless there is none or it is a dry run): a new
/// run, the unfinished one resumed, or a one-shot already done; says what the user should
/// know (permissions, notes, other unfinished runs).
async fn open_run(
    plan: &Plan,
    opts: &RunOptions,
    inputs: &Map<String, Value>,
    masked_inputs: &Value,
    emitter: Emitter,
) -> Result<Opening, RunError> {
    let mut opened = OpenedRun {
        run_id: uuid::Uuid::new_v4().to_string(),
        started_at: chrono::Utc::now(),
        state: None,
        replay: None,
        resumed: None,
        emitter,
    };
    let (Some(dir), false) = (&opts.state, opts.dry_run) else {
        return Ok(Opening::Run(Box::new(opened)));
    };
    let wf = &plan.root.workflow;
    let header = run_header(
        plan,
        opts,
        inputs,
        masked_inputs,
        &opened.run_id,
        opened.started_at,
    );
    if let Some(n) = dir.permission_note() {
        opened.emitter.warn(n);
    }
    let request = state::StartRequest {
        legacy_key: state::legacy_run_key(
            &plan.root.path,
            &key_inputs(wf, inputs),
            header.shard.as_deref(),
        ),
        header: header.clone(),
        fresh: opts.fresh,
        resume: opts.resume.clone(),
        one_shot: wf.lifecycle == Lifecycle::OneShot,
    };
    let (st, begin, notes) = match dir.begin(request).await? {
        state::Started::Run {
            state,
            begin,
            notes,
        } => (state, begin, notes),
        state::Started::AlreadyDone(done) => return Ok(Opening::AlreadyDone(done)),
    };
    for n in notes {
        opened.emitter.warn(n);
    }
    if let Begin::New = begin {
        let others = dir.unfinished_like(&header, &st.run_id).await?;
        if let Some(note) = inputs::other_runs_note(&others, &header) {
            opened.emitter.warn(note);
        }
    }
    if let Begin::Resumed(r) = begin {
        opened.run_id = r.header.run_id.clone();
        opened.started_at = r.header.started_at;
        opened.resumed = Some(resumed_note(&r));
        opened.replay = Some(*r);
    }
    opened.emitter = opened
        .emitter
        .with_sink(Arc::new(JournalArtifacts(st.journal.clone())));
    opened.state = Some(st);
    Ok(Opening::Run(Box::new(opened)))
}

/// What earlier processes of a resumed run did goes to this process's reports and manifest
/// too (not to the journal again): the requests they adopted at the vendor, and the files of
/// the steps they finished (unfinished steps report theirs as they go).
fn report_earlier_processes(emitter: &Emitter, r: &state::Replay) {
    for (step, resp) in &r.responses {
        if let Some(a) = &resp.adopted {
            emitter.emit(Event::adopted(step, a.clone()));
        }
    }
    let mut steps: Vec<&String> = r
        .artifacts
        .keys()
        .filter(|s| r.done.contains_key(*s))
        .collect();
    steps.sort();
    for step in steps {
        for a in &r.artifacts[step] {
            emitter.emit(Event::Artifact {
                step: step.clone(),
                artifact: a.clone(),
            });
        }
    }
}

/// The run's shared state for its steps: budgets, connections, the journal, what earlier
/// processes recorded (taken from `opened`), the environment and the limits of the options.
async fn start_active_run(
    plan: &Plan,
    opts: &RunOptions,
    opened: &mut OpenedRun,
    started: Instant,
) -> Result<Arc<ActiveRun>, RunError> {
    let emitter = &opened.emitter;
    let budgets = match (&opts.state, &opened.state) {
        (Some(store), Some(_)) => store.budgets(&opened.run_id).await?,
        _ => state::budget::Budgets::new(None, &opened.run_id, vec![]),
    };
    if let Some(at) = state::budget::rehearsal_clock().filter(|_| !opts.dry_run) {
        emitter.warn(format!(
            "AUDITFLOW_NOW is set: quota windows are counted as if it were {} (a rehearsal clock; unset it for real runs)",
            at.to_rfc3339()
        ));
    }
    let env: Map<String, Value> = opts
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let replay = opened.replay.take();
    Ok(Arc::new(ActiveRun {
        emitter: emitter.clone(),
        env: Value::Object(env),
        run_info: json!({"id": opened.run_id, "started_at": opened.started_at.to_rfc3339()}),
        dry_run: opts.dry_run,
        detach_at: opts.max_wait.map(|d| started + d),
        cancel: opts.cancel.clone(),
        journal: opened.state.as_ref().map(|s| s.journal.clone()),
        earlier_files: Arc::new(
            replay
                .as_ref()
                .map(crate::steps::at_most_once::EarlierFiles::of)
                .unwrap_or_default(),
        ),
        replay,
        shard: opts.shard,
        connections: if opts.rehearsal {
            ConnectionCache::loopback_only()
        } else {
            ConnectionCache::default()
        },
        poll_wait_cap: poll_wait_cap(opts, emitter)?,
        overwrite: opts.overwrite.clone(),
        referenced: Arc::new(state::keep::Referenced::of_files(
            plan.files.values().map(AsRef::as_ref),
        )),
        terminal: Default::default(),
        loop_reads: Default::default(),
        budgets,
        adopt_existing: (!opts.fresh).then(Default::default),
        store: opts.state.clone().filter(|_| !opts.dry_run),
        more_data: Default::default(),
    }))
}

/// The scope of the root workflow file: its inputs, no steps run yet.
fn root_scope(plan: &Plan, inputs: Map<String, Value>) -> Scope {
    Scope {
        workflow: plan.workflow.clone(),
        inputs: Value::Object(inputs),
        item: None,
        steps: Map::new(),
        prefix: String::new(),
        label_prefix: String::new(),
        in_loop: false,
        cursors: Default::default(),
        replay: true,
    }
}

/// How the root workflow ended: its status, outputs and why it did not succeed.
fn run_end(result: Result<Value, StopReason>) -> (RunStatus, Value, Option<RunFailure>) {
    match result {
        Ok(out) => (RunStatus::Succeeded, out, None),
        Err(StopReason::Pending(w)) => (
            RunStatus::Pending,
            Value::Null,
            Some(RunFailure::Waiting(w.text)),
        ),
        Err(StopReason::Cancelled) => (
            RunStatus::Cancelled,
            Value::Null,
            Some(RunFailure::Cancelled),
        ),
        Err(StopReason::Failed(f)) => (
            RunStatus::Failed,
            Value::Null,
            Some(RunFailure::Failed(f.to_string())),
        ),
    }
}

/// Records the run's end in its state (after its evidence is written); a state that
/// cannot record it fails the run, and the terminal and `more_data` follow-ups are done.
async fn record_run_end(
    run: &ActiveRun,
    state: Option<&state::RunState>,
    mut status: RunStatus,
    mut error: Option<RunFailure>,
    outputs: &Value,
) -> (RunStatus, Option<RunFailure>) {
    let Some(st) = state else {
        return (status, error);
    };
    let secrets = run.emitter.secrets();
    let masked = error.as_ref().map(|e| secrets.mask(&e.to_string()));
    let kept_outputs = secrets.mask_json(outputs);
    if let Err(e) = st.finish(status, masked, &kept_outputs).await {
        status = RunStatus::Failed;
        error = Some(RunFailure::State(e.to_string()));
    } else if let Err(e) = end_terminal(run, st, status).await {
        error = Some(RunFailure::State(e.to_string()));
    } else if let Err(e) = release_more_data(run, st, status).await {
        error = Some(RunFailure::State(e.to_string()));
    }
    (status, error)
}

/// The longest wait between two polls: [`REHEARSAL_POLL_WAIT`] in a rehearsal, or
/// `AUDITFLOW_MAX_POLL_INTERVAL` (a duration; `auditflow sim` prints it for its fast
/// timing, so workflows rehearsed against it run at its pace), said in a warning.
fn poll_wait_cap(opts: &RunOptions, emitter: &Emitter) -> Result<Option<Duration>, RunError> {
    use crate::steps::poll::MAX_POLL_INTERVAL_VAR;
    if opts.rehearsal {
        return Ok(Some(REHEARSAL_POLL_WAIT));
    }
    let Some(text) = opts
        .env
        .get(MAX_POLL_INTERVAL_VAR)
        .filter(|t| !t.trim().is_empty())
    else {
        return Ok(None);
    };
    let cap = crate::workflow::duration::parse_duration(text).map_err(|e| {
        RunError::Input(InputError::Environment {
            name: MAX_POLL_INTERVAL_VAR.into(),
            message: e.to_string(),
        })
    })?;
    if !opts.dry_run {
        emitter.warn(format!(
            "{MAX_POLL_INTERVAL_VAR}={text}: no poll waits longer than that between two polls (a setting for rehearsals against a simulator; unset it for real runs)"
        ));
    }
    Ok(Some(cap))
}

/// The header of a new run of `plan`: its identity (the root file's place in its tree, see
/// [`state::identity`]), key, files (recorded relative to the identity's anchor) and inputs.
fn run_header(
    plan: &Plan,
    opts: &RunOptions,
    inputs: &Map<String, Value>,
    masked_inputs: &Value,
    run_id: &str,
    started_at: chrono::DateTime<chrono::Utc>,
) -> state::RunHeader {
    let wf = &plan.root.workflow;
    let cwd = std::env::current_dir().ok();
    let identity = state::WorkflowIdentity::of(&plan.root.path, cwd.as_deref());
    let files = workflow_files(plan);
    let shard = opts.shard.map(|s| s.to_string());
    state::RunHeader {
        version: state::JOURNAL_VERSION,
        run_id: run_id.to_string(),
        key: state::run_key(&identity, &key_inputs(wf, inputs), shard.as_deref()),
        workflow: plan.root.path.display().to_string(),
        workflow_name: wf.name.clone(),
        identity: Some(identity),
        files,
        inputs: masked_inputs.clone(),
        shard,
        started_at,
        auditflow: env!("CARGO_PKG_VERSION").into(),
    }
}

/// Every file of `plan` with its SHA-256, sorted: local files by their path relative to the
/// run identity's anchor (see [`state::identity`]), pack files as `url//path@commit` with
/// their origin.
fn workflow_files(plan: &Plan) -> Vec<crate::events::FileDigest> {
    let cwd = std::env::current_dir().ok();
    let identity = state::WorkflowIdentity::of(&plan.root.path, cwd.as_deref());
    let anchor = identity.anchor_dir(&plan.root.path, cwd.as_deref());
    let mut files: Vec<crate::events::FileDigest> = plan
        .files
        .values()
        .map(|f| crate::events::FileDigest {
            path: match &f.origin {
                Some(o) => o.recorded(),
                None => state::recorded_path(&f.path, anchor.as_deref()),
            },
            sha256: crate::durable::Sha256Digest::of(f.source.as_bytes()),
            origin: f.origin.clone(),
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// What the run start says about a resumed run.
fn resumed_note(r: &state::Replay) -> String {
    format!(
        "run started {}; {} step{} recorded; last process ended {}{}",
        r.header.started_at.to_rfc3339(),
        r.done.len(),
        if r.done.len() == 1 { "" } else { "s" },
        r.status(),
        if r.torn_tail {
            " (its last record was cut off by the crash and is ignored)"
        } else {
            ""
        }
    )
}

/// A one-shot workflow that already succeeded with this identity: the run reports that run
/// and its outputs, sends nothing, and succeeds.
fn report_already_done(
    plan: &Plan,
    emitter: &Emitter,
    done: state::Completion,
    masked_inputs: Value,
) -> RunResult {
    emitter.emit(Event::RunStarted {
        run_id: done.run_id.clone(),
        workflow: plan.root.workflow.name.clone(),
        file: plan.root.path.display().to_string(),
        inputs: masked_inputs,
        started_at: done.finished_at,
        dry_run: false,
        resumed: Some(format!(
            "one-shot workflow already done: run {} succeeded on {}",
            done.run_id,
            done.finished_at.to_rfc3339()
        )),
        files: workflow_files(plan),
    });
    emitter.warn(format!(
        "this one-shot workflow already succeeded with these inputs (run {}, {}); nothing was sent. Its evidence is where that run wrote it (`auditflow runs show {}`); pass --fresh to run it again",
        done.run_id,
        done.finished_at.format("%Y-%m-%d %H:%M UTC"),
        done.run_id
    ));
    emitter.emit(Event::RunFinished {
        status: RunStatus::Succeeded,
        duration: Duration::ZERO,
        outputs: done.outputs,
        error: None,
    });
    RunResult {
        run_id: done.run_id,
        status: RunStatus::Succeeded,
        error: None,
        state_dir: None,
    }
}

/// A failed run whose cause is a vendor's terminal state is not resumed: the next run starts
/// new (see [`state::RunState::end_terminal`]); says so now.
async fn end_terminal(
    run: &ActiveRun,
    st: &state::RunState,
    status: RunStatus,
) -> Result<(), StateError> {
    let Some(reason) = run
        .terminal_failure()
        .filter(|_| status == RunStatus::Failed)
    else {
        return Ok(());
    };
    st.end_terminal(&reason).await?;
    run.emitter.warn(format!(
        "run {} ended in a terminal vendor failure ({reason}); it will not be resumed: the next `auditflow run` of this workflow with these inputs starts a new run",
        st.run_id
    ));
    Ok(())
}

/// A run that stopped at a `repeat`'s `max_iterations` is not resumed: the next run starts
/// new from the cursors (replaying this run's iterations would only cost time).
async fn release_more_data(
    run: &ActiveRun,
    st: &state::RunState,
    status: RunStatus,
) -> Result<(), StateError> {
    if status == RunStatus::Pending && run.more_data.load(std::sync::atomic::Ordering::SeqCst) {
        st.release().await?;
    }
    Ok(())
}

/// Runs a file's steps, then renders its `outputs`. Once the file has ended (not pending),
/// the in-flight quota units its steps hold are given back.
async fn run_workflow(run: &Arc<ActiveRun>, scope: Scope) -> Result<Value, StopReason> {
    let prefix = scope.prefix.clone();
    let result = run_file(run, scope).await;
    if !matches!(result, Err(StopReason::Pending(_))) {
        run.release_budgets(&prefix).await;
    }
    result
}

/// [`run_workflow`]'s work: the steps, then the `outputs`.
async fn run_file(run: &Arc<ActiveRun>, mut scope: Scope) -> Result<Value, StopReason> {
    let workflow = scope.workflow.clone();
    scope.cursors = cursors::load(run, &scope)
        .await
        .map_err(|e| StopReason::Failed(e.into()))?;
    run_steps(run, &workflow.steps, &mut scope).await?;
    let ctx = scope.ctx(run);
    let mut out = Map::new();
    for (k, v) in &workflow.outputs {
        let r = v.render(&ctx).map_err(|source| {
            StopReason::Failed(WorkflowFailure::Output {
                name: k.clone(),
                source,
            })
        })?;
        out.insert(k.clone(), r);
    }
    dry_run::show_outputs(run, &scope.prefix, &out);
    Ok(Value::Object(out))
}

/// Runs steps in order (a download and the decrypt of its files together), adding each
/// step's outputs to `scope`.
fn run_steps<'a>(
    run: &'a Arc<ActiveRun>,
    steps: &'a [PlannedStep],
    scope: &'a mut Scope,
) -> futures::future::BoxFuture<'a, Result<(), StopReason>> {
    Box::pin(async move {
        let mut i = 0;
        while i < steps.len() {
            if run.cancel.is_cancelled() {
                return Err(StopReason::Cancelled);
            }
            let step = &steps[i];
            let pair = steps.get(i + 1).and_then(|next| pipelined(step, next));
            // A download an earlier process finished is replayed; its decrypt then runs alone.
            let dl_recorded = scope.replay
                && run
                    .replayable(&format!("{}{}", scope.prefix, step.id))
                    .is_some();
            // A dry run shows the download and the decrypt as two steps.
            if let Some(pair) = pair.filter(|_| !dl_recorded && !run.dry_run) {
                let (dl_id, dec_id) = (pair.dl.id.clone(), pair.dec.id.clone());
                let (a, b) = run_pipelined(run, pair, scope).await?;
                scope.steps.insert(dl_id, a);
                scope.steps.insert(dec_id, b);
                i += 2;
                continue;
            }
            let outputs = run_step(run, step, scope).await?;
            let outputs = dry_run::outputs(run, step, outputs);
            scope.steps.insert(step.id.clone(), outputs);
            i += 1;
        }
        Ok(())
    })
}

/// Runs one step with its condition, timeout and `continue_on_error`; emits its events and
/// records its end in the journal. A step an earlier process finished is replayed.
async fn run_step(
    run: &Arc<ActiveRun>,
    step: &PlannedStep,
    scope: &Scope,
) -> Result<Value, StopReason> {
    let path = format!("{}{}", scope.prefix, step.id);
    let label = scope.label(&step.id);
    let at = (path.as_str(), label.as_deref());
    let name = active_run::step_name(run, step, scope);
    if let Some(outputs) = scope
        .replay
        .then(|| run.replayed(at, step, &name))
        .flatten()
    {
        return Ok(outputs);
    }
    let ctx = scope.ctx(run);
    let one = OneStep {
        run,
        step,
        path,
        label,
        name,
        started: Instant::now(),
    };
    if let Some(out) = skipped_by_condition(&one, &ctx)? {
        return Ok(out);
    }
    run.step_started(one.at(), step, &one.name);
    let result = execute_within_deadline(&one, scope, &ctx).await;
    step_outcome(&one, result)
}

/// One step as it runs: where it is in the run, its name, and when it started.
struct OneStep<'a> {
    run: &'a Arc<ActiveRun>,
    step: &'a PlannedStep,
    /// `id`, `loop[3].id` or `caller.uses/id`: the journal's key.
    path: String,
    /// The path with each loop iteration's item, for people.
    label: Option<String>,
    name: String,
    started: Instant,
}

impl OneStep<'_> {
    fn at(&self) -> (&str, Option<&str>) {
        (self.path.as_str(), self.label.as_deref())
    }

    /// Emits the step's end.
    fn finish(&self, status: StepStatus, attempts: u32, error: Option<String>, outputs: &Value) {
        self.run.step_finished(
            self.at(),
            (self.step, &self.name),
            status,
            attempts,
            self.started,
            error,
            outputs,
        );
    }
}

/// The step's `if`: when it renders false (and a dry run can decide it), the step is
/// started, recorded and finished as skipped, and its outputs are returned.
#[allow(clippy::result_large_err)] // the engine's StopReason, passed on as the async fns do
fn skipped_by_condition(one: &OneStep<'_>, ctx: &Value) -> Result<Option<Value>, StopReason> {
    let (run, step, path) = (one.run, one.step, &one.path);
    if let Some(cond) = &step.when {
        let go = cond.render_bool(ctx).map_err(|source| {
            StopReason::Failed(WorkflowFailure::Condition {
                step: path.clone(),
                source,
            })
        })?;
        // Noted in a dry run whichever way a placeholder made it render.
        let undecided = dry_run::undecided_condition(run, path, cond, ctx);
        if !go && !undecided {
            run.step_started(one.at(), step, &one.name);
            let out = json!({"skipped": true});
            run.record_done(path, DoneStatus::Skipped, 0, &out);
            one.finish(StepStatus::Skipped, 0, None, &Value::Null);
            return Ok(Some(out));
        }
    }
    Ok(None)
}

/// Records the step's start and runs its action with its retry policy, within its deadline.
async fn execute_within_deadline(
    one: &OneStep<'_>,
    scope: &Scope,
    ctx: &Value,
) -> Result<(Value, u32), ActionError> {
    let (run, step, path, started) = (one.run, one.step, &one.path, one.started);
    let kind = step.kind();
    // Polls measure their overall deadline from their first start, in whichever process.
    let before = if kind == StepKind::Poll {
        run.started_before(path)
    } else {
        Duration::ZERO
    };
    if !run.dry_run {
        run.record(Record::Started {
            step: path.clone(),
            at: chrono::Utc::now(),
            label: one.label.clone(),
        });
    }
    let defaults = scope.workflow.defaults();
    let policy = merge_retry(defaults.retry.as_ref(), step.retry.as_ref());
    let deadline = step_deadline(step, defaults.timeout, before);
    let cancel = run.cancel.child_token();
    let ledger = run.ledger(path);
    let env = StepEnv {
        step: path,
        emitter: &run.emitter,
        cancel: &cancel,
        retry: policy,
        dry_run: run.dry_run,
        started,
        deadline,
        max_wait: poll_max_wait(step, run.detach_at),
        poll_wait_cap: run.poll_wait_cap,
        ledger: ledger.as_ref(),
        overwrite: run.overwrite_guard(step),
        budgets: Some(&run.budgets).filter(|_| !run.dry_run),
    };
    let fut = execute(run, step, scope, ctx, &env);
    tokio::pin!(fut);
    // The poll enforces its own deadline between polls; the outer limit also stops a poll
    // stuck inside one request. On timeout the step's token is cancelled first, so adapters
    // can clean up (MailStore CancelAsync), then we wait briefly for them.
    let limit = deadline.map(|d| {
        if kind == StepKind::Poll {
            d + Duration::from_secs(5)
        } else {
            d
        }
    });
    match limit {
        None => fut.await,
        Some(limit) => {
            tokio::select! {
                r = &mut fut => r,
                _ = tokio::time::sleep(limit.saturating_sub(started.elapsed())) => {
                    cancel.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(10), &mut fut).await;
                    Err(StepError::Timeout { after: limit + before }.into())
                }
            }
        }
    }
}

/// Records and reports how the step's action ended: succeeded, waiting (pending), cancelled
/// with the run, failed and continued, or failed (the run stops).
#[allow(clippy::result_large_err)] // the engine's StopReason, passed on as the async fns do
fn step_outcome(
    one: &OneStep<'_>,
    result: Result<(Value, u32), ActionError>,
) -> Result<Value, StopReason> {
    match result {
        Ok((outputs, attempts)) => {
            one.run
                .record_done(&one.path, DoneStatus::Succeeded, attempts, &outputs);
            one.finish(StepStatus::Succeeded, attempts, None, &outputs);
            Ok(outputs)
        }
        Err(ActionError::Step(StepError::Pending {
            waiting_for,
            polls,
            quota,
        })) => {
            if one.step.kind() == StepKind::Poll {
                one.run.record(Record::Waiting {
                    step: one.path.clone(),
                    at: chrono::Utc::now(),
                    waiting_for: one.run.emitter.secrets().mask(&waiting_for),
                    polls,
                });
            }
            one.finish(
                StepStatus::Pending,
                0,
                Some(waiting_for.clone()),
                &Value::Null,
            );
            Err(StopReason::Pending(Waiting {
                text: waiting_for,
                quota,
            }))
        }
        // Once the run is cancelled (Ctrl-C), whatever stopped the step (a download's own
        // "cancelled", a connection torn down) is the cancellation: exit 130, resumable.
        Err(_) if one.run.cancel.is_cancelled() => {
            one.finish(
                StepStatus::Failed,
                0,
                Some("cancelled".into()),
                &Value::Null,
            );
            Err(StopReason::Cancelled)
        }
        Err(e) if one.step.continue_on_error => Ok(failed_and_continued(one, e)),
        Err(e) => Err(failed(one, e)),
    }
}

/// A failed step with `continue_on_error`: its outputs say so, the run goes on.
fn failed_and_continued(one: &OneStep<'_>, e: ActionError) -> Value {
    let attempts = e.attempts();
    let out = json!({"failed": true, "error": one.run.emitter.secrets().mask(&e.to_string())});
    one.run
        .record_done(&one.path, DoneStatus::FailedContinued, attempts, &out);
    one.finish(
        StepStatus::FailedContinued,
        attempts,
        Some(e.to_string()),
        &Value::Null,
    );
    out
}

/// A failed step: recorded (a vendor's terminal state noted), reported, and the run stops.
fn failed(one: &OneStep<'_>, e: ActionError) -> StopReason {
    let attempts = e.attempts();
    one.run.note_terminal(&one.path, &e);
    one.run.record(Record::Failed {
        step: one.path.clone(),
        at: chrono::Utc::now(),
        error: one.run.emitter.secrets().mask(&e.to_string()),
    });
    one.finish(
        StepStatus::Failed,
        attempts,
        Some(e.to_string()),
        &Value::Null,
    );
    StopReason::Failed(WorkflowFailure::Step {
        step: one.path.clone(),
        source: e,
    })
}

/// The step's time limit: a poll has its own (long) deadline, less the time `before` spent
/// in earlier processes; loops and `uses` only their own `timeout`; other steps default to
/// `defaults.timeout`.
fn step_deadline(step: &PlannedStep, default: Option<Dur>, before: Duration) -> Option<Duration> {
    match step.kind() {
        StepKind::Poll => Some(
            step.timeout
                .map(super::workflow::duration::Dur::get)
                .unwrap_or(poll::DEFAULT_POLL_TIMEOUT)
                .saturating_sub(before),
        ),
        StepKind::ForEach | StepKind::Uses | StepKind::Repeat | StepKind::SetCursor => {
            step.timeout.map(super::workflow::duration::Dur::get)
        }
        StepKind::Call | StepKind::Download | StepKind::Decrypt => step
            .timeout
            .or(default)
            .map(super::workflow::duration::Dur::get),
    }
}

/// How long a poll may wait in this process: its own `max_wait`, and no later than the
/// run-wide `--max-wait` instant.
fn poll_max_wait(step: &PlannedStep, detach_at: Option<Instant>) -> Option<Duration> {
    let own = match &step.action {
        Action::Poll(p) => p.max_wait.map(super::workflow::duration::Dur::get),
        _ => None,
    };
    let cli = detach_at.map(|t| t.saturating_duration_since(Instant::now()));
    match (own, cli) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Merges step retry fields over the defaults over the built-in policy.
pub(crate) fn merge_retry(defaults: Option<&RetrySpec>, step: Option<&RetrySpec>) -> RetryPolicy {
    let mut p = RetryPolicy::default();
    for spec in [defaults, step].into_iter().flatten() {
        if let Some(v) = spec.max_attempts {
            p.max_attempts = v.max(1);
        }
        if let Some(v) = spec.initial_interval {
            p.initial_interval = v.get();
        }
        if let Some(v) = spec.factor {
            p.factor = v;
        }
        if let Some(v) = spec.max_interval {
            p.max_interval = v.get();
        }
        if let Some(v) = spec.max_elapsed {
            p.max_elapsed = Some(v.get());
        }
        if let Some(v) = spec.jitter {
            p.jitter = v;
        }
    }
    p
}

/// Runs the step's action; returns its outputs and the attempts it took.
async fn execute(
    run: &Arc<ActiveRun>,
    step: &PlannedStep,
    scope: &Scope,
    ctx: &Value,
    env: &StepEnv<'_>,
) -> Result<(Value, u32), ActionError> {
    let file = &scope.workflow.file;
    match &step.action {
        Action::Call(spec) => {
            let conn = run.connection(file, spec.target.connection(), ctx)?;
            let mut rc = call::render_call(spec, &conn, ctx)?;
            // Pages nobody reads later are saved as they arrive, not held.
            if !run.referenced.reads_records(&step.id) {
                rc.hold = call::Hold::Counts;
            }
            let out = call::execute(&conn, &rc, env, ctx).await?;
            let attempts = out.attempts;
            Ok((out.outputs(), attempts))
        }
        Action::Poll(spec) => {
            let conn = run.connection(file, spec.call.target.connection(), ctx)?;
            let rc = call::render_call(&spec.call, &conn, ctx)?;
            let limit = rc.max_response;
            let polled = poll::execute(&conn, spec, &rc, env, ctx);
            let out = crate::vendors::http::with_max_response(limit, polled).await?;
            let mut v = steps::response_value(&out.response);
            if let Some(o) = v.as_object_mut() {
                o.insert(StepOutput::Polls.as_str().into(), json!(out.polls));
            }
            Ok((v, out.attempts))
        }
        Action::Download(spec) => {
            // No connection: a plain one, and no auth headers on the downloads.
            let conn = run.connection(file, spec.connection.as_deref(), ctx)?;
            let with_auth = spec.connection.is_some();
            let out = steps::download_and_decrypt::download_step(spec, &conn, with_auth, env, ctx)
                .await?;
            Ok((out, 1))
        }
        Action::Decrypt(spec) => Ok((
            steps::download_and_decrypt::decrypt_step(spec, env, ctx).await?,
            1,
        )),
        Action::ForEach(spec) => Ok((for_each(run, step, spec, scope, ctx, env).await?, 1)),
        Action::Uses(uses) => Ok((run_uses(run, uses, scope, ctx, env).await?, 1)),
        Action::SetCursor(spec) => Ok((cursors::set_cursor(run, spec, scope, ctx, env).await?, 1)),
        Action::Repeat(spec) => Ok((repeat::repeat(run, step, spec, scope, env).await?, 1)),
    }
}

/// Runs the workflow a `uses` step names, with its `with:` inputs; its outputs are the
/// step's `outputs`.
async fn run_uses(
    run: &Arc<ActiveRun>,
    uses: &UsesPlan,
    scope: &Scope,
    ctx: &Value,
    env: &StepEnv<'_>,
) -> Result<Value, ActionError> {
    let mut given = BTreeMap::new();
    for (k, v) in &uses.with {
        let r = v
            .render(ctx)
            .map_err(|e| StepError::template(format!("with.{k}"), e))?;
        given.insert(k.clone(), r);
    }
    let callee = &uses.workflow.file.workflow;
    let inputs = resolve_inputs(callee, &given).map_err(|source| ActionError::UsesInputs {
        target: uses.target.clone(),
        source,
    })?;
    // A callee's secret inputs come from the caller, whose own were warned about.
    let _ = register_secret_inputs(callee, &inputs, run.emitter.secrets());
    let sub = Scope {
        workflow: uses.workflow.clone(),
        inputs: Value::Object(inputs),
        item: None,
        steps: Map::new(),
        prefix: format!("{}/", env.step),
        label_prefix: match scope.label(env.step.strip_prefix(&scope.prefix).unwrap_or(env.step)) {
            Some(l) => format!("{l}/"),
            None => String::new(),
        },
        in_loop: scope.in_loop,
        cursors: Default::default(),
        replay: scope.replay,
    };
    match run_workflow(run, sub).await {
        Ok(outputs) => Ok(json!({ "outputs": outputs })),
        Err(StopReason::Failed(failure)) => Err(ActionError::SubWorkflow {
            target: uses.target.clone(),
            source: Box::new(failure),
        }),
        Err(StopReason::Pending(w)) => Err(StepError::Pending {
            waiting_for: w.text,
            polls: 0,
            quota: w.quota,
        }
        .into()),
        Err(StopReason::Cancelled) => Err(StepError::Cancelled.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_fields_merge_in_order() {
        let d = RetrySpec {
            max_attempts: Some(3),
            factor: Some(3.0),
            ..Default::default()
        };
        let s = RetrySpec {
            max_attempts: Some(9),
            ..Default::default()
        };
        let p = merge_retry(Some(&d), Some(&s));
        assert_eq!(p.max_attempts, 9);
        assert_eq!(p.factor, 3.0);
        assert_eq!(p.initial_interval, RetryPolicy::default().initial_interval);
    }

    /// Runs `top.yaml` of `files` (written to a temp dir) with no state and no sinks.
    async fn run_files(files: &[(&str, &str)]) -> RunResult {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, src) in files {
            std::fs::write(dir.path().join(name), src).expect("write workflow");
        }
        let plan = crate::workflow::validate::validate_file(&dir.path().join("top.yaml"))
            .expect("valid plan");
        let opts = RunOptions {
            inputs: BTreeMap::new(),
            env: BTreeMap::new(),
            dry_run: false,
            rehearsal: false,
            max_wait: None,
            cancel: CancellationToken::new(),
            state: None,
            fresh: false,
            resume: None,
            shard: None,
            overwrite: None,
            write_evidence: None,
        };
        let emitter = Emitter::new(vec![], crate::secrets::Secrets::default());
        run(plan, opts, emitter).await.expect("run starts")
    }

    #[tokio::test]
    async fn failed_uses_step_names_the_callee_step_and_its_cause() {
        let r = run_files(&[
            (
                "top.yaml",
                "name: top\nsteps:\n  - id: outer\n    uses: child.yaml\n",
            ),
            (
                "child.yaml",
                "name: child\nsteps:\n  - id: inner\n    for_each:\n      items: 3\n      steps: [{id: never, call: {url: 'http://127.0.0.1:9'}}]\n",
            ),
        ])
        .await;
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(
            r.error,
            Some(RunFailure::Failed("step `outer` failed: step `outer/inner` failed: `for_each.items` must be a list, got 3".into()))
        );
    }

    /// Template-context values copied per item of a loop over `n` items whose step is skipped
    /// (its condition still renders in the item's context).
    async fn ctx_values_per_item(n: usize) -> f64 {
        let items: Vec<String> = (0..n).map(|i| format!("user{i}@example.com")).collect();
        let src = format!(
            "name: top\ninputs:\n  items: {{type: list, default: {}}}\n  go: {{type: boolean, default: false}}\nsteps:\n  - id: each\n    for_each:\n      items: '{{{{ inputs.items }}}}'\n      concurrency: 8\n      steps:\n        - id: get\n          if: '{{{{ inputs.go }}}}'\n          call: {{url: 'http://127.0.0.1:9/{{{{ item }}}}'}}\noutputs:\n  n: '{{{{ steps.each.count }}}}'\n",
            serde_json::to_string(&items).expect("json")
        );
        active_run::ctx_count::take();
        let r = run_files(&[("top.yaml", &src)]).await;
        assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
        active_run::ctx_count::take() as f64 / n as f64
    }

    #[tokio::test]
    async fn a_loops_context_copies_per_item_do_not_grow_with_its_items() {
        let small = ctx_values_per_item(200).await;
        let large = ctx_values_per_item(2000).await;
        // Before iterations shared only what they read, each copied the whole item list:
        // ~200 values per item at 200 items, ~2,000 at 2,000.
        assert!(small < 50.0, "{small} values per item at 200 items");
        assert!(
            large <= small * 1.05,
            "{large} values per item at 2,000 items vs {small} at 200"
        );
    }

    #[test]
    fn a_failed_sub_workflow_keeps_the_child_failure_as_its_source() {
        let child = WorkflowFailure::Step {
            step: "outer/inner".into(),
            source: ActionError::Step(StepError::Cancelled),
        };
        let e = ActionError::SubWorkflow {
            target: "child.yaml".into(),
            source: Box::new(child),
        };
        assert_eq!(e.to_string(), "step `outer/inner` failed: cancelled");
        let source = std::error::Error::source(&e).expect("a source");
        let child = source
            .downcast_ref::<Box<WorkflowFailure>>()
            .expect("the child's failure");
        assert!(matches!(&**child, WorkflowFailure::Step { step, .. } if step == "outer/inner"));
    }
}
