//! Google-style JSON errors and Atom responses shared by the endpoints.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ATOM_CONTENT_TYPE;

/// A Google-style JSON error.
pub(super) fn google_error(
    status: StatusCode,
    reason: &str,
    message: impl Into<String>,
) -> Response {
    let message = message.into();
    let status_name = match status.as_u16() {
        400 | 415 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 if reason.ends_with("LimitExceeded") => "RESOURCE_EXHAUSTED",
        403 => "PERMISSION_DENIED",
        404 | 410 => "NOT_FOUND",
        416 => "OUT_OF_RANGE",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    };
    let body = serde_json::json!({
        "error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{ "message": message, "domain": "global", "reason": reason }],
            "status": status_name,
        }
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn bad_request(message: impl Into<String>) -> Response {
    google_error(StatusCode::BAD_REQUEST, "invalid", message)
}

pub(super) fn export_not_found(id: &str) -> Response {
    google_error(
        StatusCode::NOT_FOUND,
        "notFound",
        format!("No mailbox export request with id '{id}' for this domain and user"),
    )
}

pub(super) fn atom_response(status: StatusCode, doc: String) -> Response {
    (status, [(header::CONTENT_TYPE, ATOM_CONTENT_TYPE)], doc).into_response()
}

pub(super) fn not_found_response() -> Response {
    google_error(StatusCode::NOT_FOUND, "notFound", "Not Found")
}

pub(super) async fn not_found() -> Response {
    not_found_response()
}
