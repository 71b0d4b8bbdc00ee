//! The validated plan: each step typed by the one action it does, `uses` targets resolved.
//!
//! `model` is the YAML as written (eight optional action fields per step); validation turns it
//! into these types, so the engine never meets a step with no action or several.
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use super::duration::Dur;
use super::load::Loaded;
use super::model::{
    CallSpec, Count, DecryptSpec, Defaults, DownloadSpec, PollSpec, RetrySpec, SetCursorSpec, Step,
};

/// A validated workflow and every file it reaches through `uses`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The root file as loaded (the same file as `workflow.file`).
    pub root: Arc<Loaded>,
    /// All loaded files by canonical path, the root included.
    pub files: HashMap<PathBuf, Arc<Loaded>>,
    /// The root file's steps, typed.
    pub workflow: Arc<PlannedWorkflow>,
}

/// One validated file: its source and its typed steps.
#[derive(Debug)]
pub struct PlannedWorkflow {
    /// The file as loaded: path, source text, model and line:column spans.
    pub file: Arc<Loaded>,
    /// The file's top-level steps in order.
    pub steps: Vec<PlannedStep>,
}

impl PlannedWorkflow {
    /// The file's step defaults (empty when it gives none).
    pub fn defaults(&self) -> Defaults {
        self.file.workflow.defaults.clone().unwrap_or_default()
    }
}

/// One validated step: the fields every step has, and its action.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    /// The step's id, unique in its file; outputs are read as `steps.<id>`.
    pub id: String,
    /// Label for reporters (`name:` in YAML), when given.
    pub name: Option<String>,
    /// Condition (template); the step is skipped when it renders false.
    pub when: Option<String>,
    /// The step's own retry fields (merged over the file's defaults when run).
    pub retry: Option<RetrySpec>,
    /// Time limit of the whole step; `None` takes the file default (polls: 7d).
    pub timeout: Option<Dur>,
    /// A failure is reported but does not fail the run.
    pub continue_on_error: bool,
    /// The step may replace existing files that are not the run's (`overwrite: true`).
    pub overwrite: bool,
    /// What the step does.
    pub action: Action,
}

impl PlannedStep {
    /// The name to show: `name`, else `id`.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// The kind of the step's action.
    pub fn kind(&self) -> StepKind {
        self.action.kind()
    }
}

/// What a step does, with the data it needs.
#[derive(Debug, Clone)]
pub enum Action {
    /// Send one HTTP request through a connection or to a URL.
    Call(CallSpec),
    /// Repeat a request until its `until` condition holds or it times out.
    Poll(PollSpec),
    /// Fetch files to disk, resumably.
    Download(DownloadSpec),
    /// Decrypt OpenPGP files with a private key.
    Decrypt(DecryptSpec),
    /// Run nested steps once per list item.
    ForEach(ForEachPlan),
    /// Run another workflow file as one step.
    Uses(UsesPlan),
    /// Write a cursor's new value to the state directory.
    SetCursor(SetCursorSpec),
    /// Run nested steps until a condition holds.
    Repeat(RepeatPlan),
}

impl Action {
    /// The kind of this action.
    pub fn kind(&self) -> StepKind {
        match self {
            Action::Call(_) => StepKind::Call,
            Action::Poll(_) => StepKind::Poll,
            Action::Download(_) => StepKind::Download,
            Action::Decrypt(_) => StepKind::Decrypt,
            Action::ForEach(_) => StepKind::ForEach,
            Action::Uses(_) => StepKind::Uses,
            Action::SetCursor(_) => StepKind::SetCursor,
            Action::Repeat(_) => StepKind::Repeat,
        }
    }
}

/// A `for_each` loop with its defaults applied.
#[derive(Debug, Clone)]
pub struct ForEachPlan {
    /// The list (template yielding a list, or a literal list).
    pub items: Value,
    /// Iterations run at once (default 1), rendered when the loop starts.
    pub concurrency: Option<Count>,
    /// Stop starting new iterations after the first failure.
    pub fail_fast: bool,
    /// Steps run for each item.
    pub steps: Vec<PlannedStep>,
}

/// A `repeat` loop.
#[derive(Debug, Clone)]
pub struct RepeatPlan {
    /// Steps run in each iteration.
    pub steps: Vec<PlannedStep>,
    /// Condition checked after each iteration (template).
    pub until: String,
    /// Most iterations in one process (at least 1).
    pub max_iterations: u32,
}

/// A `uses` step: the validated workflow it runs and the inputs it gives it.
#[derive(Debug, Clone)]
pub struct UsesPlan {
    /// The path as written (relative to the calling file), for messages.
    pub target: String,
    /// The callee, validated with the caller.
    pub workflow: Arc<PlannedWorkflow>,
    /// Inputs for the callee (templates).
    pub with: BTreeMap<String, Value>,
}

/// The kind of a step's action, as named in the file and in events (serialized as the key
/// that declares it: `call`, `poll`, `download`, `decrypt`, `for_each`, `uses`, `set_cursor`,
/// `repeat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// `call:`
    Call,
    /// `poll:`
    Poll,
    /// `download:`
    Download,
    /// `decrypt:`
    Decrypt,
    /// `for_each:`
    ForEach,
    /// `uses:`
    Uses,
    /// `set_cursor:`
    SetCursor,
    /// `repeat:`
    Repeat,
}

impl StepKind {
    /// The key that declares this kind in a step.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Call => "call",
            StepKind::Poll => "poll",
            StepKind::Download => "download",
            StepKind::Decrypt => "decrypt",
            StepKind::ForEach => "for_each",
            StepKind::Uses => "uses",
            StepKind::SetCursor => "set_cursor",
            StepKind::Repeat => "repeat",
        }
    }

    /// The outputs a step of this kind exposes as `steps.<id>.<name>`.
    pub fn outputs(self) -> &'static [&'static str] {
        match self {
            StepKind::Call => &[
                "status",
                "headers",
                "body",
                "pages",
                "items",
                "records",
                "truncated",
                "request_id",
                "filename",
            ],
            StepKind::Poll => &["status", "headers", "body", "polls", "request_id"],
            StepKind::Download => &[
                "files",
                "bytes",
                "sha256",
                "md5",
                "sizes",
                "urls",
                "extracted",
                "extracted_sha256",
                "evidence",
                "partial",
                "problems",
                "results_count",
                "messages",
            ],
            StepKind::Decrypt => &["files", "bytes", "sha256", "sizes"],
            StepKind::ForEach => &["results", "failed", "count"],
            StepKind::Uses => &["outputs"],
            StepKind::SetCursor => &["name", "key", "value", "previous"],
            StepKind::Repeat => &["iterations", "done"],
        }
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds a raw step declares (a valid step declares exactly one).
pub(super) fn declared_kinds(s: &Step) -> Vec<StepKind> {
    [
        (s.call.is_some(), StepKind::Call),
        (s.poll.is_some(), StepKind::Poll),
        (s.download.is_some(), StepKind::Download),
        (s.decrypt.is_some(), StepKind::Decrypt),
        (s.for_each.is_some(), StepKind::ForEach),
        (s.uses.is_some(), StepKind::Uses),
        (s.set_cursor.is_some(), StepKind::SetCursor),
        (s.repeat.is_some(), StepKind::Repeat),
    ]
    .into_iter()
    .filter_map(|(declared, kind)| declared.then_some(kind))
    .collect()
}

/// Types the raw steps at `base` (`steps`, `steps[2].for_each.steps`); `callees` holds the
/// planned workflow of each `uses:` target as written. Fails with the path of a step that
/// does not declare exactly one action or whose target is missing from `callees` (both
/// reported by validation before this runs).
pub(super) fn plan_steps(
    steps: &[Step],
    base: &str,
    callees: &HashMap<String, Arc<PlannedWorkflow>>,
) -> Result<Vec<PlannedStep>, String> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let path = format!("{base}[{i}]");
            let action = plan_action(s, &path, callees)?;
            Ok(PlannedStep {
                id: s.id.clone(),
                name: s.name.clone(),
                when: s.when.clone(),
                retry: s.retry.clone(),
                timeout: s.timeout,
                continue_on_error: s.continue_on_error,
                overwrite: s.overwrite,
                action,
            })
        })
        .collect()
}

/// The one action of a raw step; fails with `path` when it declares none or several.
fn plan_action(
    s: &Step,
    path: &str,
    callees: &HashMap<String, Arc<PlannedWorkflow>>,
) -> Result<Action, String> {
    let unplanned = || path.to_string();
    let kinds = declared_kinds(s);
    let [kind] = kinds.as_slice() else {
        return Err(unplanned());
    };
    let action = match kind {
        StepKind::Call => s.call.clone().map(Action::Call),
        StepKind::Poll => s.poll.clone().map(Action::Poll),
        StepKind::Download => s.download.clone().map(Action::Download),
        StepKind::Decrypt => s.decrypt.clone().map(Action::Decrypt),
        StepKind::SetCursor => s.set_cursor.clone().map(Action::SetCursor),
        StepKind::ForEach => match &s.for_each {
            Some(fe) => Some(Action::ForEach(ForEachPlan {
                items: fe.items.clone(),
                concurrency: fe.concurrency.clone(),
                fail_fast: fe.fail_fast.unwrap_or(true),
                steps: plan_steps(&fe.steps, &format!("{path}.for_each.steps"), callees)?,
            })),
            None => None,
        },
        StepKind::Repeat => match &s.repeat {
            Some(r) => Some(Action::Repeat(RepeatPlan {
                steps: plan_steps(&r.steps, &format!("{path}.repeat.steps"), callees)?,
                until: r.until.clone(),
                max_iterations: r.max_iterations.max(1),
            })),
            None => None,
        },
        StepKind::Uses => match &s.uses {
            Some(target) => Some(Action::Uses(UsesPlan {
                target: target.clone(),
                workflow: callees.get(target).cloned().ok_or_else(unplanned)?,
                with: s.with.clone().unwrap_or_default(),
            })),
            None => None,
        },
    };
    action.ok_or_else(unplanned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::validate::validate_file;

    #[test]
    fn validation_types_each_step_by_its_action() {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, src: &str| {
            std::fs::write(dir.path().join(name), src).expect("write workflow");
        };
        write(
            "child.yaml",
            "name: child\ninputs:\n  who: {required: true}\nsteps:\n  - id: c\n    call: {url: 'http://x'}\n",
        );
        write(
            "top.yaml",
            "name: top\nsteps:\n  - id: loop\n    for_each:\n      items: [1, 2]\n      steps:\n        - id: sub\n          uses: child.yaml\n          with: {who: '{{ item }}'}\n  - id: get\n    name: Get it\n    call: {url: 'http://x'}\n",
        );
        let plan = validate_file(&dir.path().join("top.yaml")).expect("valid");
        assert_eq!(plan.files.len(), 2);
        let steps = &plan.workflow.steps;
        let Action::ForEach(fe) = &steps[0].action else {
            panic!("expected a loop, got {:?}", steps[0].kind());
        };
        assert_eq!((&fe.concurrency, fe.fail_fast), (&None, true));
        let Action::Uses(uses) = &fe.steps[0].action else {
            panic!("expected uses, got {:?}", fe.steps[0].kind());
        };
        assert_eq!(uses.target, "child.yaml");
        assert_eq!(uses.workflow.file.workflow.name, "child");
        assert_eq!(uses.workflow.steps[0].kind(), StepKind::Call);
        assert!(uses.with.contains_key("who"));
        assert_eq!(steps[1].kind(), StepKind::Call);
        assert_eq!(steps[1].display_name(), "Get it");
    }
}
