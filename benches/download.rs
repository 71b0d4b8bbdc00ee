//! Benchmark: `steps::download` against `curl -s -o` on a generated 1 GiB loopback download.
//!
//! Run: `cargo bench --bench download` (env: `AUDITFLOW_BENCH_BYTES`, default 1 GiB;
//! `AUDITFLOW_BENCH_DIR`, default the system temp dir; `AUDITFLOW_BENCH_ROUNDS`, default 3).
//! An in-process axum server streams a deterministic pattern (a 1 MiB block repeated, never
//! the whole file in memory). Each round downloads it once with `download()` in a child
//! process (this binary re-executed, so its peak RSS is its own) and once with curl, and
//! deletes both files. The child reads its peak RSS from /proc/self/status (VmHWM).
//! auditflow also hashes (SHA-256) and fsyncs, which plain curl does not: the extra columns
//! time curl followed by an fsync, and by an fsync plus `openssl dgst -sha256`.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auditflow::retry::RetryPolicy;
use auditflow::steps::download::{download, FileToFetch, HeaderFn, NoProgress};
use axum::body::Body;
use axum::http::Response;
use base64::Engine as _;
use bytes::Bytes;
use futures::FutureExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const BLOCK: usize = 1024 * 1024;
const CHILD_ENV: &str = "AUDITFLOW_BENCH_CHILD";

fn main() {
    if let Ok(arg) = std::env::var(CHILD_ENV) {
        child(&arg);
        return;
    }
    if let Err(e) = parent() {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pattern_block() -> Bytes {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut v = Vec::with_capacity(BLOCK);
    while v.len() < BLOCK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(BLOCK);
    Bytes::from(v)
}

fn pattern_sha256(block: &[u8], size: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        h.update(&block[..n]);
        left -= n as u64;
    }
    h.finalize().into()
}

fn parent() -> Result<(), String> {
    let size = env_u64("AUDITFLOW_BENCH_BYTES", 1 << 30);
    let rounds = env_u64("AUDITFLOW_BENCH_ROUNDS", 3).max(1);
    let dir = tempfile::Builder::new()
        .prefix("auditflow-bench-")
        .tempdir_in(
            std::env::var_os("AUDITFLOW_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
        )
        .map_err(|e| format!("temp dir: {e}"))?;
    let block = pattern_block();
    let sha = pattern_sha256(&block, size);
    let (rt, url) = serve_pattern(block, sha, size)?;
    let mib = size as f64 / (1024.0 * 1024.0);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;

    println!(
        "download benchmark: {mib:.0} MiB over loopback, files in {}",
        dir.path().display()
    );
    println!(
        "{:<5} {:>22} {:>12} {:>14} {:>18} {:>12} {:>12}",
        "round",
        "auditflow MiB/s (in)",
        "curl MiB/s",
        "curl+fsync",
        "curl+fsync+sha256",
        "ratio",
        "peak RSS"
    );
    let mut all = Vec::new();
    for round in 1..=rounds {
        let r = one_round(&exe, &url, dir.path(), &hex::encode(sha), mib)?;
        println!(
            "{round:<5} {:>14.0} ({:>5.0}) {:>12.0} {:>14.0} {:>18.0} {:>11.2}x {:>8.1} MiB",
            r.ours,
            r.ours_inner,
            r.curl,
            r.curl_sync,
            r.curl_hash,
            r.ours / r.curl,
            r.rss_kib as f64 / 1024.0
        );
        all.push(r);
    }
    print_medians(&all);
    if Path::new("/usr/bin/time").exists() {
        time_one_more(&exe, &url, dir.path())?;
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Serves `size` bytes of the pattern with their `Repr-Digest` from a runtime of its own
/// (so the parent's measurements do not share it); returns it and the URL (with a token in
/// the query, as pre-signed links have).
fn serve_pattern(
    block: bytes::Bytes,
    sha: [u8; 32],
    size: u64,
) -> Result<(tokio::runtime::Runtime, String), String> {
    let digest = format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(sha)
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let state = Arc::new((block, digest));
    let app = axum::Router::new().route(
        "/export.mbox.gpg",
        axum::routing::get(move || {
            let state = state.clone();
            async move {
                let block = state.0.clone();
                let stream = futures::stream::unfold(0u64, move |sent| {
                    let block = block.clone();
                    async move {
                        if sent >= size {
                            return None;
                        }
                        let n = (size - sent).min(BLOCK as u64) as usize;
                        Some((Ok::<_, std::io::Error>(block.slice(..n)), sent + n as u64))
                    }
                });
                Response::builder()
                    .header("content-length", size)
                    .header("repr-digest", state.1.clone())
                    .body(Body::from_stream(stream))
                    .unwrap_or_default()
            }
        }),
    );
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((
        rt,
        format!("http://{addr}/export.mbox.gpg?access_token=bench-token"),
    ))
}

/// One round's rates in MiB/s and the child's peak RSS.
struct RoundRates {
    /// auditflow, the child process's wall time.
    ours: f64,
    /// auditflow, the time the child measured inside.
    ours_inner: f64,
    curl: f64,
    curl_sync: f64,
    /// NaN when `openssl` is missing or disagrees.
    curl_hash: f64,
    rss_kib: u64,
}

/// auditflow in a child process (its SHA-256 checked), then curl, curl with an fsync, and
/// curl with an fsync and the SHA-256 of the file (openssl).
fn one_round(
    exe: &Path,
    url: &str,
    dir: &Path,
    sha_hex: &str,
    mib: f64,
) -> Result<RoundRates, String> {
    let dest = dir.join("auditflow.bin");
    let started = Instant::now();
    let out = Command::new(exe)
        .env(CHILD_ENV, format!("{url} {}", dest.display()))
        .output()
        .map_err(|e| format!("child: {e}"))?;
    let ours = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!(
            "child failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    let (got_sha, rss_kib, inner) = match fields.as_slice() {
        [s, r, i, ..] => (
            s.to_string(),
            r.parse::<u64>().unwrap_or(0),
            i.parse::<f64>().unwrap_or(0.0),
        ),
        _ => return Err(format!("unexpected child output: {stdout}")),
    };
    if got_sha != sha_hex {
        return Err(format!("sha mismatch: {got_sha} vs {sha_hex}"));
    }
    let _ = std::fs::remove_file(&dest);

    // curl, plain and followed by an fsync of the file (auditflow syncs before renaming).
    let curl_dest = dir.join("curl.bin");
    let curl = time_curl(url, &curl_dest, false)?;
    let _ = std::fs::remove_file(&curl_dest);
    let curl_sync = time_curl(url, &curl_dest, true)?;
    // The same work as auditflow: curl, then SHA-256 of the file (openssl, SHA-NI when
    // the CPU has it), then fsync.
    let hash_started = Instant::now();
    let hashed = Command::new("openssl")
        .args(["dgst", "-sha256"])
        .arg(&curl_dest)
        .output()
        .ok()
        .filter(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(sha_hex))
        .map(|_| curl_sync + hash_started.elapsed());
    let _ = std::fs::remove_file(&curl_dest);
    Ok(RoundRates {
        ours: mib / ours.as_secs_f64(),
        ours_inner: mib / inner,
        curl: mib / curl.as_secs_f64(),
        curl_sync: mib / curl_sync.as_secs_f64(),
        curl_hash: hashed.map_or(f64::NAN, |d| mib / d.as_secs_f64()),
        rss_kib,
    })
}

/// The medians of the rounds and the largest peak RSS.
fn print_medians(all: &[RoundRates]) {
    let med = |f: fn(&RoundRates) -> f64| {
        let mut v: Vec<f64> = all.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (o, c, cs, ch) = (
        med(|r| r.ours),
        med(|r| r.curl),
        med(|r| r.curl_sync),
        med(|r| r.curl_hash),
    );
    println!(
        "median: auditflow {o:.0} MiB/s, curl {c:.0} MiB/s, curl+fsync {cs:.0}, curl+fsync+sha256 {ch:.0}; ratio {:.2}x vs curl ({:.2}x vs curl+fsync, {:.2}x vs curl+fsync+sha256); auditflow peak RSS {:.1} MiB (max over rounds)",
        o / c,
        o / cs,
        o / ch,
        all.iter().map(|r| r.rss_kib).max().unwrap_or(0) as f64 / 1024.0
    );
}

/// One more auditflow child and one more curl under `/usr/bin/time` (peak RSS, CPU).
fn time_one_more(exe: &Path, url: &str, dir: &Path) -> Result<(), String> {
    const FORMAT: &str = "%M KiB max RSS, %U s user, %S s system, %e s wall";
    let last_line = |out: std::process::Output| {
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let dest = dir.join("auditflow.bin");
    let out = Command::new("/usr/bin/time")
        .args(["-f", FORMAT])
        .arg(exe)
        .env(CHILD_ENV, format!("{url} {}", dest.display()))
        .output()
        .map_err(|e| format!("time: {e}"))?;
    let _ = std::fs::remove_file(&dest);
    println!(
        "/usr/bin/time, one more auditflow child: {}",
        last_line(out)
    );
    let curl_dest = dir.join("curl.bin");
    let out = Command::new("/usr/bin/time")
        .args(["-f", FORMAT])
        .args(["curl", "-s", "--noproxy", "*", "-o"])
        .arg(&curl_dest)
        .arg(url)
        .output()
        .map_err(|e| format!("time: {e}"))?;
    let _ = std::fs::remove_file(&curl_dest);
    println!(
        "/usr/bin/time, one more curl:             {}",
        last_line(out)
    );
    Ok(())
}

fn time_curl(url: &str, dest: &Path, fsync: bool) -> Result<Duration, String> {
    let started = Instant::now();
    let status = Command::new("curl")
        .args(["-s", "--noproxy", "*", "-o"])
        .arg(dest)
        .arg(url)
        .status()
        .map_err(|e| format!("curl: {e}"))?;
    if !status.success() {
        return Err(format!("curl failed: {status}"));
    }
    if fsync {
        std::fs::File::open(dest)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("fsync: {e}"))?;
    }
    Ok(started.elapsed())
}

/// Child: download once, print `sha256 vmhwm_kib seconds`.
fn child(arg: &str) {
    let Some((url, dest)) = arg.split_once(' ') else {
        eprintln!("bad child argument");
        std::process::exit(2);
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(2);
        }
    };
    let result = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let url = url::Url::parse(url).map_err(|e| e.to_string())?;
        let spec = FileToFetch {
            url,
            dest: PathBuf::from(dest),
            expected_sha256: None,
            expected_size: None,
            expected_md5: None,
        };
        let headers: HeaderFn = Arc::new(|_| {
            async {
                let mut h = reqwest::header::HeaderMap::new();
                h.insert(
                    reqwest::header::AUTHORIZATION,
                    reqwest::header::HeaderValue::from_static("Bearer bench"),
                );
                Ok(h)
            }
            .boxed()
        });
        let started = Instant::now();
        let done = download(
            &client,
            &spec,
            &headers,
            &RetryPolicy::default(),
            &NoProgress,
            &CancellationToken::new(),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok::<_, String>((done, started.elapsed()))
    });
    match result {
        Ok((done, took)) => println!("{} {} {}", done.sha256, vm_hwm_kib(), took.as_secs_f64()),
        Err(e) => {
            eprintln!("download failed: {e}");
            std::process::exit(1);
        }
    }
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
