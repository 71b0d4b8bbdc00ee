//! Quota budgets through the binary and the shipped `export-users.yaml` against the
//! simulator: a schedule of runs (a rehearsal clock, `AUDITFLOW_NOW`, moved a day at a time
//! with the simulator's) spends Google's 100 export requests per domain per day exactly,
//! never meets the vendor's quota error, and exports every mailbox once. A vendor's quota
//! answer ends the run pending too, and the budget then stops asking.
use std::path::Path;
use std::time::Duration;

use auditflow_sim::{self as sim, GoogleQuotaAnswer, SimConfig, SimHandle};
use chrono::Utc;

use crate::common::*;

const DAY: Duration = Duration::from_secs(86_400);

fn quick() -> SimConfig {
    SimConfig {
        google_pending_polls: 1,
        google_files_per_export: 1,
        google_file_size: 2048,
        ..SimConfig::default()
    }
}

/// Runs `workflow` against the simulator with the test key and `extra` environment.
async fn run(
    h: &SimHandle,
    workflow: &str,
    inputs: &[String],
    extra: &[(String, String)],
    cwd: &Path,
) -> (Option<i32>, String, String) {
    let mut args = vec!["run".to_string(), wf(workflow)];
    for i in inputs {
        args.push("-i".into());
        args.push(i.clone());
    }
    args.extend([
        "--state-dir".into(),
        cwd.join("state").display().to_string(),
    ]);
    let mut env = h.env();
    let (sk, _, pass) = key();
    env.push(("AUDIT_PGP_SECRET_KEY".into(), sk.display().to_string()));
    env.push(("AUDIT_PGP_PASSPHRASE".into(), pass.clone()));
    env.extend(extra.iter().cloned());
    let out = auditflow_async(args, env, cwd.to_path_buf()).await;
    let (o, e) = text(&out);
    (out.status.code(), o, e)
}

async fn upload_key(h: &SimHandle, d: &Path) {
    let (_, public, _) = key();
    let (code, o, e) = run(
        h,
        "google/upload-public-key.yaml",
        &[
            "domain=example.com".into(),
            format!("public_key_file={}", public.display()),
            format!("out_dir={}", d.join("key").display()),
        ],
        &[],
        d,
    )
    .await;
    assert_eq!(code, Some(0), "{o}\n{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn three_scheduled_runs_export_250_users_within_100_a_day() {
    let h = sim::start(quick()).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    upload_key(&h, d.path()).await;
    let out = d.path().join("out");
    let users: Vec<String> = (0..250).map(|i| format!("u{i:03}")).collect();
    let inputs = [
        "domain=example.com".to_string(),
        format!("users={}", users.join(",")),
        "poll_interval=50ms".into(),
        format!("out_dir={}", out.display()),
    ];
    let t0 = Utc::now();
    let mut created = vec![];
    let mut codes = vec![];
    for day in 0..3u32 {
        let now = t0 + chrono::Duration::days(i64::from(day));
        let clock = [("AUDITFLOW_NOW".to_string(), now.to_rfc3339())];
        let (code, o, e) = run(&h, "google/export-users.yaml", &inputs, &clock, d.path()).await;
        assert!(
            !e.contains("dailyLimitExceeded") && !o.contains("dailyLimitExceeded"),
            "the vendor's quota error was met on day {day}:\n{e}"
        );
        match day {
            0 => assert!(
                e.contains("150 of 250 items wait for a quota")
                    && e.contains("`google-audit-export-requests` quota for example.com is spent (100 per 1d)"),
                "{e}"
            ),
            1 => assert!(e.contains("50 of 250 items wait for a quota"), "{e}"),
            _ => {}
        }
        codes.push(code);
        created.push(h.google.exports_created("example.com"));
        h.google.advance_clock(DAY);
    }
    assert_eq!(codes, [Some(75), Some(75), Some(0)]);
    // One export for the key check is not counted: upload-public-key creates none.
    assert_eq!(created, [100, 200, 250], "exports created after each run");
    for u in &users {
        assert_eq!(mbox_count(&out.join(u)), 1, "{u} exported once");
    }
    let v = auditflow(&["verify", out.to_str().unwrap()], &[], d.path());
    assert_eq!(v.status.code(), Some(0), "{:?}", text(&v));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_vendors_quota_answer_ends_the_run_pending_and_stops_further_requests() {
    // Someone else spent most of the day's quota: the vendor allows 3, the budget says 100.
    // Answered with the Admin SDK's 403 `dailyLimitExceeded` (the 503 the Email Audit page
    // documents is the test below).
    let h = sim::start(SimConfig {
        google_daily_limit: 3,
        google_quota_answer: GoogleQuotaAnswer::Forbidden403,
        ..quick()
    })
    .await
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    upload_key(&h, d.path()).await;
    let out = d.path().join("out");
    let inputs = [
        "domain=example.com".to_string(),
        "users=a,b,c,d,e,f,g,h".into(),
        "poll_interval=50ms".into(),
        format!("out_dir={}", out.display()),
    ];
    let (code, _, e) = run(&h, "google/export-users.yaml", &inputs, &[], d.path()).await;
    assert_eq!(code, Some(75), "{e}");
    assert!(
        e.contains("5 of 8 items wait for a quota")
            && e.contains("`google-audit-export-requests` quota for example.com is spent")
            && e.contains("vendor sa"),
        "{e}"
    );
    assert_eq!(h.google.exports_created("example.com"), 3);
    let done = ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .filter(|u| mbox_count(&out.join(u)) == 1)
        .count();
    assert_eq!(done, 3);
    // The same day again: the budget remembers the vendor's answer and sends nothing.
    let before = h.stats.snapshot();
    let (code, _, e) = run(&h, "google/export-users.yaml", &inputs, &[], d.path()).await;
    assert_eq!(code, Some(75), "{e}");
    assert!(e.contains("not used again before"), "{e}");
    assert_eq!(
        h.stats.snapshot().google_exports_created,
        before.google_exports_created
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_503_quota_answer_makes_the_items_wait() {
    // The Email Audit "Usage limits and quotas" page: an exceeded quota is answered 503.
    // Other admins spent the day's quota but one request: the budget cannot see it.
    let h = sim::start(SimConfig {
        google_daily_limit: 1,
        google_quota_answer: GoogleQuotaAnswer::Unavailable503,
        ..quick()
    })
    .await
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    upload_key(&h, d.path()).await;
    let out = d.path().join("out");
    let inputs = [
        "domain=example.com".to_string(),
        "users=a,b,c".into(),
        "poll_interval=50ms".into(),
        format!("out_dir={}", out.display()),
    ];
    let (code, _, e) = run(&h, "google/export-users.yaml", &inputs, &[], d.path()).await;
    assert_eq!(code, Some(75), "{e}");
    assert!(
        e.contains("2 of 3 items wait for a quota")
            && e.contains("`google-audit-export-requests` quota for example.com is spent")
            && e.contains(
                "HTTP 503 after 6 attempt(s), which the vendor documents as its quota answer"
            ),
        "{e}"
    );
    assert_eq!(h.google.exports_created("example.com"), 1);
    let done = ["a", "b", "c"]
        .iter()
        .filter(|u| mbox_count(&out.join(u)) == 1)
        .count();
    assert_eq!(done, 1);
    // The same day again: the budget remembers the answer; nothing is asked, nothing retried.
    let started = std::time::Instant::now();
    let (code, _, e) = run(&h, "google/export-users.yaml", &inputs, &[], d.path()).await;
    assert_eq!(code, Some(75), "{e}");
    assert!(e.contains("not used again before"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}\n{e}",
        started.elapsed()
    );
    // The next UTC day the quota is back and the waiting items are exported.
    h.google.advance_clock(DAY);
    let now = Utc::now() + chrono::Duration::days(1);
    let clock = [("AUDITFLOW_NOW".to_string(), now.to_rfc3339())];
    let (code, _, e) = run(&h, "google/export-users.yaml", &inputs, &clock, d.path()).await;
    assert_eq!(
        code,
        Some(75),
        "one more waits (the vendor allows 1 a day): {e}"
    );
    assert_eq!(h.google.exports_created("example.com"), 2);
    h.shutdown().await;
}
