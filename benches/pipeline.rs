//! Benchmark: download and decrypt pipelined (`download_then_decrypt`) against each alone.
//!
//! Run with `cargo bench --bench pipeline` (release). Prints figures, asserts nothing. Env:
//! `AUDITFLOW_BENCH_PIPE_FILES` (default 4) files of `AUDITFLOW_BENCH_PIPE_MIB` (default 64)
//! MiB of plaintext each, `AUDITFLOW_BENCH_ROUNDS` (default 3). Needs `gpg` and `sync`.
//!
//! Setup (not timed): an RSA-3072 key with a passphrase in a throwaway GNUPGHOME (as in
//! `benches/decrypt.rs`), N compressible mbox-like plaintexts encrypted with gpg defaults, the
//! armored secret key exported to a file. An in-process axum server on 127.0.0.1 (its own
//! one-thread runtime) streams the encrypted files from disk with Content-Length.
//!
//! Each round, after a `sync` before each part, times (wall clock):
//! (a) `steps::download::download` of all N files, 4 at a time;
//! (b) `steps::decrypt::decrypt_file` of the N files downloaded in (a), on the blocking pool,
//!     `available_parallelism()` at a time (the engine's default), after one key unlock (timed
//!     with it, as the `decrypt` step does);
//! (c) `steps::download_and_decrypt::download_then_decrypt`, the engine's pipelined download + decrypt
//!     (it unlocks the key itself, inside the timed part).
//!
//! The target (the project's issue) is (c) <= 1.1 x max(a, b). Process CPU time (user +
//! system, from /proc/self/stat, includes the server thread) is printed for each part.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auditflow::events::Emitter;
use auditflow::retry::RetryPolicy;
use auditflow::secrets::Secrets;
use auditflow::steps::decrypt::{decrypt_file, output_name, DecryptionKey};
use auditflow::steps::download::{download, FileToFetch, HeaderFn, NoProgress};
use auditflow::steps::download_and_decrypt::download_then_decrypt;
use auditflow::steps::StepEnv;
use auditflow::vendors::{Connection, ConnectionSettings};
use auditflow::workflow::file_plan::{DecryptAction, DownloadAction};
use auditflow::workflow::model::{DecryptSpec, DownloadSpec};
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{Response, StatusCode};
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

mod common;
use common::{make_key, path_str, sha256_file, sync, write_plaintext, Res, PASSPHRASE};
/// Files downloaded at once in (a) and (c) (the `download` step's default).
const DOWNLOAD_CONCURRENCY: usize = 4;

fn main() {
    if let Err(e) = bench() {
        eprintln!("pipeline bench: {e}");
        std::process::exit(1);
    }
}

fn env_u64(name: &str, default: u64) -> Res<u64> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|e| format!("{name}={v}: {e}")),
        Err(_) => Ok(default),
    }
}

/// Process CPU time (user + system, all threads) in seconds; /proc ticks at 100 Hz.
fn cpu_s() -> f64 {
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    match (
        f.get(11).and_then(|v| v.parse::<u64>().ok()),
        f.get(12).and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(u), Some(s)) => (u + s) as f64 / 100.0,
        _ => f64::NAN,
    }
}

/// The encrypted files and what their plaintexts hash to.
struct Fixture {
    key_path: PathBuf,
    /// (file name, encrypted path, plaintext SHA-256)
    files: Vec<(String, PathBuf, String)>,
}

fn setup(work: &Path, home: &Path, n_files: u64, mib: u64) -> Res<Fixture> {
    let key_path = make_key(work, home)?;

    eprintln!("writing {n_files} x {mib} MiB of plaintext and encrypting it (gpg defaults) ...");
    let src = work.join("served");
    fs::create_dir(&src).map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    let mut children = Vec::new();
    for i in 0..n_files {
        let plain = work.join(format!("plain{i}.mbox"));
        write_plaintext(&plain, mib << 20, i)?;
        let sha = sha256_file(&plain)?;
        let name = format!("export{i}.mbox.gpg");
        let encrypted = src.join(&name);
        let child = common::gpg_encrypt(home, &plain, &encrypted)?
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("gpg --encrypt: {e}"))?;
        children.push((child, plain));
        files.push((name, encrypted, sha));
    }
    for (child, plain) in children {
        let out = child
            .wait_with_output()
            .map_err(|e| format!("gpg --encrypt: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "gpg --encrypt failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        fs::remove_file(&plain).map_err(|e| e.to_string())?;
    }
    // Warm the page cache, so the server never waits for the disk.
    for (_, p, _) in &files {
        sha256_file(p)?;
    }
    Ok(Fixture { key_path, files })
}

/// Serves `dir/{name}` for the fixture's names, streamed from disk with Content-Length.
async fn serve_file(
    State(allowed): State<Arc<Vec<(String, PathBuf)>>>,
    UrlPath(name): UrlPath<String>,
) -> Response<Body> {
    let Some((_, path)) = allowed.iter().find(|(n, _)| *n == name) else {
        return status(StatusCode::NOT_FOUND);
    };
    let Ok(file) = tokio::fs::File::open(path).await else {
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let Ok(meta) = file.metadata().await else {
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    Response::builder()
        .header("content-length", meta.len())
        .header("content-type", "application/octet-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR))
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    r
}

fn fresh_dir(parent: &Path, name: &str) -> Res<PathBuf> {
    let d = parent.join(name);
    if d.exists() {
        fs::remove_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    Ok(d)
}

fn check(what: &str, got: &[(PathBuf, String)], fx: &Fixture) -> Res<()> {
    if got.len() != fx.files.len() {
        return Err(format!(
            "{what}: {} files, expected {}",
            got.len(),
            fx.files.len()
        ));
    }
    for ((path, sha), (_, _, want)) in got.iter().zip(&fx.files) {
        if sha != want {
            return Err(format!(
                "{what}: {} has the wrong plaintext",
                path.display()
            ));
        }
    }
    Ok(())
}

struct Round {
    download_s: f64,
    /// The key unlock, part of `decrypt_s`.
    key_s: f64,
    decrypt_s: f64,
    pipelined_s: f64,
    cpu: [f64; 3],
}

fn bench() -> Res<()> {
    let n_files = env_u64("AUDITFLOW_BENCH_PIPE_FILES", 4)?.max(1);
    let mib = env_u64("AUDITFLOW_BENCH_PIPE_MIB", 64)?.max(1);
    let rounds = env_u64("AUDITFLOW_BENCH_ROUNDS", 3)?.max(1);
    let work = tempfile::Builder::new()
        .prefix("afbench-pipe")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    let home = work.path().join("g");
    fs::create_dir(&home).map_err(|e| e.to_string())?;
    let result = run_rounds(work.path(), &home, n_files, mib, rounds);
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", &home)
        .args(["--kill", "all"])
        .status();
    result
}

/// Makes the fixture, serves it, measures `rounds` rounds of the three ways and reports.
fn run_rounds(work: &Path, home: &Path, n_files: u64, mib: u64, rounds: u64) -> Res<()> {
    let fx = setup(work, home, n_files, mib)?;
    let enc_total: u64 = fx
        .files
        .iter()
        .map(|(_, p, _)| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let (server_rt, urls) = serve_fixture(&fx)?;
    let client = Client::new(urls, work.join("out"))?;
    let mut results = Vec::new();
    for round in 1..=rounds {
        let r = client.round(&fx)?;
        eprintln!(
            "round {round}: download {:.2} s, decrypt {:.2} s, pipelined {:.2} s",
            r.download_s, r.decrypt_s, r.pipelined_s
        );
        results.push(r);
    }
    let decrypt_conc = client.decrypt_conc;
    drop(client);
    server_rt.shutdown_timeout(Duration::from_secs(1));
    report(&results, n_files, mib, enc_total, decrypt_conc);
    Ok(())
}

/// Serves the fixture's files from a one-thread runtime of its own (as in
/// benches/download.rs); returns the runtime and the files' URLs.
fn serve_fixture(fx: &Fixture) -> Res<(tokio::runtime::Runtime, Vec<String>)> {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let allowed: Arc<Vec<(String, PathBuf)>> = Arc::new(
        fx.files
            .iter()
            .map(|(n, p, _)| (n.clone(), p.clone()))
            .collect(),
    );
    let app = axum::Router::new()
        .route("/files/{name}", axum::routing::get(serve_file))
        .with_state(allowed);
    server_rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let urls: Vec<String> = fx
        .files
        .iter()
        .map(|(n, _, _)| format!("http://{addr}/files/{n}"))
        .collect();
    Ok((server_rt, urls))
}

/// The client side: the runtime `auditflow` itself uses (multi-thread, default sizes), a
/// plain connection, and what the steps need.
struct Client {
    rt: tokio::runtime::Runtime,
    conn: Connection,
    emitter: Emitter,
    cancel: CancellationToken,
    no_headers: HeaderFn,
    retry: RetryPolicy,
    decrypt_conc: usize,
    urls: Vec<String>,
    out: PathBuf,
}

impl Client {
    fn new(urls: Vec<String>, out: PathBuf) -> Res<Client> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let secrets = Secrets::new();
        let conn = Connection::new(ConnectionSettings::plain(), secrets.clone())
            .map_err(|e| e.to_string())?;
        fs::create_dir(&out).map_err(|e| e.to_string())?;
        Ok(Client {
            rt,
            conn,
            emitter: Emitter::new(vec![], secrets),
            cancel: CancellationToken::new(),
            no_headers: Arc::new(|_| Box::pin(async { Ok(reqwest::header::HeaderMap::new()) })),
            retry: RetryPolicy::default(),
            decrypt_conc: std::thread::available_parallelism()
                .map(std::num::NonZero::get)
                .unwrap_or(2),
            urls,
            out,
        })
    }

    /// One round: (a) download alone, (b) decrypt alone (the files of (a)), (c) pipelined.
    fn round(&self, fx: &Fixture) -> Res<Round> {
        let dl_dir = fresh_dir(&self.out, "a-download")?;
        fs::create_dir(&dl_dir).map_err(|e| e.to_string())?;
        let (download_s, download_cpu, downloaded) = self.download_alone(fx, &dl_dir)?;
        let dec_dir = fresh_dir(&self.out, "b-decrypt")?;
        fs::create_dir(&dec_dir).map_err(|e| e.to_string())?;
        let (decrypt_s, key_s, decrypt_cpu) = self.decrypt_alone(fx, &downloaded, &dec_dir)?;
        fs::remove_dir_all(&dl_dir).map_err(|e| e.to_string())?;
        fs::remove_dir_all(&dec_dir).map_err(|e| e.to_string())?;
        let (pipelined_s, pipelined_cpu) = self.pipelined(fx)?;
        Ok(Round {
            download_s,
            decrypt_s,
            key_s,
            pipelined_s,
            cpu: [download_cpu, decrypt_cpu, pipelined_cpu],
        })
    }

    /// (a) The files downloaded into `dl_dir`: wall and CPU seconds, and the downloads.
    fn download_alone(
        &self,
        fx: &Fixture,
        dl_dir: &Path,
    ) -> Res<(f64, f64, Vec<auditflow::steps::download::Downloaded>)> {
        let specs: Vec<FileToFetch> = fx
            .files
            .iter()
            .zip(&self.urls)
            .map(|((n, _, _), u)| {
                Ok(FileToFetch {
                    url: url::Url::parse(u).map_err(|e| e.to_string())?,
                    dest: dl_dir.join(n),
                    expected_sha256: None,
                    expected_size: None,
                    expected_md5: None,
                })
            })
            .collect::<Res<_>>()?;
        sync()?;
        let (t, c) = (Instant::now(), cpu_s());
        let (client, headers) = (self.conn.client(), &self.no_headers);
        let downloaded = self.rt.block_on(async {
            futures::stream::iter(&specs)
                .map(|s| download(client, s, headers, &self.retry, &NoProgress, &self.cancel))
                .buffered(DOWNLOAD_CONCURRENCY)
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| e.to_string())
        })?;
        Ok((t.elapsed().as_secs_f64(), cpu_s() - c, downloaded))
    }

    /// (b) The downloads decrypted into `dec_dir`, checked: wall seconds, of which the key
    /// unlock, and CPU seconds.
    fn decrypt_alone(
        &self,
        fx: &Fixture,
        downloaded: &[auditflow::steps::download::Downloaded],
        dec_dir: &Path,
    ) -> Res<(f64, f64, f64)> {
        sync()?;
        let (t, c) = (Instant::now(), cpu_s());
        // Once for all files, as the `decrypt` step does (and (c) inside its time).
        let key = Arc::new(
            DecryptionKey::load(&fx.key_path, Some(PASSPHRASE)).map_err(|e| e.to_string())?,
        );
        let key_s = t.elapsed().as_secs_f64();
        let decrypted = self.rt.block_on(async {
            futures::stream::iter(downloaded)
                .map(|d| {
                    let (key, input) = (key.clone(), d.path.clone());
                    let output = dec_dir.join(output_name(&input));
                    async move {
                        tokio::task::spawn_blocking(move || decrypt_file(&key, &input, &output))
                            .await
                            .map_err(|e| e.to_string())?
                            .map_err(|e| e.to_string())
                    }
                })
                .buffered(self.decrypt_conc)
                .try_collect::<Vec<_>>()
                .await
        })?;
        let decrypt_s = t.elapsed().as_secs_f64();
        let decrypt_cpu = cpu_s() - c;
        let got: Vec<(PathBuf, String)> = decrypted
            .iter()
            .map(|d| (d.path.clone(), d.sha256.to_hex()))
            .collect();
        check("decrypt alone", &got, fx)?;
        Ok((decrypt_s, key_s, decrypt_cpu))
    }

    /// (c) Download and decrypt pipelined, through the engine's function, checked: wall
    /// and CPU seconds.
    fn pipelined(&self, fx: &Fixture) -> Res<(f64, f64)> {
        let p_dl = fresh_dir(&self.out, "c-download")?;
        let p_dec = fresh_dir(&self.out, "c-decrypt")?;
        let dl_spec: DownloadSpec = serde_json::from_value(serde_json::json!({
            "urls": self.urls,
            "to": path_str(&p_dl)?,
            "concurrency": DOWNLOAD_CONCURRENCY,
        }))
        .map_err(|e| format!("download spec: {e}"))?;
        let dec_spec: DecryptSpec = serde_json::from_value(serde_json::json!({
            "files": "{{ steps.fetch.files }}",
            "key": path_str(&fx.key_path)?,
            "passphrase": "{{ env.BENCH_PASSPHRASE }}",
            "to": path_str(&p_dec)?,
        }))
        .map_err(|e| format!("decrypt spec: {e}"))?;
        // As the plan holds them: their templates compiled.
        let dl_spec = DownloadAction::of("download", &dl_spec).map_err(|e| e.to_string())?;
        let dec_spec = DecryptAction::of("decrypt", &dec_spec).map_err(|e| e.to_string())?;
        let ctx = serde_json::json!({
            "env": {"BENCH_PASSPHRASE": PASSPHRASE},
            "inputs": {},
            "steps": {},
            "run": {},
        });
        let env_dl = StepEnv {
            step: "fetch",
            emitter: &self.emitter,
            cancel: &self.cancel,
            retry: RetryPolicy::default(),
            dry_run: false,
            started: Instant::now(),
            deadline: None,
            max_wait: None,
            poll_wait_cap: None,
            ledger: None,
            overwrite: None,
            budgets: None,
        };
        let env_dec = StepEnv {
            step: "decrypt",
            retry: RetryPolicy::default(),
            ..env_dl
        };
        sync()?;
        let (t, c) = (Instant::now(), cpu_s());
        let (_, dec_out) = self
            .rt
            .block_on(download_then_decrypt(
                &dl_spec, &self.conn, false, &dec_spec, &env_dl, &env_dec, &ctx,
            ))
            .map_err(|e| format!("download_then_decrypt: {e:?}"))?;
        let pipelined_s = t.elapsed().as_secs_f64();
        let pipelined_cpu = cpu_s() - c;
        let strings = |field: &str| -> Vec<String> {
            dec_out[field]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let got: Vec<(PathBuf, String)> = strings("files")
            .into_iter()
            .map(PathBuf::from)
            .zip(strings("sha256"))
            .collect();
        check("pipelined", &got, fx)?;
        fs::remove_dir_all(&p_dl).map_err(|e| e.to_string())?;
        fs::remove_dir_all(&p_dec).map_err(|e| e.to_string())?;
        Ok((pipelined_s, pipelined_cpu))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(rows: &[Round], n_files: u64, mib: u64, enc_total: u64, conc: usize) {
    let cpus = std::thread::available_parallelism()
        .map(std::num::NonZero::get)
        .unwrap_or(0);
    println!();
    println!(
        "pipeline bench: {n_files} files x {mib} MiB plaintext, {:.1} MiB encrypted in all \
         (RSA-3072, gpg defaults); download concurrency {DOWNLOAD_CONCURRENCY}, decrypt \
         concurrency {conc}; {cpus} CPUs shared by server, client and decryption",
        enc_total as f64 / (1 << 20) as f64
    );
    println!(
        "{:<5} {:>10} {:>10} {:>10} {:>14} {:>14} {:>24}",
        "round",
        "download",
        "decrypt",
        "pipelined",
        "p/max(d,x)",
        "p/(d+x)",
        "CPU s dl / dec / pipe"
    );
    for (i, r) in rows.iter().enumerate() {
        println!(
            "{:<5} {:>8.2} s {:>8.2} s {:>8.2} s {:>14.2} {:>14.2} {:>10.2} / {:.2} / {:.2}",
            i + 1,
            r.download_s,
            r.decrypt_s,
            r.pipelined_s,
            r.pipelined_s / r.download_s.max(r.decrypt_s),
            r.pipelined_s / (r.download_s + r.decrypt_s),
            r.cpu[0],
            r.cpu[1],
            r.cpu[2]
        );
    }
    let d = median(rows.iter().map(|r| r.download_s).collect());
    let x = median(rows.iter().map(|r| r.decrypt_s).collect());
    let p = median(rows.iter().map(|r| r.pipelined_s).collect());
    let ratio = median(
        rows.iter()
            .map(|r| r.pipelined_s / r.download_s.max(r.decrypt_s))
            .collect(),
    );
    let sum_ratio = median(
        rows.iter()
            .map(|r| r.pipelined_s / (r.download_s + r.decrypt_s))
            .collect(),
    );
    println!(
        "median: download alone {d:.2} s, decrypt alone {x:.2} s, pipelined {p:.2} s; \
         pipelined / max(download, decrypt) = {ratio:.2} (target <= 1.10: {}); \
         pipelined / (download + decrypt) = {sum_ratio:.2}",
        if ratio <= 1.10 { "met" } else { "missed" }
    );
    let key_s = median(rows.iter().map(|r| r.key_s).collect());
    println!(
        "decrypt alone includes one key unlock (S2K; median {key_s:.2} s), as does pipelined. \
         CPU seconds are the whole process's (server thread included), from /proc/self/stat. \
         Noisy: 2 shared cores, other builds may run."
    );
}
