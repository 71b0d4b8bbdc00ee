//! Bearer checks of API calls (with fault injection) and the service-account `POST /token` endpoint.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use crate::{bump, Injected};

use super::answers::google_error;
use super::token;
use super::{lock, GoogleSim, IssuedToken, JWT_BEARER};

impl GoogleSim {
    /// Fault injection, then bearer authentication.
    pub(super) async fn guard(&self, headers: &HeaderMap) -> Option<Response> {
        match self.faults.draw("google").await {
            Injected::TooManyRequests => {
                let mut r = google_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rateLimitExceeded",
                    "Rate Limit Exceeded",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Some(r);
            }
            Injected::ServerError(s) => return Some(crate::server_error(s)),
            Injected::None => {}
        }
        self.authenticate(headers)
    }

    /// Bearer authentication for the audit API (its scope).
    pub(super) fn authenticate(&self, headers: &HeaderMap) -> Option<Response> {
        self.authenticate_for(headers, &[token::AUDIT_SCOPE])
    }

    /// Bearer authentication: the static token (whose scopes are unknown, so it passes), or an
    /// issued, unexpired token carrying one of `scopes` (403 `insufficient_scope` otherwise, as
    /// Google answers a token without the API's scope). None when the request may proceed.
    pub(crate) fn authenticate_for(
        &self,
        headers: &HeaderMap,
        scopes: &[&str],
    ) -> Option<Response> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().to_string())
            })
            .filter(|t| !t.is_empty());
        let scoped = match &presented {
            Some(t) if *t == self.cfg.credentials.google_access_token => Some(true),
            Some(t) => lock(&self.state)
                .tokens
                .get(t)
                .filter(|issued| issued.until > Instant::now())
                .map(|issued| issued.scopes.iter().any(|s| scopes.contains(&s.as_str()))),
            None => None,
        };
        match scoped {
            Some(true) => return None,
            Some(false) => return Some(insufficient_scope(scopes)),
            None => {}
        }
        bump(&self.stats().unauthenticated);
        let mut r = google_error(
            StatusCode::UNAUTHORIZED,
            "authError",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential.",
        );
        let challenge = if presented.is_some() {
            "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\""
        } else {
            "Bearer realm=\"https://accounts.google.com/\""
        };
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        Some(r)
    }
}

/// 403 for a valid token without the API's scope, with the RFC 6750 challenge.
fn insufficient_scope(scopes: &[&str]) -> Response {
    let mut r = google_error(
        StatusCode::FORBIDDEN,
        "insufficientPermissions",
        "Request had insufficient authentication scopes.",
    );
    let challenge = format!(
        "Bearer realm=\"https://accounts.google.com/\", error=\"insufficient_scope\", scope=\"{}\"",
        scopes.join(" ")
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// Google's standard OAuth token endpoint.
pub(super) const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// `POST /token`: a JWT-bearer grant checked as Google does, answered with a fresh access
/// token carrying the scopes granted, or with the OAuth error.
pub(super) async fn token_endpoint(State(sim): State<Arc<GoogleSim>>, body: Bytes) -> Response {
    bump(&sim.stats().google_token_requests);
    match granted_scopes(&sim, &body) {
        Ok(scopes) => issue_token(&sim, scopes),
        Err(e) => {
            bump(&sim.stats().unauthenticated);
            oauth_answer(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": e.error, "error_description": e.description }),
            )
        }
    }
}

/// The scopes a token request's form (`grant_type`, `assertion`) is granted.
fn granted_scopes(sim: &GoogleSim, body: &[u8]) -> Result<Vec<String>, token::GrantError> {
    let mut grant_type = None;
    let mut assertion = None;
    for (k, v) in url::form_urlencoded::parse(body) {
        match k.as_ref() {
            "grant_type" => grant_type = Some(v.into_owned()),
            "assertion" => assertion = Some(v.into_owned()),
            _ => {}
        }
    }
    let refused =
        |error: &'static str, description: String| token::GrantError { error, description };
    match grant_type.as_deref() {
        None => {
            return Err(refused(
                "invalid_request",
                "Missing required parameter: grant_type".into(),
            ))
        }
        Some(JWT_BEARER) => {}
        Some(other) => {
            return Err(refused(
                "unsupported_grant_type",
                format!("Invalid grant_type: {other}"),
            ))
        }
    }
    let Some(assertion) = assertion else {
        return Err(refused(
            "invalid_request",
            "Missing required parameter: assertion".into(),
        ));
    };
    let base = sim.base();
    // Google checks `aud` against its token endpoints, whatever `token_uri` a key file names:
    // its auth library signs for the standard URL; others sign for the key file's `token_uri`
    // (this endpoint's own URL, as written in the simulator's key file) (issue 12 item 7).
    let own = format!("{base}/token");
    let audiences = [own.as_str(), GOOGLE_TOKEN_URL];
    let expected = token::Expected {
        audiences: &audiences,
        subject: &sim.cfg.credentials.google_admin_email,
    };
    sim.account
        .verify_assertion(&assertion, &expected, Utc::now().timestamp())
}

/// A fresh access token for `scopes`, kept for the configured lifetime (expired ones dropped).
fn issue_token(sim: &GoogleSim, scopes: Vec<String>) -> Response {
    let access_token = token::new_access_token();
    let ttl = sim.cfg.google_token_ttl;
    {
        let mut st = lock(&sim.state);
        let now = Instant::now();
        st.tokens.retain(|_, issued| issued.until > now);
        let until = now + ttl;
        st.tokens
            .insert(access_token.clone(), IssuedToken { until, scopes });
    }
    sim.tokens_issued.fetch_add(1, Ordering::Relaxed);
    oauth_answer(
        StatusCode::OK,
        serde_json::json!({
            "access_token": access_token,
            "expires_in": ttl.as_secs(),
            "token_type": "Bearer",
        }),
    )
}

/// A token endpoint's JSON answer, never cached.
fn oauth_answer(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}
