//! Everything a store holds, as one value: what `auditflow state copy` moves between a state
//! directory and the shared store (either way), so a team moves its pending runs, quota
//! budgets and cursors without exporting anything again.
//!
//! Copying into a store that already has state merges without losing what either side
//! counted: a run already there is kept, a key that already has an unfinished run keeps it
//! (and the copy says so), a quota ledger keeps the larger spend of the same window, and a
//! cursor keeps the newer position.
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::cursors::StoredCursor;
use super::lifecycle::Completion;
use super::{Replay, StateDir, StateError};

/// One run: its journal lines (the header first) and what listing needs.
pub(crate) struct RunCopy {
    pub run_id: String,
    pub key: String,
    pub started_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    pub lines: Vec<String>,
}

/// The contents of a store.
#[derive(Default)]
pub(crate) struct Snapshot {
    pub runs: Vec<RunCopy>,
    /// Run key → its unfinished run.
    pub active: Vec<(String, String)>,
    pub completions: Vec<(String, Completion)>,
    /// Run key → (run, reason) of a terminal failure not yet reported.
    pub terminal: Vec<(String, String, String)>,
    /// (budget name, key id, ledger as JSON).
    pub ledgers: Vec<(String, String, Value)>,
    pub cursors: Vec<StoredCursor>,
}

/// What a copy did.
#[derive(Debug, Default)]
pub(crate) struct CopyCounts {
    pub runs: usize,
    pub runs_present: usize,
    pub unfinished: usize,
    pub ledgers: usize,
    pub cursors: usize,
    /// Keys whose unfinished run differs between the two stores (the target's is kept).
    pub conflicts: Vec<String>,
}

impl RunCopy {
    /// A run from its replay and the text it was read from.
    pub(crate) fn of(replay: &Replay, text: &str) -> RunCopy {
        RunCopy {
            run_id: replay.header.run_id.clone(),
            key: replay.header.key.clone(),
            started_at: replay.header.started_at,
            last_at: replay.last_at,
            lines: text
                .lines()
                .take(replay.records)
                .map(str::to_string)
                .collect(),
        }
    }
}

/// The ledger that counts more of the same window: `a` or `b` (as stored JSON).
pub(crate) fn larger_ledger(a: &Value, b: &Value) -> Value {
    let spent = |v: &Value| v.get("spent").and_then(Value::as_u64).unwrap_or(0);
    let window = |v: &Value| v.get("window_start").cloned().unwrap_or(Value::Null);
    let newer_window = window(b).as_str() > window(a).as_str();
    if newer_window || (window(a) == window(b) && spent(b) > spent(a)) {
        b.clone()
    } else {
        a.clone()
    }
}

impl StateDir {
    /// Everything in the directory. Refused while a process holds one of its runs.
    pub(crate) fn snapshot(&self) -> Result<Snapshot, StateError> {
        let mut snap = Snapshot::default();
        for (pointer, id) in self.active_pointers() {
            let key = stem(&pointer);
            let _lock = self.lock(&self.root.join("active"), &key)?;
            snap.active.push((key, id));
        }
        for entry in read_dir(&self.root.join("active")) {
            let key = stem(&entry);
            match entry.extension().and_then(|x| x.to_str()) {
                Some("done") => {
                    if let Some(c) = Completion::read(&entry.with_extension("json")) {
                        snap.completions.push((key, c));
                    }
                }
                Some("terminal") => {
                    if let Some((run, reason)) = read_terminal(&entry) {
                        snap.terminal.push((key, run, reason));
                    }
                }
                _ => {}
            }
        }
        for dir in read_dir(&self.root.join("runs")) {
            let id = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let path = self.journal_path(&id);
            if !path.exists() {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| StateError::io(&path, e))?;
            let replay = Replay::parse(text.as_bytes(), &path)?;
            snap.runs.push(RunCopy::of(&replay, &text));
        }
        let budgets = self.root.join("budgets");
        for name_dir in read_dir(&budgets).into_iter().filter(|p| p.is_dir()) {
            let name = stem(&name_dir);
            for file in read_dir(&name_dir) {
                if file.extension().is_some_and(|x| x == "json") {
                    let bytes = std::fs::read(&file).map_err(|e| StateError::io(&file, e))?;
                    let value: Value =
                        serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                            path: file.clone(),
                            line: 1,
                            message: e.to_string(),
                        })?;
                    snap.ledgers.push((name.clone(), stem(&file), value));
                }
            }
        }
        snap.cursors = self.list_cursors();
        Ok(snap)
    }

    /// Adds `snap` to the directory (see the module's merge rules).
    pub(crate) fn absorb(&self, snap: Snapshot) -> Result<CopyCounts, StateError> {
        let mut counts = CopyCounts::default();
        let active = self.root.join("active");
        super::create_private_dir(&active)?;
        for run in &snap.runs {
            let path = self.journal_path(&run.run_id);
            if path.exists() {
                counts.runs_present += 1;
                continue;
            }
            super::create_private_dir(&self.run_dir(&run.run_id))?;
            let mut text = run.lines.join("\n");
            text.push('\n');
            super::write_small(&path, text.as_bytes())?;
            counts.runs += 1;
        }
        for (key, id) in &snap.active {
            let _lock = self.lock(&active, key)?;
            let pointer = active.join(format!("{key}.json"));
            match self.read_pointer(&pointer)? {
                Some(theirs) if theirs != *id => counts.conflicts.push(key.clone()),
                Some(_) => {}
                None => {
                    let text = serde_json::to_vec(&super::Pointer { run_id: id.clone() })
                        .unwrap_or_default();
                    super::write_small(&pointer, &text)?;
                    counts.unfinished += 1;
                }
            }
        }
        for (key, done) in &snap.completions {
            let pointer = active.join(format!("{key}.json"));
            if Completion::read(&pointer).is_none() {
                Completion::write(&pointer, &done.run_id, &done.outputs)?;
            }
        }
        for (key, run, reason) in &snap.terminal {
            let text = serde_json::to_vec(&super::TerminalEnd {
                run_id: run.clone(),
                reason: reason.clone(),
            })
            .unwrap_or_default();
            super::write_small(&active.join(format!("{key}.terminal")), &text)?;
        }
        self.absorb_ledgers(&snap.ledgers, &mut counts)?;
        for c in &snap.cursors {
            let id = super::cursors::CursorId {
                workflow: &c.workflow,
                name: &c.name,
                key: &c.key,
            };
            let newer = self
                .read_cursor(id)?
                .is_none_or(|mine| mine.written_at < c.written_at);
            if newer {
                self.store_cursor(c)?;
                counts.cursors += 1;
            }
        }
        Ok(counts)
    }

    fn absorb_ledgers(
        &self,
        ledgers: &[(String, String, Value)],
        counts: &mut CopyCounts,
    ) -> Result<(), StateError> {
        for (name, key_id, value) in ledgers {
            let dir = self.root.join("budgets").join(name);
            super::create_private_dir(&self.root.join("budgets"))?;
            super::create_private_dir(&dir)?;
            let path = dir.join(format!("{key_id}.json"));
            let merged = match std::fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                    Ok(mine) => larger_ledger(&mine, value),
                    Err(_) => value.clone(),
                },
                Err(_) => value.clone(),
            };
            let text = serde_json::to_vec_pretty(&merged).unwrap_or_default();
            super::write_small(&path, &text)?;
            counts.ledgers += 1;
        }
        Ok(())
    }
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_dir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn read_terminal(path: &Path) -> Option<(String, String)> {
    let bytes = std::fs::read(path).ok()?;
    let end: super::TerminalEnd = serde_json::from_slice(&bytes).ok()?;
    Some((end.run_id, end.reason))
}
