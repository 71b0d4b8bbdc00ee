//! The records a failed condition selected with `filter`, shown in its failure message.
//!
//! A rule such as `{{ eq (len (filter response.body.data "status" "failed")) 0 }}` fails with
//! a count; the auditor needs the records that broke it. Each `(filter ...)` of the condition
//! is evaluated again over the same answer and its first [`SHOWN`] records are listed, each
//! masked and cut like a vendor excerpt (the whole answer is in `save_to`, written before the
//! check).
use serde_json::Value;

use crate::secrets::Secrets;
use crate::template::Template;

/// Records listed per `filter` call; the rest are counted.
const SHOWN: usize = 3;

/// Message lines for each `(filter ...)` in `cond`: how many records it selected over `ctx`
/// and the first few of them. A call that cannot be evaluated again is left out.
pub(super) fn matched_records(cond: &str, ctx: &Value, secrets: &Secrets) -> Vec<String> {
    let mut lines = Vec::new();
    for call in filter_calls(cond) {
        let Some(Value::Array(records)) = evaluate(call, ctx) else {
            continue;
        };
        lines.push(match records.len() {
            0 => format!("{call} selected no records"),
            1 => format!("{call} selected 1 record:"),
            n => format!("{call} selected {n} records:"),
        });
        for record in records.iter().take(SHOWN) {
            let text = record.to_string();
            lines.push(format!(
                "  {}",
                crate::vendors::errors::excerpt(&text, secrets)
            ));
        }
        if records.len() > SHOWN {
            lines.push(format!("  … and {} more", records.len() - SHOWN));
        }
    }
    lines
}

/// The value of one sub-expression over `ctx`.
fn evaluate(call: &str, ctx: &Value) -> Option<Value> {
    Template::compile(&format!("{{{{ {call} }}}}"))
        .ok()?
        .render_value(ctx)
        .ok()
}

/// Each `(filter ...)` sub-expression of a template source, as written (parentheses
/// included; parentheses inside quoted arguments do not count).
fn filter_calls(src: &str) -> Vec<&str> {
    let mut calls = Vec::new();
    let mut from = 0;
    while let Some(at) = src[from..].find("(filter ").map(|i| from + i) {
        match closing_paren(&src[at..]) {
            Some(len) => {
                calls.push(&src[at..at + len]);
                from = at + len;
            }
            None => break,
        }
    }
    calls
}

/// The length of the parenthesized expression `s` starts with, up to its matching `)`.
fn closing_paren(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            (None, _) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_each_filter_call_with_quoted_parentheses_inside() {
        let cond = r#"{{ and (eq (len (filter response.body.data "status" "failed (hard)")) 0) (eq (len (filter response.body.data "kind" "x")) 0) }}"#;
        assert_eq!(
            filter_calls(cond),
            vec![
                r#"(filter response.body.data "status" "failed (hard)")"#,
                r#"(filter response.body.data "kind" "x")"#,
            ]
        );
        assert!(filter_calls("{{ eq response.status 200 }}").is_empty());
        assert!(filter_calls("{{ len (filter response.body.data ").is_empty());
    }

    #[test]
    fn lists_the_first_selected_records_masked_and_counts_the_rest() {
        let secrets = Secrets::new();
        secrets.add("tok-ABCDEF-123");
        let records: Vec<Value> = (1..=5)
            .map(|i| json!({"id": i, "status": "failed", "by": "tok-ABCDEF-123"}))
            .collect();
        let ctx = json!({"response": {"body": {"data": records}}});
        let cond = r#"{{ eq (len (filter response.body.data "status" "failed")) 0 }}"#;
        let lines = matched_records(cond, &ctx, &secrets);
        assert_eq!(
            lines,
            vec![
                r#"(filter response.body.data "status" "failed") selected 5 records:"#,
                r#"  {"id":1,"status":"failed","by":"***"}"#,
                r#"  {"id":2,"status":"failed","by":"***"}"#,
                r#"  {"id":3,"status":"failed","by":"***"}"#,
                "  … and 2 more",
            ]
        );
        let none = r#"{{ eq (len (filter response.body.data "status" "ok")) 0 }}"#;
        assert_eq!(
            matched_records(none, &ctx, &secrets),
            vec![r#"(filter response.body.data "status" "ok") selected no records"#]
        );
    }
}
