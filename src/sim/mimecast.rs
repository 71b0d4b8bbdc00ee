//! Simulated Mimecast API 1.0 (HMAC-signed) and 2.0 (OAuth client credentials).
//!
//! Behaviour follows Mimecast's pages: every call is a POST with a `{"data":[…]}` body and
//! answers `{"meta":{"status":…},"data":[…],"fail":[…]}`. HTTP status codes speak only about
//! the HTTP call ("Response Codes" page): authentication failures are 401, malformed bodies
//! 400, unknown paths 404, rate limiting 429; a function that ran but rejected its input
//! (a missing field, a bad date, an invalid page token, an unknown channel) answers HTTP 200
//! with the reasons in `fail`, each with the offending `data` item as `key`.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use serde_json::{json, Map, Value};

use super::{bump, Faults, Injected, SimConfig, Stats};

mod data;
#[cfg(test)]
mod tests;

use data::{AuditEvent, QueueMessage};

type HmacSha1 = Hmac<sha1::Sha1>;

/// Largest request body read.
const BODY_LIMIT: usize = 1 << 20;
/// Largest page a client may ask for.
const MAX_PAGE_SIZE: usize = 500;

const FIND_PROCESSING: &str = "/api/gateway/find-processing-messages";
const CHANNEL_TOKEN: &str = "/api/ess/get-latest-channel-token";
const AUDIT_EVENTS: &str = "/api/audit/get-audit-events";
const TOKEN_PATH: &str = "/oauth/token";

/// The simulated Mimecast service.
pub struct MimecastSim {
    access_key: String,
    /// The secret key, base64-decoded (the HMAC key).
    secret_key: Vec<u8>,
    app_id: String,
    app_key: String,
    client_id: String,
    client_secret: String,
    max_skew: Duration,
    token_ttl: Duration,
    default_page_size: usize,
    queue: Vec<QueueMessage>,
    audit: Vec<AuditEvent>,
    faults: Arc<Faults>,
    /// Every `x-mc-req-id` that authenticated.
    seen_request_ids: Mutex<HashSet<String>>,
    /// API 2.0 bearer tokens and when they expire.
    tokens: Mutex<HashMap<String, Instant>>,
    tokens_issued: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MimecastSim {
    pub fn new(cfg: &SimConfig, faults: Arc<Faults>) -> Arc<Self> {
        let c = &cfg.credentials;
        let secret_key = STANDARD
            .decode(c.mimecast_secret_key.trim())
            .unwrap_or_else(|_| {
                tracing::warn!(
                    "sim mimecast: secret key is not base64; using its bytes as the key"
                );
                c.mimecast_secret_key.as_bytes().to_vec()
            });
        let anchor = Utc::now();
        Arc::new(MimecastSim {
            access_key: c.mimecast_access_key.clone(),
            secret_key,
            app_id: c.mimecast_app_id.clone(),
            app_key: c.mimecast_app_key.clone(),
            client_id: c.mimecast_client_id.clone(),
            client_secret: c.mimecast_client_secret.clone(),
            max_skew: cfg.mimecast_max_skew,
            token_ttl: cfg.mimecast_token_ttl,
            default_page_size: cfg.mimecast_default_page_size.clamp(1, MAX_PAGE_SIZE),
            queue: data::queue(cfg.mimecast_queue_size, anchor),
            audit: data::audit_events(cfg.mimecast_audit_events, anchor),
            faults,
            seen_request_ids: Mutex::new(HashSet::new()),
            tokens: Mutex::new(HashMap::new()),
            tokens_issued: AtomicU64::new(0),
        })
    }

    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new().fallback(dispatch).with_state(self)
    }

    /// Test hook: every API 2.0 token issued so far expires now.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for expiry in lock(&self.tokens).values_mut() {
            *expiry = now;
        }
    }

    /// How many API 2.0 tokens `/oauth/token` has issued.
    pub fn tokens_issued(&self) -> u64 {
        self.tokens_issued.load(Ordering::Relaxed)
    }

    /// Checks the credentials of an `/api/...` request. On success of an API 1.0 request its
    /// request id is recorded, so that it cannot authenticate a second time.
    fn authenticate(&self, headers: &HeaderMap, path: &str) -> Result<(), AuthFailure> {
        let auth = header_str(headers, header::AUTHORIZATION.as_str())
            .ok_or(AuthFailure::MissingAuthorization)?;
        if let Some(token) = strip_scheme(auth, "Bearer") {
            return self.check_bearer(token.trim());
        }
        let creds = auth
            .strip_prefix("MC ")
            .ok_or(AuthFailure::MalformedAuthorization)?;
        let (key, signature) = creds
            .trim()
            .rsplit_once(':')
            .ok_or(AuthFailure::MalformedAuthorization)?;
        let date = header_str(headers, "x-mc-date").ok_or(AuthFailure::MissingDate)?;
        let req_id = header_str(headers, "x-mc-req-id").ok_or(AuthFailure::MissingRequestId)?;
        let app_id = header_str(headers, "x-mc-app-id").ok_or(AuthFailure::MissingAppId)?;
        if key != self.access_key {
            return Err(AuthFailure::UnknownAccessKey);
        }
        if app_id != self.app_id {
            return Err(AuthFailure::WrongAppId);
        }
        let when = parse_mc_date(date).ok_or(AuthFailure::BadDate)?;
        if let Ok(max_skew) = TimeDelta::from_std(self.max_skew) {
            if (Utc::now() - when).abs() > max_skew {
                return Err(AuthFailure::DateOutOfRange);
            }
        }
        let sig = STANDARD
            .decode(signature.trim())
            .map_err(|_| AuthFailure::BadSignature)?;
        let mut mac =
            HmacSha1::new_from_slice(&self.secret_key).map_err(|_| AuthFailure::BadSignature)?;
        mac.update(format!("{date}:{req_id}:{path}:{}", self.app_key).as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| AuthFailure::BadSignature)?;
        if !lock(&self.seen_request_ids).insert(req_id.to_string()) {
            return Err(AuthFailure::ReusedRequestId);
        }
        Ok(())
    }

    fn check_bearer(&self, token: &str) -> Result<(), AuthFailure> {
        match lock(&self.tokens).get(token) {
            None => Err(AuthFailure::UnknownToken),
            Some(expiry) if Instant::now() >= *expiry => Err(AuthFailure::ExpiredToken),
            Some(_) => Ok(()),
        }
    }

    /// `POST /oauth/token`: the API 2.0 client-credentials grant.
    async fn issue_token(&self, req: Request) -> Response {
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
        let body = match axum::body::to_bytes(req.into_body(), BODY_LIMIT).await {
            Ok(b) => b,
            Err(_) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "The request body could not be read.",
                )
            }
        };
        let form = match super::mailstore::parse_form(&body) {
            Ok(f) => f,
            Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e),
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

    /// `/api/gateway/find-processing-messages`.
    fn find_processing(&self, req: &ApiRequest) -> Response {
        const OPTIONS: [&str; 7] = [
            "start",
            "end",
            "searchBy",
            "filterBy",
            "sortOrder",
            "sortBy",
            "type",
        ];
        let key = req.first_item();
        let item = key.as_object().cloned().unwrap_or_default();
        if !OPTIONS
            .iter()
            .any(|f| item.get(*f).is_some_and(|v| !v.is_null()))
        {
            return fail_answer(
                key,
                vec![FieldError::new(
                    "err_validation_missing",
                    None,
                    "At least one request option must be present: start, end, searchBy, filterBy, \
                     sortOrder, sortBy or type.",
                )],
            );
        }
        let mut errors = Vec::new();
        let now = Utc::now();
        let start = date_field(&item, "start", &mut errors).unwrap_or(now - TimeDelta::days(7));
        let end = date_field(&item, "end", &mut errors).unwrap_or(now);
        if start > end {
            errors.push(FieldError::new(
                "err_validation_date_range",
                Some("start"),
                "start must not be after end.",
            ));
        }
        let ascending = match item.get("sortOrder") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("descending") => false,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("ascending") => true,
            Some(_) => {
                errors.push(FieldError::new(
                    "err_validation_invalid_value",
                    Some("sortOrder"),
                    "sortOrder must be ascending or descending.",
                ));
                false
            }
        };
        let bulk = match item.get("type") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) if s == "processing" => false,
            Some(Value::String(s)) if s == "bulk_processing" => true,
            Some(_) => {
                errors.push(FieldError::new(
                    "err_validation_invalid_value",
                    Some("type"),
                    "type must be processing or bulk_processing.",
                ));
                false
            }
        };
        if item
            .get("sortBy")
            .is_some_and(|v| !v.is_string() && !v.is_null())
        {
            errors.push(FieldError::new(
                "err_validation_invalid_type",
                Some("sortBy"),
                "sortBy must be a string.",
            ));
        }
        let search = SearchBy::parse(item.get("searchBy"), &mut errors);
        let filter = QueueFilter::parse(item.get("filterBy"), &mut errors);

        // The simulated account has no bulk queue: bulk_processing lists nothing.
        let mut matching: Vec<&QueueMessage> = if bulk {
            Vec::new()
        } else {
            self.queue
                .iter()
                .filter(|m| m.created >= start && m.created <= end)
                .filter(|m| search.as_ref().is_none_or(|s| s.matches(m)))
                .filter(|m| filter.matches(m))
                .collect()
        };
        if ascending {
            matching.reverse();
        }
        let query = query_hash(&key);
        let paging = self.paging(&req.meta, "queue", query, matching.len(), &mut errors);
        let Some(paging) = paging.filter(|_| errors.is_empty()) else {
            return fail_answer(key, errors);
        };
        let page: Vec<Value> = paging
            .slice(&matching)
            .iter()
            .map(|m| m.to_json())
            .collect();
        answer(
            vec![json!({ "messages": page })],
            vec![],
            Some(paging.meta("queue", query, matching.len())),
        )
    }

    /// `/api/ess/get-latest-channel-token`: every `data` item is answered on its own.
    fn latest_channel_token(&self, req: &ApiRequest) -> Response {
        if req.data.is_empty() {
            return fail_answer(
                json!({}),
                vec![FieldError::new(
                    "err_validation_missing",
                    Some("channelId"),
                    "channelId is required.",
                )],
            );
        }
        let mut data = Vec::new();
        let mut fail = Vec::new();
        for item in &req.data {
            let error = match item.get("channelId") {
                None | Some(Value::Null) => FieldError::new(
                    "err_validation_missing",
                    Some("channelId"),
                    "channelId is required.",
                ),
                Some(Value::String(s)) if s.trim().is_empty() => FieldError::new(
                    "err_validation_blank",
                    Some("channelId"),
                    "channelId must not be blank.",
                ),
                Some(Value::String(s)) if s == "INVALID" => FieldError::new(
                    "err_ess_channel_not_found",
                    Some("channelId"),
                    "Channel not found.",
                ),
                Some(Value::String(s)) => {
                    data.push(json!({ "channelId": data::channel_token(s) }));
                    continue;
                }
                Some(_) => FieldError::new(
                    "err_validation_invalid_type",
                    Some("channelId"),
                    "channelId must be a string.",
                ),
            };
            fail.push(fail_item(item.clone(), vec![error]));
        }
        answer(data, fail, None)
    }

    /// `/api/audit/get-audit-events`.
    fn audit_events(&self, req: &ApiRequest) -> Response {
        let key = req.first_item();
        let item = key.as_object().cloned().unwrap_or_default();
        let mut errors = Vec::new();
        let start = date_field(&item, "startDateTime", &mut errors);
        let end = date_field(&item, "endDateTime", &mut errors).unwrap_or_else(Utc::now);
        if start.is_some_and(|s| s > end) {
            errors.push(FieldError::new(
                "err_validation_date_range",
                Some("startDateTime"),
                "startDateTime must not be after endDateTime.",
            ));
        }
        let text = match item.get("query") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.to_lowercase()),
            Some(_) => {
                errors.push(FieldError::new(
                    "err_validation_invalid_type",
                    Some("query"),
                    "query must be a string.",
                ));
                None
            }
        };
        let categories: Option<Vec<String>> = match item.get("categories") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => Some(
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            ),
            Some(_) => {
                errors.push(FieldError::new(
                    "err_validation_invalid_type",
                    Some("categories"),
                    "categories must be an array of strings.",
                ));
                None
            }
        };
        let matching: Vec<&AuditEvent> = self
            .audit
            .iter()
            .filter(|e| start.is_none_or(|s| e.event_time >= s) && e.event_time <= end)
            .filter(|e| {
                text.as_ref().is_none_or(|t| {
                    e.event_info.to_lowercase().contains(t) || e.user.to_lowercase().contains(t)
                })
            })
            .filter(|e| {
                categories
                    .as_ref()
                    .is_none_or(|c| c.iter().any(|c| c == e.category))
            })
            .collect();
        let query = query_hash(&key);
        let paging = self.paging(&req.meta, "audit", query, matching.len(), &mut errors);
        let Some(paging) = paging.filter(|_| errors.is_empty()) else {
            return fail_answer(key, errors);
        };
        let page = paging
            .slice(&matching)
            .iter()
            .map(|e| e.to_json())
            .collect();
        answer(
            page,
            vec![],
            Some(paging.meta("audit", query, matching.len())),
        )
    }

    /// Reads `meta.pagination` (`pageSize`, `pageToken`); pushes an error when it is invalid.
    fn paging(
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

/// Routes every request: `/oauth/token`, then `/api/...` through faults and authentication.
async fn dispatch(State(sim): State<Arc<MimecastSim>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path == TOKEN_PATH {
        return sim.issue_token(req).await;
    }
    if !path.starts_with("/api/") {
        return error_envelope(
            StatusCode::NOT_FOUND,
            "err_xdk_not_found",
            "The requested resource does not exist.",
            false,
        );
    }
    let bearer = header_str(req.headers(), header::AUTHORIZATION.as_str())
        .is_some_and(|a| strip_scheme(a, "Bearer").is_some());
    match sim.faults.draw("mimecast").await {
        Injected::TooManyRequests => return rate_limited(bearer),
        Injected::ServerError(status) => {
            // The request got past the gateway and failed behind it: a valid request id is
            // spent all the same (nothing is counted).
            let _ = sim.authenticate(req.headers(), &path);
            return super::server_error(status);
        }
        Injected::None => {}
    }
    if let Err(failure) = sim.authenticate(req.headers(), &path) {
        failure.count(&sim.faults.stats);
        return failure.response();
    }
    if !matches!(
        path.as_str(),
        FIND_PROCESSING | CHANNEL_TOKEN | AUDIT_EVENTS
    ) {
        return error_envelope(
            StatusCode::NOT_FOUND,
            "err_xdk_not_found",
            &format!("No such endpoint: {path}"),
            false,
        );
    }
    if req.method() != Method::POST {
        return error_envelope(
            StatusCode::METHOD_NOT_ALLOWED,
            "err_xdk_method_not_allowed",
            "This endpoint accepts POST only.",
            false,
        );
    }
    let body = match axum::body::to_bytes(req.into_body(), BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => return bad_request("The request body could not be read or is too large."),
    };
    let api = match ApiRequest::parse(&body) {
        Ok(r) => r,
        Err(message) => return bad_request(&message),
    };
    match path.as_str() {
        FIND_PROCESSING => sim.find_processing(&api),
        CHANNEL_TOKEN => sim.latest_channel_token(&api),
        _ => sim.audit_events(&api),
    }
}

/// Why a request did not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthFailure {
    MissingAuthorization,
    MalformedAuthorization,
    MissingDate,
    MissingRequestId,
    MissingAppId,
    UnknownAccessKey,
    WrongAppId,
    BadDate,
    DateOutOfRange,
    BadSignature,
    ReusedRequestId,
    UnknownToken,
    ExpiredToken,
}

impl AuthFailure {
    fn code_and_message(self) -> (&'static str, &'static str) {
        use AuthFailure::*;
        match self {
            MissingAuthorization => (
                "err_xdk_missing_authorization",
                "0001 Credentials are missing from the request",
            ),
            MalformedAuthorization => (
                "err_xdk_invalid_authorization",
                "0001 Authorization header must be 'MC accessKey:signature' or 'Bearer token'",
            ),
            MissingDate => ("err_xdk_missing_header", "0006 Missing header: x-mc-date"),
            MissingRequestId => ("err_xdk_missing_header", "0006 Missing header: x-mc-req-id"),
            MissingAppId => ("err_xdk_missing_header", "0006 Missing header: x-mc-app-id"),
            UnknownAccessKey => ("err_xdk_invalid_access_key", "0002 Invalid Access Key"),
            WrongAppId => ("err_xdk_invalid_app_id", "0003 Invalid Application ID"),
            BadDate => (
                "err_xdk_invalid_date",
                "0005 Invalid x-mc-date: expected 'EEE, dd MMM yyyy HH:mm:ss UTC'",
            ),
            DateOutOfRange => (
                "err_xdk_date_out_of_range",
                "0005 x-mc-date is outside the allowed time window",
            ),
            BadSignature => ("err_xdk_invalid_signature", "0004 Invalid Signature"),
            ReusedRequestId => (
                "err_xdk_request_id_reused",
                "0007 x-mc-req-id has already been used",
            ),
            UnknownToken => ("err_xdk_invalid_token", "Access token is invalid"),
            ExpiredToken => ("err_xdk_token_expired", "Access token has expired"),
        }
    }

    fn count(self, stats: &Stats) {
        bump(&stats.unauthenticated);
        match self {
            AuthFailure::BadSignature => bump(&stats.bad_signatures),
            AuthFailure::BadDate | AuthFailure::DateOutOfRange | AuthFailure::MissingDate => {
                bump(&stats.bad_dates)
            }
            AuthFailure::ReusedRequestId => bump(&stats.reused_request_ids),
            _ => {}
        }
    }

    fn response(self) -> Response {
        let (code, message) = self.code_and_message();
        error_envelope(StatusCode::UNAUTHORIZED, code, message, false)
    }
}

/// `x-mc-date`: `Tue, 24 Nov 2015 12:50:11 UTC` (Mimecast's own C# sample sends `GMT`).
fn parse_mc_date(s: &str) -> Option<DateTime<Utc>> {
    let base = s.strip_suffix(" UTC").or_else(|| s.strip_suffix(" GMT"))?;
    NaiveDateTime::parse_from_str(base, "%a, %d %b %Y %H:%M:%S")
        .ok()
        .map(|n| n.and_utc())
}

/// A header as text, when present, valid and not blank.
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
}

/// `Bearer abc` → `abc` (scheme compared case-insensitively).
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// A request body: `{"meta":{…},"data":[{…},…]}`.
struct ApiRequest {
    meta: Map<String, Value>,
    data: Vec<Value>,
}

impl ApiRequest {
    /// Parses a body; the error is the message of a 400 answer.
    fn parse(body: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| format!("The request body is not valid JSON: {e}"))?;
        let Value::Object(mut obj) = value else {
            return Err("The request body must be a JSON object.".into());
        };
        let data = match obj.remove("data") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(_) => return Err("'data' must be an array.".into()),
        };
        if data.iter().any(|d| !d.is_object()) {
            return Err("Every item of 'data' must be an object.".into());
        }
        let meta = match obj.remove("meta") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err("'meta' must be an object.".into()),
        };
        Ok(ApiRequest { meta, data })
    }

    /// The first `data` item (list endpoints read one), or `{}`.
    fn first_item(&self) -> Value {
        self.data.first().cloned().unwrap_or_else(|| json!({}))
    }
}

/// Binds page tokens to the query: the request item as sent.
fn query_hash(item: &Value) -> u64 {
    data::fnv1a(item.to_string().as_bytes())
}

/// One page of a list.
struct Paging {
    size: usize,
    offset: usize,
}

impl Paging {
    fn slice<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        let start = self.offset.min(items.len());
        let end = (start + self.size).min(items.len());
        &items[start..end]
    }

    fn meta(&self, kind: &str, query: u64, total: usize) -> Value {
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
struct FieldError {
    code: &'static str,
    field: Option<&'static str>,
    message: String,
}

impl FieldError {
    fn new(code: &'static str, field: Option<&'static str>, message: &str) -> Self {
        FieldError {
            code,
            field,
            message: message.to_string(),
        }
    }

    fn to_json(&self) -> Value {
        let mut e = json!({ "code": self.code, "message": self.message, "retryable": false });
        if let Some(f) = self.field {
            e["field"] = json!(f);
        }
        e
    }
}

/// Reads an optional ISO 8601 date field; pushes an error when it is present but invalid.
fn date_field(
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

/// `searchBy` of find-processing-messages.
struct SearchBy {
    field: SearchField,
    /// Lower-cased.
    value: String,
}

#[derive(Clone, Copy)]
enum SearchField {
    All,
    From,
    To,
    Subject,
    Info,
    RemoteIp,
}

impl SearchBy {
    fn parse(v: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<SearchBy> {
        let obj = match v {
            None | Some(Value::Null) => return None,
            Some(Value::Object(o)) => o,
            Some(_) => {
                errors.push(FieldError::new(
                    "err_validation_invalid_type",
                    Some("searchBy"),
                    "searchBy must be an object with fieldName and value.",
                ));
                return None;
            }
        };
        let field = match obj.get("fieldName").and_then(Value::as_str) {
            Some(f) if f.eq_ignore_ascii_case("ALL") => SearchField::All,
            Some(f) if f.eq_ignore_ascii_case("fromAddress") => SearchField::From,
            Some(f) if f.eq_ignore_ascii_case("toAddress") => SearchField::To,
            Some(f) if f.eq_ignore_ascii_case("subject") => SearchField::Subject,
            Some(f) if f.eq_ignore_ascii_case("info") => SearchField::Info,
            Some(f) if f.eq_ignore_ascii_case("remoteIp") => SearchField::RemoteIp,
            _ => {
                errors.push(FieldError::new(
                    "err_validation_invalid_value",
                    Some("searchBy.fieldName"),
                    "searchBy.fieldName must be one of ALL, fromAddress, toAddress, subject, info, \
                     remoteIp.",
                ));
                return None;
            }
        };
        match obj.get("value").and_then(Value::as_str) {
            Some(value) => Some(SearchBy {
                field,
                value: value.to_lowercase(),
            }),
            None => {
                errors.push(FieldError::new(
                    "err_validation_missing",
                    Some("searchBy.value"),
                    "searchBy.value is required.",
                ));
                None
            }
        }
    }

    fn matches(&self, m: &QueueMessage) -> bool {
        let has = |s: &str| s.to_lowercase().contains(&self.value);
        let from = || has(&m.from_env.email) || has(&m.from_header.email);
        match self.field {
            SearchField::From => from(),
            SearchField::To => has(&m.to.email),
            SearchField::Subject => has(&m.subject),
            SearchField::Info => has(m.info),
            SearchField::RemoteIp => has(&m.remote_ip),
            SearchField::All => {
                from() || has(&m.to.email) || has(&m.subject) || has(m.info) || has(&m.remote_ip)
            }
        }
    }
}

/// `filterBy` of find-processing-messages: routes and attachment presence. Values of the same
/// kind are alternatives; the two kinds must both hold.
#[derive(Default)]
struct QueueFilter {
    routes: Vec<&'static str>,
    attachments: Vec<bool>,
}

impl QueueFilter {
    fn parse(v: Option<&Value>, errors: &mut Vec<FieldError>) -> QueueFilter {
        let mut filter = QueueFilter::default();
        let items = match v {
            None | Some(Value::Null) => return filter,
            Some(Value::Array(a)) => a,
            Some(_) => {
                errors.push(FieldError::new(
                    "err_validation_invalid_type",
                    Some("filterBy"),
                    "filterBy must be an array of objects.",
                ));
                return filter;
            }
        };
        for f in items {
            let Some(obj) = f.as_object() else {
                errors.push(FieldError::new(
                    "err_validation_invalid_type",
                    Some("filterBy"),
                    "filterBy must be an array of objects.",
                ));
                continue;
            };
            // Both shapes appear on the page: {"route": …} and {"fieldName": …, "value": …}.
            let pairs: Vec<(String, &Value)> = match obj.get("fieldName").and_then(Value::as_str) {
                Some(name) => vec![(name.to_string(), obj.get("value").unwrap_or(&Value::Null))],
                None => obj.iter().map(|(k, v)| (k.clone(), v)).collect(),
            };
            if pairs.is_empty() {
                errors.push(FieldError::new(
                    "err_validation_missing",
                    Some("filterBy"),
                    "A filterBy item must name route or attachments.",
                ));
            }
            for (name, value) in pairs {
                if name.eq_ignore_ascii_case("route") {
                    let route = value.as_str().map(str::to_ascii_lowercase);
                    match route.as_deref() {
                        Some("all") => filter.routes.extend_from_slice(data::ROUTES),
                        Some(r) => match data::ROUTES.iter().find(|x| **x == r) {
                            Some(x) => filter.routes.push(x),
                            None => errors.push(FieldError::new(
                                "err_validation_invalid_value",
                                Some("filterBy.route"),
                                "route must be one of all, internal, outbound, inbound, external.",
                            )),
                        },
                        None => errors.push(FieldError::new(
                            "err_validation_invalid_value",
                            Some("filterBy.route"),
                            "route must be one of all, internal, outbound, inbound, external.",
                        )),
                    }
                } else if name.eq_ignore_ascii_case("attachments") {
                    let b = match value {
                        Value::Bool(b) => Some(*b),
                        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
                        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
                        _ => None,
                    };
                    match b {
                        Some(b) => filter.attachments.push(b),
                        None => errors.push(FieldError::new(
                            "err_validation_invalid_value",
                            Some("filterBy.attachments"),
                            "attachments must be true or false.",
                        )),
                    }
                } else {
                    errors.push(FieldError::new(
                        "err_validation_invalid_value",
                        Some("filterBy"),
                        &format!("Unknown filterBy field '{name}': use route or attachments."),
                    ));
                }
            }
        }
        filter
    }

    fn matches(&self, m: &QueueMessage) -> bool {
        (self.routes.is_empty() || self.routes.contains(&m.routing))
            && (self.attachments.is_empty() || self.attachments.contains(&m.attachment))
    }
}

/// The envelope of a function that ran: HTTP 200, `meta.status` 200.
fn answer(data: Vec<Value>, fail: Vec<Value>, pagination: Option<Value>) -> Response {
    let mut meta = json!({ "status": 200 });
    if let Some(p) = pagination {
        meta["pagination"] = p;
    }
    Json(json!({ "meta": meta, "data": data, "fail": fail })).into_response()
}

fn fail_item(key: Value, errors: Vec<FieldError>) -> Value {
    let errors: Vec<Value> = errors.iter().map(FieldError::to_json).collect();
    json!({ "key": key, "errors": errors })
}

/// A function that rejected its input: HTTP 200 with the reasons in `fail`.
fn fail_answer(key: Value, errors: Vec<FieldError>) -> Response {
    answer(vec![], vec![fail_item(key, errors)], None)
}

/// An envelope for a request that did not reach a function.
fn error_envelope(status: StatusCode, code: &str, message: &str, retryable: bool) -> Response {
    let body = json!({
        "meta": { "status": status.as_u16() },
        "data": [],
        "fail": [{ "errors": [{ "code": code, "message": message, "retryable": retryable }] }],
    });
    (status, Json(body)).into_response()
}

fn bad_request(message: &str) -> Response {
    error_envelope(
        StatusCode::BAD_REQUEST,
        "err_xdk_bad_request",
        message,
        false,
    )
}

/// 429: API 1.0 callers get `X-RateLimit-Reset` (milliseconds), 2.0 callers `Retry-After`.
fn rate_limited(bearer: bool) -> Response {
    let mut resp = error_envelope(
        StatusCode::TOO_MANY_REQUESTS,
        "err_xdk_rate_limit_exceeded",
        "Quota exceeded: too many requests for this resource",
        true,
    );
    let headers = resp.headers_mut();
    if bearer {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    } else {
        let reset_ms: u32 = rand::thread_rng().gen_range(500..=1000);
        headers.insert("x-ratelimit-reset", HeaderValue::from(reset_ms));
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
    }
    resp
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut resp = (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
