//! Labels that name a loop's iteration by its item (`verify[0: store-a]`), so people can tell
//! iterations apart in the console, JUnit and `runs show`; step paths (journal keys) keep the
//! bare index.
use serde_json::Value;

use crate::secrets::Secrets;

/// Keys of an object item that most likely name it, in order of preference.
const NAMING_KEYS: [&str; 10] = [
    "id", "name", "email", "user", "mailbox", "store", "store_id", "key", "title", "label",
];

/// The longest label shown, in characters (longer ones end in `…`).
const MAX_LABEL: usize = 32;

/// A short, safe label of `item`: a scalar's text, or an object's likely naming field; secret
/// values masked (before shortening, so no part of a secret shows), control characters and
/// brackets replaced. None when nothing names the item (the index alone is shown).
pub(crate) fn item_label(item: &Value, secrets: &Secrets) -> Option<String> {
    let text = match item {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Object(o) => NAMING_KEYS.iter().find_map(|k| scalar_text(o.get(*k)?))?,
        Value::Null | Value::Array(_) => return None,
    };
    let masked = secrets.mask(&text);
    let clean: String = masked
        .trim()
        .chars()
        .map(|c| match c {
            '[' | ']' => '_',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    if clean.is_empty() {
        return None;
    }
    Some(shorten(&clean, MAX_LABEL))
}

/// The label prefix of one iteration of the loop shown as `shown` (its label, else its path):
/// `shown[index: label].`, or `shown[index].` when nothing names the item.
pub(crate) fn prefix(shown: &str, index: usize, item: &Value, secrets: &Secrets) -> String {
    match item_label(item, secrets) {
        Some(l) => format!("{shown}[{index}: {l}]."),
        None => format!("{shown}[{index}]."),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_objects_and_secrets() {
        let s = Secrets::new();
        s.add("hunter2-very-secret");
        assert_eq!(
            item_label(&json!("store-a"), &s).as_deref(),
            Some("store-a")
        );
        assert_eq!(item_label(&json!(7), &s).as_deref(), Some("7"));
        let user = json!({"email": "ann@example.com", "x": 1});
        assert_eq!(item_label(&user, &s).as_deref(), Some("ann@example.com"));
        let both = json!({"name": "Ann", "id": "u1"});
        assert_eq!(item_label(&both, &s).as_deref(), Some("u1"));
        assert_eq!(item_label(&json!({"x": 1}), &s), None);
        assert_eq!(item_label(&json!([1]), &s), None);
        let secret = item_label(&json!("hunter2-very-secret"), &s).unwrap();
        assert!(!secret.contains("hunter2"), "{secret}");
        let long = item_label(&json!("a]b\nc".repeat(20)), &s).unwrap();
        assert_eq!(long.chars().count(), MAX_LABEL);
        assert!(long.ends_with('…') && !long.contains(']') && !long.contains('\n'));
        assert_eq!(prefix("v", 0, &json!("a"), &s), "v[0: a].");
        assert_eq!(prefix("v[1: b].w", 2, &json!(null), &s), "v[1: b].w[2].");
    }
}
