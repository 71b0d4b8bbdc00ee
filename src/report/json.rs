//! The JSON run report (`--report-json`): run, inputs (masked), steps, artifacts.
use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::events::{Event, Sink};

/// Collects events and writes one JSON document at the end of the run.
#[derive(Default)]
pub(crate) struct JsonReport {
    doc: Mutex<Value>,
}

impl JsonReport {
    pub(crate) fn new() -> Self {
        JsonReport {
            doc: Mutex::new(json!({
                "tool": {"name": "auditflow", "version": env!("CARGO_PKG_VERSION")},
                "steps": [],
                "artifacts": [],
                "warnings": [],
            })),
        }
    }

    /// The report so far.
    pub(crate) fn value(&self) -> Value {
        self.doc.lock().map(|d| d.clone()).unwrap_or(Value::Null)
    }

    /// Writes the report (pretty JSON) through a temporary file.
    pub(crate) fn write(&self, path: &Path) -> Result<(), crate::steps::StepError> {
        let text = serde_json::to_vec_pretty(&self.value()).map_err(|e| {
            crate::steps::StepError::Serialize {
                what: "report",
                source: e,
            }
        })?;
        Ok(crate::durable::write_private(path, &text)?)
    }
}

impl Sink for JsonReport {
    fn event(&self, e: &Event) {
        let Ok(mut doc) = self.doc.lock() else {
            return;
        };
        let push = |doc: &mut Value, key: &str, v: Value| {
            if let Some(a) = doc.get_mut(key).and_then(Value::as_array_mut) {
                a.push(v);
            }
        };
        match e {
            Event::RunStarted {
                run_id,
                workflow,
                file,
                inputs,
                started_at,
                dry_run,
                resumed,
            } => {
                doc["run_id"] = json!(run_id);
                if let Some(r) = resumed {
                    doc["resumed"] = json!(r);
                }
                doc["workflow"] = json!({"name": workflow, "file": file});
                doc["inputs"] = inputs.clone();
                doc["started_at"] = json!(started_at);
                doc["dry_run"] = json!(dry_run);
            }
            Event::StepFinished {
                step,
                name,
                kind,
                status,
                attempts,
                duration,
                error,
                outputs,
                label,
            } => {
                let mut s = json!({
                    "id": step, "name": name, "kind": kind, "status": status,
                    "attempts": attempts, "duration_ms": duration.as_millis() as u64,
                    "error": error, "outputs": outputs,
                });
                if let Some(l) = label {
                    s["label"] = json!(l);
                }
                push(&mut doc, "steps", s);
            }
            Event::Artifact { step, artifact } => {
                let mut a = serde_json::to_value(artifact).unwrap_or(Value::Null);
                if let Some(o) = a.as_object_mut() {
                    o.insert("step".into(), json!(step));
                }
                push(&mut doc, "artifacts", a);
            }
            Event::Warning { message } => push(&mut doc, "warnings", json!(message)),
            Event::RunFinished {
                status,
                duration,
                outputs,
                error,
            } => {
                doc["status"] = json!(status);
                doc["duration_ms"] = json!(duration.as_millis() as u64);
                doc["outputs"] = outputs.clone();
                doc["error"] = json!(error);
                doc["finished_at"] = json!(chrono::Utc::now().to_rfc3339());
            }
            _ => {}
        }
    }
}
