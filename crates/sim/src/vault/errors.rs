//! Google's JSON error body (`{"error": {"code", "message", "errors", "status"}}`) for the
//! simulated Vault and Cloud Storage answers, with the canonical status each one names.
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The canonical error statuses the simulated Vault and Storage answers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ApiStatus {
    /// 400: a malformed or unsupported request.
    InvalidArgument,
    /// 404: no such matter, export, bucket or object.
    NotFound,
    /// 416: a byte range outside the object.
    OutOfRange,
    /// 429: a quota or a product limit (20 exports in progress) is spent.
    ResourceExhausted,
    /// 501: a method the simulator does not serve (matters close, update, delete, ...).
    Unimplemented,
}

impl ApiStatus {
    fn http(self) -> StatusCode {
        match self {
            ApiStatus::InvalidArgument => StatusCode::BAD_REQUEST,
            ApiStatus::NotFound => StatusCode::NOT_FOUND,
            ApiStatus::OutOfRange => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiStatus::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            ApiStatus::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ApiStatus::InvalidArgument => "INVALID_ARGUMENT",
            ApiStatus::NotFound => "NOT_FOUND",
            ApiStatus::OutOfRange => "OUT_OF_RANGE",
            ApiStatus::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ApiStatus::Unimplemented => "UNIMPLEMENTED",
        }
    }

    /// The legacy `errors[].reason` Google still sends next to `status`.
    fn reason(self) -> &'static str {
        match self {
            ApiStatus::InvalidArgument => "badRequest",
            ApiStatus::NotFound => "notFound",
            ApiStatus::OutOfRange => "requestedRangeNotSatisfiable",
            ApiStatus::ResourceExhausted => "rateLimitExceeded",
            ApiStatus::Unimplemented => "notImplemented",
        }
    }
}

/// A refusal not yet turned into an answer (what request checks return).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ApiError {
    status: ApiStatus,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: ApiStatus, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        api_error(self.status, self.message)
    }
}

/// A Google JSON error answer.
pub(super) fn api_error(status: ApiStatus, message: impl Into<String>) -> Response {
    let message = message.into();
    let http = status.http();
    let body = serde_json::json!({
        "error": {
            "code": http.as_u16(),
            "message": message,
            "errors": [{ "message": message, "domain": "global", "reason": status.reason() }],
            "status": status.name(),
        }
    });
    (
        http,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

/// 429 with `Retry-After: 1`, for an injected rate-limit fault.
pub(super) fn rate_limited() -> Response {
    let mut r = api_error(
        ApiStatus::ResourceExhausted,
        "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute \
         per project'.",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// A JSON success answer (`200` with `application/json`).
pub(super) fn json_ok(value: &serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        value.to_string(),
    )
        .into_response()
}

/// 404 for a path neither service serves. The request body is read first, so the
/// connection stays usable for the client's next request (keep-alive).
pub(super) async fn no_route(_body: axum::body::Bytes) -> Response {
    api_error(
        ApiStatus::NotFound,
        "The requested URL was not found on this server.",
    )
}

/// 501 `UNIMPLEMENTED` in Google's JSON error format for a method the simulator does not
/// serve on a path it knows (e.g. `POST /v1/matters/{id}:close`, `PUT`/`DELETE` of a matter),
/// instead of a bare 405. The body is read first, so the connection stays open.
pub(super) async fn unserved_method(
    method: axum::http::Method,
    uri: axum::http::Uri,
    _body: axum::body::Bytes,
) -> Response {
    api_error(
        ApiStatus::Unimplemented,
        format!(
            "{method} {}: this method is not implemented by the auditflow simulator",
            uri.path()
        ),
    )
}
