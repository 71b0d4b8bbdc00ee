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
}

impl ApiStatus {
    fn http(self) -> StatusCode {
        match self {
            ApiStatus::InvalidArgument => StatusCode::BAD_REQUEST,
            ApiStatus::NotFound => StatusCode::NOT_FOUND,
            ApiStatus::OutOfRange => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiStatus::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ApiStatus::InvalidArgument => "INVALID_ARGUMENT",
            ApiStatus::NotFound => "NOT_FOUND",
            ApiStatus::OutOfRange => "OUT_OF_RANGE",
            ApiStatus::ResourceExhausted => "RESOURCE_EXHAUSTED",
        }
    }

    /// The legacy `errors[].reason` Google still sends next to `status`.
    fn reason(self) -> &'static str {
        match self {
            ApiStatus::InvalidArgument => "badRequest",
            ApiStatus::NotFound => "notFound",
            ApiStatus::OutOfRange => "requestedRangeNotSatisfiable",
            ApiStatus::ResourceExhausted => "rateLimitExceeded",
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

/// 404 for a path neither service serves.
pub(super) async fn no_route() -> Response {
    api_error(
        ApiStatus::NotFound,
        "The requested URL was not found on this server.",
    )
}
