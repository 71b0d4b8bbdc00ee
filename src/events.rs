//! The run's events: what the engine and steps report, and what reporters render.
//!
//! Every string in an event has passed through secret masking before a sink sees it.
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use chrono::{DateTime, Utc};

use crate::durable::Sha256Digest;
use crate::secrets::Secrets;
use crate::workflow::plan::StepKind;

/// A file of the workflow and the SHA-256 of its text when the run began (carried by
/// [`Event::RunStarted`] and recorded in the run journal's header).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileDigest {
    /// Relative to the run identity's anchor (local files), or `url//path@commit` (pack
    /// files).
    pub path: String,
    /// The SHA-256 of the file's text (hex).
    pub sha256: Sha256Digest,
    /// For a file of a workflow pack: the repository (without credentials), revision,
    /// commit and path it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<crate::workflow::packs::PackOrigin>,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// The action did what it should (the last attempt succeeded).
    Succeeded,
    /// Every attempt failed; the run fails too.
    Failed,
    /// Failed, but `continue_on_error` let the run go on.
    FailedContinued,
    /// Its `if` condition rendered false.
    Skipped,
    /// Waiting (detached with `max_wait`): run again later.
    Pending,
    /// Finished by an earlier process of the run; its recorded outputs are used.
    Recorded,
}

impl StepStatus {
    /// The word the human reporter prints (`ok`, `FAILED`, ...); JSON uses the snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Succeeded => "ok",
            StepStatus::Failed => "FAILED",
            StepStatus::FailedContinued => "failed (continued)",
            StepStatus::Skipped => "skipped",
            StepStatus::Pending => "pending",
            StepStatus::Recorded => "recorded",
        }
    }
}

/// How a run ended. Serialized as `succeeded`, `failed`, `pending`, `cancelled` (events,
/// reports, the journal's `finished` record and the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every step succeeded, was skipped, or failed with `continue_on_error`.
    Succeeded,
    /// A step failed (or the run could not start); exit code 1.
    Failed,
    /// A step is waiting on the vendor (detached poll); run the same command again later.
    Pending,
    /// Stopped by Ctrl-C or SIGTERM; the next run resumes it.
    Cancelled,
}

impl RunStatus {
    /// The word written to events, reports, journals and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Pending => "pending",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What produced an artifact. Serialized as `download`, `decrypt`, `saved` (events, journal
/// and manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// A file a `download` (or `download` + `decrypt`) step fetched.
    Download,
    /// The plaintext of a decrypted file.
    Decrypt,
    /// A response body a `call` step saved with `save_to`.
    Saved,
    /// A file taken out of a downloaded archive (`download.extract`).
    Extracted,
}

impl ArtifactKind {
    /// The word written to events, journals and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Download => "download",
            ArtifactKind::Decrypt => "decrypt",
            ArtifactKind::Saved => "saved",
            ArtifactKind::Extracted => "extracted",
        }
    }
}

impl std::fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file the run produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Artifact {
    /// Which step action produced the file.
    pub kind: ArtifactKind,
    /// Where the file is, as the workflow named it (relative to the working directory).
    pub path: String,
    /// The file's size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file's contents (lowercase hex).
    pub sha256: Sha256Digest,
    /// Where it came from (URL without credentials, or the encrypted file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Base64 MD5 of the file's contents, when the vendor lists one (Cloud Storage `md5Hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// SHA-256 of the encrypted file a decrypted artifact came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<Sha256Digest>,
    /// The vendor's request id of the download (e.g. Mimecast `x-mc-req-id`), for support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// When the file was complete (RFC 3339, UTC).
    #[serde(with = "rfc3339")]
    pub finished_at: DateTime<Utc>,
}

/// The file a byte count in [`Event::Progress`] is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileProgress {
    /// What is being made: a download, or the plaintext of a decrypt.
    pub kind: ArtifactKind,
    /// The file being written (its final path).
    pub path: String,
}

/// The class of a vendor's answer to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusClass {
    /// 2xx (and anything below 400 the adapter accepted).
    Success,
    /// 4xx.
    ClientError,
    /// 5xx.
    ServerError,
    /// No answer: connect, TLS or timeout failure.
    Network,
}

impl StatusClass {
    /// The class of an HTTP status; `None` (no answer) is `Network`.
    pub fn of(status: Option<u16>) -> StatusClass {
        match status {
            None => StatusClass::Network,
            Some(500..) => StatusClass::ServerError,
            Some(400..) => StatusClass::ClientError,
            Some(_) => StatusClass::Success,
        }
    }
}

/// Messages of one custodian: exported, and the vendor's count when it gives one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodianCount {
    /// The account or user (an email address).
    pub custodian: String,
    /// Messages in the exported files (mbox `From ` lines).
    pub exported: u64,
    /// The vendor's count (Vault's results-count file); None when the vendor gives none.
    pub vendor_count: Option<u64>,
}

/// One event. `step` is the step's path: `id`, or `loop[3].id`, or `caller.uses/id`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run began (or a new process of an unfinished run began).
    RunStarted {
        /// The run's id, also its directory name under the state directory.
        run_id: String,
        /// The workflow's `name`.
        workflow: String,
        /// The workflow file as given on the command line.
        file: String,
        /// The resolved inputs, secrets masked.
        inputs: Value,
        /// When this process started the run (RFC 3339, UTC).
        #[serde(with = "rfc3339")]
        started_at: DateTime<Utc>,
        /// `--dry-run`: requests are shown, not sent.
        dry_run: bool,
        /// Set when this process continues an unfinished run (what was recorded).
        #[serde(skip_serializing_if = "Option::is_none")]
        resumed: Option<String>,
        /// Every workflow file of the run (the root and what it `uses`) with its SHA-256
        /// and, for pack files, where it came from.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<FileDigest>,
    },
    /// A step began.
    StepStarted {
        /// The step's path: `id`, `loop[3].id` or `caller.uses/id`.
        step: String,
        /// The step's `name`, else its id.
        name: String,
        /// What the step does (serialized as `call`, `poll`, `for_each`, ...).
        kind: StepKind,
        /// Inside loops, the path with each iteration's item (`verify[0: store-a].one`), for
        /// people; `step` stays the stable key of the journal.
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// An attempt failed and another one follows after `wait`.
    Retry {
        /// The step's path: `id`, `loop[3].id` or `caller.uses/id`.
        step: String,
        /// The attempt that failed, 1-based.
        attempt: u32,
        /// Why it failed (masked).
        error: String,
        /// Wait before the next attempt (`wait_ms` in JSON).
        #[serde(with = "duration_ms", rename = "wait_ms")]
        wait: Duration,
    },
    /// One poll and what it saw.
    Poll {
        /// The step's path: `id`, `loop[3].id` or `caller.uses/id`.
        step: String,
        /// The poll's number, 1-based.
        poll: u32,
        /// The vendor's state as the poll read it (e.g. `processing 40%`).
        observed: String,
        /// Wait before the next poll (`next_in_ms` in JSON).
        #[serde(with = "duration_ms", rename = "next_in_ms")]
        next_in: Duration,
    },
    /// A line of detail from a step (shown with `--verbose`).
    Log {
        /// The step's path: `id`, `loop[3].id` or `caller.uses/id`.
        step: String,
        /// The text, masked.
        line: String,
        /// A vendor process's own log output (MailStore `logOutput`): shown with `--verbose`.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        vendor_log: bool,
    },
    /// How far a long step (download, decrypt, vendor process) has got.
    Progress {
        /// The step's path: `id`, `loop[3].id` or `caller.uses/id`.
        step: String,
        /// 0..=100 when known.
        percent: Option<f64>,
        /// Bytes done so far, for downloads and decrypts.
        bytes: Option<u64>,
        /// Bytes expected in all, when the server said.
        total: Option<u64>,
        /// The file the bytes are about (downloads and decrypts; several run at once).
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<FileProgress>,
    },
    /// A request that `--dry-run` would have sent.
    DryRun {
        /// The step's path: `id`, `loop[3].id` or `caller.uses/id`.
        step: String,
        /// The HTTP method.
        method: String,
        /// The full URL, credentials removed.
        url: String,
        /// The headers as they would be sent, authorization values masked.
        headers: Vec<(String, String)>,
        /// The body as text, when there is one.
        body: Option<String>,
    },
    /// A step produced a file.
    Artifact {
        /// The step's path: `id`, `loop[3].id` or `caller.uses/id`.
        step: String,
        /// The file.
        artifact: Artifact,
    },
    /// What a `call` step fetched: pages, records, the vendor's total, and whether the
    /// result stops short of what the vendor announced, on purpose (for the manifest).
    Paged {
        /// The step's path: `id`, `loop[3].id` or `caller.uses/id`.
        step: String,
        /// Pages fetched.
        pages: u32,
        /// Records in the (merged) result, counted the vendor's way.
        items: u64,
        /// The total the vendor reported (Mimecast `totalCount`), when it did.
        reported_total: Option<u64>,
        /// More pages were announced than fetched (`paginate: false` or `truncate: true`).
        truncated: bool,
    },
    /// A step that must not send its request twice found it already carried out at the
    /// vendor (an earlier run whose state was lost made it) and continues with it instead
    /// of creating another (for the log and the manifest).
    Adopted {
        /// The step's path: `id`, `loop[3].id` or `caller.uses/id`.
        step: String,
        /// The vendor, as its connection kind is written (`google`).
        vendor: String,
        /// The vendor's id of what was adopted (Email Audit request id, Vault export id).
        request_id: Option<String>,
        /// What was found: its status and creation time as the vendor lists them.
        detail: String,
    },
    /// A step accepted an incomplete vendor result the workflow allows (a Vault export with
    /// error reports or message counts that differ, under `accept_partial`): the run may
    /// succeed, and the report and the evidence manifest say what is missing.
    Partial {
        /// The step's path.
        step: String,
        /// What is missing, one line each (masked).
        problems: Vec<String>,
    },
    /// How a vendor answered one attempt of a step (for the per-step request counts of the
    /// evidence and JSON reports).
    Answer {
        /// The step's path.
        step: String,
        /// The vendor, as its connection kind is written (`mimecast`).
        vendor: String,
        /// The answer's HTTP status class, or `network` when none came.
        class: StatusClass,
    },
    /// Messages exported per custodian (a Vault account, an Email Audit user) against the
    /// vendor's own count, when the vendor gives one.
    Custodians {
        /// The step's path.
        step: String,
        /// The vendor (`google`).
        vendor: String,
        /// One entry per custodian.
        counts: Vec<CustodianCount>,
    },
    /// Something the user should know that does not stop the run (e.g. `insecure_tls`).
    Warning {
        /// The warning, masked.
        message: String,
    },
    /// A step ended.
    StepFinished {
        /// The step's path: `id`, `loop[3].id` or `caller.uses/id`.
        step: String,
        /// The step's `name`, else its id.
        name: String,
        /// What the step does (serialized as `call`, `poll`, `for_each`, ...).
        kind: StepKind,
        /// How it ended.
        status: StepStatus,
        /// Attempts made, retries included (0 when skipped or recorded).
        attempts: u32,
        /// Wall time of the step in this process (`duration_ms` in JSON).
        #[serde(with = "duration_ms", rename = "duration_ms")]
        duration: Duration,
        /// Why it failed, when it did (masked).
        error: Option<String>,
        /// A short summary of the outputs (sizes of bodies, counts), masked.
        outputs: Value,
        /// Inside loops, the path with each iteration's item (`verify[0: store-a].one`), for
        /// people; `step` stays the stable key of the journal.
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// The run ended (or this process of it).
    RunFinished {
        /// How the run ended.
        status: RunStatus,
        /// Wall time of this process (`duration_ms` in JSON).
        #[serde(with = "duration_ms", rename = "duration_ms")]
        duration: Duration,
        /// The workflow's `outputs`, rendered and masked.
        outputs: Value,
        /// Why the run failed, when it did (masked).
        error: Option<String>,
    },
}

/// Times in events, journals and manifests: `DateTime<Utc>` written as
/// [`chrono::DateTime::to_rfc3339`] writes it (`2026-01-02T03:04:05.123+00:00`), the form
/// these files have always held, and read from any RFC 3339 time.
pub mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `2026-01-02T03:04:05.123+00:00`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339())
    }

    /// Reads any RFC 3339 time, as UTC.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// Reads an RFC 3339 time as UTC.
    pub fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
        DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc))
    }

    /// The same for an optional time (`null` or absent when there is none).
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes the time as [`super::serialize`] does, or `null`.
        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        /// Reads an RFC 3339 time or `null`.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            let text = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
            text.map(|t| super::parse(&t).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

mod duration_ms {
    use serde::Serializer;
    use std::time::Duration;
    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
    }
}

/// Receives events. Implementations must be cheap: they run on the engine's tasks.
pub trait Sink: Send + Sync {
    /// Handles one event, already masked.
    fn event(&self, e: &Event);
}

/// Sends masked events to several sinks.
#[derive(Clone)]
pub struct Emitter {
    sinks: Arc<Vec<Arc<dyn Sink>>>,
    secrets: Secrets,
}

impl Emitter {
    /// An emitter feeding `sinks` in order, masking with `secrets`.
    pub fn new(sinks: Vec<Arc<dyn Sink>>, secrets: Secrets) -> Self {
        Emitter {
            sinks: Arc::new(sinks),
            secrets,
        }
    }

    /// The secret values this emitter masks (for callers masking their own output).
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Masks every string of the event, then hands it to each sink.
    pub fn emit(&self, e: Event) {
        let mut masked = e;
        masked.mask(&self.secrets);
        for s in self.sinks.iter() {
            s.event(&masked);
        }
    }

    /// Emits a `Log` line for `step`.
    pub fn log(&self, step: &str, line: impl Into<String>) {
        self.emit(Event::Log {
            step: step.to_string(),
            line: line.into(),
            vendor_log: false,
        });
    }

    /// The same emitter with one more sink.
    pub fn with_sink(&self, sink: Arc<dyn Sink>) -> Emitter {
        let mut sinks: Vec<Arc<dyn Sink>> = self.sinks.iter().cloned().collect();
        sinks.push(sink);
        Emitter {
            sinks: Arc::new(sinks),
            secrets: self.secrets.clone(),
        }
    }

    /// Emits a `Warning`.
    pub fn warn(&self, message: impl Into<String>) {
        self.emit(Event::Warning {
            message: message.into(),
        });
    }
}

/// A request found at the vendor and continued instead of created again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Adoption {
    /// The vendor (`google`).
    pub vendor: String,
    /// The vendor's id of the request.
    pub request_id: Option<String>,
    /// Its status and creation time as the vendor listed them.
    pub detail: String,
}

impl Event {
    /// The [`Event::Adopted`] of the step at `step`.
    pub(crate) fn adopted(step: &str, a: Adoption) -> Event {
        Event::Adopted {
            step: step.to_string(),
            vendor: a.vendor,
            request_id: a.request_id,
            detail: a.detail,
        }
    }
}

/// Masks, in place, the fields of an event that may carry a secret.
struct Masking<'s>(&'s Secrets);

impl Masking<'_> {
    fn text(&self, text: &mut String) -> &Self {
        *text = self.0.mask(text);
        self
    }

    fn opt(&self, text: &mut Option<String>) -> &Self {
        if let Some(text) = text {
            self.text(text);
        }
        self
    }

    fn texts<'t>(&self, texts: impl IntoIterator<Item = &'t mut String>) -> &Self {
        for text in texts {
            self.text(text);
        }
        self
    }

    fn json(&self, value: &mut Value) -> &Self {
        *value = self.0.mask_json(value);
        self
    }
}

impl Event {
    /// Masks every field that may carry a secret (texts, URLs, paths, messages, inputs and
    /// outputs); ids, kinds, vendors, statuses, counts, digests and times are left as they
    /// are. A new field that may carry a secret must be named here.
    fn mask(&mut self, secrets: &Secrets) {
        let m = Masking(secrets);
        match self {
            Event::RunStarted {
                workflow,
                file,
                inputs,
                resumed,
                ..
            } => m.text(workflow).text(file).json(inputs).opt(resumed),
            Event::StepStarted {
                step, name, label, ..
            } => m.text(step).text(name).opt(label),
            Event::Retry { step, error, .. } => m.text(step).text(error),
            Event::Poll { step, observed, .. } => m.text(step).text(observed),
            Event::Log { step, line, .. } => m.text(step).text(line),
            Event::Progress { step, file, .. } => {
                m.text(step).texts(file.as_mut().map(|f| &mut f.path))
            }
            Event::DryRun {
                step,
                url,
                headers,
                body,
                ..
            } => m
                .text(step)
                .text(url)
                .texts(headers.iter_mut().map(|(_, v)| v))
                .opt(body),
            Event::Artifact { step, artifact } => m
                .text(step)
                .text(&mut artifact.path)
                .opt(&mut artifact.source),
            Event::Warning { message } => m.text(message),
            Event::Adopted {
                step,
                request_id,
                detail,
                ..
            } => m.text(step).opt(request_id).text(detail),
            Event::Answer { step, .. }
            | Event::Custodians { step, .. }
            | Event::Paged { step, .. } => m.text(step),
            Event::Partial { step, problems } => m.text(step).texts(problems),
            Event::StepFinished {
                step,
                name,
                error,
                outputs,
                label,
                ..
            } => m.text(step).text(name).opt(error).json(outputs).opt(label),
            Event::RunFinished { outputs, error, .. } => m.json(outputs).opt(error),
        };
    }
}

/// A sink that keeps every event (tests, and reporters that write at the end).
#[derive(Default)]
pub struct Collect {
    /// Every event received, in order.
    pub events: std::sync::Mutex<Vec<Event>>,
}

impl Sink for Collect {
    fn event(&self, e: &Event) {
        if let Ok(mut v) = self.events.lock() {
            v.push(e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emitted_events_are_masked() {
        let secrets = Secrets::new();
        secrets.add("top-secret-token");
        let c = Arc::new(Collect::default());
        let em = Emitter::new(vec![c.clone()], secrets);
        em.log("s", "Authorization: Bearer top-secret-token");
        em.emit(Event::DryRun {
            step: "s".into(),
            method: "GET".into(),
            url: "http://x/?t=top-secret-token".into(),
            headers: vec![("authorization".into(), "Bearer top-secret-token".into())],
            body: Some("{\"k\":\"top-secret-token\"}".into()),
        });
        let all = serde_json::to_string(&*c.events.lock().unwrap()).unwrap();
        assert!(!all.contains("top-secret-token"), "{all}");
        assert_eq!(all.matches("***").count(), 4, "{all}");
    }

    /// Serializes `value`, checks the JSON string is `word`, and reads `word` back.
    fn round_trip<T>(value: T, word: &str)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let json = format!("\"{word}\"");
        assert_eq!(serde_json::to_string(&value).unwrap(), json);
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), value);
    }

    #[test]
    fn run_status_reads_and_writes_the_same_words_as_before() {
        for (s, word) in [
            (RunStatus::Succeeded, "succeeded"),
            (RunStatus::Failed, "failed"),
            (RunStatus::Pending, "pending"),
            (RunStatus::Cancelled, "cancelled"),
        ] {
            round_trip(s, word);
            assert_eq!(s.as_str(), word);
            assert_eq!(s.to_string(), word);
        }
    }

    #[test]
    fn artifact_kind_reads_and_writes_the_same_words_as_before() {
        for (k, word) in [
            (ArtifactKind::Download, "download"),
            (ArtifactKind::Decrypt, "decrypt"),
            (ArtifactKind::Saved, "saved"),
        ] {
            round_trip(k, word);
            assert_eq!(k.as_str(), word);
        }
        // An artifact line as journals and events carried it before the enum and before
        // typed digests and times: read, and written back byte for byte.
        for old in [
            r#"{"kind":"download","path":"out/a.zip","bytes":3,"sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","finished_at":"2024-05-01T10:01:00.123456789+00:00"}"#,
            r#"{"kind":"decrypt","path":"out/a.mbox","bytes":3,"sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","source":"out/a.gpg","source_sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","finished_at":"2024-05-01T10:01:00+00:00"}"#,
            r#"{"kind":"saved","path":"out/b.json","bytes":3,"sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","finished_at":"2024-05-01T10:01:00.120+00:00"}"#,
        ] {
            let a: Artifact = serde_json::from_str(old).unwrap();
            assert_eq!(a.sha256, crate::durable::Sha256Digest::of(b"abc"));
            assert_eq!(serde_json::to_string(&a).unwrap(), old);
        }
    }

    #[test]
    fn a_digest_or_time_that_is_not_one_is_refused() {
        for bad in [
            r#"{"kind":"download","path":"a","bytes":3,"sha256":"ab","finished_at":"2024-05-01T10:01:00+00:00"}"#,
            r#"{"kind":"download","path":"a","bytes":3,"sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","finished_at":"t"}"#,
        ] {
            assert!(serde_json::from_str::<Artifact>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_written_as_before() {
        let t = rfc3339::parse("2024-05-01T12:01:00.5+02:00").unwrap();
        let a = Artifact {
            kind: ArtifactKind::Saved,
            path: "p".into(),
            bytes: 0,
            sha256: crate::durable::Sha256Digest::of(b""),
            source: None,
            md5: None,
            source_sha256: None,
            request_id: None,
            finished_at: t,
        };
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["finished_at"], t.to_rfc3339());
        assert_eq!(json["finished_at"], "2024-05-01T10:01:00.500+00:00");
        assert_eq!(
            json["sha256"],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn step_status_serializes_to_the_same_words_as_before() {
        for (s, word) in [
            (StepStatus::Succeeded, "succeeded"),
            (StepStatus::Failed, "failed"),
            (StepStatus::FailedContinued, "failed_continued"),
            (StepStatus::Skipped, "skipped"),
            (StepStatus::Pending, "pending"),
            (StepStatus::Recorded, "recorded"),
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), word);
        }
    }

    #[test]
    fn step_kind_in_events_serializes_to_the_same_words_as_before() {
        for kind in [
            StepKind::Call,
            StepKind::Poll,
            StepKind::Download,
            StepKind::Decrypt,
            StepKind::ForEach,
            StepKind::Uses,
        ] {
            let e = Event::StepStarted {
                step: "s".into(),
                name: "s".into(),
                kind,
                label: None,
            };
            let json = serde_json::to_value(&e).unwrap();
            assert_eq!(json["kind"], kind.as_str(), "{kind:?}");
        }
        let e = serde_json::to_value(Event::StepStarted {
            step: "s".into(),
            name: "s".into(),
            kind: StepKind::ForEach,
            label: None,
        })
        .unwrap();
        assert_eq!(e["kind"], "for_each");
    }
}
