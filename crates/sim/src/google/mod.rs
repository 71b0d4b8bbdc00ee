//! Simulated Google Workspace Email Audit API (mailbox exports) and its OAuth token endpoint.
//!
//! Endpoints (paths as on the vendor page, served on the simulator's base URL):
//! - `POST /token`: JWT-bearer grant for the simulator's own service account;
//! - `POST /a/feeds/compliance/audit/publickey/{domain}`: upload the domain's OpenPGP key;
//! - `POST /a/feeds/compliance/audit/mail/export/{domain}/{user}`: create an export;
//! - `GET|DELETE /a/feeds/compliance/audit/mail/export/{domain}/{user}/{requestId}`;
//! - `GET /a/feeds/compliance/audit/mail/export/{domain}?fromDate=...`: the paged list;
//! - `GET /a/data/compliance/audit/{file}`: the encrypted files (`fileUrlN`), with ranges.
//!
//! Clocks: export ages (processing, retention, cleanup, daily quota, dates) follow a simulated
//! clock that runs `time_scale` times faster than the real one and that tests can advance; JWT
//! assertions and access tokens follow the real clock, as clients sign with it.
mod answers;
mod atom;
mod auth;
mod crypto;
mod export;
mod exports;
pub(crate) mod files;
mod generate;
mod keys;
mod list;
pub(crate) mod mbox;
mod seed;
mod token;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use rand::Rng as _;

use self::answers::not_found;
use self::auth::token_endpoint;
use self::crypto::RecipientKey;
use self::export::expire;
use self::export::remove_files;
use self::export::Export;
use self::exports::{create_export, delete_export, export_status};
use self::files::download;
use self::keys::upload_key;
use self::list::list_exports;
use self::mbox::MboxReader;
use super::timing::SimClock;
use super::{Faults, SimConfig, SimError, Stats};

pub use self::crypto::UploadedKeyError;
pub use self::exports::NameError;

/// Why [`GoogleSim::accept_public_key`] refused a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyRefused {
    /// The domain is not a domain name.
    #[error(transparent)]
    Domain(#[from] NameError),
    /// The key is not one Google takes.
    #[error(transparent)]
    Key(#[from] UploadedKeyError),
}

const EXPORT_PATH: &str = "/a/feeds/compliance/audit/mail/export";
const KEY_PATH: &str = "/a/feeds/compliance/audit/publickey";
const FILE_PATH: &str = "/a/data/compliance/audit";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// `YYYY-MM-DD HH:MM`, UTC, as the API reads and writes dates.
const DATE_FMT: &str = "%Y-%m-%d %H:%M";
const ATOM_CONTENT_TYPE: &str = "application/atom+xml; charset=UTF-8";

/// How long Google keeps export files, and the default window of the list.
fn retention() -> TimeDelta {
    TimeDelta::days(21)
}

fn rfc3339_millis(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[derive(Default)]
struct Db {
    /// Per lowercase domain.
    keys: HashMap<String, Arc<RecipientKey>>,
    exports: BTreeMap<u64, Export>,
    /// File token of a `fileUrlN` → (request id, N).
    files: HashMap<String, (u64, u32)>,
    /// Exports created per (domain, UTC day of the sim clock).
    daily: HashMap<(String, NaiveDate), u32>,
    created: HashMap<String, u32>,
    /// Issued access tokens: when they stop working (real clock) and their scopes.
    tokens: HashMap<String, IssuedToken>,
    next_id: u64,
}

/// An access token issued by `POST /token`.
struct IssuedToken {
    /// When it stops working (real clock).
    until: Instant,
    /// The scopes granted with it.
    scopes: Vec<String>,
}

/// The simulated Google service.
pub struct GoogleSim {
    cfg: SimConfig,
    faults: Arc<Faults>,
    account: token::ServiceAccount,
    base_url: Mutex<String>,
    key_file: PathBuf,
    /// The key file lives in the user's work dir (not in our temp dir): removed on drop.
    key_file_outside_temp: bool,
    /// Holds the encrypted export files; removed on drop.
    files_dir: tempfile::TempDir,
    state: Mutex<Db>,
    tokens_issued: AtomicU64,
    clock: SimClock,
}

impl Drop for GoogleSim {
    fn drop(&mut self) {
        if self.key_file_outside_temp {
            let _ = std::fs::remove_file(&self.key_file);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl GoogleSim {
    pub(crate) fn new(cfg: &SimConfig, faults: Arc<Faults>) -> Result<Arc<Self>, SimError> {
        let account =
            token::ServiceAccount::generate().map_err(|e| SimError::Setup(e.to_string()))?;
        let setup = |what: &str, e: std::io::Error| SimError::Setup(format!("{what}: {e}"));
        let (files_dir, key_file, outside) = match &cfg.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| setup(&format!("cannot create {}", dir.display()), e))?;
                let files_dir = tempfile::Builder::new()
                    .prefix("google-sim-exports-")
                    .tempdir_in(dir)
                    .map_err(|e| setup("cannot create the export directory", e))?;
                let name = format!(
                    "google-sim-service-account-{}.json",
                    &account.private_key_id[..12]
                );
                (files_dir, dir.join(name), true)
            }
            None => {
                let files_dir = tempfile::Builder::new()
                    .prefix("auditflow-google-sim-")
                    .tempdir()
                    .map_err(|e| setup("cannot create a temp directory", e))?;
                let key_file = files_dir.path().join("service-account.json");
                (files_dir, key_file, false)
            }
        };
        let mut state = Db {
            next_id: rand::thread_rng().gen_range(10_000..90_000),
            ..Db::default()
        };
        if cfg.google_seed_history {
            let admin = &cfg.credentials.google_admin_email;
            if let Some((_, domain)) = admin.rsplit_once('@') {
                let domain = domain.to_ascii_lowercase();
                seed::history(
                    &mut state,
                    &domain,
                    admin,
                    cfg.google_daily_limit,
                    Utc::now(),
                );
            }
        }
        Ok(Arc::new(GoogleSim {
            cfg: cfg.clone(),
            faults,
            account,
            base_url: Mutex::new(String::new()),
            key_file,
            key_file_outside_temp: outside,
            files_dir,
            state: Mutex::new(state),
            tokens_issued: AtomicU64::new(0),
            clock: SimClock::new(cfg.time_scale),
        }))
    }

    /// The service's routes, sharing this state.
    pub fn router(self: Arc<Self>) -> axum::Router {
        Router::new()
            .route("/token", post(token_endpoint))
            .route(&format!("{KEY_PATH}/{{domain}}"), post(upload_key))
            .route(&format!("{EXPORT_PATH}/{{domain}}"), get(list_exports))
            .route(
                &format!("{EXPORT_PATH}/{{domain}}/{{user}}"),
                post(create_export),
            )
            .route(
                &format!("{EXPORT_PATH}/{{domain}}/{{user}}/{{id}}"),
                get(export_status).delete(delete_export),
            )
            .route(&format!("{FILE_PATH}/{{file}}"), get(download))
            .fallback(not_found)
            .with_state(self)
    }

    /// Told once the server listens, so that `fileUrlN` and `rel='next'` links are absolute.
    /// Also writes the service-account key file, whose `token_uri` needs the address.
    pub fn set_base_url(&self, url: &str) {
        let url = url.trim_end_matches('/').to_string();
        *lock(&self.base_url) = url.clone();
        let written = self
            .account
            .key_file_json(&format!("{url}/token"))
            .and_then(|json| write_private_file(&self.key_file, json.as_bytes()));
        match written {
            Ok(()) => {
                tracing::debug!(path = %self.key_file.display(), "google sim: key file written");
            }
            Err(e) => tracing::error!("google sim: cannot write the service-account key file: {e}"),
        }
    }

    /// The service-account JSON key file (written by [`GoogleSim::set_base_url`], mode 0600).
    pub fn service_account_key_file(&self) -> PathBuf {
        self.key_file.clone()
    }

    /// Access tokens issued by `POST /token` so far.
    pub fn tokens_issued(&self) -> u64 {
        self.tokens_issued.load(Ordering::Relaxed)
    }

    /// Exports created for `domain` (all days).
    pub fn exports_created(&self, domain: &str) -> u32 {
        lock(&self.state)
            .created
            .get(&domain.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// The status an export would show now (`PENDING`, `COMPLETED`, ...), without polling it.
    pub fn export_status(&self, request_id: &str) -> Option<String> {
        let id: u64 = request_id.trim().parse().ok()?;
        let now = self.now();
        let (status, removed) = {
            let mut st = lock(&self.state);
            let e = st.exports.get_mut(&id)?;
            let removed = expire(e, now, self.cleanup_after());
            (e.phase.name().to_string(), removed)
        };
        remove_files(removed);
        Some(status)
    }

    /// Takes `armored` (an ASCII-armored public key) as `domain`'s uploaded key, as if the
    /// key upload had been sent: a rehearsal starts where production stands after it.
    pub fn accept_public_key(&self, domain: &str, armored: &str) -> Result<(), KeyRefused> {
        use base64::Engine as _;
        let domain = exports::check_domain(domain)?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(armored);
        let key = crypto::parse_uploaded_key(&encoded)?;
        lock(&self.state).keys.insert(domain, Arc::new(key));
        Ok(())
    }

    /// Moves the simulated clock forward (export ages, retention, the daily quota's day).
    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The plaintext (mbox) of file `n` of a completed export, regenerated deterministically.
    pub fn plaintext(&self, request_id: &str, n: u32) -> Option<Vec<u8>> {
        let id: u64 = request_id.trim().parse().ok()?;
        let spec = {
            let st = lock(&self.state);
            let e = st.exports.get(&id)?;
            if (n as usize) >= e.files.len() {
                return None;
            }
            e.mbox_spec(n, self.cfg.google_file_size)
        };
        let mut out = Vec::new();
        MboxReader::new(spec).read_to_end(&mut out).ok()?;
        Some(out)
    }

    /// Lowercase hex SHA-256 of that plaintext, recorded while the file was encrypted.
    pub fn plaintext_sha256(&self, request_id: &str, n: u32) -> Option<String> {
        let id: u64 = request_id.trim().parse().ok()?;
        let st = lock(&self.state);
        let e = st.exports.get(&id)?;
        e.files.get(n as usize).map(|f| f.plaintext_sha256.clone())
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// How long Google's cleanup job leaves an export MARKED_DELETE (simulated time).
    fn cleanup_after(&self) -> TimeDelta {
        TimeDelta::from_std(self.cfg.google_cleanup_after).unwrap_or(TimeDelta::MAX)
    }

    fn base(&self) -> String {
        lock(&self.base_url).clone()
    }

    pub(super) fn stats(&self) -> &Stats {
        &self.faults.stats
    }
}

fn write_private_file(path: &Path, data: &[u8]) -> Result<(), token::AccountError> {
    use std::io::Write as _;
    let _ = std::fs::remove_file(path);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let written = opts
        .open(path)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()));
    written.map_err(|source| token::AccountError::Write {
        path: path.to_path_buf(),
        source,
    })
}
