//! What `--help` and `--version` tell a user who has only the binary.
use crate::common::{auditflow, text, Dir};

#[test]
fn help_lists_the_exit_codes() {
    let dir = Dir::new();
    let o = auditflow(&["--help"], &[], dir.path());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    assert!(out.contains("Exit codes:"), "help: {out}");
    for code in ["  0 ", "  1 ", "  2 ", "  75 ", "  130 ", "  143 "] {
        assert!(out.contains(code), "help lacks exit code {code:?}: {out}");
    }
}

#[test]
fn version_names_the_commit_when_built_from_a_checkout() {
    let dir = Dir::new();
    let o = auditflow(&["--version"], &[], dir.path());
    let (out, _) = text(&o);
    assert!(
        out.starts_with(&format!("auditflow {}", env!("CARGO_PKG_VERSION"))),
        "version: {out}"
    );
    let in_checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".git")
        .exists();
    if in_checkout {
        assert!(out.contains("(commit "), "version: {out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_on_a_pipe_carry_no_colour() {
    let (url, _script) = crate::common::serve(vec![(
        "/ok",
        vec![crate::common::Reply::json(
            200,
            serde_json::json!({"ok": true}),
        )],
    )])
    .await;
    let dir = Dir::new();
    let wf = dir.write(
        "wf.yaml",
        &format!("name: colour\nsteps:\n  - id: one\n    call: {{url: '{url}/ok'}}\n"),
    );
    let wf_arg = wf.display().to_string();
    // CI unset: the pipe alone must turn colour off.
    let mut cmd = crate::common::command(&["run", &wf_arg], dir.path());
    cmd.env_remove("CI")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "debug");
    let o = tokio::task::spawn_blocking(move || cmd.output().expect("auditflow runs"))
        .await
        .expect("the run finishes");
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    assert!(err.contains("DEBUG"), "debug log lines expected: {err}");
    assert!(!err.contains('\u{1b}'), "ANSI escapes on a pipe: {err}");
}

#[test]
fn completions_cover_every_subcommand() {
    let dir = Dir::new();
    let o = auditflow(&["completions", "bash"], &[], dir.path());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    assert!(out.contains("complete -F"), "not a bash script: {out}");
    for sub in [
        "run", "validate", "runs", "sim", "decrypt", "verify", "demo",
    ] {
        assert!(out.contains(sub), "bash completion lacks {sub}");
    }
    assert!(
        out.contains("--max-wait"),
        "bash completion lacks run's flags"
    );
    let o = auditflow(&["completions", "tcsh"], &[], dir.path());
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_pages_are_written_per_subcommand() {
    let dir = Dir::new();
    let o = auditflow(&["man", "--dir", "pages"], &[], dir.path());
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    let main = std::fs::read_to_string(dir.path().join("pages/auditflow.1")).expect("auditflow.1");
    assert!(main.contains(".TH auditflow"), "not roff: {main}");
    assert!(
        main.contains("Exit codes"),
        "the exit codes are in the page"
    );
    let run = std::fs::read_to_string(dir.path().join("pages/auditflow-run.1")).expect("run page");
    assert!(
        run.contains("max\\-wait"),
        "run page lacks its flags: {run}"
    );
}

#[test]
fn the_demo_never_deletes_a_directory_it_did_not_make() {
    let dir = Dir::new();
    let mine = dir.path().join("precious");
    std::fs::create_dir_all(&mine).expect("dir");
    std::fs::write(mine.join("notes.txt"), "mine").expect("file");
    let o = auditflow(&["demo", "--out", "precious"], &[], dir.path());
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("is not an earlier demo's output"), "{err}");
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).expect("still there"),
        "mine"
    );
}

#[test]
fn inputs_describes_what_a_shipped_workflow_takes_and_keeps() {
    let describe = |wf: &str| {
        let o = auditflow(
            &["inputs", &crate::common::wf(wf), "--json"],
            &[],
            crate::common::root(),
        );
        assert!(o.status.success(), "{:?}", crate::common::text(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("json")
    };
    let d = describe("google/mailbox-export.yaml");
    assert_eq!(d["lifecycle"], "one-shot");
    let user = d["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .find(|i| i["name"] == "user")
        .expect("user input");
    assert_eq!(user["required"], true);
    assert_eq!(user["type"], "string");
    let env: Vec<&str> = d["environment"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for var in [
        "GOOGLE_AUDIT_BASE_URL",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "AUDIT_PGP_SECRET_KEY",
    ] {
        assert!(env.contains(&var), "{var} in {env:?}");
    }
    assert_eq!(d["budgets"][0], "google-audit-export-requests");
    let siem = describe("mimecast/siem-logs.yaml");
    assert_eq!(siem["lifecycle"], "recurring");
    assert_eq!(siem["cursors"][0], "mimecast-siem-logs/request");
    // the rules an input keeps are shown, in JSON and in the text form
    let batch = describe("mimecast/siem-batch-events.yaml");
    let page = batch["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .find(|i| i["name"] == "page_size")
        .expect("page_size input");
    assert_eq!(page["allowed"], "1 to 100");
    let o = auditflow(
        &[
            "inputs",
            &crate::common::wf("google/vault-mail-export.yaml"),
        ],
        &[],
        crate::common::root(),
    );
    let (out, err) = crate::common::text(&o);
    assert!(o.status.success(), "{err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {out}"))
            .to_string()
    };
    assert!(line("start_time").contains("timestamp"), "{out}");
    assert!(
        line("export_name").contains("allowed: matching `[^~!$'(),;@:/?]+`"),
        "{out}"
    );
}
