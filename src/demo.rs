//! The end-to-end demo: the simulator in-process, a throwaway OpenPGP key, the shipped workflows.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::cli::{exit, LogFormat, RunArgs};
use crate::sim::{self, FaultConfig, SimConfig};

/// One demo run: title, workflow, inputs, `--max-wait`, expected exit code.
type Play<'a> = (&'a str, PathBuf, Vec<String>, Option<&'a str>, u8);

/// A generated key pair on disk.
pub struct DemoKey {
    /// The armored OpenPGP secret key (passphrase-protected).
    pub secret_key: PathBuf,
    /// The armored public key, as uploaded to Google.
    pub public_key: PathBuf,
    /// The throwaway passphrase protecting `secret_key`.
    pub passphrase: String,
}

/// Generates an RSA key (Google requires RSA) protected by a random passphrase, and writes
/// the armored secret key (mode 0600) and public key into `dir`.
pub fn generate_key(dir: &Path, bits: u32) -> Result<DemoKey, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let passphrase = uuid::Uuid::new_v4().simple().to_string();
    let secret = crate::openpgp::generate::rsa_key(
        "auditflow demo <admin@example.com>",
        bits,
        Some(&passphrase),
    )
    .map_err(|e| e.to_string())?;
    let public = pgp::composed::SignedPublicKey::from(secret.clone());
    let sec_text = secret
        .to_armored_string(Default::default())
        .map_err(|e| format!("cannot armor the secret key: {e}"))?;
    let pub_text = public
        .to_armored_string(Default::default())
        .map_err(|e| format!("cannot armor the public key: {e}"))?;
    let secret_key = dir.join("demo-secret-key.asc");
    let public_key = dir.join("demo-public-key.asc");
    write_private(&secret_key, sec_text.as_bytes())?;
    std::fs::write(&public_key, pub_text)
        .map_err(|e| format!("cannot write {}: {e}", public_key.display()))?;
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
    env.insert(
        "AUDIT_PGP_SECRET_KEY".into(),
        key.secret_key.display().to_string(),
    );
    env.insert("AUDIT_PGP_PASSPHRASE".into(), key.passphrase.clone());
    env
}

/// Writes a file readable by its owner only (mode 0600 from creation, renamed when complete).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    crate::durable::write_private(path, bytes).map_err(|e| e.to_string())
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
fn clear_previous(out: &Path) -> Result<(), String> {
    let ours = out.join(MARKER).exists();
    let empty = std::fs::read_dir(out).map_or(true, |mut d| d.next().is_none());
    if out.exists() && !ours && !empty {
        return Err(format!(
            "{} exists and is not an earlier demo's output; the demo replaces its output \
             directory, so pick another with --out",
            out.display()
        ));
    }
    if ours {
        std::fs::remove_dir_all(out).map_err(|e| format!("cannot clear {}: {e}", out.display()))?;
    }
    crate::durable::create_private_dir(out)
        .and_then(|()| std::fs::write(out.join(MARKER), b"written by auditflow demo\n"))
        .map_err(|e| format!("cannot create {}: {e}", out.display()))
}

/// Runs the demo; returns the exit code.
pub async fn run(out: &Path, cancel: CancellationToken) -> u8 {
    crate::outln!(
        "auditflow demo: simulated Mimecast, MailStore, Google Email Audit and Google Vault on loopback."
    );
    crate::outln!(
        "Faults are injected on purpose (a 429 and a 503 per vendor, one cut download).\n"
    );
    if let Err(e) = clear_previous(out) {
        crate::errln!("error: {e}");
        return exit::FAILED;
    }
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
    if let Err(e) = std::fs::create_dir_all(&work) {
        crate::errln!("error: cannot create {}: {e}", work.display());
        return exit::FAILED;
    }
    let handle = match sim::start(cfg).await {
        Ok(h) => h,
        Err(e) => {
            crate::errln!("error: cannot start the simulator: {e}");
            return exit::FAILED;
        }
    };
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
    let key = match tokio::task::spawn_blocking({
        let dir = out.join("keys");
        move || generate_key(&dir, 3072)
    })
    .await
    {
        Ok(Ok(k)) => k,
        Ok(Err(e)) => {
            crate::errln!("error: {e}");
            return exit::FAILED;
        }
        Err(e) => {
            crate::errln!("error: key generation task failed: {e}");
            return exit::FAILED;
        }
    };
    crate::outln!(
        "generated a throwaway RSA-3072 key: {}\n",
        key.public_key.display()
    );

    let env = simulator_env(std::env::vars().collect(), &handle, &key);

    let wf = workflows_dir();
    let o = |s: &str| out.join(s).display().to_string();
    let export_inputs = vec![
        "domain=example.com".to_string(),
        "user=alice".into(),
        "poll_interval=200ms".into(),
        format!("out_dir={}", o("google")),
    ];
    let plays: Vec<Play> = vec![
        (
            "Mimecast: every page of the processing queue",
            wf.join("mimecast/find-processing-messages.yaml"),
            vec![format!("out_dir={}", o("mimecast"))],
            None,
            exit::OK,
        ),
        (
            "MailStore: verify every store, following the long-running processes",
            wf.join("mailstore/verify-stores.yaml"),
            vec![
                "store_ids=1,2,3".into(),
                "poll_interval=200ms".into(),
                format!("out_dir={}", o("mailstore")),
            ],
            None,
            exit::OK,
        ),
        (
            "Google: upload the domain's public key",
            wf.join("google/upload-public-key.yaml"),
            vec![
                "domain=example.com".into(),
                format!("public_key_file={}", key.public_key.display()),
                format!("out_dir={}", o("google")),
            ],
            None,
            exit::OK,
        ),
        (
            "Google: mailbox export as a scheduled CI job would run it: create, poll until --max-wait, save state, exit 75",
            wf.join("google/mailbox-export.yaml"),
            export_inputs.clone(),
            Some("300ms"),
            exit::PENDING,
        ),
        (
            "Google: the next scheduled job resumes the same run: polls on, downloads, decrypts to mbox",
            wf.join("google/mailbox-export.yaml"),
            export_inputs,
            None,
            exit::OK,
        ),
        (
            "Google Vault (the Audit API's successor): a matter, a mail export of two accounts, Cloud Storage downloads checked by size and MD5, mbox extracted",
            wf.join("google/vault-mail-export.yaml"),
            vec![
                "accounts=alice@example.com,bob@example.com".into(),
                "export_name=demo-vault-export".into(),
                "matter_name=auditflow demo".into(),
                "poll_interval=200ms".into(),
                format!("out_dir={}", o("vault")),
            ],
            None,
            exit::OK,
        ),
    ];
    let mut failed = 0;
    for (title, file, inputs, max_wait, expected) in plays {
        crate::outln!(
            "── {title}\n   auditflow run {} {}{}",
            file.display(),
            inputs
                .iter()
                .map(|i| format!("-i {i}"))
                .collect::<Vec<_>>()
                .join(" "),
            max_wait
                .map(|m| format!(" --max-wait {m}"))
                .unwrap_or_default()
        );
        let code = crate::cli::run(
            RunArgs {
                state_dir: Some(out.join(".auditflow")),
                state: None,
                workflow: file,
                inputs,
                inputs_file: None,
                report_json: None,
                junit: None,
                sign_key: None,
                report_html: None,
                report_md: None,
                sign_passphrase_env: "AUDIT_SIGN_PASSPHRASE".into(),
                dry_run: None,
                max_wait: max_wait.map(str::to_string),
                fresh: false,
                resume: None,
                overwrite: false,
                shard: None,
                log_format: LogFormat::Human,
                verbose: false,
                packs: Default::default(),
                env: env.clone(),
                rehearsal: true,
            },
            cancel.clone(),
        )
        .await;
        crate::outln!();
        if code != expected {
            crate::errln!("   expected exit {expected}, got {code}");
            failed += 1;
        }
    }
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
    handle.shutdown().await;
    let mut mboxes = list_files(&out.join("google"), "mbox");
    mboxes.extend(list_files(&out.join("vault"), "mbox"));
    if failed == 0 && !mboxes.is_empty() {
        crate::outln!("\ndemo succeeded; results in {}:", out.display());
        for m in mboxes {
            crate::outln!("  {}", m.display());
        }
        exit::OK
    } else {
        crate::errln!("\ndemo FAILED: {failed} workflow(s) failed");
        exit::FAILED
    }
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
