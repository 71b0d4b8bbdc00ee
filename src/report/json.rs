//! The JSON run report (`--report-json`): run, inputs (masked), steps, artifacts.
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Value};

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
    steps: Spool,
    artifacts: Spool,
}

/// Compact JSON lines in an anonymous temporary file (or in memory when none can be made).
struct Spool {
    out: Option<BufWriter<File>>,
    mem: Vec<u8>,
    count: usize,
}

impl Spool {
    fn new() -> Spool {
        Spool {
            out: tempfile::tempfile().ok().map(|f| BufWriter::new(f)),
            mem: Vec::new(),
            count: 0,
        }
    }

    fn push(&mut self, v: &Value) {
        let mut line = serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec());
        line.push(b'\n');
        let spilled = self.out.as_mut().map(|w| w.write_all(&line));
        if !matches!(spilled, Some(Ok(()))) {
            self.out = None;
            self.mem.extend_from_slice(&line);
        }
        self.count += 1;
    }

    /// Writes the lines as the elements of a JSON array (`[` ... `]`), each on its own line.
    fn copy_array(&mut self, to: &mut impl Write) -> std::io::Result<()> {
        if self.count == 0 {
            return to.write_all(b"[]");
        }
        to.write_all(b"[")?;
        let mut first = true;
        let mut each = |line: &[u8], to: &mut dyn Write| -> std::io::Result<()> {
            to.write_all(if first { b"\n    " } else { b",\n    " })?;
            first = false;
            to.write_all(line)
        };
        if let Some(w) = self.out.as_mut() {
            w.flush()?;
            let mut f = w.get_ref().try_clone()?;
            f.seek(SeekFrom::Start(0))?;
            for line in BufReader::new(f).split(b'\n') {
                each(&line?, to)?;
            }
            // The clone shares the file offset: back to the end for later appends.
            w.get_mut().seek(SeekFrom::End(0))?;
        }
        for line in self.mem.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            each(line, to)?;
        }
        to.write_all(b"\n  ]")
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
                steps: Spool::new(),
                artifacts: Spool::new(),
            }),
        }
    }

    /// Writes the report (pretty JSON; steps and artifacts one per line) through a
    /// temporary file.
    pub(crate) fn write(&self, path: &Path) -> Result<(), crate::steps::StepError> {
        let failed = |source| crate::durable::WriteError {
            path: path.to_path_buf(),
            source,
        };
        let mut doc = match self.doc.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        crate::durable::create_private_dir(&dir).map_err(failed)?;
        let tmp = crate::durable::private_temp_file(&dir, ".auditflow-", ".tmp").map_err(failed)?;
        let mut out = BufWriter::new(tmp);
        write_doc(&mut doc, &mut out).map_err(failed)?;
        let tmp = out.into_inner().map_err(|e| failed(e.into_error()))?;
        tmp.as_file().sync_all().map_err(failed)?;
        tmp.persist(path).map_err(|e| failed(e.error))?;
        Ok(())
    }
}

/// The head object pretty, with the spooled arrays spliced in before its closing brace.
fn write_doc(doc: &mut Doc, out: &mut impl Write) -> std::io::Result<()> {
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
        let Doc {
            head: doc,
            steps,
            artifacts,
        } = &mut *guard;
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
            } => steps.push(&json!({
                "id": step, "name": name, "kind": kind, "status": status,
                "attempts": attempts, "duration_ms": duration.as_millis() as u64,
                "error": error, "outputs": outputs,
            })),
            Event::Artifact { step, artifact } => {
                let mut a = serde_json::to_value(artifact).unwrap_or(Value::Null);
                if let Some(o) = a.as_object_mut() {
                    o.insert("step".into(), json!(step));
                }
                artifacts.push(&a);
            }
            Event::Warning { message } => {
                if let Some(w) = doc.get_mut("warnings").and_then(Value::as_array_mut) {
                    w.push(json!(message));
                }
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
