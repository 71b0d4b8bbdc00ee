//! The engine: walks a validated plan step by step and emits events.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::events::{Emitter, Event, RunStatus, Sink, StepStatus};
use crate::retry::RetryPolicy;
use crate::state::{self, Begin, DoneStatus, Journal, Record, Replay, StateDir, StateError};
use crate::steps::{self, call, once::Ledger, poll, StepEnv, StepError};
use crate::template::{render_deep, Template};
use crate::vendors::{Connection, ConnectionSettings, Credentials, VendorKind};
use crate::workflow::diag::did_you_mean;
use crate::workflow::model::{ConnectionKind, ConnectionSpec, RetrySpec, Step, StepKind, Workflow};
use crate::workflow::validate::{coerce_input, Plan};
use crate::workflow::Loaded;

/// Google Email Audit API scope.
pub const GOOGLE_AUDIT_SCOPE: &str = "https://apps-apis.google.com/a/feeds/compliance/audit/";

/// How to run.
pub struct RunOptions {
    /// Inputs as given (strings from the command line, typed values from a file).
    pub inputs: BTreeMap<String, Value>,
    /// The environment templates see as `env`.
    pub env: BTreeMap<String, String>,
    pub dry_run: bool,
    /// Detach (exit 75) when polling is still waiting this long after the run started.
    pub max_wait: Option<Duration>,
    pub cancel: CancellationToken,
    /// Where the run's state is kept (None: nowhere; nothing can be resumed).
    pub state: Option<StateDir>,
    /// Abandon an unfinished run of the same workflow and inputs instead of resuming it.
    pub fresh: bool,
    /// Run only this shard of the outermost `for_each` loops' items.
    pub shard: Option<Shard>,
}

/// One of N deterministic parts of the items of the outermost `for_each` loops: an item
/// belongs to shard `index` (1-based) when the SHA-256 of its JSON text, modulo `count`, is
/// `index - 1`. Hashing the item (not its position) keeps shards disjoint and complete even
/// when a listing returns the items in another order on each machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parses `I/N` with 1 <= I <= N.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let bad = || format!("`{s}`: write I/N with 1 <= I <= N, e.g. 2/8");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether `item` belongs to this shard.
    pub fn owns(&self, item: &Value) -> bool {
        let h = steps::sha256_hex(item.to_string().as_bytes());
        let n = u64::from_str_radix(&h[..16], 16).unwrap_or(0);
        n % u64::from(self.count) == u64::from(self.index - 1)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Why a run could not start (exit 2): bad inputs, or state that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Errors found before any request is sent (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("missing required input{}: {}", if .0.len() == 1 { "" } else { "s" }, .0.join(", "))]
    Missing(Vec<String>),
    #[error("unknown input `{name}`{}", .suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    Unknown {
        name: String,
        suggestion: Option<String>,
    },
    #[error("input `{name}`: {message}")]
    Invalid { name: String, message: String },
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub run_id: String,
    pub status: RunStatus,
    pub outputs: Value,
    pub error: Option<String>,
    /// The run's directory in the state directory, when state is kept.
    pub state_dir: Option<PathBuf>,
}

/// Resolves inputs against their declarations: given, else default, else missing.
pub fn resolve_inputs(
    wf: &Workflow,
    given: &BTreeMap<String, Value>,
) -> Result<Map<String, Value>, InputError> {
    for name in given.keys() {
        if !wf.inputs.contains_key(name) {
            return Err(InputError::Unknown {
                name: name.clone(),
                suggestion: did_you_mean(name, wf.inputs.keys().map(String::as_str))
                    .map(str::to_string),
            });
        }
    }
    let mut out = Map::new();
    let mut missing = Vec::new();
    for (name, spec) in &wf.inputs {
        let raw = given.get(name).or(spec.default.as_ref());
        match raw {
            Some(v) => {
                let coerced =
                    coerce_input(spec.kind, v).map_err(|message| InputError::Invalid {
                        name: name.clone(),
                        message,
                    })?;
                out.insert(name.clone(), coerced);
            }
            None if spec.required => missing.push(name.clone()),
            None => {
                out.insert(name.clone(), Value::Null);
            }
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(InputError::Missing(missing))
    }
}

/// Shared state of one run.
struct Run {
    plan: Plan,
    emitter: Emitter,
    env: Value,
    run_info: Value,
    dry_run: bool,
    /// `--max-wait`: polls still waiting at this instant detach.
    detach_at: Option<Instant>,
    cancel: CancellationToken,
    /// The journal this process appends to, and what earlier processes recorded.
    journal: Option<Journal>,
    replay: Option<Replay>,
    shard: Option<Shard>,
    /// Connections by (file, name), built on first use.
    connections: Mutex<HashMap<(PathBuf, String), Connection>>,
    /// Ad-hoc connections for `url:` calls.
    plain: Mutex<Option<Connection>>,
}

impl Run {
    fn record(&self, rec: Record) {
        if let Some(j) = &self.journal {
            j.append(&rec);
        }
    }

    /// Replays a step an earlier process finished: emits its events, returns its outputs.
    fn replayed(&self, path: &str, step: &Step) -> Option<Value> {
        let done = self.replayable(path)?;
        let status = match done.status {
            DoneStatus::Succeeded => StepStatus::Recorded,
            DoneStatus::Skipped => StepStatus::Skipped,
            DoneStatus::FailedContinued => StepStatus::FailedContinued,
        };
        self.step_started(path, step);
        self.step_finished(path, step, status, 0, Instant::now(), None, &done.outputs);
        Some(done.outputs.clone())
    }

    /// Records a step's end for good; outputs are masked, and not replayed if masking
    /// changed them (the step runs again instead).
    fn record_done(&self, path: &str, status: DoneStatus, attempts: u32, outputs: &Value) {
        if self.journal.is_none() || self.dry_run {
            return;
        }
        let masked = self.emitter.secrets().mask_json(outputs);
        let replayable = &masked == outputs;
        self.record(Record::Done {
            step: path.to_string(),
            at: chrono::Utc::now(),
            status,
            attempts,
            outputs: masked,
            replayable,
        });
    }

    /// The journal and what earlier processes recorded for the step at `path`.
    fn ledger(&self, path: &str) -> Option<Ledger> {
        let journal = self.journal.clone()?;
        let r = self.replay.as_ref();
        Some(Ledger {
            journal,
            intent: r.and_then(|r| r.intents.get(path).cloned()),
            response: r.and_then(|r| r.responses.get(path).cloned()),
            artifacts: r
                .and_then(|r| r.artifacts.get(path).cloned())
                .unwrap_or_default(),
            polls: r.and_then(|r| r.polls.get(path).map(|p| p.0)).unwrap_or(0),
        })
    }

    /// How long ago an earlier process first started the step at `path`.
    fn started_before(&self, path: &str) -> Duration {
        self.replay
            .as_ref()
            .and_then(|r| r.first_started.get(path))
            .and_then(|t| (chrono::Utc::now() - *t).to_std().ok())
            .unwrap_or(Duration::ZERO)
    }

    /// The record of a step an earlier process finished, when its outputs can be reused.
    fn replayable(&self, path: &str) -> Option<&state::journal::DoneStep> {
        self.replay
            .as_ref()?
            .done
            .get(path)
            .filter(|d| d.replayable)
    }

    fn step_started(&self, path: &str, step: &Step) {
        self.emitter.emit(Event::StepStarted {
            step: path.to_string(),
            name: step.display_name().into(),
            kind: step.kind().as_str().into(),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn step_finished(
        &self,
        path: &str,
        step: &Step,
        status: StepStatus,
        attempts: u32,
        started: Instant,
        error: Option<String>,
        outputs: &Value,
    ) {
        self.emitter.emit(Event::StepFinished {
            step: path.to_string(),
            name: step.display_name().to_string(),
            kind: step.kind().as_str().into(),
            status,
            attempts,
            duration: started.elapsed(),
            error,
            outputs: summarize(outputs),
        });
    }
}

/// Variables in scope at one point: the file, its inputs, loop variables, earlier steps.
#[derive(Clone)]
struct Scope {
    file: Arc<Loaded>,
    inputs: Value,
    /// `item` and `index` inside a loop.
    item: Option<(Value, usize)>,
    /// Outputs of steps already run, visible here.
    steps: Map<String, Value>,
    /// Event path prefix (`loop[2].`, `caller/`).
    prefix: String,
    /// Inside a `for_each` (only the outermost loops are sharded).
    in_loop: bool,
}

impl Scope {
    fn ctx(&self, run: &Run) -> Value {
        let mut m = Map::new();
        m.insert("inputs".into(), self.inputs.clone());
        m.insert("env".into(), run.env.clone());
        m.insert("steps".into(), Value::Object(self.steps.clone()));
        let mut info = run.run_info.clone();
        if let Some(o) = info.as_object_mut() {
            o.insert("workflow".into(), json!(self.file.workflow.name));
            o.insert(
                "workflow_dir".into(),
                json!(self.file.dir().display().to_string()),
            );
        }
        m.insert("run".into(), info);
        if let Some((item, index)) = &self.item {
            m.insert("item".into(), item.clone());
            m.insert("index".into(), json!(index));
        }
        Value::Object(m)
    }
}

/// Forwards finished files to the run's journal (a resumed step skips them).
struct JournalArtifacts(Journal);

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

/// The non-secret inputs (the run key) and all inputs masked (the journal header).
fn key_inputs(wf: &Workflow, inputs: &Map<String, Value>) -> Value {
    Value::Object(
        inputs
            .iter()
            .filter(|(k, _)| !wf.inputs.get(*k).is_some_and(|s| s.secret))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// Runs a validated plan to the end, resuming the unfinished run of the same workflow and
/// inputs when the state directory has one.
pub async fn run(plan: Plan, opts: RunOptions, emitter: Emitter) -> Result<RunResult, RunError> {
    let wf = &plan.root.workflow;
    let inputs = resolve_inputs(wf, &opts.inputs)?;
    register_secret_inputs(wf, &inputs, emitter.secrets());
    let mut run_id = uuid::Uuid::new_v4().to_string();
    let mut started_at = chrono::Utc::now();
    let started = Instant::now();
    let masked_inputs = emitter.secrets().mask_json(&Value::Object(inputs.clone()));
    let mut state = None;
    let mut replay = None;
    let mut resumed = None;
    let base_emitter = emitter.clone();
    let mut emitter = emitter;
    if let (Some(dir), false) = (&opts.state, opts.dry_run) {
        let mut files: Vec<state::FileDigest> = plan
            .files
            .values()
            .map(|f| state::FileDigest {
                path: f.path.display().to_string(),
                sha256: steps::sha256_hex(f.source.as_bytes()),
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let shard = opts.shard.map(|s| s.to_string());
        let header = state::RunHeader {
            version: state::JOURNAL_VERSION,
            run_id: run_id.clone(),
            key: state::run_key(&plan.root.path, &key_inputs(wf, &inputs), shard.as_deref()),
            workflow: plan.root.path.display().to_string(),
            workflow_name: wf.name.clone(),
            files,
            inputs: masked_inputs.clone(),
            shard,
            started_at,
            auditflow: env!("CARGO_PKG_VERSION").into(),
        };
        let (st, begin, note) = dir.begin(header, opts.fresh).await?;
        if let Some(n) = note {
            emitter.warn(n);
        }
        if let Begin::Resumed(r) = begin {
            run_id = r.header.run_id.clone();
            started_at = r.header.started_at;
            resumed = Some(format!(
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
            ));
            replay = Some(*r);
        }
        emitter = emitter.with_sink(Arc::new(JournalArtifacts(st.journal.clone())));
        state = Some(st);
    }
    emitter.emit(Event::RunStarted {
        run_id: run_id.clone(),
        workflow: wf.name.clone(),
        file: plan.root.path.display().to_string(),
        inputs: masked_inputs,
        started_at: started_at.to_rfc3339(),
        dry_run: opts.dry_run,
        resumed,
    });
    // Files of steps finished by earlier processes go to this process's reports and
    // manifest too (not to the journal again); unfinished steps report theirs as they go.
    if let Some(r) = &replay {
        let mut steps: Vec<&String> = r
            .artifacts
            .keys()
            .filter(|s| r.done.contains_key(*s))
            .collect();
        steps.sort();
        for step in steps {
            for a in &r.artifacts[step] {
                base_emitter.emit(Event::Artifact {
                    step: step.clone(),
                    artifact: a.clone(),
                });
            }
        }
    }
    let env: Map<String, Value> = opts
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let run = Arc::new(Run {
        emitter: emitter.clone(),
        env: Value::Object(env),
        run_info: json!({"id": run_id, "started_at": started_at.to_rfc3339()}),
        dry_run: opts.dry_run,
        detach_at: opts.max_wait.map(|d| started + d),
        cancel: opts.cancel.clone(),
        journal: state.as_ref().map(|s| s.journal.clone()),
        replay,
        shard: opts.shard,
        connections: Mutex::new(HashMap::new()),
        plain: Mutex::new(None),
        plan: plan.clone(),
    });
    let scope = Scope {
        file: plan.root.clone(),
        inputs: Value::Object(inputs),
        item: None,
        steps: Map::new(),
        prefix: String::new(),
        in_loop: false,
    };
    let result = run_workflow(&run, scope).await;
    let (status, outputs, mut error) = match result {
        Ok(out) => (RunStatus::Succeeded, out, None),
        Err(Failure::Pending(w)) => (RunStatus::Pending, Value::Null, Some(w)),
        Err(Failure::Cancelled) => (RunStatus::Cancelled, Value::Null, Some("cancelled".into())),
        Err(Failure::Failed(m)) => (RunStatus::Failed, Value::Null, Some(m)),
    };
    let mut status = status;
    if let Some(j) = &run.journal {
        // Every step's record on disk before the end is written (and before a crash test
        // stops here).
        let _ = j.flush().await;
    }
    crate::failpoint::hit("run-end");
    if let Some(st) = &state {
        let word = match status {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Pending => "pending",
            RunStatus::Cancelled => "cancelled",
        };
        let masked = error.as_ref().map(|e| emitter.secrets().mask(e));
        if let Err(e) = st.finish(word, masked).await {
            status = RunStatus::Failed;
            error = Some(e.to_string());
        }
    }
    emitter.emit(Event::RunFinished {
        status,
        duration: started.elapsed(),
        outputs: outputs.clone(),
        error: error.clone(),
    });
    Ok(RunResult {
        run_id,
        status,
        outputs: emitter.secrets().mask_json(&outputs),
        error: error.map(|e| emitter.secrets().mask(&e)),
        state_dir: state.map(|s| s.dir),
    })
}

/// Registers the values of a workflow's `secret: true` inputs.
fn register_secret_inputs(
    wf: &Workflow,
    inputs: &Map<String, Value>,
    secrets: &crate::secrets::Secrets,
) {
    for (name, spec) in &wf.inputs {
        if let (true, Some(v)) = (spec.secret, inputs.get(name)) {
            register_secret_value(secrets, v);
        }
    }
}

fn register_secret_value(secrets: &crate::secrets::Secrets, v: &Value) {
    match v {
        Value::String(s) => secrets.add(s),
        Value::Array(a) => a.iter().for_each(|x| register_secret_value(secrets, x)),
        Value::Object(o) => o.values().for_each(|x| register_secret_value(secrets, x)),
        Value::Number(n) => secrets.add(n.to_string()),
        _ => {}
    }
}

/// Why a list of steps stopped.
#[derive(Debug)]
enum Failure {
    Failed(String),
    Pending(String),
    Cancelled,
}

/// Runs a file's steps, then renders its `outputs`.
async fn run_workflow(run: &Arc<Run>, mut scope: Scope) -> Result<Value, Failure> {
    let file = scope.file.clone();
    run_steps(run, &file.workflow.steps, &mut scope).await?;
    let ctx = scope.ctx(run);
    let mut out = Map::new();
    for (k, v) in &file.workflow.outputs {
        let r = render_deep(v, &ctx).map_err(|e| Failure::Failed(format!("output `{k}`: {e}")))?;
        out.insert(k.clone(), r);
    }
    Ok(Value::Object(out))
}

fn run_steps<'a>(
    run: &'a Arc<Run>,
    steps: &'a [Step],
    scope: &'a mut Scope,
) -> futures::future::BoxFuture<'a, Result<(), Failure>> {
    Box::pin(async move {
        let mut i = 0;
        while i < steps.len() {
            if run.cancel.is_cancelled() {
                return Err(Failure::Cancelled);
            }
            let step = &steps[i];
            let next_pipelined = steps.get(i + 1).filter(|n| pipelined(step, n));
            // A download an earlier process finished is replayed; its decrypt then runs alone.
            let dl_recorded = run
                .replayable(&format!("{}{}", scope.prefix, step.id))
                .is_some();
            if let Some(next) = next_pipelined.filter(|_| !dl_recorded) {
                let (a, b) = run_pipelined(run, step, next, scope).await?;
                scope.steps.insert(step.id.clone(), a);
                scope.steps.insert(next.id.clone(), b);
                i += 2;
                continue;
            }
            let outputs = run_step(run, step, scope).await?;
            scope.steps.insert(step.id.clone(), outputs);
            i += 1;
        }
        Ok(())
    })
}

/// True when `next` decrypts exactly the files `step` downloads, with no condition or
/// error handling of their own: then both run pipelined (each file decrypted on arrival).
fn pipelined(step: &Step, next: &Step) -> bool {
    let (Some(_), Some(dec)) = (&step.download, &next.decrypt) else {
        return false;
    };
    if step.when.is_some()
        || next.when.is_some()
        || step.continue_on_error
        || next.continue_on_error
    {
        return false;
    }
    let Value::String(files) = &dec.files else {
        return false;
    };
    let compact: String = files.chars().filter(|c| !c.is_whitespace()).collect();
    compact == format!("{{{{steps.{}.files}}}}", step.id)
}

/// Runs a download and the decrypt of its files together; emits both steps' events.
async fn run_pipelined(
    run: &Arc<Run>,
    dl: &Step,
    dec: &Step,
    scope: &Scope,
) -> Result<(Value, Value), Failure> {
    let ctx = scope.ctx(run);
    let paths = [
        format!("{}{}", scope.prefix, dl.id),
        format!("{}{}", scope.prefix, dec.id),
    ];
    for (s, p) in [dl, dec].iter().zip(&paths) {
        run.step_started(p, s);
    }
    let started = Instant::now();
    let defaults = scope.file.workflow.defaults.clone().unwrap_or_default();
    let deadline = [dl, dec]
        .iter()
        .filter_map(|s| s.timeout.or(defaults.timeout).map(|d| d.get()))
        .max();
    let cancel = run.cancel.child_token();
    let ledgers = [run.ledger(&paths[0]), run.ledger(&paths[1])];
    for p in &paths {
        run.record(Record::Started {
            step: p.clone(),
            at: chrono::Utc::now(),
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
        ledger: ledgers[0].as_ref(),
    };
    let env_dec = StepEnv {
        step: &paths[1],
        retry: merge_retry(defaults.retry.as_ref(), dec.retry.as_ref()),
        ledger: ledgers[1].as_ref(),
        ..env_dl
    };
    let result = async {
        let spec = dl.download.as_ref().ok_or(None)?;
        let dspec = dec.decrypt.as_ref().ok_or(None)?;
        // No connection: a plain one, and no auth headers on the downloads.
        let conn = connection_for(run, &scope.file, spec.connection.as_deref(), &ctx)
            .map_err(|e| Some((0, e)))?;
        let fut = steps::files::download_then_decrypt(
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
                    Err(steps::files::PipelineError::Download(StepError::Timeout {
                        after: limit,
                    }))
                }
            },
        };
        r.map_err(|e| match e {
            steps::files::PipelineError::Download(e) => Some((0, e)),
            steps::files::PipelineError::Decrypt(e) => Some((1, e)),
        })
    }
    .await;
    let finish = |i: usize, status: StepStatus, error: Option<String>, outputs: &Value| {
        match (status, &error) {
            // A download whose decrypt failed has no outputs here: not recorded, its
            // verified files are skipped when the pair runs again.
            (StepStatus::Succeeded, _) if !outputs.is_null() => {
                run.record_done(&paths[i], DoneStatus::Succeeded, 1, outputs)
            }
            (StepStatus::Failed, Some(e)) if !run.cancel.is_cancelled() => {
                run.record(Record::Failed {
                    step: paths[i].clone(),
                    at: chrono::Utc::now(),
                    error: run.emitter.secrets().mask(e),
                })
            }
            _ => {}
        }
        run.step_finished(&paths[i], [dl, dec][i], status, 1, started, error, outputs);
    };
    match result {
        Ok((a, b)) => {
            finish(0, StepStatus::Succeeded, None, &a);
            finish(1, StepStatus::Succeeded, None, &b);
            Ok((a, b))
        }
        Err(None) => Err(Failure::Failed(
            "internal: pipelined steps lost their kinds".into(),
        )),
        Err(Some((_, StepError::Cancelled))) if run.cancel.is_cancelled() => {
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
            Err(Failure::Cancelled)
        }
        Err(Some((i, e))) => {
            let other = 1 - i;
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
                finish(other, StepStatus::Succeeded, None, &Value::Null);
                finish(1, StepStatus::Failed, Some(msg.clone()), &Value::Null);
            }
            Err(Failure::Failed(format!(
                "step `{}` failed: {msg}",
                paths[i]
            )))
        }
    }
}

/// Runs one step with its condition, timeout and `continue_on_error`; emits its events and
/// records its end in the journal. A step an earlier process finished is replayed.
async fn run_step(run: &Arc<Run>, step: &Step, scope: &Scope) -> Result<Value, Failure> {
    let path = format!("{}{}", scope.prefix, step.id);
    if let Some(outputs) = run.replayed(&path, step) {
        return Ok(outputs);
    }
    let kind = step.kind();
    let ctx = scope.ctx(run);
    let finish = |status: StepStatus,
                  attempts: u32,
                  started: Instant,
                  error: Option<String>,
                  outputs: &Value| {
        run.step_finished(&path, step, status, attempts, started, error, outputs);
    };
    let started = Instant::now();
    if let Some(cond) = &step.when {
        let go = Template::compile(cond)
            .and_then(|t| t.render_bool(&ctx))
            .map_err(|e| Failure::Failed(format!("step `{path}`: `if`: {e}")))?;
        if !go {
            run.step_started(&path, step);
            let out = json!({"skipped": true});
            run.record_done(&path, DoneStatus::Skipped, 0, &out);
            finish(StepStatus::Skipped, 0, started, None, &Value::Null);
            return Ok(out);
        }
    }
    run.step_started(&path, step);
    // Polls measure their overall deadline from their first start, in whichever process.
    let before = if kind == StepKind::Poll {
        run.started_before(&path)
    } else {
        Duration::ZERO
    };
    if !run.dry_run {
        run.record(Record::Started {
            step: path.clone(),
            at: chrono::Utc::now(),
        });
    }
    let defaults = scope.file.workflow.defaults.clone().unwrap_or_default();
    let policy = merge_retry(defaults.retry.as_ref(), step.retry.as_ref());
    // Polls have their own (long) deadline; other steps default to `defaults.timeout`.
    let deadline = match kind {
        StepKind::Poll => Some(
            step.timeout
                .map(|d| d.get())
                .unwrap_or(poll::DEFAULT_POLL_TIMEOUT)
                .saturating_sub(before),
        ),
        StepKind::ForEach | StepKind::Uses => step.timeout.map(|d| d.get()),
        _ => step.timeout.or(defaults.timeout).map(|d| d.get()),
    };
    let cancel = run.cancel.child_token();
    let ledger = run.ledger(&path);
    let env = StepEnv {
        step: &path,
        emitter: &run.emitter,
        cancel: &cancel,
        retry: policy,
        dry_run: run.dry_run,
        started,
        deadline,
        max_wait: poll_max_wait(step, run.detach_at),
        ledger: ledger.as_ref(),
    };
    let fut = execute_kind(run, step, scope, &ctx, &env);
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
    let result = match limit {
        None => fut.await,
        Some(limit) => {
            tokio::select! {
                r = &mut fut => r,
                _ = tokio::time::sleep(limit.saturating_sub(started.elapsed())) => {
                    cancel.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(10), &mut fut).await;
                    Err(StepError::Timeout { after: limit + before })
                }
            }
        }
    };
    let failed = |e: &str| {
        run.record(Record::Failed {
            step: path.clone(),
            at: chrono::Utc::now(),
            error: run.emitter.secrets().mask(e),
        })
    };
    match result {
        Ok((outputs, attempts)) => {
            run.record_done(&path, DoneStatus::Succeeded, attempts, &outputs);
            finish(StepStatus::Succeeded, attempts, started, None, &outputs);
            Ok(outputs)
        }
        Err(StepError::Pending { waiting_for, polls }) => {
            if kind == StepKind::Poll {
                run.record(Record::Waiting {
                    step: path.clone(),
                    at: chrono::Utc::now(),
                    waiting_for: run.emitter.secrets().mask(&waiting_for),
                    polls,
                });
            }
            finish(
                StepStatus::Pending,
                0,
                started,
                Some(waiting_for.clone()),
                &Value::Null,
            );
            Err(Failure::Pending(waiting_for))
        }
        Err(StepError::Cancelled) if run.cancel.is_cancelled() => {
            finish(
                StepStatus::Failed,
                0,
                started,
                Some("cancelled".into()),
                &Value::Null,
            );
            Err(Failure::Cancelled)
        }
        Err(e) => {
            let attempts = match &e {
                StepError::Vendor { attempts, .. } => *attempts,
                _ => 1,
            };
            let message = format!("step `{path}` failed: {e}");
            if step.continue_on_error {
                let out =
                    json!({"failed": true, "error": run.emitter.secrets().mask(&e.to_string())});
                run.record_done(&path, DoneStatus::FailedContinued, attempts, &out);
                finish(
                    StepStatus::FailedContinued,
                    attempts,
                    started,
                    Some(e.to_string()),
                    &Value::Null,
                );
                Ok(out)
            } else {
                failed(&e.to_string());
                finish(
                    StepStatus::Failed,
                    attempts,
                    started,
                    Some(e.to_string()),
                    &Value::Null,
                );
                Err(Failure::Failed(message))
            }
        }
    }
}

/// How long a poll may wait in this process: its own `max_wait`, and no later than the
/// run-wide `--max-wait` instant.
fn poll_max_wait(step: &Step, detach_at: Option<Instant>) -> Option<Duration> {
    let own = step.poll.as_ref().and_then(|p| p.max_wait).map(|d| d.get());
    let cli = detach_at.map(|t| t.saturating_duration_since(Instant::now()));
    match (own, cli) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Merges step retry fields over the defaults over the built-in policy.
pub fn merge_retry(defaults: Option<&RetrySpec>, step: Option<&RetrySpec>) -> RetryPolicy {
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

/// Dispatches on the step's kind; returns its outputs and the attempts it took.
async fn execute_kind(
    run: &Arc<Run>,
    step: &Step,
    scope: &Scope,
    ctx: &Value,
    env: &StepEnv<'_>,
) -> Result<(Value, u32), StepError> {
    if let Some(spec) = &step.call {
        let conn = connection_for(run, &scope.file, spec.connection.as_deref(), ctx)?;
        let rc = call::render_call(spec, &conn, ctx)?;
        let out = call::execute(&conn, &rc, env, ctx).await?;
        return Ok((out.outputs(), out.attempts));
    }
    if let Some(spec) = &step.poll {
        let conn = connection_for(run, &scope.file, spec.call.connection.as_deref(), ctx)?;
        let rc = call::render_call(&spec.call, &conn, ctx)?;
        let out = poll::execute(&conn, spec, &rc, env, ctx).await?;
        let mut v = steps::response_value(&out.response);
        if let Some(o) = v.as_object_mut() {
            o.insert("polls".into(), json!(out.polls));
        }
        return Ok((v, out.attempts));
    }
    if let Some(spec) = &step.download {
        // No connection: a plain one, and no auth headers on the downloads.
        let conn = connection_for(run, &scope.file, spec.connection.as_deref(), ctx)?;
        let out =
            steps::files::download_step(spec, &conn, spec.connection.is_some(), env, ctx).await?;
        return Ok((out, 1));
    }
    if let Some(spec) = &step.decrypt {
        let out = steps::files::decrypt_step(spec, env, ctx).await?;
        return Ok((out, 1));
    }
    if let Some(spec) = &step.for_each {
        return for_each(run, step, spec, scope, ctx, env)
            .await
            .map(|v| (v, 1));
    }
    if let Some(target) = &step.uses {
        let callee =
            run.plan
                .resolve_uses(&scope.file, target)
                .ok_or_else(|| StepError::Invalid {
                    message: format!("`uses` target `{target}` was not validated"),
                })?;
        let mut given = BTreeMap::new();
        for (k, v) in step.with.clone().unwrap_or_default() {
            let r =
                render_deep(&v, ctx).map_err(|e| StepError::template(format!("with.{k}"), e))?;
            given.insert(k, r);
        }
        let inputs = resolve_inputs(&callee.workflow, &given).map_err(|e| StepError::Invalid {
            message: format!("`uses: {target}`: {e}"),
        })?;
        register_secret_inputs(&callee.workflow, &inputs, run.emitter.secrets());
        let sub = Scope {
            file: callee,
            inputs: Value::Object(inputs),
            item: None,
            steps: Map::new(),
            prefix: format!("{}/", env.step),
            in_loop: scope.in_loop,
        };
        return match run_workflow(run, sub).await {
            Ok(outputs) => Ok((json!({ "outputs": outputs }), 1)),
            Err(Failure::Failed(m)) => Err(StepError::Invalid { message: m }),
            Err(Failure::Pending(w)) => Err(StepError::Pending {
                waiting_for: w,
                polls: 0,
            }),
            Err(Failure::Cancelled) => Err(StepError::Cancelled),
        };
    }
    Err(StepError::Invalid {
        message: format!("step `{}` has no kind", step.id),
    })
}

/// Runs the nested steps once per item, `concurrency` at a time.
async fn for_each(
    run: &Arc<Run>,
    step: &Step,
    spec: &crate::workflow::model::ForEachSpec,
    scope: &Scope,
    ctx: &Value,
    env: &StepEnv<'_>,
) -> Result<Value, StepError> {
    let items = match render_deep(&spec.items, ctx)
        .map_err(|e| StepError::template("for_each.items", e))?
    {
        Value::Array(a) => a,
        Value::Null => vec![],
        other => {
            return Err(StepError::Invalid {
                message: format!(
                    "`for_each.items` must be a list, got {}",
                    short(&other.to_string(), 80)
                ),
            })
        }
    };
    let concurrency = spec.concurrency.unwrap_or(1).max(1) as usize;
    let fail_fast = spec.fail_fast.unwrap_or(true);
    let stop = Arc::new(AtomicBool::new(false));
    let total = items.len();
    // `--shard I/N` splits the outermost loops; indices stay those of the whole list.
    let shard = run.shard.filter(|_| !scope.in_loop);
    let items: Vec<(usize, Value)> = items
        .into_iter()
        .enumerate()
        .filter(|(_, item)| shard.is_none_or(|s| s.owns(item)))
        .collect();
    let count = items.len();
    if let Some(s) = shard {
        run.emitter
            .log(env.step, format!("shard {s}: {count} of {total} items"));
    }
    let results: Vec<(usize, Value, Result<Value, Failure>)> = futures::stream::iter(items)
        .map(|(index, item)| {
            let run = run.clone();
            let stop = stop.clone();
            let mut sub = scope.clone();
            sub.item = Some((item.clone(), index));
            sub.prefix = format!("{}[{index}].", env.step);
            sub.in_loop = true;
            let steps = spec.steps.clone();
            async move {
                if stop.load(Ordering::SeqCst) {
                    return (
                        index,
                        item,
                        Err(Failure::Failed(
                            "not started after an earlier failure (fail_fast)".into(),
                        )),
                    );
                }
                // Each iteration's result holds the outputs of the loop's own steps.
                let r = run_steps(&run, &steps, &mut sub).await.map(|_| {
                    let own: Map<String, Value> = sub
                        .steps
                        .into_iter()
                        .filter(|(k, _)| steps.iter().any(|s| &s.id == k))
                        .collect();
                    Value::Object(own)
                });
                if r.is_err() && fail_fast {
                    stop.store(true, Ordering::SeqCst);
                }
                (index, item, r)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut results = results;
    results.sort_by_key(|(i, _, _)| *i);
    let mut out = Vec::with_capacity(count);
    let mut failed = Vec::new();
    let mut pending = None;
    for (index, item, r) in results {
        match r {
            Ok(v) => out.push(v),
            Err(f) => {
                out.push(Value::Null);
                match f {
                    Failure::Failed(m) => {
                        failed.push(json!({"index": index, "item": item, "error": m}))
                    }
                    Failure::Pending(w) => pending = Some(w),
                    Failure::Cancelled => return Err(StepError::Cancelled),
                }
            }
        }
    }
    if let Some(w) = pending {
        return Err(StepError::Pending {
            waiting_for: w,
            polls: 0,
        });
    }
    if !failed.is_empty() {
        let lines: Vec<String> = failed
            .iter()
            .map(|f| {
                format!(
                    "item {} ({}): {}",
                    f["index"],
                    short(&item_label(&f["item"]), 60),
                    f["error"].as_str().unwrap_or_default()
                )
            })
            .collect();
        return Err(StepError::Invalid {
            message: format!(
                "{} of {count} iterations of `{}` failed:\n  {}",
                failed.len(),
                step.id,
                lines.join("\n  ")
            ),
        });
    }
    let mut outputs = json!({"results": out, "failed": failed, "count": count});
    if let Some(s) = shard {
        outputs["shard"] = json!(s.to_string());
        outputs["total"] = json!(total);
    }
    Ok(outputs)
}

fn item_label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// A small summary of outputs for reports (never whole bodies).
fn summarize(outputs: &Value) -> Value {
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

/// Renders an optional credential field (see [`steps::render_optional`]), trimmed; a value
/// of only white space counts as absent too.
fn cred(field: &Option<String>, ctx: &Value, name: &str) -> Result<Option<String>, StepError> {
    Ok(steps::render_optional(name, field, ctx)?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty()))
}

/// The environment variables a connection's credential templates read (for messages).
fn env_names(spec: &ConnectionSpec) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(c) = &spec.credentials {
        for f in [
            &c.client_id,
            &c.client_secret,
            &c.access_key,
            &c.secret_key,
            &c.app_id,
            &c.app_key,
            &c.username,
            &c.password,
            &c.bearer_token,
            &c.service_account_file,
            &c.subject,
        ]
        .into_iter()
        .flatten()
        {
            if let Ok(t) = Template::compile(f) {
                for v in t.variables() {
                    if v.path.first().map(String::as_str) == Some("env") && v.path.len() > 1 {
                        names.push(v.path[1].clone());
                    }
                }
            }
        }
    }
    names.dedup();
    names
}

/// Builds (once per run) the connection `name` of `file`, or a plain one for `url:` calls.
fn connection_for(
    run: &Arc<Run>,
    file: &Arc<Loaded>,
    name: Option<&str>,
    ctx: &Value,
) -> Result<Connection, StepError> {
    let Some(name) = name else {
        let mut plain = run.plain.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = plain.as_ref() {
            return Ok(c.clone());
        }
        let c = Connection::new(
            ConnectionSettings {
                name: "url".into(),
                kind: VendorKind::Http,
                base_url: None,
                credentials: Credentials::None,
                ca_file: None,
                insecure_tls: false,
                request_timeout: Duration::from_secs(60),
                status_poll_timeout: Duration::from_secs(5),
            },
            run.emitter.secrets().clone(),
        )
        .map_err(|e| StepError::Vendor {
            source: Box::new(e),
            attempts: 0,
        })?;
        *plain = Some(c.clone());
        return Ok(c);
    };
    let key = (file.path.clone(), name.to_string());
    if let Some(c) = run
        .connections
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
    {
        return Ok(c.clone());
    }
    let spec = file
        .workflow
        .connections
        .get(name)
        .ok_or_else(|| StepError::Invalid {
            message: format!("no connection named `{name}`"),
        })?;
    // Connections see inputs, env and run, but not step outputs or loop items.
    let conn_ctx = json!({
        "inputs": ctx.get("inputs").cloned().unwrap_or(Value::Null),
        "env": ctx.get("env").cloned().unwrap_or(Value::Null),
        "run": ctx.get("run").cloned().unwrap_or(Value::Null),
    });
    let settings = connection_settings(name, spec, &conn_ctx, &file.dir())?;
    let secrets = run.emitter.secrets();
    register_credentials(secrets, &settings.credentials);
    if settings.insecure_tls {
        run.emitter.warn(format!(
            "connection `{name}`: insecure_tls is on; TLS certificates are NOT verified"
        ));
    }
    let conn = Connection::new(settings, secrets.clone()).map_err(|e| StepError::Vendor {
        source: Box::new(e),
        attempts: 0,
    })?;
    run.connections
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, conn.clone());
    Ok(conn)
}

fn register_credentials(secrets: &crate::secrets::Secrets, c: &Credentials) {
    match c {
        Credentials::None => {}
        Credentials::Mimecast1 {
            access_key,
            secret_key,
            app_id: _,
            app_key,
        } => {
            secrets.add(access_key);
            secrets.add(secret_key);
            secrets.add(app_key);
        }
        Credentials::Mimecast2 {
            client_id,
            client_secret,
        } => {
            secrets.add(client_id);
            secrets.add(client_secret);
        }
        Credentials::Basic {
            username: _,
            password,
        } => {
            secrets.add(password);
        }
        Credentials::Bearer { token } => secrets.add(token),
        Credentials::GoogleServiceAccount { .. } => {}
    }
}

/// Renders a connection's settings and chooses its credentials.
fn connection_settings(
    name: &str,
    spec: &ConnectionSpec,
    ctx: &Value,
    dir: &Path,
) -> Result<ConnectionSettings, StepError> {
    let missing = |what: &str| StepError::Invalid {
        message: format!(
            "connection `{name}`: {what}{}",
            match env_names(spec) {
                v if v.is_empty() => String::new(),
                v => format!(" (environment variables it reads: {})", v.join(", ")),
            }
        ),
    };
    let base_url = match cred(&spec.base_url, ctx, "base_url")? {
        Some(u) => Some(url::Url::parse(&u).map_err(|e| StepError::Invalid {
            message: format!("connection `{name}`: base_url `{u}` is not a URL: {e}"),
        })?),
        None if spec.kind == ConnectionKind::Http => None,
        None => {
            return Err(missing(
                "base_url is empty or its environment variable is not set",
            ))
        }
    };
    let c = spec.credentials.clone().unwrap_or_default();
    let get = |f: &Option<String>, n: &str| cred(f, ctx, &format!("credentials.{n}"));
    let credentials = match spec.kind {
        ConnectionKind::Mimecast => {
            let (id, secret) = (
                get(&c.client_id, "client_id")?,
                get(&c.client_secret, "client_secret")?,
            );
            let v1 = (
                get(&c.access_key, "access_key")?,
                get(&c.secret_key, "secret_key")?,
                get(&c.app_id, "app_id")?,
                get(&c.app_key, "app_key")?,
            );
            match (id, secret, v1) {
                (Some(client_id), Some(client_secret), _) => Credentials::Mimecast2 {
                    client_id,
                    client_secret,
                },
                (_, _, (Some(access_key), Some(secret_key), Some(app_id), Some(app_key))) => {
                    Credentials::Mimecast1 {
                        access_key,
                        secret_key,
                        app_id,
                        app_key,
                    }
                }
                _ => {
                    return Err(missing(
                        "no complete credentials: give client_id and client_secret (API 2.0) or access_key, secret_key, app_id and app_key (API 1.0)",
                    ))
                }
            }
        }
        ConnectionKind::Mailstore => {
            match (get(&c.username, "username")?, get(&c.password, "password")?) {
                (Some(username), Some(password)) => Credentials::Basic { username, password },
                _ => return Err(missing("username and password are required")),
            }
        }
        ConnectionKind::Google => match (
            get(&c.bearer_token, "bearer_token")?,
            get(&c.service_account_file, "service_account_file")?,
            get(&c.subject, "subject")?,
        ) {
            (Some(token), _, _) => Credentials::Bearer { token },
            (None, Some(file), Some(subject)) => Credentials::GoogleServiceAccount {
                key_file: dir.join(file),
                subject,
                scopes: vec![GOOGLE_AUDIT_SCOPE.to_string()],
                token_url: get(&c.token_url, "token_url")?,
            },
            _ => {
                return Err(missing(
                    "no credentials: give bearer_token, or service_account_file and subject",
                ))
            }
        },
        ConnectionKind::Http => match (
            get(&c.bearer_token, "bearer_token")?,
            get(&c.username, "username")?,
            get(&c.password, "password")?,
        ) {
            (Some(token), _, _) => Credentials::Bearer { token },
            (None, Some(username), Some(password)) => Credentials::Basic { username, password },
            _ => Credentials::None,
        },
    };
    let ca_file = cred(&spec.ca_file, ctx, "ca_file")?.map(|f| dir.join(f));
    Ok(ConnectionSettings {
        name: name.to_string(),
        kind: match spec.kind {
            ConnectionKind::Mimecast => VendorKind::Mimecast,
            ConnectionKind::Mailstore => VendorKind::MailStore,
            ConnectionKind::Google => VendorKind::Google,
            ConnectionKind::Http => VendorKind::Http,
        },
        base_url,
        credentials,
        ca_file,
        insecure_tls: spec.insecure_tls,
        request_timeout: spec
            .request_timeout
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(60)),
        status_poll_timeout: Duration::from_secs(5),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::load_str;

    fn wf(src: &str) -> Workflow {
        load_str(Path::new("t.yaml"), src.into())
            .expect("valid")
            .workflow
    }

    #[test]
    fn inputs_resolve_defaults_types_and_missing() {
        let w = wf("name: t\ninputs:\n  a: {type: integer, required: true}\n  b: {type: boolean, default: false}\n  c: {type: string}\nsteps: [{id: s, call: {url: 'http://x'}}]\n");
        let mut given = BTreeMap::new();
        assert!(
            matches!(resolve_inputs(&w, &given), Err(InputError::Missing(m)) if m == vec!["a".to_string()])
        );
        given.insert("a".into(), json!("7"));
        let r = resolve_inputs(&w, &given).unwrap();
        assert_eq!(r["a"], json!(7));
        assert_eq!(r["b"], json!(false));
        assert_eq!(r["c"], Value::Null);
        given.insert("aa".into(), json!("1"));
        let e = resolve_inputs(&w, &given).unwrap_err().to_string();
        assert_eq!(e, "unknown input `aa`; did you mean `a`?");
    }

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
}
