//! The Mimecast request and answer envelopes: `{"meta":…,"data":[…]}`, `fail` items, paging.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{json, Map, Value};

use super::{data, MimecastSim, MAX_PAGE_SIZE};

impl MimecastSim {
    /// Reads `meta.pagination` (`pageSize`, `pageToken`); pushes an error when it is invalid.
    pub(super) fn paging(
        &self,
        meta: &Map<String, Value>,
        kind: &str,
        query: u64,
        total: usize,
        errors: &mut Vec<FieldError>,
    ) -> Option<Paging> {
        let pagination = match meta.get("pagination") {
            None | Some(Value::Null) => None,
            Some(Value::Object(p)) => Some(p),
            Some(_) => {
                errors.push(FieldError::new(
                    "err_validation_invalid_type",
                    Some("pagination"),
                    "meta.pagination must be an object.",
                ));
                return None;
            }
        };
        let size = match pagination.and_then(|p| p.get("pageSize")) {
            None | Some(Value::Null) => self.default_page_size,
            Some(v) => {
                let n = match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                };
                match n {
                    Some(n) if (1..=MAX_PAGE_SIZE as u64).contains(&n) => n as usize,
                    _ => {
                        errors.push(FieldError::new(
                            "err_validation_invalid_value",
                            Some("pageSize"),
                            &format!("pageSize must be an integer from 1 to {MAX_PAGE_SIZE}."),
                        ));
                        return None;
                    }
                }
            }
        };
        let offset = match pagination.and_then(|p| p.get("pageToken")) {
            None | Some(Value::Null) => 0,
            Some(Value::String(s)) if s.is_empty() => 0,
            Some(Value::String(s)) => match data::parse_page_token(s, kind, query, total) {
                Some(offset) => offset,
                None => {
                    errors.push(FieldError::new(
                        "err_pagination_invalid_token",
                        Some("pageToken"),
                        "The page token is invalid or does not belong to this query.",
                    ));
                    return None;
                }
            },
            Some(_) => {
                errors.push(FieldError::new(
                    "err_validation_invalid_type",
                    Some("pageToken"),
                    "pageToken must be a string.",
                ));
                return None;
            }
        };
        Some(Paging { size, offset })
    }
}

/// A request body: `{"meta":{…},"data":[{…},…]}`.
pub(super) struct ApiRequest {
    pub(super) meta: Map<String, Value>,
    pub(super) data: Vec<Value>,
}

/// A request body the API refuses; its text is the message of the 400 answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    #[error("The request body is not valid JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("The request body must be a JSON object.")]
    NotObject,
    #[error("'data' must be an array.")]
    DataNotArray,
    #[error("Every item of 'data' must be an object.")]
    DataItemNotObject,
    #[error("'meta' must be an object.")]
    MetaNotObject,
}

impl ApiRequest {
    /// Parses a body (JSON, or the Python sample's `str(dict)`).
    pub(super) fn parse(body: &[u8]) -> Result<Self, BodyError> {
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => super::pyrepr::to_json(body).ok_or(BodyError::NotJson(e))?,
        };
        let Value::Object(mut obj) = value else {
            return Err(BodyError::NotObject);
        };
        let data = match obj.remove("data") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(BodyError::DataNotArray),
        };
        if data.iter().any(|d| !d.is_object()) {
            return Err(BodyError::DataItemNotObject);
        }
        let meta = match obj.remove("meta") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(BodyError::MetaNotObject),
        };
        Ok(ApiRequest { meta, data })
    }

    /// The first `data` item (list endpoints read one), or `{}`.
    pub(super) fn first_item(&self) -> Value {
        self.data.first().cloned().unwrap_or_else(|| json!({}))
    }
}

/// Binds page tokens to the query: the request item as sent.
pub(super) fn query_hash(item: &Value) -> u64 {
    data::fnv1a(item.to_string().as_bytes())
}

/// One page of a list.
pub(super) struct Paging {
    size: usize,
    offset: usize,
}

impl Paging {
    pub(super) fn slice<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        let start = self.offset.min(items.len());
        let end = (start + self.size).min(items.len());
        &items[start..end]
    }

    pub(super) fn meta(&self, kind: &str, query: u64, total: usize) -> Value {
        let mut m = json!({ "pageSize": self.size, "totalCount": total });
        if self.offset + self.size < total {
            m["next"] = json!(data::page_token(kind, self.offset + self.size, query));
        }
        if self.offset > 0 {
            let previous = self.offset.saturating_sub(self.size);
            m["previous"] = json!(data::page_token(kind, previous, query));
        }
        m
    }
}

/// A reason a function rejected its input.
pub(super) struct FieldError {
    code: &'static str,
    field: Option<&'static str>,
    message: String,
}

impl FieldError {
    pub(super) fn new(code: &'static str, field: Option<&'static str>, message: &str) -> Self {
        FieldError {
            code,
            field,
            message: message.to_string(),
        }
    }

    pub(super) fn to_json(&self) -> Value {
        let mut e = json!({ "code": self.code, "message": self.message, "retryable": false });
        if let Some(f) = self.field {
            e["field"] = json!(f);
        }
        e
    }
}

/// Reads an optional ISO 8601 date field; pushes an error when it is present but invalid.
pub(super) fn date_field(
    item: &Map<String, Value>,
    field: &'static str,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    match item.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let parsed = data::parse_iso(s);
            if parsed.is_none() {
                errors.push(FieldError::new(
                    "err_validation_date_format",
                    Some(field),
                    &format!("{field} must be an ISO 8601 date such as 2015-11-16T14:49:18+0000."),
                ));
            }
            parsed
        }
        Some(_) => {
            errors.push(FieldError::new(
                "err_validation_invalid_type",
                Some(field),
                &format!("{field} must be a string."),
            ));
            None
        }
    }
}

/// The envelope of a function that ran: HTTP 200, `meta.status` 200.
pub(super) fn answer(data: Vec<Value>, fail: Vec<Value>, pagination: Option<Value>) -> Response {
    let mut meta = json!({ "status": 200 });
    if let Some(p) = pagination {
        meta["pagination"] = p;
    }
    Json(json!({ "meta": meta, "data": data, "fail": fail })).into_response()
}

pub(super) fn fail_item(key: Value, errors: Vec<FieldError>) -> Value {
    let errors: Vec<Value> = errors.iter().map(FieldError::to_json).collect();
    json!({ "key": key, "errors": errors })
}

/// A function that rejected its input: HTTP 200 with the reasons in `fail`.
pub(super) fn fail_answer(key: Value, errors: Vec<FieldError>) -> Response {
    answer(vec![], vec![fail_item(key, errors)], None)
}

/// An envelope for a request that did not reach a function.
pub(super) fn error_envelope(
    status: StatusCode,
    code: &str,
    message: &str,
    retryable: bool,
) -> Response {
    let body = json!({
        "meta": { "status": status.as_u16() },
        "data": [],
        "fail": [{ "errors": [{ "code": code, "message": message, "retryable": retryable }] }],
    });
    (status, Json(body)).into_response()
}

pub(super) fn bad_request(message: &str) -> Response {
    error_envelope(
        StatusCode::BAD_REQUEST,
        "err_xdk_bad_request",
        message,
        false,
    )
}

/// An injected 429 (a burst the window does not show): `X-RateLimit-Remaining: 0` and a short
/// `X-RateLimit-Reset` (milliseconds) for every caller, plus `Retry-After` for 2.0 callers.
pub(super) fn rate_limited(bearer: bool) -> Response {
    let reset_ms: u32 = rand::thread_rng().gen_range(500..=1000);
    quota_exceeded(bearer, u64::from(reset_ms))
}

/// 429 with the reset time of the quota, in milliseconds.
pub(super) fn quota_exceeded(bearer: bool, reset_ms: u64) -> Response {
    let mut resp = error_envelope(
        StatusCode::TOO_MANY_REQUESTS,
        "err_xdk_rate_limit_exceeded",
        "Quota exceeded: too many requests for this resource",
        true,
    );
    let headers = resp.headers_mut();
    if bearer {
        let secs = reset_ms.div_ceil(1000).max(1);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset_ms));
    headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
    resp
}
