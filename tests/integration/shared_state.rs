//! The shared PostgreSQL state store against a real server, as fleets of runners use it:
//! shards in separate working directories spending one quota budget, runs killed with
//! `kill -9` and resumed elsewhere, two runners racing for one run, the server dropping
//! every connection mid-run, a cursor outliving every runner's disk, and a state directory
//! moved into the store with its pending run.
//!
//! The server is the one `AUDITFLOW_TEST_POSTGRES` names (a URL; default the development
//! machines' `postgres://postgres@127.0.0.1:5432/test`). Each test works in a schema (or a
//! database) of its own, dropped at its end, so tests run in parallel. Without a reachable
//! server the tests are skipped with one line saying what to set, unless the variable is
//! set (as `.ci/run` does): then an unreachable server fails them.
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use auditflow_sim::{SimConfig, SimHandle};
use chrono::Utc;

use crate::common::{text, Dir};
use crate::durable::{env_for, sim_config, start_sim_with, DOMAIN};

const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema (or database) of its own on the test server, dropped when done.
pub(crate) struct Pg {
    /// The `--state` URL.
    pub url: String,
    /// What to drop: `SCHEMA x` (on `admin`) or `DATABASE x`.
    drop: String,
    admin: String,
    /// The database, when the test has one of its own.
    pub database: Option<String>,
}

fn server() -> (String, bool) {
    match std::env::var("AUDITFLOW_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => (url, true),
        _ => (DEFAULT_SERVER.to_string(), false),
    }
}

async fn admin_client(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(3));
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

impl Pg {
    /// A fresh schema on the test server, or None (said once) when there is none.
    pub(crate) async fn schema() -> Option<Pg> {
        let (admin, required) = server();
        let client = match admin_client(&admin).await {
            Ok(c) => c,
            Err(e) => return skip(&admin, required, &e),
        };
        let schema = unique("af_test");
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create schema");
        Some(Pg {
            url: with_param(&admin, &format!("schema={schema}")),
            drop: format!("SCHEMA {schema} CASCADE"),
            admin,
            database: None,
        })
    }

    /// A fresh database on the test server (to drop its connections alone).
    pub(crate) async fn database() -> Option<Pg> {
        let (admin, required) = server();
        let client = match admin_client(&admin).await {
            Ok(c) => c,
            Err(e) => return skip(&admin, required, &e),
        };
        let db = unique("af_test");
        client
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("create database");
        let mut url = url::Url::parse(&admin).expect("server URL");
        url.set_path(&format!("/{db}"));
        Some(Pg {
            url: url.to_string(),
            drop: format!("DATABASE {db} WITH (FORCE)"),
            admin,
            database: Some(db),
        })
    }

    /// A connection to the server's admin database.
    pub(crate) async fn admin(&self) -> tokio_postgres::Client {
        admin_client(&self.admin).await.expect("admin connection")
    }
}

fn skip<T>(admin: &str, required: bool, e: &tokio_postgres::Error) -> Option<T> {
    if required {
        panic!("AUDITFLOW_TEST_POSTGRES={admin} is set but the server cannot be used: {e}");
    }
    eprintln!(
        "SKIPPED: no PostgreSQL server at {admin} ({e}); set AUDITFLOW_TEST_POSTGRES to a server URL (a database you may create schemas in), or start one (Debian: `apt install postgresql && pg_ctlcluster 15 main start`), to run the shared-store tests"
    );
    None
}

impl Drop for Pg {
    fn drop(&mut self) {
        let (admin, drop) = (self.admin.clone(), self.drop.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(c) = admin_client(&admin).await {
                    let _ = c.batch_execute(&format!("DROP {drop}")).await;
                }
            });
        })
        .join();
    }
}

/// The mailbox export of `user` into `out`, with the state in `store`.
fn export_args(user: &str, out: &Path, store: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "run",
        &crate::common::wf("google/mailbox-export.yaml"),
        "-i",
        &format!("domain={DOMAIN}"),
        "-i",
        &format!("user={user}"),
        "-i",
        "poll_interval=50ms",
        "-i",
        &format!("out_dir={}", out.display()),
        "--state",
        store,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    a.extend(extra.iter().map(ToString::to_string));
    a
}

fn command(
    h: &SimHandle,
    args: &[String],
    cwd: &Path,
    extra: &[(&str, &str)],
) -> std::process::Command {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = crate::common::command(&a, cwd);
    for (k, v) in env_for(h, extra) {
        cmd.env(k, v);
    }
    cmd
}

async fn job(
    h: &SimHandle,
    args: Vec<String>,
    cwd: &Path,
    extra: &[(&str, &str)],
) -> (Option<i32>, String) {
    let mut cmd = command(h, &args, cwd, extra);
    let o: Output = tokio::task::spawn_blocking(move || cmd.output().expect("auditflow runs"))
        .await
        .expect("joined");
    let (out, err) = text(&o);
    (o.status.code(), format!("{out}\n{err}"))
}

fn workdir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).expect("working directory");
    d
}

fn quick_sim() -> SimConfig {
    SimConfig {
        google_pending_polls: 1,
        google_files_per_export: 1,
        google_file_size: 2048,
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn four_shards_in_four_directories_share_one_budget_of_100_a_day() {
    let Some(pg) = Pg::schema().await else { return };
    let h = start_sim_with(quick_sim()).await;
    let root = Dir::new();
    let users: Vec<String> = (0..250).map(|i| format!("u{i:03}")).collect();
    let t0 = Utc::now();
    let mut created = vec![];
    for day in 0..3i64 {
        let now = (t0 + chrono::Duration::days(day)).to_rfc3339();
        let shards = (1..=4).map(|i| {
            let cwd = workdir(root.path(), &format!("shard{i}"));
            let args: Vec<String> = [
                "run".to_string(),
                crate::common::wf("google/export-users.yaml"),
                "-i".into(),
                format!("domain={DOMAIN}"),
                "-i".into(),
                format!("users={}", users.join(",")),
                "-i".into(),
                "poll_interval=50ms".into(),
                "-i".into(),
                format!("out_dir={}", cwd.join("out").display()),
                "--shard".into(),
                format!("{i}/4"),
                "--state".into(),
                pg.url.clone(),
            ]
            .to_vec();
            let now = now.clone();
            let h = &h;
            async move { job(h, args, &cwd, &[("AUDITFLOW_NOW", &now)]).await }
        });
        let results = futures::future::join_all(shards).await;
        for (code, log) in &results {
            assert!(
                !log.contains("dailyLimitExceeded"),
                "the vendor's quota error was met on day {day}:\n{log}"
            );
            assert!(matches!(code, Some(0 | 75)), "{log}");
        }
        created.push(h.google.exports_created(DOMAIN));
        h.google.advance_clock(Duration::from_secs(86_400));
    }
    assert_eq!(
        created,
        [100, 200, 250],
        "creates after each day, all shards together"
    );
    for u in &users {
        let found: usize = (1..=4)
            .map(|i| crate::common::mbox_count(&root.path().join(format!("shard{i}/out/{u}"))))
            .sum();
        assert_eq!(found, 1, "{u} exported once");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_killed_at_random_moments_resume_from_another_directory() {
    let Some(pg) = Pg::schema().await else { return };
    let mut cfg = sim_config(3);
    cfg.google_files_per_export = 2;
    cfg.google_file_size = 64 * 1024;
    let h = start_sim_with(cfg).await;
    let root = Dir::new();
    let out = root.path().join("out");
    let (a, b) = (workdir(root.path(), "a"), workdir(root.path(), "b"));
    for i in 0..20u64 {
        let user = format!("k{i:02}");
        let dest = out.join(&user);
        let mut child = command(&h, &export_args(&user, &dest, &pg.url, &[]), &a, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts");
        // A moment spread over the whole run: creation, polls, download, decrypt.
        let at = 40 + (i * 7919) % 900;
        tokio::time::sleep(Duration::from_millis(at)).await;
        let _ = child.kill();
        let _ = child.wait();
        let (code, log) = job(&h, export_args(&user, &dest, &pg.url, &[]), &b, &[]).await;
        assert_eq!(code, Some(0), "{user} killed after {at} ms:\n{log}");
        let v = crate::common::auditflow(&["verify", dest.to_str().unwrap()], &[], &b);
        assert!(v.status.success(), "{user}: {:?}", text(&v));
        assert_eq!(
            crate::common::mbox_count(&dest),
            2,
            "{user}: every file, once"
        );
    }
    assert_eq!(
        h.google.exports_created(DOMAIN),
        20,
        "no export created twice"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runners_starting_the_same_run_at_once_one_runs_the_other_is_told() {
    let Some(pg) = Pg::schema().await else { return };
    let h = start_sim_with(sim_config(6)).await;
    let root = Dir::new();
    let out = root.path().join("out");
    let args = export_args("carol", &out, &pg.url, &[]);
    let (x, y) = (workdir(root.path(), "x"), workdir(root.path(), "y"));
    let (first, second) = tokio::join!(job(&h, args.clone(), &x, &[]), job(&h, args, &y, &[]));
    let mut codes = [first.0, second.0];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(75)], "{}\n---\n{}", first.1, second.1);
    let told = if first.0 == Some(75) {
        &first.1
    } else {
        &second.1
    };
    assert!(
        told.contains("another auditflow process holds run") && told.contains("pid "),
        "names the holder: {told}"
    );
    assert!(
        told.contains("advisory lock in postgres://postgres@"),
        "{told}"
    );
    assert_eq!(h.google.exports_created(DOMAIN), 1);
    // The fleet's runs, with who ran them.
    let o = crate::common::auditflow(&["runs", "list", "--json", "--state", &pg.url], &[], &x);
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).expect("runs list --json");
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    assert!(
        runs[0]["runner"]
            .as_str()
            .is_some_and(|r| r.contains("pid ")),
        "{runs}"
    );
    let id = runs[0]["run_id"].as_str().unwrap_or_default();
    let o = crate::common::auditflow(
        &["runs", "show", &id[..8], "--json", "--state", &pg.url],
        &[],
        &y,
    );
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).expect("runs show --json");
    assert_eq!(shown["runner"], runs[0]["runner"], "{shown}");
    assert!(
        shown["journal"]
            .as_str()
            .is_some_and(|j| j.starts_with("postgres://postgres@")),
        "{shown}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_dropping_every_connection_mid_run_loses_no_record() {
    let Some(pg) = Pg::database().await else {
        return;
    };
    let h = start_sim_with(sim_config(12)).await;
    let root = Dir::new();
    let out = root.path().join("out");
    let args = export_args("dave", &out, &pg.url, &[]);
    let cwd = workdir(root.path(), "w");
    let run = job(&h, args, &cwd, &[("AUDITFLOW_STATE_RETRY", "30s")]);
    let db = pg.database.clone().unwrap_or_default();
    let admin = pg.admin().await;
    let dropper = async {
        let mut dropped = 0u64;
        // Every 150 ms for 1.5 s, as a restart does: every connection of the store's
        // database is closed by the server.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let n = admin
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&db],
                )
                .await
                .map(|r| r.len() as u64)
                .unwrap_or(0);
            dropped += n;
        }
        dropped
    };
    let ((code, log), dropped) = tokio::join!(run, dropper);
    assert!(dropped > 0, "connections were dropped");
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(h.google.exports_created(DOMAIN), 1);
    // Every record is there: the run shows finished with every step done.
    let o = crate::common::auditflow(&["runs", "list", "--json", "--state", &pg.url], &[], &cwd);
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).expect("runs list --json");
    assert_eq!(runs[0]["status"], "succeeded", "{runs}");
    let v = crate::common::auditflow(&["verify", out.to_str().unwrap()], &[], &cwd);
    assert!(v.status.success(), "{:?}", text(&v));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_run_moves_from_a_directory_to_the_store_and_continues_elsewhere() {
    let Some(pg) = Pg::schema().await else { return };
    let h = start_sim_with(sim_config(8)).await;
    let root = Dir::new();
    let out = root.path().join("out");
    let (a, b) = (workdir(root.path(), "a"), workdir(root.path(), "b"));
    let dir_state = a.join(".auditflow");
    let on_disk = export_args(
        "erin",
        &out,
        dir_state.to_str().unwrap(),
        &["--max-wait", "150ms"],
    );
    let (code, log) = job(&h, on_disk, &a, &[]).await;
    assert_eq!(code, Some(75), "{log}");
    let copy = crate::common::auditflow(
        &[
            "state",
            "copy",
            "--from",
            dir_state.to_str().unwrap(),
            "--to",
            &pg.url,
        ],
        &[],
        &a,
    );
    let (o, e) = text(&copy);
    assert!(copy.status.success(), "{o}\n{e}");
    assert!(
        o.contains("copied 1 run(s)") && o.contains("1 unfinished"),
        "{o}"
    );
    // The runner's disk is gone; another one continues the run from the shared store.
    std::fs::remove_dir_all(&a).expect("lose the disk");
    let (code, log) = job(&h, export_args("erin", &out, &pg.url, &[]), &b, &[]).await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("resuming"), "{log}");
    assert_eq!(h.google.exports_created(DOMAIN), 1, "not created again");
    // And back: a directory gets the run with its whole journal.
    let back = b.join("copied-back");
    let copy = crate::common::auditflow(
        &[
            "state",
            "copy",
            "--from",
            &pg.url,
            "--to",
            back.to_str().unwrap(),
        ],
        &[],
        &b,
    );
    assert!(copy.status.success(), "{:?}", text(&copy));
    let o = crate::common::auditflow(
        &[
            "runs",
            "list",
            "--json",
            "--state-dir",
            back.to_str().unwrap(),
        ],
        &[],
        &b,
    );
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(runs[0]["status"], "succeeded", "{runs}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_store_fails_before_anything_is_sent_and_hides_the_password() {
    let h = start_sim_with(quick_sim()).await;
    let d = Dir::new();
    let url = "postgres://auditor:hunter2-secret@127.0.0.1:1/state";
    let (code, log) = job(
        &h,
        export_args("frank", &d.path().join("out"), url, &[]),
        d.path(),
        &[("AUDITFLOW_STATE_RETRY", "1s")],
    )
    .await;
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("postgres://auditor@127.0.0.1:1/state"),
        "names the server: {log}"
    );
    assert!(!log.contains("hunter2"), "{log}");
    assert_eq!(h.google.exports_created(DOMAIN), 0);
    h.shutdown().await;
}
