//! A reader that goes away (`auditflow ... | head -1`) never makes auditflow panic: the run goes
//! on to its end, is recorded with its real status, and exits with its real code.
use std::io::Read as _;
use std::process::Stdio;

use crate::common::{serve, Dir, Reply};

/// Runs the binary with stdout (and, when asked, stderr) connected to pipes whose reading ends
/// are closed at once, so every write fails with EPIPE. Returns the exit code and what stderr
/// said when it was kept open.
fn with_closed_pipes(args: &[&str], cwd: &std::path::Path, close_stderr: bool) -> (i32, String) {
    let mut child = crate::common::command(args, cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("auditflow starts");
    drop(child.stdout.take());
    let mut err = String::new();
    if close_stderr {
        drop(child.stderr.take());
    } else if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err).expect("stderr is text");
    }
    let status = child.wait().expect("auditflow ends");
    (status.code().unwrap_or(-1), err)
}

#[test]
fn schema_to_a_closed_pipe_exits_0_without_a_panic() {
    let dir = Dir::new();
    let (code, err) = with_closed_pipes(&["schema"], dir.path(), false);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_readers_left_finishes_and_is_recorded_as_succeeded() {
    let (url, script) = serve(vec![(
        "/ok",
        vec![Reply::json(200, serde_json::json!({"ok": true}))],
    )])
    .await;
    let dir = Dir::new();
    let wf = dir.write(
        "wf.yaml",
        &format!(
            "name: closed-pipe\ninputs:\n  out_dir: {{type: string, default: out}}\nsteps:\n  - id: one\n    call: {{url: '{url}/ok', save_to: '{{{{ inputs.out_dir }}}}/one.json'}}\n  - id: two\n    call: {{url: '{url}/ok'}}\n"
        ),
    );
    let cwd = dir.path().to_path_buf();
    let wf_arg = wf.display().to_string();
    let (code, err) =
        tokio::task::spawn_blocking(move || with_closed_pipes(&["run", &wf_arg], &cwd, true))
            .await
            .expect("the run finishes");
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(script.requests("/ok").len(), 2, "both steps ran");
    assert!(
        dir.path().join("out/one.json").is_file(),
        "the evidence was saved"
    );
    assert!(
        dir.path().join("out/manifest.json").is_file(),
        "the manifest was written"
    );
    let runs = crate::common::auditflow(&["runs", "list"], &[], dir.path());
    let (out, _) = crate::common::text(&runs);
    assert!(out.contains("succeeded"), "runs list: {out}");
    assert!(
        !out.contains("unfinished"),
        "no footnote when nothing is unfinished: {out}"
    );
}
