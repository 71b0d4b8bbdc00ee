//! The JSON run report (`--report-json`): run, inputs (masked), steps, artifacts.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::manifest::CustodianRecord;
use super::spool::{write_report, Spool};
use super::step_record::{self, StepRecord};
use crate::events::{Event, Sink};

/// Collects events and writes one JSON document at the end of the run. Steps and artifacts
/// (one per loop item and file: 100,000s in a long run) go to an unlinked temporary file as
/// they come, one compact line each, and are copied into the document when it is written:
/// memory stays flat whatever the number of steps.
pub(crate) struct JsonReport {
    doc: Mutex<Doc>,
}

struct Doc {
    /// Everything but the spooled arrays.
    head: Value,
    steps: Spooled,
    artifacts: Spooled,
    /// Requests and retries of the steps still running, attached when each ends.
    traffic: BTreeMap<String, StepRecord>,
}

/// Compact JSON values as the elements of an array, one per line.
struct Spooled(Spool);

impl Spooled {
    fn push(&mut self, v: &Value) {
        let mut entry = if self.0.count() == 0 {
            b"\n    ".to_vec()
        } else {
            b",\n    ".to_vec()
        };
        if serde_json::to_writer(&mut entry, v).is_err() {
            entry.extend_from_slice(b"null");
        }
        self.0.push(&entry);
    }

    /// `[` ... `]`
    fn copy_array(&mut self, to: &mut dyn Write) -> std::io::Result<()> {
        to.write_all(b"[")?;
        self.0.copy_to(to)?;
        to.write_all(if self.0.count() == 0 { b"]" } else { b"\n  ]" })
    }
}

impl Default for JsonReport {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonReport {
    pub(crate) fn new() -> Self {
        JsonReport {
            doc: Mutex::new(Doc {
                head: json!({
                    "tool": {"name": "auditflow", "version": env!("CARGO_PKG_VERSION")},
                    "warnings": [],
                }),
                steps: Spooled(Spool::new()),
                artifacts: Spooled(Spool::new()),
                traffic: BTreeMap::new(),
            }),
        }
    }

    /// Writes the report (pretty JSON; steps and artifacts one per line) through a
    /// temporary file.
    pub(crate) fn write(&self, path: &Path) -> Result<(), crate::steps::StepError> {
        let mut doc = match self.doc.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        Ok(write_report(path, |out| write_doc(&mut doc, out))?)
    }
}

/// The head object pretty, with the spooled arrays spliced in before its closing brace.
fn write_doc(doc: &mut Doc, out: &mut dyn Write) -> std::io::Result<()> {
    let head = serde_json::to_vec_pretty(&doc.head).map_err(std::io::Error::other)?;
    // `{ ... \n}`: everything up to the closing brace.
    let body = head.strip_suffix(b"\n}").unwrap_or(b"{");
    out.write_all(body)?;
    out.write_all(if body.len() > 1 {
        b",\n  \"steps\": "
    } else {
        b"\n  \"steps\": "
    })?;
    doc.steps.copy_array(out)?;
    out.write_all(b",\n  \"artifacts\": ")?;
    doc.artifacts.copy_array(out)?;
    out.write_all(b"\n}\n")
}

impl Sink for JsonReport {
    fn event(&self, e: &Event) {
        let Ok(mut guard) = self.doc.lock() else {
            return;
        };
        guard.observe(e);
    }
}

impl Doc {
    /// Adds what the event says to the report: the run's start and end, each step as it
    /// ends (with its requests and retries), artifacts, warnings, partial results and
    /// custodians.
    fn observe(&mut self, e: &Event) {
        if step_record::observe(&mut self.traffic, e) {
            return;
        }
        let doc = &mut self.head;
        match e {
            Event::RunStarted { .. } => run_started(doc, e),
            Event::StepFinished { .. } => self.step_finished(e),
            Event::Artifact { step, artifact } => {
                let mut a = serde_json::to_value(artifact).unwrap_or(Value::Null);
                if let Some(o) = a.as_object_mut() {
                    o.insert("step".into(), json!(step));
                }
                self.artifacts.push(&a);
            }
            Event::Warning { message } => {
                if let Some(w) = doc.get_mut("warnings").and_then(Value::as_array_mut) {
                    w.push(json!(message));
                }
            }
            Event::Partial { step, problems } => {
                doc["partial"][step.as_str()] = json!(problems);
            }
            Event::Custodians {
                step,
                vendor,
                counts,
            } => {
                doc["custodians"][step.as_str()] = json!(CustodianRecord {
                    vendor: vendor.clone(),
                    counts: counts.clone(),
                });
            }
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

    /// A step's entry, with the requests and retries seen while it ran.
    fn step_finished(&mut self, e: &Event) {
        let Event::StepFinished {
            step,
            name,
            kind,
            status,
            attempts,
            duration,
            error,
            outputs,
            label,
        } = e
        else {
            return;
        };
        let mut s = json!({
            "id": step, "name": name, "kind": kind, "status": status,
            "attempts": attempts, "duration_ms": duration.as_millis() as u64,
            "error": error, "outputs": outputs,
        });
        if let Some(l) = label {
            s["label"] = json!(l);
        }
        if let Some(t) = self.traffic.remove(step) {
            if let (Some(o), Ok(Value::Object(t))) = (s.as_object_mut(), serde_json::to_value(t)) {
                o.extend(t);
            }
        }
        self.steps.push(&s);
    }
}

/// The run's fields of the report from its start.
fn run_started(doc: &mut Value, e: &Event) {
    let Event::RunStarted {
        run_id,
        workflow,
        file,
        inputs,
        started_at,
        dry_run,
        resumed,
        files,
    } = e
    else {
        return;
    };
    doc["run_id"] = json!(run_id);
    if let Some(r) = resumed {
        doc["resumed"] = json!(r);
    }
    doc["workflow"] = json!({"name": workflow, "file": file});
    if !files.is_empty() {
        doc["workflow"]["files"] = json!(files);
    }
    doc["inputs"] = inputs.clone();
    doc["started_at"] = json!(started_at.to_rfc3339());
    doc["dry_run"] = json!(dry_run);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::StepStatus;
    use crate::workflow::plan::StepKind;
    use std::time::Duration;

    fn finished(step: &str) -> Event {
        Event::StepFinished {
            step: step.into(),
            name: step.into(),
            kind: StepKind::Call,
            status: StepStatus::Succeeded,
            attempts: 1,
            duration: Duration::from_millis(3),
            error: None,
            outputs: json!({"status": 200}),
            label: None,
        }
    }

    #[test]
    fn spooled_steps_come_back_in_order_in_a_valid_document() {
        let r = JsonReport::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("r.json");
        r.write(&path).expect("write empty");
        let empty: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(empty["steps"], json!([]));
        for i in 0..1000 {
            r.event(&finished(&format!("loop[{i}].get")));
        }
        r.event(&Event::Warning {
            message: "w".into(),
        });
        r.write(&path).expect("write");
        // Written twice (state directory and --report-json): the same both times.
        r.event(&finished("after"));
        r.write(&path).expect("write again");
        let doc: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let steps = doc["steps"].as_array().expect("steps");
        assert_eq!(steps.len(), 1001);
        assert_eq!(steps[7]["id"], "loop[7].get");
        assert_eq!(steps[1000]["id"], "after");
        assert_eq!(doc["warnings"], json!(["w"]));
        assert_eq!(doc["artifacts"], json!([]));
        assert_eq!(doc["tool"]["name"], "auditflow");
    }
}
