//! The command line: `run`, `validate`, `schema`, `sim`, `demo`, `decrypt`.
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::engine::{self, RunOptions};
use crate::events::{Emitter, Event, RunStatus, Sink};
use crate::report::{human::Human, json::JsonReport, junit::JUnit, manifest::ManifestSink};
use crate::secrets::Secrets;
use crate::workflow::duration::parse_duration;
use crate::workflow::validate::validate_file;

/// Exit codes (documented in the README).
pub mod exit {
    pub const OK: u8 = 0;
    /// A step failed.
    pub const FAILED: u8 = 1;
    /// Invalid workflow, inputs or usage.
    pub const USAGE: u8 = 2;
    /// Pending: a poll reached `max_wait`; run again later to continue (EX_TEMPFAIL).
    pub const PENDING: u8 = 75;
    /// Interrupted (Ctrl-C).
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Parser, Debug)]
#[command(
    name = "auditflow",
    version,
    about = "Run declarative YAML audit workflows against Mimecast, MailStore and Google Email Audit"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate, then run a workflow.
    Run {
        /// The workflow file.
        workflow: PathBuf,
        /// An input value, KEY=VALUE (repeatable).
        #[arg(long = "input", short = 'i', value_name = "KEY=VALUE")]
        inputs: Vec<String>,
        /// A YAML file of inputs (a mapping); --input wins over it.
        #[arg(long, value_name = "FILE")]
        inputs_file: Option<PathBuf>,
        #[command(flatten)]
        state: StateDirArg,
        /// Abandon an unfinished run of this workflow and inputs and start over (requests
        /// that must not be repeated, such as export creations, are sent again).
        #[arg(long)]
        fresh: bool,
        /// Run shard I of N: the outermost for_each loops keep the items whose hash falls
        /// in this shard (for CI matrices and Kubernetes Indexed Jobs).
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Write a JSON report of the run.
        #[arg(long, value_name = "FILE")]
        report_json: Option<PathBuf>,
        /// Write a JUnit XML report (one test case per step).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Render every request (secrets masked) and send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Detach when polling is still waiting this long after the run started: save state
        /// and exit 75 (run the same command again later to continue).
        #[arg(long, value_name = "DURATION")]
        max_wait: Option<String>,
        /// Output format: human lines, or JSON lines for machines.
        #[arg(long, value_enum, default_value = "human")]
        log_format: LogFormat,
        /// Show every log line (MailStore log output, step starts).
        #[arg(long, short)]
        verbose: bool,
    },
    /// Check workflow files without sending anything.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of workflow files.
    Schema,
    /// Show the runs recorded in a state directory.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Serve the vendor simulator (Mimecast, MailStore, Google) on loopback until Ctrl-C.
    Sim(SimArgs),
    /// OpenPGP-decrypt files (e.g. Google exports downloaded otherwise) into a directory.
    Decrypt {
        /// Armored or binary secret key file (RSA).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Name of the environment variable holding the key's passphrase (never the passphrase itself).
        #[arg(long, value_name = "VAR")]
        passphrase_env: Option<String>,
        /// Output directory (created if needed; files are written 0600).
        #[arg(short = 'o', long = "out", value_name = "DIR")]
        out: PathBuf,
        /// Encrypted files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Re-hash the artifacts of an output directory against its manifest.json (exit 1 on any difference).
    Verify {
        /// The output directory of a run (holding manifest.json).
        dir: PathBuf,
    },
    /// Run the shipped workflows against the built-in simulator with a throwaway key.
    Demo {
        /// Where results go (replaced on every run).
        #[arg(long, default_value = "demo-out")]
        out: PathBuf,
    },
}

/// `--state-dir` (shared by `run` and `runs`).
#[derive(clap::Args, Debug)]
pub struct StateDirArg {
    /// Where run state is kept: a journal per run (masked, mode 0600). A run that did not
    /// succeed (crash, failure, exit 75) is resumed by the next `run` of the same workflow
    /// and inputs.
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".auditflow",
        env = "AUDITFLOW_STATE_DIR"
    )]
    pub state_dir: PathBuf,
}

/// `auditflow runs ...`
#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// One line per run, newest first.
    List {
        #[command(flatten)]
        state: StateDirArg,
    },
    /// What one run recorded: steps, requests that must not be repeated, files, waits.
    Show {
        /// The run id (or its first characters).
        run: String,
        #[command(flatten)]
        state: StateDirArg,
    },
}

/// Options of `auditflow sim`.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// Port of the Mimecast side (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub mimecast_port: u16,
    #[arg(long, default_value_t = 0)]
    pub mailstore_port: u16,
    #[arg(long, default_value_t = 0)]
    pub google_port: u16,
    /// Latency added to every answer, e.g. 50ms.
    #[arg(long, value_name = "DURATION")]
    pub latency: Option<String>,
    /// Share of requests answered 429 (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub rate_429: f64,
    /// Share of requests answered 500/502/503 (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub rate_5xx: f64,
    /// Cut this many file downloads half way.
    #[arg(long, default_value_t = 0)]
    pub cut_downloads: u32,
    /// Exports of this Google user end in ERROR.
    #[arg(long, value_name = "USER")]
    pub google_error_user: Option<String>,
    /// Status polls a Google export stays PENDING.
    #[arg(long, default_value_t = 3)]
    pub google_pending_polls: u32,
    /// Seed of the fault generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let json = matches!(
        &cli.command,
        Command::Run {
            log_format: LogFormat::Json,
            ..
        }
    );
    init_tracing(json);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    ExitCode::from(rt.block_on(dispatch(cli.command)))
}

/// Diagnostics of the library (adapter warnings, debug traces) go to stderr through
/// `tracing`, filtered by `RUST_LOG` (default: warnings); JSON lines with `--log-format json`.
fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}

async fn dispatch(cmd: Command) -> u8 {
    match cmd {
        Command::Validate { files } => validate(&files),
        Command::Schema => {
            println!("{}", schema_json());
            exit::OK
        }
        Command::Sim(a) => sim(a).await,
        Command::Runs { command } => runs(command),
        Command::Verify { dir } => verify(&dir),
        Command::Decrypt {
            key,
            passphrase_env,
            out,
            files,
        } => decrypt(&key, passphrase_env.as_deref(), &out, &files).await,
        Command::Demo { out } => crate::demo::run(&out, ctrl_c_token()).await,
        Command::Run {
            workflow,
            inputs,
            inputs_file,
            state,
            fresh,
            shard,
            report_json,
            junit,
            dry_run,
            max_wait,
            log_format,
            verbose,
        } => {
            let args = RunArgs {
                state_dir: Some(state.state_dir),
                fresh,
                shard,
                workflow,
                inputs,
                inputs_file,
                report_json,
                junit,
                dry_run,
                max_wait,
                log_format,
                verbose,
                env: std::env::vars().collect(),
            };
            run(args, ctrl_c_token()).await
        }
    }
}

/// A token cancelled on Ctrl-C.
fn ctrl_c_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted: cancelling running steps (Ctrl-C again to quit at once)");
            t.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(exit::INTERRUPTED as i32);
            }
        }
    });
    token
}

/// The JSON Schema of workflow files, as checked in under `schemas/`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(crate::workflow::model::Workflow);
    serde_json::to_string_pretty(&schema).unwrap_or_else(|_| "{}".into())
}

fn validate(files: &[PathBuf]) -> u8 {
    let mut bad = 0;
    for f in files {
        match validate_file(f) {
            Ok(plan) => {
                let extra = plan.files.len().saturating_sub(1);
                if extra > 0 {
                    println!(
                        "{}: ok (with {extra} used file{})",
                        f.display(),
                        if extra == 1 { "" } else { "s" }
                    );
                } else {
                    println!("{}: ok", f.display());
                }
            }
            Err(diags) => {
                bad += 1;
                for d in diags {
                    eprint!("{d}");
                }
            }
        }
    }
    if bad == 0 {
        exit::OK
    } else {
        eprintln!(
            "{bad} of {} file{} invalid",
            files.len(),
            if files.len() == 1 { "" } else { "s" }
        );
        exit::USAGE
    }
}

/// Arguments of `run` (also used by `demo`).
pub struct RunArgs {
    /// Where the run's journal is kept (see [`crate::state`]); None: nowhere, no resume.
    pub state_dir: Option<PathBuf>,
    pub fresh: bool,
    /// `--shard I/N` as given.
    pub shard: Option<String>,
    pub workflow: PathBuf,
    pub inputs: Vec<String>,
    pub inputs_file: Option<PathBuf>,
    pub report_json: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub dry_run: bool,
    pub max_wait: Option<String>,
    pub log_format: LogFormat,
    pub verbose: bool,
    pub env: BTreeMap<String, String>,
}

/// JSON lines on stdout, one per event (`--log-format json`).
struct JsonLines;
impl Sink for JsonLines {
    fn event(&self, e: &Event) {
        if let Ok(s) = serde_json::to_string(e) {
            println!("{s}");
        }
    }
}

fn parse_inputs(args: &RunArgs) -> Result<BTreeMap<String, Value>, String> {
    let mut out = BTreeMap::new();
    if let Some(f) = &args.inputs_file {
        out.extend(crate::workflow::load::load_inputs_file(f).map_err(|d| d.to_string())?);
    }
    for kv in &args.inputs {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--input `{kv}`: write KEY=VALUE"))?;
        out.insert(k.trim().to_string(), Value::String(v.to_string()));
    }
    Ok(out)
}

/// Validates and runs a workflow; returns the exit code.
pub async fn run(args: RunArgs, cancel: CancellationToken) -> u8 {
    let plan = match validate_file(&args.workflow) {
        Ok(p) => p,
        Err(diags) => {
            for d in diags {
                eprint!("{d}");
            }
            return exit::USAGE;
        }
    };
    let inputs = match parse_inputs(&args) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let max_wait = match args.max_wait.as_deref().map(parse_duration).transpose() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: --max-wait: {e}");
            return exit::USAGE;
        }
    };
    let shard = match args.shard.as_deref().map(engine::Shard::parse).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --shard {e}");
            return exit::USAGE;
        }
    };
    let state = match (&args.state_dir, args.dry_run) {
        (Some(dir), false) => match crate::state::StateDir::open(dir) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        },
        _ => None,
    };
    let secrets = Secrets::new();
    // The journal is the run's record in the state directory; the JSON report (which holds
    // every step until the end) is collected only when asked for.
    let json_report = args
        .report_json
        .as_ref()
        .map(|_| Arc::new(JsonReport::new()));
    let junit = args.junit.as_ref().map(|_| Arc::new(JUnit::new()));
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
    match args.log_format {
        LogFormat::Json => sinks.push(Arc::new(JsonLines)),
        LogFormat::Human => {
            let interactive = std::io::stdout().is_terminal() && std::env::var_os("CI").is_none();
            sinks.push(Arc::new(Human::new(interactive, args.verbose)));
        }
    }
    if let Some(r) = &json_report {
        sinks.push(r.clone());
    }
    if let Some(j) = &junit {
        sinks.push(j.clone());
    }
    let manifest = Arc::new(ManifestSink::new());
    sinks.push(manifest.clone());
    let manifest_dir = out_dir(&plan.root.workflow, &inputs);
    let emitter = Emitter::new(sinks, secrets.clone());
    let opts = RunOptions {
        inputs,
        env: args.env.clone(),
        dry_run: args.dry_run,
        max_wait,
        cancel,
        state,
        fresh: args.fresh,
        shard,
    };
    let result = match engine::run(plan, opts, emitter).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "{}: error: {}",
                args.workflow.display(),
                secrets.mask(&e.to_string())
            );
            return exit::USAGE;
        }
    };
    let mut code = match result.status {
        RunStatus::Succeeded => exit::OK,
        RunStatus::Failed => exit::FAILED,
        RunStatus::Pending => exit::PENDING,
        RunStatus::Cancelled => exit::INTERRUPTED,
    };
    if manifest.has_artifacts() && !args.dry_run {
        let dir = manifest_dir.unwrap_or_else(|| PathBuf::from("."));
        match manifest.write(&dir) {
            Ok(p) => {
                if args.log_format == LogFormat::Human {
                    println!(
                        "  evidence manifest: {} (check with `auditflow verify {}`)",
                        p.display(),
                        dir.display()
                    );
                }
            }
            Err(e) => {
                eprintln!("error: manifest: {}", secrets.mask(&e));
                code = code.max(exit::FAILED);
            }
        }
    }
    if let (Some(r), Some(dir)) = (&json_report, &result.state_dir) {
        let path = dir.join("report.json");
        if let Err(e) = r.write(&path) {
            eprintln!("error: run record in the state directory: {e}");
            code = code.max(exit::FAILED);
        }
    }
    if let (Some(r), Some(path)) = (&json_report, &args.report_json) {
        if let Err(e) = r.write(path) {
            eprintln!("error: report: {e}");
            code = code.max(exit::FAILED);
        }
    }
    if let (Some(j), Some(path)) = (&junit, &args.junit) {
        if let Err(e) = j.write(path) {
            eprintln!("error: junit: {e}");
            code = code.max(exit::FAILED);
        }
    }
    match (result.status, &result.error) {
        (RunStatus::Failed, Some(e)) => eprintln!("error: {e}"),
        (RunStatus::Pending, Some(w)) => eprintln!(
            "pending (exit {}): {w}\n  state saved in {}; run the same command again later to continue run {}",
            exit::PENDING,
            args.state_dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| "nowhere (no --state-dir)".into()),
            result.run_id
        ),
        _ => {}
    }
    code
}

/// `auditflow decrypt`: unlocks the key once, decrypts each file (in parallel), writes a
/// manifest of what it produced.
async fn decrypt(
    key: &std::path::Path,
    passphrase_env: Option<&str>,
    out: &std::path::Path,
    files: &[PathBuf],
) -> u8 {
    use crate::steps::decrypt::{decrypt_file, output_name, DecryptionKey};
    let passphrase = match passphrase_env {
        Some(var) => match std::env::var(var) {
            Ok(p) => Some(p),
            Err(_) => {
                eprintln!(
                    "error: --passphrase-env {var}: the environment variable {var} is not set"
                );
                return exit::USAGE;
            }
        },
        None => None,
    };
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!("error: cannot create {}: {e}", out.display());
        return exit::FAILED;
    }
    let key_path = key.to_path_buf();
    let loaded =
        tokio::task::spawn_blocking(move || DecryptionKey::load(&key_path, passphrase.as_deref()))
            .await;
    let key = match loaded {
        Ok(Ok(k)) => std::sync::Arc::new(k),
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
        Err(e) => {
            eprintln!("error: key loading failed: {e}");
            return exit::FAILED;
        }
    };
    let manifest = Arc::new(ManifestSink::new());
    let emitter = Emitter::new(vec![manifest.clone()], Secrets::new());
    emitter.emit(Event::RunStarted {
        run_id: uuid::Uuid::new_v4().to_string(),
        workflow: "auditflow decrypt".into(),
        file: String::new(),
        inputs: serde_json::json!({"key": key.as_ref().key_ids(), "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>()}),
        started_at: chrono::Utc::now().to_rfc3339(),
        dry_run: false,
        resumed: None,
    });
    let mut tasks = Vec::new();
    for f in files {
        let (key, input) = (key.clone(), f.clone());
        let output = out.join(output_name(f));
        tasks.push(tokio::task::spawn_blocking(move || {
            decrypt_file(&key, &input, &output)
        }));
    }
    let mut failed = 0;
    for (f, t) in files.iter().zip(tasks) {
        match t.await {
            Ok(Ok(d)) => {
                println!(
                    "{} -> {} ({} bytes, sha256 {})",
                    f.display(),
                    d.path.display(),
                    d.bytes,
                    d.sha256
                );
                emitter.emit(Event::Artifact {
                    step: "decrypt".into(),
                    artifact: crate::events::Artifact {
                        kind: "decrypt".into(),
                        path: d.path.display().to_string(),
                        bytes: d.bytes,
                        sha256: d.sha256.clone(),
                        source: Some(d.input.display().to_string()),
                        source_sha256: Some(d.input_sha256.clone()),
                        request_id: None,
                        finished_at: chrono::Utc::now().to_rfc3339(),
                    },
                });
            }
            Ok(Err(e)) => {
                failed += 1;
                eprintln!("error: {e}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: decrypt task failed: {e}", f.display());
            }
        }
    }
    emitter.emit(Event::RunFinished {
        status: if failed == 0 {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        },
        duration: Duration::ZERO,
        outputs: Value::Null,
        error: None,
    });
    if manifest.has_artifacts() {
        if let Err(e) = manifest.write(out) {
            eprintln!("error: manifest: {e}");
            failed += 1;
        }
    }
    if failed == 0 {
        exit::OK
    } else {
        eprintln!(
            "{failed} of {} file(s) failed; no plaintext was left for them",
            files.len()
        );
        exit::FAILED
    }
}

/// The run's output directory: the `out_dir` input as given, else its default.
fn out_dir(wf: &crate::workflow::Workflow, given: &BTreeMap<String, Value>) -> Option<PathBuf> {
    let v = given
        .get("out_dir")
        .or_else(|| wf.inputs.get("out_dir").and_then(|i| i.default.as_ref()))?;
    v.as_str().filter(|s| !s.is_empty()).map(PathBuf::from)
}

fn runs(cmd: RunsCommand) -> u8 {
    let (dir, id) = match &cmd {
        RunsCommand::List { state } => (&state.state_dir, None),
        RunsCommand::Show { run, state } => (&state.state_dir, Some(run)),
    };
    if !dir.join("auditflow-state.json").exists() {
        eprintln!(
            "error: {} is not an auditflow state directory (no runs recorded there); pass --state-dir",
            dir.display()
        );
        return exit::USAGE;
    }
    let sd = match crate::state::StateDir::open(dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    match id {
        None => match sd.list() {
            Ok(list) => {
                print!("{}", crate::report::runs::list(&list));
                exit::OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::FAILED
            }
        },
        Some(id) => match sd.show(id) {
            Ok((r, active)) => {
                print!("{}", crate::report::runs::show(&r, active));
                exit::OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::USAGE
            }
        },
    }
}

fn verify(dir: &std::path::Path) -> u8 {
    match crate::report::manifest::verify(dir) {
        Ok(v) if v.problems.is_empty() => {
            println!(
                "{}: {} artifact(s) verified, all sizes and SHA-256 match",
                dir.display(),
                v.checked
            );
            exit::OK
        }
        Ok(v) => {
            for p in &v.problems {
                println!("{p}");
            }
            eprintln!(
                "{}: {} of {} artifact(s) differ from the manifest",
                dir.display(),
                v.problems.len(),
                v.checked
            );
            exit::FAILED
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::USAGE
        }
    }
}

async fn sim(a: SimArgs) -> u8 {
    let latency = match a.latency.as_deref().map(parse_duration).transpose() {
        Ok(l) => l.unwrap_or(Duration::ZERO),
        Err(e) => {
            eprintln!("error: --latency: {e}");
            return exit::USAGE;
        }
    };
    for (name, rate) in [("--rate-429", a.rate_429), ("--rate-5xx", a.rate_5xx)] {
        if !(0.0..=1.0).contains(&rate) {
            eprintln!("error: {name} must be between 0 and 1");
            return exit::USAGE;
        }
    }
    let cfg = crate::sim::SimConfig {
        mimecast_port: a.mimecast_port,
        mailstore_port: a.mailstore_port,
        google_port: a.google_port,
        faults: crate::sim::FaultConfig {
            latency,
            rate_429: a.rate_429,
            rate_5xx: a.rate_5xx,
            cut_downloads: a.cut_downloads,
            force_each_once: false,
            seed: a.seed,
        },
        google_error_user: a.google_error_user,
        google_pending_polls: a.google_pending_polls,
        ..Default::default()
    };
    let handle = match crate::sim::start(cfg).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    println!("auditflow simulator listening (Ctrl-C to stop)");
    println!("  mimecast   {}", handle.mimecast_url);
    println!("  mailstore  {}", handle.mailstore_url);
    println!(
        "  google     {}  (token endpoint {})",
        handle.google_url, handle.google_token_url
    );
    println!(
        "  google service-account key file: {}",
        handle.google.service_account_key_file().display()
    );
    println!("\nPoint the shipped workflows at it (these are throwaway simulator credentials):");
    for (k, v) in handle.env() {
        println!("export {k}='{v}'");
    }
    let _ = tokio::signal::ctrl_c().await;
    let stats = handle.stats.snapshot();
    handle.shutdown().await;
    println!(
        "{}",
        serde_json::to_string_pretty(&stats).unwrap_or_default()
    );
    exit::OK
}
