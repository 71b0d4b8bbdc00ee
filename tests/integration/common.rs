//! Shared test helpers: a scripted in-process HTTP server and a runner for the real binary.
#![allow(dead_code, reason = "shared by every suite; each uses a part of it")]
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One scripted answer.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub(crate) fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    pub(crate) fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub(crate) fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

/// A request the server received.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HashMap<String, String>,
    pub body: String,
}

#[derive(Default)]
pub(crate) struct Script {
    /// Per path: replies served in order; the last one repeats.
    pub replies: Mutex<HashMap<String, Vec<Reply>>>,
    pub seen: Mutex<Vec<Seen>>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

impl Script {
    pub(crate) fn requests(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
    pub(crate) fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(
    State(s): State<Arc<Script>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    s.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let reply = {
        let mut r = s.replies.lock().unwrap();
        match r.get_mut(uri.path()) {
            Some(list) if list.len() > 1 => Some(list.remove(0)),
            Some(list) => list.first().cloned(),
            None => None,
        }
    };
    let resp = match reply {
        None => (StatusCode::NOT_FOUND, "no script for this path").into_response(),
        Some(r) => {
            if !r.delay.is_zero() {
                tokio::time::sleep(r.delay).await;
            }
            let mut resp = (StatusCode::from_u16(r.status).unwrap(), r.body).into_response();
            for (k, v) in r.headers {
                resp.headers_mut().insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            resp
        }
    };
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    resp
}

/// Starts a scripted server on 127.0.0.1; returns its base URL and the script.
pub(crate) async fn serve(replies: Vec<(&str, Vec<Reply>)>) -> (String, Arc<Script>) {
    let script = Arc::new(Script::default());
    {
        let mut r = script.replies.lock().unwrap();
        for (p, list) in replies {
            r.insert(p.to_string(), list);
        }
    }
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), script)
}

/// A temporary directory with workflow files in it.
pub(crate) struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub(crate) fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().unwrap(),
        }
    }
    pub(crate) fn path(&self) -> &Path {
        self.tmp.path()
    }
    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// The real binary with `args` in `cwd`, as CI runs it (`CI=true`, no `RUST_LOG`), for tests
/// that need the process itself (pipes, signals).
pub(crate) fn command(args: &[&str], cwd: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_auditflow"));
    cmd.args(args)
        .current_dir(cwd)
        .env("CI", "true")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs the real binary with arguments and extra environment; blocking, so call it
/// from `spawn_blocking` while a server runs.
pub(crate) fn auditflow(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let mut cmd = command(args, cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run auditflow")
}

pub(crate) async fn auditflow_async(
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
) -> Output {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        auditflow(&a, &e, &cwd)
    })
    .await
    .unwrap()
}

pub(crate) fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The repository root.
pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A shipped workflow's path, e.g. `wf("google/mailbox-export.yaml")`.
pub(crate) fn wf(p: &str) -> String {
    root().join("workflows").join(p).display().to_string()
}

/// One throwaway RSA key (secret key file, public key file, passphrase) per test binary:
/// key generation is slow.
pub(crate) fn key() -> &'static (PathBuf, PathBuf, String) {
    static KEY: std::sync::OnceLock<(PathBuf, PathBuf, String)> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "auditflow-test-key-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let k = auditflow::demo::generate_key(&dir, 2048).expect("key");
        (k.secret_key, k.public_key, k.passphrase)
    })
}

/// Compares `got` with the expected text kept beside `case` as `<case>.err` (see
/// [`crate::snapshot`]). Returns a mismatch report (expected, then got), if any.
pub(crate) fn check_snapshot(case: &Path, got: &str) -> Option<String> {
    crate::snapshot::compare(&case.with_extension("err"), got).map(|m| m.to_string())
}

/// How many `.mbox` files `dir` holds (0 when it does not exist).
pub(crate) fn mbox_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "mbox"))
                .count()
        })
        .unwrap_or(0)
}
