//! Benchmark: a `for_each` of N items grows linearly in time and stays flat in memory.
//!
//! Run with `cargo bench --bench loop_scale` (release). The project's issue 14: a `for_each`
//! of N items (`concurrency: 32`), each one `GET` to a local server answering `{"ok":true}`
//! at once, from 2,000 to 100,000 items: wall time ratio within 1.3× of the item ratio, peak
//! RSS at 100,000 items ≤ 128 MiB whatever the reporters, state directory linear in items.
//!
//! The server runs in this process (axum on 127.0.0.1, its own runtime). Each size runs the
//! release binary as a child (`auditflow run`, JSON log lines to a file, `--state-dir` in a
//! temp dir), once plain and once with `--report-json` and `--junit`, reaped with `wait4`,
//! whose `ru_maxrss` is the child's exact peak RSS. Printed per run: wall time, time per
//! item, peak RSS, state directory size and bytes per item, with ratios to the smallest size.
//!
//! Env: `LOOP_SIZES` (comma-separated item counts, default `2000,20000,100000`; e.g.
//! `LOOP_SIZES=200,2000` for a quick run), `LOOP_REPORTS` (`both` (default), `plain`, `reports`),
//! `LOOP_CONCURRENCY` (32), `LOOP_DIR` (parent of the temp dir), `LOOP_KEEP=1` (keep it),
//! `LOOP_WRAPPER` (a profiler to run the runner under, e.g. `perf record -g -o FILE`),
//! `LOOP_SHARDS` (e.g. `4`: afterwards, `LOOP_SHARD_ITEMS` items (20000) run whole and then as
//! `--shard I/N` one shard after another, as N machines of a CI matrix would: the server counts
//! every item's requests, so the check is that together the shards sent each item once, and
//! each shard's time is printed next to a quarter of the whole's).
//!
//! The state stores: `LOOP_STORE_ITEMS` items (10000) run with the state directory, then with
//! the shared PostgreSQL store at `LOOP_POSTGRES` (default the development machines'
//! `postgres://postgres@127.0.0.1:5432/test`, in a schema of its own dropped afterwards;
//! `LOOP_POSTGRES=off` skips it): the time ratio (target at most 2x) and both peak RSS.
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::Res;

/// The runner, built by cargo for this bench (release profile).
const AUDITFLOW: &str = env!("CARGO_BIN_EXE_auditflow");
/// The issue's targets.
const RSS_LIMIT_MIB: f64 = 128.0;
const LINEARITY: f64 = 1.3;

const WORKFLOW: &str = r"name: loop-scale
inputs:
  items: {type: list}
  concurrency: {type: integer, default: 32}
steps:
  - id: each
    for_each:
      items: '{{ inputs.items }}'
      concurrency: '{{ inputs.concurrency }}'
      steps:
        - id: get
          call: {url: '{{ env.LOOP_API_URL }}/ok', query: {mailbox: '{{ item }}'}}
outputs:
  count: '{{ steps.each.count }}'
";

fn main() {
    match bench() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("loop_scale bench: {e}");
            std::process::exit(1);
        }
    }
}

/// One measured run of the binary.
struct Measured {
    items: usize,
    reports: bool,
    code: Option<i32>,
    wall: Duration,
    maxrss_kib: u64,
    cpu_s: f64,
    state_bytes: u64,
}

impl Measured {
    fn per_item_ms(&self) -> f64 {
        self.wall.as_secs_f64() * 1000.0 / self.items as f64
    }
    fn rss_mib(&self) -> f64 {
        self.maxrss_kib as f64 / 1024.0
    }
    fn state_per_item(&self) -> f64 {
        self.state_bytes as f64 / self.items as f64
    }
}

fn sizes() -> Res<Vec<usize>> {
    let text = std::env::var("LOOP_SIZES").unwrap_or_else(|_| "2000,20000,100000".into());
    let sizes: Vec<usize> = text
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|e| format!("LOOP_SIZES `{s}`: {e}"))
        })
        .collect::<Res<_>>()?;
    if sizes.is_empty() || sizes.contains(&0) {
        return Err("LOOP_SIZES: give item counts of at least 1, e.g. 200,2000".into());
    }
    Ok(sizes)
}

fn report_modes() -> Res<Vec<bool>> {
    match std::env::var("LOOP_REPORTS").as_deref() {
        Err(_) | Ok("both") => Ok(vec![false, true]),
        Ok("plain") => Ok(vec![false]),
        Ok("reports") => Ok(vec![true]),
        Ok(other) => Err(format!(
            "LOOP_REPORTS `{other}`: write both, plain or reports"
        )),
    }
}

/// Requests seen per `mailbox` query value.
type Seen = Arc<Mutex<HashMap<String, u32>>>;

/// Serves `{"ok":true}` on every path from its own runtime thread, counting the `mailbox`
/// query values; returns the base URL and the counts.
fn start_server() -> Res<(String, Seen)> {
    let seen: Seen = Arc::default();
    let counts = seen.clone();
    let app = axum::Router::new().fallback(move |uri: http::Uri| {
        let counts = counts.clone();
        async move {
            if let Some(m) = uri
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("mailbox=")))
            {
                let mut c = counts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *c.entry(m.to_string()).or_insert(0) += 1;
            }
            (
                [(http::header::CONTENT_TYPE, "application/json")],
                r#"{"ok":true}"#,
            )
        }
    });
    Ok((common::serve_on_thread(app)?, seen))
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn tv_s(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

/// Runs `cmd` to its end; returns exit code, wall time, peak RSS (KiB) and CPU seconds.
fn run_wait4(cmd: &mut Command) -> Res<(Option<i32>, Duration, u64, f64)> {
    let started = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {AUDITFLOW}: {e}"))?;
    let (status, ru) = common::reap(child)?;
    let wall = started.elapsed();
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let cpu = tv_s(ru.ru_utime) + tv_s(ru.ru_stime);
    Ok((code, wall, u64::try_from(ru.ru_maxrss).unwrap_or(0), cpu))
}

/// Where a measured run keeps its state.
#[derive(Clone, Copy)]
enum StoreKind<'a> {
    Dir,
    Postgres(&'a str),
}

fn run_one(
    work: &Path,
    url: &str,
    items: usize,
    reports: bool,
    shard: Option<(u32, u32)>,
) -> Res<Measured> {
    run_in(work, url, items, reports, shard, StoreKind::Dir)
}

fn run_in(
    work: &Path,
    url: &str,
    items: usize,
    reports: bool,
    shard: Option<(u32, u32)>,
    store: StoreKind<'_>,
) -> Res<Measured> {
    let name = match (shard, store) {
        (_, StoreKind::Postgres(_)) => format!("n{items}-postgres"),
        (Some((i, n)), _) => format!("n{items}-shard{i}of{n}"),
        (None, _) => format!("n{items}{}", if reports { "-reports" } else { "" }),
    };
    let dir = work.join(&name);
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let inputs_file = write_inputs(&dir, items)?;
    let mut cmd = runner_command(&work.join("loop.yaml"), &inputs_file, url, &dir)?;
    match store {
        StoreKind::Dir => cmd.arg("--state-dir").arg(dir.join("state")),
        StoreKind::Postgres(url) => cmd.arg("--state").arg(url),
    };
    if let Some((i, n)) = shard {
        cmd.arg("--shard").arg(format!("{i}/{n}"));
    }
    if reports {
        cmd.arg("--report-json")
            .arg(dir.join("report.json"))
            .arg("--junit")
            .arg(dir.join("junit.xml"));
    }
    eprintln!(
        "running {items} items{} ...",
        if reports { " with reports" } else { "" }
    );
    let (code, wall, maxrss_kib, cpu_s) = run_wait4(&mut cmd)?;
    if code != Some(0) {
        let err = fs::read_to_string(dir.join("stderr")).unwrap_or_default();
        eprintln!("run of {items} items exited {code:?}:\n{err}");
    }
    Ok(Measured {
        items,
        reports,
        code,
        wall,
        maxrss_kib,
        cpu_s,
        state_bytes: dir_size(&dir.join("state")),
    })
}

/// The run's inputs file: `items` addresses and `LOOP_CONCURRENCY` (default 32).
fn write_inputs(dir: &Path, items: usize) -> Res<PathBuf> {
    let width = items.to_string().len();
    let list: Vec<String> = (0..items)
        .map(|i| format!("user{i:0width$}@example.com"))
        .collect();
    let concurrency: u32 = std::env::var("LOOP_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let inputs = serde_json::json!({"items": list, "concurrency": concurrency});
    let inputs_file = dir.join("inputs.json");
    fs::write(&inputs_file, inputs.to_string()).map_err(|e| format!("inputs file: {e}"))?;
    Ok(inputs_file)
}

/// `auditflow run WF --log-format json --inputs-file FILE` in `dir` (under `LOOP_WRAPPER`
/// when set), its JSON log and stderr to files there, with a clean environment but for
/// `PATH`, `TMPDIR` and the allocator's `MALLOC_*`.
fn runner_command(wf: &Path, inputs_file: &Path, url: &str, dir: &Path) -> Res<Command> {
    let stdout = fs::File::create(dir.join("log.jsonl")).map_err(|e| format!("log: {e}"))?;
    let stderr = fs::File::create(dir.join("stderr")).map_err(|e| format!("stderr: {e}"))?;
    let wrapper: Vec<String> = std::env::var("LOOP_WRAPPER")
        .map(|w| w.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let mut cmd = match wrapper.split_first() {
        Some((tool, args)) => {
            let mut c = Command::new(tool);
            c.args(args).arg(AUDITFLOW);
            c
        }
        None => Command::new(AUDITFLOW),
    };
    cmd.arg("run")
        .arg(wf)
        .args(["--log-format", "json", "--inputs-file"])
        .arg(inputs_file)
        .env_clear()
        .env("LOOP_API_URL", url)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    for (k, v) in std::env::vars_os() {
        let k_s = k.to_string_lossy();
        if k_s == "PATH" || k_s == "TMPDIR" || k_s.starts_with("MALLOC_") {
            cmd.env(&k, v);
        }
    }
    Ok(cmd)
}

fn bench() -> Res<bool> {
    let sizes = sizes()?;
    let modes = report_modes()?;
    let parent = std::env::var_os("LOOP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("afbench-loop-")
        .tempdir_in(&parent)
        .map_err(|e| format!("temp dir in {}: {e}", parent.display()))?;
    let work = tmp.path().to_path_buf();
    fs::write(work.join("loop.yaml"), WORKFLOW).map_err(|e| format!("workflow: {e}"))?;
    let (url, seen) = start_server()?;
    let mut ok = true;
    for reports in modes {
        let mut runs = Vec::new();
        for &n in &sizes {
            runs.push(run_one(&work, &url, n, reports, None)?);
        }
        ok &= print_table(&runs);
    }
    if let Some(shards) = std::env::var("LOOP_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        ok &= shards_table(&work, &url, &seen, shards)?;
    }
    ok &= stores_table(&work, &url)?;
    if std::env::var("LOOP_KEEP").is_ok_and(|v| !v.is_empty() && v != "0") {
        eprintln!("kept {}", tmp.keep().display());
    }
    Ok(ok)
}

/// Prints one table (one reporter mode) with ratios to its first row; returns whether the
/// targets were met.
fn print_table(runs: &[Measured]) -> bool {
    let Some(base) = runs.first() else {
        return true;
    };
    println!();
    println!(
        "loop_scale: for_each of N items, one GET each{}",
        if base.reports {
            ", with --report-json and --junit"
        } else {
            ""
        }
    );
    println!(
        "{:>8} {:>9} {:>9} {:>9} {:>10} {:>11} {:>9} {:>11} {:>11} {:>5}",
        "items",
        "wall s",
        "ms/item",
        "CPU s",
        "RSS MiB",
        "state MiB",
        "B/item",
        "item ratio",
        "wall ratio",
        "exit"
    );
    let mut ok = true;
    for r in runs {
        print_row(r, base);
        ok &= r.code == Some(0);
    }
    if !ok {
        println!("FAIL a run did not exit 0: its figures say nothing");
        return false;
    }
    for (what, pass) in scale_checks(base, &runs[runs.len() - 1]) {
        println!("{} {what}", if pass { "PASS" } else { "FAIL" });
        ok &= pass;
    }
    ok
}

/// One run's row, with its ratios to `base`'s.
fn print_row(r: &Measured, base: &Measured) {
    let item_ratio = r.items as f64 / base.items as f64;
    let wall_ratio = r.wall.as_secs_f64() / base.wall.as_secs_f64();
    println!(
        "{:>8} {:>9.2} {:>9.3} {:>9.1} {:>10.1} {:>11.2} {:>9.0} {:>11.1} {:>11.1} {:>5}",
        r.items,
        r.wall.as_secs_f64(),
        r.per_item_ms(),
        r.cpu_s,
        r.rss_mib(),
        r.state_bytes as f64 / (1 << 20) as f64,
        r.state_per_item(),
        item_ratio,
        wall_ratio,
        r.code.map_or("sig".into(), |c| c.to_string())
    );
}

/// The targets of a table: time linear in the items, bounded memory, state per item flat.
fn scale_checks(base: &Measured, last: &Measured) -> [(String, bool); 3] {
    let item_ratio = last.items as f64 / base.items as f64;
    let wall_ratio = last.wall.as_secs_f64() / base.wall.as_secs_f64();
    [
        (
            format!(
                "wall ratio {wall_ratio:.1} within {LINEARITY}× of the item ratio {item_ratio:.1}"
            ),
            wall_ratio <= item_ratio * LINEARITY,
        ),
        (
            format!(
                "peak RSS at {} items {:.1} MiB ≤ {RSS_LIMIT_MIB} MiB",
                last.items,
                last.rss_mib()
            ),
            last.rss_mib() <= RSS_LIMIT_MIB,
        ),
        (
            format!(
                "state bytes per item {:.0} at {} vs {:.0} at {} (within 1.3×)",
                last.state_per_item(),
                last.items,
                base.state_per_item(),
                base.items
            ),
            last.state_per_item() <= base.state_per_item() * LINEARITY,
        ),
    ]
}

/// Runs `LOOP_SHARD_ITEMS` items whole, then as `shards` shards one after another; prints each
/// shard's time against the whole's share and checks every item was sent exactly once.
/// The same loop with the state directory and with the shared PostgreSQL store.
fn stores_table(work: &Path, url: &str) -> Res<bool> {
    let server = std::env::var("LOOP_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    if server == "off" {
        return Ok(true);
    }
    let items: usize = std::env::var("LOOP_STORE_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let schema = format!("afbench_{}", std::process::id());
    let sep = if server.contains('?') { '&' } else { '?' };
    let store = format!("{server}{sep}schema={schema}");
    let dir = run_in(work, url, items, false, None, StoreKind::Dir)?;
    let pg = run_in(work, url, items, false, None, StoreKind::Postgres(&store));
    drop_schema(&server, &schema);
    let pg = pg?;
    let ratio = pg.wall.as_secs_f64() / dir.wall.as_secs_f64();
    println!();
    println!("loop_scale: {items} items, state directory vs shared PostgreSQL store");
    println!(
        "{:>10} {:>9} {:>9} {:>10} {:>5}",
        "store", "wall s", "CPU s", "RSS MiB", "exit"
    );
    for (name, m) in [("directory", &dir), ("postgres", &pg)] {
        println!(
            "{:>10} {:>9.2} {:>9.2} {:>10.1} {:>5}",
            name,
            m.wall.as_secs_f64(),
            m.cpu_s,
            m.rss_mib(),
            m.code.map_or("-".into(), |c| c.to_string())
        );
    }
    let ok = dir.code == Some(0) && pg.code == Some(0) && ratio <= 2.0;
    println!(
        "postgres / directory wall time: {ratio:.2}x (target at most 2x): {}",
        if ok { "met" } else { "NOT met" }
    );
    Ok(ok)
}

/// Drops the bench's schema on `server` (best effort: a leftover is named).
fn drop_schema(server: &str, schema: &str) {
    let dropped = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(server, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
                    .map_err(|e| e.to_string())
            })
        });
    if let Err(e) = dropped {
        eprintln!("could not drop schema {schema} on {server}: {e}");
    }
}

fn shards_table(work: &Path, url: &str, seen: &Seen, shards: u32) -> Res<bool> {
    let items: usize = std::env::var("LOOP_SHARD_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    if shards == 0 {
        return Err("LOOP_SHARDS: give a shard count of at least 1".into());
    }
    let whole = run_one(work, url, items, false, None)?;
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
    let mut parts = Vec::new();
    for i in 1..=shards {
        parts.push(run_one(work, url, items, false, Some((i, shards)))?);
    }
    let counts = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let once = counts.len() == items && counts.values().all(|c| *c == 1);
    let share = whole.wall.as_secs_f64() / f64::from(shards);
    println!();
    println!("loop_scale: {items} items whole, then as {shards} shards run one after another");
    println!(
        "{:>10} {:>9} {:>10} {:>14} {:>5}",
        "run", "wall s", "RSS MiB", "wall / share", "exit"
    );
    println!(
        "{:>10} {:>9.2} {:>10.1} {:>14} {:>5}",
        "whole",
        whole.wall.as_secs_f64(),
        whole.rss_mib(),
        "",
        code(whole.code)
    );
    let mut ok = whole.code == Some(0);
    for (i, p) in parts.iter().enumerate() {
        println!(
            "{:>10} {:>9.2} {:>10.1} {:>14.2} {:>5}",
            format!("{}/{shards}", i + 1),
            p.wall.as_secs_f64(),
            p.rss_mib(),
            p.wall.as_secs_f64() / share,
            code(p.code)
        );
        ok &= p.code == Some(0);
    }
    println!(
        "{} the shards sent {} distinct items (of {items}), each exactly once: {}",
        if once { "PASS" } else { "FAIL" },
        counts.len(),
        counts.values().all(|c| *c == 1)
    );
    Ok(ok && once)
}

fn code(c: Option<i32>) -> String {
    c.map_or("sig".into(), |c| c.to_string())
}
