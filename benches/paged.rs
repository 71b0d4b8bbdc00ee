//! Benchmark: `workflows/mimecast/find-processing-messages.yaml` over many pages (peak RSS of
//! the runner, bytes saved).
//!
//! Run with `cargo bench --bench paged` (release). The project's issue 22: a paginated call
//! saves its pages to `save_to` as they arrive, so the runner's peak memory stays under
//! 64 MiB plus one page whatever the number of pages.
//!
//! Setup (not timed): a Mimecast-shaped server in this process on 127.0.0.1 (axum, no
//! signature check) answers find-processing-messages with `pages` pages of about `page_kib`
//! KiB each: 100 messages (the workflow's page size) in the `{"messages": [...]}` wrapper,
//! `meta.pagination.next` tokens and `totalCount`. The shipped workflow runs as a child
//! process of the binary (`auditflow run`), reaped with `wait4`, whose `ru_maxrss` is the
//! runner's exact peak RSS.
//!
//! Checked afterwards: exit 0; the saved file holds every message once (its `"id"` lines
//! counted while streaming through it) and its SHA-256 is the one `manifest.json` records;
//! the peak RSS is under 64 MiB plus one page. Prints the figures and PASS/FAIL lines; exits
//! 1 on any FAIL.
//!
//! Env: `PAGED_PAGES` and `PAGED_PAGE_KIB` (one run; default: two runs, 400 pages of 100 KiB
//! and 60 pages of 4 MiB, the cases), `PAGED_HOLD=1` (for comparison: a copy of the
//! workflow whose outputs read `steps.find.records`, with `max_response_size: 4GiB`, so every
//! page is held; no RSS goal), `PAGED_BIN` (another `auditflow` binary, e.g. the debug build),
//! `PAGED_DIR` (parent of the temp dir), `PAGED_KEEP=1` (keep it).
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::extract::State;
use serde_json::{json, Value};

mod common;
use common::{path_str, sha256_file, Res};

/// The runner, built by cargo for this bench (release profile).
const AUDITFLOW: &str = env!("CARGO_BIN_EXE_auditflow");
const FIND: &str = "/api/gateway/find-processing-messages";
/// Messages a page (the shipped workflow's `page_size`).
const PER_PAGE: usize = 100;
/// The goal: peak RSS under this plus one page.
const BASE_LIMIT_MIB: f64 = 64.0;

fn main() {
    match bench() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("paged bench: {e}");
            std::process::exit(1);
        }
    }
}

fn env_num(name: &str) -> Res<Option<usize>> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| format!("{name}={v}: {e}")),
        Err(_) => Ok(None),
    }
}

/// The pages the server answers with.
#[derive(Clone, Copy)]
struct Shape {
    pages: usize,
    page_kib: usize,
}

impl Shape {
    /// Page `n` (0-based): `PER_PAGE` messages padded to about `page_kib` KiB in all.
    fn page(self, n: usize) -> Value {
        let pad = (self.page_kib * 1024 / PER_PAGE).saturating_sub(200);
        let messages: Vec<Value> = (0..PER_PAGE)
            .map(|i| {
                let id = n * PER_PAGE + i;
                json!({
                    "id": format!("msg-{id:09}"),
                    "fromEnv": {"emailAddress": format!("sender{id}@example.com")},
                    "to": {"emailAddress": "auditor@example.com"},
                    "subject": "x".repeat(pad),
                    "size": 1000 + id,
                })
            })
            .collect();
        let mut pagination = json!({"pageSize": PER_PAGE, "totalCount": self.pages * PER_PAGE});
        if n + 1 < self.pages {
            pagination["next"] = json!(format!("p-{}", n + 1));
        }
        json!({"meta": {"status": 200, "pagination": pagination},
               "data": [{"messages": messages}], "fail": []})
    }
}

/// Answers find-processing-messages: the page its `meta.pagination.pageToken` names.
async fn find(State(shape): State<Shape>, body: axum::body::Bytes) -> axum::Json<Value> {
    let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = asked
        .pointer("/meta/pagination/pageToken")
        .and_then(Value::as_str)
        .and_then(|t| t.strip_prefix("p-"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    axum::Json(shape.page(n))
}

/// Starts the server on a thread of its own; returns its base URL.
fn start_server(shape: Shape) -> Res<String> {
    common::serve_on_thread(
        axum::Router::new()
            .route(FIND, axum::routing::post(find))
            .with_state(shape),
    )
}

/// What one measured run gave.
struct Measured {
    code: Option<i32>,
    wall: Duration,
    /// Peak resident set of the runner (`ru_maxrss`), KiB.
    maxrss_kib: u64,
}

/// Runs `cmd` and reaps it with `wait4` for its peak RSS.
fn run_measured(cmd: &mut Command) -> Res<Measured> {
    let started = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the runner: {e}"))?;
    let (status, ru) = common::reap(child)?;
    Ok(Measured {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        wall: started.elapsed(),
        maxrss_kib: u64::try_from(ru.ru_maxrss).unwrap_or(0),
    })
}

/// Lines of the saved file that open a message (`"id": "msg-`), read as a stream.
fn count_messages(path: &Path) -> Res<usize> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut n = 0;
    for line in std::io::BufReader::with_capacity(1 << 20, f).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim_start().starts_with("\"id\": \"msg-") {
            n += 1;
        }
    }
    Ok(n)
}

/// The shipped workflow, or with `hold` a copy in `dir` whose outputs read the records.
fn workflow(dir: &Path, hold: bool) -> Res<PathBuf> {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("workflows/mimecast/find-processing-messages.yaml");
    if !hold {
        return Ok(shipped);
    }
    let text = std::fs::read_to_string(&shipped).map_err(|e| e.to_string())?;
    let held = text
        .replace(
            "      paginate: {page_size: 100}\n",
            "      paginate: {page_size: 100}\n      max_response_size: 4GiB\n",
        )
        .replace(
            "  pages: \"{{ steps.find.pages }}\"\n",
            "  pages: \"{{ steps.find.pages }}\"\n  held: \"{{ len steps.find.records }}\"\n",
        );
    if !held.contains("4GiB") || !held.contains("held:") {
        return Err("the shipped workflow changed: cannot make the held copy".into());
    }
    let path = dir.join("held.yaml");
    std::fs::write(&path, held).map_err(|e| e.to_string())?;
    Ok(path)
}

/// One run of the shipped workflow over `shape`; true when every check passed.
fn run_once(shape: Shape, bin: &str, work: &Path, hold: bool) -> Res<bool> {
    let base = start_server(shape)?;
    let dir = work.join(format!("p{}-k{}", shape.pages, shape.page_kib));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let workflow = workflow(&dir, hold)?;
    let log = std::fs::File::create(dir.join("run.log")).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg(&workflow)
        .args(["--input", "out_dir=out", "--state-dir"])
        .arg(dir.join("state"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MIMECAST_BASE_URL", &base)
        .env("MIMECAST_ACCESS_KEY", "bench-access-key")
        .env("MIMECAST_SECRET_KEY", "YmVuY2gtc2VjcmV0LWtleQ==")
        .env("MIMECAST_APP_ID", "bench-app")
        .env("MIMECAST_APP_KEY", "bench-app-key")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    eprintln!(
        "running find-processing-messages over {} pages of ~{} KiB{} ...",
        shape.pages,
        shape.page_kib,
        if hold { " (held for a later step)" } else { "" }
    );
    let m = run_measured(&mut cmd)?;
    let saved = dir.join("out/processing-messages.json");
    let bytes = std::fs::metadata(&saved).map(|md| md.len()).unwrap_or(0);
    let messages = if bytes > 0 {
        count_messages(&saved)?
    } else {
        0
    };
    let manifest = std::fs::read_to_string(dir.join("out/manifest.json")).unwrap_or_default();
    let hashed = bytes > 0 && manifest.contains(&sha256_file(&saved)?);
    let peak_mib = m.maxrss_kib as f64 / 1024.0;
    let limit_mib = BASE_LIMIT_MIB + shape.page_kib as f64 / 1024.0;
    println!(
        "pages: {}, page size: ~{} KiB, bytes saved: {bytes} ({:.1} MB), messages: {messages}, \
         peak RSS: {peak_mib:.1} MiB (limit {limit_mib:.1} MiB), wall: {:.1} s, exit {:?}",
        shape.pages,
        shape.page_kib,
        bytes as f64 / 1e6,
        m.wall.as_secs_f64(),
        m.code
    );
    let checks = [
        ("exit 0", m.code == Some(0)),
        (
            "every message saved once",
            messages == shape.pages * PER_PAGE,
        ),
        ("manifest.json records the file's SHA-256", hashed),
    ];
    let checks = checks
        .into_iter()
        .chain((!hold).then_some(("peak RSS under 64 MiB plus one page", peak_mib < limit_mib)));
    let mut ok = true;
    for (what, pass) in checks {
        println!("  {} {what}", if pass { "PASS" } else { "FAIL" });
        ok &= pass;
    }
    if !ok {
        println!("  runner log: {}", path_str(&dir.join("run.log"))?);
    }
    Ok(ok)
}

fn bench() -> Res<bool> {
    let shapes = match (env_num("PAGED_PAGES")?, env_num("PAGED_PAGE_KIB")?) {
        (None, None) => vec![
            Shape {
                pages: 400,
                page_kib: 100,
            },
            Shape {
                pages: 60,
                page_kib: 4096,
            },
        ],
        (pages, kib) => vec![Shape {
            pages: pages.unwrap_or(400),
            page_kib: kib.unwrap_or(100),
        }],
    };
    let bin = std::env::var("PAGED_BIN").unwrap_or_else(|_| AUDITFLOW.to_string());
    let mut tmp = tempfile::Builder::new();
    tmp.prefix("auditflow-paged-");
    let work = match std::env::var_os("PAGED_DIR") {
        Some(d) => tmp.tempdir_in(d),
        None => tmp.tempdir(),
    }
    .map_err(|e| format!("temp dir: {e}"))?;
    println!("runner: {bin}");
    let hold = std::env::var("PAGED_HOLD").is_ok_and(|v| v == "1");
    let mut ok = true;
    for shape in shapes {
        ok &= run_once(shape, &bin, work.path(), hold)?;
    }
    if std::env::var("PAGED_KEEP").is_ok_and(|v| v == "1") {
        println!("kept {}", work.keep().display());
    }
    Ok(ok)
}
