//! `run --dry-run=sim` through the binary: a shipped Google export rehearsed end to end in a
//! scratch directory, the user's credentials and output directory untouched, and requests to
//! anything but the simulator refused before they leave the machine.
use std::path::{Path, PathBuf};

use crate::common::{auditflow_async, root, text, Dir};

/// A credential the user has set for production: it must not be used, nor shown.
const REAL_TOKEN: &str = "ya29.real-production-token-do-not-use";

/// Runs `auditflow run ARGS --dry-run=sim` in `dir`, with the user's variables set and the
/// scratch directory created under `dir` (TMPDIR).
async fn rehearse(dir: &Dir, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all: Vec<String> = vec!["run".into()];
    all.extend(args.iter().map(ToString::to_string));
    all.push("--dry-run=sim".into());
    let env = vec![
        ("TMPDIR".to_string(), dir.path().display().to_string()),
        ("GOOGLE_ACCESS_TOKEN".to_string(), REAL_TOKEN.to_string()),
        (
            "GOOGLE_AUDIT_BASE_URL".to_string(),
            "https://apps-apis.google.com".to_string(),
        ),
        (
            "MIMECAST_BASE_URL".into(),
            "https://eu-api.mimecast.com".into(),
        ),
    ];
    let out = auditflow_async(all, env, dir.path().to_path_buf()).await;
    let (stdout, stderr) = text(&out);
    (out.status.code(), stdout, stderr)
}

/// The scratch directory the rehearsal names on stderr.
fn scratch(stderr: &str) -> PathBuf {
    let line = stderr
        .lines()
        .find_map(|l| l.split_once("state and files are in ").map(|(_, p)| p))
        .unwrap_or_else(|| panic!("no scratch directory named:\n{stderr}"));
    PathBuf::from(line.trim())
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == ext))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shipped_export_is_rehearsed_end_to_end_away_from_the_users_files() {
    let dir = Dir::new();
    let evidence = dir.path().join("evidence");
    let wf = root().join("workflows/google/mailbox-export.yaml");
    let (code, stdout, stderr) = rehearse(
        &dir,
        &[
            &wf.display().to_string(),
            "-i",
            "domain=example.com",
            "-i",
            "user=alice",
            "-i",
            &format!("out_dir={}", evidence.display()),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("--dry-run=sim"), "{stderr}");
    // The workflow polls every 10m by default; a rehearsal waits 1s at most between polls.
    assert!(stdout.contains("next in 1s"), "{stdout}");
    let scratch = scratch(&stderr);
    assert!(scratch.starts_with(dir.path()), "{}", scratch.display());
    // Created, polled, downloaded and decrypted, into the scratch directory.
    let mboxes = files_with(&scratch.join("out"), "mbox");
    assert!(
        !mboxes.is_empty(),
        "no mbox in {}\n{stdout}",
        scratch.display()
    );
    for m in &mboxes {
        let mail = std::fs::read(m).unwrap();
        assert!(mail.starts_with(b"From "), "{} is not mbox", m.display());
    }
    // Nothing where the user's output and state would go.
    assert!(!evidence.exists(), "the user's out_dir was written");
    assert!(
        !dir.path().join(".auditflow").exists(),
        "the user's state dir was written"
    );
    assert!(scratch.join("state").is_dir());
    for shown in [&stdout, &stderr] {
        assert!(!shown.contains(REAL_TOKEN), "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_for_anything_but_the_simulator_are_refused() {
    let dir = Dir::new();
    for url in [
        "https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/example.com",
        "http://203.0.113.7:9/x",
    ] {
        let wf = dir.write(
            "direct.yaml",
            &format!(
                "name: direct\nsteps:\n  - id: get\n    call: {{url: \"{url}\", method: GET}}\n"
            ),
        );
        let (code, stdout, stderr) = rehearse(&dir, &[&wf.display().to_string()]).await;
        assert_eq!(code, Some(1), "{url}\n{stdout}\n{stderr}");
        let all = format!("{stdout}{stderr}");
        assert!(
            all.contains("sends requests to the built-in simulator only"),
            "{url}: {all}"
        );
        // A refusal is not transient: it is not tried again.
        assert!(!all.contains("retrying"), "{url}: {all}");
    }
}

/// The pull-request check the README recommends, on the workflow that reads only Mimecast's
/// API 2.0 credentials: the rehearsal gives the simulator's (issue 26 item 2).
#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_reading_mimecast_api_2_credentials_is_rehearsed() {
    let dir = Dir::new();
    let wf = root().join("workflows/mimecast/siem-batch-events.yaml");
    let (code, stdout, stderr) = rehearse(&dir, &[&wf.display().to_string()]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("run succeeded"), "{stdout}");
}
