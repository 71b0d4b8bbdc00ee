//! What `auditflow decrypt` reports: a byte bar per file in a terminal, a line per decrypted
//! file and the evidence manifest, fed with the run events a one-step workflow would have
//! emitted.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar};
use serde_json::Value;

use super::manifest::ManifestSink;
use super::reporters::ReportError;
use crate::events::{Artifact, ArtifactKind, Emitter, Event, RunStatus};
use crate::secrets::Secrets;
use crate::steps::decrypt::DecryptedFile;

/// The step name decrypted files are recorded under in the manifest.
const STEP: &str = "decrypt";

/// The record of one `auditflow decrypt` invocation.
pub(crate) struct DecryptReport {
    emitter: Emitter,
    manifest: Arc<ManifestSink>,
    /// In a terminal: a byte bar per file being decrypted, lines printed above them.
    bars: Option<MultiProgress>,
}

impl DecryptReport {
    /// Starts the record: the key's ids and the encrypted files stand in for the inputs.
    pub(crate) fn start(key_ids: Vec<String>, files: &[PathBuf]) -> DecryptReport {
        let manifest = Arc::new(ManifestSink::new());
        let emitter = Emitter::new(vec![manifest.clone()], Secrets::new());
        let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        emitter.emit(Event::RunStarted {
            run_id: uuid::Uuid::new_v4().to_string(),
            workflow: "auditflow decrypt".into(),
            file: String::new(),
            inputs: serde_json::json!({"key": key_ids, "files": files}),
            started_at: chrono::Utc::now(),
            dry_run: false,
            resumed: None,
            files: vec![],
        });
        DecryptReport {
            emitter,
            manifest,
            bars: super::reporters::draws_bars().then(MultiProgress::new),
        }
    }

    /// A byte bar for decrypting `input` (hidden outside a terminal): feed it the decrypt's
    /// progress with [`show_progress`], clear it when the file is done.
    pub(crate) fn bar(&self, input: &Path) -> ProgressBar {
        let Some(m) = &self.bars else {
            return ProgressBar::hidden();
        };
        let size = std::fs::metadata(input).map_or(0, |m| m.len());
        let pb = m.add(ProgressBar::new(size));
        pb.set_style(super::human::byte_style(true));
        pb.set_prefix(format!("decrypt {}", input.display()));
        pb
    }

    fn println(&self, line: &str) {
        match &self.bars {
            Some(m) => {
                let _ = m.println(line);
            }
            None => crate::outln!("{line}"),
        }
    }

    /// Prints `input -> output (bytes, sha256)` and records the plaintext as an artifact.
    pub(crate) fn decrypted(&self, input: &Path, d: &DecryptedFile) {
        self.println(&format!(
            "{} -> {} ({} bytes, sha256 {})",
            input.display(),
            d.path.display(),
            d.bytes,
            d.sha256
        ));
        self.emitter.emit(Event::Artifact {
            step: STEP.into(),
            artifact: Artifact {
                kind: ArtifactKind::Decrypt,
                path: d.path.display().to_string(),
                bytes: d.bytes,
                sha256: d.sha256,
                source: Some(d.input.display().to_string()),
                source_sha256: Some(d.input_sha256),
                md5: None,
                request_id: None,
                finished_at: chrono::Utc::now(),
            },
        });
    }

    /// Ends the record and, when any file was decrypted, merges it into `out/manifest.json`.
    pub(crate) fn finish(self, status: RunStatus, out: &Path) -> Result<(), ReportError> {
        self.emitter.emit(Event::RunFinished {
            status,
            duration: Duration::ZERO,
            outputs: Value::Null,
            error: None,
        });
        if self.manifest.has_artifacts() {
            self.manifest
                .write(out)
                .map_err(|e| ReportError::Manifest(e.to_string()))?;
        }
        Ok(())
    }
}

/// Shows a decrypt's `(bytes read, input size)` on its bar.
pub(crate) fn show_progress(bar: &ProgressBar, read: u64, size: u64) {
    bar.set_length(size);
    bar.set_position(read);
}
