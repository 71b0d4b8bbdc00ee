//! Ctrl-C is "interrupted" (exit 130) whatever step it lands in, and the run stays resumable.
use std::time::Duration;

use crate::common::{serve, text, Dir, Reply};

/// Starts `auditflow run`, waits until the server has seen the download request, sends SIGINT.
async fn interrupt_during(
    wf_yaml: String,
    wait_for: &str,
    script: &crate::common::Script,
) -> (i32, String, Dir) {
    let dir = Dir::new();
    let wf = dir.write("wf.yaml", &wf_yaml);
    let child = crate::common::command(&["run", &wf.display().to_string()], dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("auditflow starts");
    for _ in 0..800 {
        if !script.requests(wait_for).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        !script.requests(wait_for).is_empty(),
        "the request never came"
    );
    let pid = i32::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) with a child's pid and SIGINT has no memory effects.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let out =
        tokio::task::spawn_blocking(move || child.wait_with_output().expect("auditflow ends"))
            .await
            .expect("waited");
    let (_, err) = text(&out);
    (out.status.code().unwrap_or(-1), err, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_a_download_exits_130_and_the_run_is_resumable() {
    let (url, script) = serve(vec![(
        "/big.bin",
        vec![
            Reply::json(200, serde_json::json!({"never": "sent in time"}))
                .delay(Duration::from_secs(30)),
        ],
    )])
    .await;
    let wf = format!(
        "name: interrupted-download\nsteps:\n  - id: fetch\n    download: {{urls: ['{url}/big.bin'], to: out}}\n"
    );
    let (code, err, dir) = interrupt_during(wf, "/big.bin", &script).await;
    assert_eq!(code, 130, "stderr: {err}");
    assert!(err.contains("interrupted"), "stderr: {err}");
    assert!(!err.contains("FAILED"), "stderr: {err}");
    let runs = crate::common::auditflow(&["runs", "list"], &[], dir.path());
    let (out, _) = text(&runs);
    assert!(
        out.contains("cancelled*"),
        "an unfinished, cancelled run: {out}"
    );
}
