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
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::demo::{generate_key, simulator_env, DemoKey};
use auditflow_sim::{self as sim, SimConfig, SimHandle};

/// The input the shipped workflows write their files under.
pub const OUT_DIR_INPUT: &str = "out_dir";

/// Why a rehearsal could not be set up. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RehearsalError {
    /// The scratch directory cannot be created.
    #[error("cannot create the rehearsal's scratch directory in {}: {source}; set TMPDIR to a writable directory", .dir.display())]
    Scratch {
        /// Where it was to be created.
        dir: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// The in-process simulator did not start.
    #[error("cannot start the built-in simulator for the rehearsal: {0}; check that this machine lets a process listen on 127.0.0.1, or rehearse against `auditflow sim` started in another shell")]
    Simulator(String),
    /// The key generation task ended abnormally.
    #[error("key generation failed: {0}")]
    KeyTask(String),
    /// The throwaway key could not be made.
    #[error("cannot make the rehearsal's throwaway key in {}: {source}; check that the directory is writable and has free space", .dir.display())]
    Key {
        /// Where the key was to be written.
        dir: PathBuf,
        /// Why not (told in the message).
        #[source]
        source: crate::demo::KeyError,
    },
    /// The public key just written cannot be read back.
    #[error("{}: {source}", .path.display())]
    ReadKey {
        /// The armored public key file.
        path: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// The simulator did not take the key as its Google domain's.
    #[error("the simulator refused the throwaway key: {0}")]
    Refused(auditflow_sim::google::KeyRefused),
}

/// Whether a rehearsal gives the simulator's Mimecast API 2.0 credentials too: unless the
/// user's environment holds API 1.0 keys only, so that the rehearsal signs the way the user's
/// own runs do. A workflow that reads both sets uses API 2.0 when both are given; one that
/// reads only API 2.0's (siem-batch-events.yaml) needs them.
fn wants_mimecast_api2(env: &BTreeMap<String, String>) -> bool {
    let set = |k: &str| env.get(k).is_some_and(|v| !v.trim().is_empty());
    set("MIMECAST_CLIENT_ID") || !set("MIMECAST_ACCESS_KEY")
}

/// A rehearsal in progress: its scratch directory, the simulator and the throwaway key. The
/// command line rewrites its run arguments with [`Rehearsal::env`], [`Rehearsal::state_dir`]
/// and [`Rehearsal::out_dir`], runs the workflow, then calls [`Rehearsal::finish`].
pub struct Rehearsal {
    scratch: PathBuf,
    handle: SimHandle,
    key: DemoKey,
}

impl Rehearsal {
    /// A new scratch directory, the simulator started in it, and a throwaway key it holds.
    pub async fn start() -> Result<Self, RehearsalError> {
        let scratch = tempfile::Builder::new()
            .prefix("auditflow-rehearsal-")
            .tempdir()
            .map_err(|source| RehearsalError::Scratch {
                dir: std::env::temp_dir(),
                source,
            })?
            .keep();
        let handle = sim::start(SimConfig {
            work_dir: Some(scratch.join("sim")),
            ..SimConfig::default()
        })
        .await
        .map_err(|e| RehearsalError::Simulator(e.to_string()))?;
        let key = throwaway_key(&scratch.join("key"), &handle).await?;
        Ok(Rehearsal {
            scratch,
            handle,
            key,
        })
    }

    /// The run's environment: `env` without the user's vendor and key variables, with the
    /// simulator's and the throwaway key's.
    pub fn env(&self, env: BTreeMap<String, String>) -> BTreeMap<String, String> {
        let api2 = wants_mimecast_api2(&env);
        let mut env = simulator_env(env, &self.handle, &self.key);
        if api2 {
            env.extend(self.handle.env_mimecast2());
        }
        env
    }

    /// The state directory, inside the scratch directory (`--state-dir` is replaced).
    pub fn state_dir(&self) -> PathBuf {
        self.scratch.join("state")
    }

    /// Where the `out_dir` input points, inside the scratch directory.
    pub fn out_dir(&self) -> PathBuf {
        self.scratch.join("out")
    }

    /// What the rehearsal is, on stderr (stdout stays the run's, JSON lines included).
    pub fn announce(&self, out: Option<&Path>) {
        crate::errln!(
            "rehearsal against the built-in simulator (--dry-run=sim): requests go to loopback \
             addresses only, your vendor and key variables are not used, polls wait {} at most, \
             state is kept in {}",
            crate::workflow::duration::format_duration(crate::engine::REHEARSAL_POLL_WAIT),
            self.state_dir().display()
        );
        if let Some(out) = out {
            crate::errln!("  the `{OUT_DIR_INPUT}` input is set to {}", out.display());
        }
        crate::errln!(
            "  Google inputs name the domain {} (the simulator's admin is {})",
            google_domain(&self.handle),
            self.handle.credentials.google_admin_email
        );
    }

    /// Names what the simulator saw and where the scratch directory is, and stops it.
    pub async fn finish(self) {
        let stats = self.handle.stats.snapshot();
        crate::errln!(
            "rehearsal: the simulator saw {} request{}; state and files are in {}",
            stats.requests,
            if stats.requests == 1 { "" } else { "s" },
            self.scratch.display()
        );
        self.handle.shutdown().await;
    }
}

/// A throwaway RSA key, which the simulator takes as its Google domain's uploaded key (also
/// made by `auditflow sim`, which prints it as `AUDIT_PGP_SECRET_KEY`).
pub async fn throwaway_key(dir: &Path, handle: &SimHandle) -> Result<DemoKey, RehearsalError> {
    let at = dir.to_path_buf();
    let key = tokio::task::spawn_blocking(move || generate_key(&at, 3072))
        .await
        .map_err(|e| RehearsalError::KeyTask(e.to_string()))?
        .map_err(|source| RehearsalError::Key {
            dir: dir.to_path_buf(),
            source,
        })?;
    let armored =
        std::fs::read_to_string(&key.public_key).map_err(|source| RehearsalError::ReadKey {
            path: key.public_key.clone(),
            source,
        })?;
    handle
        .google
        .accept_public_key(&google_domain(handle), &armored)
        .map_err(RehearsalError::Refused)?;
    Ok(key)
}

/// The domain of the simulator's Google admin (`example.com`).
fn google_domain(handle: &SimHandle) -> String {
    let admin = &handle.credentials.google_admin_email;
    admin
        .rsplit_once('@')
        .map_or_else(|| admin.clone(), |(_, d)| d.to_string())
}
