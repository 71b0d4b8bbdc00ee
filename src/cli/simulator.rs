//! The commands that need the vendor simulator (the `sim` feature, on by default): the
//! demo's runs, `run --dry-run=sim` and `auditflow sim`. Built without the feature, the command
//! line answers them with `no_simulator` (in `cli/mod.rs`) instead: exit 2 and how to get one.
use std::path::Path;
use std::time::Duration;

use auditflow_sim::timing::Timing;
use tokio_util::sync::CancellationToken;

use super::args::{LogFormat, RunArgs, SimArgs, SimTiming};
use super::error::{conclude, exit, CliError};
use super::run::run_workflow;
use crate::demo::{PlayEnd, PlayRun, PUBLIC_KEY_VAR};
use crate::rehearse::{Rehearsal, OUT_DIR_INPUT};
use crate::workflow::duration::parse_duration;
use crate::workflow::validate::validate_with;

/// Runs one workflow of the demo as `auditflow run` would, prints how it ended (the one
/// error path), and tells the demo how it ended.
pub(super) async fn run_demo_play(play: PlayRun, cancel: CancellationToken) -> PlayEnd {
    let args = RunArgs {
        state_dir: Some(play.state_dir),
        state: None,
        workflow: play.workflow,
        inputs: play.inputs,
        inputs_file: None,
        report_json: None,
        junit: None,
        sign_key: None,
        report_html: None,
        report_md: None,
        sign_passphrase_env: "AUDIT_SIGN_PASSPHRASE".into(),
        dry_run: None,
        max_wait: play.max_wait,
        fresh: false,
        resume: None,
        overwrite: false,
        shard: None,
        log_format: LogFormat::Human,
        verbose: false,
        packs: Default::default(),
        env: play.env,
        rehearsal: true,
    };
    match conclude(run_workflow(args, cancel).await) {
        exit::OK => PlayEnd::Succeeded,
        exit::PENDING => PlayEnd::Pending,
        _ => PlayEnd::Failed,
    }
}

/// `run --dry-run=sim`: rehearses `args.workflow` against the simulator (see
/// [`crate::rehearse`]) and ends as the run ended (exit 0, 1, 75...), with the scratch
/// directory named on stderr.
pub(super) async fn rehearse_workflow(
    mut args: RunArgs,
    cancel: CancellationToken,
) -> Result<(), CliError> {
    // An invalid workflow fails before anything is started.
    let plan =
        validate_with(&args.workflow, &args.packs.settings()).map_err(CliError::InvalidWorkflow)?;
    let rehearsal = Rehearsal::start().await?;
    args.env = rehearsal.env(std::mem::take(&mut args.env));
    args.state_dir = Some(rehearsal.state_dir());
    args.dry_run = None;
    args.rehearsal = true;
    let out = plan
        .root
        .workflow
        .inputs
        .contains_key(OUT_DIR_INPUT)
        .then(|| rehearsal.out_dir());
    if let Some(out) = &out {
        // The last `-i` wins over an earlier one and over `--inputs-file`.
        args.inputs
            .push(format!("{OUT_DIR_INPUT}={}", out.display()));
    }
    rehearsal.announce(out.as_deref());
    let ended = run_workflow(args, cancel).await;
    rehearsal.finish().await;
    ended
}

/// `auditflow sim`: serves the simulator until Ctrl-C, then prints what it saw.
pub(super) async fn sim(a: SimArgs) -> Result<(), CliError> {
    let timing = a.timing;
    let cfg = sim_config(a)?;
    let scale = cfg.time_scale;
    let stores = cfg.mailstore_stores.clone();
    let handle = auditflow_sim::start(cfg)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let key_env = sim_key_env(&handle).await?;
    print_sim_banner(&handle, timing, scale, &stores, &key_env);
    stop_signal().await;
    let stats = handle.stats.snapshot();
    // Open connections (a client's idle keep-alive) would hold a graceful shutdown for
    // seconds or for ever; give them a moment, then stop anyway.
    let _ = tokio::time::timeout(SIM_SHUTDOWN_GRACE, handle.shutdown()).await;
    crate::outln!(
        "{}",
        serde_json::to_string_pretty(&stats).unwrap_or_default()
    );
    Ok(())
}

/// How long `auditflow sim` lets open connections finish once asked to stop.
const SIM_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM (`kill`, `docker stop`, CI cancelling a
/// job): both stop the simulator cleanly.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Checks the flags of `auditflow sim` and builds the simulator's configuration.
fn sim_config(a: SimArgs) -> Result<auditflow_sim::SimConfig, CliError> {
    let latency = a
        .latency
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| CliError::Usage(format!("--latency: {e}")))?
        .unwrap_or(Duration::ZERO);
    let mimecast_rate_window = parse_duration(&a.mimecast_rate_window)
        .map_err(|e| CliError::Usage(format!("--mimecast-rate-window: {e}")))?;
    if a.mimecast_rate_limit == 0 {
        return Err(CliError::Usage(
            "--mimecast-rate-limit must be at least 1".to_string(),
        ));
    }
    for (name, rate) in [("--rate-429", a.rate_429), ("--rate-5xx", a.rate_5xx)] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(CliError::Usage(format!("{name} must be between 0 and 1")));
        }
    }
    if let Some(scale) = a.time_scale {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(CliError::Usage(format!(
                "--time-scale {scale}: give a positive factor, e.g. 3600 for one simulated hour per real second"
            )));
        }
    }
    let timing = match a.timing {
        SimTiming::Fast => Timing::Fast,
        SimTiming::Realistic => Timing::Realistic,
    };
    let mut cfg = auditflow_sim::SimConfig {
        mimecast_port: a.mimecast_port,
        mailstore_port: a.mailstore_port,
        google_port: a.google_port,
        faults: auditflow_sim::FaultConfig {
            latency,
            rate_429: a.rate_429,
            rate_5xx: a.rate_5xx,
            cut_downloads: a.cut_downloads,
            force_each_once: false,
            seed: a.seed,
            download_rate: None,
        },
        google_error_user: a.google_error_user,
        google_pending_polls: a.google_pending_polls,
        google_seed_history: !a.no_google_history,
        mailstore_keep_final_token: a.mailstore_keep_final_token,
        mimecast_rate_limit: a.mimecast_rate_limit,
        mimecast_rate_window,
        mailstore_tls: !a.plain_http,
        work_dir: a.work_dir,
        time_scale: timing.scale(a.time_scale),
        ..Default::default()
    };
    timing.apply(&mut cfg);
    Ok(cfg)
}

/// The addresses, files, timing and `export` block of a started simulator.
/// A throwaway key the simulator holds as its Google domain's uploaded key, written beside its
/// service-account key file: the Google exports decrypt with the printed environment alone
/// (no `keygen` and upload first, as against the real service).
async fn sim_key_env(handle: &auditflow_sim::SimHandle) -> Result<Vec<(String, String)>, CliError> {
    let dir = handle
        .google
        .service_account_key_file()
        .parent()
        .map_or_else(std::env::temp_dir, Path::to_path_buf)
        .join("pgp");
    let key = crate::rehearse::throwaway_key(&dir, handle).await?;
    Ok(key.env())
}

/// What exists in the simulator, for writing inputs without a guess.
fn print_sim_contents(handle: &auditflow_sim::SimHandle, stores: &[i64]) {
    let admin = &handle.credentials.google_admin_email;
    let domain = admin.rsplit_once('@').map_or(admin.as_str(), |(_, d)| d);
    crate::outln!("  google domain {domain} (admin {admin}): -i domain={domain}");
    let ids: Vec<String> = stores.iter().map(ToString::to_string).collect();
    crate::outln!("  mailstore store ids: {}", ids.join(", "));
}

fn print_sim_banner(
    handle: &auditflow_sim::SimHandle,
    timing: SimTiming,
    scale: f64,
    stores: &[i64],
    extra_env: &[(String, String)],
) {
    crate::outln!("auditflow simulator listening (Ctrl-C to stop)");
    crate::outln!("  mimecast   {}", handle.mimecast_url);
    crate::outln!("  mailstore  {}", handle.mailstore_url);
    crate::outln!(
        "  google     {}  (token endpoint {})",
        handle.google_url,
        handle.google_token_url
    );
    crate::outln!(
        "  google service-account key file: {}",
        handle.google.service_account_key_file().display()
    );
    match &handle.mailstore_cert {
        Some(c) => crate::outln!(
            "  mailstore certificate: {}\n    SHA-256 fingerprint {}",
            c.pem_file.display(),
            c.sha256
        ),
        None => crate::outln!("  mailstore: plain HTTP (--plain-http)"),
    }
    let timing = match timing {
        SimTiming::Fast => "fast",
        SimTiming::Realistic => "realistic",
    };
    crate::outln!("  timing: {timing}, time scale {scale} (simulated seconds per real second)");
    if let Some(accounts) = &handle.vault.accounts() {
        crate::outln!(
            "  vault accounts (others get an account exception and no mail): {}",
            accounts.join(", ")
        );
    }
    print_sim_contents(handle, stores);
    crate::outln!(
        "\nPoint the shipped workflows at it (these are throwaway simulator credentials):"
    );
    // Both Mimecast credential sets: a workflow that reads only one (siem-batch-events.yaml
    // reads API 2.0's) finds it; one that reads both uses API 2.0.
    let mut env: std::collections::BTreeMap<String, String> = handle.env().into_iter().collect();
    env.extend(handle.env_mimecast2());
    env.extend(extra_env.iter().cloned());
    if timing == "fast" {
        // Vendor processes end in seconds here: polls wait no longer than that, whatever the
        // workflow's interval (a rehearsal setting; the run warns while it is set).
        env.insert(
            crate::steps::poll::MAX_POLL_INTERVAL_VAR.to_string(),
            "1s".into(),
        );
    }
    for (k, v) in env {
        crate::outln!("export {k}='{v}'");
    }
    crate::outln!(
        "# Mimecast workflows that read both credential sets use API 2.0 (client id and secret); \
         unset MIMECAST_CLIENT_ID to rehearse API 1.0 signing"
    );
    crate::outln!(
        "# the simulator's domain already holds ${PUBLIC_KEY_VAR}: upload-public-key.yaml takes \
         -i public_key_file=\"${PUBLIC_KEY_VAR}\"; Google exports decrypt with AUDIT_PGP_SECRET_KEY"
    );
}
