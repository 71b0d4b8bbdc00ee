//! Operator output (issue 11): loops labelled by item, MailStore progress only with `-v`, byte
//! progress per downloaded and decrypted file, no progress bars outside a terminal, and a
//! simulator that stops promptly on SIGTERM / Ctrl-C.
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{command, Dir};

/// Starts `auditflow sim`, waits for its banner, returns the child and its Mimecast address.
fn start_sim(dir: &Dir) -> (Child, String) {
    let mut child = command(&["sim"], dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("auditflow sim starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout);
    let mut mimecast = None;
    let mut line = String::new();
    while lines.read_line(&mut line).unwrap_or(0) > 0 {
        if let Some(u) = line.trim().strip_prefix("mimecast") {
            mimecast = Some(u.trim().to_string());
        }
        if line.starts_with("Point the shipped workflows") {
            break;
        }
        line.clear();
    }
    // Keep draining stdout (the closing statistics) so the simulator never blocks on it.
    std::thread::spawn(move || {
        let _ = lines.read_to_end(&mut Vec::new());
    });
    (
        child,
        mimecast.expect("the banner names the Mimecast address"),
    )
}

/// Sends `signal` to the simulator while a client holds an idle connection open, and
/// returns how long it took to exit and its exit code.
fn stop_sim_with(signal: i32) -> (Duration, Option<i32>) {
    let dir = Dir::new();
    let (mut child, url) = start_sim(&dir);
    let addr = url.trim_start_matches("http://").to_string();
    // An idle keep-alive connection, as a workflow's HTTP client leaves behind.
    let _idle = std::net::TcpStream::connect(&addr).expect("connect to the simulator");
    std::thread::sleep(Duration::from_millis(100));
    let pid = i32::try_from(child.id()).expect("pid fits");
    let sent = Instant::now();
    // SAFETY: kill(2) with our child's pid and a signal number has no memory effects.
    unsafe {
        libc::kill(pid, signal);
    }
    let deadline = sent + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait for the simulator") {
            return (sent.elapsed(), status.code());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (sent.elapsed(), None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_simulator_stops_promptly_on_sigterm() {
    let (took, code) = stop_sim_with(libc::SIGTERM);
    assert_eq!(code, Some(0), "exit code after SIGTERM (took {took:?})");
    assert!(took < Duration::from_millis(800), "took {took:?}");
}

#[test]
fn the_simulator_stops_promptly_on_ctrl_c() {
    let (took, code) = stop_sim_with(libc::SIGINT);
    assert_eq!(code, Some(0), "exit code after SIGINT (took {took:?})");
    assert!(took < Duration::from_millis(800), "took {took:?}");
}

/// A loop over three stores (a scalar, an object with `id`, a secret) calling a local server.
async fn loop_over_stores() -> (Dir, std::process::Output) {
    let (url, _script) = crate::common::serve(vec![(
        "/verify",
        vec![crate::common::Reply::json(
            200,
            serde_json::json!({"ok": true}),
        )],
    )])
    .await;
    let dir = Dir::new();
    let wf = dir.write(
        "wf.yaml",
        &format!(
            r#"name: verify-stores
inputs:
  token: {{type: string, secret: true, default: "s3cret-store-token"}}
steps:
  - id: verify
    for_each:
      items: ["store-a", {{id: "store-b", size: 3}}, "{{{{ inputs.token }}}}"]
      steps:
        - id: one
          call: {{url: "{url}/verify", method: GET}}
"#
        ),
    );
    let junit = dir.path().join("junit.xml");
    let out = crate::common::auditflow_async(
        vec![
            "run".into(),
            wf.display().to_string(),
            "--junit".into(),
            junit.display().to_string(),
        ],
        vec![],
        dir.path().to_path_buf(),
    )
    .await;
    (dir, out)
}

#[tokio::test(flavor = "multi_thread")]
async fn loop_iterations_are_labelled_by_item_in_console_junit_and_runs_show() {
    let (dir, out) = loop_over_stores().await;
    let (stdout, stderr) = crate::common::text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for shown in [
        "verify[0: store-a].one (one): ok",
        "verify[1: store-b].one (one): ok",
        "verify[2: ***].one (one): ok",
    ] {
        assert!(stdout.contains(shown), "{shown} missing:\n{stdout}");
    }
    assert!(!stdout.contains("s3cret"), "{stdout}");
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).expect("junit written");
    assert!(
        junit.contains(r#"<testcase name="verify[0: store-a].one""#),
        "{junit}"
    );
    assert!(
        junit.contains(r#"<testcase name="verify[1: store-b].one""#),
        "{junit}"
    );
    assert!(!junit.contains("s3cret"), "{junit}");
    // The journal keeps the stable path; `runs show` shows the label.
    let list = crate::common::auditflow(&["runs", "list", "--json"], &[], dir.path());
    let runs: serde_json::Value = serde_json::from_slice(&list.stdout).expect("runs list --json");
    let id = runs[0]["run_id"].as_str().expect("a run id").to_string();
    let show = crate::common::auditflow(&["runs", "show", &id], &[], dir.path());
    let (shown, err) = crate::common::text(&show);
    assert!(shown.contains("verify[0: store-a].one"), "{shown}\n{err}");
    let show = crate::common::auditflow(&["runs", "show", &id, "--json"], &[], dir.path());
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).expect("runs show --json");
    let steps = v["steps"].as_array().expect("steps");
    assert!(
        steps
            .iter()
            .any(|s| s["step"] == "verify[1].one" && s["label"] == "verify[1: store-b].one"),
        "{v:#}"
    );
}

/// Runs the shipped MailStore verify workflow against the simulator, with extra arguments.
async fn verify_stores(extra: &[&str]) -> (String, String, Option<i32>) {
    let h = auditflow_sim::start(auditflow_sim::SimConfig::default())
        .await
        .expect("simulator starts");
    let dir = Dir::new();
    let mut args = vec![
        "run".to_string(),
        crate::common::wf("mailstore/verify-stores.yaml"),
        "-i".into(),
        "store_ids=1,3".into(),
        "-i".into(),
        "poll_interval=200ms".into(),
        "-i".into(),
        format!("out_dir={}", dir.path().join("out").display()),
    ];
    args.extend(extra.iter().map(ToString::to_string));
    let out = crate::common::auditflow_async(args, h.env(), dir.path().to_path_buf()).await;
    h.shutdown().await;
    let (stdout, stderr) = crate::common::text(&out);
    (stdout, stderr, out.status.code())
}

#[tokio::test(flavor = "multi_thread")]
async fn mailstore_process_log_shows_only_with_verbose() {
    let (quiet, err, code) = verify_stores(&[]).await;
    assert_eq!(code, Some(0), "{quiet}\n{err}");
    assert!(!quiet.contains("Verifying file group"), "{quiet}");
    // One line per process when it starts; its end is the step's line.
    assert_eq!(
        quiet.matches("vendor process running").count(),
        2,
        "{quiet}"
    );
    assert!(
        quiet.contains("verify[0: 1].run (VerifyStore): ok"),
        "{quiet}"
    );
    // Piped output: no progress bar or cursor escapes.
    assert!(
        !quiet.contains('\u{1b}') && !err.contains('\u{1b}'),
        "{quiet}{err}"
    );

    let (verbose, err, code) = verify_stores(&["-v"]).await;
    assert_eq!(code, Some(0), "{verbose}\n{err}");
    assert!(verbose.contains("Verifying file group"), "{verbose}");
}

/// The byte progress events of one file, as `--log-format json` prints them: (bytes, total).
fn file_progress(stdout: &str, kind: &str, file: &str) -> Vec<(u64, Option<u64>)> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "progress" && e["file"]["kind"] == kind)
        .filter(|e| {
            e["file"]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with(file))
        })
        .map(|e| (e["bytes"].as_u64().expect("bytes"), e["total"].as_u64()))
        .collect()
}

/// Downloads and decrypts report their bytes per file (what the terminal's byte bars and a
/// JSON log show), ending at the file's full size.
#[tokio::test]
async fn downloads_and_decrypts_report_bytes_per_file() {
    let (base, _script) = crate::outputs::export_server().await;
    let ran = crate::outputs::export_case(&base)
        .arg("--log-format")
        .arg("json")
        .run()
        .await;
    let encrypted = std::fs::metadata(ran.path().join("out/mailbox-0.asc"))
        .expect("the download is kept")
        .len();
    for (kind, file) in [("download", "mailbox-0.asc"), ("decrypt", "mailbox-0.mbox")] {
        let seen = file_progress(&ran.stdout, kind, file);
        assert_eq!(
            seen.last(),
            Some(&(encrypted, Some(encrypted))),
            "{kind} of {file}: the last progress is the whole encrypted file: {seen:?}\n{}",
            ran.stdout
        );
        assert!(
            seen.windows(2).all(|w| w[0].0 <= w[1].0),
            "{kind} progress only grows: {seen:?}"
        );
    }
}
