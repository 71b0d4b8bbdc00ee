//! Durations through the real binary: a bad `--max-wait`, duration input or `--latency` exits 2
//! with the accepted forms, and an inputs file with a key given twice is refused at that key.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn auditflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_auditflow"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("the auditflow binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A valid workflow with a duration input (`poll_interval`) and a required input.
fn workflow() -> &'static str {
    "tests/cases/valid/everything.yaml"
}

const ACCEPTED: &str = "ms, s, m, h, d or w";

#[test]
fn max_wait_in_months_is_refused_with_exit_2() {
    let out = auditflow(&["run", workflow(), "-i", "domain=x", "--max-wait", "30M"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--max-wait"), "{err}");
    assert!(
        err.contains("invalid duration `30M`: unknown unit `M`"),
        "{err}"
    );
    assert!(err.contains(ACCEPTED), "{err}");
    assert!(!err.contains("month"), "{err}");
}

#[test]
fn max_wait_refuses_bare_numbers_and_long_unit_names() {
    for bad in ["30", "30mins", "30 mn", "1.5h"] {
        let out = auditflow(&["run", workflow(), "-i", "domain=x", "--max-wait", bad]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains(ACCEPTED), "{bad}: {err}");
    }
}

#[test]
fn duration_input_in_months_is_refused_with_exit_2() {
    let out = auditflow(&[
        "run",
        workflow(),
        "--dry-run",
        "-i",
        "domain=x",
        "-i",
        "poll_interval=30M",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("poll_interval"), "{err}");
    assert!(err.contains("unknown unit `M`"), "{err}");
    assert!(err.contains(ACCEPTED), "{err}");
}

#[test]
fn sim_latency_is_parsed_by_the_same_rules() {
    let out = auditflow(&["sim", "--latency", "30M"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--latency"), "{err}");
    assert!(err.contains(ACCEPTED), "{err}");
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_file(name: &str, text: &[u8]) -> TempFile {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write temp file");
    TempFile(path)
}

#[test]
fn inputs_file_with_a_key_given_twice_is_refused_at_the_second() {
    let f = temp_file(
        "inputs.yaml",
        b"domain: example.com\npoll_interval: 5s\ndomain: other.example\n",
    );
    let path = f.0.to_string_lossy().into_owned();
    let out = auditflow(&["run", workflow(), "--dry-run", "--inputs-file", &path]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{path}:3:1:")), "{err}");
    assert!(
        err.contains("duplicate key `domain`; it is already given at line 1"),
        "{err}"
    );
}

#[test]
fn inputs_file_that_is_not_utf8_gets_a_position() {
    let f = temp_file("latin1.yaml", b"domain: caf\xe9\n");
    let path = f.0.to_string_lossy().into_owned();
    let out = auditflow(&["run", workflow(), "--dry-run", "--inputs-file", &path]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{path}:1:12:")), "{err}");
    assert!(err.contains("not UTF-8"), "{err}");
}
