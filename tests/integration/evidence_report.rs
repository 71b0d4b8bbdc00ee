//! The evidence report as an auditor sees it: a real run's HTML page rendered by a real
//! headless Chromium (Debian's `chromium`; skipped with a note without it, failing on CI),
//! its DOM checked (the summary, every file's hash, hostile names shown as text) and a
//! full-page screenshot kept under `target/test-artifacts/`. Also: a tampered file, a failed
//! run, a detached-then-resumed run, and the Markdown form.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{auditflow, serve, text, Dir, Reply};

const HOSTILE: &str = "<img src=x onerror=alert(1)>.mbox";

/// The installed Chromium, or None (then the browser checks are skipped with a note, except
/// on CI, where a missing browser is a failure: `.ci/run` installs it).
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| PathBuf::from(c))
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed, but CI is set: .ci/run must install it (apt-get install chromium)"
        );
        eprintln!("note: chromium not found; skipping the headless-browser checks of the evidence report (apt-get install chromium)");
    }
    found
}

/// Chromium with no network (every host resolves nowhere) and no script.
fn headless(browser: &Path, profile: &Path) -> Command {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-javascript",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

fn download_workflow(d: &Dir, url: &str, then: &str) -> String {
    d.write(
        "wf.yaml",
        &format!(
            "name: evidence-report\ninputs:\n  out_dir: {{default: out}}\n  note: {{default: '<b>bold</b>'}}\nsteps:\n  - id: get\n    download: {{urls: ['{url}/a.mbox', '{url}/b.mbox'], names: ['a.mbox', '{HOSTILE}'], to: '{{{{ inputs.out_dir }}}}'}}\n{then}"
        ),
    )
    .display()
    .to_string()
}

fn mbox(body: &str) -> Reply {
    Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/mbox".into())],
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

fn report(dir: &Path, format: &str) -> String {
    let o = auditflow(&["report", "out", "--format", format], &[], dir);
    assert!(o.status.success(), "{:?}", text(&o));
    text(&o).0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_runs_report_renders_in_a_browser_and_shows_tampering() {
    let (url, _) = serve(vec![
        ("/a.mbox", vec![mbox("From alice\n\nhello\n")]),
        ("/b.mbox", vec![mbox("From bob\n\nhi\n")]),
    ])
    .await;
    let d = Dir::new();
    let wf = download_workflow(&d, &url, "");
    let o = auditflow(
        &[
            "run",
            &wf,
            "--report-html",
            "report.html",
            "--report-md",
            "report.md",
        ],
        &[],
        d.path(),
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let html = std::fs::read_to_string(d.path().join("report.html")).expect("report.html");
    assert!(html.contains("Complete and verified"), "{html}");
    assert!(
        !html.contains("<script") && !html.contains("<img"),
        "markup escaped"
    );
    for needle in ["src=\"http", "href=\"http", "url(", "@import"] {
        assert!(!html.contains(needle), "the page fetches nothing: {needle}");
    }
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.path().join("out/manifest.json")).expect("manifest"),
    )
    .expect("json");
    let hashes: Vec<String> = manifest["artifacts"]
        .as_object()
        .expect("artifacts")
        .values()
        .map(|a| a["sha256"].as_str().expect("sha").to_string())
        .collect();
    assert_eq!(hashes.len(), 2);
    let md = std::fs::read_to_string(d.path().join("report.md")).expect("report.md");
    assert!(md.contains("Complete and verified"), "{md}");
    assert!(hashes.iter().all(|h| md.contains(h.as_str())), "{md}");
    assert!(
        md.contains("| Workflow commit | not in a git repository |"),
        "a workflow outside a repository says so: {md}"
    );
    assert!(!md.contains("<img"), "{md}");

    if let Some(browser) = chromium() {
        let profile = d.path().join("chromium-profile");
        let page = format!("file://{}", d.path().join("report.html").display());
        let dom = headless(&browser, &profile)
            .args(["--dump-dom", &page])
            .output()
            .expect("chromium runs");
        let dom_text = String::from_utf8_lossy(&dom.stdout);
        assert!(
            dom.status.success() && dom_text.contains("<body"),
            "{dom:?}"
        );
        assert!(dom_text.contains("id=\"summary\""), "{dom_text}");
        assert!(dom_text.contains("Complete and verified"), "{dom_text}");
        for h in &hashes {
            assert!(dom_text.contains(h.as_str()), "hash {h} in the DOM");
        }
        assert!(
            dom_text.contains("&lt;img src=x onerror=alert(1)&gt;.mbox")
                && !dom_text.contains("<img"),
            "the hostile name is text, not an element: {dom_text}"
        );
        let shots = crate::common::root().join("target/test-artifacts");
        std::fs::create_dir_all(&shots).expect("artifacts dir");
        let png = shots.join("evidence-report.png");
        let _ = std::fs::remove_file(&png);
        let shot = headless(&browser, &profile)
            .args([
                "--window-size=1280,2200",
                &format!("--screenshot={}", png.display()),
                &page,
            ])
            .output()
            .expect("chromium runs");
        assert!(shot.status.success(), "{shot:?}");
        let bytes = std::fs::read(&png).expect("screenshot written");
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "a real screenshot"
        );
    }

    // A tampered file: the report says so on top and in the file's row.
    std::fs::write(d.path().join("out/a.mbox"), "From mallory\n").expect("tamper");
    let html = report(d.path(), "html");
    assert!(
        html.contains("Not complete: 1 of 2 file(s) no longer match the manifest"),
        "{html}"
    );
    assert!(html.contains("class=\"problem\">CHANGED  a.mbox"), "{html}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_and_resumed_runs_are_reported_as_they_ended() {
    let (url, _) = serve(vec![
        ("/a.mbox", vec![mbox("From a\n")]),
        ("/b.mbox", vec![mbox("From b\n")]),
        (
            "/status",
            vec![
                Reply::json(200, serde_json::json!({"state": "PENDING"})),
                Reply::json(200, serde_json::json!({"state": "DONE"})),
            ],
        ),
    ])
    .await;
    let d = Dir::new();
    let poll = format!(
        "  - id: wait\n    poll:\n      call: {{url: '{url}/status'}}\n      until: '{{{{ eq response.body.state \"DONE\" }}}}'\n      interval: {{initial: 2s}}\n"
    );
    let wf = download_workflow(&d, &url, &poll);
    let o = auditflow(&["run", &wf, "--max-wait", "500ms"], &[], d.path());
    assert_eq!(o.status.code(), Some(75), "{:?}", text(&o));
    let md = report(d.path(), "md");
    assert!(
        md.contains("Not complete: 1 run(s) did not succeed"),
        "{md}"
    );
    assert!(md.contains("| Status | pending |"), "{md}");
    let o = auditflow(&["run", &wf], &[], d.path());
    assert!(o.status.success(), "{:?}", text(&o));
    let md = report(d.path(), "md");
    assert!(md.contains("Complete and verified"), "{md}");
    let jobs = md
        .lines()
        .find(|l| l.starts_with("| Jobs |"))
        .expect("jobs line");
    assert_eq!(
        jobs.matches(", ").count(),
        1,
        "two jobs made the run: {jobs}"
    );

    // A step that fails after the files were written: the report says the run failed.
    let d2 = Dir::new();
    let failing = format!("  - id: boom\n    call: {{url: '{url}/missing'}}\n");
    let wf2 = download_workflow(&d2, &url, &failing);
    let o = auditflow(&["run", &wf2, "--report-html", "r.html"], &[], d2.path());
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    let html = std::fs::read_to_string(d2.path().join("r.html")).expect("written on failure too");
    assert!(
        html.contains("Not complete: 1 run(s) did not succeed"),
        "{html}"
    );
    assert!(html.contains("<td>failed</td>"), "{html}");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_by_status_class_and_retries_with_their_reasons_are_reported() {
    let (url, _) = serve(vec![
        (
            "/flaky",
            vec![
                Reply::json(503, serde_json::json!({"error": "busy now"})),
                Reply::json(200, serde_json::json!({"ok": true})),
            ],
        ),
        ("/a.mbox", vec![mbox("From a\n")]),
    ])
    .await;
    let d = Dir::new();
    let wf = d.write(
        "wf.yaml",
        &format!(
            "name: flaky\ninputs:\n  out_dir: {{default: out}}\ndefaults: {{retry: {{initial_interval: 10ms, max_attempts: 3, jitter: none}}}}\nsteps:\n  - id: ping\n    call: {{url: '{url}/flaky'}}\n  - id: get\n    download: {{urls: ['{url}/a.mbox'], names: ['a.mbox'], to: '{{{{ inputs.out_dir }}}}'}}\n"
        ),
    );
    let wf = wf.display().to_string();
    let o = auditflow(
        &["run", &wf, "--report-md", "r.md", "--report-json", "r.json"],
        &[],
        d.path(),
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let md = std::fs::read_to_string(d.path().join("r.md")).expect("r.md");
    let ping = md
        .lines()
        .find(|l| l.starts_with("| ping | http |"))
        .unwrap_or_else(|| panic!("a requests row for ping: {md}"));
    assert!(
        ping.starts_with("| ping | http | 1 | 0 | 1 | 0 | attempt 1: http: HTTP 503"),
        "one 2xx, one 5xx, the retry and its reason: {ping}"
    );
    assert!(ping.contains("busy now"), "{ping}");
    // The JSON report gives the same records for the step.
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("r.json")).expect("r.json"))
            .expect("json");
    let step = r["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == "ping"))
        .expect("ping in the JSON report");
    assert_eq!(step["requests"]["http"]["success"], 1, "{step:#}");
    assert_eq!(step["requests"]["http"]["server_error"], 1, "{step:#}");
    assert_eq!(step["retries"][0]["attempt"], 1, "{step:#}");
    assert_eq!(step["retries"][0]["wait_ms"], 10, "{step:#}");
    let html = report(d.path(), "html");
    assert!(html.contains("<table id=\"requests\">"), "{html}");
    assert!(
        html.contains("<tr><td>ping</td><td>http</td><td>1</td><td>0</td><td>1</td><td>0</td><td>attempt 1: http: HTTP 503"),
        "{html}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_run_that_wrote_no_file_is_reported_from_its_journal() {
    let (url, _) = serve(vec![(
        "/status",
        vec![Reply::json(200, serde_json::json!({"state": "PENDING"}))],
    )])
    .await;
    let d = Dir::new();
    let wf = d.write(
        "wf.yaml",
        &format!(
            "name: waits-first\ninputs:\n  out_dir: {{default: out}}\nsteps:\n  - id: wait\n    poll:\n      call: {{url: '{url}/status'}}\n      until: '{{{{ eq response.body.state \"DONE\" }}}}'\n      interval: {{initial: 2s}}\n  - id: get\n    download: {{urls: ['{url}/a.mbox'], names: ['a.mbox'], to: '{{{{ inputs.out_dir }}}}'}}\n"
        ),
    );
    let wf = wf.display().to_string();
    let o = auditflow(
        &["run", &wf, "--max-wait", "500ms", "--report-html", "p.html"],
        &[],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(75), "{:?}", text(&o));
    assert!(!d.path().join("out/manifest.json").exists());
    let html = std::fs::read_to_string(d.path().join("p.html")).expect("written while pending");
    assert!(
        html.contains(
            "class=\"summary bad\">Pending: waiting for step wait (step `wait` last saw `PENDING`"
        ),
        "{html}"
    );
    assert!(html.contains("No manifest.json yet"), "{html}");
    assert!(
        html.contains("<td>waiting</td>"),
        "the journal's steps: {html}"
    );
    let (_, err) = text(&o);
    let run_id = err
        .split("continue run ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("the run id in: {err}"));
    let o = auditflow(
        &["report", "out", "--format", "md", "--run", run_id],
        &[],
        d.path(),
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let md = text(&o).0;
    assert!(md.contains("❌** Pending: waiting for step wait ("), "{md}");
    assert!(md.contains("| Finished | not yet |"), "{md}");
    assert!(md.contains("No manifest.json yet"), "{md}");
    assert!(
        md.contains(&format!("## Run `{run_id}`: waits-first")),
        "{md}"
    );
    assert!(md.contains("| Status | pending |"), "{md}");
    // Without --run the directory alone says what to do.
    let o = auditflow(&["report", "out"], &[], d.path());
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
}
