//! What an error answer says: the vendor's own message (JSON, Google-style XML, HTML) or a
//! short excerpt of the body, secrets masked before anything is cut; and error chains.
pub mod mimecast;
mod xml;

use serde_json::Value;

use super::body::{is_xml_mime, mime_of};
use crate::secrets::Secrets;
pub use mimecast::{mimecast_fail, MimecastFail};
use xml::xml_error_message;

/// Longest excerpt of a response body quoted in an error message.
pub(crate) const EXCERPT_CHARS: usize = 200;

/// The vendor's own error message in an error answer, else a short excerpt of the body
/// (`secrets` masked before it is cut).
pub fn error_message(
    body: &Value,
    text: &str,
    content_type: Option<&str>,
    secrets: &Secrets,
) -> String {
    if let Some(m) = json_error_message(body, secrets) {
        return m;
    }
    // JSON sent with another content type.
    if body.is_string() && text.trim_start().starts_with('{') {
        if let Some(m) = serde_json::from_str::<Value>(text.trim())
            .ok()
            .as_ref()
            .and_then(|v| json_error_message(v, secrets))
        {
            return m;
        }
    }
    let mime = mime_of(content_type);
    let t = text.trim_start();
    if is_xml_mime(&mime) || mime == "text/html" || t.starts_with('<') {
        if let Some(m) = xml_error_message(text, secrets) {
            return m;
        }
    }
    let ex = excerpt(text, secrets);
    if ex.is_empty() {
        "(empty body)".to_string()
    } else {
        ex
    }
}

/// Mimecast `fail[].errors[]`, MailStore `error.message`, OAuth `error_description`, or a
/// plain `message`/`error` string.
pub fn json_error_message(body: &Value, secrets: &Secrets) -> Option<String> {
    let obj = body.as_object()?;
    if let Some(fail) = mimecast_fail(body, secrets) {
        if !fail.codes.is_empty() || !fail.message.is_empty() {
            return Some(fail.message);
        }
    }
    if let Some(err) = obj.get("error") {
        if let Some(m) = err.get("message").and_then(Value::as_str) {
            return Some(m.to_string());
        }
        if let Some(d) = obj.get("error_description").and_then(Value::as_str) {
            return Some(match err.as_str() {
                Some(e) => format!("{e}: {d}"),
                None => d.to_string(),
            });
        }
        if let Some(e) = err.as_str() {
            return Some(e.to_string());
        }
    }
    for key in ["message", "error_description", "detail", "title"] {
        if let Some(m) = obj.get(key).and_then(Value::as_str) {
            return Some(m.to_string());
        }
    }
    None
}

/// The first characters of a text, whitespace collapsed: `secrets` are masked first (a secret
/// crossing the cut or holding runs of blanks is never shown in part), then the text is
/// collapsed and cut.
pub fn excerpt(text: &str, secrets: &Secrets) -> String {
    let masked = secrets.mask_window(text, EXCERPT_SCAN_BYTES);
    let collapsed = masked.split_whitespace().collect::<Vec<_>>().join(" ");
    cut_chars(&collapsed, EXCERPT_CHARS)
}

/// How much of a text an excerpt or first line looks at: twenty times the excerpt, enough
/// for any readable message, and a bound on the work of masking (every registered secret is
/// looked for in it) an error body that may be 64 MiB.
const EXCERPT_SCAN_BYTES: usize = 4 << 10;

/// `text` cut to `max` characters, `…` marking a cut: the one shortening of texts shown to
/// people (excerpts, labels, outputs). Callers mask secrets first, so a cut never shows part
/// of one.
pub(crate) fn cut_chars(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        let mut s: String = text.chars().take(max).collect();
        s.push('…');
        s
    } else {
        text.to_string()
    }
}

/// The first non-blank line of a text, trimmed and shortened ("" for an empty body);
/// `secrets` are masked before the line is taken and cut.
pub fn first_line(text: &str, secrets: &Secrets) -> String {
    let masked = secrets.mask_window(text, EXCERPT_SCAN_BYTES);
    let line = masked
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    const MAX: usize = 120;
    cut_chars(line, MAX)
}
