//! What makes two runs "the same run", wherever the runner checked the workflow out.
//!
//! A CI job runs in a directory whose absolute path changes from job to job (GitLab's holds
//! the runner and concurrency id, GitHub's the workspace name) and its state comes back from
//! a cache restore. So a run is identified by:
//! - the root workflow file's path **relative to the root of the tree that holds it**: the
//!   git repository (the nearest ancestor with a `.git`), else the working directory when
//!   the file is under it, else (a file outside both) its absolute path;
//! - the non-secret inputs, and the shard.
//!
//! The workflow's content is not part of the identity: a resumed run compares the SHA-256 of
//! every file it began with and refuses to go on from an edited workflow that already sent a
//! request that must not be repeated (see [`super::StateDir::begin`]).
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the relative path of a workflow is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// The root of the git repository holding the file.
    Repository,
    /// The working directory the run was started in (no repository around the file).
    WorkingDirectory,
    /// Neither: the file's absolute path (such a run is found again only at the same path).
    Absolute,
}

/// The workflow part of a run's identity (recorded in every run header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowIdentity {
    /// The path, `/`-separated, relative to the anchor (absolute for [`Anchor::Absolute`]).
    pub path: String,
    /// What `path` is relative to.
    pub anchor: Anchor,
}

impl WorkflowIdentity {
    /// The identity of the workflow file `file`, run from the working directory `cwd`.
    pub(crate) fn of(file: &Path, cwd: Option<&Path>) -> WorkflowIdentity {
        let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| absolute(file, cwd));
        if let Some(rel) = repository_root(&canonical).and_then(|r| relative(&canonical, &r)) {
            return WorkflowIdentity {
                path: rel,
                anchor: Anchor::Repository,
            };
        }
        let cwd = cwd.and_then(|c| std::fs::canonicalize(c).ok());
        if let Some(rel) = cwd.and_then(|c| relative(&canonical, &c)) {
            return WorkflowIdentity {
                path: rel,
                anchor: Anchor::WorkingDirectory,
            };
        }
        WorkflowIdentity {
            path: canonical.display().to_string(),
            anchor: Anchor::Absolute,
        }
    }

    /// The identity as people read it: `workflows/x.yaml (in its git repository)`.
    pub fn describe(&self) -> String {
        let within = match self.anchor {
            Anchor::Repository => "in its git repository",
            Anchor::WorkingDirectory => "under the working directory",
            Anchor::Absolute => "at this absolute path",
        };
        format!("{} ({within})", self.path)
    }

    /// Whether a legacy run recorded as `recorded` (the path given then, relative or
    /// absolute) may be a run of this workflow: the recorded path ends with this identity's
    /// relative path, component by component.
    pub(crate) fn matches_legacy_path(&self, recorded: &str) -> bool {
        let ours: Vec<&str> = self.path.split('/').filter(|s| !s.is_empty()).collect();
        let theirs: Vec<String> = Path::new(recorded)
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        !ours.is_empty()
            && theirs.len() >= ours.len()
            && theirs[theirs.len() - ours.len()..]
                .iter()
                .zip(&ours)
                .all(|(a, b)| a == b)
    }
}

/// The key of "this workflow with these inputs" (the name of its pointer under `active/`):
/// SHA-256 of the workflow's identity path, the non-secret inputs and the shard. Secret
/// inputs stay out (not even hashed).
pub(crate) fn run_key(
    identity: &WorkflowIdentity,
    inputs: &serde_json::Value,
    shard: Option<&str>,
) -> String {
    let doc = serde_json::json!({
        "identity": 2,
        "workflow": identity.path,
        "inputs": inputs,
        "shard": shard,
    });
    crate::durable::sha256_hex(doc.to_string().as_bytes())
}

/// The key releases before run identities used: SHA-256 of the canonical absolute path, the
/// inputs and the shard. Read only, to find runs such a release left unfinished.
pub(crate) fn legacy_run_key(
    workflow: &Path,
    inputs: &serde_json::Value,
    shard: Option<&str>,
) -> String {
    let canonical = std::fs::canonicalize(workflow).unwrap_or_else(|_| workflow.to_path_buf());
    let doc = serde_json::json!({
        "workflow": canonical.display().to_string(),
        "inputs": inputs,
        "shard": shard,
    });
    crate::durable::sha256_hex(doc.to_string().as_bytes())
}

/// `path` as recorded for a file of the plan: relative to `root_dir` (the directory that
/// anchors the run's identity) when it is under it, so the record is the same in every
/// checkout.
pub(crate) fn recorded_path(path: &Path, root_dir: Option<&Path>) -> String {
    root_dir
        .and_then(|r| relative(path, r))
        .unwrap_or_else(|| path.display().to_string())
}

impl WorkflowIdentity {
    /// The directory this identity's relative paths start from, for `file` run from `cwd`
    /// (None for an absolute identity).
    pub(crate) fn anchor_dir(&self, file: &Path, cwd: Option<&Path>) -> Option<PathBuf> {
        let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| absolute(file, cwd));
        match self.anchor {
            Anchor::Repository => repository_root(&canonical),
            Anchor::WorkingDirectory => cwd.and_then(|c| std::fs::canonicalize(c).ok()),
            Anchor::Absolute => None,
        }
    }
}

fn absolute(file: &Path, cwd: Option<&Path>) -> PathBuf {
    match cwd {
        Some(c) if file.is_relative() => c.join(file),
        _ => file.to_path_buf(),
    }
}

/// The nearest ancestor of `file` holding a `.git` (a directory, or a worktree's file).
fn repository_root(file: &Path) -> Option<PathBuf> {
    file.ancestors()
        .skip(1)
        .find(|dir| std::fs::symlink_metadata(dir.join(".git")).is_ok())
        .map(Path::to_path_buf)
}

/// `path` relative to `base`, `/`-separated, when `path` is under `base`.
fn relative(path: &Path, base: &Path) -> Option<String> {
    let rest = path.strip_prefix(base).ok()?;
    let parts: Vec<String> = rest
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(with_git: bool) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().expect("tempdir");
        let wf = d.path().join("checkout/workflows/google/x.yaml");
        std::fs::create_dir_all(wf.parent().expect("parent")).expect("dirs");
        std::fs::write(&wf, "name: x\nsteps: []\n").expect("write");
        if with_git {
            std::fs::create_dir(d.path().join("checkout/.git")).expect("git dir");
        }
        (d, wf)
    }

    #[test]
    fn a_file_in_a_repository_is_named_from_its_root_whatever_the_working_directory() {
        let (d, wf) = tree(true);
        let id = WorkflowIdentity::of(&wf, Some(d.path()));
        assert_eq!(id.path, "workflows/google/x.yaml");
        assert_eq!(id.anchor, Anchor::Repository);
        // The same tree elsewhere (another job's checkout) is the same identity and key.
        let (d2, wf2) = tree(true);
        let id2 = WorkflowIdentity::of(&wf2, Some(&d2.path().join("checkout/workflows")));
        assert_eq!(id, id2);
        let inputs = serde_json::json!({"user": "alice"});
        assert_eq!(run_key(&id, &inputs, None), run_key(&id2, &inputs, None));
        assert_ne!(
            run_key(&id, &inputs, None),
            run_key(&id, &serde_json::json!({"user": "bob"}), None)
        );
        assert_ne!(
            legacy_run_key(&wf, &inputs, None),
            legacy_run_key(&wf2, &inputs, None),
            "the old key held the absolute path"
        );
    }

    #[test]
    fn without_a_repository_the_working_directory_anchors_it() {
        let (d, wf) = tree(false);
        let cwd = d.path().join("checkout");
        let id = WorkflowIdentity::of(&wf, Some(&cwd));
        assert_eq!(id.path, "workflows/google/x.yaml");
        assert_eq!(id.anchor, Anchor::WorkingDirectory);
        let elsewhere = WorkflowIdentity::of(&wf, Some(Path::new("/")));
        // "/" holds every path: relative to it, it is the whole path without the root.
        assert_eq!(elsewhere.anchor, Anchor::WorkingDirectory);
        let outside = tempfile::tempdir().expect("tempdir");
        let abs = WorkflowIdentity::of(&wf, Some(outside.path()));
        assert_eq!(abs.anchor, Anchor::Absolute);
        assert!(abs.path.ends_with("checkout/workflows/google/x.yaml"));
    }

    #[test]
    fn legacy_paths_match_by_their_trailing_components() {
        let id = WorkflowIdentity {
            path: "workflows/google/x.yaml".into(),
            anchor: Anchor::Repository,
        };
        assert!(id.matches_legacy_path("/builds/r1/0/team/workflows/google/x.yaml"));
        assert!(id.matches_legacy_path("workflows/google/x.yaml"));
        assert!(!id.matches_legacy_path("/b/workflows/mimecast/x.yaml"));
        assert!(!id.matches_legacy_path("google/x.yaml"));
    }

    #[test]
    fn recorded_paths_are_relative_to_the_anchor() {
        let (d, wf) = tree(true);
        let id = WorkflowIdentity::of(&wf, None);
        let root = id.anchor_dir(&wf, None).expect("a repository");
        let canonical = std::fs::canonicalize(&wf).expect("canonical");
        assert_eq!(
            recorded_path(&canonical, Some(&root)),
            "workflows/google/x.yaml"
        );
        drop(d);
    }
}
