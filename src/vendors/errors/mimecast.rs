//! Mimecast's `fail` array: the error codes, one message and whether any is retryable.
use serde_json::Value;

use super::excerpt;
use crate::secrets::Secrets;

/// What a Mimecast `fail` array says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MimecastFail {
    /// The error codes given (`err_xdk_...`), in order; entries without a code add none.
    pub codes: Vec<String>,
    /// Every error as `code: message`, joined with "; ".
    pub message: String,
    /// Whether any error says `retryable: true`.
    pub retryable: bool,
}

/// Reads a Mimecast `fail` array. None when `fail` is absent or empty. An entry without
/// errors is quoted as an excerpt, `secrets` masked.
pub fn mimecast_fail(body: &Value, secrets: &Secrets) -> Option<MimecastFail> {
    let fails = body.get("fail")?.as_array()?;
    if fails.is_empty() {
        return None;
    }
    let mut out = MimecastFail::default();
    let mut parts = Vec::new();
    for f in fails {
        match f.get("errors").and_then(Value::as_array) {
            Some(errors) if !errors.is_empty() => {
                for e in errors {
                    parts.push(read_error(e, &mut out));
                }
            }
            _ => parts.push(format!("failed: {}", excerpt(&f.to_string(), secrets))),
        }
    }
    out.message = parts.join("; ");
    Some(out)
}

/// One `errors[]` entry: its code and retryable flag go into `out`; returns its text.
fn read_error(e: &Value, out: &mut MimecastFail) -> String {
    let code = e.get("code").and_then(Value::as_str).unwrap_or("");
    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
    if e.get("retryable").and_then(Value::as_bool) == Some(true) {
        out.retryable = true;
    }
    if !code.is_empty() {
        out.codes.push(code.to_string());
    }
    match (code.is_empty(), message.is_empty()) {
        (false, false) => format!("{code}: {message}"),
        (false, true) => code.to_string(),
        (true, false) => message.to_string(),
        (true, true) => "unspecified error".to_string(),
    }
}
