//! Request bodies encoded for sending, and response bodies decoded by their content type.
use serde_json::Value;

use super::{atom, Body, VendorError, VendorKind};

/// An encoded request body.
#[derive(Clone, PartialEq)]
pub struct Encoded {
    /// The `Content-Type` to send with it, if the body has one.
    pub content_type: Option<String>,
    /// The body's bytes.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Encoded {
    // The body may hold secrets (client secret, assertion, password): length only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded")
            .field("content_type", &self.content_type)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Encodes a body the generic way: JSON, form, Atom entry or text; `Empty` gives `None`.
pub fn encode_body(vendor: VendorKind, body: &Body) -> Result<Option<Encoded>, VendorError> {
    Ok(match body {
        Body::Empty => None,
        Body::Json(v) => Some(Encoded {
            content_type: Some("application/json".into()),
            bytes: serde_json::to_vec(v).map_err(|e| VendorError::Config {
                vendor,
                message: format!("cannot encode the JSON body: {e}"),
            })?,
        }),
        Body::Form(pairs) => Some(Encoded {
            content_type: Some("application/x-www-form-urlencoded".into()),
            bytes: form_encode(pairs).into_bytes(),
        }),
        Body::Atom(props) => Some(Encoded {
            content_type: Some("application/atom+xml".into()),
            bytes: atom::build_entry(props).into_bytes(),
        }),
        Body::Text { content_type, text } => Some(Encoded {
            content_type: Some(content_type.clone()),
            bytes: text.clone().into_bytes(),
        }),
    })
}

/// `application/x-www-form-urlencoded` serialization, pairs in the given order.
pub fn form_encode(pairs: &[(String, String)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// Removes a leading UTF-8 byte order mark.
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// The MIME type of a `Content-Type` value: lower case, no parameters, "" when absent.
pub fn mime_of(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a MIME type (as [`mime_of`] gives it) is JSON.
pub fn is_json_mime(mime: &str) -> bool {
    mime == "application/json" || mime.ends_with("+json") || mime.ends_with("/json")
}

/// Whether a MIME type (as [`mime_of`] gives it) is XML (Atom included).
pub fn is_xml_mime(mime: &str) -> bool {
    mime == "application/atom+xml" || mime.ends_with("/xml") || mime.ends_with("+xml")
}

/// A body declared JSON that does not parse as JSON.
#[derive(Debug, thiserror::Error)]
#[error("invalid JSON: {0}")]
pub struct InvalidJson(serde_json::Error);

/// Parses a body by content type: JSON (BOM tolerated), Atom/XML into the [`atom`] shape,
/// anything else a JSON string of the text. An empty body is `null`.
pub fn parse_body(content_type: Option<&str>, bytes: &[u8]) -> Result<Value, InvalidJson> {
    let bytes = strip_bom(bytes);
    let text = String::from_utf8_lossy(bytes);
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    let mime = mime_of(content_type);
    if is_json_mime(&mime) {
        return serde_json::from_slice(bytes).map_err(InvalidJson);
    }
    if is_xml_mime(&mime) {
        return Ok(atom::parse(&text));
    }
    if mime.is_empty() {
        let t = text.trim_start();
        if t.starts_with('{') || t.starts_with('[') {
            if let Ok(v) = serde_json::from_slice(bytes) {
                return Ok(v);
            }
        }
    }
    Ok(Value::String(text.into_owned()))
}
