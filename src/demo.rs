//! The end-to-end demo: the simulator in-process, a throwaway OpenPGP key, the shipped workflows.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::future::Future;

use auditflow_sim::{self as sim, FaultConfig, SimConfig, SimHandle};

/// How one workflow run of the demo ended, as the command line that ran it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayEnd {
    /// Every step succeeded (exit 0).
    Succeeded,
    /// A poll detached at `--max-wait` with the state saved (exit 75).
    Pending,
    /// The run failed (its error was printed by the command line).
    Failed,
}

impl std::fmt::Display for PlayEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PlayEnd::Succeeded => "success",
            PlayEnd::Pending => "pending (run again later)",
            PlayEnd::Failed => "failure",
        })
    }
}

/// One workflow run of the demo, as `auditflow run` is given it: the command line turns it
/// into its run arguments and runs it (the demo never calls back into the command line).
#[derive(Debug, Clone)]
pub struct PlayRun {
    /// The shipped workflow file.
    pub workflow: PathBuf,
    /// `-i NAME=VALUE` inputs.
    pub inputs: Vec<String>,
    /// `--max-wait`, when the play detaches a poll on purpose.
    pub max_wait: Option<String>,
    /// `--state-dir`: shared by every play, so the pending export resumes.
    pub state_dir: PathBuf,
    /// The environment the workflow sees (the simulator's, see [`simulator_env`]).
    pub env: BTreeMap<String, String>,
}

/// A play: its title, what to run, and how it should end.
struct Play {
    title: &'static str,
    workflow: PathBuf,
    inputs: Vec<String>,
    max_wait: Option<&'static str>,
    expect: PlayEnd,
}

/// Why the demo did not succeed. Every message names the file or part that failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The output directory cannot be made the demo's.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A directory of the simulator cannot be created.
    #[error("cannot create {}: {source}; check that the directory is writable", .path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The in-process simulator did not start.
    #[error("cannot start the simulator: {0}; check that this machine lets a process listen on 127.0.0.1")]
    Simulator(String),
    /// The throwaway key could not be made.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Some plays did not end as expected (their errors were printed as they ran).
    #[error("demo FAILED: {failed} workflow(s) failed")]
    Plays {
        /// Plays that ended otherwise than expected.
        failed: usize,
    },
    /// The Google exports left no mbox file.
    #[error("demo FAILED: the Google exports left no mbox file in {}", .out.display())]
    NoMbox {
        /// The demo's output directory.
        out: PathBuf,
    },
}

/// A generated key pair on disk.
pub struct DemoKey {
    /// The armored OpenPGP secret key (passphrase-protected).
    pub secret_key: PathBuf,
    /// The armored public key, as uploaded to Google.
    pub public_key: PathBuf,
    /// The throwaway passphrase protecting `secret_key`.
    pub passphrase: String,
}

/// The variable naming the public half of a throwaway key (the `public_key_file` input of
/// `upload-public-key.yaml`).
pub const PUBLIC_KEY_VAR: &str = "AUDIT_PGP_PUBLIC_KEY";

impl DemoKey {
    /// The variables the shipped workflows read the key from (`AUDIT_PGP_SECRET_KEY`,
    /// `AUDIT_PGP_PASSPHRASE`), and [`PUBLIC_KEY_VAR`].
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "AUDIT_PGP_SECRET_KEY".into(),
                self.secret_key.display().to_string(),
            ),
            (PUBLIC_KEY_VAR.into(), self.public_key.display().to_string()),
            ("AUDIT_PGP_PASSPHRASE".into(), self.passphrase.clone()),
        ]
    }
}

/// Generates an RSA key (Google requires RSA) protected by a random passphrase, and writes
/// the armored secret key (mode 0600) and public key into `dir`.
pub fn generate_key(dir: &Path, bits: u32) -> Result<DemoKey, KeyError> {
    std::fs::create_dir_all(dir).map_err(|source| KeyError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let passphrase = uuid::Uuid::new_v4().simple().to_string();
    let secret = crate::openpgp::generate::rsa_key(
        "auditflow demo <admin@example.com>",
        bits,
        Some(&passphrase),
    )?;
    let public = pgp::composed::SignedPublicKey::from(secret.clone());
    let armor = |which: &'static str| move |source| KeyError::Armor { which, source };
    let sec_text = secret
        .to_armored_string(Default::default())
        .map_err(armor("secret"))?;
    let pub_text = public
        .to_armored_string(Default::default())
        .map_err(armor("public"))?;
    let secret_key = dir.join("demo-secret-key.asc");
    let public_key = dir.join("demo-public-key.asc");
    crate::durable::write_private(&secret_key, sec_text.as_bytes())?;
    std::fs::write(&public_key, pub_text).map_err(|source| KeyError::WritePublic {
        path: public_key.clone(),
        source,
    })?;
    Ok(DemoKey {
        secret_key,
        public_key,
        passphrase,
    })
}

/// The environment a workflow sees against the simulator: `env` without any vendor or key
/// variable of the user's (real credentials never meet the simulator, and none is left for
/// a workflow to pick up), then the simulator's addresses and credentials and `key`.
pub fn simulator_env(
    mut env: BTreeMap<String, String>,
    handle: &sim::SimHandle,
    key: &DemoKey,
) -> BTreeMap<String, String> {
    env.retain(|k, _| {
        !(k.starts_with("MIMECAST_")
            || k.starts_with("MAILSTORE_")
            || k.starts_with("GOOGLE_")
            || k.starts_with("AUDIT_PGP_"))
    });
    env.extend(handle.env());
    env.extend(key.env());
    env
}

/// Why the throwaway key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Its directory cannot be created.
    #[error("cannot create {}: {source}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The key could not be generated.
    #[error(transparent)]
    Generate(#[from] crate::openpgp::generate::KeygenError),
    /// A key could not be armored.
    #[error("cannot armor the {which} key: {source}")]
    Armor {
        /// `secret` or `public`.
        which: &'static str,
        /// Why, from rPGP.
        source: pgp::errors::Error,
    },
    /// The secret key could not be written.
    #[error(transparent)]
    WriteSecret(#[from] crate::durable::WriteError),
    /// The public key could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    WritePublic {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The task making it failed.
    #[error("key generation task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Where the shipped workflows are: `./workflows`, else beside the executable's source tree.
fn workflows_dir() -> PathBuf {
    let here = PathBuf::from("workflows");
    if here.is_dir() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workflows")
}

/// Marks a directory as the demo's own, so a later demo may replace it.
const MARKER: &str = ".auditflow-demo";

/// Makes `out` an empty directory of the demo's: an earlier demo's output is replaced, but a
/// directory with anything else in it is the user's and is left alone.
fn clear_previous(out: &Path) -> Result<(), OutputError> {
    let ours = out.join(MARKER).exists();
    let empty = std::fs::read_dir(out).map_or(true, |mut d| d.next().is_none());
    let path = out.to_path_buf();
    if out.exists() && !ours && !empty {
        return Err(OutputError::NotTheDemos { path });
    }
    if ours {
        std::fs::remove_dir_all(out).map_err(|source| OutputError::Clear {
            path: path.clone(),
            source,
        })?;
    }
    crate::durable::create_private_dir(out)
        .and_then(|()| std::fs::write(out.join(MARKER), b"written by auditflow demo\n"))
        .map_err(|source| OutputError::Create { path, source })
}

/// Why the output directory cannot be made the demo's.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// It holds something else.
    #[error("{} exists and is not an earlier demo's output; the demo replaces its output directory, so pick another with --out", .path.display())]
    NotTheDemos {
        /// The directory.
        path: PathBuf,
    },
    /// An earlier demo's output cannot be removed.
    #[error("cannot clear {}: {source}", .path.display())]
    Clear {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// It cannot be created (or marked as the demo's).
    #[error("cannot create {}: {source}", .path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Runs the demo: starts the simulator and a throwaway key, then hands each play to
/// `run_play` (the command line, which prints how it ended) and compares how it ended.
pub async fn run<F, Fut>(out: &Path, mut run_play: F) -> Result<(), DemoError>
where
    F: FnMut(PlayRun) -> Fut,
    Fut: Future<Output = PlayEnd>,
{
    crate::outln!(
        "auditflow demo: simulated Mimecast, MailStore, Google Email Audit and Google Vault on loopback."
    );
    crate::outln!(
        "Faults are injected on purpose (a 429 and a 503 per vendor, one cut download).\n"
    );
    clear_previous(out).map_err(DemoError::Output)?;
    let handle = start_simulator(out).await?;
    let key = throwaway_key(out).await?;
    let env = simulator_env(std::env::vars().collect(), &handle, &key);
    let mut failed = 0;
    for play in plays(&workflows_dir(), out, &key) {
        announce(&play);
        let ended = run_play(PlayRun {
            workflow: play.workflow,
            inputs: play.inputs,
            max_wait: play.max_wait.map(str::to_string),
            state_dir: out.join(".auditflow"),
            env: env.clone(),
        })
        .await;
        crate::outln!();
        if ended != play.expect {
            crate::errln!("   expected {}, got {ended}", play.expect);
            failed += 1;
        }
    }
    print_stats(&handle);
    handle.shutdown().await;
    conclude(out, failed)
}

/// The simulator with the demo's faults, its files under `out/.sim`.
async fn start_simulator(out: &Path) -> Result<SimHandle, DemoError> {
    let work = out.join(".sim");
    let cfg = SimConfig {
        faults: FaultConfig {
            force_each_once: true,
            cut_downloads: 1,
            seed: 7,
            ..FaultConfig::default()
        },
        mailstore_failing_stores: vec![],
        google_pending_polls: 3,
        work_dir: Some(work.clone()),
        ..SimConfig::default()
    };
    std::fs::create_dir_all(&work).map_err(|source| DemoError::Create { path: work, source })?;
    let handle = sim::start(cfg)
        .await
        .map_err(|e| DemoError::Simulator(e.to_string()))?;
    crate::outln!(
        "simulator: mimecast {}  mailstore {}  google {}  vault {}  storage {}",
        handle.mimecast_url,
        handle.mailstore_url,
        handle.google_url,
        handle.vault_url,
        handle.storage_url
    );
    if let Some(c) = &handle.mailstore_cert {
        crate::outln!(
            "MailStore over HTTPS, its self-signed certificate pinned as the connection's ca_file: {} (SHA-256 {})",
            c.pem_file.display(),
            c.sha256
        );
    }
    Ok(handle)
}

/// A throwaway RSA-3072 key under `out/keys`.
async fn throwaway_key(out: &Path) -> Result<DemoKey, DemoError> {
    let dir = out.join("keys");
    let key = tokio::task::spawn_blocking(move || generate_key(&dir, 3072))
        .await
        .map_err(KeyError::Task)??;
    crate::outln!(
        "generated a throwaway RSA-3072 key: {}\n",
        key.public_key.display()
    );
    Ok(key)
}

/// The shipped workflows the demo runs, in order, with their inputs.
fn plays(wf: &Path, out: &Path, key: &DemoKey) -> Vec<Play> {
    let o = |s: &str| out.join(s).display().to_string();
    let export_inputs = vec![
        "domain=example.com".to_string(),
        "user=alice".into(),
        "poll_interval=200ms".into(),
        format!("out_dir={}", o("google")),
    ];
    let play = |title, file: &str, inputs, max_wait, expect| Play {
        title,
        workflow: wf.join(file),
        inputs,
        max_wait,
        expect,
    };
    vec![
        play(
            "Mimecast: every page of the processing queue",
            "mimecast/find-processing-messages.yaml",
            vec![format!("out_dir={}", o("mimecast"))],
            None,
            PlayEnd::Succeeded,
        ),
        play(
            "MailStore: verify every store, following the long-running processes",
            "mailstore/verify-stores.yaml",
            vec![
                "store_ids=1,2,3".into(),
                "poll_interval=200ms".into(),
                format!("out_dir={}", o("mailstore")),
            ],
            None,
            PlayEnd::Succeeded,
        ),
        play(
            "Google: upload the domain's public key",
            "google/upload-public-key.yaml",
            vec![
                "domain=example.com".into(),
                format!("public_key_file={}", key.public_key.display()),
                format!("out_dir={}", o("google")),
            ],
            None,
            PlayEnd::Succeeded,
        ),
        play(
            "Google: mailbox export as a scheduled CI job would run it: create, poll until --max-wait, save state, exit 75",
            "google/mailbox-export.yaml",
            export_inputs.clone(),
            Some("300ms"),
            PlayEnd::Pending,
        ),
        play(
            "Google: the next scheduled job resumes the same run: polls on, downloads, decrypts to mbox",
            "google/mailbox-export.yaml",
            export_inputs,
            None,
            PlayEnd::Succeeded,
        ),
        play(
            "Google Vault (the Audit API's successor): a matter, a mail export of two accounts, Cloud Storage downloads checked by size and MD5, mbox extracted",
            "google/vault-mail-export.yaml",
            vec![
                "accounts=alice@example.com,bob@example.com".into(),
                "export_name=demo-vault-export".into(),
                "matter_name=auditflow demo".into(),
                "poll_interval=200ms".into(),
                format!("out_dir={}", o("vault")),
            ],
            None,
            PlayEnd::Succeeded,
        ),
    ]
}

/// The play's title and the command a user would type for it.
fn announce(play: &Play) {
    crate::outln!(
        "── {}\n   auditflow run {} {}{}",
        play.title,
        play.workflow.display(),
        play.inputs
            .iter()
            .map(|i| format!("-i {i}"))
            .collect::<Vec<_>>()
            .join(" "),
        play.max_wait
            .map(|m| format!(" --max-wait {m}"))
            .unwrap_or_default()
    );
}

fn print_stats(handle: &SimHandle) {
    let stats = handle.stats.snapshot();
    crate::outln!(
        "simulator saw {} requests: {} injected 429s, {} injected 5xx, {} cut downloads; {} bad signatures, {} wrong statusVersions, {} unauthenticated",
        stats.requests,
        stats.injected_429,
        stats.injected_5xx,
        stats.injected_cuts,
        stats.bad_signatures,
        stats.wrong_status_versions,
        stats.unauthenticated
    );
}

/// Success when every play ended as expected and the exports left mbox files (listed).
fn conclude(out: &Path, failed: usize) -> Result<(), DemoError> {
    if failed > 0 {
        return Err(DemoError::Plays { failed });
    }
    let mut mboxes = list_files(&out.join("google"), "mbox");
    mboxes.extend(list_files(&out.join("vault"), "mbox"));
    if mboxes.is_empty() {
        return Err(DemoError::NoMbox {
            out: out.to_path_buf(),
        });
    }
    crate::outln!("\ndemo succeeded; results in {}:", out.display());
    for m in mboxes {
        crate::outln!("  {}", m.display());
    }
    Ok(())
}

fn list_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                v.extend(list_files(&p, ext));
            } else if p.extension().is_some_and(|x| x == ext) {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}
