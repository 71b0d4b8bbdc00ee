//! Workflow packs: `uses:` targets in other git repositories, pinned by `auditflow.lock`,
//! kept in a local cache, and `AUDITFLOW_PATH` for organisation-wide installs.
//!
//! Why: shared playbooks (a security team's Google export) are reused by many teams, and an
//! auditor must be able to say which version of a playbook produced an export. A pack file
//! is fetched once into the cache (a bare mirror per repository and the tree of each commit
//! used), checked against the SHA-256 the lock recorded, and then loaded like a local file;
//! a relative `uses:` inside it stays inside the same repository at the same commit.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod git;
pub mod lock;
pub mod reference;

pub use lock::{find_lock, LockFile, LOCK_FILE};
pub use reference::{is_remote, parse_remote, redact, strip_userinfo, RemoteRef};

use git::RevKind;

/// Environment variable naming the pack cache directory (also `--pack-cache`).
pub const PACK_CACHE_VAR: &str = "AUDITFLOW_PACK_CACHE";
/// Environment variable listing directories searched for `uses: name/file.yaml`.
pub const SEARCH_PATH_VAR: &str = "AUDITFLOW_PATH";

/// Why a pack file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// `git` failed.
    #[error("{what}: git says: {detail}")]
    Git {
        /// What was being done (`fetching git://host/playbooks.git`).
        what: String,
        /// git's message, URL user info removed.
        detail: String,
    },
    /// The cache directory could not be written or read.
    #[error("pack cache {}: {detail}; check the directory (--pack-cache / {PACK_CACHE_VAR}) or delete it to fetch again", path.display())]
    Cache {
        /// The file or directory of the cache.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The lock file could not be read or written.
    #[error("{}: {detail}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What went wrong and what to do.
        detail: String,
    },
    /// A local `uses:` target that is neither beside the caller nor on `AUDITFLOW_PATH`.
    #[error("`uses` target `{target}` does not exist")]
    NotFound {
        /// The target as written.
        target: String,
        /// Where it was looked for, in order.
        looked: Vec<String>,
    },
    /// Anything else, said in full (what is wrong and what to do).
    #[error("{0}")]
    Refused(String),
}

impl PackError {
    /// Advice shown under a diagnostic, when the message itself does not end with it.
    pub fn help(&self) -> Option<String> {
        match self {
            PackError::NotFound { looked, .. } => Some(match looked.as_slice() {
                [beside] => format!("the path is relative to this file; looked for {beside}"),
                _ => format!(
                    "the path is relative to this file, then to each {SEARCH_PATH_VAR} directory; looked for {}",
                    looked.join(", ")
                ),
            }),
            _ => None,
        }
    }
}

/// Where a workflow file came from, when it came from a pack: what the evidence records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PackOrigin {
    /// The repository URL, without user info.
    pub url: String,
    /// The revision as written (`v1.4.0`).
    pub rev: String,
    /// The commit it resolved to.
    pub commit: String,
    /// The file's path inside the repository.
    pub path: String,
}

impl PackOrigin {
    /// `url@commit:path`, how messages name a pack file (12 hex digits of the commit).
    pub fn shown(&self) -> String {
        format!(
            "{}@{}:{}",
            self.url,
            &self.commit[..self.commit.len().min(12)],
            self.path
        )
    }

    /// `url//path@commit`, how the evidence names a pack file (the full commit).
    pub fn recorded(&self) -> String {
        format!("{}//{}@{}", self.url, self.path, self.commit)
    }

    /// The directory of the file inside the repository.
    fn dir(&self) -> &str {
        self.path.rsplit_once('/').map_or("", |(d, _)| d)
    }
}

/// Where `uses:` targets are found: the cache directory.
#[derive(Debug, Clone)]
pub struct PackSettings {
    /// The pack cache directory.
    pub cache_dir: PathBuf,
}

impl PackSettings {
    /// `dir` when given (`--pack-cache`), else `AUDITFLOW_PACK_CACHE`, else
    /// `$XDG_CACHE_HOME/auditflow/packs`, else `~/.cache/auditflow/packs`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let cache_dir = dir
            .or_else(|| env(PACK_CACHE_VAR))
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("auditflow/packs")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/auditflow/packs")))
            .unwrap_or_else(|| std::env::temp_dir().join("auditflow-packs"));
        PackSettings { cache_dir }
    }
}

/// A `uses:` target found.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The file on disk (for a pack file: in the cache).
    pub path: PathBuf,
    /// For a pack file: where it came from.
    pub origin: Option<PackOrigin>,
}

/// How remote references are pinned while resolving.
#[derive(Debug)]
enum Mode {
    /// By this lock file (`run`, `validate`, `fetch`).
    Locked { path: PathBuf, lock: LockFile },
    /// No lock file found: only full commit ids are accepted.
    Unlocked { root_dir: PathBuf },
    /// `auditflow lock`: kept entries come from `old` (unless their URL is in `update`);
    /// the others are resolved now; everything used goes to `new`.
    Locking {
        old: LockFile,
        update: Vec<String>,
        new: LockFile,
    },
}

/// Resolves `uses:` targets for one validation (and, for `auditflow lock`, records them).
#[derive(Debug)]
pub struct Packs {
    settings: PackSettings,
    mode: Mode,
    /// Repositories fetched by this process (each is fetched at most once).
    fetched: HashSet<String>,
}

impl Packs {
    /// For `run` and `validate` of `root`: pinned by the nearest lock file, if any.
    pub fn for_workflow(settings: PackSettings, root: &Path) -> Result<Self, PackError> {
        let root_dir = root
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let root_dir = if root_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            root_dir
        };
        let mode = match find_lock(&root_dir) {
            Some(path) => Mode::Locked {
                lock: LockFile::read(&path)?,
                path,
            },
            None => Mode::Unlocked { root_dir },
        };
        Ok(Packs {
            settings,
            mode,
            fetched: HashSet::new(),
        })
    }

    /// For `auditflow lock`: entries of `old` are kept unless their URL is in `update`.
    pub fn locking(settings: PackSettings, old: LockFile, update: Vec<String>) -> Self {
        Packs {
            settings,
            mode: Mode::Locking {
                old,
                update,
                new: LockFile::new(),
            },
            fetched: HashSet::new(),
        }
    }

    /// The lock built by [`Packs::locking`] (None in other modes).
    pub fn into_lock(self) -> Option<LockFile> {
        match self.mode {
            Mode::Locking { new, .. } => Some(new),
            _ => None,
        }
    }

    /// Finds the file `target` (as written in `caller_dir`'s file, which came from the pack
    /// `caller` if any): remote, inside the caller's pack, beside the caller, or on
    /// `AUDITFLOW_PATH`.
    pub fn resolve(
        &mut self,
        caller_dir: &Path,
        caller: Option<&PackOrigin>,
        target: &str,
    ) -> Result<Resolved, PackError> {
        if is_remote(target) {
            let r = parse_remote(target).map_err(PackError::Refused)?;
            return self.remote(&r);
        }
        if let Some(origin) = caller {
            let path = reference::join_in_repo(origin.dir(), target).ok_or_else(|| {
                PackError::Refused(format!(
                    "`{target}` leaves the repository of {}; a relative `uses:` in a pack names a file of the same pack",
                    origin.shown()
                ))
            })?;
            let inner = PackOrigin {
                path,
                ..origin.clone()
            };
            return self.pack_file(inner);
        }
        local_or_search_path(caller_dir, target)
    }

    /// A remote reference: pinned (by the lock or a commit id), fetched when not cached.
    fn remote(&mut self, r: &RemoteRef) -> Result<Resolved, PackError> {
        let commit = self.pinned_commit(r)?;
        let mirror = self.ensure_commit(r, commit.as_deref())?;
        let commit = match commit {
            Some(c) => c,
            None => git::resolve(&mirror, &r.rev).map(|(c, _)| c).ok_or_else(|| {
                PackError::Refused(format!(
                    "{} has no tag, branch or commit `{}`; check the name after `@` (`git ls-remote {}` lists them)",
                    r.url, r.rev, r.url.trim_start_matches("git+")
                ))
            })?,
        };
        self.pack_file(PackOrigin {
            url: r.url.clone(),
            rev: r.rev.clone(),
            commit,
            path: r.path.clone(),
        })
    }

    /// The commit `r` is pinned to; None while locking a reference anew.
    fn pinned_commit(&self, r: &RemoteRef) -> Result<Option<String>, PackError> {
        match &self.mode {
            Mode::Locked { path, lock } => match lock.entry(&r.url, &r.rev) {
                Some(e) => Ok(Some(e.commit.clone())),
                None => Err(PackError::Refused(format!(
                    "`{r}` is not in {}; run `auditflow lock` with the workflows that use it to add it (and review the change)",
                    path.display()
                ))),
            },
            Mode::Unlocked { .. } if r.is_commit_id() => Ok(Some(r.rev.clone())),
            Mode::Unlocked { root_dir } => Err(PackError::Refused(format!(
                "`{r}` is not pinned: no {LOCK_FILE} in {} or above it, and `{}` is not a full 40-hex commit id; run `auditflow lock WORKFLOW` to pin it (and commit {LOCK_FILE}), or write the commit id after `@`",
                root_dir.display(),
                r.rev
            ))),
            Mode::Locking { old, update, .. } => Ok(old
                .entry(&r.url, &r.rev)
                .filter(|_| !update.contains(&r.url))
                .map(|e| e.commit.clone())),
        }
    }

    /// The mirror of `r`'s repository, holding `commit` (fetched when missing, or always
    /// when `commit` is None); a tag the lock pinned that now names another commit is
    /// refused.
    fn ensure_commit(&mut self, r: &RemoteRef, commit: Option<&str>) -> Result<PathBuf, PackError> {
        let mirror = self.mirror_dir(&r.url);
        let cached = commit.is_some_and(|c| git::resolve(&mirror, c).is_some());
        if cached {
            return Ok(mirror);
        }
        self.fetch(&r.fetch_url, &r.url)?;
        if let Some(commit) = commit {
            check_locked_commit(&mirror, r, commit)?;
        }
        Ok(mirror)
    }

    /// Fetches `url` into its mirror once per process.
    fn fetch(&mut self, fetch_url: &str, url: &str) -> Result<(), PackError> {
        if self.fetched.contains(url) {
            return Ok(());
        }
        let mirror = self.mirror_dir(url);
        if let Some(parent) = mirror.parent() {
            std::fs::create_dir_all(parent).map_err(|e| PackError::Cache {
                path: parent.to_path_buf(),
                detail: e.to_string(),
            })?;
        }
        git::init_bare(&mirror)?;
        git::fetch_all(&mirror, fetch_url, url)?;
        self.fetched.insert(url.to_string());
        Ok(())
    }

    /// A file of a pack at a commit: written out in the cache, its SHA-256 checked against
    /// the lock (or recorded into it while locking).
    fn pack_file(&mut self, origin: PackOrigin) -> Result<Resolved, PackError> {
        let tree = self.ensure_tree(&origin.url, &origin.commit)?;
        let path = tree.join(&origin.path);
        let bytes = std::fs::read(&path).map_err(|_| {
            PackError::Refused(format!(
                "{} does not exist (no such file in the repository at that commit); check the path after `//`",
                origin.shown()
            ))
        })?;
        let sha = crate::durable::sha256_hex(&bytes);
        self.check_or_record(&origin, &sha)?;
        Ok(Resolved {
            path,
            origin: Some(origin),
        })
    }

    /// Compares `sha` with the lock's hash of the file (Locked), or records it (Locking).
    fn check_or_record(&mut self, o: &PackOrigin, sha: &str) -> Result<(), PackError> {
        match &mut self.mode {
            Mode::Locked { path, lock } => {
                let expected = lock
                    .entry(&o.url, &o.rev)
                    .and_then(|e| e.files.get(&o.path));
                match expected {
                    Some(e) if e == sha => Ok(()),
                    Some(e) => Err(PackError::Refused(format!(
                        "{} has SHA-256 {sha}, but {} says {e}: the pack's content is not what was locked (a changed cache or a rewritten commit); delete the pack cache and fetch again (`auditflow fetch`), or review the pack and run `auditflow lock --update {}`",
                        o.shown(),
                        path.display(),
                        o.url
                    ))),
                    None => Err(PackError::Refused(format!(
                        "{} is not in {}; run `auditflow lock` with the workflows that use it to add it (and review the change)",
                        o.shown(),
                        path.display()
                    ))),
                }
            }
            Mode::Locking { new, .. } => {
                new.entry_mut(&o.url, &o.rev, &o.commit)
                    .files
                    .insert(o.path.clone(), sha.to_string());
                Ok(())
            }
            Mode::Unlocked { .. } => Ok(()),
        }
    }

    /// The tree of `commit` of the pack `url`, written out in the cache once.
    fn ensure_tree(&self, url: &str, commit: &str) -> Result<PathBuf, PackError> {
        let dir = self
            .settings
            .cache_dir
            .join("trees")
            .join(cache_key(url))
            .join(commit);
        if dir.is_dir() {
            return Ok(dir);
        }
        let cache_err = |path: &Path, e: std::io::Error| PackError::Cache {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let parent = dir.parent().unwrap_or(&self.settings.cache_dir);
        std::fs::create_dir_all(parent).map_err(|e| cache_err(parent, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(".tree-")
            .tempdir_in(parent)
            .map_err(|e| cache_err(parent, e))?;
        let out = tmp.path().join("t");
        std::fs::create_dir(&out).map_err(|e| cache_err(&out, e))?;
        git::write_tree(&self.mirror_dir(url), commit, &out)?;
        match std::fs::rename(&out, &dir) {
            Ok(()) => Ok(dir),
            // Another process wrote it first: the same commit, the same tree.
            Err(_) if dir.is_dir() => Ok(dir),
            Err(e) => Err(cache_err(&dir, e)),
        }
    }

    /// The bare mirror of `url` in the cache.
    fn mirror_dir(&self, url: &str) -> PathBuf {
        self.settings
            .cache_dir
            .join("git")
            .join(format!("{}.git", cache_key(url)))
    }

    /// `auditflow fetch`: every pack of the lock fetched, its tags checked, its trees
    /// written out and its files' hashes checked.
    pub fn fetch_locked(&mut self) -> Result<usize, PackError> {
        let Mode::Locked { lock, .. } = &self.mode else {
            return Ok(0);
        };
        let entries = lock.packs.clone();
        for e in &entries {
            let r = RemoteRef {
                fetch_url: String::new(),
                url: e.url.clone(),
                path: String::new(),
                rev: e.rev.clone(),
            };
            self.fetch(&git_url(&e.url), &e.url)?;
            check_locked_commit(&self.mirror_dir(&e.url), &r, &e.commit)?;
            for path in e.files.keys() {
                self.pack_file(PackOrigin {
                    url: e.url.clone(),
                    rev: e.rev.clone(),
                    commit: e.commit.clone(),
                    path: path.clone(),
                })?;
            }
        }
        Ok(entries.len())
    }
}

/// What git is given for a URL as the lock records it (`git+https://h/r.git` → `https://h/r.git`).
fn git_url(url: &str) -> String {
    url.strip_prefix("git+").unwrap_or(url).to_string()
}

/// After a fetch: a tag pinned by the lock must still name the locked commit, and that
/// commit must still be in the repository.
fn check_locked_commit(mirror: &Path, r: &RemoteRef, commit: &str) -> Result<(), PackError> {
    if let Some((now, RevKind::Tag)) = git::resolve(mirror, &r.rev) {
        if now != commit {
            return Err(PackError::Refused(format!(
                "tag `{}` of {} now names commit {now}, but the lock pinned it to {commit}: the tag was moved; review what changed, then run `auditflow lock --update {}` to accept it",
                r.rev, r.url, r.url
            )));
        }
    }
    if git::resolve(mirror, commit).is_none() {
        return Err(PackError::Refused(format!(
            "commit {commit} that the lock gives for {} at `{}` is no longer in the repository (history rewritten?); review it, then run `auditflow lock --update {}`",
            r.url, r.rev, r.url
        )));
    }
    Ok(())
}

/// A local `uses:` target: beside the caller first, then in each `AUDITFLOW_PATH` directory.
fn local_or_search_path(caller_dir: &Path, target: &str) -> Result<Resolved, PackError> {
    let beside = caller_dir.join(target);
    if beside.is_file() {
        return Ok(Resolved {
            path: beside,
            origin: None,
        });
    }
    let search: Vec<PathBuf> = match std::env::var_os(SEARCH_PATH_VAR) {
        Some(v) if Path::new(target).is_relative() => std::env::split_paths(&v)
            .filter(|d| !d.as_os_str().is_empty())
            .collect(),
        _ => vec![],
    };
    if let Some(found) = search.iter().map(|d| d.join(target)).find(|p| p.is_file()) {
        return Ok(Resolved {
            path: found,
            origin: None,
        });
    }
    let mut looked = vec![beside.display().to_string()];
    looked.extend(search.iter().map(|d| d.join(target).display().to_string()));
    Err(PackError::NotFound {
        target: target.to_string(),
        looked,
    })
}

/// The cache directory name of a repository: readable, without user info, unique.
fn cache_key(url: &str) -> String {
    let url = strip_userinfo(url);
    let readable: String = url
        .split_once("://")
        .map_or(url.as_str(), |(_, rest)| rest)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    let hash = crate::durable::sha256_hex(url.as_bytes());
    format!("{}-{}", readable.trim_matches('-'), &hash[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_hold_no_credentials() {
        let k = cache_key("git+https://bot:s3cret@git.example.com/sec/playbooks.git");
        assert!(!k.contains("s3cret") && !k.contains("bot"), "{k}");
        assert!(k.starts_with("git.example.com-sec-playbooks.git-"), "{k}");
        assert_eq!(
            k,
            cache_key("git+https://git.example.com/sec/playbooks.git")
        );
    }

    #[test]
    fn search_path_comes_after_the_callers_directory() {
        let caller = tempfile::tempdir().expect("dir");
        let err = local_or_search_path(caller.path(), "team/x.yaml").expect_err("missing");
        assert!(
            err.help().is_some_and(|h| h.contains("team/x.yaml")),
            "{err}"
        );
        std::fs::create_dir(caller.path().join("team")).expect("mkdir");
        std::fs::write(caller.path().join("team/x.yaml"), "x").expect("write");
        let found = local_or_search_path(caller.path(), "team/x.yaml").expect("found");
        assert_eq!(found.path, caller.path().join("team/x.yaml"));
    }
}
