//! The run's events: what the engine and steps report, and what reporters render.
//!
//! Every string in an event has passed through secret masking before a sink sees it.
#![allow(missing_docs)] // TODO(#9): document
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::secrets::Secrets;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Succeeded,
    Failed,
    /// Failed, but `continue_on_error` let the run go on.
    FailedContinued,
    Skipped,
    /// Waiting (detached with `max_wait`): run again later.
    Pending,
    /// Finished by an earlier process of the run; its recorded outputs are used.
    Recorded,
}

impl StepStatus {
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
    Succeeded,
    Failed,
    Pending,
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
}

impl ArtifactKind {
    /// The word written to events, journals and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Download => "download",
            ArtifactKind::Decrypt => "decrypt",
            ArtifactKind::Saved => "saved",
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
    pub kind: ArtifactKind,
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    /// Where it came from (URL without credentials, or the encrypted file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub finished_at: String,
}

/// One event. `step` is the step's path: `id`, or `loop[3].id`, or `caller.uses/id`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        workflow: String,
        file: String,
        inputs: Value,
        started_at: String,
        dry_run: bool,
        /// Set when this process continues an unfinished run (what was recorded).
        #[serde(skip_serializing_if = "Option::is_none")]
        resumed: Option<String>,
    },
    StepStarted {
        step: String,
        name: String,
        kind: String,
    },
    /// An attempt failed and another one follows after `wait`.
    Retry {
        step: String,
        attempt: u32,
        error: String,
        #[serde(with = "duration_ms")]
        wait: Duration,
    },
    /// One poll and what it saw.
    Poll {
        step: String,
        poll: u32,
        observed: String,
        #[serde(with = "duration_ms")]
        next_in: Duration,
    },
    Log {
        step: String,
        line: String,
    },
    Progress {
        step: String,
        /// 0..=100 when known.
        percent: Option<f64>,
        bytes: Option<u64>,
        total: Option<u64>,
    },
    /// A request that `--dry-run` would have sent.
    DryRun {
        step: String,
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: Option<String>,
    },
    Artifact {
        step: String,
        artifact: Artifact,
    },
    Warning {
        message: String,
    },
    StepFinished {
        step: String,
        name: String,
        kind: String,
        status: StepStatus,
        attempts: u32,
        #[serde(with = "duration_ms")]
        duration: Duration,
        error: Option<String>,
        /// A short summary of the outputs (sizes of bodies, counts), masked.
        outputs: Value,
    },
    RunFinished {
        status: RunStatus,
        #[serde(with = "duration_ms")]
        duration: Duration,
        outputs: Value,
        error: Option<String>,
    },
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
    fn event(&self, e: &Event);
}

/// Sends masked events to several sinks.
#[derive(Clone)]
pub struct Emitter {
    sinks: Arc<Vec<Arc<dyn Sink>>>,
    secrets: Secrets,
}

impl Emitter {
    pub fn new(sinks: Vec<Arc<dyn Sink>>, secrets: Secrets) -> Self {
        Emitter {
            sinks: Arc::new(sinks),
            secrets,
        }
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Masks every string of the event, then hands it to each sink.
    pub fn emit(&self, e: Event) {
        let masked = mask_event(e, &self.secrets);
        for s in self.sinks.iter() {
            s.event(&masked);
        }
    }

    pub fn log(&self, step: &str, line: impl Into<String>) {
        self.emit(Event::Log {
            step: step.to_string(),
            line: line.into(),
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

    pub fn warn(&self, message: impl Into<String>) {
        self.emit(Event::Warning {
            message: message.into(),
        });
    }
}

fn mask_event(e: Event, s: &Secrets) -> Event {
    let m = |x: String| s.mask(&x);
    let mo = |x: Option<String>| x.map(|v| s.mask(&v));
    match e {
        Event::RunStarted {
            run_id,
            workflow,
            file,
            inputs,
            started_at,
            dry_run,
            resumed,
        } => Event::RunStarted {
            run_id,
            workflow: m(workflow),
            file: m(file),
            inputs: s.mask_json(&inputs),
            started_at,
            dry_run,
            resumed: mo(resumed),
        },
        Event::StepStarted { step, name, kind } => Event::StepStarted {
            step: m(step),
            name: m(name),
            kind,
        },
        Event::Retry {
            step,
            attempt,
            error,
            wait,
        } => Event::Retry {
            step: m(step),
            attempt,
            error: m(error),
            wait,
        },
        Event::Poll {
            step,
            poll,
            observed,
            next_in,
        } => Event::Poll {
            step: m(step),
            poll,
            observed: m(observed),
            next_in,
        },
        Event::Log { step, line } => Event::Log {
            step: m(step),
            line: m(line),
        },
        Event::Progress {
            step,
            percent,
            bytes,
            total,
        } => Event::Progress {
            step: m(step),
            percent,
            bytes,
            total,
        },
        Event::DryRun {
            step,
            method,
            url,
            headers,
            body,
        } => Event::DryRun {
            step: m(step),
            method,
            url: m(url),
            headers: headers.into_iter().map(|(k, v)| (k, m(v))).collect(),
            body: mo(body),
        },
        Event::Artifact { step, artifact } => Event::Artifact {
            step: m(step),
            artifact: Artifact {
                path: m(artifact.path),
                source: mo(artifact.source),
                ..artifact
            },
        },
        Event::Warning { message } => Event::Warning {
            message: m(message),
        },
        Event::StepFinished {
            step,
            name,
            kind,
            status,
            attempts,
            duration,
            error,
            outputs,
        } => Event::StepFinished {
            step: m(step),
            name: m(name),
            kind,
            status,
            attempts,
            duration,
            error: mo(error),
            outputs: s.mask_json(&outputs),
        },
        Event::RunFinished {
            status,
            duration,
            outputs,
            error,
        } => Event::RunFinished {
            status,
            duration,
            outputs: s.mask_json(&outputs),
            error: mo(error),
        },
    }
}

/// A sink that keeps every event (tests, and reporters that write at the end).
#[derive(Default)]
pub struct Collect {
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
        // An artifact line as journals and events carried it before the enum.
        let old =
            r#"{"kind":"download","path":"out/a.zip","bytes":3,"sha256":"ab","finished_at":"t"}"#;
        let a: Artifact = serde_json::from_str(old).unwrap();
        assert_eq!(a.kind, ArtifactKind::Download);
        assert_eq!(serde_json::to_string(&a).unwrap(), old);
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
}
