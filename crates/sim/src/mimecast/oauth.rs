//! Mimecast API 2.0 `POST /oauth/token`: the client-credentials grant.
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde_json::json;

use crate::bump;

use super::auth::header_str;
use super::{lock, MimecastSim, BODY_LIMIT};

impl MimecastSim {
    /// `POST /oauth/token`: the API 2.0 client-credentials grant.
    pub(super) async fn issue_token(&self, req: Request) -> Response {
        if req.method() != Method::POST {
            return oauth_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "The token endpoint accepts POST only.",
            );
        }
        let is_form = header_str(req.headers(), header::CONTENT_TYPE.as_str()).is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
        if !is_form {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Content-Type must be application/x-www-form-urlencoded.",
            );
        }
        let Ok(body) = axum::body::to_bytes(req.into_body(), BODY_LIMIT).await else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The request body could not be read.",
            );
        };
        let form = match crate::mailstore::parse_form(&body) {
            Ok(f) => f,
            Err(e) => {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string())
            }
        };
        let get = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let Some(grant_type) = get("grant_type") else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing parameter: grant_type.",
            );
        };
        if get("client_id") != Some(self.client_id.as_str())
            || get("client_secret") != Some(self.client_secret.as_str())
        {
            bump(&self.faults.stats.unauthenticated);
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Client authentication failed: unknown client or wrong secret.",
            );
        }
        if grant_type != "client_credentials" {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Only the client_credentials grant is supported.",
            );
        }
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = URL_SAFE_NO_PAD.encode(raw);
        lock(&self.tokens).insert(token.clone(), Instant::now() + self.token_ttl);
        self.tokens_issued.fetch_add(1, Ordering::Relaxed);
        let mut resp = Json(json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.token_ttl.as_secs(),
        }))
        .into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

pub(super) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut resp = (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
