//! The rules an input's value must keep (`min`/`max`, `choices`, `pattern`, a timestamp's
//! form), checked when a run starts and for defaults at validate time, so a page size or a
//! date the vendor would refuse never reaches it after half a workflow has run (issue 26
//! item 8). One place decides; the run's error and `auditflow inputs` say the same.
use regex::Regex;
use serde_json::Value;

use super::diag::did_you_mean;
use super::model::{InputSpec, InputType};
use super::validate::coerce_input;

/// Why a value is not allowed for an input. Shows the value (`***` for a secret input) and
/// what is allowed; [`InputProblem::fix`] says what to give instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputProblem {
    /// Not of the input's type.
    #[error("{message}")]
    Type {
        /// The input's type.
        kind: InputType,
        /// What the value is instead.
        message: String,
    },
    /// An integer outside `min`..`max`.
    #[error("{value} is {} (allowed: {})", side(*.value, *.min), range_text(*.min, *.max))]
    OutOfRange {
        /// The value given.
        value: i64,
        /// The input's `min`.
        min: Option<i64>,
        /// The input's `max`.
        max: Option<i64>,
    },
    /// Not one of `choices`.
    #[error("{value} is not one of the choices {}", .choices.join(", "))]
    NotAChoice {
        /// The value given, as shown.
        value: String,
        /// The allowed values.
        choices: Vec<String>,
    },
    /// Does not match `pattern`.
    #[error("{value} does not match the pattern `{pattern}`{}", .description.as_deref().map(|d| format!(" ({})", d.trim())).unwrap_or_default())]
    NoMatch {
        /// The value given, as shown.
        value: String,
        /// The input's `pattern`.
        pattern: String,
        /// The input's description (often says in words what the pattern allows).
        description: Option<String>,
    },
}

impl InputProblem {
    /// What to give on the command line instead, e.g. ``give a value from 1 to 100, e.g.
    /// `-i page_size=100` ``.
    pub fn fix(&self, name: &str) -> String {
        match self {
            InputProblem::Type { kind, .. } => format!(
                "give {}, e.g. `-i {name}={}`",
                kind_article(*kind),
                type_example(*kind)
            ),
            InputProblem::OutOfRange { value, min, max } => {
                let nearest = (*value).clamp(min.unwrap_or(i64::MIN), max.unwrap_or(i64::MAX));
                format!(
                    "give a value {}, e.g. `-i {name}={nearest}`",
                    match (min, max) {
                        (Some(a), Some(b)) => format!("from {a} to {b}"),
                        (Some(a), None) => format!("of at least {a}"),
                        (None, Some(b)) => format!("of at most {b}"),
                        (None, None) => "in range".to_string(),
                    }
                )
            }
            InputProblem::NotAChoice { value, choices } => {
                let bare = value.trim_matches('`');
                let pick = did_you_mean(bare, choices.iter().map(String::as_str))
                    .or(choices.first().map(String::as_str))
                    .unwrap_or_default();
                format!("give one of them, e.g. `-i {name}={pick}`")
            }
            InputProblem::NoMatch { .. } => {
                format!("give a value that matches it as a whole with `-i {name}=...`")
            }
        }
    }
}

/// Which bound `value` is outside of.
fn side(value: i64, min: Option<i64>) -> &'static str {
    if min.is_some_and(|m| value < m) {
        "below the minimum"
    } else {
        "above the maximum"
    }
}

/// `1 to 100`, `at least 1`, `at most 100`.
fn range_text(min: Option<i64>, max: Option<i64>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!("{a} to {b}"),
        (Some(a), None) => format!("at least {a}"),
        (None, Some(b)) => format!("at most {b}"),
        (None, None) => "any".to_string(),
    }
}

fn kind_article(kind: InputType) -> String {
    match kind {
        InputType::Integer => "an integer".to_string(),
        InputType::Timestamp => "a date and time with its offset (RFC 3339)".to_string(),
        k => format!("a {}", k.as_str()),
    }
}

fn type_example(kind: InputType) -> &'static str {
    match kind {
        InputType::String => "TEXT",
        InputType::Integer => "42",
        InputType::Boolean => "true",
        InputType::List => "a,b",
        InputType::Duration => "30s",
        InputType::Timestamp => "2026-01-01T00:00:00Z",
    }
}

/// Reads an RFC 3339 timestamp, keeping the text as given (empty: not given).
pub(crate) fn coerce_timestamp(s: &str) -> Result<Value, String> {
    let t = s.trim();
    if t.is_empty() || chrono::DateTime::parse_from_rfc3339(t).is_ok() {
        return Ok(Value::String(t.to_string()));
    }
    let looks_like_a_day =
        t.len() == 10 && chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok();
    Err(if looks_like_a_day {
        format!(
            "`{t}` is a date without a time; an RFC 3339 timestamp is needed, e.g. {t}T00:00:00Z"
        )
    } else {
        format!("`{t}` is not an RFC 3339 timestamp such as 2026-01-01T00:00:00Z")
    })
}

/// Converts `v` to the input's type and checks it against the input's rules.
pub fn check_input(spec: &InputSpec, v: &Value) -> Result<Value, InputProblem> {
    let value = coerce_input(spec.kind, v).map_err(|message| InputProblem::Type {
        kind: spec.kind,
        message: if spec.secret {
            masked_type_message(spec.kind)
        } else {
            message
        },
    })?;
    let shown = || shown_value(&value, spec.secret);
    if let Some(n) = value.as_i64() {
        let below = spec.min.is_some_and(|m| n < m);
        let above = spec.max.is_some_and(|m| n > m);
        if below || above {
            return Err(InputProblem::OutOfRange {
                value: n,
                min: spec.min,
                max: spec.max,
            });
        }
    }
    if let Some(choices) = &spec.choices {
        let allowed: Vec<Value> = choices
            .iter()
            .filter_map(|c| coerce_input(spec.kind, c).ok())
            .collect();
        if !allowed.contains(&value) {
            return Err(InputProblem::NotAChoice {
                value: shown(),
                choices: allowed.iter().map(plain).collect(),
            });
        }
    }
    if let (Some(pattern), Value::String(s)) = (&spec.pattern, &value) {
        let matches = anchored(pattern).is_ok_and(|re| re.is_match(s));
        if !matches {
            return Err(InputProblem::NoMatch {
                value: shown(),
                pattern: pattern.clone(),
                description: spec.description.clone(),
            });
        }
    }
    Ok(value)
}

fn masked_type_message(kind: InputType) -> String {
    format!(
        "the value (secret, not shown) is not {}",
        kind_article(kind)
    )
}

/// The pattern matched against the whole text.
pub(crate) fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// `` `text` `` for a string, the number or list as JSON otherwise, `***` for a secret.
fn shown_value(v: &Value, secret: bool) -> String {
    if secret {
        return "`***`".to_string();
    }
    format!("`{}`", plain(v))
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The rules of an input as `auditflow inputs` shows them, e.g. `1 to 100`, `one of a, b`;
/// `None` when it has none.
pub fn rules_text(spec: &InputSpec) -> Option<String> {
    let mut parts = Vec::new();
    if spec.min.is_some() || spec.max.is_some() {
        parts.push(range_text(spec.min, spec.max));
    }
    if let Some(c) = &spec.choices {
        parts.push(format!(
            "one of {}",
            c.iter().map(plain).collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(p) = &spec.pattern {
        parts.push(format!("matching `{p}`"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// What is wrong with an input's rules themselves (a `min` on a string, `min` above `max`,
/// a choice not of the type, a pattern that does not compile), as (field under the input,
/// message) pairs for validate.
pub fn rule_mistakes(name: &str, spec: &InputSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let kind = spec.kind.as_str();
    if spec.kind != InputType::Integer {
        for (field, set) in [("min", spec.min.is_some()), ("max", spec.max.is_some())] {
            if set {
                out.push((field.to_string(), format!("`{field}` of input `{name}` applies to integer inputs; this one is a {kind}: set `type: integer` or remove `{field}`")));
            }
        }
    }
    if let (Some(a), Some(b)) = (spec.min, spec.max) {
        if a > b {
            let message = format!("input `{name}`: `min` {a} is above `max` {b}; swap them");
            out.push(("min".to_string(), message));
        }
    }
    out.extend(choice_mistakes(name, spec));
    if let Some(p) = &spec.pattern {
        if spec.kind != InputType::String {
            out.push(("pattern".to_string(), format!("`pattern` of input `{name}` applies to string inputs; this one is a {kind}: remove `pattern`")));
        } else if let Err(e) = anchored(p) {
            let text = e.to_string();
            let last = text.lines().last().unwrap_or_default().trim();
            let reason = last.strip_prefix("error: ").unwrap_or(last);
            out.push(("pattern".to_string(), format!("`pattern` of input `{name}` is not a regular expression ({reason}); fix it, e.g. `[^:()]*`")));
        }
    }
    out
}

fn choice_mistakes(name: &str, spec: &InputSpec) -> Vec<(String, String)> {
    let Some(choices) = &spec.choices else {
        return vec![];
    };
    if choices.is_empty() {
        let message = format!(
            "`choices` of input `{name}` is empty; list the allowed values or remove `choices`"
        );
        return vec![("choices".to_string(), message)];
    }
    let kind = spec.kind.as_str();
    choices
        .iter()
        .enumerate()
        .filter_map(|(i, c)| coerce_input(spec.kind, c).err().map(|e| (i, c, e)))
        .map(|(i, c, e)| {
            let message = format!(
                "choice {c} of input `{name}`: {e}; give choices of the input's type ({kind})"
            );
            (format!("choices.{i}"), message)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(yaml: &str) -> InputSpec {
        serde_yaml_ng::from_str(yaml).expect("an input spec")
    }

    #[test]
    fn ranges_name_the_value_the_range_and_the_fix() {
        let s = spec("{type: integer, min: 1, max: 100}");
        assert_eq!(check_input(&s, &json!("42")), Ok(json!(42)));
        let e = check_input(&s, &json!("500")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "500 is above the maximum (allowed: 1 to 100)"
        );
        assert_eq!(
            e.fix("page_size"),
            "give a value from 1 to 100, e.g. `-i page_size=100`"
        );
        let e = check_input(&s, &json!(0)).unwrap_err();
        assert_eq!(e.to_string(), "0 is below the minimum (allowed: 1 to 100)");
        assert_eq!(
            e.fix("page_size"),
            "give a value from 1 to 100, e.g. `-i page_size=1`"
        );
        let low = spec("{type: integer, min: 1}");
        assert_eq!(check_input(&low, &json!(1_000_000)), Ok(json!(1_000_000)));
    }

    #[test]
    fn choices_suggest_the_nearest_and_patterns_match_the_whole_text() {
        let s = spec("{choices: [receipt, process, delivery]}");
        assert_eq!(check_input(&s, &json!("process")), Ok(json!("process")));
        let e = check_input(&s, &json!("proces")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`proces` is not one of the choices receipt, process, delivery"
        );
        assert_eq!(e.fix("type"), "give one of them, e.g. `-i type=process`");
        let n = spec("{type: integer, choices: [10, 20]}");
        assert_eq!(check_input(&n, &json!("20")), Ok(json!(20)));
        assert!(check_input(&n, &json!("15")).is_err());

        let p =
            spec("{pattern: \"[^~!$'(),;@:/?]*\", description: \"no ~!$'(),;@:/? characters\"}");
        assert_eq!(check_input(&p, &json!("case 42")), Ok(json!("case 42")));
        let e = check_input(&p, &json!("case:(42)")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`case:(42)` does not match the pattern `[^~!$'(),;@:/?]*` (no ~!$'(),;@:/? characters)"
        );
        let secret = spec("{pattern: '[a-z]+', secret: true}");
        let e = check_input(&secret, &json!("Hunter2"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("Hunter2") && e.starts_with("`***`"), "{e}");
    }

    #[test]
    fn timestamps_are_rfc_3339_and_a_bare_day_gets_its_fix() {
        let s = spec("{type: timestamp}");
        assert_eq!(
            check_input(&s, &json!("2026-01-01T00:00:00+01:00")),
            Ok(json!("2026-01-01T00:00:00+01:00"))
        );
        assert_eq!(check_input(&s, &json!("")), Ok(json!("")));
        let e = check_input(&s, &json!("2026-01-01")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`2026-01-01` is a date without a time; an RFC 3339 timestamp is needed, e.g. 2026-01-01T00:00:00Z"
        );
        assert_eq!(
            e.fix("start_time"),
            "give a date and time with its offset (RFC 3339), e.g. `-i start_time=2026-01-01T00:00:00Z`"
        );
    }

    #[test]
    fn mistaken_rules_are_named() {
        let m = rule_mistakes(
            "x",
            &spec("{type: string, min: 1, max: 0, pattern: '(', choices: []}"),
        );
        let fields: Vec<&str> = m.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, vec!["min", "max", "min", "choices", "pattern"]);
        let m = rule_mistakes("n", &spec("{type: integer, choices: [1, many]}"));
        assert_eq!(m.len(), 1);
        assert!(
            m[0].1
                .starts_with("choice \"many\" of input `n`: `many` is not an integer"),
            "{:?}",
            m
        );
        assert_eq!(
            rules_text(&spec("{type: integer, min: 1, max: 30}")).as_deref(),
            Some("1 to 30")
        );
        assert_eq!(rules_text(&spec("{type: string}")), None);
    }
}
