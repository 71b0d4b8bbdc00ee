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
use crate::events::{FileDigest, RunStatus};

pub(crate) mod budget;
pub(crate) mod cursors;
pub(crate) mod identity;
pub(crate) mod journal;
pub(crate) mod keep;
pub(crate) mod lifecycle;
pub(crate) mod postgres;
pub(crate) mod resume;
pub(crate) mod snapshot;
mod store;

pub(crate) use store::{Store, StoreSpec};

pub(crate) use identity::{legacy_run_key, recorded_path, run_key, WorkflowIdentity};
pub(crate) use lifecycle::{ci_job, differences, differing_inputs, host_name, Completion};

pub(crate) use journal::{
    DoneStatus, EndStatus, Journal, Record, RecordedStatus, Replay, RunHeader, JOURNAL_VERSION,
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
    #[error("another auditflow process holds run {run_id} of this workflow with these inputs ({holder}; lock {lock}); it is not finished yet: run again later (this one sent nothing)")]
    Busy {
        run_id: String,
        holder: String,
        /// The lock file, or the shared store's advisory lock.
        lock: String,
    },
    #[error("{0}")]
    Settings(String),
    #[error("state store {server}: {message}; check that the server is up and reachable and that the user may use it (the password comes from the URL, PGPASSWORD or ~/.pgpass), then run again: an unfinished run resumes where it stopped")]
    Database { server: String, message: String },
    #[error("run {run_id} is not unfinished (it ended {status}); nothing to give up")]
    NotUnfinished { run_id: String, status: String },
    #[error("--resume {run_id}: {why}")]
    ResumeRefused { run_id: String, why: String },
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

/// What the engine asks [`StateDir::begin`] for.
pub(crate) struct StartRequest {
    /// The new run's header (its key is the run's identity key).
    pub header: RunHeader,
    /// `--fresh`: abandon an unfinished run, run a finished one-shot workflow again.
    pub fresh: bool,
    /// `--resume RUN`: the full id of the run to continue (or a refusal).
    pub resume: Option<String>,
    /// The key a release before run identities gave this run (its runs are migrated).
    pub legacy_key: String,
    /// The workflow is `lifecycle: one-shot`.
    pub one_shot: bool,
}

/// What [`StateDir::begin`] found.
pub(crate) enum Begin {
    New,
    /// An unfinished run is continued.
    Resumed(Box<Replay>),
}

/// How [`StateDir::begin`] ended.
pub(crate) enum Started {
    /// A run to carry out (new or resumed), with notes for the user.
    Run {
        state: RunState,
        begin: Begin,
        notes: Vec<String>,
    },
    /// A one-shot workflow already succeeded with this identity: nothing to do.
    AlreadyDone(Completion),
}

/// What becomes of an unfinished run when a run of the same identity begins (not `--fresh`).
pub(crate) enum Unfinished {
    /// Its files are those it began with: it is resumed.
    Resume,
    /// The workflow changed, but it sent nothing that must not be repeated: it is abandoned
    /// and a new run starts (with this note).
    Abandon(String),
}

/// Decides [`Unfinished`] for run `replay` and the new run's `header`; a changed workflow
/// whose run already sent a request that must not be repeated is [`StateError::Changed`].
/// Both stores decide the same way.
pub(crate) fn on_unfinished(replay: &Replay, header: &RunHeader) -> Result<Unfinished, StateError> {
    let changed = changed_files(&replay.header, &header.files);
    if changed.is_empty() {
        return Ok(Unfinished::Resume);
    }
    if replay.has_non_idempotent() {
        return Err(StateError::Changed {
            run_id: replay.header.run_id.clone(),
            started: replay.header.started_at.to_rfc3339(),
            changed: changed.join(", "),
        });
    }
    Ok(Unfinished::Abandon(format!(
        "the workflow changed since unfinished run {} ({}); it sent nothing that must not be repeated, so a new run starts",
        replay.header.run_id,
        changed.join(", ")
    )))
}

/// The note of an unfinished run given up by `--fresh`.
pub(crate) fn fresh_note(run_id: &str) -> String {
    format!("abandoned unfinished run {run_id} (--fresh)")
}

/// The note of a one-shot workflow run again with `--fresh` after `done`.
pub(crate) fn run_again_note(done: &Completion) -> String {
    format!(
        "run {} of this one-shot workflow succeeded on {}; running it again (--fresh)",
        done.run_id,
        done.finished_at.to_rfc3339()
    )
}

/// The record a resumed run's journal gets first.
pub(crate) fn resumed_record() -> Record {
    Record::Resumed {
        at: Utc::now(),
        pid: std::process::id(),
    }
}

impl Started {
    /// A run resumed from `replay`.
    pub(crate) fn resumed(state: RunState, replay: Replay, notes: Vec<String>) -> Started {
        Started::Run {
            state,
            begin: Begin::Resumed(Box::new(replay)),
            notes,
        }
    }
}

/// The state of the run this process is running: its journal and lock.
pub(crate) struct RunState {
    /// The run's id (its directory name under `runs/`); the CLI reads it from the events.
    pub run_id: String,
    /// The run's directory in a state directory (None in the shared store).
    pub dir: Option<PathBuf>,
    pub journal: Journal,
    /// The workflow is one-shot: its success is remembered (see [`Completion`]).
    one_shot: bool,
    hold: Hold,
}

/// Where the run is kept and how this process holds it.
enum Hold {
    /// In a state directory: its pointer `active/<key>.json`, and the lock file, held until
    /// the process ends (flock is released by the kernel even on kill -9).
    Dir { pointer: PathBuf, _lock: File },
    /// In the shared store (the lock is the writer connection's).
    Postgres(postgres::runs::PgHold),
}

impl RunState {
    fn held_in_dir(
        run_id: String,
        dir: PathBuf,
        journal: Journal,
        pointer: PathBuf,
        lock: File,
        one_shot: bool,
    ) -> RunState {
        RunState {
            run_id,
            dir: Some(dir),
            journal,
            one_shot,
            hold: Hold::Dir {
                pointer,
                _lock: lock,
            },
        }
    }

    pub(super) fn held_in_postgres(
        run_id: String,
        journal: Journal,
        hold: postgres::runs::PgHold,
        one_shot: bool,
    ) -> RunState {
        RunState {
            run_id,
            dir: None,
            journal,
            one_shot,
            hold: Hold::Postgres(hold),
        }
    }
}

impl RunState {
    /// Ends the process's part of the run: records the status; a succeeded run is no longer
    /// active, so the next `auditflow run` starts a new one (a one-shot workflow's is
    /// remembered first with its masked `outputs`, so the next one reports it instead).
    pub(crate) async fn finish(
        &self,
        status: RunStatus,
        error: Option<String>,
        outputs: &serde_json::Value,
    ) -> Result<(), StateError> {
        let pointer = match &self.hold {
            Hold::Postgres(h) => return h.finish(self, status, error, outputs).await,
            Hold::Dir { pointer, .. } => pointer,
        };
        if status == RunStatus::Succeeded && self.one_shot {
            Completion::write(pointer, &self.run_id, outputs)?;
        }
        self.journal
            .append_durable(&Record::Finished {
                at: Utc::now(),
                status: status.into(),
                error,
            })
            .await?;
        if status == RunStatus::Succeeded {
            remove_if_present(pointer)?;
        }
        Ok(())
    }

    /// The one-shot flag, for the shared store's finish.
    pub(super) fn one_shot(&self) -> bool {
        self.one_shot
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
    pub(crate) async fn end_terminal(&self, reason: &str) -> Result<(), StateError> {
        let pointer = match &self.hold {
            Hold::Postgres(h) => return h.end_terminal(&self.run_id, reason).await,
            Hold::Dir { pointer, .. } => pointer,
        };
        let end = TerminalEnd {
            run_id: self.run_id.clone(),
            reason: reason.to_string(),
        };
        let text = serde_json::to_vec(&end).unwrap_or_default();
        write_small(&pointer.with_extension("terminal"), &text)?;
        remove_if_present(pointer)
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
    /// The workflow's path in its tree (what identifies its runs), when recorded.
    pub identity: Option<String>,
    pub status: RecordedStatus,
    pub active: bool,
    pub started_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    pub steps_done: usize,
    pub waiting: Vec<String>,
    /// Who holds it now or last ran it (pid, host, CI job), when known.
    pub runner: Option<String>,
    /// A process holds it now.
    pub held: bool,
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

/// Removes `path`; one already gone is fine (a crash may have removed it first).
fn remove_if_present(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StateError::io(path, e)),
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

    /// Takes the lock of the run's key, then resumes its active run (found under this key,
    /// under the key of a release before run identities, or named by `--resume`) or starts
    /// `req.header` as a new one. `fresh` abandons an active run first. A changed workflow
    /// resumes nothing: when the active run sent no non-idempotent request it is abandoned
    /// (nothing costly repeats), otherwise this is an error. A one-shot workflow whose run
    /// with this identity succeeded is not run again (unless `fresh`).
    pub(crate) async fn begin(&self, req: StartRequest) -> Result<Started, StateError> {
        let active = self.root.join("active");
        create_private_dir(&active)?;
        let key = req.header.key.clone();
        let lock = self.lock(&active, &key)?;
        let pointer = active.join(format!("{key}.json"));
        // Read under the lock: no other process changes it now.
        let mut notes = Vec::new();
        let mut existing = self.read_pointer(&pointer)?;
        if existing.is_none() && req.resume.is_none() {
            existing = self.migrate_legacy(&req, &pointer, &mut notes)?;
        }
        if let Some(id) = &req.resume {
            existing = Some(self.claim_for_resume(id, existing, &req, &pointer)?);
        }
        notes.extend(take_terminal_note(&pointer));
        if existing.is_none() && req.one_shot {
            match (Completion::read(&pointer), req.fresh) {
                (Some(done), false) => return Ok(Started::AlreadyDone(done)),
                (Some(done), true) => {
                    Completion::remove(&pointer)?;
                    notes.push(run_again_note(&done));
                }
                (None, _) => {}
            }
        }
        let header = req.header;
        if let Some(old_id) = existing {
            let path = self.journal_path(&old_id);
            if req.fresh {
                // Record the abandon when the old journal is readable; a damaged one is left.
                if let Ok(r) = Replay::read(&path) {
                    self.abandon(&r).await?;
                }
                notes.push(fresh_note(&old_id));
            } else {
                let replay = Replay::read(&path)?;
                match on_unfinished(&replay, &header)? {
                    Unfinished::Resume => {
                        let state = self.reopen(&replay, lock, pointer, req.one_shot)?;
                        state.journal.append(&resumed_record());
                        return Ok(Started::resumed(state, replay, notes));
                    }
                    Unfinished::Abandon(note) => {
                        self.abandon(&replay).await?;
                        notes.push(note);
                    }
                }
            }
        }
        let state = self.create(header, lock, pointer, req.one_shot).await?;
        Ok(Started::Run {
            state,
            begin: Begin::New,
            notes,
        })
    }

    /// Takes the lock `active/<key>.lock` and writes who holds it into it; a lock held by
    /// another process is [`StateError::Busy`], naming that process.
    fn lock(&self, active: &Path, key: &str) -> Result<File, StateError> {
        let lock_path = active.join(format!("{key}.lock"));
        let mut lock = private_options_nofollow()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StateError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pointer = active.join(format!("{key}.json"));
                return Err(StateError::Busy {
                    run_id: self
                        .read_pointer(&pointer)
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| "starting".into()),
                    holder: lifecycle::read_holder(&mut lock),
                    lock: lock_path.display().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StateError::io(&lock_path, e)),
        }
        lifecycle::write_holder(&mut lock).map_err(|e| StateError::io(&lock_path, e))?;
        Ok(lock)
    }

    /// Moves the pointer at `from` (another key's, under its lock) to `to`: the run it names
    /// is from now on found under this run's key.
    fn move_pointer(&self, from: &Path, to: &Path, run_id: &str) -> Result<(), StateError> {
        let text = serde_json::to_vec(&Pointer {
            run_id: run_id.to_string(),
        })
        .unwrap_or_default();
        write_small(to, &text)?;
        remove_if_present(from)?;
        if let Some(parent) = to.parent() {
            sync_dir(parent);
        }
        Ok(())
    }

    /// An unfinished run of this workflow and inputs recorded by a release before run
    /// identities (under its absolute-path key, or from another checkout): moved under this
    /// run's key and returned.
    fn migrate_legacy(
        &self,
        req: &StartRequest,
        pointer: &Path,
        notes: &mut Vec<String>,
    ) -> Result<Option<String>, StateError> {
        let Some(identity) = &req.header.identity else {
            return Ok(None);
        };
        let active = self.root.join("active");
        let by_old_key = active.join(format!("{}.json", req.legacy_key));
        let mut found = self
            .read_pointer(&by_old_key)
            .ok()
            .flatten()
            .map(|id| (by_old_key, id));
        if found.is_none() {
            found = self.legacy_run_like(identity, &req.header);
        }
        let Some((old_pointer, id)) = found else {
            return Ok(None);
        };
        let old_key = old_pointer
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _old_lock = self.lock(&active, &old_key)?;
        self.move_pointer(&old_pointer, pointer, &id)?;
        notes.push(format!(
            "continuing run {id}, begun by an earlier auditflow that identified runs by absolute path; it is now found by {}",
            identity.describe()
        ));
        Ok(Some(id))
    }

    /// The newest unfinished legacy run (no identity recorded) whose workflow path ends with
    /// `identity`'s path and whose inputs and shard are `header`'s: its pointer and id.
    fn legacy_run_like(
        &self,
        identity: &WorkflowIdentity,
        header: &RunHeader,
    ) -> Option<(PathBuf, String)> {
        self.active_pointers()
            .into_iter()
            .filter_map(|(p, id)| RunHeader::read(&self.journal_path(&id)).map(|h| (p, id, h)))
            .filter(|(_, _, h)| {
                h.identity.is_none()
                    && identity.matches_legacy_path(&h.workflow)
                    && h.inputs == header.inputs
                    && h.shard == header.shard
            })
            .max_by_key(|(_, _, h)| h.started_at)
            .map(|(p, id, _)| (p, id))
    }

    /// `--resume id`: the run's pointer moved under this run's key when it is unfinished and
    /// is this workflow with these inputs; otherwise why not.
    fn claim_for_resume(
        &self,
        id: &str,
        existing: Option<String>,
        req: &StartRequest,
        pointer: &Path,
    ) -> Result<String, StateError> {
        if let Some(decided) = resume::against_existing(id, existing) {
            return decided;
        }
        let Some((theirs, _)) = self.active_pointers().into_iter().find(|(_, r)| r == id) else {
            return Err(resume::not_unfinished(id));
        };
        resume::check_same_run(id, RunHeader::read(&self.journal_path(id)), &req.header)?;
        let their_key = theirs
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _their_lock = self.lock(&self.root.join("active"), &their_key)?;
        self.move_pointer(&theirs, pointer, id)?;
        Ok(id.to_string())
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
        one_shot: bool,
    ) -> Result<RunState, StateError> {
        let id = replay.header.run_id.clone();
        Ok(RunState::held_in_dir(
            id.clone(),
            self.run_dir(&id),
            append_to(replay)?,
            pointer,
            lock,
            one_shot,
        ))
    }

    async fn create(
        &self,
        header: RunHeader,
        lock: File,
        pointer: PathBuf,
        one_shot: bool,
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
        Ok(RunState::held_in_dir(
            id, dir, journal, pointer, lock, one_shot,
        ))
    }

    /// The unfinished runs of the same workflow as `header` (its identity, or for runs of
    /// releases before identities its path) and shard, other than `header`'s run: runs with
    /// other inputs, which this run does not resume (nightly moving date ranges).
    pub(crate) fn unfinished_like(&self, header: &RunHeader, run_id: &str) -> Vec<RunHeader> {
        let mut out: Vec<RunHeader> = self
            .active_ids()
            .into_iter()
            .filter(|id| id != run_id)
            .filter_map(|id| RunHeader::read(&self.journal_path(&id)))
            .filter(|h| lifecycle::same_workflow(h, header) && h.shard == header.shard)
            .collect();
        out.sort_by_key(|h| h.started_at);
        out
    }

    /// The quota budgets of run `run_id`, kept in `<state-dir>/budgets`.
    pub(crate) fn budgets(&self, run_id: &str) -> budget::Budgets {
        budget::Budgets::new(Some(&self.root), run_id, self.active_ids())
    }

    fn active_ids(&self) -> Vec<String> {
        self.active_pointers()
            .into_iter()
            .map(|(_, id)| id)
            .collect()
    }

    /// Every readable pointer under `active/` and the run it names.
    fn active_pointers(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.root.join("active")) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().and_then(|x| x.to_str()) == Some("json") {
                    if let Ok(Some(id)) = self.read_pointer(&p) {
                        out.push((p, id));
                    }
                }
            }
        }
        out
    }

    /// Gives up the unfinished run whose id starts with `prefix` (`auditflow runs
    /// abandon`): its journal records the abandon and its workflow and inputs no longer
    /// resume it. Refused while a process holds it. Returns its full id.
    pub(crate) async fn abandon_run(&self, prefix: &str) -> Result<String, StateError> {
        let (replay, active) = self.show(prefix)?;
        let id = replay.header.run_id.clone();
        let pointer = self
            .active_pointers()
            .into_iter()
            .find(|(_, r)| *r == id)
            .map(|(p, _)| p)
            .filter(|_| active)
            .ok_or_else(|| StateError::NotUnfinished {
                run_id: id.clone(),
                status: replay.status().to_string(),
            })?;
        let key = pointer
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _lock = self.lock(&self.root.join("active"), &key)?;
        // Read again under the lock: the holder that just ended may have written more.
        let replay = Replay::read(&self.journal_path(&id))?;
        self.abandon(&replay).await?;
        remove_if_present(&pointer)?;
        if let Some(parent) = pointer.parent() {
            sync_dir(parent);
        }
        Ok(id)
    }

    /// The unfinished runs whose last record is older than `cutoff` (`runs prune`).
    pub(crate) fn unfinished_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<RunSummary>, StateError> {
        Ok(self
            .list()?
            .into_iter()
            .filter_map(Result::ok)
            .filter(|s| s.active && s.last_at < cutoff)
            .collect())
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
                Ok(r) => {
                    let mut s = summary(&r, active.contains(&id));
                    // The key's lock file names its last holder: this run's, while unfinished.
                    s.runner = s.active.then(|| self.last_holder(&r.header.key)).flatten();
                    Ok(s)
                }
                Err(err) => Err((id, err)),
            });
        }
        newest_first(&mut out);
        Ok(out)
    }

    /// Who holds run key `key`'s lock now or held it last, as its lock file says.
    pub(crate) fn last_holder(&self, key: &str) -> Option<String> {
        let path = self.root.join("active").join(format!("{key}.lock"));
        let mut f = private_options_nofollow().read(true).open(path).ok()?;
        Some(lifecycle::read_holder(&mut f))
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

/// Sorts runs newest first (unreadable ones last).
pub(crate) fn newest_first(runs: &mut [Listed]) {
    runs.sort_by(|a, b| {
        let t = |x: &Listed| match x {
            Ok(s) => Some(s.started_at),
            Err(_) => None,
        };
        t(b).cmp(&t(a))
    });
}

pub(crate) fn summary(r: &Replay, active: bool) -> RunSummary {
    let mut waiting: Vec<String> = r.waiting.values().map(|(w, _)| w.clone()).collect();
    waiting.sort();
    RunSummary {
        run_id: r.header.run_id.clone(),
        workflow: r.header.workflow.clone(),
        identity: r.header.identity.as_ref().map(|i| i.path.clone()),
        status: r.status(),
        active,
        started_at: r.header.started_at,
        last_at: r.last_at,
        steps_done: r.done.len(),
        waiting,
        runner: None,
        held: false,
    }
}

/// What differs between the files `old` began with and `new` (the files now). Runs of
/// releases before run identities recorded absolute paths: their files are compared by
/// content alone.
pub(crate) fn changed_files(old: &RunHeader, new: &[FileDigest]) -> Vec<String> {
    if old.identity.is_none() {
        let digests = |f: &[FileDigest]| {
            let mut d: Vec<_> = f.iter().map(|x| x.sha256).collect();
            d.sort();
            d
        };
        return if digests(&old.files) == digests(new) {
            vec![]
        } else {
            vec!["the workflow's files are not those it began with".into()]
        };
    }
    let old = &old.files;
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
pub(crate) mod tests {
    use super::*;

    /// A run header of workflow `w.yaml` for key `key`.
    pub(crate) fn header(key: &str, id: &str) -> RunHeader {
        RunHeader {
            version: JOURNAL_VERSION,
            run_id: id.into(),
            key: key.into(),
            workflow: "w.yaml".into(),
            workflow_name: "w".into(),
            identity: Some(WorkflowIdentity {
                path: "w.yaml".into(),
                anchor: identity::Anchor::Repository,
            }),
            files: vec![FileDigest {
                path: "w.yaml".into(),
                sha256: crate::durable::Sha256Digest::of(b"aa"),
                origin: None,
            }],
            inputs: serde_json::json!({}),
            shard: None,
            started_at: Utc::now(),
            auditflow: "test".into(),
        }
    }

    /// The start of `header`'s run (`--fresh` with `fresh`).
    pub(crate) fn start(header: RunHeader, fresh: bool) -> StartRequest {
        StartRequest {
            legacy_key: format!("legacy-{}", header.key),
            header,
            fresh,
            resume: None,
            one_shot: false,
        }
    }

    /// Begins a run that is not [`Started::AlreadyDone`].
    async fn begin(
        sd: &StateDir,
        header: RunHeader,
        fresh: bool,
    ) -> Result<(RunState, Begin, Vec<String>), StateError> {
        match sd.begin(start(header, fresh)).await? {
            Started::Run {
                state,
                begin,
                notes,
            } => Ok((state, begin, notes)),
            Started::AlreadyDone(d) => panic!("not a one-shot run: {}", d.run_id),
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
        let (s, b, _) = begin(&sd, header("k1", "run-a"), false).await.unwrap();
        assert!(matches!(b, Begin::New));
        s.journal.append(&Record::Done {
            step: "x".into(),
            at: Utc::now(),
            status: DoneStatus::Succeeded,
            attempts: 1,
            outputs: serde_json::json!(1),
            replayable: true,
        });
        s.finish(
            RunStatus::Failed,
            Some("boom".into()),
            &serde_json::Value::Null,
        )
        .await
        .unwrap();
        drop(s);
        let (s, b, _) = begin(&sd, header("k1", "run-b"), false).await.unwrap();
        let Begin::Resumed(r) = b else {
            panic!("expected a resume")
        };
        assert_eq!(r.header.run_id, "run-a");
        assert!(r.done.contains_key("x"));
        // Held lock: a second process is refused.
        let Err(e) = begin(&sd, header("k1", "run-c"), false).await else {
            panic!("a second begin must fail while the lock is held");
        };
        assert!(matches!(e, StateError::Busy { .. }), "{e}");
        s.finish(RunStatus::Succeeded, None, &serde_json::Value::Null)
            .await
            .unwrap();
        drop(s);
        let (_, b, _) = begin(&sd, header("k1", "run-d"), false).await.unwrap();
        assert!(matches!(b, Begin::New));
        let list = sd.list().unwrap();
        assert_eq!(list.len(), 2);
    }

    #[tokio::test]
    async fn a_changed_workflow_never_repeats_a_create() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::open(d.path()).unwrap();
        let (s, _, _) = begin(&sd, header("k", "r1"), false).await.unwrap();
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
        h.files[0].sha256 = crate::durable::Sha256Digest::of(b"bb");
        let Err(e) = begin(&sd, h.clone(), false).await else {
            panic!("must refuse");
        };
        assert!(matches!(e, StateError::Changed { .. }), "{e}");
        let (s, b, note) = begin(&sd, h, true).await.unwrap();
        assert!(matches!(b, Begin::New));
        assert!(note.join(" ").contains("abandoned"));
        assert_eq!(s.run_id, "r2");
    }

    /// A journal as a release before run identities wrote it: no identity, absolute paths,
    /// the pointer under the absolute-path key.
    async fn legacy_run(sd: &StateDir, key: &str, id: &str, workflow: &str) {
        let mut h = header(key, id);
        h.identity = None;
        h.workflow = workflow.into();
        h.files[0].path = workflow.into();
        let (s, _, _) = begin(sd, h, false).await.expect("legacy run");
        s.finish(RunStatus::Pending, None, &serde_json::Value::Null)
            .await
            .expect("finish");
    }

    fn new_style(key: &str, id: &str, path: &str) -> RunHeader {
        let mut h = header(key, id);
        h.identity = Some(WorkflowIdentity {
            path: path.into(),
            anchor: identity::Anchor::Repository,
        });
        h.files[0].path = path.into();
        h
    }

    #[tokio::test]
    async fn a_legacy_run_from_another_checkout_is_continued_under_the_new_key() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::open(d.path()).unwrap();
        legacy_run(&sd, "oldkey", "run-old", "/builds/job1/wf/x.yaml").await;
        let (s, b, notes) = begin(&sd, new_style("newkey", "run-new", "wf/x.yaml"), false)
            .await
            .unwrap();
        let Begin::Resumed(r) = b else {
            panic!("the legacy run is resumed: {notes:?}")
        };
        assert_eq!(r.header.run_id, "run-old");
        assert!(
            notes.join(" ").contains("continuing run run-old"),
            "{notes:?}"
        );
        assert!(d.path().join("active/newkey.json").exists());
        assert!(!d.path().join("active/oldkey.json").exists());
        drop(s);
        // Another workflow's legacy run is not taken.
        legacy_run(&sd, "other", "run-other", "/builds/job1/wf/y.yaml").await;
        let (_, b, _) = begin(&sd, new_style("k3", "run-3", "wf/x2.yaml"), false)
            .await
            .unwrap();
        assert!(matches!(b, Begin::New));
    }

    #[tokio::test]
    async fn resume_continues_the_named_run_or_refuses() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::open(d.path()).unwrap();
        let (s, _, _) = begin(&sd, new_style("k-a", "run-a", "wf/x.yaml"), false)
            .await
            .unwrap();
        drop(s);
        let mut req = start(new_style("k-b", "run-b", "wf/x.yaml"), false);
        req.resume = Some("run-a".into());
        let Started::Run { begin: b, .. } = sd.begin(req).await.unwrap() else {
            panic!("a run")
        };
        let Begin::Resumed(r) = b else {
            panic!("--resume continues the named run")
        };
        assert_eq!(r.header.run_id, "run-a");
        let mut other = start(new_style("k-c", "run-c", "wf/other.yaml"), false);
        other.resume = Some("run-a".into());
        let Err(e) = sd.begin(other).await else {
            panic!("another workflow's run is refused")
        };
        assert!(e.to_string().contains("it is a run of wf/x.yaml"), "{e}");
        let mut gone = start(new_style("k-d", "run-d", "wf/x.yaml"), false);
        gone.resume = Some("run-zzz".into());
        let Err(e) = sd.begin(gone).await else {
            panic!("an unknown run is refused")
        };
        assert!(matches!(e, StateError::ResumeRefused { .. }), "{e}");
        assert_eq!(sd.list().unwrap().len(), 1, "no run was started");
    }

    #[tokio::test]
    async fn a_one_shot_success_is_remembered_until_fresh() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::open(d.path()).unwrap();
        let mut req = start(header("k", "r1"), false);
        req.one_shot = true;
        let Started::Run { state, .. } = sd.begin(req).await.unwrap() else {
            panic!("a first run")
        };
        state
            .finish(RunStatus::Succeeded, None, &serde_json::json!({"id": "7"}))
            .await
            .unwrap();
        drop(state);
        let mut again = start(header("k", "r2"), false);
        again.one_shot = true;
        let Started::AlreadyDone(done) = sd.begin(again).await.unwrap() else {
            panic!("the success is remembered")
        };
        assert_eq!(done.run_id, "r1");
        assert_eq!(done.outputs["id"], "7");
        let mut fresh = start(header("k", "r3"), true);
        fresh.one_shot = true;
        let Started::Run { state, notes, .. } = sd.begin(fresh).await.unwrap() else {
            panic!("--fresh runs it again")
        };
        assert_eq!(state.run_id, "r3");
        assert!(notes.join(" ").contains("running it again"), "{notes:?}");
    }

    #[tokio::test]
    async fn a_held_run_names_its_holder() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::open(d.path()).unwrap();
        let _held = begin(&sd, header("k", "r1"), false).await.unwrap();
        let Err(e) = begin(&sd, header("k", "r2"), false).await else {
            panic!("busy")
        };
        let text = e.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())) && text.contains("run r1"),
            "{text}"
        );
    }
}
