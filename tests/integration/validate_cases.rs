//! Failing cases as files (hurl style): each `tests/cases/invalid/NAME.yaml` must be rejected
//! by `auditflow validate` with exactly the text in `NAME.err`; every shipped workflow and
//! every file in `tests/cases/valid/` must be accepted.
//!
//! After an intended change of messages, regenerate with `AUDITFLOW_BLESS=1 cargo test --test integration validate_cases`
//! and review the diff.
use crate::common;

use std::path::{Path, PathBuf};

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(yaml_files(&p));
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn invalid_cases_fail_with_their_expected_text() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/invalid");
    let cases = yaml_files(&dir);
    assert!(
        cases.len() >= 10,
        "expected the failing cases, found {}",
        cases.len()
    );
    let mut mismatches = Vec::new();
    for case in cases {
        let name = case.file_name().unwrap().to_str().unwrap().to_string();
        let out = common::auditflow(&["validate", &name], &[], &dir);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name} must be rejected with exit 2"
        );
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout expected");
        let got = String::from_utf8_lossy(&out.stderr).into_owned();
        mismatches.extend(common::check_snapshot(&case, &got));
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn shipped_workflows_and_valid_cases_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = yaml_files(&root.join("workflows"));
    files.extend(yaml_files(&root.join("tests/cases/valid")));
    assert!(!files.is_empty());
    let args: Vec<String> = std::iter::once("validate".to_string())
        .chain(files.iter().map(|f| f.display().to_string()))
        .collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::auditflow(&a, &[], root);
    let (stdout, stderr) = common::text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().count(), files.len(), "{stdout}");
}
