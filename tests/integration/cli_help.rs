//! What `--help` and `--version` tell a user who has only the binary.
use crate::common::{auditflow, text, Dir};

#[test]
fn help_lists_the_exit_codes() {
    let dir = Dir::new();
    let o = auditflow(&["--help"], &[], dir.path());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    assert!(out.contains("Exit codes:"), "help: {out}");
    for code in ["  0 ", "  1 ", "  2 ", "  75 ", "  130 "] {
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
