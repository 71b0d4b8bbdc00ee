//! `--dry-run` all the way: steps that got no response stand as placeholders for later steps,
//! and a loop runs one representative item, so every step of the plan is rendered.
use serde_json::{Map, Value};

use super::active_run::ActiveRun;
use crate::template::placeholder::{self, placeholder};
use crate::workflow::plan::{PlannedStep, StepKind};

/// What later steps see as `steps.<id>` after `step` ran in a dry run: a placeholder for
/// anything that would come from a vendor or a file (`uses` keeps its rendered outputs,
/// which already show placeholders where the callee had none).
pub(super) fn outputs(run: &ActiveRun, step: &PlannedStep, outputs: Value) -> Value {
    if !run.dry_run {
        return outputs;
    }
    match step.kind() {
        StepKind::Uses | StepKind::SetCursor => outputs,
        StepKind::Call
        | StepKind::Poll
        | StepKind::Download
        | StepKind::Decrypt
        | StepKind::ForEach
        | StepKind::Repeat => placeholder(&format!("steps.{}", step.id)),
    }
}

/// A dry run's loop items: the first of a known list, else one placeholder item.
pub(super) fn representative_items(run: &ActiveRun, step: &str, items: Value) -> Value {
    if !run.dry_run {
        return items;
    }
    let (item, note) = match items {
        Value::Array(a) if !a.is_empty() => {
            let n = a.len();
            let first = a.into_iter().next().unwrap_or(Value::Null);
            let note = format!(
                "dry run: showing the first of {n} item{} ({})",
                if n == 1 { "" } else { "s" },
                label(&run.emitter.secrets().mask_json(&first))
            );
            (first, note)
        }
        Value::String(s) if s.starts_with('<') && s.ends_with('>') => (
            placeholder("item"),
            format!("dry run: items come from {s}; showing one placeholder item <item>"),
        ),
        Value::Array(_) | Value::Null => (
            placeholder("item"),
            "dry run: no items; showing one placeholder item <item>".to_string(),
        ),
        // Not a list: the loop reports it as a real run would.
        other => return other,
    };
    run.emitter.log(step, note);
    Value::Array(vec![item])
}

fn label(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    crate::vendors::errors::cut_chars(&s, 60)
}

/// In a dry run, an `if:` that reads a value the dry run does not have is not decided: the
/// step is shown as if it ran, with a note, whether the placeholder rendered it true or false
/// (a placeholder is a non-empty text, so `default steps.x.body.next ""` renders true).
/// Returns true then.
pub(super) fn undecided_condition(
    run: &ActiveRun,
    step: &str,
    cond: &crate::template::Tpl,
    ctx: &Value,
) -> bool {
    if !run.dry_run || !placeholder::is_dry_run(ctx) {
        return false;
    }
    let reads_placeholder = cond
        .template()
        .variables()
        .iter()
        .any(|v| placeholder::through(ctx, &v.path));
    if reads_placeholder {
        run.emitter.log(
            step,
            format!(
                "dry run: runs only if `{}` (it reads a response the dry run does not have)",
                cond.source().trim()
            ),
        );
    }
    reads_placeholder
}

/// A dry run shows the workflow's rendered `outputs` (placeholders where responses would be).
pub(super) fn show_outputs(run: &ActiveRun, prefix: &str, outputs: &Map<String, Value>) {
    if !run.dry_run {
        return;
    }
    let at = format!("{prefix}outputs");
    for (k, v) in outputs {
        let shown = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let shown = run.emitter.secrets().mask(&shown);
        run.emitter.log(&at, format!("would output {k} = {shown}"));
    }
}
