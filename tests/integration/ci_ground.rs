//! The scheduled-CI pattern of docs/guide/ci-and-scheduling.md played with real processes against the simulator, as CI
//! runners really behave: every job runs in a checkout at another path, state comes back
//! from a cache copy (or not at all), a job is cancelled with SIGTERM mid-download. Across it
//! all the vendor sees one create per mailbox, every mbox is the simulator's plaintext, and
//! `auditflow verify` passes.
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::common::{text, Dir};
use crate::durable::{assert_artifacts, env_for, sim_config, start_sim_with, DOMAIN};
use auditflow_sim::{SimConfig, SimHandle};

/// A runner's checkout: a git repository (a `.git` marker) holding a copy of `workflows/`.
fn checkout(under: &Path) -> PathBuf {
    let repo = under.join("build").join("repo");
    copy_tree(
        &crate::common::root().join("workflows"),
        &repo.join("workflows"),
    );
    std::fs::create_dir_all(repo.join(".git")).expect("git marker");
    repo
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().expect("file type").is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

/// A job's command line: `workflow` by its path in the checkout, each of `inputs` as
/// `-i`, then `extra`; state and output in the checkout (as the CI recipes put them).
fn run_args(workflow: &str, inputs: &[String], extra: &[&str]) -> Vec<String> {
    let mut a = vec!["run".to_string(), workflow.to_string()];
    for i in inputs {
        a.extend(["-i".to_string(), i.clone()]);
    }
    a.extend(extra.iter().map(ToString::to_string));
    a
}

/// The mailbox export of `user`.
fn job_args(user: &str, extra: &[&str]) -> Vec<String> {
    let inputs = [
        format!("domain={DOMAIN}"),
        format!("user={user}"),
        "poll_interval=50ms".into(),
        "out_dir=out".into(),
    ];
    run_args("workflows/google/mailbox-export.yaml", &inputs, extra)
}

fn command(h: &SimHandle, args: &[String], cwd: &Path) -> std::process::Command {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = crate::common::command(&a, cwd);
    for (k, v) in env_for(h, &[]) {
        cmd.env(k, v);
    }
    cmd
}

async fn job(h: &SimHandle, args: Vec<String>, cwd: &Path) -> (Option<i32>, String) {
    let mut cmd = command(h, &args, cwd);
    let o: Output = tokio::task::spawn_blocking(move || cmd.output().expect("auditflow runs"))
        .await
        .expect("joined");
    let (out, err) = text(&o);
    (o.status.code(), format!("{out}\n{err}"))
}

/// The one run recorded in the state directory `.auditflow` of `repo`.
fn only_run_id(repo: &Path) -> String {
    let o = crate::common::auditflow(&["runs", "list", "--json"], &[], repo);
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).expect("runs list --json");
    let runs = runs.as_array().expect("a list");
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0]["run_id"].as_str().expect("run id").to_string()
}

/// Sizes of the `.part` files under `dir`.
fn part_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".part") {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

/// Starts the job, waits until a download has written part of a file, sends SIGTERM.
async fn cancel_mid_download(h: &SimHandle, args: Vec<String>, repo: &Path) -> (i32, String) {
    let mut child = command(h, &args, repo)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("auditflow starts");
    let out = repo.join("out");
    for _ in 0..1200 {
        if part_bytes(&out) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if part_bytes(&out) == 0 {
        let _ = child.kill();
        let o = child.wait_with_output().expect("ends");
        let (o1, e1) = text(&o);
        panic!("the download never started:\n{o1}\n{e1}");
    }
    let pid = i32::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) with a child's pid and SIGTERM has no memory effects.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let o = tokio::task::spawn_blocking(move || child.wait_with_output().expect("auditflow ends"))
        .await
        .expect("joined");
    let (o1, e1) = text(&o);
    (o.status.code().unwrap_or(-1), format!("{o1}\n{e1}"))
}

fn copy_state(from_repo: &Path, to_repo: &Path) {
    copy_tree(&from_repo.join(".auditflow"), &to_repo.join(".auditflow"));
}

fn config() -> SimConfig {
    let mut c = sim_config(8);
    // About 600 KB encrypted: more than one 256 KiB write batch reaches the .part.
    c.google_file_size = 3 * 1024 * 1024;
    // A slow network: a job can be cancelled half way through a file.
    c.faults.download_rate = Some(200 * 1024);
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_jobs_on_moving_runners_create_each_export_once() {
    let h = start_sim_with(config()).await;
    let root = Dir::new();
    let runner = |name: &str| checkout(&root.path().join(name));

    // Job 1 (runner A): creates alice's export, waits, detaches with its state saved.
    let a = runner("a");
    let (code, log) = job(&h, job_args("alice", &["--max-wait", "150ms"]), &a).await;
    assert_eq!(code, Some(75), "job 1:\n{log}");
    let run = only_run_id(&a);

    // Job 2 (runner B, another path): the cache restored; the same run goes on.
    let b = runner("b");
    copy_state(&a, &b);
    let (code, log) = job(&h, job_args("alice", &["--max-wait", "150ms"]), &b).await;
    assert_eq!(code, Some(75), "job 2:\n{log}");
    assert!(log.contains("resuming"), "job 2 resumes run {run}:\n{log}");
    assert!(!log.contains("is unfinished"), "job 2:\n{log}");
    assert_eq!(h.google.exports_created(DOMAIN), 1, "job 2:\n{log}");

    // Job 3 (runner B): cancelled by CI with SIGTERM half way through a download.
    let (code, log) = cancel_mid_download(&h, job_args("alice", &[]), &b).await;
    assert_eq!(code, 143, "job 3 ends as interrupted by SIGTERM:\n{log}");
    assert!(log.contains("interrupted by SIGTERM"), "job 3:\n{log}");
    assert!(
        part_bytes(&b.join("out")) > 0,
        "the partial download is kept"
    );

    // Job 4 (runner B): the ranged download resumes from the kept bytes.
    let (code, log) = job(&h, job_args("alice", &[]), &b).await;
    assert_eq!(code, Some(0), "job 4:\n{log}");
    assert!(log.contains("resuming at byte"), "job 4:\n{log}");
    assert_artifacts(&h, &b.join("out"));

    // Job 5 (runner B): one-shot, succeeded: nothing is sent.
    let before = h.stats.snapshot().requests;
    let (code, log) = job(&h, job_args("alice", &[]), &b).await;
    assert_eq!(code, Some(0), "job 5:\n{log}");
    assert!(log.contains("already succeeded"), "job 5:\n{log}");
    assert_eq!(h.stats.snapshot().requests, before, "job 5 sent nothing");
    assert_eq!(h.google.exports_created(DOMAIN), 1);

    // Bob: job 6 (runner C) creates and detaches; its cache is lost.
    let c = runner("c");
    let (code, log) = job(&h, job_args("bob", &["--max-wait", "150ms"]), &c).await;
    assert_eq!(code, Some(75), "job 6:\n{log}");
    assert_eq!(h.google.exports_created(DOMAIN), 2);
    // Job 7 (runner D, no state at all): the PENDING export is adopted, not created again.
    let d = runner("d");
    let (code, log) = job(&h, job_args("bob", &["--max-wait", "150ms"]), &d).await;
    assert_eq!(code, Some(75), "job 7:\n{log}");
    assert!(
        log.contains("adopting it instead of creating another"),
        "job 7:\n{log}"
    );
    assert_eq!(
        h.google.exports_created(DOMAIN),
        2,
        "job 7 created nothing:\n{log}"
    );
    let adopted = only_run_id(&d);
    // Job 8 (runner E): --resume of D's run, from a third directory, finishes it.
    let e = runner("e");
    copy_state(&d, &e);
    let (code, log) = job(&h, job_args("bob", &["--resume", &adopted[..8]]), &e).await;
    assert_eq!(code, Some(0), "job 8:\n{log}");
    assert_artifacts(&h, &e.join("out"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(e.join("out/manifest.json")).expect("manifest"))
            .expect("json");
    assert!(
        manifest["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .any(|r| r["adopted"]["create"]["vendor"] == "google"),
        "the manifest says the export was adopted: {manifest}"
    );
    assert_eq!(
        h.google.exports_created(DOMAIN),
        2,
        "one create per mailbox"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_names_its_run_or_refuses_and_a_held_run_is_not_yet() {
    let h = start_sim_with(config()).await;
    let root = Dir::new();
    let a = checkout(&root.path().join("a"));
    let (code, log) = job(&h, job_args("carol", &["--max-wait", "150ms"]), &a).await;
    assert_eq!(code, Some(75), "{log}");
    let run = only_run_id(&a);
    // Another user's inputs cannot continue carol's run: refused, nothing started.
    let (code, log) = job(&h, job_args("dave", &["--resume", &run[..8]]), &a).await;
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("input `user` was \"carol\""), "{log}");
    // Another workflow cannot either.
    let other = run_args(
        "workflows/google/list-exports.yaml",
        &["domain=example.com".into()],
        &["--resume", &run[..8]],
    );
    let (code, log) = job(&h, other, &a).await;
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("it is a run of workflows/google/mailbox-export.yaml"),
        "{log}"
    );
    let o = crate::common::auditflow(&["runs", "list", "--json"], &[], &a);
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "no run was started");

    // While a job holds the run, a second one is "not yet": exit 75 naming the holder.
    let mut holder = command(&h, &job_args("carol", &[]), &a)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    // Let the holder take the run (the lock) before the second job comes.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut held = None;
    for _ in 0..20 {
        let (code, log) = job(&h, job_args("carol", &["--max-wait", "100ms"]), &a).await;
        if code == Some(75) && log.contains("another auditflow process holds run") {
            held = Some(log);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = holder.kill();
    let _ = holder.wait();
    let log = held.expect("the second job was told the run is held");
    assert!(log.contains(&format!("run {run}")), "{log}");
    assert!(log.contains("pid "), "names the holding process: {log}");

    // An abandoned run is not resumed: the next job starts a new run (and adopts the
    // export the vendor already holds instead of creating a second one).
    let o = crate::common::auditflow(&["runs", "abandon", &run[..8]], &[], &a);
    assert!(o.status.success(), "{:?}", text(&o));
    let (code, log) = job(&h, job_args("carol", &[]), &a).await;
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("adopting it instead of creating another"),
        "{log}"
    );
    assert_eq!(h.google.exports_created(DOMAIN), 1);
}

/// The Vault export of two accounts.
fn vault_args(extra: &[&str]) -> Vec<String> {
    let inputs = [
        "accounts=alice@example.com,bob@example.com".to_string(),
        "export_name=q4-audit".into(),
        "poll_interval=50ms".into(),
        "out_dir=out".into(),
    ];
    run_args("workflows/google/vault-mail-export.yaml", &inputs, extra)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_vault_export_on_moving_runners_is_created_once() {
    let mut cfg = sim_config(2);
    cfg.vault_pending_polls = 8;
    let h = start_sim_with(cfg).await;
    let root = Dir::new();
    let runner = |name: &str| checkout(&root.path().join(name));

    // Job 1 (runner A): matter and export created; detaches.
    let a = runner("a");
    let (code, log) = job(&h, vault_args(&["--max-wait", "150ms"]), &a).await;
    assert_eq!(code, Some(75), "job 1:\n{log}");
    assert_eq!(h.vault.exports_created(), 1);

    // Job 2 (runner B, the cache restored): the same run finishes.
    let b = runner("b");
    copy_state(&a, &b);
    let (code, log) = job(&h, vault_args(&[]), &b).await;
    assert_eq!(code, Some(0), "job 2:\n{log}");
    assert!(log.contains("resuming"), "job 2:\n{log}");
    let v = crate::common::auditflow(&["verify", "out"], &[], &b);
    assert!(v.status.success(), "{:?}", text(&v));

    // Job 3 (runner B): one-shot, done: nothing is sent.
    let before = h.stats.snapshot().requests;
    let (code, log) = job(&h, vault_args(&[]), &b).await;
    assert_eq!(code, Some(0), "job 3:\n{log}");
    assert!(log.contains("already succeeded"), "job 3:\n{log}");
    assert_eq!(h.stats.snapshot().requests, before, "job 3 sent nothing");

    // Job 4 (runner C, no state at all): the open matter and the completed export are
    // adopted, nothing is created.
    let c = runner("c");
    let (code, log) = job(&h, vault_args(&[]), &c).await;
    assert_eq!(code, Some(0), "job 4:\n{log}");
    assert_eq!(
        log.matches("adopting it instead of creating another")
            .count(),
        2,
        "the matter and the export are adopted:\n{log}"
    );
    assert_eq!(h.vault.exports_created(), 1, "job 4 created nothing");
    let v = crate::common::auditflow(&["verify", "out"], &[], &c);
    assert!(v.status.success(), "{:?}", text(&v));

    // Job 5 (runner D): continuing a known export by its ids creates nothing either.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("out/manifest.json")).expect("manifest"))
            .expect("json");
    let request = manifest["artifacts"]
        .as_object()
        .expect("artifacts")
        .values()
        .find_map(|a| a["request_id"].as_str().map(str::to_string))
        .expect("the export's request id");
    let (matter, export) = request
        .strip_prefix("matters/")
        .and_then(|r| r.split_once("/exports/"))
        .expect("matters/M/exports/E");
    let d = runner("d");
    let (code, log) = job(
        &h,
        vault_args(&[
            "-i",
            &format!("matter_id={matter}"),
            "-i",
            &format!("export_id={export}"),
        ]),
        &d,
    )
    .await;
    assert_eq!(code, Some(0), "job 5:\n{log}");
    assert_eq!(
        h.vault.exports_created(),
        1,
        "job 5 created nothing:\n{log}"
    );
}
