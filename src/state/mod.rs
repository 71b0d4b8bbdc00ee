//! Durable run state in `--state-dir`: a journal per run, which run is unfinished, run locks.
//!
//! Layout (directories 0700, files 0600; nothing in them is secret, as values are masked):
//! ```text
//! <state-dir>/auditflow-state.json      marker: {"format": "auditflow-state", "version": 1}
//! <state-dir>/runs/<run id>/journal.jsonl   the journal (see [`journal`])
//! <state-dir>/runs/<run id>/report.json     with `--report-json`: the last process's report
//! <state-dir>/active/<key>.json         the unfinished run of a workflow + inputs
//! <state-dir>/active/<key>.lock         held (flock) by the process running it
//! ```
//! <state-dir>/active/<key>.terminal     why the last run ended in a vendor's terminal failure
//! <state-dir>/budgets/<name>/<key>.json  quota spent per window, units in flight ([`budget`])
//! <state-dir>/cursors/...               positions kept between runs (see [`cursors`])
//! A run stays active until it succeeds; `auditflow run` with the same workflow and inputs
//! resumes it. `--fresh` abandons it and starts a new one. A run that ended in a vendor's
//! terminal failure (an export ERROR) is not active either: resuming it would only poll the
//! same dead request again, so the next run starts new and says why.
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::durable::{private_options_nofollow, sync_dir};
use crate::events::RunStatus;

pub(crate) mod budget;
pub(crate) mod cursors;
pub(crate) mod journal;
pub(crate) mod keep;

pub(crate) use journal::{
    DoneStatus, EndStatus, FileDigest, Journal, Record, RecordedStatus, Replay, RunHeader,
    JOURNAL_VERSION,
};

const MARKER: &str = "auditflow-state.json";
const FORMAT: &str = "auditflow-state";
const VERSION: u32 = 1;

/// What can go wrong with the state directory. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory: cannot use {}: {message}; check its permissions, or pass another --state-dir", path.display())]
    Io { path: PathBuf, message: String },
    #[error("{} is not an auditflow state directory ({message}); pass an empty or new directory as --state-dir", path.display())]
    Foreign { path: PathBuf, message: String },
    #[error("{}:{line}: the run journal is damaged ({message}); inspect it with `auditflow runs show`, then move the run away or pass --fresh to start over (a new run sends every request again, export creations included)", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{} was written by a newer auditflow (format {found}, this one reads up to {supported}); upgrade auditflow", path.display())]
    Newer {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("another auditflow process is running this workflow with these inputs (run {run_id}, lock {}); wait for it to end", lock.display())]
    Busy { run_id: String, lock: PathBuf },
    #[error("cannot record run state in {}: {message}; the run stops here so that nothing is sent that a crash could make it send again", path.display())]
    Write { path: PathBuf, message: String },
    #[error("the workflow changed since run {run_id} began on {started} ({changed}); that run already sent a request that must not be repeated (an export creation or similar). Restore the file to finish that run, or pass --fresh to abandon it and start over")]
    Changed {
        run_id: String,
        started: String,
        changed: String,
    },
    #[error("no run `{0}` in the state directory (see `auditflow runs list`)")]
    NoSuchRun(String),
    #[error("`{prefix}` matches several runs: {}; give more of the id", .candidates.join(", "))]
    Ambiguous {
        prefix: String,
        candidates: Vec<String>,
    },
    #[error("state directory {} belongs to user id {owner}, not to you (user id {me}): its owner could read or change the runs' journals and locks. Pass a --state-dir of your own (a new one is created 0700)", path.display())]
    NotOwned { path: PathBuf, owner: u32, me: u32 },
    #[error("{} in the state directory is a symbolic link: auditflow never follows one there (it could send its writes to another user's files). Remove the link, or pass another --state-dir", path.display())]
    Symlink { path: PathBuf },
}

impl StateError {
    pub(crate) fn io(path: &Path, e: std::io::Error) -> Self {
        StateError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Marker {
    format: String,
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct Pointer {
    run_id: String,
}

/// An opened state directory.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    root: PathBuf,
    /// What opening did about a directory others could read (see [`StateDir::open`]).
    permission_note: Option<String>,
}

/// The key of "this workflow with these inputs": SHA-256 of the canonical root path, the
/// non-secret inputs and the shard. Secret inputs stay out (not even hashed).
pub(crate) fn run_key(workflow: &Path, inputs: &serde_json::Value, shard: Option<&str>) -> String {
    let canonical = std::fs::canonicalize(workflow).unwrap_or_else(|_| workflow.to_path_buf());
    let doc = serde_json::json!({
        "workflow": canonical.display().to_string(),
        "inputs": inputs,
        "shard": shard,
    });
    crate::durable::sha256_hex(doc.to_string().as_bytes())
}

/// What [`StateDir::begin`] found.
pub(crate) enum Begin {
    New,
    /// An unfinished run is continued.
    Resumed(Box<Replay>),
}

/// The state of the run this process is running: its journal and lock.
pub(crate) struct RunState {
    /// The run's id (its directory name under `runs/`); the CLI reads it from the events.
    pub run_id: String,
    pub dir: PathBuf,
    pub journal: Journal,
    pointer: PathBuf,
    /// Held until the process ends (flock is released by the kernel even on kill -9).
    _lock: File,
}

impl RunState {
    /// Ends the process's part of the run: records the status; a succeeded run is no longer
    /// active, so the next `auditflow run` starts a new one.
    pub(crate) async fn finish(
        &self,
        status: RunStatus,
        error: Option<String>,
    ) -> Result<(), StateError> {
        self.journal
            .append_durable(&Record::Finished {
                at: Utc::now(),
                status: status.into(),
                error,
            })
            .await?;
        if status == RunStatus::Succeeded {
            match std::fs::remove_file(&self.pointer) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StateError::io(&self.pointer, e)),
            }
        }
        Ok(())
    }
}

/// The record of a run that ended in a vendor's terminal failure (`active/<key>.terminal`).
#[derive(Serialize, Deserialize)]
struct TerminalEnd {
    run_id: String,
    reason: String,
}

impl RunState {
    /// After [`RunState::finish`] recorded a failure that is a vendor's terminal state (an
    /// export ended ERROR): the run is no longer active, and the next run of this workflow
    /// and inputs starts new with a note naming `reason` (masked by the caller).
    pub(crate) fn end_terminal(&self, reason: &str) -> Result<(), StateError> {
        let end = TerminalEnd {
            run_id: self.run_id.clone(),
            reason: reason.to_string(),
        };
        let text = serde_json::to_vec(&end).unwrap_or_default();
        write_small(&self.pointer.with_extension("terminal"), &text)?;
        match std::fs::remove_file(&self.pointer) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StateError::io(&self.pointer, e)),
        }
    }
}

/// Takes the note left by [`RunState::end_terminal`] next to `pointer`, if any.
fn take_terminal_note(pointer: &Path) -> Option<String> {
    let path = pointer.with_extension("terminal");
    let bytes = std::fs::read(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    let end: TerminalEnd = serde_json::from_slice(&bytes).ok()?;
    Some(format!(
        "the last run of this workflow with these inputs (run {}) ended in a terminal vendor failure ({}); starting a new run",
        end.run_id, end.reason
    ))
}

/// A run as listed, or the id of a run whose journal cannot be read and why.
pub(crate) type Listed = Result<RunSummary, (String, StateError)>;

/// A run as `runs list` shows it.
#[derive(Debug, Clone)]
pub(crate) struct RunSummary {
    pub run_id: String,
    pub workflow: String,
    pub status: RecordedStatus,
    pub active: bool,
    pub started_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    pub steps_done: usize,
    pub waiting: Vec<String>,
}

fn create_private_dir(p: &Path) -> Result<(), StateError> {
    crate::durable::create_private_dir(p).map_err(|e| StateError::io(p, e))
}

/// Makes the state directory `root` private (0700) when it is not; says what was done.
fn make_private(root: &Path) -> Option<String> {
    match crate::durable::restrict_mode(root, 0o700) {
        Ok(None) => None,
        Ok(Some(mode)) => Some(format!(
            "state directory {} was mode {mode:o}, open to other users; made it 0700 (it holds the runs' journals)",
            root.display()
        )),
        Err(e) => Some(format!(
            "state directory {} may be open to other users and could not be made private ({e}); run `chmod 700` on it",
            root.display()
        )),
    }
}

/// How deep the state directory's layout goes below its root (`cursors/<workflow>/<cursor>/`).
const LAYOUT_DEPTH: usize = 4;

/// Refuses an existing state directory that another user owns, or that holds a symbolic
/// link anywhere in it (`runs/`, `active/`, a lock or a journal): nothing in it is followed.
/// The directory itself may be a link the user made; what it names is checked.
fn refuse_unsafe(root: &Path) -> Result<(), StateError> {
    match crate::durable::foreign_owner(root) {
        Ok(Some((owner, me))) => {
            return Err(StateError::NotOwned {
                path: root.to_path_buf(),
                owner,
                me,
            })
        }
        Ok(None) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StateError::io(root, e)),
    }
    match crate::durable::first_symlink_under(root, LAYOUT_DEPTH) {
        Ok(Some(path)) => Err(StateError::Symlink { path }),
        Ok(None) => Ok(()),
        Err(e) => Err(StateError::io(root, e)),
    }
}

/// Writes a small file atomically (temp + fsync + rename), mode 0600.
fn write_small(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    crate::durable::write_atomic(path, bytes).map_err(|e| StateError::io(path, e))
}

/// Opens a journal that was read for appending, cutting a torn last line off first.
fn append_to(replay: &Replay) -> Result<Journal, StateError> {
    let path = &replay.path;
    let io = |e| StateError::io(path, e);
    let mut file = private_options_nofollow()
        .write(true)
        .open(path)
        .map_err(io)?;
    file.set_len(replay.valid_len).map_err(io)?;
    file.seek(SeekFrom::End(0)).map_err(io)?;
    Ok(Journal::start(path.clone(), file))
}

impl StateDir {
    /// Opens `root`, creating it (and its marker) when missing or empty. A non-empty
    /// directory without the marker is refused: it is someone else's.
    pub(crate) fn open(root: &Path) -> Result<StateDir, StateError> {
        refuse_unsafe(root)?;
        let marker = root.join(MARKER);
        match crate::durable::read_nofollow(&marker) {
            Ok(bytes) => {
                let m: Marker =
                    serde_json::from_slice(&bytes).map_err(|e| StateError::Foreign {
                        path: root.to_path_buf(),
                        message: format!("{MARKER} is not readable: {e}"),
                    })?;
                if m.format != FORMAT {
                    return Err(StateError::Foreign {
                        path: root.to_path_buf(),
                        message: format!("{MARKER} names the format `{}`", m.format),
                    });
                }
                if m.version > VERSION {
                    return Err(StateError::Newer {
                        path: marker,
                        found: m.version,
                        supported: VERSION,
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let empty = match std::fs::read_dir(root) {
                    Ok(mut it) => it.next().is_none(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                    Err(e) => return Err(StateError::io(root, e)),
                };
                if !empty {
                    return Err(StateError::Foreign {
                        path: root.to_path_buf(),
                        message: format!("it has files but no {MARKER}"),
                    });
                }
                create_private_dir(root)?;
                let text = serde_json::to_vec_pretty(&Marker {
                    format: FORMAT.into(),
                    version: VERSION,
                })
                .unwrap_or_default();
                write_small(&marker, &text)?;
            }
            Err(e) => return Err(StateError::io(&marker, e)),
        }
        Ok(StateDir {
            root: root.to_path_buf(),
            permission_note: make_private(root),
        })
    }

    /// A warning for the run when the directory was open to other users: it was made 0700
    /// (it is the tool's: journals, run records), or could not be.
    pub(crate) fn permission_note(&self) -> Option<&str> {
        self.permission_note.as_deref()
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.root.join("runs").join(id)
    }

    /// The journal of run `id`.
    pub(crate) fn journal_path(&self, id: &str) -> PathBuf {
        self.run_dir(id).join("journal.jsonl")
    }

    /// Takes the lock of `key`, then resumes its active run or starts `header` as a new one.
    /// `fresh` abandons an active run first. A changed workflow resumes nothing: when the
    /// active run sent no non-idempotent request it is abandoned (nothing costly repeats),
    /// otherwise this is an error.
    pub(crate) async fn begin(
        &self,
        header: RunHeader,
        fresh: bool,
    ) -> Result<(RunState, Begin, Option<String>), StateError> {
        let active = self.root.join("active");
        create_private_dir(&active)?;
        let lock_path = active.join(format!("{}.lock", header.key));
        let lock = private_options_nofollow()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StateError::io(&lock_path, e))?;
        let pointer = active.join(format!("{}.json", header.key));
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Busy {
                    run_id: self
                        .read_pointer(&pointer)
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| "starting".into()),
                    lock: lock_path,
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StateError::io(&lock_path, e)),
        }
        // Read under the lock: no other process changes it now.
        let existing = self.read_pointer(&pointer)?;
        let mut note = take_terminal_note(&pointer);
        if let Some(old_id) = existing {
            let path = self.journal_path(&old_id);
            if fresh {
                // Record the abandon when the old journal is readable; a damaged one is left.
                if let Ok(r) = Replay::read(&path) {
                    self.abandon(&r).await?;
                }
                note = Some(format!("abandoned unfinished run {old_id} (--fresh)"));
            } else {
                let replay = Replay::read(&path)?;
                let changed = changed_files(&replay.header.files, &header.files);
                if changed.is_empty() {
                    let state = self.reopen(&replay, lock, pointer)?;
                    state.journal.append(&Record::Resumed {
                        at: Utc::now(),
                        pid: std::process::id(),
                    });
                    return Ok((state, Begin::Resumed(Box::new(replay)), None));
                }
                if replay.has_non_idempotent() {
                    return Err(StateError::Changed {
                        run_id: old_id,
                        started: replay.header.started_at.to_rfc3339(),
                        changed: changed.join(", "),
                    });
                }
                self.abandon(&replay).await?;
                note = Some(format!(
                    "the workflow changed since unfinished run {old_id} ({}); it sent nothing that must not be repeated, so a new run starts",
                    changed.join(", ")
                ));
            }
        }
        let state = self.create(header, lock, pointer).await?;
        Ok((state, Begin::New, note))
    }

    fn read_pointer(&self, pointer: &Path) -> Result<Option<String>, StateError> {
        match std::fs::read(pointer) {
            Ok(b) => {
                let p: Pointer = serde_json::from_slice(&b).map_err(|e| StateError::Corrupt {
                    path: pointer.to_path_buf(),
                    line: 1,
                    message: e.to_string(),
                })?;
                if p.run_id.is_empty()
                    || !p
                        .run_id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-')
                {
                    return Err(StateError::Corrupt {
                        path: pointer.to_path_buf(),
                        line: 1,
                        message: format!("`{}` is not a run id", p.run_id),
                    });
                }
                if !self.journal_path(&p.run_id).exists() {
                    return Err(StateError::Corrupt {
                        path: pointer.to_path_buf(),
                        line: 1,
                        message: format!("it names run {} whose journal is missing", p.run_id),
                    });
                }
                Ok(Some(p.run_id))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::io(pointer, e)),
        }
    }

    /// Records that `replay`'s run was given up (`--fresh`, or a changed workflow).
    async fn abandon(&self, replay: &Replay) -> Result<(), StateError> {
        append_to(replay)?
            .append_durable(&Record::Finished {
                at: Utc::now(),
                status: EndStatus::Abandoned,
                error: None,
            })
            .await
    }

    /// Continues an existing run: its journal reopened for appending.
    fn reopen(
        &self,
        replay: &Replay,
        lock: File,
        pointer: PathBuf,
    ) -> Result<RunState, StateError> {
        let id = replay.header.run_id.clone();
        Ok(RunState {
            dir: self.run_dir(&id),
            run_id: id,
            journal: append_to(replay)?,
            pointer,
            _lock: lock,
        })
    }

    async fn create(
        &self,
        header: RunHeader,
        lock: File,
        pointer: PathBuf,
    ) -> Result<RunState, StateError> {
        let id = header.run_id.clone();
        let dir = self.run_dir(&id);
        create_private_dir(&dir)?;
        let path = self.journal_path(&id);
        let file = private_options_nofollow()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| StateError::io(&path, e))?;
        let journal = Journal::start(path, file);
        journal.append_durable(&Record::Run(header)).await?;
        sync_dir(&dir);
        // The pointer goes last: a crash before it leaves an orphan journal, never a pointer
        // to nothing. Nothing is sent before it is durable.
        let text = serde_json::to_vec(&Pointer { run_id: id.clone() }).unwrap_or_default();
        write_small(&pointer, &text)?;
        if let Some(parent) = pointer.parent() {
            sync_dir(parent);
        }
        Ok(RunState {
            run_id: id,
            dir,
            journal,
            pointer,
            _lock: lock,
        })
    }

    /// The unfinished runs of `workflow` (and `shard`) other than `run_id`: runs of the same
    /// file with other inputs, which this run does not resume (nightly moving date ranges).
    pub(crate) fn unfinished_of(
        &self,
        workflow: &str,
        shard: Option<&str>,
        run_id: &str,
    ) -> Vec<RunHeader> {
        let mut out: Vec<RunHeader> = self
            .active_ids()
            .into_iter()
            .filter(|id| id != run_id)
            .filter_map(|id| RunHeader::read(&self.journal_path(&id)))
            .filter(|h| h.workflow == workflow && h.shard.as_deref() == shard)
            .collect();
        out.sort_by_key(|h| h.started_at);
        out
    }

    /// The quota budgets of run `run_id`, kept in `<state-dir>/budgets`.
    pub(crate) fn budgets(&self, run_id: &str) -> budget::Budgets {
        budget::Budgets::new(Some(&self.root), run_id, self.active_ids())
    }

    fn active_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.root.join("active")) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().and_then(|x| x.to_str()) == Some("json") {
                    if let Ok(Some(id)) = self.read_pointer(&p) {
                        ids.push(id);
                    }
                }
            }
        }
        ids
    }

    /// Every run recorded, newest first. Damaged journals are listed with their error.
    pub(crate) fn list(&self) -> Result<Vec<Listed>, StateError> {
        let runs = self.root.join("runs");
        let rd = match std::fs::read_dir(&runs) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(StateError::io(&runs, e)),
        };
        let active = self.active_ids();
        let mut out = Vec::new();
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let path = self.journal_path(&id);
            if !path.exists() {
                continue;
            }
            out.push(match Replay::read(&path) {
                Ok(r) => Ok(summary(&r, active.contains(&id))),
                Err(err) => Err((id, err)),
            });
        }
        out.sort_by(|a, b| {
            let t = |x: &Listed| match x {
                Ok(s) => Some(s.started_at),
                Err(_) => None,
            };
            t(b).cmp(&t(a))
        });
        Ok(out)
    }

    /// The replay of the run whose id starts with `prefix`.
    pub(crate) fn show(&self, prefix: &str) -> Result<(Replay, bool), StateError> {
        let runs = self.root.join("runs");
        let mut found = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&runs) {
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if id.starts_with(prefix) {
                    found.push(id);
                }
            }
        }
        match found.len() {
            0 => Err(StateError::NoSuchRun(prefix.to_string())),
            1 => {
                let id = found.remove(0);
                let r = Replay::read(&self.journal_path(&id))?;
                Ok((r, self.active_ids().contains(&id)))
            }
            _ => Err(StateError::Ambiguous {
                prefix: prefix.to_string(),
                candidates: found,
            }),
        }
    }
}

fn summary(r: &Replay, active: bool) -> RunSummary {
    let mut waiting: Vec<String> = r.waiting.values().map(|(w, _)| w.clone()).collect();
    waiting.sort();
    RunSummary {
        run_id: r.header.run_id.clone(),
        workflow: r.header.workflow.clone(),
        status: r.status(),
        active,
        started_at: r.header.started_at,
        last_at: r.last_at,
        steps_done: r.done.len(),
        waiting,
    }
}

fn changed_files(old: &[FileDigest], new: &[FileDigest]) -> Vec<String> {
    let mut changed = Vec::new();
    for n in new {
        match old.iter().find(|o| o.path == n.path) {
            Some(o) if o.sha256 == n.sha256 => {}
            Some(_) => changed.push(format!("{} was edited", n.path)),
            None => changed.push(format!("{} is new", n.path)),
        }
    }
    for o in old {
        if !new.iter().any(|n| n.path == o.path) {
            changed.push(format!("{} is no longer used", o.path));
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(key: &str, id: &str) -> RunHeader {
        RunHeader {
            version: JOURNAL_VERSION,
            run_id: id.into(),
            key: key.into(),
            workflow: "w.yaml".into(),
            workflow_name: "w".into(),
            files: vec![FileDigest {
                path: "w.yaml".into(),
                sha256: "aa".into(),
            }],
            inputs: serde_json::json!({}),
            shard: None,
            started_at: Utc::now(),
            auditflow: "test".into(),
        }
    }

    #[test]
    fn refuses_a_foreign_directory_and_a_newer_marker() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("notes.txt"), "mine").unwrap();
        let e = StateDir::open(d.path()).unwrap_err();
        assert!(matches!(e, StateError::Foreign { .. }), "{e}");
        let d2 = tempfile::tempdir().unwrap();
        std::fs::write(
            d2.path().join(MARKER),
            r#"{"format":"auditflow-state","version":99}"#,
        )
        .unwrap();
        assert!(matches!(
            StateDir::open(d2.path()).unwrap_err(),
            StateError::Newer { .. }
        ));
    }

    #[tokio::test]
    async fn resumes_the_active_run_until_it_succeeds() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&d.path().join("st")).unwrap();
        let (s, b, _) = sd.begin(header("k1", "run-a"), false).await.unwrap();
        assert!(matches!(b, Begin::New));
        s.journal.append(&Record::Done {
            step: "x".into(),
            at: Utc::now(),
            status: DoneStatus::Succeeded,
            attempts: 1,
            outputs: serde_json::json!(1),
            replayable: true,
        });
        s.finish(RunStatus::Failed, Some("boom".into()))
            .await
            .unwrap();
        drop(s);
        let (s, b, _) = sd.begin(header("k1", "run-b"), false).await.unwrap();
        let Begin::Resumed(r) = b else {
            panic!("expected a resume")
        };
        assert_eq!(r.header.run_id, "run-a");
        assert!(r.done.contains_key("x"));
        // Held lock: a second process is refused.
        let Err(e) = sd.begin(header("k1", "run-c"), false).await else {
            panic!("a second begin must fail while the lock is held");
        };
        assert!(matches!(e, StateError::Busy { .. }), "{e}");
        s.finish(RunStatus::Succeeded, None).await.unwrap();
        drop(s);
        let (_, b, _) = sd.begin(header("k1", "run-d"), false).await.unwrap();
        assert!(matches!(b, Begin::New));
        let list = sd.list().unwrap();
        assert_eq!(list.len(), 2);
    }

    #[tokio::test]
    async fn a_changed_workflow_never_repeats_a_create() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::open(d.path()).unwrap();
        let (s, _, _) = sd.begin(header("k", "r1"), false).await.unwrap();
        s.journal
            .append_durable(&Record::Intent {
                step: "create".into(),
                at: Utc::now(),
                attempt: 1,
                method: "POST".into(),
                url: "u".into(),
                fingerprint: "f".into(),
            })
            .await
            .unwrap();
        drop(s);
        let mut h = header("k", "r2");
        h.files[0].sha256 = "bb".into();
        let Err(e) = sd.begin(h.clone(), false).await else {
            panic!("must refuse");
        };
        assert!(matches!(e, StateError::Changed { .. }), "{e}");
        let (s, b, note) = sd.begin(h, true).await.unwrap();
        assert!(matches!(b, Begin::New));
        assert!(note.unwrap_or_default().contains("abandoned"));
        assert_eq!(s.run_id, "r2");
    }
}
