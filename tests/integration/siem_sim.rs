//! The shipped Mimecast SIEM workflows against the built-in simulator: the collectors and
//! the simulator were written apart from the vendor's pages, so this is where they must
//! agree. Three scheduled runs, with the simulated clock moved between them, collect every
//! file the simulator made exactly once, byte for byte.
use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use auditflow_sim::mimecast::{SiemBatchType, SiemFile};
use auditflow_sim::{self as sim, SimConfig, SimHandle};

use crate::common::*;

fn run(h: &SimHandle, oauth: bool, workflow: &str, inputs: &[&str], cwd: &Path) -> (i32, String) {
    let mut args = vec![
        "run".to_string(),
        wf(workflow),
        "--state-dir".into(),
        "st".into(),
    ];
    for i in inputs {
        args.extend(["-i".to_string(), (*i).to_string()]);
    }
    let env = if oauth { h.env_mimecast2() } else { h.env() };
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = auditflow(&a, &e, cwd);
    let (o, err) = text(&out);
    (out.status.code().unwrap_or(-1), format!("{o}\n{err}"))
}

/// SHA-256 of each file in `dir`, un-gzipped first when `gz`.
fn contents(dir: &Path, gz: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "manifest.json") || p.is_dir() {
            continue;
        }
        let mut bytes = std::fs::read(&p).unwrap();
        if gz {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut plain)
                .unwrap();
            bytes = plain;
        }
        assert!(
            out.insert(auditflow::durable::sha256_hex(&bytes)),
            "{} twice",
            p.display()
        );
    }
    out
}

/// What one collector is: its workflow, how it signs in, its inputs, where its files land
/// (gzip or not), and the simulator's files it must have collected.
struct Collector {
    workflow: &'static str,
    oauth: bool,
    inputs: &'static [&'static str],
    dir: &'static str,
    gz: bool,
    made: fn(&SimHandle) -> Vec<SiemFile>,
}

/// Three scheduled runs of `c`, the simulated clock moved an hour after each: after every
/// run the files on disk are exactly the ones the simulator made and still keeps.
async fn three_runs(c: Collector) {
    let h = sim::start(SimConfig::default()).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let (code, out) = run(&h, c.oauth, c.workflow, c.inputs, d.path());
        assert_eq!(code, 0, "run {round}: {out}");
        let want: BTreeSet<String> = (c.made)(&h)
            .into_iter()
            .filter(|f| f.kept)
            .map(|f| f.content_sha256)
            .collect();
        assert!(!want.is_empty());
        assert_eq!(contents(&d.path().join(c.dir), c.gz), want, "run {round}");
        h.mimecast.advance_clock(Duration::from_secs(3600));
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn siem_logs_token_chain_collects_every_file_once_over_three_runs() {
    three_runs(Collector {
        workflow: "mimecast/siem-logs.yaml",
        oauth: false,
        inputs: &[],
        dir: "out/MTA",
        gz: false,
        made: |h| h.mimecast.siem_log_files(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn siem_batch_events_collects_every_listed_file_once_over_three_runs() {
    three_runs(Collector {
        workflow: "mimecast/siem-batch-events.yaml",
        oauth: true,
        inputs: &["type=receipt"],
        dir: "out/receipt",
        gz: true,
        made: |h| {
            h.mimecast
                .siem_batch_files(SiemBatchType::parse("receipt").expect("a batch type"))
        },
    })
    .await;
}

/// A crash inside a 2.0 batch page (after its `nth` saved file, before the page's cursor
/// write) and the run that resumes it: every file the simulator made is on disk once, and
/// the two runs together fetched each file once (the resumed run lists the page again, with
/// new pre-signed URLs, and skips the files of it already saved and verified).
async fn crash_in_batch_page(point: &str, nth: u32) {
    // 12 files of each type: four pages of 3.
    let h = sim::start(SimConfig {
        mimecast_siem_history: Duration::from_secs(3 * 3600),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    let made: BTreeSet<String> = h
        .mimecast
        .siem_batch_files(SiemBatchType::parse("receipt").expect("a batch type"))
        .into_iter()
        .filter(|f| f.kept)
        .map(|f| f.content_sha256)
        .collect();
    assert!(made.len() >= 9, "at least three pages of 3: {}", made.len());
    let workflow = wf("mimecast/siem-batch-events.yaml");
    let args = [
        "run",
        workflow.as_str(),
        "--state-dir",
        "st",
        "-i",
        "type=receipt",
        "-i",
        "page_size=3",
    ];
    let env = h.env_mimecast2();
    let mut e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut crashing = e.clone();
    crashing.push(("AUDITFLOW_FAILPOINT", point));
    let out = auditflow(&args, &crashing, d.path());
    assert_ne!(
        out.status.code(),
        Some(0),
        "the failpoint aborts: {:?}",
        text(&out)
    );
    let before = h.stats.snapshot().siem_batch_downloads;
    // Downloads run 4 at a time: others of the page may have been served, not yet saved.
    assert!(
        before >= u64::from(nth),
        "downloads before the crash: {before}"
    );
    e.retain(|(k, _)| *k != "AUDITFLOW_FAILPOINT");
    let out = auditflow(&args, &e, d.path());
    let (o, err) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{o}\n{err}");
    let fetched_again = h.stats.snapshot().siem_batch_downloads - before;
    assert!(
        fetched_again <= made.len() as u64 - u64::from(nth),
        "the resumed run fetched {fetched_again} of {} files though {nth} were saved:\n{err}",
        made.len()
    );
    assert_eq!(contents(&d.path().join("out/receipt"), true), made);
    let v = auditflow(&["verify", "out"], &[], d.path());
    assert_eq!(v.status.code(), Some(0), "{:?}", text(&v));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_files_of_a_batch_page_refetches_none_of_the_saved_ones() {
    crash_in_batch_page("after-download:2", 2).await;
    // In the second page: the first page's cursor is written.
    crash_in_batch_page("after-download:5", 5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_before_the_batch_cursor_write_refetches_nothing_of_the_page() {
    crash_in_batch_page("after-download:3", 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_at_the_batch_cursor_write_refetches_nothing_of_the_page() {
    crash_in_batch_page("cursor-unwritten:1", 3).await;
    crash_in_batch_page("cursor-unwritten:2", 6).await;
}
