//! The journal of one run: JSON lines appended and fsync'd by one writer thread, and replayed.
//!
//! Why a journal and not SQLite: a run's state is a sequence of facts written in order and
//! read back whole; an append-only file with `fsync` gives the one guarantee needed (a record
//! acknowledged as durable survives a crash) with no C library to build, and stays readable
//! with `auditflow runs show` or any text tool. A crash can only leave a torn last line (never
//! acknowledged, so nothing depended on it): it is dropped on reopen. Any other damage is
//! reported with the file and line, never repaired silently.
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StateError;
use crate::events::{Adoption, Artifact, FileDigest, RunStatus};

/// Version of the record format written in every run header.
pub(crate) const JOURNAL_VERSION: u32 = 1;

/// The first record of every journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunHeader {
    pub version: u32,
    pub run_id: String,
    /// Identifies "the same workflow with the same inputs" (see [`super::identity::run_key`]).
    pub key: String,
    /// The root workflow file as given, and its name.
    pub workflow: String,
    /// The root file's place in its tree, which identifies the run across checkouts (absent
    /// in journals of releases before run identities: see [`super::identity`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<super::identity::WorkflowIdentity>,

    pub workflow_name: String,
    /// Every file of the plan (the root and its `uses`), to notice edits before resuming.
    pub files: Vec<FileDigest>,
    /// Inputs, secret ones masked.
    pub inputs: Value,
    #[serde(default)]
    pub shard: Option<String>,
    pub started_at: DateTime<Utc>,
    pub auditflow: String,
}

impl RunHeader {
    /// The header of the journal at `path` (its first line), without reading the rest.
    pub(crate) fn read(path: &std::path::Path) -> Option<RunHeader> {
        use std::io::BufRead as _;
        let f = std::fs::File::open(path).ok()?;
        let mut line = String::new();
        std::io::BufReader::new(f).read_line(&mut line).ok()?;
        Self::parse_line(&line)
    }

    /// The header a journal's first line holds, if it is one.
    pub(crate) fn parse_line(line: &str) -> Option<RunHeader> {
        match serde_json::from_str(line).ok()? {
            Record::Run(h) => Some(h),
            _ => None,
        }
    }
}

/// How a step ended, when it ended for good.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DoneStatus {
    Succeeded,
    Skipped,
    FailedContinued,
}

/// How a process ended a run, as its `finished` record says. Serialized as `succeeded`,
/// `failed`, `pending`, `cancelled` (the run's [`RunStatus`]) or `abandoned`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndStatus {
    Succeeded,
    Failed,
    Pending,
    Cancelled,
    /// Given up by `--fresh`, or by a changed workflow that had sent nothing unrepeatable.
    Abandoned,
}

impl From<RunStatus> for EndStatus {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Succeeded => EndStatus::Succeeded,
            RunStatus::Failed => EndStatus::Failed,
            RunStatus::Pending => EndStatus::Pending,
            RunStatus::Cancelled => EndStatus::Cancelled,
        }
    }
}

impl EndStatus {
    /// The word written in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            EndStatus::Succeeded => "succeeded",
            EndStatus::Failed => "failed",
            EndStatus::Pending => "pending",
            EndStatus::Cancelled => "cancelled",
            EndStatus::Abandoned => "abandoned",
        }
    }
}

/// A run's status as its journal tells it: how its last process ended it, or `interrupted`
/// when that process wrote no end (a crash or kill).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordedStatus {
    Ended(EndStatus),
    Interrupted,
}

impl RecordedStatus {
    /// The word `runs list`, `runs show` and resume notes print.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RecordedStatus::Ended(s) => s.as_str(),
            RecordedStatus::Interrupted => "interrupted",
        }
    }

    /// Whether the run succeeded (then it is no longer resumed).
    pub(crate) fn succeeded(self) -> bool {
        self == RecordedStatus::Ended(EndStatus::Succeeded)
    }
}

impl std::fmt::Display for RecordedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Run(RunHeader),
    /// A later process took the run over.
    Resumed {
        at: DateTime<Utc>,
        pid: u32,
    },
    /// A step began (the first one recorded bounds a poll's overall deadline).
    Started {
        step: String,
        at: DateTime<Utc>,
        /// Inside loops, the path with each iteration's item, for `runs show`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// A non-idempotent request is about to be sent (durable before it is).
    Intent {
        step: String,
        at: DateTime<Utc>,
        attempt: u32,
        method: String,
        url: String,
        fingerprint: String,
    },
    /// The answer to that request (durable before anything uses it). Masked.
    Response {
        step: String,
        at: DateTime<Utc>,
        fingerprint: String,
        response: Value,
        /// Set when the answer is a request the vendor already held, adopted instead of
        /// created (what the vendor listed of it); the manifest of every later process says so.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        adopted: Option<Adoption>,
    },
    /// The vendor refused the request: it was not carried out.
    Rejected {
        step: String,
        at: DateTime<Utc>,
        status: Option<u16>,
    },
    /// The step ended for good; its outputs (masked) are replayed on resume when
    /// `replayable` (false when masking changed them).
    Done {
        step: String,
        at: DateTime<Utc>,
        status: DoneStatus,
        attempts: u32,
        outputs: Value,
        replayable: bool,
    },
    Failed {
        step: String,
        at: DateTime<Utc>,
        error: String,
    },
    /// A poll saw a state that is not final yet (the interval policy continues from `polls`).
    Polled {
        step: String,
        at: DateTime<Utc>,
        polls: u32,
        observed: String,
    },
    /// A poll detached (`max_wait`); the next run continues it.
    Waiting {
        step: String,
        at: DateTime<Utc>,
        waiting_for: String,
        polls: u32,
    },
    /// Files a step is about to write, once it checked that none of them is the user's. On
    /// resume they are the run's own even when a crash came between a file's rename and its
    /// `Artifact` record.
    Claimed {
        step: String,
        paths: Vec<String>,
    },
    /// A file finished and verified (download or decrypt).
    Artifact {
        step: String,
        artifact: Artifact,
    },
    /// The process ended the run with this status.
    Finished {
        at: DateTime<Utc>,
        status: EndStatus,
        #[serde(default)]
        error: Option<String>,
    },
}

/// An intent with no recorded outcome.
#[derive(Debug, Clone)]
pub struct PendingIntent {
    pub at: DateTime<Utc>,
    pub attempt: u32,
    pub fingerprint: String,
}

/// A recorded answer to a non-idempotent request.
#[derive(Debug, Clone)]
pub struct RecordedResponse {
    pub at: DateTime<Utc>,
    pub fingerprint: String,
    pub response: Value,
    /// The answer is a request the vendor already held, adopted instead of created.
    pub adopted: Option<Adoption>,
}

/// A step that ended for good.
#[derive(Debug, Clone)]
pub(crate) struct DoneStep {
    pub at: DateTime<Utc>,
    pub status: DoneStatus,
    pub attempts: u32,
    pub outputs: Value,
    pub replayable: bool,
}

/// What a journal says, folded by step path.
#[derive(Debug, Clone)]
pub(crate) struct Replay {
    pub path: PathBuf,
    pub header: RunHeader,
    pub done: HashMap<String, DoneStep>,
    pub intents: HashMap<String, PendingIntent>,
    pub responses: HashMap<String, RecordedResponse>,
    /// Inside loops, the label of a step path (`verify[0: store-a].one`), for people.
    pub labels: HashMap<String, String>,
    /// First recorded start of each step.
    pub first_started: HashMap<String, DateTime<Utc>>,
    pub failed: HashMap<String, String>,
    pub waiting: HashMap<String, (String, u32)>,
    /// Polls made so far and the last state seen, by poll step.
    pub polls: HashMap<String, (u32, String)>,
    /// Files each step claimed before writing them (see [`Record::Claimed`]).
    pub claimed: HashMap<String, Vec<String>>,
    /// Artifacts by step path, in the order recorded.
    pub artifacts: HashMap<String, Vec<Artifact>>,
    /// Steps in the order they were first seen (for `runs show`).
    pub order: Vec<String>,
    pub finished: Option<(DateTime<Utc>, EndStatus, Option<String>)>,
    pub resumes: Vec<DateTime<Utc>>,
    pub last_at: DateTime<Utc>,
    pub records: usize,
    /// A torn last line (a crash while writing it) was found and is ignored.
    pub torn_tail: bool,
    /// Bytes of the complete lines; a writer truncates to this before appending.
    pub valid_len: u64,
}

impl Replay {
    /// Reads and folds a journal. A torn last line is dropped; anything else unreadable is
    /// an error naming the line.
    pub(crate) fn read(path: &Path) -> Result<Replay, StateError> {
        let bytes = std::fs::read(path).map_err(|e| StateError::io(path, e))?;
        Self::parse(&bytes, path)
    }

    /// Folds the journal text `bytes` (JSON lines); `path` names it in messages.
    pub(crate) fn parse(bytes: &[u8], path: &Path) -> Result<Replay, StateError> {
        let corrupt = |line: usize, message: String| StateError::Corrupt {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut replay: Option<Replay> = None;
        let mut pos = 0usize;
        let mut line_no = 0usize;
        let mut torn_tail = false;
        while pos < bytes.len() {
            line_no += 1;
            let (line, next, complete) = match bytes[pos..].iter().position(|b| *b == b'\n') {
                Some(n) => (&bytes[pos..pos + n], pos + n + 1, true),
                None => (&bytes[pos..], bytes.len(), false),
            };
            let parsed = std::str::from_utf8(line)
                .map_err(|e| e.to_string())
                .and_then(|s| serde_json::from_str::<Record>(s).map_err(|e| e.to_string()));
            let rec = match parsed {
                Ok(r) => r,
                Err(_) if !complete => {
                    // A crash while appending: this record was never acknowledged.
                    torn_tail = true;
                    break;
                }
                Err(m) if line_no == 1 => {
                    return Err(StateError::Foreign {
                        path: path.to_path_buf(),
                        message: format!("its first line is not an auditflow run header ({m})"),
                    })
                }
                Err(m) => return Err(corrupt(line_no, m)),
            };
            match (&mut replay, rec) {
                (None, Record::Run(h)) => {
                    if h.version > JOURNAL_VERSION {
                        return Err(StateError::Newer {
                            path: path.to_path_buf(),
                            found: h.version,
                            supported: JOURNAL_VERSION,
                        });
                    }
                    replay = Some(Replay::new(path, h));
                }
                (None, _) => {
                    return Err(StateError::Foreign {
                        path: path.to_path_buf(),
                        message: "its first record is not a run header".into(),
                    })
                }
                (Some(_), Record::Run(_)) => {
                    return Err(corrupt(line_no, "a second run header".into()))
                }
                (Some(r), rec) => r.apply(rec),
            }
            pos = next;
        }
        let mut r = replay.ok_or_else(|| StateError::Foreign {
            path: path.to_path_buf(),
            message: "the journal is empty".into(),
        })?;
        r.records = line_no - usize::from(torn_tail);
        r.torn_tail = torn_tail;
        r.valid_len = pos as u64;
        Ok(r)
    }

    fn new(path: &Path, header: RunHeader) -> Replay {
        Replay {
            path: path.to_path_buf(),
            last_at: header.started_at,
            header,
            done: HashMap::new(),
            intents: HashMap::new(),
            responses: HashMap::new(),
            labels: HashMap::new(),
            first_started: HashMap::new(),
            failed: HashMap::new(),
            waiting: HashMap::new(),
            polls: HashMap::new(),
            artifacts: HashMap::new(),
            claimed: HashMap::new(),
            order: Vec::new(),
            finished: None,
            resumes: Vec::new(),
            records: 0,
            torn_tail: false,
            valid_len: 0,
        }
    }

    fn see(&mut self, step: &str) {
        if !self.first_started.contains_key(step) && !self.done.contains_key(step) {
            self.order.push(step.to_string());
        }
    }

    fn apply(&mut self, rec: Record) {
        match rec {
            Record::Run(_) => {}
            Record::Resumed { at, .. } => {
                self.resumes.push(at);
                self.finished = None;
                self.last_at = at;
            }
            Record::Started { step, at, label } => {
                self.see(&step);
                if let Some(l) = label {
                    self.labels.insert(step.clone(), l);
                }
                self.first_started.entry(step).or_insert(at);
                self.last_at = at;
            }
            Record::Intent {
                step,
                at,
                attempt,
                fingerprint,
                ..
            } => {
                self.intents.insert(
                    step,
                    PendingIntent {
                        at,
                        attempt,
                        fingerprint,
                    },
                );
                self.last_at = at;
            }
            Record::Response {
                step,
                at,
                fingerprint,
                response,
                adopted,
            } => {
                self.intents.remove(&step);
                self.responses.insert(
                    step,
                    RecordedResponse {
                        at,
                        fingerprint,
                        response,
                        adopted,
                    },
                );
                self.last_at = at;
            }
            Record::Rejected { step, at, .. } => {
                self.intents.remove(&step);
                self.last_at = at;
            }
            Record::Done {
                step,
                at,
                status,
                attempts,
                outputs,
                replayable,
            } => {
                self.see(&step);
                self.failed.remove(&step);
                self.waiting.remove(&step);
                self.done.insert(
                    step,
                    DoneStep {
                        at,
                        status,
                        attempts,
                        outputs,
                        replayable,
                    },
                );
                self.last_at = at;
            }
            Record::Failed { step, at, error } => {
                self.see(&step);
                self.failed.insert(step, error);
                self.last_at = at;
            }
            Record::Polled {
                step,
                at,
                polls,
                observed,
            } => {
                self.see(&step);
                self.polls.insert(step, (polls, observed));
                self.last_at = at;
            }
            Record::Waiting {
                step,
                at,
                waiting_for,
                polls,
            } => {
                self.see(&step);
                self.waiting.insert(step, (waiting_for, polls));
                self.last_at = at;
            }
            Record::Artifact { step, artifact } => {
                self.artifacts.entry(step).or_default().push(artifact);
            }
            Record::Claimed { step, paths } => {
                self.claimed.entry(step).or_default().extend(paths);
            }
            Record::Finished { at, status, error } => {
                self.finished = Some((at, status, error));
                self.last_at = at;
            }
        }
    }

    /// Whether the run recorded any non-idempotent request (sent or about to be).
    pub(crate) fn has_non_idempotent(&self) -> bool {
        !self.intents.is_empty() || !self.responses.is_empty()
    }

    /// The run's status as recorded: its last `Finished`, else `interrupted` (a crash or kill).
    pub(crate) fn status(&self) -> RecordedStatus {
        match &self.finished {
            Some((_, s, _)) => RecordedStatus::Ended(*s),
            None => RecordedStatus::Interrupted,
        }
    }
}

/// Tells the appender whether what it asked for is durable (or why not).
pub(super) type Ack = tokio::sync::oneshot::Sender<Result<(), String>>;

/// What a journal's writer is asked to do.
pub(super) enum Cmd {
    /// Append a line (acknowledged once durable when an ack is given).
    Append(Vec<u8>, Option<Ack>),
    /// Acknowledge once everything before is durable.
    Flush(Ack),
    /// Store a cursor in the same transaction as the records before it (the PostgreSQL
    /// store's writer; the directory's writer answers with an error: its cursors are files).
    Cursor(Box<super::cursors::StoredCursor>, Ack),
}

/// Appends records from any task; one thread writes them in order and fsyncs each batch
/// (group commit), so 32 iterations recording at once cost one fsync, not 32.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::UnboundedSender<Cmd>,
    path: PathBuf,
}

impl Journal {
    /// Starts the writer on an open file (positioned at its end).
    pub fn start(path: PathBuf, file: File) -> Journal {
        let (tx, rx) = mpsc::unbounded_channel::<Cmd>();
        std::thread::Builder::new()
            .name("auditflow-journal".into())
            .spawn(move || writer(file, rx))
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("cannot start the journal writer: {e}"));
        Journal { tx, path }
    }

    /// A journal whose writer (the PostgreSQL store's) receives from `tx`; `place` names it
    /// in messages.
    pub(super) fn with_writer(place: PathBuf, tx: mpsc::UnboundedSender<Cmd>) -> Journal {
        Journal { tx, path: place }
    }

    /// Stores `cursor` once every record appended before it is durable, in the same
    /// transaction as they are (PostgreSQL store).
    pub(super) async fn commit_cursor(
        &self,
        cursor: super::cursors::StoredCursor,
    ) -> Result<(), StateError> {
        let (ack, done) = tokio::sync::oneshot::channel();
        self.tx
            .send(Cmd::Cursor(Box::new(cursor), ack))
            .map_err(|_| self.gone())?;
        self.acknowledged(done).await
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn line(rec: &Record) -> Vec<u8> {
        let mut v = serde_json::to_vec(rec).unwrap_or_else(|e| {
            // Serializing plain data cannot fail; keep the journal parseable if it ever does.
            format!(
                "{{\"type\":\"unserializable\",\"error\":{:?}}}",
                e.to_string()
            )
            .into_bytes()
        });
        v.push(b'\n');
        v
    }

    /// Appends a record; it is written and fsync'd with the next batch. A write error shows
    /// at the next durable append or at [`Journal::close`].
    pub fn append(&self, rec: &Record) {
        let _ = self.tx.send(Cmd::Append(Self::line(rec), None));
    }

    /// Appends a record and returns once it (and everything before it) is on disk.
    pub async fn append_durable(&self, rec: &Record) -> Result<(), StateError> {
        let (ack, done) = tokio::sync::oneshot::channel();
        self.tx
            .send(Cmd::Append(Self::line(rec), Some(ack)))
            .map_err(|_| self.gone())?;
        self.acknowledged(done).await
    }

    /// Waits until everything appended is on disk.
    pub async fn flush(&self) -> Result<(), StateError> {
        let (ack, done) = tokio::sync::oneshot::channel();
        self.tx.send(Cmd::Flush(ack)).map_err(|_| self.gone())?;
        self.acknowledged(done).await
    }

    async fn acknowledged(
        &self,
        done: tokio::sync::oneshot::Receiver<Result<(), String>>,
    ) -> Result<(), StateError> {
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(m)) => Err(StateError::Write {
                path: self.path.clone(),
                message: m,
            }),
            Err(_) => Err(self.gone()),
        }
    }

    fn gone(&self) -> StateError {
        StateError::Write {
            path: self.path.clone(),
            message: "the journal writer stopped".into(),
        }
    }
}

fn writer(mut file: File, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    // Once a write fails, every later acknowledgement reports it: a journal with a gap
    // must not be trusted for what follows.
    let mut broken: Option<String> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut buf = Vec::new();
        let mut acks = Vec::new();
        for c in batch {
            match c {
                Cmd::Append(line, ack) => {
                    buf.extend_from_slice(&line);
                    acks.extend(ack);
                }
                Cmd::Flush(ack) => acks.push(ack),
                Cmd::Cursor(_, ack) => {
                    let _ = ack.send(Err("a state directory keeps cursors in files".into()));
                }
            }
        }
        if broken.is_none() && !buf.is_empty() {
            let r = file.write_all(&buf).and_then(|_| file.sync_data());
            if let Err(e) = r {
                broken = Some(e.to_string());
            }
        }
        for a in acks {
            let _ = a.send(match &broken {
                None => Ok(()),
                Some(m) => Err(m.clone()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RunHeader {
        RunHeader {
            version: JOURNAL_VERSION,
            run_id: "r1".into(),
            key: "k".into(),
            workflow: "w.yaml".into(),
            workflow_name: "w".into(),
            identity: None,
            files: vec![],
            inputs: Value::Null,
            shard: None,
            started_at: Utc::now(),
            auditflow: "test".into(),
        }
    }

    fn lines(recs: &[Record]) -> Vec<u8> {
        recs.iter().flat_map(Journal::line).collect()
    }

    #[test]
    fn folds_records_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let now = Utc::now();
        let mut bytes = lines(&[
            Record::Run(header()),
            Record::Intent {
                step: "create".into(),
                at: now,
                attempt: 1,
                method: "POST".into(),
                url: "u".into(),
                fingerprint: "f".into(),
            },
            Record::Done {
                step: "a".into(),
                at: now,
                status: DoneStatus::Succeeded,
                attempts: 1,
                outputs: serde_json::json!({"x": 1}),
                replayable: true,
            },
        ]);
        let valid = bytes.len() as u64;
        bytes.extend_from_slice(b"{\"type\":\"done\",\"step\":\"b\",\"at");
        std::fs::write(&p, &bytes).unwrap();
        let r = Replay::read(&p).unwrap();
        assert!(r.torn_tail);
        assert_eq!(r.valid_len, valid);
        assert_eq!(r.records, 3);
        assert_eq!(r.done["a"].outputs["x"], 1);
        assert_eq!(r.intents["create"].fingerprint, "f");
        assert!(r.has_non_idempotent());
        assert_eq!(r.status().as_str(), "interrupted");
    }

    #[test]
    fn damage_in_the_middle_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let mut bytes = lines(&[Record::Run(header())]);
        bytes.extend_from_slice(b"garbage\n");
        bytes.extend(lines(&[Record::Resumed {
            at: Utc::now(),
            pid: 1,
        }]));
        std::fs::write(&p, &bytes).unwrap();
        let e = Replay::read(&p).unwrap_err().to_string();
        assert!(e.contains("journal.jsonl:2"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        std::fs::write(&p, b"{\"hello\": 1}\n").unwrap();
        assert!(matches!(
            Replay::read(&p).unwrap_err(),
            StateError::Foreign { .. }
        ));
    }

    #[tokio::test]
    async fn writer_appends_in_order_and_acknowledges() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let f = File::create(&p).unwrap();
        let j = Journal::start(p.clone(), f);
        j.append(&Record::Run(header()));
        for i in 0..50 {
            j.append(&Record::Started {
                step: format!("s{i}"),
                at: Utc::now(),
                label: None,
            });
        }
        j.append_durable(&Record::Finished {
            at: Utc::now(),
            status: EndStatus::Succeeded,
            error: None,
        })
        .await
        .unwrap();
        let r = Replay::read(&p).unwrap();
        assert_eq!(r.records, 52);
        assert_eq!(r.order.len(), 50);
        assert_eq!(r.order[7], "s7");
        assert_eq!(r.status().as_str(), "succeeded");
    }

    #[test]
    fn journal_lines_written_before_typed_digests_and_times_read_back_unchanged() {
        let lines = [
            r#"{"type":"run","version":1,"run_id":"r1","key":"k","workflow":"w.yaml","workflow_name":"w","files":[{"path":"w.yaml","sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}],"inputs":{"a":"***"},"shard":null,"started_at":"2024-05-01T10:00:00.123456Z","auditflow":"0.1.0"}"#,
            r#"{"type":"artifact","step":"dl","artifact":{"kind":"download","path":"out/a.zip","bytes":3,"sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","source":"https://h/a.zip","md5":"kAFQmDzST7DWlj99KOF/cg==","request_id":"q1","finished_at":"2024-05-01T10:01:00.123456789+00:00"}}"#,
            r#"{"type":"artifact","step":"dec","artifact":{"kind":"decrypt","path":"out/a.mbox","bytes":3,"sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","source":"out/a.zip.gpg","source_sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","finished_at":"2024-05-01T10:02:00+00:00"}}"#,
        ];
        for line in lines {
            let rec: Record = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&rec).unwrap(), line);
        }
        let Some(h) = RunHeader::parse_line(lines[0]) else {
            panic!("not a header")
        };
        assert_eq!(h.files[0].sha256, crate::durable::Sha256Digest::of(b"abc"));
    }

    #[test]
    fn end_status_reads_and_writes_the_same_words_as_before() {
        for (st, word) in [
            (EndStatus::Succeeded, "succeeded"),
            (EndStatus::Failed, "failed"),
            (EndStatus::Pending, "pending"),
            (EndStatus::Cancelled, "cancelled"),
            (EndStatus::Abandoned, "abandoned"),
        ] {
            let line = format!(
                r#"{{"type":"finished","at":"2024-05-01T10:00:00Z","status":"{word}","error":null}}"#
            );
            let rec: Record = serde_json::from_str(&line).unwrap();
            let Record::Finished { status, .. } = &rec else {
                panic!("not a finished record: {rec:?}")
            };
            assert_eq!(*status, st);
            assert_eq!(serde_json::to_string(&rec).unwrap(), line);
            assert_eq!(st.as_str(), word);
            assert_eq!(RecordedStatus::Ended(st).to_string(), word);
        }
        for (run, word) in [
            (RunStatus::Succeeded, "succeeded"),
            (RunStatus::Failed, "failed"),
            (RunStatus::Pending, "pending"),
            (RunStatus::Cancelled, "cancelled"),
        ] {
            assert_eq!(EndStatus::from(run).as_str(), word);
        }
        assert_eq!(RecordedStatus::Interrupted.to_string(), "interrupted");
    }
}
