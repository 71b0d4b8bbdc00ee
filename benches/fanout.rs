//! Benchmark: `workflows/google/export-users.yaml` over 1,000 users against the simulator (peak RSS, requests, decrypted files).
//!
//! Run with `cargo bench --bench fanout` (release). The project's issue: a `for_each` over
//! 1,000 users (`concurrency: 32`) exporting mailboxes finishes with peak memory <= 256 MiB,
//! every user's files decrypted, and no request beyond what the poll policy allows.
//!
//! Setup (not timed): the simulator in this process (`sim::start`, no faults, the daily quota
//! raised above the user count), a throwaway RSA key (`demo::generate_key`), and
//! `upload-public-key.yaml` run once. Then `export-users.yaml` runs as a child process of the
//! release binary (`auditflow run`, JSON log lines to a file, `--state-dir` in the temp dir),
//! reaped with `wait4`, whose `ru_maxrss` is the runner's exact peak RSS. A sampler thread reads
//! `/proc/PID/status` (VmRSS, threads) every 100 ms for the timeline; the child is only reaped
//! after the sampler has stopped (`waitid` with `WNOWAIT`), so it never reads a reused PID.
//!
//! Checked afterwards: exit code; every user's mbox files, hashed and compared with the
//! plaintexts the simulator encrypted (request ids from `manifest.json`); the simulator's
//! counters against what the workflow may send: one create per user, `pending_polls + 1`
//! status requests per user (the poll policy: PENDING `pending_polls` times, then COMPLETED),
//! one download per file, the pages of the domain's export list read once per run (creates
//! adopt an export the vendor already holds), nothing else. Prints PASS/FAIL lines; exits 1
//! on any FAIL.
//!
//! Env: `FANOUT_USERS` (default 1000), `FANOUT_POLL_INTERVAL` (200ms), `FANOUT_PENDING_POLLS`
//! (3), `FANOUT_FILES` (files per export, 2), `FANOUT_FILE_KIB` (plaintext KiB per file, 16),
//! `FANOUT_KEY_BITS` (3072), `FANOUT_REPORTS=1` (also `--report-json` and `--junit`),
//! `FANOUT_DIR` (parent of the temp dir), `FANOUT_KEEP=1` (keep the temp dir), `MALLOC_*`
//! (passed to the runner), `FANOUT_WRAPPER` (a profiler to run the runner under, e.g.
//! `heaptrack -o FILE`; the RSS figure is then the wrapper's).
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auditflow_sim::{self as sim, FaultConfig, SimConfig, Stats};

mod common;
use common::{path_str, sha256_file, Res};

/// The memory budget for the runner.
const RSS_LIMIT_MIB: f64 = 256.0;
const DOMAIN: &str = "example.com";
/// Most pages of the adoption listing one run may read (the vendor's pages hold 100 entries;
/// the simulator's domain holds a few weeks of history).
const LIST_PAGES_MAX: u64 = 20;
/// The runner, built by cargo for this bench (release profile).
const AUDITFLOW: &str = env!("CARGO_BIN_EXE_auditflow");

fn main() {
    match bench() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("fanout bench: {e}");
            std::process::exit(1);
        }
    }
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Res<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map_err(|e| format!("{name}={v}: {e}")),
        Err(_) => Ok(default),
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

struct Config {
    users: u32,
    poll_interval: String,
    pending_polls: u32,
    files: u32,
    file_kib: usize,
    key_bits: u32,
    reports: bool,
}

impl Config {
    fn from_env() -> Res<Config> {
        let c = Config {
            users: env_num("FANOUT_USERS", 1000)?,
            poll_interval: std::env::var("FANOUT_POLL_INTERVAL").unwrap_or_else(|_| "200ms".into()),
            pending_polls: env_num("FANOUT_PENDING_POLLS", 3)?,
            files: env_num("FANOUT_FILES", 2)?,
            file_kib: env_num("FANOUT_FILE_KIB", 16)?,
            key_bits: env_num("FANOUT_KEY_BITS", 3072)?,
            reports: env_flag("FANOUT_REPORTS"),
        };
        if c.users == 0 || c.files == 0 || c.file_kib == 0 {
            return Err("FANOUT_USERS, FANOUT_FILES and FANOUT_FILE_KIB must be at least 1".into());
        }
        Ok(c)
    }

    fn user_names(&self) -> Vec<String> {
        let width = self.users.to_string().len().max(4);
        (1..=self.users).map(|i| format!("u{i:0width$}")).collect()
    }
}

/// One reading of `/proc/PID/status` (and the simulator's counters at that moment).
struct Sample {
    at: Duration,
    rss_kib: u64,
    threads: u64,
    creates: u64,
    downloads: u64,
}

/// What one measured child run gave.
struct ChildRun {
    /// Exit code, or None when killed by a signal.
    code: Option<i32>,
    signal: Option<i32>,
    wall: Duration,
    /// Peak resident set of the child (`ru_maxrss` from `wait4`), KiB.
    maxrss_kib: u64,
    user_s: f64,
    sys_s: f64,
    samples: Vec<Sample>,
}

fn proc_status(pid: u32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    // A zombie has no VmRSS line any more.
    Some((field("VmRSS:")?, field("Threads:").unwrap_or(0)))
}

fn tv_s(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

/// Spawns `cmd`, samples its memory until it exits, reaps it with `wait4`.
fn run_measured(cmd: &mut Command, stats: Option<Arc<Stats>>) -> Res<ChildRun> {
    let started = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {AUDITFLOW}: {e}"))?;
    let pid = child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Some((rss_kib, threads)) = proc_status(pid) {
                    let s = stats.as_ref().map(|s| s.snapshot());
                    samples.push(Sample {
                        at: started.elapsed(),
                        rss_kib,
                        threads,
                        creates: s.as_ref().map_or(0, |s| s.google_exports_created),
                        downloads: s.as_ref().map_or(0, |s| s.google_downloads),
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        }
    });
    // Wait for the exit without reaping, so the sampler never reads a reused PID.
    loop {
        // SAFETY: `info` is a plain C struct the kernel fills; zeroed is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child with a valid out-pointer.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waitid({pid}): {err}"));
        }
    }
    let wall = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let samples = sampler
        .join()
        .map_err(|_| "the sampler thread panicked".to_string())?;
    let (status, ru) = common::reap(child)?;
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    Ok(ChildRun {
        code,
        signal,
        wall,
        maxrss_kib: u64::try_from(ru.ru_maxrss).unwrap_or(0),
        user_s: tv_s(ru.ru_utime),
        sys_s: tv_s(ru.ru_stime),
        samples,
    })
}

/// `auditflow run WORKFLOW ...` with a clean environment: PATH, the simulator's variables
/// and the key's; stdout (JSON lines) and stderr to files in `logs`.
fn runner(
    workflow: &Path,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
    log_name: &str,
) -> Res<Command> {
    let stdout = fs::File::create(cwd.join(format!("{log_name}.jsonl")))
        .map_err(|e| format!("{log_name}.jsonl: {e}"))?;
    let stderr = fs::File::create(cwd.join(format!("{log_name}.stderr")))
        .map_err(|e| format!("{log_name}.stderr: {e}"))?;
    // For profiling only: FANOUT_WRAPPER="heaptrack -o /tmp/fanout" runs the runner under a
    // tool; the peak RSS printed is then the wrapper's, not the runner's.
    let wrapper: Vec<String> = std::env::var("FANOUT_WRAPPER")
        .map(|w| w.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let mut cmd = match wrapper.split_first() {
        Some((tool, tool_args)) => {
            let mut c = Command::new(tool);
            c.args(tool_args).arg(AUDITFLOW);
            c
        }
        None => Command::new(AUDITFLOW),
    };
    cmd.arg("run")
        .arg(workflow)
        .args(["--log-format", "json", "--state-dir"])
        .arg(cwd.join("state"))
        .args(args)
        .env_clear()
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    for (k, v) in std::env::vars_os() {
        let name = k.to_string_lossy();
        // glibc malloc tunables (MALLOC_ARENA_MAX, ...) pass through for experiments.
        if name == "PATH" || name == "TMPDIR" || name.starts_with("MALLOC_") {
            cmd.env(&k, v);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Ok(cmd)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// What the output directory holds, checked against the simulator's plaintexts.
#[derive(Default)]
struct Outputs {
    /// mbox files found in the users' directories.
    found: u64,
    /// ... of which byte-identical (SHA-256) to a plaintext the simulator encrypted for that
    /// user's export.
    matching: u64,
    /// Users with exactly their export's files, all matching.
    complete_users: u64,
    /// The first few problems, for the report.
    problems: Vec<String>,
}

/// The user a path relative to the output directory belongs to (its first component).
fn user_of(rel: &str) -> Option<&str> {
    rel.split('/').next().filter(|u| !u.is_empty())
}

fn check_outputs(
    out: &Path,
    users: &[String],
    files: u32,
    google: &sim::google::GoogleSim,
) -> Outputs {
    let mut o = Outputs::default();
    let problem = |o: &mut Outputs, p: String| {
        if o.problems.len() < 10 {
            o.problems.push(p);
        }
    };
    // Request ids per user, from the download artifacts of the run's manifest.
    let mut request_ids: HashMap<String, Vec<String>> = HashMap::new();
    match fs::read(out.join("manifest.json"))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string()))
    {
        Ok(m) => {
            for a in m["artifacts"]
                .as_object()
                .into_iter()
                .flat_map(|a| a.values())
            {
                if let (Some(rel), Some(rid)) = (a["path"].as_str(), a["request_id"].as_str()) {
                    if let Some(u) = user_of(rel) {
                        let ids = request_ids.entry(u.to_string()).or_default();
                        if !ids.iter().any(|i| i == rid) {
                            ids.push(rid.to_string());
                        }
                    }
                }
            }
        }
        Err(e) => problem(&mut o, format!("manifest.json: {e}")),
    }
    for user in users {
        let dir = out.join(user);
        let mut hashes = Vec::new();
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "mbox") {
                    o.found += 1;
                    match sha256_file(&p) {
                        Ok(h) => hashes.push(h),
                        Err(e) => problem(&mut o, e),
                    }
                }
            }
        }
        let mut expected: Vec<String> = request_ids
            .get(user)
            .into_iter()
            .flatten()
            .flat_map(|rid| (0..files).filter_map(move |n| google.plaintext_sha256(rid, n)))
            .collect();
        let mut matched = 0u64;
        for h in &hashes {
            if let Some(i) = expected.iter().position(|e| e == h) {
                expected.swap_remove(i);
                matched += 1;
            }
        }
        o.matching += matched;
        if matched == u64::from(files) && hashes.len() == files as usize && expected.is_empty() {
            o.complete_users += 1;
        } else {
            problem(
                &mut o,
                format!(
                    "{user}: {} mbox file(s), {matched} matching, {} expected plaintext(s) missing",
                    hashes.len(),
                    expected.len()
                ),
            );
        }
    }
    o
}

fn print_timeline(samples: &[Sample]) {
    if samples.is_empty() {
        println!("  (no samples)");
        return;
    }
    let last = samples.last().map_or(Duration::ZERO, |s| s.at);
    let step = (last.as_secs_f64() / 12.0).max(0.1);
    let mut next = 0.0;
    println!(
        "  {:>8} {:>10} {:>8} {:>9} {:>10}",
        "t", "VmRSS", "threads", "creates", "downloads"
    );
    for (i, s) in samples.iter().enumerate() {
        if s.at.as_secs_f64() >= next || i + 1 == samples.len() {
            println!(
                "  {:>6.1} s {:>6.1} MiB {:>8} {:>9} {:>10}",
                s.at.as_secs_f64(),
                mib(s.rss_kib),
                s.threads,
                s.creates,
                s.downloads
            );
            next = s.at.as_secs_f64() + step;
        }
    }
}

fn bench() -> Res<bool> {
    let cfg = Config::from_env()?;
    let users = cfg.user_names();
    let parent = std::env::var_os("FANOUT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("afbench-fanout-")
        .tempdir_in(&parent)
        .map_err(|e| format!("temp dir in {}: {e}", parent.display()))?;
    let work = tmp.path().to_path_buf();
    let result = bench_in(&cfg, &users, &work);
    if env_flag("FANOUT_KEEP") {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    }
    result
}

fn bench_in(cfg: &Config, users: &[String], work: &Path) -> Res<bool> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let handle = rt
        .block_on(sim::start(sim_config(cfg, work)))
        .map_err(|e| format!("cannot start the simulator: {e}"))?;
    eprintln!("generating an RSA-{} key ...", cfg.key_bits);
    let key = auditflow::demo::generate_key(&work.join("keys"), cfg.key_bits)
        .map_err(|e| e.to_string())?;
    let env = runner_env(&handle, &key)?;
    upload_key(root, &key, &env, work)?;
    let before = handle.stats.snapshot();
    let tokens_before = handle.google.tokens_issued();
    let out = work.join("out");
    let args = fanout_args(cfg, users, work, &out)?;
    eprintln!(
        "running export-users.yaml for {} users (poll interval {}) ...",
        cfg.users, cfg.poll_interval
    );
    let r = run_measured(
        &mut runner(
            &root.join("workflows/google/export-users.yaml"),
            &args,
            &env,
            work,
            "fanout",
        )?,
        Some(handle.stats.clone()),
    )?;
    let counts = Counts::between(
        cfg,
        &before,
        &handle.stats.snapshot(),
        handle.google.tokens_issued() - tokens_before,
    );
    let outputs = check_outputs(&out, users, cfg.files, &handle.google);
    let log_bytes = fs::metadata(work.join("fanout.jsonl")).map_or(0, |m| m.len());
    print_runner(cfg, &r, log_bytes);
    print_outputs(&outputs, &counts);
    print_simulator(&counts);
    let ok = report_checks(&checks(&r, &outputs, &counts));
    if r.code != Some(0) {
        println!(
            "runner stderr (last lines):\n{}",
            tail(&work.join("fanout.stderr"), 30)
        );
    }
    rt.block_on(handle.shutdown());
    Ok(ok)
}

/// The simulator as the bench needs it: no faults, exports pending `pending_polls` polls,
/// a daily quota that fits the users, `files` files of `file_kib` KiB per export.
fn sim_config(cfg: &Config, work: &Path) -> SimConfig {
    SimConfig {
        faults: FaultConfig::default(),
        google_pending_polls: cfg.pending_polls,
        google_daily_limit: cfg.users.saturating_mul(2).saturating_add(10),
        google_files_per_export: cfg.files,
        google_file_size: cfg.file_kib * 1024,
        work_dir: Some(work.join("sim")),
        ..SimConfig::default()
    }
}

/// The simulator's environment with the generated key's.
fn runner_env(
    handle: &sim::SimHandle,
    key: &auditflow::demo::DemoKey,
) -> Res<Vec<(String, String)>> {
    let mut env = handle.env();
    // The runner reads the key's path from its environment: it must be UTF-8 text.
    path_str(&key.secret_key)?;
    env.extend(key.env());
    Ok(env)
}

/// Uploads the generated public key with the shipped workflow (not measured).
fn upload_key(
    root: &Path,
    key: &auditflow::demo::DemoKey,
    env: &[(String, String)],
    work: &Path,
) -> Res<()> {
    eprintln!("uploading the public key ...");
    let upload = run_measured(
        &mut runner(
            &root.join("workflows/google/upload-public-key.yaml"),
            &[
                "-i".into(),
                format!("domain={DOMAIN}"),
                "-i".into(),
                format!("public_key_file={}", path_str(&key.public_key)?),
                "-i".into(),
                format!("out_dir={}", path_str(&work.join("upload"))?),
            ],
            env,
            work,
            "upload",
        )?,
        None,
    )?;
    if upload.code != Some(0) {
        return Err(format!(
            "upload-public-key.yaml failed ({:?}):\n{}",
            upload.code,
            tail(&work.join("upload.stderr"), 20)
        ));
    }
    Ok(())
}

/// `export-users.yaml`'s arguments: an inputs file with every user, and the reports asked for.
fn fanout_args(cfg: &Config, users: &[String], work: &Path, out: &Path) -> Res<Vec<String>> {
    let inputs = serde_json::json!({
        "domain": DOMAIN,
        "users": users,
        "poll_interval": cfg.poll_interval,
        "out_dir": path_str(out)?,
        // The simulator's quota is raised to fit the users; the workflow's budget too.
        "daily_export_limit": cfg.users,
    });
    let inputs_file = work.join("inputs.json");
    fs::write(&inputs_file, inputs.to_string()).map_err(|e| format!("inputs file: {e}"))?;
    let mut args = vec![
        "--inputs-file".to_string(),
        path_str(&inputs_file)?.to_string(),
    ];
    if cfg.reports {
        args.extend([
            "--report-json".into(),
            path_str(&work.join("report.json"))?.to_string(),
            "--junit".into(),
            path_str(&work.join("junit.xml"))?.to_string(),
        ]);
    }
    Ok(args)
}

/// What the simulator counted during the measured run, and what the policy allows.
struct Counts {
    users: u64,
    files: u64,
    requests: u64,
    creates: u64,
    polls: u64,
    /// Pages of the domain's export list read (creates adopt what the vendor already holds,
    /// from a listing read once per run).
    lists: u64,
    downloads: u64,
    token_requests: u64,
    tokens: u64,
    too_many: u64,
    server_errors: u64,
    unauthenticated: u64,
    /// Status polls the workflow's policy allows at most.
    poll_bound: u64,
    /// Requests in all when every export is created once, polled as configured and fetched
    /// (the listing pages besides).
    expected_requests: u64,
}

impl Counts {
    fn between(
        cfg: &Config,
        before: &sim::StatsSnapshot,
        after: &sim::StatsSnapshot,
        tokens: u64,
    ) -> Self {
        let d = |f: fn(&sim::StatsSnapshot) -> u64| f(after) - f(before);
        let users = u64::from(cfg.users);
        let files = u64::from(cfg.files);
        let polls = u64::from(cfg.pending_polls);
        let lists = d(|s| s.google_list_requests);
        Counts {
            users,
            files,
            requests: d(|s| s.requests),
            creates: d(|s| s.google_exports_created),
            polls: d(|s| s.google_status_requests),
            lists,
            downloads: d(|s| s.google_downloads),
            token_requests: d(|s| s.google_token_requests),
            tokens,
            too_many: d(|s| s.injected_429),
            server_errors: d(|s| s.injected_5xx),
            unauthenticated: d(|s| s.unauthenticated),
            poll_bound: users * (polls + 1),
            expected_requests: users * (1 + polls + 1 + files) + lists,
        }
    }
}

/// The settings, and the runner's time, memory and exit.
fn print_runner(cfg: &Config, r: &ChildRun, log_bytes: u64) {
    println!();
    println!(
        "fanout bench: export-users.yaml, {} users, concurrency 32, {} file(s) x {} KiB per \
         export, {} PENDING polls, poll interval {}, RSA-{}{}",
        cfg.users,
        cfg.files,
        cfg.file_kib,
        cfg.pending_polls,
        cfg.poll_interval,
        cfg.key_bits,
        if cfg.reports {
            ", with --report-json and --junit"
        } else {
            ""
        }
    );
    println!(
        "runner: wall {:.1} s, CPU {:.1} s user + {:.1} s system, peak RSS {:.1} MiB \
         (ru_maxrss), exit {}",
        r.wall.as_secs_f64(),
        r.user_s,
        r.sys_s,
        mib(r.maxrss_kib),
        match (r.code, r.signal) {
            (Some(c), _) => c.to_string(),
            (None, Some(s)) => format!("signal {s}"),
            _ => "unknown".into(),
        }
    );
    let peak_sample = r.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let max_threads = r.samples.iter().map(|s| s.threads).max().unwrap_or(0);
    println!(
        "  sampled every 100 ms: VmRSS max {:.1} MiB, threads max {max_threads}; JSON log {:.1} MiB",
        mib(peak_sample),
        log_bytes as f64 / (1 << 20) as f64
    );
    print_timeline(&r.samples);
}

/// The decrypted files found against the simulator's plaintexts.
fn print_outputs(outputs: &Outputs, c: &Counts) {
    println!(
        "decrypted mbox files: {} found, {} matching the simulator's plaintexts, {} expected; \
         users complete {} of {}",
        outputs.found,
        outputs.matching,
        c.users * c.files,
        outputs.complete_users,
        c.users
    );
    for p in &outputs.problems {
        println!("  {p}");
    }
}

/// What the simulator saw against what the policy allows.
fn print_simulator(c: &Counts) {
    println!(
        "simulator (this run): {} requests: {} creates (expected {}), {} status polls (policy \
         bound {}), {} list pages (the adoption listing), {} downloads (expected {}), {} token \
         requests ({} tokens issued; bearer token, expected 0), {} 429s, {} 5xx, {} \
         unauthenticated; expected {} requests in all",
        c.requests,
        c.creates,
        c.users,
        c.polls,
        c.poll_bound,
        c.lists,
        c.downloads,
        c.users * c.files,
        c.token_requests,
        c.tokens,
        c.too_many,
        c.server_errors,
        c.unauthenticated,
        c.expected_requests,
    );
}

/// The bench's pass conditions, each with what it saw.
fn checks(r: &ChildRun, outputs: &Outputs, c: &Counts) -> Vec<(String, bool)> {
    let expected_files = c.users * c.files;
    vec![
        (format!("exit code 0 (got {:?})", r.code), r.code == Some(0)),
        (
            format!(
                "every user's files decrypted ({} of {expected_files} matching)",
                outputs.matching
            ),
            outputs.matching == expected_files && outputs.found == expected_files,
        ),
        (
            format!("creates == users ({} == {})", c.creates, c.users),
            c.creates == c.users,
        ),
        (
            format!(
                "status polls within the policy bound ({} <= {})",
                c.polls, c.poll_bound
            ),
            c.polls <= c.poll_bound,
        ),
        (
            format!("the domain's exports listed once ({} page(s))", c.lists),
            (1..=LIST_PAGES_MAX).contains(&c.lists),
        ),
        (
            format!(
                "no other requests ({} == {}, {} token requests, {} unauthenticated)",
                c.requests, c.expected_requests, c.token_requests, c.unauthenticated
            ),
            c.requests == c.expected_requests && c.token_requests == 0 && c.unauthenticated == 0,
        ),
        (
            format!(
                "peak RSS <= {RSS_LIMIT_MIB} MiB ({:.1} MiB)",
                mib(r.maxrss_kib)
            ),
            mib(r.maxrss_kib) <= RSS_LIMIT_MIB,
        ),
    ]
}

/// Prints each check as PASS or FAIL; true when all pass.
fn report_checks(checks: &[(String, bool)]) -> bool {
    let mut ok = true;
    for (what, pass) in checks {
        println!("{} {what}", if *pass { "PASS" } else { "FAIL" });
        ok &= pass;
    }
    ok
}
