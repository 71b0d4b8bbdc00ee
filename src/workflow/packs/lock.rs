//! `auditflow.lock`: the commit each remote `uses:` reference resolved to and the SHA-256
//! of every pack file used, so runs and validation use exactly what was reviewed.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::PackError;

/// The lock file's name, written beside the workflows it covers.
pub const LOCK_FILE: &str = "auditflow.lock";

/// Version of the lock format.
const LOCK_VERSION: u32 = 1;

/// The lock file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LockFile {
    /// Format version (1).
    pub version: u32,
    /// The workflow files it covers, relative to its directory (`auditflow lock` with no
    /// files locks these again).
    #[serde(default)]
    pub workflows: Vec<String>,
    /// One entry per repository and revision used.
    #[serde(default)]
    pub packs: Vec<LockedPack>,
}

/// A repository at a revision, as locked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockedPack {
    /// The repository URL as written, without user info.
    pub url: String,
    /// The tag, branch or commit id as written after `@`.
    pub rev: String,
    /// The commit it resolved to.
    pub commit: String,
    /// SHA-256 of each file used from it, by path inside the repository.
    pub files: BTreeMap<String, String>,
}

impl LockFile {
    /// An empty lock.
    pub fn new() -> Self {
        LockFile {
            version: LOCK_VERSION,
            ..LockFile::default()
        }
    }

    /// The entry of `url` at `rev`.
    pub fn entry(&self, url: &str, rev: &str) -> Option<&LockedPack> {
        self.packs.iter().find(|p| p.url == url && p.rev == rev)
    }

    /// The entry of `url` at `rev`, made (at `commit`) when missing.
    pub fn entry_mut(&mut self, url: &str, rev: &str, commit: &str) -> &mut LockedPack {
        let i = match self.packs.iter().position(|p| p.url == url && p.rev == rev) {
            Some(i) => i,
            None => {
                self.packs.push(LockedPack {
                    url: url.to_string(),
                    rev: rev.to_string(),
                    commit: commit.to_string(),
                    files: BTreeMap::new(),
                });
                self.packs.len() - 1
            }
        };
        &mut self.packs[i]
    }

    /// Reads the lock file at `path`.
    pub fn read(path: &Path) -> Result<LockFile, PackError> {
        let bad = |detail: String| PackError::Lock {
            path: path.to_path_buf(),
            detail,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let lock: LockFile = serde_yaml_ng::from_str(&text).map_err(|e| {
            bad(format!(
                "not a lock file ({e}); write it again with `auditflow lock`"
            ))
        })?;
        if let Some(p) = lock
            .packs
            .iter()
            .find(|p| !super::reference::is_commit_id(&p.commit))
        {
            return Err(bad(format!(
                "the commit of {} at `{}` is `{}`, not a 40-hex commit id; delete the entry (or the file) and run `auditflow lock WORKFLOW...` again",
                p.url, p.rev, p.commit
            )));
        }
        if lock.version != LOCK_VERSION {
            return Err(bad(format!(
                "lock format version {} is not {LOCK_VERSION}, the one this auditflow reads; write it again with `auditflow lock`",
                lock.version
            )));
        }
        Ok(lock)
    }

    /// Writes the lock to `path` (sorted, so that it diffs well), through a temporary file.
    pub fn write(&mut self, path: &Path) -> Result<(), PackError> {
        self.packs
            .sort_by(|a, b| (&a.url, &a.rev).cmp(&(&b.url, &b.rev)));
        self.workflows.sort();
        self.workflows.dedup();
        let bad = |detail: String| PackError::Lock {
            path: path.to_path_buf(),
            detail,
        };
        let body = serde_yaml_ng::to_string(self).map_err(|e| bad(e.to_string()))?;
        let text = format!(
            "# Written by `auditflow lock`: the commit and SHA-256 of every pack file the\n# workflows use. Commit it; update a pack with `auditflow lock --update URL`.\n{body}"
        );
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| bad(format!("cannot write beside it: {e}")))?;
        std::io::Write::write_all(&mut tmp, text.as_bytes())
            .map_err(|e| bad(format!("cannot write it: {e}")))?;
        tmp.persist(path)
            .map_err(|e| bad(format!("cannot write it: {e}")))?;
        Ok(())
    }
}

/// The lock file that covers a workflow in `dir`: the nearest `auditflow.lock` in it or a
/// directory above it.
pub fn find_lock(dir: &Path) -> Option<PathBuf> {
    let start = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    start
        .ancestors()
        .map(|d| d.join(LOCK_FILE))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_lock_reads_back_and_bad_commits_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(LOCK_FILE);
        let mut lock = LockFile::new();
        lock.workflows = vec!["b.yaml".into(), "a.yaml".into(), "a.yaml".into()];
        lock.entry_mut("git://h/p.git", "v1", &"a".repeat(40))
            .files
            .insert("x.yaml".into(), "ff".into());
        lock.write(&path).expect("write");
        let back = LockFile::read(&path).expect("read");
        assert_eq!(back.workflows, ["a.yaml", "b.yaml"]);
        assert_eq!(
            back.entry("git://h/p.git", "v1"),
            lock.entry("git://h/p.git", "v1")
        );
        assert_eq!(
            find_lock(dir.path()),
            Some(std::fs::canonicalize(&path).expect("abs"))
        );
        let text = std::fs::read_to_string(&path)
            .expect("text")
            .replace(&"a".repeat(40), "v1");
        std::fs::write(&path, text).expect("write");
        let err = LockFile::read(&path)
            .expect_err("not a commit id")
            .to_string();
        assert!(err.contains("`v1`, not a 40-hex commit id"), "{err}");
    }
}
