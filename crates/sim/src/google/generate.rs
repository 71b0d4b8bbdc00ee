//! Background encryption of an export's mbox files once it leaves PENDING.
use std::path::PathBuf;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::Rng as _;
use tokio::sync::watch;

use super::crypto::{self, RecipientKey};
use super::export::{remove_files, Export, FileInfo, Phase};
use super::mbox::{HashingReader, MboxReader, MboxSpec};
use super::{lock, Db, GoogleSim};

impl GoogleSim {
    /// Starts encrypting the files of export `e` in the background.
    pub(super) fn start_generation(
        self: &Arc<Self>,
        e: &Export,
        key: Arc<RecipientKey>,
    ) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        let jobs: Vec<(MboxSpec, PathBuf, String)> = (0..self.cfg.google_files_per_export)
            .map(|n| {
                let token = file_token();
                let path = self
                    .files_dir
                    .path()
                    .join(format!("{}-{n}-{}.gpg", e.id, &token[..8]));
                (e.mbox_spec(n, self.cfg.google_file_size), path, token)
            })
            .collect();
        let sim = Arc::clone(self);
        let id = e.id;
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(move || generate_files(&key, jobs))
                .await
                .unwrap_or_else(|e| Err(GenerateError::Task(e)));
            sim.finish_generation(id, result);
            let _ = tx.send(true);
        });
        rx
    }

    pub(super) fn finish_generation(&self, id: u64, result: Result<Vec<FileInfo>, GenerateError>) {
        let now = self.now();
        let mut st = lock(&self.state);
        let Db { exports, files, .. } = &mut *st;
        let Some(e) = exports.get_mut(&id) else {
            return;
        };
        if !matches!(e.phase, Phase::Generating(_)) {
            return;
        }
        e.completed = Some(now);
        e.updated = now;
        match result {
            Ok(generated) => {
                for (n, f) in generated.iter().enumerate() {
                    files.insert(f.token.clone(), (id, n as u32));
                }
                e.files = generated;
                e.phase = Phase::Completed;
            }
            Err(msg) => {
                tracing::warn!(request_id = id, "google sim: export failed: {msg}");
                e.phase = Phase::Error;
            }
        }
    }
}

/// Why an export's files could not be made (the export ends in `ERROR`).
#[derive(Debug, thiserror::Error)]
pub(super) enum GenerateError {
    #[error(transparent)]
    Encrypt(#[from] crypto::EncryptError),
    #[error("cannot rename {}: {source}", .path.display())]
    Rename {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the encryption task failed: {0}")]
    Task(tokio::task::JoinError),
}

/// Encrypts every file of an export; on failure removes what was written.
pub(super) fn generate_files(
    key: &RecipientKey,
    jobs: Vec<(MboxSpec, PathBuf, String)>,
) -> Result<Vec<FileInfo>, GenerateError> {
    let mut done: Vec<FileInfo> = Vec::new();
    for (spec, path, token) in jobs {
        let partial = path.with_extension("partial");
        let mut reader = HashingReader::new(MboxReader::new(spec));
        let result = crypto::encrypt_to_file(key, &mut reader, &partial)
            .map_err(GenerateError::from)
            .and_then(|()| {
                std::fs::rename(&partial, &path).map_err(|source| GenerateError::Rename {
                    path: partial.clone(),
                    source,
                })
            });
        if let Err(e) = result {
            let _ = std::fs::remove_file(&partial);
            remove_files(done.into_iter().map(|f| f.path).collect());
            return Err(e);
        }
        let (plaintext_sha256, _len) = reader.finish();
        done.push(FileInfo {
            token,
            path,
            plaintext_sha256,
        });
    }
    Ok(done)
}

/// An opaque, URL-safe file token like the page's `OQAAABW3Z2Olwk...`.
pub(super) fn file_token() -> String {
    let mut buf = [0u8; 42];
    rand::thread_rng().fill(&mut buf[..]);
    format!("OQAAAB{}", URL_SAFE_NO_PAD.encode(buf))
}
