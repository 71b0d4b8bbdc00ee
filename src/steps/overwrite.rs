//! Nothing a user already had is overwritten: before a step writes, every file it would
//! replace must be one this run wrote (resuming re-writes its own files) or one an earlier
//! run's evidence manifest records unchanged (a re-run of the same job into the same place).
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::{StepEnv, StepError};
use crate::events::{Event, Sink};

/// Tells whether a file is an artifact an earlier run recorded, with the size and SHA-256 it
/// has now (the manifest's record is the proof that the file is the tool's, not the user's).
pub type Recorded = Arc<dyn Fn(&Path) -> bool + Send + Sync>;

/// The run's view of which existing files it may replace. It is an event sink: every
/// artifact the run reports (replayed ones of an earlier process included) becomes its own.
pub struct OverwriteGuard {
    recorded: Recorded,
    written: Mutex<HashSet<PathBuf>>,
}

impl OverwriteGuard {
    /// A guard that also accepts the files `recorded` vouches for.
    pub fn new(recorded: Recorded) -> Self {
        OverwriteGuard {
            recorded,
            written: Mutex::default(),
        }
    }

    /// Fails naming the first of `paths` that exists and is not the run's to replace. Call
    /// it before the step writes anything (or sends a request whose answer it saves).
    pub async fn check<'p>(
        &self,
        paths: impl IntoIterator<Item = &'p Path>,
        env: &StepEnv<'_>,
    ) -> Result<(), StepError> {
        let mut claim = Vec::new();
        for path in paths {
            claim.push(key(path).to_string_lossy().into_owned());
            if std::fs::symlink_metadata(path).is_err() || self.owns(path, env) {
                continue;
            }
            return Err(StepError::WouldOverwrite {
                path: path.to_path_buf(),
            });
        }
        // Durable before any of these files is written: a crash (kill -9) between a file's
        // rename and its artifact record must not make the resumed run refuse its own file.
        if let (Some(ledger), false) = (env.ledger, claim.is_empty()) {
            ledger
                .journal
                .append_durable(&crate::state::Record::Claimed {
                    step: env.step.to_string(),
                    paths: claim,
                })
                .await?;
        }
        Ok(())
    }

    fn owns(&self, path: &Path, env: &StepEnv<'_>) -> bool {
        let k = key(path);
        let written = self
            .written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&k);
        // Any step's: a resumed `repeat` may save a page under another iteration's path.
        let journaled = env.ledger.is_some_and(|l| l.earlier.wrote(&k));
        written || journaled || (self.recorded)(path)
    }
}

impl Sink for OverwriteGuard {
    fn event(&self, e: &Event) {
        if let Event::Artifact { artifact, .. } = e {
            self.written
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key(Path::new(&artifact.path)));
        }
    }
}

/// A path made absolute (lexically: the file may not exist yet), to compare paths.
fn key(path: &Path) -> PathBuf {
    super::at_most_once::absolute(path)
}

/// Checks `paths` with the step's guard; none (`--overwrite`, `overwrite: true`) allows all.
pub async fn check<'p>(
    env: &StepEnv<'_>,
    paths: impl IntoIterator<Item = &'p Path>,
) -> Result<(), StepError> {
    match env.overwrite {
        Some(g) => g.check(paths, env).await,
        None => Ok(()),
    }
}
