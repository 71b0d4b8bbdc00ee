//! End-to-end tests of `steps::download` against in-process axum servers on 127.0.0.1.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auditflow::retry::{Jitter, RetryPolicy};
use auditflow::steps::download::{
    download, download_with_options, file_name_from_url, safe_join, DownloadError,
    DownloadObserver, DownloadOptions, Downloaded, FileToFetch, HeaderFn,
};
use auditflow::vendors::http::redact_url;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use base64::Engine as _;
use bytes::Bytes;
use futures::FutureExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- test server

/// How the test server misbehaves.
#[derive(Clone, Default)]
struct Behaviour {
    /// Answer `Range: bytes=N-` with 206 (otherwise always 200 with the whole file).
    honor_range: bool,
    /// Requests with an index below this are cut half way (full Content-Length declared).
    cut_first: u32,
    /// Every body stops this many bytes before the end of the file (full length declared).
    short_by: Option<usize>,
    /// The first requests answer these statuses (with an optional Retry-After).
    statuses: Vec<(u16, Option<&'static str>)>,
    /// Repr-Digest value; `None` sends the correct one.
    repr_digest: Option<String>,
    /// Send no digest header at all.
    no_digest: bool,
    /// After the first half of the first response, stall this long before cutting.
    stall_first: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Seen {
    range: Option<String>,
    auth: Option<String>,
}

struct Server {
    data: Bytes,
    b: Behaviour,
    hits: AtomicU32,
    seen: Mutex<Vec<Seen>>,
}

impl Server {
    fn hits(&self) -> u32 {
        self.hits.load(Ordering::SeqCst)
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

fn test_data(len: usize) -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

fn repr_digest(data: &[u8]) -> String {
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data))
    )
}

async fn handle(State(s): State<Arc<Server>>, headers: HeaderMap) -> Response<Body> {
    let n = s.hits.fetch_add(1, Ordering::SeqCst);
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    s.seen.lock().expect("lock").push(Seen {
        range: get("range"),
        auth: get("authorization"),
    });
    if let Some((status, retry_after)) = s.b.statuses.get(n as usize) {
        let mut r = Response::builder().status(*status);
        if let Some(ra) = retry_after {
            r = r.header("retry-after", *ra);
        }
        return r.body(Body::from("nope")).expect("response");
    }
    let len = s.data.len();
    let start = if s.b.honor_range {
        get("range").and_then(|r| {
            r.strip_prefix("bytes=")?
                .strip_suffix('-')?
                .parse::<usize>()
                .ok()
        })
    } else {
        None
    };
    if let Some(start) = start {
        if start >= len {
            return Response::builder()
                .status(416)
                .header("content-range", format!("bytes */{len}"))
                .body(Body::empty())
                .expect("response");
        }
    }
    let from = start.unwrap_or(0);
    let mut r = Response::builder()
        .status(if start.is_some() { 206 } else { 200 })
        .header("content-length", len - from)
        .header("accept-ranges", "bytes")
        .header("etag", "\"v1\"");
    if start.is_some() {
        r = r.header("content-range", format!("bytes {from}-{}/{len}", len - 1));
    }
    if !s.b.no_digest {
        let d =
            s.b.repr_digest
                .clone()
                .unwrap_or_else(|| repr_digest(&s.data));
        r = r.header("repr-digest", d);
    }
    // What this response really sends before ending (or breaking the connection).
    let mut end = len;
    let mut broken = false;
    if n < s.b.cut_first {
        end = from + (len - from) / 2;
        broken = true;
    }
    if let Some(short) = s.b.short_by {
        end = end.min(len - short);
        broken = true;
    }
    let end = end.max(from);
    let body = s.data.slice(from..end);
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..body.len())
        .step_by(64 * 1024)
        .map(|i| Ok(body.slice(i..(i + 64 * 1024).min(body.len()))))
        .collect();
    let stall = if n == 0 { s.b.stall_first } else { None };
    let tail = futures::stream::once(async move {
        // Pause first so the response head is flushed even when no body byte precedes the cut.
        tokio::time::sleep(stall.unwrap_or(Duration::from_millis(5))).await;
        Err(std::io::Error::other("connection cut by the test server"))
    });
    let stream = futures::stream::iter(chunks);
    let body = if broken {
        Body::from_stream(futures::StreamExt::chain(stream, tail))
    } else {
        Body::from_stream(stream)
    };
    r.body(body).expect("response")
}

async fn serve(data: Bytes, b: Behaviour) -> (Arc<Server>, url::Url) {
    let server = Arc::new(Server {
        data,
        b,
        hits: AtomicU32::new(0),
        seen: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .route("/files/{name}", axum::routing::get(handle))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let url = url::Url::parse(&format!(
        "http://{addr}/files/export-1.mbox.gpg?access_token=SECRET-TOKEN"
    ))
    .expect("url");
    (server, url)
}

// ---------------------------------------------------------------- helpers

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_interval: Duration::from_millis(2),
        factor: 2.0,
        max_interval: Duration::from_millis(10),
        max_elapsed: None,
        jitter: Jitter::None,
    }
}

/// Counts calls and hands out `Bearer t1`, `Bearer t2`, ...
fn counting_headers() -> (HeaderFn, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let f: HeaderFn = Arc::new(move |_| {
        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let mut h = HeaderMap::new();
            let v = HeaderValue::from_str(&format!("Bearer t{n}")).expect("a header value");
            h.insert("authorization", v);
            Ok(h)
        }
        .boxed()
    });
    (f, calls)
}

#[derive(Default)]
struct Recorder {
    started: Mutex<Vec<(String, Option<u64>, u64)>>,
    progress: Mutex<Vec<u64>>,
    retrying: Mutex<Vec<(u32, Duration, String)>>,
}

impl DownloadObserver for Recorder {
    fn started(&self, url: &str, total: Option<u64>, resumed_from: u64) {
        self.started
            .lock()
            .expect("lock")
            .push((url.to_string(), total, resumed_from));
    }
    fn progress(&self, bytes_so_far: u64) {
        self.progress.lock().expect("lock").push(bytes_so_far);
    }
    fn retrying(&self, attempt: u32, wait: Duration, reason: &str) {
        self.retrying
            .lock()
            .expect("lock")
            .push((attempt, wait, reason.to_string()));
    }
}

fn spec(url: &url::Url, dir: &Path) -> FileToFetch {
    FileToFetch {
        url: url.clone(),
        dest: dir.join("export-1.mbox.gpg"),
        expected_sha256: None,
        expected_size: None,
        expected_md5: None,
    }
}

fn part_of(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

async fn run(
    url: &url::Url,
    spec: &FileToFetch,
    rec: &Recorder,
) -> (Result<Downloaded, DownloadError>, Arc<AtomicU32>) {
    let _ = url;
    let (headers, calls) = counting_headers();
    let r = download(
        &client(),
        spec,
        &headers,
        &fast_policy(),
        rec,
        &CancellationToken::new(),
    )
    .await;
    (r, calls)
}

fn assert_identical(done: &Downloaded, data: &[u8]) {
    let on_disk = std::fs::read(&done.path).expect("final file");
    assert_eq!(on_disk.len(), data.len());
    assert_eq!(
        auditflow::durable::sha256_hex(&on_disk),
        auditflow::durable::sha256_hex(data)
    );
    assert_eq!(done.sha256, auditflow::durable::sha256_hex(data));
    assert_eq!(done.bytes, data.len() as u64);
    assert!(!part_of(&done.path).exists(), ".part left behind");
}

fn range_start(seen: &Seen) -> Option<u64> {
    seen.range
        .as_deref()?
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn plain_download_verifies_and_redacts() {
    let data = test_data(700_001);
    let (srv, url) = serve(data.clone(), Behaviour::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = Recorder::default();
    let s = spec(&url, dir.path());
    let (r, calls) = run(&url, &s, &rec).await;
    let done = r.expect("download");
    assert_identical(&done, &data);
    assert_eq!(done.attempts, 1);
    assert!(!done.resumed);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(srv.hits(), 1);
    assert!(!done.url.contains("SECRET"), "{}", done.url);
    assert!(done.url.ends_with("/files/export-1.mbox.gpg"));
    let started = rec.started.lock().expect("lock").clone();
    assert_eq!(started.len(), 1);
    assert!(!started[0].0.contains("SECRET"));
    assert_eq!(started[0].1, Some(data.len() as u64));
    assert_eq!(
        rec.progress.lock().expect("lock").last().copied(),
        Some(data.len() as u64)
    );
    assert!(!format!("{s:?}").contains("SECRET"));
}

#[tokio::test]
async fn connection_cut_half_way_is_resumed_with_range() {
    let data = test_data(2 * 1024 * 1024 + 17);
    let b = Behaviour {
        honor_range: true,
        cut_first: 1,
        ..Behaviour::default()
    };
    let (srv, url) = serve(data.clone(), b).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = Recorder::default();
    let (r, _) = run(&url, &spec(&url, dir.path()), &rec).await;
    let done = r.expect("download");
    assert_identical(&done, &data);
    assert!(done.resumed);
    assert_eq!(done.attempts, 2);
    let seen = srv.seen();
    assert_eq!(seen[0].range, None);
    let from = range_start(&seen[1]).expect("second request is a range request");
    assert!(from > 0 && from < data.len() as u64, "{from}");
    let started = rec.started.lock().expect("lock").clone();
    assert_eq!(started[1].2, from);
    let retrying = rec.retrying.lock().expect("lock").clone();
    assert_eq!(retrying.len(), 1);
    assert_eq!(retrying[0].0, 2);
    assert!(!retrying[0].2.contains("SECRET"));
}

#[tokio::test]
async fn server_ignoring_range_restarts_from_zero() {
    let data = test_data(1024 * 1024 + 5);
    let b = Behaviour {
        honor_range: false,
        cut_first: 1,
        ..Behaviour::default()
    };
    let (srv, url) = serve(data.clone(), b).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (r, _) = run(&url, &spec(&url, dir.path()), &Recorder::default()).await;
    let done = r.expect("download");
    assert_identical(&done, &data);
    assert!(!done.resumed);
    assert_eq!(done.attempts, 2);
    assert!(range_start(&srv.seen()[1]).is_some_and(|n| n > 0));
}

#[tokio::test]
async fn wrong_length_every_time_fails_with_length_and_no_final_file() {
    let data = test_data(300_000);
    let b = Behaviour {
        honor_range: true,
        short_by: Some(100),
        ..Behaviour::default()
    };
    let (srv, url) = serve(data.clone(), b).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = spec(&url, dir.path());
    let (r, _) = run(&url, &s, &Recorder::default()).await;
    match r {
        Err(DownloadError::Length {
            url: u,
            expected,
            got,
        }) => {
            assert_eq!(expected, 300_000);
            assert_eq!(got, 300_000 - 100);
            assert!(!u.contains("SECRET"));
        }
        other => panic!("expected a Length error, got {other:?}"),
    }
    assert_eq!(srv.hits(), 4, "all attempts used");
    assert!(!s.dest.exists(), "no final file");
    // The bytes that did arrive are kept for a later resume.
    assert_eq!(
        std::fs::metadata(part_of(&s.dest)).expect("part").len(),
        300_000 - 100
    );
}

#[tokio::test]
async fn size_differing_from_expected_fails_without_writing() {
    let data = test_data(50_000);
    let (srv, url) = serve(data.clone(), Behaviour::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = spec(&url, dir.path());
    s.expected_size = Some(50_001);
    let (r, _) = run(&url, &s, &Recorder::default()).await;
    assert!(
        matches!(
            r,
            Err(DownloadError::Length {
                expected: 50_001,
                got: 50_000,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(srv.hits(), 4);
    assert!(!s.dest.exists());
    assert!(!part_of(&s.dest).exists());
}

#[tokio::test]
async fn checksum_header_mismatch_fails_and_leaves_nothing() {
    let data = test_data(100_000);
    let b = Behaviour {
        repr_digest: Some(repr_digest(b"something else")),
        ..Behaviour::default()
    };
    let (srv, url) = serve(data.clone(), b).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = spec(&url, dir.path());
    let (r, _) = run(&url, &s, &Recorder::default()).await;
    match &r {
        Err(DownloadError::Checksum { expected, got, .. }) => {
            assert_eq!(expected, &auditflow::durable::sha256_hex(b"something else"));
            assert_eq!(got, &auditflow::durable::sha256_hex(&data));
        }
        other => panic!("expected a Checksum error, got {other:?}"),
    }
    assert_eq!(srv.hits(), 4);
    assert!(!s.dest.exists());
    assert!(!part_of(&s.dest).exists());
}

#[tokio::test]
async fn caller_expected_sha256_is_checked() {
    let data = test_data(10_000);
    let b = Behaviour {
        no_digest: true,
        ..Behaviour::default()
    };
    let (_srv, url) = serve(data.clone(), b).await;
    let dir = tempfile::tempdir().expect("tempdir");

    let mut good = spec(&url, dir.path());
    good.expected_sha256 = Some(format!(
        "sha256:{}",
        auditflow::durable::sha256_hex(&data).to_uppercase()
    ));
    good.expected_size = Some(data.len() as u64);
    let (r, _) = run(&url, &good, &Recorder::default()).await;
    assert_identical(&r.expect("download"), &data);

    let mut bad = spec(&url, dir.path());
    bad.dest = dir.path().join("other.gpg");
    bad.expected_sha256 = Some(auditflow::durable::sha256_hex(b"nope"));
    let (r, _) = run(&url, &bad, &Recorder::default()).await;
    assert!(matches!(r, Err(DownloadError::Checksum { .. })), "{r:?}");
    assert!(!bad.dest.exists());

    let mut malformed = spec(&url, dir.path());
    malformed.dest = dir.path().join("third.gpg");
    malformed.expected_sha256 = Some("abc".into());
    let (r, _) = run(&url, &malformed, &Recorder::default()).await;
    match r {
        Err(e @ DownloadError::Checksum { .. }) => {
            assert!(e.to_string().contains("not 64 hex digits"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn not_found_fails_at_once() {
    let data = test_data(10);
    let b = Behaviour {
        statuses: vec![(404, None); 10],
        ..Behaviour::default()
    };
    let (srv, url) = serve(data, b).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = Recorder::default();
    let s = spec(&url, dir.path());
    let (r, calls) = run(&url, &s, &rec).await;
    match r {
        Err(e @ DownloadError::Http { status: 404, .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("404"), "{msg}");
            assert!(!msg.contains("SECRET"), "{msg}");
        }
        other => panic!("expected HTTP 404, got {other:?}"),
    }
    assert_eq!(srv.hits(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(rec.retrying.lock().expect("lock").is_empty());
    assert!(!s.dest.exists() && !part_of(&s.dest).exists());
}

#[tokio::test]
async fn unavailable_then_ok_takes_two_attempts_and_honours_retry_after() {
    let data = test_data(20_000);
    let b = Behaviour {
        statuses: vec![(503, Some("1"))],
        ..Behaviour::default()
    };
    let (srv, url) = serve(data.clone(), b).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = Recorder::default();
    let started = std::time::Instant::now();
    let (r, calls) = run(&url, &spec(&url, dir.path()), &rec).await;
    let done = r.expect("download");
    assert_identical(&done, &data);
    assert_eq!(done.attempts, 2);
    assert_eq!(srv.hits(), 2);
    assert!(started.elapsed() >= Duration::from_secs(1));
    let retrying = rec.retrying.lock().expect("lock").clone();
    assert_eq!(retrying.len(), 1);
    assert!(retrying[0].1 >= Duration::from_secs(1), "{:?}", retrying[0]);
    assert!(retrying[0].2.contains("503"));
    // Auth headers are fetched again for every attempt.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let auths: Vec<_> = srv.seen().into_iter().map(|s| s.auth).collect();
    assert_eq!(
        auths,
        vec![Some("Bearer t1".to_string()), Some("Bearer t2".to_string())]
    );
}

#[tokio::test]
async fn part_from_an_earlier_run_is_resumed() {
    let data = test_data(1_000_000);
    let b = Behaviour {
        honor_range: true,
        ..Behaviour::default()
    };
    let (srv, url) = serve(data.clone(), b).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = spec(&url, dir.path());
    std::fs::write(part_of(&s.dest), &data[..123_457]).expect("write part");
    let rec = Recorder::default();
    let (r, _) = run(&url, &s, &rec).await;
    let done = r.expect("download");
    assert_identical(&done, &data);
    assert!(done.resumed);
    assert_eq!(done.attempts, 1);
    assert_eq!(range_start(&srv.seen()[0]), Some(123_457));
    assert_eq!(rec.started.lock().expect("lock")[0].2, 123_457);
}

#[tokio::test]
async fn corrupt_part_from_an_earlier_run_is_caught_and_refetched() {
    let data = test_data(200_000);
    let b = Behaviour {
        honor_range: true,
        ..Behaviour::default()
    };
    let (srv, url) = serve(data.clone(), b).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = spec(&url, dir.path());
    let mut bad = data[..50_000].to_vec();
    bad[10] ^= 0xFF;
    std::fs::write(part_of(&s.dest), &bad).expect("write part");
    let (r, _) = run(&url, &s, &Recorder::default()).await;
    let done = r.expect("download");
    assert_identical(&done, &data);
    assert!(!done.resumed);
    assert_eq!(done.attempts, 2);
    let seen = srv.seen();
    assert_eq!(range_start(&seen[0]), Some(50_000));
    assert_eq!(seen[1].range, None);
}

#[tokio::test]
async fn complete_part_is_finished_on_416_and_overlong_part_restarts() {
    let data = test_data(64_000);
    let b = Behaviour {
        honor_range: true,
        ..Behaviour::default()
    };
    let (srv, url) = serve(data.clone(), b).await;
    let dir = tempfile::tempdir().expect("tempdir");

    // A run that stopped between the last byte and the rename.
    let s = spec(&url, dir.path());
    std::fs::write(part_of(&s.dest), &data).expect("write part");
    let (r, _) = run(&url, &s, &Recorder::default()).await;
    let done = r.expect("download");
    assert_identical(&done, &data);
    assert_eq!(done.attempts, 1);

    // A .part longer than the file: 416, then one restart from zero.
    let mut s2 = spec(&url, dir.path());
    s2.dest = dir.path().join("second.gpg");
    let mut long = data.to_vec();
    long.extend_from_slice(b"trailing junk");
    std::fs::write(part_of(&s2.dest), &long).expect("write part");
    let (r, _) = run(&url, &s2, &Recorder::default()).await;
    let done = r.expect("download");
    assert_identical(&done, &data);
    assert_eq!(done.attempts, 2);
    assert!(!done.resumed);
    assert_eq!(srv.hits(), 3);
}

#[tokio::test]
async fn auth_failure_is_reported_without_a_request() {
    let (srv, url) = serve(test_data(10), Behaviour::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let headers: HeaderFn = Arc::new(|_| {
        async {
            Err(auditflow::vendors::VendorError::Auth {
                vendor: auditflow::vendors::VendorKind::Google,
                status: Some(400),
                message: "token endpoint said invalid_grant".to_string(),
                retryable: false,
            })
        }
        .boxed()
    });
    let r = download(
        &client(),
        &spec(&url, dir.path()),
        &headers,
        &fast_policy(),
        &Recorder::default(),
        &CancellationToken::new(),
    )
    .await;
    match r {
        Err(e @ DownloadError::Auth { .. }) => {
            assert!(e.to_string().contains("invalid_grant"));
            assert!(!e.to_string().contains("SECRET"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(srv.hits(), 0);
}

#[tokio::test]
async fn cancel_mid_body_keeps_the_part_and_a_stall_is_retried() {
    let data = test_data(1024 * 1024);
    let b = Behaviour {
        honor_range: true,
        cut_first: 1,
        stall_first: Some(Duration::from_secs(30)),
        ..Behaviour::default()
    };
    let (_srv, url) = serve(data.clone(), b).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = spec(&url, dir.path());
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.cancel();
    });
    let (headers, _) = counting_headers();
    let r = download(
        &client(),
        &s,
        &headers,
        &fast_policy(),
        &Recorder::default(),
        &cancel,
    )
    .await;
    match r {
        Err(e @ DownloadError::Cancelled { .. }) => assert!(!e.to_string().contains("SECRET")),
        other => panic!("{other:?}"),
    }
    assert!(!s.dest.exists());
    let kept = std::fs::metadata(part_of(&s.dest)).expect("part").len();
    assert_eq!(kept, data.len() as u64 / 2);

    // Same server state (first request was the stalled one): a short stall timeout
    // turns a hung body into a retry that resumes.
    let b = Behaviour {
        honor_range: true,
        cut_first: 1,
        stall_first: Some(Duration::from_secs(30)),
        ..Behaviour::default()
    };
    let (_srv, url) = serve(data.clone(), b).await;
    let s = FileToFetch {
        dest: dir.path().join("stalled.gpg"),
        ..spec(&url, dir.path())
    };
    let rec = Recorder::default();
    let r = download_with_options(
        &client(),
        &s,
        &headers,
        &fast_policy(),
        &rec,
        &CancellationToken::new(),
        &DownloadOptions {
            stall_timeout: Duration::from_millis(300),
        },
    )
    .await;
    let done = r.expect("download");
    assert_identical(&done, &data);
    assert!(done.resumed);
    assert!(rec.retrying.lock().expect("lock")[0].2.contains("stalled"));
}

#[tokio::test]
async fn parallel_downloads_are_independent_and_same_target_is_refused() {
    let data = test_data(3 * 1024 * 1024);
    let b = Behaviour {
        honor_range: true,
        cut_first: 2,
        ..Behaviour::default()
    };
    let (_srv, url) = serve(data.clone(), b).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = client();
    let (headers, _) = counting_headers();
    let policy = fast_policy();
    let cancel = CancellationToken::new();
    let specs: Vec<FileToFetch> = (0..4)
        .map(|i| FileToFetch {
            dest: dir.path().join(format!("f{i}.gpg")),
            ..spec(&url, dir.path())
        })
        .collect();
    let rec = Recorder::default();
    let results = futures::future::join_all(
        specs
            .iter()
            .map(|s| download(&client, s, &headers, &policy, &rec, &cancel)),
    )
    .await;
    for r in results {
        assert_identical(&r.expect("download"), &data);
    }

    // Two downloads to one file at once would share a .part: the second is refused.
    let same = spec(&url, dir.path());
    let (a, b) = tokio::join!(
        download(&client, &same, &headers, &policy, &rec, &cancel),
        download(&client, &same, &headers, &policy, &rec, &cancel)
    );
    let refused = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(DownloadError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists))
        .count();
    assert_eq!(refused, 1, "{a:?} {b:?}");
    assert!(a.is_ok() || b.is_ok());
}

#[test]
fn unsafe_names_are_rejected() {
    let dir = Path::new("/exports");
    for bad in [
        "..",
        ".",
        "",
        "../etc/passwd",
        "a/b",
        "/etc/passwd",
        "a\\b",
        "a\u{7}b",
        "a\rb",
    ] {
        assert!(
            matches!(safe_join(dir, bad), Err(DownloadError::BadName { .. })),
            "{bad:?}"
        );
    }
    assert_eq!(
        safe_join(dir, "export-1.mbox.gpg").expect("ok"),
        Path::new("/exports/export-1.mbox.gpg")
    );
    for bad in [
        "https://h/dl/..%2Fsecret",
        "https://h/dl/%2Fetc%2Fpasswd",
        "https://h/dl/",
        "https://h/dl/a%0Db",
    ] {
        let u = url::Url::parse(bad).expect("url");
        assert!(file_name_from_url(&u).is_err(), "{bad}");
    }
    let u = url::Url::parse("https://h/dl/export%201.mbox.gpg?access_token=SECRET").expect("url");
    assert_eq!(file_name_from_url(&u).expect("name"), "export 1.mbox.gpg");
}

#[test]
fn redaction_strips_tokens() {
    let u = url::Url::parse("https://me:pw@h.example/dl/x.gpg?access_token=SECRET&alt=media#f")
        .expect("url");
    let r = redact_url(&u);
    assert_eq!(r, "https://h.example/dl/x.gpg");
}

#[test]
fn download_future_is_send() {
    fn assert_send<T: Send>(_: T) {}
    let client = client();
    let url = url::Url::parse("http://127.0.0.1:9/x").expect("url");
    let s = spec(&url, Path::new("/tmp"));
    let (headers, _) = counting_headers();
    let policy = fast_policy();
    let rec = Recorder::default();
    let cancel = CancellationToken::new();
    assert_send(download(&client, &s, &headers, &policy, &rec, &cancel));
    let _ = StatusCode::OK;
}
