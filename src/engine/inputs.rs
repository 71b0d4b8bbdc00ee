//! Input resolution: given values against a workflow's declarations, and which are secret.
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::secrets::Secrets;
use crate::workflow::diag::did_you_mean;
use crate::workflow::input_rules::{check_input, InputProblem};
use crate::workflow::model::Workflow;

/// Errors found before any request is sent (exit 2).
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputError {
    #[error("missing required input{}: {}", if .0.len() == 1 { "" } else { "s" }, missing_list(.0))]
    Missing(Vec<MissingInput>),
    #[error("unknown input `{name}`; {}", match .suggestion {
        Some(s) => format!("did you mean `{s}`?"),
        None if .declared.is_empty() => "the workflow declares no inputs".to_string(),
        None => format!("the workflow declares: {}", .declared.join(", ")),
    })]
    Unknown {
        name: String,
        suggestion: Option<String>,
        declared: Vec<String>,
    },
    #[error("input `{name}`: {problem}")]
    Invalid { name: String, problem: InputProblem },
    #[error("environment variable {name}: {message}; fix or unset it")]
    Environment { name: String, message: String },
}

/// A required input nobody gave: what the user needs to give it.
#[derive(Debug)]
pub(crate) struct MissingInput {
    pub name: String,
    kind: &'static str,
    description: Option<String>,
}

/// `a (string: what it is for), b (integer)`.
fn missing_list(missing: &[MissingInput]) -> String {
    let one = |m: &MissingInput| match &m.description {
        Some(d) => format!("{} ({}: {})", m.name, m.kind, d.trim()),
        None => format!("{} ({})", m.name, m.kind),
    };
    missing.iter().map(one).collect::<Vec<_>>().join(", ")
}

impl InputError {
    /// How to give what is missing on the command line (not for `uses`, whose inputs come
    /// from `with:`).
    pub(crate) fn command_line_hint(&self) -> Option<String> {
        let missing = match self {
            Self::Missing(missing) => missing,
            Self::Invalid { name, problem } => return Some(problem.fix(name)),
            _ => return None,
        };
        let flags: Vec<String> = missing
            .iter()
            .map(|m| format!("-i {}=...", m.name))
            .collect();
        Some(format!(
            "give {} with `{}`, or in an `--inputs-file`",
            if missing.len() == 1 { "it" } else { "them" },
            flags.join(" ")
        ))
    }
}

/// Resolves inputs against their declarations: given, else default, else missing.
pub(crate) fn resolve_inputs(
    wf: &Workflow,
    given: &BTreeMap<String, Value>,
) -> Result<Map<String, Value>, InputError> {
    for name in given.keys() {
        if !wf.inputs.contains_key(name) {
            return Err(InputError::Unknown {
                name: name.clone(),
                suggestion: did_you_mean(name, wf.inputs.keys().map(String::as_str))
                    .map(str::to_string),
                declared: wf.inputs.keys().cloned().collect(),
            });
        }
    }
    let mut out = Map::new();
    let mut missing = Vec::new();
    for (name, spec) in &wf.inputs {
        let raw = given.get(name).or(spec.default.as_ref());
        match raw {
            Some(v) => {
                let coerced = check_input(spec, v).map_err(|problem| InputError::Invalid {
                    name: name.clone(),
                    problem,
                })?;
                out.insert(name.clone(), coerced);
            }
            None if spec.required => missing.push(MissingInput {
                name: name.clone(),
                kind: spec.kind.as_str(),
                description: spec.description.clone(),
            }),
            None => {
                out.insert(name.clone(), Value::Null);
            }
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(InputError::Missing(missing))
    }
}

/// The non-secret inputs (the run key) and all inputs masked (the journal header).
pub(super) fn key_inputs(wf: &Workflow, inputs: &Map<String, Value>) -> Value {
    Value::Object(
        inputs
            .iter()
            .filter(|(k, _)| !wf.inputs.get(*k).is_some_and(|s| s.secret))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// Registers the values of a workflow's `secret: true` inputs. Returns a warning for each
/// one that is a short plain word (masked only as a whole value, see
/// [`crate::secrets::is_plain_word`]).
pub(super) fn register_secret_inputs(
    wf: &Workflow,
    inputs: &Map<String, Value>,
    secrets: &Secrets,
) -> Vec<String> {
    let mut notes = Vec::new();
    for (name, spec) in &wf.inputs {
        if let (true, Some(v)) = (spec.secret, inputs.get(name)) {
            register_secret_value(secrets, v);
            if v.as_str().is_some_and(crate::secrets::is_plain_word) {
                notes.push(crate::secrets::plain_word_note(&format!("input `{name}`")));
            }
        }
    }
    notes
}

fn register_secret_value(secrets: &Secrets, v: &Value) {
    match v {
        Value::String(s) => secrets.add(s),
        Value::Array(a) => a.iter().for_each(|x| register_secret_value(secrets, x)),
        Value::Object(o) => o.values().for_each(|x| register_secret_value(secrets, x)),
        Value::Number(n) => secrets.add(n.to_string()),
        _ => {}
    }
}

/// One warning about `others`, the unfinished runs of the same workflow that this run
/// (`ours`) does not continue: what sets a single one apart and how to continue or give it
/// up; for several, their count and the commands that list and prune them.
pub(super) fn other_runs_note(
    others: &[crate::state::RunHeader],
    ours: &crate::state::RunHeader,
) -> Option<String> {
    let short = |h: &crate::state::RunHeader| h.run_id.chars().take(8).collect::<String>();
    match others {
        [] => None,
        [one] => Some(format!(
            "run {} of this workflow (started {}) is unfinished and is not this run ({}); continue it with `auditflow run {} --resume {}`, give it up with `auditflow runs abandon {}`, or start it over with its inputs and --fresh",
            short(one),
            one.started_at.format("%Y-%m-%d %H:%M UTC"),
            crate::state::differences(one, ours).join("; "),
            ours.workflow,
            short(one),
            short(one),
        )),
        many => {
            let mut inputs: Vec<String> = many
                .iter()
                .flat_map(|h| crate::state::differing_inputs(&h.inputs, &ours.inputs))
                .collect();
            inputs.sort();
            inputs.dedup();
            Some(format!(
                "{} unfinished runs of this workflow are not this run (the oldest started {}; they differ in {}); `auditflow runs list` shows them, `auditflow runs abandon RUN` or `auditflow runs prune --older-than 7d` gives them up",
                many.len(),
                many[0].started_at.format("%Y-%m-%d %H:%M UTC"),
                if inputs.is_empty() {
                    "their shard".to_string()
                } else {
                    format!("inputs {}", inputs.join(", "))
                },
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::workflow::load_str;

    fn wf(src: &str) -> Workflow {
        load_str(Path::new("t.yaml"), src.into())
            .expect("valid")
            .workflow
    }

    #[test]
    fn inputs_resolve_defaults_types_and_missing() {
        let w = wf("name: t\ninputs:\n  a: {type: integer, required: true}\n  b: {type: boolean, default: false}\n  c: {type: string}\nsteps: [{id: s, call: {url: 'http://x'}}]\n");
        let mut given = BTreeMap::new();
        let e = resolve_inputs(&w, &given).unwrap_err();
        assert_eq!(e.to_string(), "missing required input: a (integer)");
        assert_eq!(
            e.command_line_hint().as_deref(),
            Some("give it with `-i a=...`, or in an `--inputs-file`")
        );
        given.insert("a".into(), json!("7"));
        let r = resolve_inputs(&w, &given).unwrap();
        assert_eq!(r["a"], json!(7));
        assert_eq!(r["b"], json!(false));
        assert_eq!(r["c"], Value::Null);
        given.insert("aa".into(), json!("1"));
        let e = resolve_inputs(&w, &given).unwrap_err().to_string();
        assert_eq!(e, "unknown input `aa`; did you mean `a`?");
        given.remove("aa");
        given.insert("zzz".into(), json!("1"));
        let e = resolve_inputs(&w, &given).unwrap_err().to_string();
        assert_eq!(e, "unknown input `zzz`; the workflow declares: a, b, c");
    }
}
