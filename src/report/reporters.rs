//! The reporters of one `auditflow run`, assembled from the command line, and the files they
//! write when the run ends (evidence manifest, JSON report, JUnit XML).
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::{human::Human, json::JsonReport, junit::JUnit, manifest::ManifestSink};
use crate::events::{Event, Sink};
use crate::secrets::Secrets;
use crate::workflow::Workflow;

/// What the run prints as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Console {
    /// Lines for people (progress bars in a terminal when `CI` is unset).
    Human { verbose: bool },
    /// One JSON object per event on stdout, for machines.
    JsonLines,
}

/// What the user asked to be reported.
#[derive(Debug, Clone)]
pub(crate) struct ReportArgs {
    pub console: Console,
    /// `--report-json FILE`.
    pub report_json: Option<PathBuf>,
    /// `--junit FILE`.
    pub junit: Option<PathBuf>,
    /// Where the evidence manifest goes (the run's `out_dir`; None: the current directory).
    pub manifest_dir: Option<PathBuf>,
    /// A dry run writes no manifest (it produced no files).
    pub dry_run: bool,
    /// `--sign-key`: signs the manifest each time it is written (`manifest.json.asc`).
    pub signer: Option<Arc<crate::openpgp::sign::Signer>>,
}

/// A report file that could not be written (the run's exit code becomes at least 1).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("manifest signature: {0}")]
    Signature(String),
    #[error("run record in the state directory: {0}")]
    StateRecord(String),
    #[error("report: {0}")]
    Json(String),
    #[error("junit: {0}")]
    JUnit(String),
}

/// The sinks of one run and the files they write at its end.
pub(crate) struct Reporters {
    args: ReportArgs,
    console: Arc<dyn Sink>,
    json: Option<Arc<JsonReport>>,
    junit: Option<Arc<JUnit>>,
    manifest: Arc<ManifestSink>,
}

impl Reporters {
    /// The console reporter, the reports asked for, and the evidence manifest (always: it
    /// is written when the run produced files). The JSON report (which holds every step
    /// until the end) is collected only when asked for: the journal is the run's record.
    pub(crate) fn from_args(args: ReportArgs) -> Reporters {
        let console: Arc<dyn Sink> = match args.console {
            Console::JsonLines => Arc::new(JsonLines),
            Console::Human { verbose } => Arc::new(Human::new(draws_bars(), verbose)),
        };
        Reporters {
            json: args
                .report_json
                .as_ref()
                .map(|_| Arc::new(JsonReport::new())),
            junit: args.junit.as_ref().map(|_| Arc::new(JUnit::new())),
            manifest: Arc::new(ManifestSink::new()),
            console,
            args,
        }
    }

    /// Every sink, the console first.
    pub(crate) fn sinks(&self) -> Vec<Arc<dyn Sink>> {
        let mut sinks = vec![self.console.clone()];
        if let Some(r) = &self.json {
            sinks.push(r.clone());
        }
        if let Some(j) = &self.junit {
            sinks.push(j.clone());
        }
        sinks.push(self.manifest.clone());
        sinks
    }

    /// Writes the manifest (when the run produced files), the JSON report into the run's
    /// directory of the state directory (`run_dir`) and where asked, and the JUnit XML.
    /// Returns what could not be written, in that order.
    pub(crate) fn finish(&self, run_dir: Option<&Path>, secrets: &Secrets) -> Vec<ReportError> {
        let mut errors = Vec::new();
        if self.manifest.has_artifacts() && !self.args.dry_run {
            match self.write_manifest() {
                Ok(path) => errors.extend(self.sign_manifest(&path)),
                Err(e) => errors.push(ReportError::Manifest(secrets.mask(&e.to_string()))),
            }
        } else if self.args.signer.is_some() && !self.args.dry_run {
            crate::errln!(
                "  --sign-key: this run wrote no file, so no manifest.json was written or signed"
            );
        }
        if let (Some(r), Some(dir)) = (&self.json, run_dir) {
            if let Err(e) = r.write(&dir.join("report.json")) {
                errors.push(ReportError::StateRecord(e.to_string()));
            }
        }
        if let (Some(r), Some(path)) = (&self.json, &self.args.report_json) {
            if let Err(e) = r.write(path) {
                errors.push(ReportError::Json(e.to_string()));
            }
        }
        if let (Some(j), Some(path)) = (&self.junit, &self.args.junit) {
            if let Err(e) = j.write(path) {
                errors.push(ReportError::JUnit(e.to_string()));
            }
        }
        errors
    }

    /// Signs the manifest at `path` with `--sign-key`'s key, when one was given.
    fn sign_manifest(&self, path: &Path) -> Option<ReportError> {
        let signer = self.args.signer.as_ref()?;
        match signer.sign_file(path) {
            Ok(sig) => {
                if matches!(self.args.console, Console::Human { .. }) {
                    crate::outln!(
                        "  signed: {} (key {}; check with `gpg --verify {} {}`)",
                        sig.display(),
                        signer.fingerprint,
                        sig.display(),
                        path.display()
                    );
                }
                None
            }
            Err(e) => Some(ReportError::Signature(e.to_string())),
        }
    }

    /// Merges the run into the manifest of its output directory; tells people where it is.
    fn write_manifest(&self) -> Result<PathBuf, super::manifest::ManifestError> {
        let dir = self
            .args
            .manifest_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("."));
        let path = self.manifest.write(&dir)?;
        if matches!(self.args.console, Console::Human { .. }) {
            crate::outln!(
                "  evidence manifest: {} (check with `auditflow verify {}`)",
                path.display(),
                dir.display()
            );
        }
        Ok(path)
    }
}

/// The run's output directory: the `out_dir` input as given, else its default.
pub(crate) fn out_dir(wf: &Workflow, given: &BTreeMap<String, Value>) -> Option<PathBuf> {
    let v = given
        .get("out_dir")
        .or_else(|| wf.inputs.get("out_dir").and_then(|i| i.default.as_ref()))?;
    v.as_str().filter(|s| !s.is_empty()).map(PathBuf::from)
}

/// Whether progress bars are drawn: bars draw on stderr and lines go above them, so both
/// must be a terminal, and a CI job's log (`CI` set) gets plain lines instead.
pub(crate) fn draws_bars() -> bool {
    std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal()
        && std::env::var_os("CI").is_none()
}

/// JSON lines on stdout, one per event (`--log-format json`), each stamped with the time it
/// was written (`ts`, RFC 3339 UTC with milliseconds), so a CI log can be read as a timeline.
struct JsonLines;

impl Sink for JsonLines {
    fn event(&self, e: &Event) {
        if let Some(line) = json_line(e, chrono::Utc::now()) {
            crate::outln!("{line}");
        }
    }
}

/// One event as a JSON line with `ts` first.
fn json_line(e: &Event, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
    let serde_json::Value::Object(fields) = serde_json::to_value(e).ok()? else {
        return None;
    };
    let mut line = serde_json::Map::new();
    line.insert(
        "ts".into(),
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into(),
    );
    line.extend(fields);
    serde_json::to_string(&line).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_start_with_a_timestamp() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T06:38:00.5Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        let e = Event::Warning {
            message: "w".into(),
        };
        let line = json_line(&e, now).expect("line");
        assert!(
            line.starts_with(r#"{"ts":"2026-12-01T06:38:00.500Z","#),
            "line: {line}"
        );
        assert!(line.contains(r#""message":"w""#), "line: {line}");
    }
}
