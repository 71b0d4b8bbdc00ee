//! The validated plan: each step typed by the one action it does, `uses` targets resolved.
//!
//! `model` is the YAML as written (eight optional action fields per step); validation turns it
//! into these types, so the engine never meets a step with no action or several. Every template
//! of the step kinds the plan types (conditions, names, calls, polls, loops, `uses` inputs,
//! outputs) is compiled here, once: rendering never parses a template again.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::call_plan::{opt_tpl, tpl, tpl_value, CallPlan, PlanError, PollPlan};
use super::duration::Dur;
use super::file_plan::{DecryptAction, DownloadAction};
use super::load::Loaded;
use super::model::{Count, Defaults, RetrySpec, Step};
use super::step_output::StepOutput;
use crate::template::{Tpl, TplValue};

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
    /// `outputs:` compiled, in file order.
    pub outputs: Vec<(String, TplValue)>,
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
    /// Label for reporters (`name:` in YAML, a template), when given.
    pub name: Option<Tpl>,
    /// Condition; the step is skipped when it renders false.
    pub when: Option<Tpl>,
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
        self.name.as_ref().map_or(&self.id, Tpl::source)
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
    Call(CallPlan),
    /// Repeat a request until its `until` condition holds or it times out.
    Poll(PollPlan),
    /// Fetch files to disk, resumably.
    Download(Box<DownloadAction>),
    /// Decrypt OpenPGP files with a private key.
    Decrypt(DecryptAction),
    /// Run nested steps once per list item.
    ForEach(ForEachPlan),
    /// Run another workflow file as one step.
    Uses(UsesPlan),
    /// Write a cursor's new value to the state directory.
    SetCursor(SetCursorPlan),
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
    pub items: TplValue,
    /// Iterations run at once (default 1), rendered when the loop starts.
    pub concurrency: Option<Count>,
    /// Stop starting new iterations after the first failure.
    pub fail_fast: bool,
    /// Steps run for each item.
    pub steps: Vec<PlannedStep>,
}

/// A `set_cursor` step.
#[derive(Debug, Clone)]
pub struct SetCursorPlan {
    /// The cursor, one of the file's `cursors:`.
    pub name: String,
    /// Its new value (every string a template).
    pub value: TplValue,
}

/// A `repeat` loop.
#[derive(Debug, Clone)]
pub struct RepeatPlan {
    /// Steps run in each iteration.
    pub steps: Vec<PlannedStep>,
    /// Condition checked after each iteration.
    pub until: Tpl,
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
    /// Inputs for the callee (templates), in file order.
    pub with: Vec<(String, TplValue)>,
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
    pub fn outputs(self) -> &'static [StepOutput] {
        use StepOutput as O;
        match self {
            StepKind::Call => &[
                O::Status,
                O::Headers,
                O::Body,
                O::Pages,
                O::Items,
                O::Records,
                O::Truncated,
                O::RequestId,
                O::Filename,
            ],
            StepKind::Poll => &[O::Status, O::Headers, O::Body, O::Polls, O::RequestId],
            StepKind::Download => &[
                O::Files,
                O::Bytes,
                O::Sha256,
                O::Md5,
                O::Sizes,
                O::Urls,
                O::Extracted,
                O::ExtractedSha256,
                O::Evidence,
                O::Partial,
                O::Problems,
                O::ResultsCount,
                O::Messages,
            ],
            StepKind::Decrypt => &[O::Files, O::Bytes, O::Sha256, O::Sizes],
            StepKind::ForEach => &[O::Results, O::Failed, O::Count],
            StepKind::Uses => &[O::Outputs],
            StepKind::SetCursor => &[O::Name, O::Key, O::Value, O::Previous],
            StepKind::Repeat => &[O::Iterations, O::Done],
        }
    }

    /// The output of this kind named `name`, if it has one.
    pub fn output(self, name: &str) -> Option<StepOutput> {
        self.outputs().iter().copied().find(|o| o.as_str() == name)
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

/// Types the raw steps at `base` (`steps`, `steps[2].for_each.steps`) and compiles their
/// templates; `callees` holds the planned workflow of each `uses:` target as written. Fails
/// on a step that does not declare exactly one action, whose target is missing from
/// `callees` or whose template does not compile (all reported by validation before this runs).
pub(super) fn plan_steps(
    steps: &[Step],
    base: &str,
    callees: &HashMap<String, Arc<PlannedWorkflow>>,
) -> Result<Vec<PlannedStep>, PlanError> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let path = format!("{base}[{i}]");
            Ok(PlannedStep {
                id: s.id.clone(),
                name: opt_tpl(&format!("{path}.name"), s.name.as_ref())?,
                when: opt_tpl(&format!("{path}.if"), s.when.as_ref())?,
                retry: s.retry.clone(),
                timeout: s.timeout,
                continue_on_error: s.continue_on_error,
                overwrite: s.overwrite,
                action: plan_action(s, &path, callees)?,
            })
        })
        .collect()
}

/// The file's `outputs:` compiled.
pub(super) fn plan_outputs(
    outputs: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<Vec<(String, TplValue)>, PlanError> {
    outputs
        .iter()
        .map(|(k, v)| Ok((k.clone(), tpl_value(&format!("outputs.{k}"), v)?)))
        .collect()
}

/// The one action of a raw step; fails with `path` when it declares none or several.
fn plan_action(
    s: &Step,
    path: &str,
    callees: &HashMap<String, Arc<PlannedWorkflow>>,
) -> Result<Action, PlanError> {
    let unplanned = || PlanError::Unplanned {
        at: path.to_string(),
    };
    let kinds = declared_kinds(s);
    let [kind] = kinds.as_slice() else {
        return Err(unplanned());
    };
    let action = match kind {
        StepKind::Call => match &s.call {
            Some(c) => Some(Action::Call(CallPlan::of(&format!("{path}.call"), c)?)),
            None => None,
        },
        StepKind::Poll => match &s.poll {
            Some(p) => Some(Action::Poll(PollPlan::of(&format!("{path}.poll"), p)?)),
            None => None,
        },
        StepKind::Download => match &s.download {
            Some(d) => Some(Action::Download(Box::new(DownloadAction::of(
                &format!("{path}.download"),
                d,
            )?))),
            None => None,
        },
        StepKind::Decrypt => match &s.decrypt {
            Some(d) => Some(Action::Decrypt(DecryptAction::of(
                &format!("{path}.decrypt"),
                d,
            )?)),
            None => None,
        },
        StepKind::SetCursor => match &s.set_cursor {
            Some(c) => Some(Action::SetCursor(SetCursorPlan {
                name: c.name.clone(),
                value: tpl_value(&format!("{path}.set_cursor.value"), &c.value)?,
            })),
            None => None,
        },
        StepKind::ForEach => match &s.for_each {
            Some(fe) => Some(Action::ForEach(ForEachPlan {
                items: tpl_value(&format!("{path}.for_each.items"), &fe.items)?,
                concurrency: fe.concurrency.clone(),
                fail_fast: fe.fail_fast.unwrap_or(true),
                steps: plan_steps(&fe.steps, &format!("{path}.for_each.steps"), callees)?,
            })),
            None => None,
        },
        StepKind::Repeat => match &s.repeat {
            Some(r) => Some(Action::Repeat(RepeatPlan {
                steps: plan_steps(&r.steps, &format!("{path}.repeat.steps"), callees)?,
                until: tpl(&format!("{path}.repeat.until"), &r.until)?,
                max_iterations: r.max_iterations.max(1),
            })),
            None => None,
        },
        StepKind::Uses => match &s.uses {
            Some(target) => Some(Action::Uses(UsesPlan {
                target: target.clone(),
                workflow: callees.get(target).cloned().ok_or_else(unplanned)?,
                with: plan_with(s, path)?,
            })),
            None => None,
        },
    };
    action.ok_or_else(unplanned)
}

/// A `uses` step's `with:` inputs compiled.
fn plan_with(s: &Step, path: &str) -> Result<Vec<(String, TplValue)>, PlanError> {
    s.with
        .iter()
        .flatten()
        .map(|(k, v)| Ok((k.clone(), tpl_value(&format!("{path}.with.{k}"), v)?)))
        .collect()
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
        assert!(uses.with.iter().any(|(k, _)| k == "who"));
        assert_eq!(steps[1].kind(), StepKind::Call);
        assert_eq!(steps[1].display_name(), "Get it");
    }
}
