//! The `git` command, run for packs: fetching into a bare mirror, resolving revisions,
//! writing a commit's tree out.
//!
//! Why the `git` command and not a git library: it is already on every CI runner, and it
//! brings the user's whole credential setup with it (credential helpers, SSH keys and
//! agents, `GIT_ASKPASS`, `insteadOf` rewrites, proxies) with nothing to configure here and
//! no large dependency tree to build. Prompts are turned off so a missing credential fails
//! at once instead of hanging a scheduled run; git's messages are shown with URL user info
//! removed.
use std::path::Path;
use std::process::{Command, Stdio};

use super::reference::redact;
use super::PackError;

/// Runs `git` in the bare repository `git_dir` (or none) and returns its trimmed stdout.
fn git(git_dir: Option<&Path>, args: &[&str], what: &str) -> Result<String, PackError> {
    let mut cmd = Command::new("git");
    if let Some(d) = git_dir {
        cmd.arg("--git-dir").arg(d);
    }
    let out = cmd
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| PackError::Git {
            what: what.to_string(),
            detail: format!("cannot start `git` ({e}); install git and make sure it is on PATH"),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(PackError::Git {
            what: what.to_string(),
            detail: redact(stderr.trim()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Makes `git_dir` a bare repository if it is not one yet.
pub(super) fn init_bare(git_dir: &Path) -> Result<(), PackError> {
    if git_dir.join("HEAD").is_file() {
        return Ok(());
    }
    let dir = git_dir.to_string_lossy();
    git(
        None,
        &["init", "--bare", "--quiet", &dir],
        "creating the pack cache repository",
    )?;
    Ok(())
}

/// Fetches every branch and tag of `fetch_url` into the mirror (tags moved upstream are
/// moved here too; `url` names the repository in messages).
pub(super) fn fetch_all(git_dir: &Path, fetch_url: &str, url: &str) -> Result<(), PackError> {
    git(
        Some(git_dir),
        &[
            "fetch",
            "--quiet",
            "--force",
            "--prune",
            "--no-tags",
            "--no-write-fetch-head",
            "--",
            fetch_url,
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ],
        &format!("fetching {url}"),
    )?;
    Ok(())
}

/// What a revision name is in the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevKind {
    /// A tag: expected never to move.
    Tag,
    /// A branch: expected to move; the lock pins the commit.
    Branch,
    /// A full commit id.
    Commit,
}

/// The commit `rev` names in the mirror (a tag, a branch, or a commit id it holds).
pub(super) fn resolve(git_dir: &Path, rev: &str) -> Option<(String, RevKind)> {
    let candidates = [
        (format!("refs/tags/{rev}^{{commit}}"), RevKind::Tag),
        (format!("refs/heads/{rev}^{{commit}}"), RevKind::Branch),
        (format!("{rev}^{{commit}}"), RevKind::Commit),
    ];
    candidates.into_iter().find_map(|(spec, kind)| {
        if kind == RevKind::Commit && !super::reference::is_commit_id(rev) {
            return None;
        }
        git(
            Some(git_dir),
            &["rev-parse", "--verify", "--quiet", &spec],
            "resolving",
        )
        .ok()
        .filter(|c| super::reference::is_commit_id(c))
        .map(|c| (c, kind))
    })
}

/// Writes the tree of `commit` into the empty directory `dest` (through a zip archive, so
/// no `tar` is needed and entry paths are checked on the way out).
pub(super) fn write_tree(git_dir: &Path, commit: &str, dest: &Path) -> Result<(), PackError> {
    let zip_path = dest.with_extension("zip");
    let zip_arg = zip_path.to_string_lossy();
    let out = format!("--output={zip_arg}");
    git(
        Some(git_dir),
        &["archive", "--format=zip", "-0", &out, commit],
        &format!("writing out commit {commit}"),
    )?;
    let io = |e: std::io::Error| PackError::Cache {
        path: dest.to_path_buf(),
        detail: e.to_string(),
    };
    let file = std::fs::File::open(&zip_path).map_err(io)?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| PackError::Cache {
        path: zip_path.clone(),
        detail: e.to_string(),
    })?;
    archive.extract(dest).map_err(|e| PackError::Cache {
        path: dest.to_path_buf(),
        detail: e.to_string(),
    })?;
    std::fs::remove_file(&zip_path).map_err(io)
}
