//! `auditflow run`: validate, resolve the flags, run the engine with the reporters, and turn
//! the run's end into an exit code.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::args::{LogFormat, RunArgs};
use super::error::CliError;
use crate::engine::{self, RunOptions, RunResult, Shard};
use crate::events::{Emitter, RunStatus};
use crate::report::manifest::Recorded;
use crate::report::{out_dir, Console, ReportArgs, ReportError, Reporters};
use crate::secrets::Secrets;
use crate::state::{Store, StoreSpec};
use crate::steps::overwrite::OverwriteGuard;
use crate::workflow::duration::parse_duration;
use crate::workflow::validate::validate_with;

/// Validates and runs a workflow.
pub async fn run_workflow(args: RunArgs, cancel: CancellationToken) -> Result<(), CliError> {
    let plan =
        validate_with(&args.workflow, &args.packs.settings()).map_err(CliError::InvalidWorkflow)?;
    let inputs = parse_inputs(&args)?;
    let (inputs, resume) = match &args.resume {
        Some(run) => {
            let (inputs, id) = resumed_inputs(&args, run, &plan.root, inputs).await?;
            (inputs, Some(id))
        }
        None => (inputs, None),
    };
    let (max_wait, shard) = limits(&args)?;
    let state = match (args.store_spec(), args.renders_only()) {
        (Some(spec), false) => Some(
            Store::open(&spec)
                .await
                .map_err(|e| CliError::Invalid(e.to_string()))?,
        ),
        _ => None,
    };
    let manifest_dir = out_dir(&plan.root.workflow, &inputs);
    let manifest_for_reports = manifest_dir.clone();
    let overwrite = (!args.overwrite).then(|| overwrite_guard(manifest_dir.as_deref()));
    let reporters = reporters(&args, manifest_dir)?;
    let secrets = Secrets::new();
    let mut sinks = reporters.sinks();
    if let Some(g) = &overwrite {
        sinks.push(g.clone());
    }
    let emitter = Emitter::new(sinks, secrets.clone());
    let evidence = EvidenceAtEnd::new(reporters, secrets.clone());
    let opts = RunOptions {
        inputs,
        env: args.env.clone(),
        dry_run: args.renders_only(),
        rehearsal: args.rehearsal,
        max_wait,
        cancel,
        state,
        fresh: args.fresh,
        resume,
        shard,
        overwrite,
        write_evidence: Some(evidence.writer()),
    };
    let result = engine::run(plan, opts, emitter)
        .await
        .map_err(|e| refused(&args.workflow, &e, &secrets))?;
    let mut errors: Vec<CliError> = evidence
        .finish(result.state_dir.as_deref())
        .into_iter()
        .map(CliError::Report)
        .collect();
    errors.extend(people_reports(
        &args,
        manifest_for_reports.as_deref(),
        &result.run_id,
    ));
    errors.extend(ended(result, args.store_spec()));
    CliError::all(errors)
}

/// The reports of a run, written by the engine once the run's last event is out and before
/// its end is recorded ([`engine::EvidenceWriter`]), or after the engine returns when it did
/// not run the workflow (a one-shot workflow already done). What could not be written is
/// kept for the one error path.
struct EvidenceAtEnd {
    shared: Arc<std::sync::Mutex<EvidenceState>>,
}

struct EvidenceState {
    /// The reporters, until they are finished.
    reporters: Option<Reporters>,
    secrets: Secrets,
    errors: Vec<ReportError>,
}

impl EvidenceAtEnd {
    fn new(reporters: Reporters, secrets: Secrets) -> Self {
        let state = EvidenceState {
            reporters: Some(reporters),
            secrets,
            errors: Vec::new(),
        };
        EvidenceAtEnd {
            shared: Arc::new(std::sync::Mutex::new(state)),
        }
    }

    /// The engine's hook: finishes the reporters; says what failed (its texts masked).
    fn writer(&self) -> engine::EvidenceWriter {
        let shared = self.shared.clone();
        Box::new(move |run_dir| {
            let mut st = shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.write(run_dir);
            if st.errors.is_empty() {
                return Ok(());
            }
            let texts: Vec<String> = st.errors.iter().map(ToString::to_string).collect();
            Err(texts.join("; "))
        })
    }

    /// Finishes the reporters if the engine did not, and returns what could not be written.
    fn finish(self, run_dir: Option<&Path>) -> Vec<ReportError> {
        let mut st = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.write(run_dir);
        std::mem::take(&mut st.errors)
    }
}

impl EvidenceState {
    fn write(&mut self, run_dir: Option<&Path>) {
        if let Some(r) = self.reporters.take() {
            self.errors = r.finish(run_dir, &self.secrets);
        }
    }
}

/// `--max-wait` and `--shard`, read.
fn limits(args: &RunArgs) -> Result<(Option<std::time::Duration>, Option<Shard>), CliError> {
    let max_wait = args
        .max_wait
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| CliError::Usage(format!("--max-wait: {e}")))?;
    let shard = args
        .shard
        .as_deref()
        .map(Shard::parse)
        .transpose()
        .map_err(|e| CliError::Usage(format!("--shard {e}")))?;
    Ok((max_wait, shard))
}

/// The console reporter and the reports the command line asks for; the manifest goes to
/// `manifest_dir`.
fn reporters(args: &RunArgs, manifest_dir: Option<PathBuf>) -> Result<Reporters, CliError> {
    Ok(Reporters::from_args(ReportArgs {
        console: match args.log_format {
            LogFormat::Json => Console::JsonLines,
            LogFormat::Human => Console::Human {
                verbose: args.verbose,
            },
        },
        report_json: args.report_json.clone(),
        junit: args.junit.clone(),
        manifest_dir,
        dry_run: args.renders_only(),
        signer: evidence_signer(args)?,
    }))
}

/// `--report-html` / `--report-md`: the evidence report of the run's output directory; for
/// a run that wrote no file yet (no manifest), the report of its journal (`run_id`), which
/// says what the run waits for.
fn people_reports(args: &RunArgs, manifest_dir: Option<&Path>, run_id: &str) -> Vec<CliError> {
    use super::args::ReportFormat;
    if args.renders_only() {
        return vec![];
    }
    let dir = manifest_dir.unwrap_or(Path::new("."));
    let wanted = [
        (args.report_html.as_ref(), ReportFormat::Html),
        (args.report_md.as_ref(), ReportFormat::Md),
    ];
    let mut errors = Vec::new();
    for (path, format) in wanted {
        let Some(path) = path else { continue };
        let state = args
            .store_spec()
            .unwrap_or_else(|| StoreSpec::Dir(PathBuf::from(".auditflow")));
        let written = super::commands::evidence_report(
            dir,
            format,
            &state,
            args.sign_key.as_deref(),
            Some(run_id),
        )
        .and_then(|text| {
            crate::report::evidence::write(path, &text).map_err(|e| CliError::Failed(e.to_string()))
        });
        match written {
            Ok(p) => crate::errln!("  evidence report: {}", p.display()),
            // No file and no journal (a run without a state store): nothing to report on.
            Err(e) if !dir.join(crate::report::manifest::FILE_NAME).exists() => {
                crate::errln!("  {}: no evidence report: {e}", path.display());
            }
            Err(e) => errors.push(e),
        }
    }
    errors
}

/// `--sign-key`'s key, unlocked now: a key that cannot sign fails the run before anything
/// is sent (exit 2), not after days of export.
fn evidence_signer(args: &RunArgs) -> Result<Option<Arc<crate::openpgp::sign::Signer>>, CliError> {
    let Some(path) = &args.sign_key else {
        return Ok(None);
    };
    let passphrase = args
        .env
        .get(&args.sign_passphrase_env)
        .filter(|p| !p.is_empty());
    crate::openpgp::sign::Signer::load(
        path,
        passphrase.map(String::as_str),
        &args.sign_passphrase_env,
    )
    .map(|s| Some(Arc::new(s)))
    .map_err(|e| CliError::Usage(format!("--sign-key: {e}")))
}

/// Why a run did not start: exit 75 when another runner holds it (not yet: run again
/// later), exit 2 otherwise.
fn refused(workflow: &Path, e: &engine::RunError, secrets: &Secrets) -> CliError {
    let message = secrets.mask(&match e.hint() {
        Some(help) => format!("{e}\n  = help: {help}"),
        None => e.to_string(),
    });
    if e.is_busy() {
        return CliError::Held {
            workflow: workflow.to_path_buf(),
            message,
        };
    }
    CliError::RunRefused {
        workflow: workflow.to_path_buf(),
        message,
    }
}

/// The inputs run `prefix` was started with (secret ones are not kept: they come from
/// `given` as always) and its full id, after checking it is unfinished and a run of this
/// workflow (by identity, whatever the directory: its inputs are only merged into this
/// workflow's). A given input that differs from the recorded one is refused: it would make
/// another run. The state checks the rest when the run begins (see `StateDir::begin`).
async fn resumed_inputs(
    args: &RunArgs,
    prefix: &str,
    root: &crate::workflow::Loaded,
    mut given: BTreeMap<String, Value>,
) -> Result<(BTreeMap<String, Value>, String), CliError> {
    let usage = |m: String| CliError::Usage(format!("--resume {prefix}: {m}"));
    let spec = args.store_spec().ok_or_else(|| {
        usage("needs the store the run is kept in (--state-dir or --state)".into())
    })?;
    let state = Store::open(&spec)
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let (replay, active) = state.show(prefix).await.map_err(|e| usage(e.to_string()))?;
    let h = &replay.header;
    if !active {
        return Err(usage(format!(
            "run {} is not unfinished (it ended {}); nothing to resume. `auditflow runs list` shows the unfinished ones",
            h.run_id,
            replay.status()
        )));
    }
    let cwd = std::env::current_dir().ok();
    let ours = crate::state::WorkflowIdentity::of(&root.path, cwd.as_deref());
    let same = match &h.identity {
        Some(theirs) => theirs.path == ours.path,
        None => ours.matches_legacy_path(&h.workflow),
    };
    if !same {
        return Err(usage(format!(
            "it is a run of {}, this command runs {}",
            h.identity.as_ref().map_or_else(
                || h.workflow.clone(),
                crate::state::WorkflowIdentity::describe
            ),
            ours.describe()
        )));
    }
    let recorded = h.inputs.as_object().cloned().unwrap_or_default();
    for (k, v) in recorded {
        let spec = root.workflow.inputs.get(&k);
        if spec.is_some_and(|s| s.secret) {
            continue;
        }
        let Some(g) = given.get(&k) else {
            given.insert(k, v);
            continue;
        };
        let kind = spec.map(|s| s.kind).unwrap_or_default();
        let coerced = crate::workflow::validate::coerce_input(kind, g).unwrap_or(g.clone());
        if coerced != v {
            return Err(usage(format!(
                "input `{k}` was {v} in run {}; leave `-i {k}` out to continue that run, or run without --resume to start one with the new value",
                h.run_id
            )));
        }
    }
    Ok((given, h.run_id.clone()))
}

/// The guard against replacing files that are not the run's: it accepts what the manifest
/// of the run's output directory (`manifest_dir`, else the current one) records unchanged.
fn overwrite_guard(manifest_dir: Option<&Path>) -> Arc<OverwriteGuard> {
    let recorded = Recorded::load(manifest_dir.unwrap_or(Path::new(".")));
    Arc::new(OverwriteGuard::new(Arc::new(move |p: &Path| {
        recorded.owns(p)
    })))
}

/// How the run ended, when it did not succeed.
fn ended(result: RunResult, store: Option<StoreSpec>) -> Option<CliError> {
    match result.status {
        RunStatus::Succeeded => None,
        RunStatus::Failed => Some(CliError::StepFailed(result.error.map(|e| e.to_string()))),
        RunStatus::Pending => Some(CliError::Pending {
            waiting_for: result.error.map(|e| e.to_string()),
            state_dir: store.map(|s| PathBuf::from(s.describe())),
            run_id: result.run_id,
        }),
        RunStatus::Cancelled => Some(CliError::Interrupted),
    }
}

/// `--inputs-file`, then every `--input KEY=VALUE` over it.
/// An inputs file's problems are diagnostics with their position, printed as they are.
fn parse_inputs(args: &RunArgs) -> Result<BTreeMap<String, Value>, CliError> {
    let mut out = BTreeMap::new();
    if let Some(f) = &args.inputs_file {
        let inputs = crate::workflow::load::load_inputs_file(f)
            .map_err(|d| CliError::InvalidWorkflow(vec![*d]))?;
        out.extend(inputs);
    }
    for kv in &args.inputs {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| CliError::Invalid(format!("--input `{kv}`: write KEY=VALUE")))?;
        out.insert(k.trim().to_string(), Value::String(v.to_string()));
    }
    Ok(out)
}
