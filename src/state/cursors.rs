//! Cursors kept between scheduled runs: one small JSON file per workflow name, cursor name and
//! rendered key, written atomically (temp file, fsync, rename) with mode 0600.
//!
//! ```text
//! <state-dir>/cursors/<workflow>/<cursor>/<key>.json   {"value": ..., "written_at": ..., "run_id": ...}
//! ```
//! Each path part is the name itself when it is short and plain (letters, digits, `.`, `_`,
//! `-`, not starting with `.`), else `sha256-<hex>` of it: no key can leave the directory.
//! A cursor holds positions (tokens, dates), never a secret: the engine refuses to write a
//! value that holds one.
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{RunState, StateDir, StateError};

/// A cursor as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredCursor {
    /// The position.
    pub value: Value,
    /// When it was written.
    pub written_at: DateTime<Utc>,
    /// The run that wrote it.
    pub run_id: String,
    /// The workflow, cursor and key it belongs to (for people reading the file).
    pub workflow: String,
    pub name: String,
    pub key: String,
}

impl StoredCursor {
    /// Cursor `id` at `value`, written now by run `run_id`.
    pub(crate) fn new(id: CursorId<'_>, value: &Value, run_id: &str) -> StoredCursor {
        StoredCursor {
            value: value.clone(),
            written_at: Utc::now(),
            run_id: run_id.to_string(),
            workflow: id.workflow.to_string(),
            name: id.name.to_string(),
            key: id.key.to_string(),
        }
    }
}

/// Which cursor: workflow name, cursor name, rendered key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CursorId<'a> {
    pub workflow: &'a str,
    pub name: &'a str,
    pub key: &'a str,
}

/// Longest path part kept as written.
const MAX_PLAIN: usize = 64;

/// A path part for `text`: itself when plain and short, else a digest.
fn part(text: &str) -> String {
    let plain = !text.is_empty()
        && text.len() <= MAX_PLAIN
        && !text.starts_with('.')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain {
        text.to_string()
    } else {
        format!("sha256-{}", crate::durable::sha256_hex(text.as_bytes()))
    }
}

impl StateDir {
    /// The file of cursor `id`.
    pub(crate) fn cursor_path(&self, id: CursorId<'_>) -> PathBuf {
        let key = if id.key.is_empty() { "default" } else { id.key };
        self.root
            .join("cursors")
            .join(part(id.workflow))
            .join(part(id.name))
            .join(format!("{}.json", part(key)))
    }

    /// The stored cursor `id`, if a run wrote one.
    pub(crate) fn read_cursor(&self, id: CursorId<'_>) -> Result<Option<StoredCursor>, StateError> {
        let path = self.cursor_path(id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::io(&path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path,
                line: 1,
                message: format!("the cursor file is not readable: {e}"),
            })
    }

    /// Writes cursor `id` durably: a crash leaves the old value or the new one, never a mix.
    #[cfg(test)]
    pub(crate) fn write_cursor(
        &self,
        id: CursorId<'_>,
        value: &Value,
        run_id: &str,
    ) -> Result<(), StateError> {
        self.store_cursor(&StoredCursor::new(id, value, run_id))
    }

    /// Writes `stored` durably: a crash leaves the old value or the new one, never a mix.
    pub(crate) fn store_cursor(&self, stored: &StoredCursor) -> Result<(), StateError> {
        let path = self.cursor_path(CursorId {
            workflow: &stored.workflow,
            name: &stored.name,
            key: &stored.key,
        });
        let text = serde_json::to_vec_pretty(stored).unwrap_or_default();
        super::write_small(&path, &text).map_err(|e| match e {
            StateError::Io { path, message } => StateError::Write { path, message },
            other => other,
        })?;
        if let Some(dir) = path.parent() {
            crate::durable::sync_dir(dir);
        }
        Ok(())
    }
}

impl StateDir {
    /// Every stored cursor, sorted by workflow, name and key (unreadable files are skipped:
    /// `cursors show` names the problem of one).
    pub(crate) fn list_cursors(&self) -> Vec<StoredCursor> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.join("cursors")];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(p),
                    Ok(t) if t.is_file() && p.extension().is_some_and(|x| x == "json") => {
                        if let Some(c) = std::fs::read(&p)
                            .ok()
                            .and_then(|b| serde_json::from_slice::<StoredCursor>(&b).ok())
                        {
                            out.push(c);
                        }
                    }
                    _ => {}
                }
            }
        }
        out.sort_by(|a, b| (&a.workflow, &a.name, &a.key).cmp(&(&b.workflow, &b.name, &b.key)));
        out
    }
}

impl RunState {
    /// Ends the run's active state without success: the next `auditflow run` of this
    /// workflow and inputs starts a new run instead of resuming this one. For a run that
    /// stopped with data left on purpose (`repeat.max_iterations`): its cursors say where
    /// the next run continues, and replaying this run's iterations would only cost time.
    pub(crate) async fn release(&self) -> Result<(), StateError> {
        match &self.hold {
            super::Hold::Dir { pointer, .. } => super::remove_if_present(pointer),
            super::Hold::Postgres(h) => h.leave_active(&self.run_id).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_directory_and_values_round_trip() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = StateDir::open(tmp.path()).expect("state dir");
        let id = |key| CursorId {
            workflow: "mimecast-siem-logs",
            name: "token",
            key,
        };
        let evil = dir.cursor_path(id("../../etc/passwd"));
        assert!(evil.starts_with(tmp.path().join("cursors")), "{evil:?}");
        assert!(evil
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("sha256-"));
        assert!(dir.cursor_path(id("MTA")).ends_with("token/MTA.json"));
        assert!(dir.cursor_path(id("")).ends_with("token/default.json"));
        assert!(dir.read_cursor(id("MTA")).unwrap().is_none());
        dir.write_cursor(id("MTA"), &serde_json::json!("abc"), "run-1")
            .unwrap();
        let got = dir.read_cursor(id("MTA")).unwrap().unwrap();
        assert_eq!(
            (got.value, got.run_id.as_str()),
            (serde_json::json!("abc"), "run-1")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.cursor_path(id("MTA")))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
