//! The one snapshot harness: expected texts kept as files and compared exactly, rewritten for
//! review when `AUDITFLOW_BLESS` is set. Shared by the integration tests (a module of their
//! binary) and the library's unit tests (which include this file with `#[path]`), so the
//! blessing rule and the mismatch report exist once.
use std::fmt;
use std::path::{Path, PathBuf};

/// A snapshot that differs from what the test got.
pub(crate) struct Mismatch {
    /// The snapshot file.
    pub(crate) file: PathBuf,
    /// Its content.
    pub(crate) expected: String,
    /// What the test produced.
    pub(crate) got: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.file.file_name().unwrap_or_default().to_string_lossy();
        write!(
            f,
            "--- {name}: expected\n{}--- got\n{}",
            self.expected, self.got
        )
    }
}

/// Compares `got` with the snapshot file, or rewrites the file when `AUDITFLOW_BLESS` is set.
/// A missing snapshot fails the test, saying how to make it.
pub(crate) fn compare(file: &Path, got: &str) -> Option<Mismatch> {
    if std::env::var_os("AUDITFLOW_BLESS").is_some() {
        std::fs::write(file, got).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        return None;
    }
    let expected = std::fs::read_to_string(file)
        .unwrap_or_else(|_| panic!("{} is missing; run with AUDITFLOW_BLESS=1", file.display()));
    (got != expected).then(|| Mismatch {
        file: file.to_path_buf(),
        expected,
        got: got.to_string(),
    })
}
