//! `auditflow sim` through the real binary: MailStore over HTTPS with the certificate it prints
//! (issue 12 item 1), `--plain-http`, and the time scale of `--timing realistic` (item 4).
use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::common::{auditflow_async, command, text, wf, Dir};

/// A running `auditflow sim` and what it printed up to its environment block.
struct Sim {
    child: Child,
    printed: String,
    env: BTreeMap<String, String>,
}

/// Starts `auditflow sim ARGS` and reads its banner up to the last `export` line.
async fn start(args: &[&str], cwd: &Path) -> Sim {
    let mut all = vec!["sim"];
    all.extend_from_slice(args);
    let mut child = command(&all, cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("auditflow sim starts");
    let stdout = child.stdout.take().expect("stdout");
    let printed = tokio::task::spawn_blocking(move || {
        let mut printed = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            printed.push_str(&line);
            printed.push('\n');
            // The block is sorted; this is its last line.
            if line.starts_with("export MIMECAST_SECRET_KEY=") {
                break;
            }
        }
        printed
    })
    .await
    .expect("read the banner");
    let env = printed
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect();
    Sim {
        child,
        printed,
        env,
    }
}

impl Sim {
    fn var(&self, k: &str) -> &str {
        self.env
            .get(k)
            .unwrap_or_else(|| panic!("{k} not printed:\n{}", self.printed))
    }

    fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Ctrl-C, then the exit code.
    async fn stop(self) -> Option<i32> {
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) with a child's pid and SIGINT has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let mut child = self.child;
        tokio::task::spawn_blocking(move || child.wait().expect("sim ends").code())
            .await
            .expect("waited")
    }
}

/// The DER of the certificate in a PEM file, decoded without the simulator's code.
fn pem_der(path: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(path).expect("PEM file");
    assert!(!text.contains("PRIVATE KEY"), "the key must not be written");
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64")
}

/// `openssl x509 -fingerprint -sha256` style, as the client computes it (written apart from
/// the simulator's, which this checks).
fn openssl_style_sha256(der: &[u8]) -> String {
    auditflow::vendors::tls::fingerprint(der)
}

async fn run_workflow(sim: &Sim, workflow: &str, inputs: &[String], cwd: &Path) -> (i32, String) {
    let mut args = vec!["run".to_string(), wf(workflow)];
    for i in inputs {
        args.extend(["-i".to_string(), i.clone()]);
    }
    let out = auditflow_async(args, sim.env_pairs(), cwd.to_path_buf()).await;
    let (o, e) = text(&out);
    (out.status.code().unwrap_or(-1), format!("{o}\n{e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn sim_serves_mailstore_over_https_with_the_certificate_it_prints() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let d = Dir::new();
    let work = d.path().join("work");
    let sim = start(&["--work-dir", &work.display().to_string()], d.path()).await;
    let base = sim.var("MAILSTORE_BASE_URL").to_string();
    assert!(base.starts_with("https://127.0.0.1:"), "{}", sim.printed);
    let ca = sim.var("MAILSTORE_CA_FILE").to_string();
    assert_eq!(Path::new(&ca).parent(), Some(work.as_path()));
    let pin = sim.var("MAILSTORE_TLS_PIN").to_string();
    assert_eq!(pin, openssl_style_sha256(&pem_der(&ca)));
    assert!(sim
        .printed
        .contains(&format!("mailstore certificate: {ca}")));
    assert!(sim.printed.contains(&pin));
    // The rest stays plain HTTP.
    assert!(sim.var("MIMECAST_BASE_URL").starts_with("http://"));
    assert!(sim.var("GOOGLE_AUDIT_BASE_URL").starts_with("http://"));

    // The shipped workflows go through TLS with that certificate as their ca_file.
    let out = d.path().join("out");
    let o = format!("out_dir={}", out.display());
    let (code, log) = run_workflow(
        &sim,
        "mailstore/server-info.yaml",
        std::slice::from_ref(&o),
        d.path(),
    )
    .await;
    assert_eq!(code, 0, "{log}");
    let (code, log) = run_workflow(
        &sim,
        "mailstore/verify-stores.yaml",
        &[o, "store_ids=1,2".into(), "poll_interval=200ms".into()],
        d.path(),
    )
    .await;
    assert_eq!(code, 0, "{log}");
    assert!(out.join("verify-store-2.json").is_file());

    // A client that trusts only that file is served; one that does not is refused.
    let pem = std::fs::read(&ca).expect("ca");
    let trusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("PEM")])
        .build()
        .expect("client");
    let url = format!("{base}/api/invoke/GetServerInfo");
    let r = trusting
        .post(&url)
        .basic_auth(
            sim.var("MAILSTORE_USERNAME"),
            Some(sim.var("MAILSTORE_PASSWORD")),
        )
        .send()
        .await
        .expect("trusted");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let stranger = reqwest::Client::builder()
        .tls_certs_only([])
        .build()
        .expect("client");
    let err = stranger.post(&url).send().await.expect_err("untrusted");
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(sim.stop().await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_keeps_the_old_behaviour_and_an_unset_ca_file_means_none() {
    let d = Dir::new();
    let sim = start(&["--plain-http"], d.path()).await;
    assert!(sim.var("MAILSTORE_BASE_URL").starts_with("http://"));
    assert!(
        !sim.env.contains_key("MAILSTORE_CA_FILE"),
        "{}",
        sim.printed
    );
    assert!(!sim.env.contains_key("MAILSTORE_TLS_PIN"));
    assert!(sim.printed.contains("plain HTTP"));
    let o = format!("out_dir={}", d.path().join("out").display());
    let (code, log) = run_workflow(&sim, "mailstore/server-info.yaml", &[o], d.path()).await;
    assert_eq!(code, 0, "{log}");
    assert_eq!(sim.stop().await, Some(0));
}

/// Reads `name='X' value='Y'` from an Atom answer.
fn prop(doc: &str, name: &str) -> Option<String> {
    let needle = format!("name='{name}' value='");
    let start = doc.find(&needle)? + needle.len();
    let end = doc[start..].find('\'')? + start;
    Some(doc[start..end].to_string())
}

fn atom_time(doc: &str, name: &str) -> chrono::NaiveDateTime {
    let v = prop(doc, name).unwrap_or_else(|| panic!("no {name}: {doc}"));
    chrono::NaiveDateTime::parse_from_str(&v, "%Y-%m-%d %H:%M").expect("date")
}

#[tokio::test(flavor = "multi_thread")]
async fn realistic_timing_makes_exports_take_hours_of_simulated_time() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let d = Dir::new();
    // 36000x: the realistic 6-hour export takes 0.6 s of real time.
    let sim = start(
        &[
            "--timing",
            "realistic",
            "--time-scale",
            "36000",
            "--no-google-history",
        ],
        d.path(),
    )
    .await;
    assert!(sim.printed.contains("time scale 36000"), "{}", sim.printed);
    let base = sim.var("GOOGLE_AUDIT_BASE_URL").to_string();
    let token = sim.var("GOOGLE_ACCESS_TOKEN").to_string();
    let http = reqwest::Client::new();
    let (_, public, _) = crate::common::key();
    let armored = std::fs::read(public).expect("public key");
    let encoded = base64::engine::general_purpose::STANDARD.encode(armored);
    let entry = |props: &str| {
        format!(
            "<atom:entry xmlns:atom='http://www.w3.org/2005/Atom' \
             xmlns:apps='http://schemas.google.com/apps/2006'>{props}</atom:entry>"
        )
    };
    let post = |path: String, body: String| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&token)
            .header("Content-Type", "application/atom+xml")
            .body(body)
            .send()
    };
    let r = post(
        "/a/feeds/compliance/audit/publickey/example.com".into(),
        entry(&format!(
            "<apps:property name='publicKey' value='{encoded}'/>"
        )),
    )
    .await
    .expect("upload");
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let real = Instant::now();
    let r = post(
        "/a/feeds/compliance/audit/mail/export/example.com/alice".into(),
        entry("<apps:property name='packageContent' value='HEADER_ONLY'/>"),
    )
    .await
    .expect("create");
    let doc = r.text().await.expect("body");
    let id = prop(&doc, "requestId").expect("requestId");
    let status_url = format!("{base}/a/feeds/compliance/audit/mail/export/example.com/alice/{id}");
    let poll = || async {
        let r = http
            .get(&status_url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("status");
        r.text().await.expect("body")
    };
    let first = poll().await;
    assert_eq!(
        prop(&first, "status").as_deref(),
        Some("PENDING"),
        "{first}"
    );
    let done = loop {
        let doc = poll().await;
        if prop(&doc, "status").as_deref() != Some("PENDING") {
            break doc;
        }
        assert!(real.elapsed() < Duration::from_secs(30), "never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        prop(&done, "status").as_deref(),
        Some("COMPLETED"),
        "{done}"
    );
    let took = atom_time(&done, "completedDate") - atom_time(&done, "requestDate");
    assert!(took >= chrono::TimeDelta::hours(6), "simulated {took}");
    assert!(real.elapsed() >= Duration::from_millis(500));
    assert_eq!(sim.stop().await, Some(0));
}

#[test]
fn a_time_scale_that_is_not_positive_is_a_usage_error() {
    let d = Dir::new();
    for bad in ["0", "-5", "NaN"] {
        let out = command(&["sim", &format!("--time-scale={bad}")], d.path())
            .output()
            .expect("runs");
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("--time-scale"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_runs_mailstore_over_tls_with_the_certificate_pinned() {
    let d = Dir::new();
    let out_dir = d.path().join("demo-out");
    let out = auditflow_async(
        vec!["demo".into(), "--out".into(), out_dir.display().to_string()],
        vec![],
        d.path().to_path_buf(),
    )
    .await;
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{o}\n{e}");
    assert!(o.contains("mailstore https://127.0.0.1:"), "{o}");
    let cert = out_dir.join(".sim").join("mailstore-sim-cert.pem");
    let pin = openssl_style_sha256(&pem_der(&cert.display().to_string()));
    assert!(
        o.contains(&format!("ca_file: {} (SHA-256 {pin})", cert.display())),
        "{o}"
    );
    assert!(out_dir
        .join("mailstore")
        .join("verify-store-3.json")
        .is_file());
}

/// The shipped Google export, rehearsed against `auditflow sim` with nothing but the
/// environment it printed (its key, its poll-interval cap): no keygen, no upload, no input
/// but the user, and the default 10-minute poll interval does not make it wait.
#[tokio::test(flavor = "multi_thread")]
async fn the_google_export_runs_against_sim_with_the_printed_environment_alone() {
    let d = crate::common::Dir::new();
    let sim = start(
        &["--work-dir", &d.path().join("sim").display().to_string()],
        d.path(),
    )
    .await;
    assert!(
        sim.printed.contains("export AUDIT_PGP_SECRET_KEY="),
        "{}",
        sim.printed
    );
    assert!(
        sim.printed
            .contains("export AUDITFLOW_MAX_POLL_INTERVAL='1s'"),
        "{}",
        sim.printed
    );
    let started = std::time::Instant::now();
    let o = crate::common::auditflow_async(
        vec![
            "run".into(),
            crate::common::wf("google/mailbox-export.yaml"),
            "-i".into(),
            "domain=example.com".into(),
            "-i".into(),
            "user=alice".into(),
        ],
        sim.env_pairs(),
        d.path().to_path_buf(),
    )
    .await;
    let (out, err) = crate::common::text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{out}"
    );
    let mboxes = std::fs::read_dir(d.path().join("out"))
        .expect("out")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "mbox"))
        .count();
    assert!(mboxes > 0, "{out}");
    assert_eq!(sim.stop().await, Some(0));
}

/// Every shipped workflow, rehearsed against `auditflow sim` with nothing but what it printed:
/// its environment block and the inputs its banner names (the domain, the store ids, the Vault
/// accounts, the key the domain holds); each run ends in under a minute (issue 26). The delete
/// and the shared fetch take the export id the mailbox export printed as its output.
#[tokio::test(flavor = "multi_thread")]
async fn every_shipped_workflow_runs_against_sim_with_what_it_printed() {
    let d = Dir::new();
    let sim = start(
        &["--work-dir", &d.path().join("sim").display().to_string()],
        d.path(),
    )
    .await;
    let domain = after(&sim.printed, "-i domain=");
    let stores = after(&sim.printed, "mailstore store ids: ").replace(' ', "");
    let account = after(
        &sim.printed,
        "vault accounts (others get an account exception and no mail): ",
    )
    .split(',')
    .next()
    .unwrap_or_default()
    .trim()
    .to_string();
    let public_key = sim.var("AUDIT_PGP_PUBLIC_KEY").to_string();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("mimecast/audit-events.yaml", vec![]),
        ("mimecast/find-processing-messages.yaml", vec![]),
        (
            "mimecast/latest-channel-token.yaml",
            vec!["channel_id=any".into()],
        ),
        ("mimecast/siem-batch-events.yaml", vec![]),
        ("mimecast/siem-logs.yaml", vec![]),
        ("mailstore/server-info.yaml", vec![]),
        (
            "mailstore/verify-stores.yaml",
            vec![format!("store_ids={stores}")],
        ),
        (
            "google/upload-public-key.yaml",
            vec![
                format!("domain={domain}"),
                format!("public_key_file={public_key}"),
            ],
        ),
        ("google/list-exports.yaml", vec![format!("domain={domain}")]),
        (
            "google/export-users.yaml",
            vec![format!("domain={domain}"), "users=alice,bob".into()],
        ),
        (
            "google/vault-mail-export.yaml",
            vec![
                format!("accounts={account}"),
                "export_name=rehearsal".into(),
            ],
        ),
        (
            "google/mailbox-export.yaml",
            vec![format!("domain={domain}"), "user=carol".into()],
        ),
    ];
    let mut ran: Vec<String> = Vec::new();
    let mut request_id = String::new();
    for (workflow, inputs) in cases {
        let out = timed_run(&sim, workflow, &inputs, d.path()).await;
        if workflow == "google/mailbox-export.yaml" {
            request_id = after(&out, "output request_id = ");
        }
        ran.push(workflow.to_string());
    }
    assert!(!request_id.is_empty());
    let export = [
        format!("domain={domain}"),
        "user=carol".into(),
        format!("request_id={request_id}"),
        "out_dir=again".into(),
    ];
    timed_run(&sim, "shared/google-export-fetch.yaml", &export, d.path()).await;
    timed_run(&sim, "google/delete-export.yaml", &export[..3], d.path()).await;
    ran.extend([
        "shared/google-export-fetch.yaml".into(),
        "google/delete-export.yaml".into(),
    ]);
    ran.sort();
    assert_eq!(
        ran,
        shipped_workflows(),
        "every shipped workflow is rehearsed here"
    );
    assert_eq!(sim.stop().await, Some(0));
}

/// Runs a shipped workflow with the simulator's printed environment: it succeeds within a
/// minute. Returns what it printed.
async fn timed_run(sim: &Sim, workflow: &str, inputs: &[String], cwd: &Path) -> String {
    let started = Instant::now();
    let (code, out) = run_workflow(sim, workflow, inputs, cwd).await;
    assert_eq!(code, 0, "{workflow} {inputs:?}:\n{out}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "{workflow} took {took:?}:\n{out}"
    );
    out
}

/// The rest of the line after `marker` (trimmed), or "" when it is not there.
fn after(text: &str, marker: &str) -> String {
    text.lines()
        .find_map(|l| {
            l.split_once(marker)
                .map(|(_, rest)| rest.trim().to_string())
        })
        .unwrap_or_default()
}

/// `workflows/**/*.yaml` as `vendor/name.yaml`, sorted.
fn shipped_workflows() -> Vec<String> {
    let root = crate::common::root().join("workflows");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).expect("workflows").flatten() {
        for f in std::fs::read_dir(dir.path()).expect("vendor dir").flatten() {
            let p = f.path();
            if p.extension().is_some_and(|x| x == "yaml") {
                let rel = p.strip_prefix(&root).expect("under workflows");
                out.push(rel.display().to_string());
            }
        }
    }
    out.sort();
    out
}
