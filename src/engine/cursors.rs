//! The cursors of a workflow file in a run: read from the state directory when the file
//! starts, shown to templates as `cursors`, advanced by `set_cursor` steps.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{json, Map, Value};

use super::active_run::{ActiveRun, Scope};
use super::failure::ActionError;
use crate::state::cursors::{CursorId, StoredCursor};
use crate::state::StateError;
use crate::steps::{StepEnv, StepError};
use crate::template::{render_deep, Template, TemplateError};
use crate::workflow::plan::SetCursorPlan;
use crate::workflow::step_output::{outputs_object, StepOutput};

/// Why a file's cursors could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum CursorError {
    /// `initial` or `key` does not render.
    #[error("cursor `{name}`: `{field}`: {source}")]
    Template {
        name: String,
        field: &'static str,
        source: TemplateError,
    },
    /// The stored value cannot be read.
    #[error("cursor `{name}`: {source}")]
    State { name: String, source: StateError },
}

/// Why a `set_cursor` step failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum SetCursorError {
    /// Validation checks names; a file whose cursors were not read has none.
    #[error("no cursor `{name}` in this file")]
    Unknown { name: String },
    /// Cursors are stored in the clear.
    #[error("the new value of cursor `{name}` holds a secret; cursors are kept in the state directory in the clear, so store a position (a token, a date), not a credential")]
    Secret { name: String },
    #[error(transparent)]
    State(#[from] StateError),
}

/// One cursor: its rendered key and its value now.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    value: Value,
}

/// The cursors of one workflow file in this run, shared by its loops' iterations.
#[derive(Debug, Default)]
pub(super) struct CursorSet {
    workflow: String,
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl CursorSet {
    /// The values as templates read them (`cursors.NAME`); None when the file has none.
    pub(super) fn values(&self) -> Option<Value> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.is_empty() {
            return None;
        }
        let m: Map<String, Value> = entries
            .iter()
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect();
        Some(Value::Object(m))
    }

    fn entry(&self, name: &str) -> Option<Entry> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(name).cloned()
    }

    fn update(&self, name: &str, value: Value) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = entries.get_mut(name) {
            e.value = value;
        }
    }
}

/// Reads the cursors `scope`'s file declares: each key and initial value rendered over the
/// file's inputs, then the stored value when a run wrote one.
pub(super) async fn load(run: &ActiveRun, scope: &Scope) -> Result<Arc<CursorSet>, CursorError> {
    let wf = &scope.workflow.file.workflow;
    if wf.cursors.is_empty() {
        return Ok(Arc::default());
    }
    let ctx = scope.ctx(run);
    let failed = |name: &str, field: &'static str| {
        let name = name.to_string();
        move |source| CursorError::Template {
            name,
            field,
            source,
        }
    };
    let mut entries = BTreeMap::new();
    for (name, spec) in &wf.cursors {
        let key = match &spec.key {
            None => String::new(),
            Some(k) => Template::compile(k)
                .and_then(|t| t.render_string(&ctx))
                .map_err(failed(name, "key"))?
                .trim()
                .to_string(),
        };
        let stored = match &run.store {
            Some(store) => store
                .read_cursor(CursorId {
                    workflow: &wf.name,
                    name,
                    key: &key,
                })
                .await
                .map_err(|source| CursorError::State {
                    name: name.clone(),
                    source,
                })?,
            None => None,
        };
        let found = stored.is_some();
        let value = match (stored, &spec.initial) {
            (Some(s), _) => s.value,
            (None, Some(initial)) => render_deep(initial, &ctx).map_err(failed(name, "initial"))?,
            (None, None) => Value::String(String::new()),
        };
        if !found && run.store.is_some() && !run.dry_run {
            run.emitter.warn(missing_cursor_note(
                scope, &wf.name, name, &key, &value, spec,
            ));
        }
        entries.insert(name.clone(), Entry { key, value });
    }
    if run.store.is_none() && !run.dry_run {
        run.emitter.warn(format!(
            "workflow `{}` keeps cursors but the run has no state directory: every run starts from their initial values",
            wf.name
        ));
    }
    Ok(Arc::new(CursorSet {
        workflow: wf.name.clone(),
        entries: Mutex::new(entries),
    }))
}

/// The loud note of a cursor with no stored position: a first run, or a lost state (an
/// evicted CI cache), after which data already collected is collected again.
fn missing_cursor_note(
    scope: &Scope,
    workflow: &str,
    name: &str,
    key: &str,
    start: &Value,
    spec: &crate::workflow::model::CursorSpec,
) -> String {
    let keyed = if key.is_empty() {
        String::new()
    } else {
        format!(" (key {key})")
    };
    let meaning = spec
        .description
        .as_deref()
        .map(|d| format!(" [{}]", d.split_whitespace().collect::<Vec<_>>().join(" ")))
        .unwrap_or_default();
    format!(
        "cursor `{name}` of workflow `{workflow}`{keyed} has no stored position in the state directory: this run starts from its initial value {start}{meaning}. On a first run that is expected; if earlier runs kept their state elsewhere (a lost CI cache, another runner), what they collected is collected again: set the position first with `auditflow cursors set {} {name} VALUE{}`",
        scope.workflow.file.path.display(),
        if key.is_empty() {
            String::new()
        } else {
            format!(" --key {key}")
        }
    )
}

/// The `set_cursor` step: the preceding steps' records made durable, then the new value
/// written (atomically, fsync'd) and shown to later templates.
pub(super) async fn set_cursor(
    run: &ActiveRun,
    spec: &SetCursorPlan,
    scope: &Scope,
    ctx: &Value,
    env: &StepEnv<'_>,
) -> Result<Value, ActionError> {
    let value = spec
        .value
        .render(ctx)
        .map_err(|e| StepError::template("set_cursor.value", e))?;
    let set = &scope.cursors;
    let name = || spec.name.clone();
    let entry = set
        .entry(&spec.name)
        .ok_or_else(|| SetCursorError::Unknown { name: name() })?;
    let text = value.to_string();
    if run.emitter.secrets().mask(&text) != text {
        return Err(SetCursorError::Secret { name: name() }.into());
    }
    let outputs = outputs_object([
        (StepOutput::Name, json!(spec.name)),
        (StepOutput::Key, json!(entry.key)),
        (StepOutput::Value, value.clone()),
        (StepOutput::Previous, json!(entry.value)),
    ]);
    if env.dry_run {
        set.update(&spec.name, value);
        return Ok(outputs);
    }
    // What the earlier steps recorded (files, answers) is durable before the cursor moves
    // (in the shared store, in the same transaction).
    if let Some(store) = &run.store {
        let id = CursorId {
            workflow: &set.workflow,
            name: &spec.name,
            key: &entry.key,
        };
        let run_id = run.run_info["id"].as_str().unwrap_or_default();
        store
            .write_cursor_after(run.journal.as_ref(), StoredCursor::new(id, &value, run_id))
            .await
            .map_err(SetCursorError::State)?;
    }
    set.update(&spec.name, value);
    Ok(outputs)
}
