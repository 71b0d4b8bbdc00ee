//! Where a run stands beside its journal: who holds it now, what sets two runs apart, and
//! the remembered success of a one-shot workflow.
//!
//! A one-shot workflow (`lifecycle: one-shot`: an export with fixed inputs) must not export
//! again because an hourly schedule runs it again after it succeeded: its success is kept as
//! `active/<key>.done` (written before the run's pointer goes, so a crash between the two
//! leaves the run either unfinished or done, never forgotten), and later runs with the same
//! identity report it and send nothing.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{RunHeader, StateError};

/// The remembered success of a one-shot workflow's run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Completion {
    /// The run that succeeded.
    pub run_id: String,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Its workflow outputs, secrets masked.
    #[serde(default)]
    pub outputs: Value,
}

fn done_path(pointer: &Path) -> PathBuf {
    pointer.with_extension("done")
}

impl Completion {
    /// The completion kept beside the run pointer `pointer`, if any.
    pub(crate) fn read(pointer: &Path) -> Option<Completion> {
        let bytes = std::fs::read(done_path(pointer)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Remembers that `run_id` succeeded (atomically, before the pointer is removed).
    pub(crate) fn write(pointer: &Path, run_id: &str, outputs: &Value) -> Result<(), StateError> {
        let done = Completion {
            run_id: run_id.to_string(),
            finished_at: Utc::now(),
            outputs: outputs.clone(),
        };
        let path = done_path(pointer);
        let text = serde_json::to_vec(&done).unwrap_or_default();
        crate::durable::write_atomic(&path, &text).map_err(|e| StateError::io(&path, e))
    }

    /// Forgets the completion (`--fresh`).
    pub(crate) fn remove(pointer: &Path) -> Result<(), StateError> {
        let path = done_path(pointer);
        super::remove_if_present(&path)
    }
}

/// Who holds a run lock: written into the lock file by its holder.
pub(super) fn write_holder(lock: &mut File) -> std::io::Result<()> {
    let text = holder_text();
    lock.set_len(0)?;
    lock.seek(SeekFrom::Start(0))?;
    lock.write_all(text.as_bytes())?;
    lock.flush()
}

/// Who this process is, as a run's holder: pid, host, CI job, since when.
pub(crate) fn holder_text() -> String {
    format!(
        "pid {} on {}{} since {}",
        std::process::id(),
        host_name(),
        ci_job()
            .map(|url| format!(" (CI job {url})"))
            .unwrap_or_default(),
        Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// What the holder of a lock wrote about itself ([`write_holder`]).
pub(crate) fn read_holder(lock: &mut File) -> String {
    let mut text = String::new();
    let read =
        lock.seek(SeekFrom::Start(0)).is_ok() && lock.take(512).read_to_string(&mut text).is_ok();
    let text = text.trim();
    if read && !text.is_empty() {
        text.chars().filter(|c| !c.is_control()).collect()
    } else {
        "a process that has not said who it is".into()
    }
}

/// This machine's name, as `hostname` prints it.
pub(crate) fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unnamed host".into())
}

/// The URL of the CI job this process runs in, from the variables GitHub Actions and GitLab
/// CI set.
pub(crate) fn ci_job() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(url) = var("CI_JOB_URL") {
        return Some(url);
    }
    let (server, repo, run) = (
        var("GITHUB_SERVER_URL")?,
        var("GITHUB_REPOSITORY")?,
        var("GITHUB_RUN_ID")?,
    );
    Some(format!("{server}/{repo}/actions/runs/{run}"))
}

/// Whether `a` and `b` are runs of the same workflow: the same identity, or (a run of a
/// release before identities) a recorded path ending with the other's identity path.
pub(crate) fn same_workflow(a: &RunHeader, b: &RunHeader) -> bool {
    match (&a.identity, &b.identity) {
        (Some(x), Some(y)) => x.path == y.path,
        (Some(x), None) => x.matches_legacy_path(&b.workflow),
        (None, Some(y)) => y.matches_legacy_path(&a.workflow),
        (None, None) => a.workflow == b.workflow,
    }
}

/// What sets run `theirs` apart from `ours` (both headers, inputs masked): the workflow, the
/// shard, and each input that differs, as `input `user`: "alice" there, "bob" here`. Empty
/// when they are the same run.
pub(crate) fn differences(theirs: &RunHeader, ours: &RunHeader) -> Vec<String> {
    let mut out = Vec::new();
    if !same_workflow(theirs, ours) {
        let name = |h: &RunHeader| {
            h.identity
                .as_ref()
                .map(super::identity::WorkflowIdentity::describe)
                .unwrap_or_else(|| h.workflow.clone())
        };
        out.push(format!(
            "it is a run of {}, this command runs {}",
            name(theirs),
            name(ours)
        ));
    }
    if theirs.shard != ours.shard {
        let s = |x: &Option<String>| x.clone().unwrap_or_else(|| "none".into());
        out.push(format!(
            "shard {} there, {} here",
            s(&theirs.shard),
            s(&ours.shard)
        ));
    }
    out.extend(input_differences(&theirs.inputs, &ours.inputs));
    out
}

/// Each input whose value differs between `theirs` and `ours`.
fn input_differences(theirs: &Value, ours: &Value) -> Vec<String> {
    let shown = |v: Option<&Value>| v.map(Value::to_string).unwrap_or_else(|| "unset".into());
    differing_inputs(theirs, ours)
        .into_iter()
        .map(|k| {
            format!(
                "input `{k}`: {} there, {} here",
                shown(theirs.get(&k)),
                shown(ours.get(&k))
            )
        })
        .collect()
}

/// The names of the inputs whose values differ between `theirs` and `ours`, sorted.
pub(crate) fn differing_inputs(theirs: &Value, ours: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (t, o) = (
        theirs.as_object().unwrap_or(&empty),
        ours.as_object().unwrap_or(&empty),
    );
    let mut names: Vec<String> = t
        .keys()
        .chain(o.keys())
        .filter(|k| t.get(*k) != o.get(*k))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::identity::{Anchor, WorkflowIdentity};

    fn header(path: &str, inputs: Value) -> RunHeader {
        RunHeader {
            version: 1,
            run_id: "r".into(),
            key: "k".into(),
            workflow: format!("/builds/x/{path}"),
            workflow_name: "w".into(),
            identity: Some(WorkflowIdentity {
                path: path.into(),
                anchor: Anchor::Repository,
            }),
            files: vec![],
            inputs,
            shard: None,
            started_at: Utc::now(),
            auditflow: "test".into(),
        }
    }

    #[test]
    fn differences_name_each_input_and_the_workflow() {
        let a = header("w/a.yaml", serde_json::json!({"user": "alice", "days": 7}));
        let b = header("w/a.yaml", serde_json::json!({"user": "bob", "days": 7}));
        assert_eq!(
            differences(&a, &b),
            vec!["input `user`: \"alice\" there, \"bob\" here".to_string()]
        );
        assert!(differences(&a, &a).is_empty());
        let c = header("w/c.yaml", serde_json::json!({"user": "alice", "days": 7}));
        assert_eq!(
            differences(&a, &c),
            vec![
                "it is a run of w/a.yaml (in its git repository), this command runs w/c.yaml (in its git repository)"
                    .to_string()
            ]
        );
        let mut legacy = a.clone();
        legacy.identity = None;
        assert!(
            differences(&legacy, &a).is_empty(),
            "a legacy run of the same file"
        );
    }

    #[test]
    fn a_completion_is_remembered_and_forgotten() {
        let d = tempfile::tempdir().expect("tempdir");
        let pointer = d.path().join("k.json");
        assert!(Completion::read(&pointer).is_none());
        Completion::write(&pointer, "run-1", &serde_json::json!({"n": 1})).expect("write");
        let done = Completion::read(&pointer).expect("remembered");
        assert_eq!(done.run_id, "run-1");
        assert_eq!(done.outputs["n"], 1);
        Completion::remove(&pointer).expect("remove");
        assert!(Completion::read(&pointer).is_none());
    }

    #[test]
    fn the_lock_says_who_holds_it() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(d.path().join("k.lock"))
            .expect("open");
        write_holder(&mut f).expect("write");
        let text = read_holder(&mut f);
        assert!(
            text.starts_with(&format!("pid {} on ", std::process::id())),
            "{text}"
        );
    }
}
