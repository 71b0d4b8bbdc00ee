//! Simulated Google Vault API v1 (matters and mail exports) and the Cloud Storage JSON API
//! objects those exports land in, written from the vendors' reference pages.
//!
//! Two listeners, as the real services are two origins (`vault.googleapis.com`,
//! `storage.googleapis.com`):
//! - Vault: `POST|GET /v1/matters`, `GET /v1/matters/{matterId}`,
//!   `POST|GET /v1/matters/{matterId}/exports`, `GET|DELETE /v1/matters/{matterId}/exports/{exportId}`;
//! - Storage: `GET /storage/v1/b/{bucket}/o/{object}` (metadata, or `alt=media` with ranges)
//!   and `GET /download/storage/v1/b/{bucket}/o/{object}` (the `mediaLink` path).
//!
//! Other methods on these paths answer 501 `UNIMPLEMENTED`, unknown paths 404, both in
//! Google's JSON error format and without closing the connection.
//!
//! Bearer tokens are those of the simulated Google service (`GOOGLE_ACCESS_TOKEN`, or issued by
//! its `POST /token` with the Vault and Storage scopes). Export ages, processing and the 15-day
//! availability follow a simulated clock (`time_scale`, [`VaultSim::advance_clock`]).
mod archive;
mod errors;
mod exports;
mod matters;
mod storage;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};

use self::archive::StoredObject;
use self::errors::{no_route, rate_limited, unserved_method, ApiError, ApiStatus};
use self::exports::VaultExport;
use self::matters::Matter;
use super::google::GoogleSim;
use super::timing::SimClock;
use super::{Faults, Injected, SimConfig};

/// Scopes that allow Vault writes (`matters.create`, `matters.exports.create`, `delete`).
const VAULT_WRITE_SCOPES: &[&str] = &["https://www.googleapis.com/auth/ediscovery"];
/// Scopes that allow Vault reads.
const VAULT_READ_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/ediscovery",
    "https://www.googleapis.com/auth/ediscovery.readonly",
];
/// Scopes that allow reading Cloud Storage objects.
const STORAGE_READ_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/devstorage.read_write",
    "https://www.googleapis.com/auth/devstorage.full_control",
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/cloud-platform.read-only",
];

/// Which of the two simulated services a request is for (fault counts, scopes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    VaultRead,
    VaultWrite,
    Storage,
}

impl Service {
    fn vendor(self) -> &'static str {
        match self {
            Service::VaultRead | Service::VaultWrite => "vault",
            Service::Storage => "storage",
        }
    }

    fn scopes(self) -> &'static [&'static str] {
        match self {
            Service::VaultRead => VAULT_READ_SCOPES,
            Service::VaultWrite => VAULT_WRITE_SCOPES,
            Service::Storage => STORAGE_READ_SCOPES,
        }
    }
}

#[derive(Default)]
struct Db {
    matters: BTreeMap<String, Matter>,
    /// Per export id; ids sort by creation (a counter is part of them).
    exports: BTreeMap<String, VaultExport>,
    /// Per (bucket, object name).
    objects: HashMap<(String, String), Arc<StoredObject>>,
    /// Exports ever created (the counter in new ids).
    created: u64,
}

/// The simulated Vault and Cloud Storage services.
pub struct VaultSim {
    cfg: SimConfig,
    faults: Arc<Faults>,
    /// Holds the token state (static token, issued tokens and their scopes).
    google: Arc<GoogleSim>,
    clock: SimClock,
    state: Mutex<Db>,
    /// The one bucket exports are written to.
    bucket: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl VaultSim {
    pub(crate) fn new(cfg: &SimConfig, faults: Arc<Faults>, google: Arc<GoogleSim>) -> Arc<Self> {
        let bucket = format!(
            "vault-sim-export-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        Arc::new(VaultSim {
            cfg: cfg.clone(),
            faults,
            google,
            clock: SimClock::new(cfg.time_scale),
            state: Mutex::new(Db::default()),
            bucket,
        })
    }

    /// The Vault API routes.
    pub fn vault_router(self: Arc<Self>) -> Router {
        Router::new()
            .route(
                "/v1/matters",
                get(matters::list_matters).post(matters::create_matter),
            )
            .route("/v1/matters/{matter}", get(matters::get_matter))
            .route(
                "/v1/matters/{matter}/exports",
                get(exports::list_exports).post(exports::create_export),
            )
            .route(
                "/v1/matters/{matter}/exports/{export}",
                get(exports::get_export).delete(exports::delete_export),
            )
            .method_not_allowed_fallback(unserved_method)
            .fallback(no_route)
            .with_state(self)
    }

    /// The Cloud Storage JSON API routes: `objects.get` (metadata, or `alt=media`) and the
    /// download path Google's client libraries use (`/download/storage/v1/...`, `mediaLink`).
    pub fn storage_router(self: Arc<Self>) -> Router {
        Router::new()
            .route(
                "/storage/v1/b/{bucket}/o/{object}",
                get(storage::get_object),
            )
            .route(
                "/download/storage/v1/b/{bucket}/o/{object}",
                get(storage::download_object),
            )
            .method_not_allowed_fallback(unserved_method)
            .fallback(no_route)
            .with_state(self)
    }

    /// Moves the simulated clock forward (export processing, the 15-day availability).
    pub fn advance_clock(&self, by: std::time::Duration) {
        self.clock.advance(by);
    }

    /// The organization's accounts (`vault_directory`; None: every address is one).
    pub fn accounts(&self) -> Option<Vec<String>> {
        self.cfg.vault_directory.clone()
    }

    /// Exports created so far (all matters, including deleted and expired ones).
    pub fn exports_created(&self) -> u64 {
        lock(&self.state).created
    }

    /// Exports `IN_PROGRESS` now, organization-wide (what the 20-export limit counts).
    pub fn exports_in_progress(&self) -> usize {
        let now = self.now();
        let mut st = lock(&self.state);
        sweep(&mut st, now, self.retention());
        st.exports.values().filter(|e| e.in_progress()).count()
    }

    /// The bucket every export writes to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn retention(&self) -> TimeDelta {
        TimeDelta::from_std(self.cfg.vault_retention).unwrap_or(TimeDelta::MAX)
    }

    /// Fault injection, then bearer authentication with the service's scopes.
    async fn guard(&self, service: Service, headers: &HeaderMap) -> Option<Response> {
        match self.faults.draw(service.vendor()).await {
            Injected::TooManyRequests => return Some(rate_limited()),
            Injected::ServerError(s) => return Some(crate::server_error(s)),
            Injected::None => {}
        }
        self.google.authenticate_for(headers, service.scopes())
    }
}

/// Removes exports older than the availability period, with their objects.
fn sweep(st: &mut Db, now: DateTime<Utc>, retention: TimeDelta) {
    let expired: Vec<String> = st
        .exports
        .values()
        .filter(|e| now - e.create_time >= retention)
        .map(|e| e.id.clone())
        .collect();
    for id in expired {
        remove_export(st, &id);
    }
}

/// Removes one export and the objects it wrote.
fn remove_export(st: &mut Db, id: &str) {
    st.exports.remove(id);
    st.objects.retain(|_, o| o.export_id != id);
}

/// RFC 3339 with milliseconds, UTC, as Google's JSON timestamps.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The query parameters of a request (last value wins).
fn query_params(raw: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// A page of `items`: `pageSize` (1..=`max`, default `max`) from the offset in `pageToken`.
/// Tokens are opaque and bound to `scope` (the list they came from).
struct Page {
    start: usize,
    size: usize,
}

impl Page {
    fn read(params: &HashMap<String, String>, scope: &str, max: usize) -> Result<Page, ApiError> {
        let size = match params.get("pageSize").map(|s| s.trim()) {
            None | Some("") | Some("0") => max,
            Some(s) => match s.parse::<usize>() {
                Ok(n) => n.min(max),
                Err(_) => {
                    return Err(ApiError::new(
                        ApiStatus::InvalidArgument,
                        format!("Invalid value at 'page_size' (TYPE_INT32), \"{s}\""),
                    ))
                }
            },
        };
        let start = match params.get("pageToken").filter(|t| !t.is_empty()) {
            None => 0,
            Some(t) => decode_token(t, scope)
                .ok_or_else(|| ApiError::new(ApiStatus::InvalidArgument, "Invalid page token."))?,
        };
        Ok(Page { start, size })
    }

    /// The token of the page after this one, when `total` items go further.
    fn next_token(&self, total: usize, scope: &str) -> Option<String> {
        let next = self.start + self.size;
        (next < total).then(|| URL_SAFE_NO_PAD.encode(format!("{scope}\n{next}")))
    }
}

fn decode_token(token: &str, scope: &str) -> Option<usize> {
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (s, n) = text.rsplit_once('\n')?;
    (s == scope).then(|| n.parse().ok()).flatten()
}

/// Reads a JSON object body; 400 INVALID_ARGUMENT as Google words it otherwise.
fn json_body(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::new(
            ApiStatus::InvalidArgument,
            "Invalid JSON payload received. Expected an object.",
        )),
        Err(e) => Err(ApiError::new(
            ApiStatus::InvalidArgument,
            format!("Invalid JSON payload received. {e}"),
        )),
    }
}

/// 400 for the first field of `obj` not in `known` (Google rejects unknown names).
fn unknown_field(
    obj: &serde_json::Map<String, serde_json::Value>,
    known: &[&str],
    at: &str,
) -> Option<ApiError> {
    let name = obj.keys().find(|k| !known.contains(&k.as_str()))?;
    Some(ApiError::new(
        ApiStatus::InvalidArgument,
        format!(
            "Invalid JSON payload received. Unknown name \"{name}\" at '{at}': Cannot find field."
        ),
    ))
}
