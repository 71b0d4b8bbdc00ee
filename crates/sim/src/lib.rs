//! The vendor simulator: Mimecast, MailStore, Google Email Audit, Google Vault and Cloud
//! Storage served on loopback.
//!
//! Written from the vendor pages alone: it shares no signing, encoding or parsing code with
//! `crate::vendors`, so that a bug cannot hide on both sides of a test.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use rand::{Rng, SeedableRng};
use serde::Serialize;

pub mod google;
pub mod mailstore;
pub mod mimecast;
pub mod timing;
pub mod tls;
pub mod vault;

/// Credentials the simulator accepts. The defaults are throwaway demo values.
#[derive(Debug, Clone)]
pub struct SimCredentials {
    /// Mimecast API 1.0 access key (default `sim-access-key`).
    pub mimecast_access_key: String,
    /// Base64, as Mimecast hands it out.
    pub mimecast_secret_key: String,
    /// Mimecast API 1.0 application id (`x-mc-app-id`).
    pub mimecast_app_id: String,
    /// Mimecast API 1.0 application key, part of the signed string.
    pub mimecast_app_key: String,
    /// Mimecast API 2.0 OAuth client id.
    pub mimecast_client_id: String,
    /// Mimecast API 2.0 OAuth client secret.
    pub mimecast_client_secret: String,
    /// MailStore HTTP Basic user (default `admin`).
    pub mailstore_username: String,
    /// MailStore HTTP Basic password.
    pub mailstore_password: String,
    /// A static bearer token the Google side accepts (as from `GOOGLE_ACCESS_TOKEN`).
    pub google_access_token: String,
    /// The Google Workspace admin the exports are made as; its domain is the audited domain.
    pub google_admin_email: String,
}

impl Default for SimCredentials {
    fn default() -> Self {
        SimCredentials {
            mimecast_access_key: "sim-access-key".into(),
            // base64 of "sim-mimecast-secret-key-0123456789"
            mimecast_secret_key: "c2ltLW1pbWVjYXN0LXNlY3JldC1rZXktMDEyMzQ1Njc4OQ==".into(),
            mimecast_app_id: "sim-app-id".into(),
            mimecast_app_key: "sim-app-key".into(),
            mimecast_client_id: "sim-client-id".into(),
            mimecast_client_secret: "sim-client-secret".into(),
            mailstore_username: "admin".into(),
            mailstore_password: "sim-mailstore-password".into(),
            google_access_token: "sim-google-access-token".into(),
            google_admin_email: "admin@example.com".into(),
        }
    }
}

/// The accounts the simulated Vault organization has unless configured otherwise (printed by
/// `auditflow sim`).
pub const DEFAULT_VAULT_ACCOUNTS: [&str; 6] = [
    "alice@example.com",
    "bob@example.com",
    "carol@example.com",
    "dave@example.com",
    "erin@example.com",
    "frank@example.com",
];

/// Injected faults. Rates are probabilities per request, drawn from a seeded generator.
#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    /// Added before every answer.
    pub latency: Duration,
    /// Probability of answering 429 (with the vendor's rate-limit headers).
    pub rate_429: f64,
    /// Probability of answering 500/502/503.
    pub rate_5xx: f64,
    /// Cut this many file downloads half way through the body (the first ones served).
    pub cut_downloads: u32,
    /// Also inject at least one 429 and one 5xx per vendor at the start, deterministically:
    /// the first request of each vendor that is not an auth request gets a 429, the second a 503.
    pub force_each_once: bool,
    /// Seed of the generator that draws the fault rates (same seed, same faults).
    pub seed: u64,
    /// Serve Email Audit export files at most this many bytes per second (a slow network:
    /// lets a test interrupt a download half way). None: as fast as the machine goes.
    pub download_rate: Option<u64>,
}

/// Behaviour knobs of the simulated services.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address all three services listen on (default 127.0.0.1).
    pub host: IpAddr,
    /// 0 picks a free port.
    pub mimecast_port: u16,
    /// MailStore service port; 0 picks a free port.
    pub mailstore_port: u16,
    /// Google service port (also serves the OAuth token endpoint); 0 picks a free port.
    pub google_port: u16,
    /// Google Vault API port (its own origin, as `vault.googleapis.com`); 0 picks a free port.
    pub vault_port: u16,
    /// Cloud Storage JSON API port (its own origin, as `storage.googleapis.com`); 0: free port.
    pub storage_port: u16,
    /// MailStore over HTTPS with a certificate generated at start (the default, as the real
    /// Administration API); false serves plain HTTP (`auditflow sim --plain-http`).
    pub mailstore_tls: bool,
    /// Credentials the services accept.
    pub credentials: SimCredentials,
    /// Faults to inject.
    pub faults: FaultConfig,
    /// Mimecast: number of messages in the processing queue and audit events (paged).
    pub mimecast_queue_size: usize,
    /// Mimecast: number of audit events `/api/audit/get-audit-events` pages through.
    pub mimecast_audit_events: usize,
    /// Mimecast page size when the client sends none.
    pub mimecast_default_page_size: usize,
    /// Allowed clock skew of Mimecast `x-mc-date`.
    pub mimecast_max_skew: Duration,
    /// Mimecast API 2.0 token lifetime (real service: 30 minutes).
    pub mimecast_token_ttl: Duration,
    /// Mimecast: requests allowed per `mimecast_rate_window`; every `/api/` answer reports the
    /// window in `X-RateLimit-Limit`, `-Remaining` and `-Reset`, and a spent window answers 429.
    pub mimecast_rate_limit: u32,
    /// Mimecast: length of one rate-limit window.
    pub mimecast_rate_window: Duration,
    /// Mimecast API 1.0 `get-siem-logs`: one MTA log file per stage (receipt, process,
    /// delivery) appears every interval of the simulated clock (the page: log data "is made
    /// available for you every 30 minutes"; default 30 minutes).
    pub mimecast_siem_interval: Duration,
    /// Mimecast API 2.0 SIEM batch: one file per type appears every interval (default 15
    /// minutes, the batch cadence collectors such as Sekoia's state).
    pub mimecast_siem_batch_interval: Duration,
    /// Mimecast SIEM: files already available when the simulator starts (default 1 hour).
    pub mimecast_siem_history: Duration,
    /// Mimecast SIEM: how long a file stays available (the page: 7 days).
    pub mimecast_siem_retention: Duration,
    /// Simulated seconds per real second (see `timing.rs`): the Google clock (export ages,
    /// retention, cleanup, the daily quota's day) runs this much faster than the real one, and
    /// the simulated durations below take `duration / time_scale` of real time. Default 1.
    pub time_scale: f64,
    /// MailStore: how many status updates a VerifyStore runs through, and the time between them.
    pub mailstore_steps: u32,
    /// MailStore: simulated time between two status updates of a long-running process.
    pub mailstore_step_interval: Duration,
    /// MailStore store ids that exist; ids listed in `mailstore_failing_stores` fail verification.
    pub mailstore_stores: Vec<i64>,
    /// MailStore: store ids whose VerifyStore ends failed (must also be in `mailstore_stores`).
    pub mailstore_failing_stores: Vec<i64>,
    /// MailStore: final statuses of long-running processes keep their token (with
    /// `statusCode: succeeded`, as the wrapper's tutorial output shows) instead of
    /// `"token": null` (as the API page shows, the default). Clients must decide completion
    /// by `statusCode`, never by the token.
    pub mailstore_keep_final_token: bool,
    /// Google: how many status polls an export stays PENDING before COMPLETED.
    pub google_pending_polls: u32,
    /// Google: simulated time an export stays PENDING at least (with `google_pending_polls`:
    /// both must pass). Default 0; `--timing realistic`: hours.
    pub google_export_duration: Duration,
    /// Google: simulated time after which Google's cleanup job turns a MARKED_DELETE export
    /// DELETED (the vendor page: "within 24 hours"; default 24 h).
    pub google_cleanup_after: Duration,
    /// Google: exports for this user end in ERROR.
    pub google_error_user: Option<String>,
    /// Google: export requests allowed per domain per day.
    pub google_daily_limit: u32,
    /// Google: how an export request past `google_daily_limit` is answered.
    pub google_quota_answer: GoogleQuotaAnswer,
    /// Google: number of encrypted files per completed export, and plaintext bytes per file.
    pub google_files_per_export: u32,
    /// Google: plaintext bytes per export file (before encryption).
    pub google_file_size: usize,
    /// Google: entries per page of the export list feed (the real service: at most 100).
    pub google_feed_page_size: usize,
    /// Google: start with three weeks of past requests (DELETED or ERROR) for the admin's
    /// domain, deterministic, within the daily limit, so the list feed pages past
    /// `rel="next"`. Off by default (tests count list entries); `auditflow sim` should turn it on.
    pub google_seed_history: bool,
    /// Google: how many DELETE calls leave an export `MARKED_DELETE` before one makes it `DELETED`.
    pub google_delete_marked_times: u32,
    /// Google: lifetime of access tokens issued by the simulated token endpoint (real: 1 hour).
    pub google_token_ttl: Duration,
    /// Vault: exports in progress allowed across the organization (the limits page: 20); one
    /// more is answered 429 `RESOURCE_EXHAUSTED`.
    pub vault_max_in_progress: u32,
    /// Vault: `matters.exports.get` calls an export stays `IN_PROGRESS` for.
    pub vault_pending_polls: u32,
    /// Vault: simulated time an export stays `IN_PROGRESS` at least (with
    /// `vault_pending_polls`: both must pass). Default 0; `--timing realistic`: hours.
    pub vault_export_duration: Duration,
    /// Vault: how long an export and its files stay available (the help center: 15 days);
    /// afterwards the export and its objects answer 404.
    pub vault_retention: Duration,
    /// Vault: exports that include this account end `FAILED`.
    pub vault_failing_account: Option<String>,
    /// Vault: bytes of generated mbox per account (at least one message).
    pub vault_mbox_size: usize,
    /// Vault: the organization's accounts. An export account not among them gets what Vault
    /// gives (a row in `error.csv` and `<export>-account-exceptions.csv`, no mail): a
    /// custodian typo never produces an export that looks complete. Default:
    /// [`DEFAULT_VAULT_ACCOUNTS`]. None: every address is an account.
    pub vault_directory: Option<Vec<String>>,
    /// Vault: the mbox of this account lacks its last message while the results-count file
    /// keeps the full figure (an export that came out short).
    pub vault_short_account: Option<String>,
    /// Where the MailStore certificate (PEM) and the Google service-account key file are
    /// written, and where the encrypted export files live (in a temp dir inside it, removed with
    /// the simulator). None: temp dirs.
    pub work_dir: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            mimecast_port: 0,
            mailstore_port: 0,
            google_port: 0,
            vault_port: 0,
            storage_port: 0,
            mailstore_tls: true,
            credentials: SimCredentials::default(),
            faults: FaultConfig::default(),
            mimecast_queue_size: 120,
            mimecast_audit_events: 250,
            mimecast_default_page_size: 50,
            mimecast_max_skew: Duration::from_secs(15 * 60),
            mimecast_token_ttl: Duration::from_secs(30 * 60),
            mimecast_rate_limit: 100_000,
            mimecast_rate_window: Duration::from_secs(3600),
            mimecast_siem_interval: Duration::from_secs(30 * 60),
            mimecast_siem_batch_interval: Duration::from_secs(15 * 60),
            mimecast_siem_history: Duration::from_secs(3600),
            mimecast_siem_retention: Duration::from_secs(7 * 86_400),
            time_scale: 1.0,
            mailstore_steps: 6,
            mailstore_step_interval: Duration::from_millis(100),
            mailstore_stores: vec![1, 2, 3],
            mailstore_failing_stores: vec![],
            mailstore_keep_final_token: false,
            google_pending_polls: 3,
            google_export_duration: Duration::ZERO,
            google_cleanup_after: Duration::from_secs(24 * 3600),
            google_error_user: None,
            google_daily_limit: 100,
            google_quota_answer: GoogleQuotaAnswer::Unavailable503,
            google_files_per_export: 2,
            google_file_size: 64 * 1024,
            google_feed_page_size: 100,
            google_seed_history: false,
            google_delete_marked_times: 1,
            google_token_ttl: Duration::from_secs(3600),
            vault_max_in_progress: 20,
            vault_pending_polls: 3,
            vault_export_duration: Duration::ZERO,
            vault_retention: Duration::from_secs(15 * 86_400),
            vault_failing_account: None,
            vault_mbox_size: 16 * 1024,
            vault_directory: Some(
                DEFAULT_VAULT_ACCOUNTS
                    .iter()
                    .map(|a| (*a).to_string())
                    .collect(),
            ),
            vault_short_account: None,
            work_dir: None,
        }
    }
}

/// How the simulated Email Audit API refuses an export request past the daily limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GoogleQuotaAnswer {
    /// HTTP 503, as the API's "Usage limits and quotas" page documents (the body is a guess:
    /// the page shows none).
    #[default]
    Unavailable503,
    /// HTTP 403 with reason `dailyLimitExceeded`, the Admin SDK's usual quota answer (what
    /// the simulator gave before; kept so clients that know it stay tested).
    Forbidden403,
}

/// Counters the simulator keeps; tests assert on them.
#[derive(Debug, Default)]
pub struct Stats {
    /// Every request received, any vendor.
    pub requests: AtomicU64,
    /// Requests rejected for missing or invalid credentials (any vendor).
    pub unauthenticated: AtomicU64,
    /// Mimecast 1.0 requests whose signature did not verify.
    pub bad_signatures: AtomicU64,
    /// Mimecast 1.0 requests with a date outside the allowed skew, or a reused request id.
    pub bad_dates: AtomicU64,
    /// Mimecast 1.0 requests whose `x-mc-req-id` had been used before.
    pub reused_request_ids: AtomicU64,
    /// MailStore get-status calls whose lastKnownStatusVersion was not the last one sent.
    pub wrong_status_versions: AtomicU64,
    /// MailStore long-running processes cancelled by a client.
    pub mailstore_cancelled: AtomicU64,
    /// Google export requests accepted (each counts against the daily limit).
    pub google_exports_created: AtomicU64,
    /// Google: status requests of one export (`GET .../export/{domain}/{user}/{id}`), counted
    /// on arrival, so those answered with an injected fault count too.
    pub google_status_requests: AtomicU64,
    /// Google Email Audit list requests (`GET .../mail/export/DOMAIN`, each page).
    pub google_list_requests: AtomicU64,
    /// Google: requests to the OAuth token endpoint, granted or not.
    pub google_token_requests: AtomicU64,
    /// Google export files served (started, whether cut or not).
    pub google_downloads: AtomicU64,
    /// Cloud Storage `alt=media` downloads served (started, whether cut or not).
    pub storage_downloads: AtomicU64,
    /// Mimecast API 2.0 batch files served (`/siem-batch-files/...`, 200 answers).
    pub siem_batch_downloads: AtomicU64,
    /// 429 answers injected by `FaultConfig`.
    pub injected_429: AtomicU64,
    /// 500/502/503 answers injected by `FaultConfig`.
    pub injected_5xx: AtomicU64,
    /// Downloads cut half way by `cut_downloads`.
    pub injected_cuts: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// The value of [`Stats::requests`] when the snapshot was taken.
    pub requests: u64,
    /// The value of [`Stats::unauthenticated`] when the snapshot was taken.
    pub unauthenticated: u64,
    /// The value of [`Stats::bad_signatures`] when the snapshot was taken.
    pub bad_signatures: u64,
    /// The value of [`Stats::bad_dates`] when the snapshot was taken.
    pub bad_dates: u64,
    /// The value of [`Stats::reused_request_ids`] when the snapshot was taken.
    pub reused_request_ids: u64,
    /// The value of [`Stats::wrong_status_versions`] when the snapshot was taken.
    pub wrong_status_versions: u64,
    /// The value of [`Stats::mailstore_cancelled`] when the snapshot was taken.
    pub mailstore_cancelled: u64,
    /// The value of [`Stats::google_exports_created`] when the snapshot was taken.
    pub google_exports_created: u64,
    /// The value of [`Stats::google_status_requests`] when the snapshot was taken.
    pub google_status_requests: u64,
    /// The value of [`Stats::google_list_requests`] when the snapshot was taken.
    pub google_list_requests: u64,
    /// The value of [`Stats::google_token_requests`] when the snapshot was taken.
    pub google_token_requests: u64,
    /// The value of [`Stats::google_downloads`] when the snapshot was taken.
    pub google_downloads: u64,
    /// The value of [`Stats::storage_downloads`] when the snapshot was taken.
    pub storage_downloads: u64,
    /// The value of [`Stats::siem_batch_downloads`] when the snapshot was taken.
    pub siem_batch_downloads: u64,
    /// The value of [`Stats::injected_429`] when the snapshot was taken.
    pub injected_429: u64,
    /// The value of [`Stats::injected_5xx`] when the snapshot was taken.
    pub injected_5xx: u64,
    /// The value of [`Stats::injected_cuts`] when the snapshot was taken.
    pub injected_cuts: u64,
}

impl Stats {
    /// Reads every counter (each atomically, not all at one instant).
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: g(&self.requests),
            unauthenticated: g(&self.unauthenticated),
            bad_signatures: g(&self.bad_signatures),
            bad_dates: g(&self.bad_dates),
            reused_request_ids: g(&self.reused_request_ids),
            wrong_status_versions: g(&self.wrong_status_versions),
            mailstore_cancelled: g(&self.mailstore_cancelled),
            google_exports_created: g(&self.google_exports_created),
            google_status_requests: g(&self.google_status_requests),
            google_list_requests: g(&self.google_list_requests),
            google_token_requests: g(&self.google_token_requests),
            google_downloads: g(&self.google_downloads),
            storage_downloads: g(&self.storage_downloads),
            siem_batch_downloads: g(&self.siem_batch_downloads),
            injected_429: g(&self.injected_429),
            injected_5xx: g(&self.injected_5xx),
            injected_cuts: g(&self.injected_cuts),
        }
    }
}

/// Increments a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What fault, if any, to inject into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injected {
    None,
    TooManyRequests,
    ServerError(u16),
}

/// Fault injection shared by the three vendor sides.
pub(crate) struct Faults {
    pub(crate) cfg: FaultConfig,
    rng: Mutex<rand::rngs::StdRng>,
    /// Per vendor: how many non-auth requests have been seen (for `force_each_once`).
    seen: Mutex<std::collections::HashMap<&'static str, u64>>,
    cuts_left: AtomicU64,
    pub stats: Arc<Stats>,
}

impl Faults {
    pub(crate) fn new(cfg: FaultConfig, stats: Arc<Stats>) -> Self {
        Faults {
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(cfg.seed)),
            seen: Mutex::new(Default::default()),
            cuts_left: AtomicU64::new(cfg.cut_downloads as u64),
            cfg,
            stats,
        }
    }

    /// Call at the start of every request that is not an auth/token request: sleeps the
    /// configured latency, counts the request, and draws a fault. The vendor side turns
    /// `TooManyRequests` into its own 429 shape (headers) and `ServerError` into a 5xx.
    pub(crate) async fn draw(&self, vendor: &'static str) -> Injected {
        bump(&self.stats.requests);
        if !self.cfg.latency.is_zero() {
            tokio::time::sleep(self.cfg.latency).await;
        }
        let n = {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = seen.entry(vendor).or_insert(0);
            *n += 1;
            *n
        };
        let injected = if self.cfg.force_each_once && n == 1 {
            Injected::TooManyRequests
        } else if self.cfg.force_each_once && n == 2 {
            Injected::ServerError(503)
        } else {
            let mut rng = self
                .rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let x: f64 = rng.gen();
            if x < self.cfg.rate_429 {
                Injected::TooManyRequests
            } else if x < self.cfg.rate_429 + self.cfg.rate_5xx {
                Injected::ServerError([500, 502, 503][rng.gen_range(0..3)])
            } else {
                Injected::None
            }
        };
        match injected {
            Injected::TooManyRequests => bump(&self.stats.injected_429),
            Injected::ServerError(_) => bump(&self.stats.injected_5xx),
            Injected::None => {}
        }
        injected
    }

    /// Call when serving a file body: true when this download must be cut half way.
    pub(crate) fn take_cut(&self) -> bool {
        let cut = self
            .cuts_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if cut {
            bump(&self.stats.injected_cuts);
        }
        cut
    }
}

/// A plain 5xx answer for an injected server error.
pub(crate) fn server_error(status: u16) -> Response {
    let code = axum::http::StatusCode::from_u16(status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (code, "simulated server error").into_response()
}

/// Addresses of a running simulator and the environment that points workflows at it.
pub struct SimHandle {
    /// Base URL of the Mimecast service (`http://host:port`).
    pub mimecast_url: String,
    /// Base URL of the MailStore Administration API service (`https://` unless plain HTTP).
    pub mailstore_url: String,
    /// The MailStore certificate generated at start (None with plain HTTP).
    pub mailstore_cert: Option<tls::SimCertificate>,
    /// Base URL of the Google Email Audit API service.
    pub google_url: String,
    /// Google OAuth token endpoint (service-account JWT bearer grant).
    pub google_token_url: String,
    /// Live counters of all three services.
    pub stats: Arc<Stats>,
    /// The Google service itself, for inspecting exports and tokens (the fan-out bench).
    pub google: Arc<google::GoogleSim>,
    /// Base URL of the Google Vault API service.
    pub vault_url: String,
    /// Base URL of the Cloud Storage JSON API service (another origin than Vault's).
    pub storage_url: String,
    /// The Vault and Storage services, for their clock and counters.
    pub vault: Arc<vault::VaultSim>,
    /// The Mimecast service, for its clock and the SIEM files it produced.
    pub mimecast: Arc<mimecast::MimecastSim>,
    /// The credentials the services accept.
    pub credentials: SimCredentials,
    shutdown: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Holds the certificate file when no `work_dir` was given; removed with the handle.
    _cert_dir: Option<tempfile::TempDir>,
}

impl SimHandle {
    /// Environment variables that point the shipped workflows at this simulator
    /// (Mimecast API 1.0 credentials; see [`SimHandle::env_mimecast2`]).
    pub fn env(&self) -> Vec<(String, String)> {
        let c = &self.credentials;
        let mut v: Vec<(String, String)> = vec![
            ("MIMECAST_BASE_URL".into(), self.mimecast_url.clone()),
            ("MIMECAST_ACCESS_KEY".into(), c.mimecast_access_key.clone()),
            ("MIMECAST_SECRET_KEY".into(), c.mimecast_secret_key.clone()),
            ("MIMECAST_APP_ID".into(), c.mimecast_app_id.clone()),
            ("MIMECAST_APP_KEY".into(), c.mimecast_app_key.clone()),
            ("MAILSTORE_BASE_URL".into(), self.mailstore_url.clone()),
            ("MAILSTORE_USERNAME".into(), c.mailstore_username.clone()),
            ("MAILSTORE_PASSWORD".into(), c.mailstore_password.clone()),
            ("GOOGLE_AUDIT_BASE_URL".into(), self.google_url.clone()),
            ("GOOGLE_ACCESS_TOKEN".into(), c.google_access_token.clone()),
            ("GOOGLE_ADMIN_EMAIL".into(), c.google_admin_email.clone()),
            ("GOOGLE_TOKEN_URL".into(), self.google_token_url.clone()),
            ("GOOGLE_VAULT_BASE_URL".into(), self.vault_url.clone()),
            ("GOOGLE_STORAGE_BASE_URL".into(), self.storage_url.clone()),
        ];
        v.push((
            "GOOGLE_APPLICATION_CREDENTIALS".into(),
            self.google.service_account_key_file().display().to_string(),
        ));
        if let Some(cert) = &self.mailstore_cert {
            v.push((
                "MAILSTORE_CA_FILE".into(),
                cert.pem_file.display().to_string(),
            ));
            v.push(("MAILSTORE_TLS_PIN".into(), cert.sha256.clone()));
        }
        v.sort();
        v
    }

    /// Mimecast API 2.0 variables (client credentials) instead of the 1.0 keys.
    pub fn env_mimecast2(&self) -> Vec<(String, String)> {
        let c = &self.credentials;
        vec![
            ("MIMECAST_BASE_URL".into(), self.mimecast_url.clone()),
            ("MIMECAST_CLIENT_ID".into(), c.mimecast_client_id.clone()),
            (
                "MIMECAST_CLIENT_SECRET".into(),
                c.mimecast_client_secret.clone(),
            ),
        ]
    }

    /// Stops the servers.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A service could not listen on its address (port taken, address not local).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address it tried.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// Building a service's fixed data failed (e.g. the Google signing key).
    #[error("simulator setup failed: {0}")]
    Setup(String),
}

async fn serve(
    addr: SocketAddr,
    router: axum::Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(String, tokio::task::JoinHandle<()>), SimError> {
    serve_maybe_tls(addr, router, shutdown, None).await
}

/// Serves `router` on `addr`, over TLS with `cert` when given; returns the base URL.
pub(crate) async fn serve_maybe_tls(
    addr: SocketAddr,
    router: axum::Router,
    shutdown: tokio_util::sync::CancellationToken,
    cert: Option<&tls::SimCertificate>,
) -> Result<(String, tokio::task::JoinHandle<()>), SimError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| SimError::Bind { addr, source })?;
    let stop = async move { shutdown.cancelled().await };
    let Some(cert) = cert else {
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await;
        });
        return Ok((format!("http://{local}"), task));
    };
    let listener = tls::TlsListener::new(listener, cert)?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await;
    });
    Ok((format!("https://{local}"), task))
}

/// Generates the MailStore certificate into `work_dir` (or a temp dir, returned to be kept).
fn mailstore_certificate(
    cfg: &SimConfig,
) -> Result<(Option<tls::SimCertificate>, Option<tempfile::TempDir>), SimError> {
    if !cfg.mailstore_tls {
        return Ok((None, None));
    }
    let (dir, temp) = match &cfg.work_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("auditflow-mailstore-sim-")
                .tempdir()
                .map_err(|e| SimError::Setup(format!("cannot create a temp directory: {e}")))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let cert = tls::SimCertificate::generate(&dir, cfg.host)?;
    Ok((Some(cert), temp))
}

/// Starts the simulated services.
pub async fn start(cfg: SimConfig) -> Result<SimHandle, SimError> {
    let stats = Arc::new(Stats::default());
    let faults = Arc::new(Faults::new(cfg.faults.clone(), stats.clone()));
    let shutdown = tokio_util::sync::CancellationToken::new();

    let mimecast = mimecast::MimecastSim::new(&cfg, faults.clone());
    let mailstore = mailstore::MailStoreSim::new(&cfg, faults.clone());
    let google = google::GoogleSim::new(&cfg, faults.clone())?;

    let (mimecast_url, t1) = serve(
        SocketAddr::new(cfg.host, cfg.mimecast_port),
        mimecast.clone().router(),
        shutdown.clone(),
    )
    .await?;
    let (mailstore_cert, cert_dir) = mailstore_certificate(&cfg)?;
    let (mailstore_url, t2) = serve_maybe_tls(
        SocketAddr::new(cfg.host, cfg.mailstore_port),
        mailstore.router(),
        shutdown.clone(),
        mailstore_cert.as_ref(),
    )
    .await?;
    let (google_url, t3) = serve(
        SocketAddr::new(cfg.host, cfg.google_port),
        google.clone().router(),
        shutdown.clone(),
    )
    .await?;
    google.set_base_url(&google_url);
    let google_token_url = format!("{google_url}/token");
    let vault = vault::VaultSim::new(&cfg, faults.clone(), google.clone());
    let (vault_url, t4) = serve(
        SocketAddr::new(cfg.host, cfg.vault_port),
        vault.clone().vault_router(),
        shutdown.clone(),
    )
    .await?;
    let (storage_url, t5) = serve(
        SocketAddr::new(cfg.host, cfg.storage_port),
        vault.clone().storage_router(),
        shutdown.clone(),
    )
    .await?;

    Ok(SimHandle {
        mimecast_url,
        mailstore_url,
        mailstore_cert,
        google_url,
        google_token_url,
        stats,
        google,
        vault_url,
        storage_url,
        vault,
        mimecast,
        credentials: cfg.credentials.clone(),
        shutdown,
        tasks: vec![t1, t2, t3, t4, t5],
        _cert_dir: cert_dir,
    })
}
