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
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::Utc;
use hmac::Hmac;

use super::timing::SimClock;
use super::{Faults, Injected, SimConfig};

mod audit;
mod auth;
mod channel;
mod data;
mod envelope;
mod oauth;
mod pyrepr;
mod queue;
mod ratelimit;
mod siem;
mod siem_batch;
mod siem_data;
#[cfg(test)]
mod siem_tests;
#[cfg(test)]
mod tests;

pub use siem_data::{SiemBatchType, SiemFile};

use auth::{header_str, strip_scheme};
use data::{AuditEvent, QueueMessage};
use envelope::{bad_request, error_envelope, quota_exceeded, rate_limited, ApiRequest};
use ratelimit::Limiter;
use siem_data::{Schedule, TokenKey};

type HmacSha1 = Hmac<sha1::Sha1>;

/// Largest request body read.
const BODY_LIMIT: usize = 1 << 20;
/// Largest page a client may ask for.
const MAX_PAGE_SIZE: usize = 500;

const FIND_PROCESSING: &str = "/api/gateway/find-processing-messages";
const CHANNEL_TOKEN: &str = "/api/ess/get-latest-channel-token";
const AUDIT_EVENTS: &str = "/api/audit/get-audit-events";
const TOKEN_PATH: &str = "/oauth/token";
const SIEM_LOGS: &str = "/api/audit/get-siem-logs";

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
    limiter: Limiter,
    /// The simulated clock SIEM log files appear and expire by.
    clock: SimClock,
    /// When API 1.0 MTA log files appear (three per slot: receipt, process, delivery).
    mta_schedule: Schedule,
    /// When API 2.0 batch files appear (one per type and slot).
    batch_schedule: Schedule,
    /// Signs `mc-siem-token`, `@nextPage` and batch file URLs.
    siem_key: TokenKey,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MimecastSim {
    pub(crate) fn new(cfg: &SimConfig, faults: Arc<Faults>) -> Arc<Self> {
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
        let clock = SimClock::new(cfg.time_scale);
        let start = clock.now();
        let schedule = |interval| {
            Schedule::new(
                start,
                cfg.mimecast_siem_history,
                interval,
                cfg.mimecast_siem_retention,
            )
        };
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
            limiter: Limiter::new(cfg.mimecast_rate_limit, cfg.mimecast_rate_window),
            mta_schedule: schedule(cfg.mimecast_siem_interval),
            batch_schedule: schedule(cfg.mimecast_siem_batch_interval),
            siem_key: TokenKey::random(),
            clock,
        })
    }

    /// The service's routes, sharing this state.
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

    /// Moves the simulated clock forward: new SIEM log files appear, old ones leave retention.
    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The simulated now.
    pub fn now(&self) -> chrono::DateTime<Utc> {
        self.clock.now()
    }

    /// How many API 2.0 tokens `/oauth/token` has issued.
    pub fn tokens_issued(&self) -> u64 {
        self.tokens_issued.load(Ordering::Relaxed)
    }
}

/// Routes every request: `/oauth/token`, then `/api/...` through faults and authentication.
async fn dispatch(State(sim): State<Arc<MimecastSim>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path == TOKEN_PATH {
        return sim.issue_token(req).await;
    }
    if path.starts_with(siem_batch::FILES_PREFIX) {
        return sim.siem_batch_file(req);
    }
    let siem = path.starts_with("/siem/");
    if !path.starts_with("/api/") && !siem {
        return error_envelope(
            StatusCode::NOT_FOUND,
            "err_xdk_not_found",
            "The requested resource does not exist.",
            false,
        );
    }
    let bearer = header_str(req.headers(), header::AUTHORIZATION.as_str())
        .is_some_and(|a| strip_scheme(a, "Bearer").is_some());
    let quota = sim.limiter.take();
    let mut resp = if quota.allowed && siem {
        sim.siem_batch_call(req, &path).await
    } else if quota.allowed {
        api_call(&sim, req, &path, bearer).await
    } else {
        let ms = u64::try_from(quota.reset.as_millis()).unwrap_or(u64::MAX);
        quota_exceeded(bearer, ms)
    };
    quota.apply(resp.headers_mut());
    resp
}

/// One `/api/...` call within the quota: faults, authentication, then the function.
async fn api_call(sim: &MimecastSim, req: Request, path: &str, bearer: bool) -> Response {
    match sim.faults.draw("mimecast").await {
        Injected::TooManyRequests => return rate_limited(bearer),
        // The function did not run: the request id stays unused, so a stock retry that resends
        // the identical signed request is accepted. Mimecast's pages ask only for "a randomly
        // generated GUID" / "{unique id}" per request and say nothing of a failed call spending
        // it (issue 12 item 9).
        Injected::ServerError(status) => return crate::server_error(status),
        Injected::None => {}
    }
    if let Err(failure) = sim.authenticate(req.headers(), path) {
        failure.count(&sim.faults.stats);
        return failure.response();
    }
    if !matches!(
        path,
        FIND_PROCESSING | CHANNEL_TOKEN | AUDIT_EVENTS | SIEM_LOGS
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
    let Ok(body) = axum::body::to_bytes(req.into_body(), BODY_LIMIT).await else {
        return bad_request("The request body could not be read or is too large.");
    };
    let api = match ApiRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&e.to_string()),
    };
    match path {
        FIND_PROCESSING => sim.find_processing(&api),
        CHANNEL_TOKEN => sim.latest_channel_token(&api),
        SIEM_LOGS => sim.siem_logs(&api),
        _ => sim.audit_events(&api),
    }
}
