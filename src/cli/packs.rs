//! `auditflow lock` and `auditflow fetch`: pinning workflow packs and filling the cache
//! ahead of runs (see [`crate::workflow::packs`]).
use std::path::{Path, PathBuf};

use super::error::CliError;
use crate::workflow::packs::{find_lock, strip_userinfo, LockFile, PackSettings, Packs, LOCK_FILE};
use crate::workflow::validate::{validate_in, validate_with};

/// `auditflow lock [WF...] [--update URL]...`: resolves every remote `uses:` reachable from
/// the workflows (those given and those the lock already covers) and writes the lock.
pub(super) fn lock(
    files: &[PathBuf],
    update: &[String],
    settings: &PackSettings,
) -> Result<(), CliError> {
    let (lock_path, old) = lock_for(files)?;
    let lock_dir = lock_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut workflows: Vec<String> = old
        .workflows
        .iter()
        .filter(|w| lock_dir.join(w).is_file())
        .cloned()
        .collect();
    for f in files {
        workflows.push(relative_to(&lock_dir, f)?);
    }
    if workflows.is_empty() {
        return Err(CliError::Usage(format!(
            "{} covers no workflow files that still exist; name the workflow files to lock: `auditflow lock WORKFLOW.yaml...`",
            lock_path.display()
        )));
    }
    let update = checked_updates(update, &old, &lock_path)?;
    let mut packs = Packs::locking(settings.clone(), old.clone(), update);
    let mut errors = Vec::new();
    for w in &workflows {
        if let Err(diags) = validate_in(&lock_dir.join(w), &mut packs) {
            errors.push(CliError::InvalidWorkflow(diags));
        }
    }
    CliError::all(errors)?;
    let mut new = packs.into_lock().unwrap_or_default();
    new.workflows = workflows;
    new.write(&lock_path)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    report_changes(&old, &new, &lock_path);
    Ok(())
}

/// The lock file for `files` (the nearest one above the first, else a new one beside it;
/// with no files, the one of the current directory) and what it holds now.
fn lock_for(files: &[PathBuf]) -> Result<(PathBuf, LockFile), CliError> {
    let dir = match files.first() {
        Some(f) => f
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        None => PathBuf::from("."),
    };
    match find_lock(&dir) {
        Some(p) => {
            let lock = LockFile::read(&p).map_err(|e| CliError::Invalid(e.to_string()))?;
            Ok((p, lock))
        }
        None if files.is_empty() => Err(CliError::Usage(format!(
            "no {LOCK_FILE} in the current directory or above it; name the workflow files to lock: `auditflow lock WORKFLOW.yaml...`"
        ))),
        None => Ok((
            std::fs::canonicalize(&dir).unwrap_or(dir).join(LOCK_FILE),
            LockFile::new(),
        )),
    }
}

/// `file` relative to the lock's directory; a file outside it is refused (the lock would
/// not be found from it).
fn relative_to(lock_dir: &Path, file: &Path) -> Result<String, CliError> {
    let canonical = std::fs::canonicalize(file).map_err(|e| {
        CliError::Usage(format!(
            "cannot read the workflow file {}: {e}",
            file.display()
        ))
    })?;
    let base = std::fs::canonicalize(lock_dir).unwrap_or_else(|_| lock_dir.to_path_buf());
    canonical
        .strip_prefix(&base)
        .map(|r| r.to_string_lossy().replace('\\', "/"))
        .map_err(|_| {
            CliError::Usage(format!(
                "{} is not under {}, where its lock file is; lock the workflows of each directory tree separately",
                file.display(),
                base.display()
            ))
        })
}

/// The `--update` URLs, without user info; each must be a pack of the lock.
fn checked_updates(
    update: &[String],
    old: &LockFile,
    lock_path: &Path,
) -> Result<Vec<String>, CliError> {
    update
        .iter()
        .map(|u| {
            let url = strip_userinfo(u);
            if old.packs.iter().any(|p| p.url == url) {
                Ok(url)
            } else {
                let mut known: Vec<&str> = old.packs.iter().map(|p| p.url.as_str()).collect();
                known.dedup();
                Err(CliError::Usage(format!(
                    "--update {url}: {} has no such pack (it has: {}); give the URL as the lock writes it",
                    lock_path.display(),
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                )))
            }
        })
        .collect()
}

/// Prints each pack of the new lock, and what moved since the old one.
fn report_changes(old: &LockFile, new: &LockFile, lock_path: &Path) {
    for p in &new.packs {
        let was = old.entry(&p.url, &p.rev).map(|o| o.commit.as_str());
        let change = match was {
            Some(c) if c == p.commit => String::new(),
            Some(c) => format!(" (was {c})"),
            None => " (new)".into(),
        };
        crate::outln!(
            "{}@{}: {} ({} file{}){change}",
            p.url,
            p.rev,
            p.commit,
            p.files.len(),
            if p.files.len() == 1 { "" } else { "s" }
        );
    }
    for o in &old.packs {
        if new.entry(&o.url, &o.rev).is_none() {
            crate::outln!("{}@{}: no longer used, removed", o.url, o.rev);
        }
    }
    crate::outln!("wrote {}", lock_path.display());
}

/// `auditflow fetch [WF...]`: every pack of the lock fetched into the cache, its tags and
/// file hashes checked; then each workflow given is validated from the cache.
pub(super) fn fetch(files: &[PathBuf], settings: &PackSettings) -> Result<(), CliError> {
    let anchor = files
        .first()
        .cloned()
        .unwrap_or_else(|| PathBuf::from(LOCK_FILE));
    let (lock_path, _) = lock_for(files)?;
    if !lock_path.is_file() {
        return Err(CliError::Usage(format!(
            "no {LOCK_FILE} beside {} or above it; run `auditflow lock` first",
            anchor.display()
        )));
    }
    let mut packs = Packs::for_workflow(settings.clone(), &lock_path)
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let n = packs
        .fetch_locked()
        .map_err(|e| CliError::Failed(format!("{}: {e}", lock_path.display())))?;
    let mut errors = Vec::new();
    for f in files {
        if let Err(diags) = validate_with(f, settings) {
            errors.push(CliError::InvalidWorkflow(diags));
        }
    }
    CliError::all(errors)?;
    crate::outln!(
        "{n} pack revision{} of {} in {}",
        if n == 1 { "" } else { "s" },
        lock_path.display(),
        settings.cache_dir.display()
    );
    Ok(())
}
