//! `run --dry-run=sim`: one workflow rehearsed against the built-in simulator, in a scratch directory, with nothing leaving the machine.
//!
//! A dry run sends nothing, so it cannot show what answers make of a workflow: pages, vendor
//! processes, exports that take several polls, downloads and their decryption. The demo runs
//! the shipped workflows with fixed inputs. A rehearsal runs the user's own workflow and
//! inputs through the real engine against the simulator's vendor-faithful servers. Four
//! things set it apart from a real run:
//!
//! - every connection reaches loopback addresses only, so a workflow that names a vendor URL
//!   directly gets an error, never an answer from production;
//! - none of the user's vendor or key variables is passed on: the simulator's credentials
//!   and a throwaway OpenPGP key (taken by the simulator as its Google domain's uploaded key)
//!   stand in for them;
//! - poll waits are cut to a second (the simulator's fast timing ends a vendor process in a
//!   few polls, whatever the interval);
//! - state and outputs go to a new scratch directory: `--state-dir` is replaced, and an
//!   `out_dir` input (the shipped workflows' convention) is pointed into it. Paths named by
//!   other inputs are used as given (the overwrite guard still protects files found there).
use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::cli::{run_workflow, CliError, RunArgs};
use crate::demo::{generate_key, simulator_env, DemoKey};
use crate::sim::{self, SimConfig, SimHandle};
use crate::workflow::validate::validate_with;

/// The input the shipped workflows write their files under.
const OUT_DIR_INPUT: &str = "out_dir";

/// Rehearses `args.workflow` against the simulator and ends as the run ended (exit 0, 1,
/// 75...), with the scratch directory named on stderr.
pub async fn run(mut args: RunArgs, cancel: CancellationToken) -> Result<(), CliError> {
    // An invalid workflow fails before anything is started.
    let plan =
        validate_with(&args.workflow, &args.packs.settings()).map_err(CliError::InvalidWorkflow)?;
    let scratch = tempfile::Builder::new()
        .prefix("auditflow-rehearsal-")
        .tempdir()
        .map_err(|e| {
            CliError::Failed(format!(
                "cannot create the rehearsal's scratch directory in {}: {e}; set TMPDIR to a \
                 writable directory",
                std::env::temp_dir().display()
            ))
        })?
        .keep();
    let handle = sim::start(SimConfig {
        work_dir: Some(scratch.join("sim")),
        ..SimConfig::default()
    })
    .await
    .map_err(|e| {
        CliError::Failed(format!(
            "cannot start the built-in simulator for the rehearsal: {e}; check that this \
             machine lets a process listen on 127.0.0.1, or rehearse against `auditflow sim` \
             started in another shell"
        ))
    })?;
    let key = throwaway_key(&scratch.join("key"), &handle).await?;

    args.env = simulator_env(std::mem::take(&mut args.env), &handle, &key);
    args.state_dir = Some(scratch.join("state"));
    args.dry_run = None;
    args.rehearsal = true;
    let out = plan
        .root
        .workflow
        .inputs
        .contains_key(OUT_DIR_INPUT)
        .then(|| scratch.join("out"));
    if let Some(out) = &out {
        // The last `-i` wins over an earlier one and over `--inputs-file`.
        args.inputs
            .push(format!("{OUT_DIR_INPUT}={}", out.display()));
    }
    announce(&scratch, out.as_deref(), &handle);
    let ended = run_workflow(args, cancel).await;
    let stats = handle.stats.snapshot();
    crate::errln!(
        "rehearsal: the simulator saw {} requests; state and files are in {}",
        stats.requests,
        scratch.display()
    );
    handle.shutdown().await;
    ended
}

/// A throwaway RSA key, which the simulator takes as its Google domain's uploaded key (also
/// made by `auditflow sim`, which prints it as `AUDIT_PGP_SECRET_KEY`).
pub(crate) async fn throwaway_key(dir: &Path, handle: &SimHandle) -> Result<DemoKey, CliError> {
    let at = dir.to_path_buf();
    let key = tokio::task::spawn_blocking(move || generate_key(&at, 3072))
        .await
        .map_err(|e| CliError::Failed(format!("key generation failed: {e}")))?
        .map_err(|e| {
            CliError::Failed(format!(
                "cannot make the rehearsal's throwaway key in {}: {e}; check that the \
                 directory is writable and has free space",
                dir.display()
            ))
        })?;
    let armored = std::fs::read_to_string(&key.public_key)
        .map_err(|e| CliError::Failed(format!("{}: {e}", key.public_key.display())))?;
    handle
        .google
        .accept_public_key(&google_domain(handle), &armored)
        .map_err(|e| CliError::Failed(format!("the simulator refused the throwaway key: {e}")))?;
    Ok(key)
}

/// The domain of the simulator's Google admin (`example.com`).
fn google_domain(handle: &SimHandle) -> String {
    let admin = &handle.credentials.google_admin_email;
    admin
        .rsplit_once('@')
        .map_or_else(|| admin.clone(), |(_, d)| d.to_string())
}

/// What the rehearsal is, on stderr (stdout stays the run's, JSON lines included).
fn announce(scratch: &Path, out: Option<&Path>, handle: &SimHandle) {
    crate::errln!(
        "rehearsal against the built-in simulator (--dry-run=sim): requests go to loopback \
         addresses only, your vendor and key variables are not used, polls wait {} at most, \
         state is kept in {}",
        crate::workflow::duration::format_duration(crate::engine::REHEARSAL_POLL_WAIT),
        scratch.join("state").display()
    );
    if let Some(out) = out {
        crate::errln!("  the `{OUT_DIR_INPUT}` input is set to {}", out.display());
    }
    crate::errln!(
        "  Google inputs name the domain {} (the simulator's admin is {})",
        google_domain(handle),
        handle.credentials.google_admin_email
    );
}
