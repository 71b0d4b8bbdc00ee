//! What a workflow needs and keeps, for `auditflow inputs`: its inputs (types, defaults,
//! descriptions), the environment variables its files read (connections' URLs and
//! credentials above all), the quota budgets and cursors it uses, and its lifecycle. Read
//! from the validated plan, so the `uses` files are included.
use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use super::model::{Lifecycle, Step};
use super::plan::Plan;

/// The description of a workflow.
#[derive(Debug, Clone, Serialize)]
pub struct Description {
    /// The workflow's `name:`.
    pub name: String,
    /// Its `description:`.
    pub description: Option<String>,
    /// `one-shot` or `recurring`.
    pub lifecycle: Lifecycle,
    /// The root file's inputs, in name order.
    pub inputs: Vec<InputLine>,
    /// Every `env.NAME` any of its files reads, sorted.
    pub environment: Vec<String>,
    /// The quota budgets its calls spend from (names), sorted.
    pub budgets: Vec<String>,
    /// The cursors it keeps (`workflow name/cursor name`), sorted.
    pub cursors: Vec<String>,
}

/// One input.
#[derive(Debug, Clone, Serialize)]
pub struct InputLine {
    /// The input's name.
    pub name: String,
    /// Its type (`string`, `integer`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Required (no default).
    pub required: bool,
    /// Its default, when it has one.
    pub default: Option<Value>,
    /// Its description.
    pub description: Option<String>,
    /// A secret (masked everywhere, never stored).
    pub secret: bool,
    /// What values it allows beyond its type (`1 to 100`, `one of a, b`, `matching ...`).
    pub allowed: Option<String>,
}

impl Description {
    /// Describes the validated plan `plan`.
    pub fn of(plan: &Plan) -> Description {
        let wf = &plan.root.workflow;
        let inputs = wf
            .inputs
            .iter()
            .map(|(name, spec)| InputLine {
                name: name.clone(),
                kind: serde_json::to_value(spec.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                required: spec.required,
                default: spec.default.clone(),
                description: spec.description.clone(),
                secret: spec.secret,
                allowed: super::input_rules::rules_text(spec),
            })
            .collect();
        let mut environment = BTreeSet::new();
        let mut budgets = BTreeSet::new();
        let mut cursors = BTreeSet::new();
        for file in plan.files.values() {
            let w = &file.workflow;
            if let Ok(v) = serde_json::to_value(w) {
                env_reads(&v, &mut environment);
            }
            budgets_of(&w.steps, &mut budgets);
            cursors.extend(w.cursors.keys().map(|c| format!("{}/{c}", w.name)));
        }
        Description {
            name: wf.name.clone(),
            description: wf.description.clone(),
            lifecycle: wf.lifecycle,
            inputs,
            environment: environment.into_iter().collect(),
            budgets: budgets.into_iter().collect(),
            cursors: cursors.into_iter().collect(),
        }
    }
}

/// Every `env.NAME` in the strings of `v`.
fn env_reads(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => {
            for (i, _) in s.match_indices("env.") {
                let before = s[..i].chars().next_back();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                    continue;
                }
                let name: String = s[i + 4..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| env_reads(x, out)),
        Value::Object(o) => o.values().for_each(|x| env_reads(x, out)),
        _ => {}
    }
}

/// The budget names of `steps` and the steps inside them.
fn budgets_of(steps: &[Step], out: &mut BTreeSet<String>) {
    for s in steps {
        let calls = s.call.iter().chain(s.poll.iter().map(|p| &p.call));
        out.extend(calls.filter_map(|c| c.budget.as_ref().map(|b| b.name.clone())));
        if let Some(f) = &s.for_each {
            budgets_of(&f.steps, out);
        }
        if let Some(r) = &s.repeat {
            budgets_of(&r.steps, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_reads_are_found_in_templates_and_nowhere_else() {
        let mut out = BTreeSet::new();
        env_reads(
            &serde_json::json!({"a": "{{ env.MIMECAST_BASE_URL }}", "b": ["{{ default env.X_1 \"y\" }}", "inputs.env.NOT"], "c": "myenv.NO"}),
            &mut out,
        );
        assert_eq!(
            out.into_iter().collect::<Vec<_>>(),
            vec!["MIMECAST_BASE_URL".to_string(), "X_1".to_string()]
        );
    }
}
