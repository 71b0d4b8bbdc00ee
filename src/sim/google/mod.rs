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
//! Clocks: export ages (retention, daily quota, dates) follow a simulated clock that tests can
//! advance; JWT assertions and access tokens follow the real clock, as clients sign with it.
mod atom;
mod crypto;
mod mbox;
mod token;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use futures::StreamExt as _;
use rand::Rng as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::sync::watch;

use self::atom::{EntryView, FeedView};
use self::crypto::RecipientKey;
use self::mbox::{HashingReader, MboxReader, MboxSpec};
use super::{bump, Faults, Injected, SimConfig, SimError, Stats};

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

/// Where an export is in its life.
#[derive(Debug, Clone)]
enum Phase {
    Pending,
    /// Files are being encrypted; the receiver turns true when done (shown as `PENDING`).
    Generating(watch::Receiver<bool>),
    Completed,
    Error,
    MarkedDelete,
    Deleted,
    Expired,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Pending | Phase::Generating(_) => "PENDING",
            Phase::Completed => "COMPLETED",
            Phase::Error => "ERROR",
            Phase::MarkedDelete => "MARKED_DELETE",
            Phase::Deleted => "DELETED",
            Phase::Expired => "EXPIRED",
        }
    }

    fn files_available(&self) -> bool {
        matches!(self, Phase::Completed | Phase::MarkedDelete)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Package {
    FullMessage,
    HeaderOnly,
}

impl Package {
    fn as_str(self) -> &'static str {
        match self {
            Package::FullMessage => "FULL_MESSAGE",
            Package::HeaderOnly => "HEADER_ONLY",
        }
    }
}

/// The options of an export request.
#[derive(Debug, Clone)]
struct ExportOptions {
    begin: Option<NaiveDateTime>,
    end: Option<NaiveDateTime>,
    include_deleted: bool,
    search_query: Option<String>,
    package: Package,
}

/// Reads the create-request properties; unknown properties are ignored as the service does.
fn parse_options(props: &[(String, String)]) -> Result<ExportOptions, String> {
    let mut seen: Vec<&str> = Vec::new();
    let mut opts = ExportOptions {
        begin: None,
        end: None,
        include_deleted: false,
        search_query: None,
        package: Package::FullMessage,
    };
    for (name, value) in props {
        let known = [
            "beginDate",
            "endDate",
            "includeDeleted",
            "searchQuery",
            "packageContent",
        ];
        let Some(known) = known.iter().find(|k| **k == name.as_str()) else {
            continue;
        };
        if seen.contains(known) {
            return Err(format!("property '{name}' is given more than once"));
        }
        seen.push(known);
        let value = value.trim();
        match *known {
            "beginDate" | "endDate" => {
                let date = NaiveDateTime::parse_from_str(value, DATE_FMT).map_err(|_| {
                    format!("{name} '{value}' is not a date of the form YYYY-MM-DD HH:MM")
                })?;
                if *known == "beginDate" {
                    opts.begin = Some(date);
                } else {
                    opts.end = Some(date);
                }
            }
            "includeDeleted" => {
                opts.include_deleted = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("includeDeleted '{value}' is not true or false")),
                }
            }
            "searchQuery" => {
                opts.search_query = (!value.is_empty()).then(|| value.to_string());
            }
            _ => {
                opts.package = match value {
                    "FULL_MESSAGE" => Package::FullMessage,
                    "HEADER_ONLY" => Package::HeaderOnly,
                    _ => {
                        return Err(format!(
                            "packageContent '{value}' is not FULL_MESSAGE or HEADER_ONLY"
                        ))
                    }
                }
            }
        }
    }
    if let (Some(b), Some(e)) = (opts.begin, opts.end) {
        if b > e {
            return Err(format!(
                "beginDate {} is after endDate {}",
                b.format(DATE_FMT),
                e.format(DATE_FMT)
            ));
        }
    }
    Ok(opts)
}

/// One encrypted file on disk.
#[derive(Debug, Clone)]
struct FileInfo {
    token: String,
    path: PathBuf,
    plaintext_sha256: String,
}

#[derive(Debug)]
struct Export {
    id: u64,
    domain: String,
    user: String,
    admin: String,
    requested: DateTime<Utc>,
    updated: DateTime<Utc>,
    completed: Option<DateTime<Utc>>,
    options: ExportOptions,
    polls: u32,
    phase: Phase,
    deletes: u32,
    files: Vec<FileInfo>,
}

impl Export {
    fn user_email(&self) -> String {
        format!("{}@{}", self.user, self.domain)
    }

    fn mbox_spec(&self, file_no: u32, target_size: usize) -> MboxSpec {
        let end = self
            .options
            .end
            .map(|d| d.and_utc())
            .unwrap_or(self.requested);
        let begin = self
            .options
            .begin
            .map(|d| d.and_utc())
            .unwrap_or(end - TimeDelta::days(365));
        MboxSpec {
            request_id: self.id,
            user_email: self.user_email(),
            file_no,
            target_size,
            headers_only: self.options.package == Package::HeaderOnly,
            begin: begin.timestamp(),
            end: end.timestamp(),
        }
    }
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
    /// Issued access tokens and when they stop working (real clock).
    tokens: HashMap<String, Instant>,
    next_id: u64,
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
    clock_offset: Mutex<TimeDelta>,
}

impl Drop for GoogleSim {
    fn drop(&mut self) {
        if self.key_file_outside_temp {
            let _ = std::fs::remove_file(&self.key_file);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GoogleSim {
    pub fn new(cfg: &SimConfig, faults: Arc<Faults>) -> Result<Arc<Self>, SimError> {
        let account = token::ServiceAccount::generate().map_err(SimError::Setup)?;
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
        let state = Db {
            next_id: rand::thread_rng().gen_range(10_000..90_000),
            ..Db::default()
        };
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
            clock_offset: Mutex::new(TimeDelta::zero()),
        }))
    }

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
                tracing::debug!(path = %self.key_file.display(), "google sim: key file written")
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
            let removed = expire(e, now);
            (e.phase.name().to_string(), removed)
        };
        remove_files(removed);
        Some(status)
    }

    /// Moves the simulated clock forward (export ages, retention, the daily quota's day).
    pub fn advance_clock(&self, by: Duration) {
        let by = TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
        let mut off = lock(&self.clock_offset);
        *off = off.checked_add(&by).unwrap_or(TimeDelta::MAX);
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
        Utc::now() + *lock(&self.clock_offset)
    }

    fn base(&self) -> String {
        lock(&self.base_url).clone()
    }

    /// Fault injection, then bearer authentication.
    async fn guard(&self, headers: &HeaderMap) -> Option<Response> {
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
            Injected::ServerError(s) => return Some(super::server_error(s)),
            Injected::None => {}
        }
        self.authenticate(headers)
    }

    fn authenticate(&self, headers: &HeaderMap) -> Option<Response> {
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
        let valid = match &presented {
            Some(t) if *t == self.cfg.credentials.google_access_token => true,
            Some(t) => lock(&self.state)
                .tokens
                .get(t)
                .is_some_and(|until| *until > Instant::now()),
            None => false,
        };
        if valid {
            return None;
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

    fn stats(&self) -> &Stats {
        &self.faults.stats
    }

    fn export_href(&self, base: &str, e: &Export) -> String {
        format!("{base}{EXPORT_PATH}/{}/{}/{}", e.domain, e.user, e.id)
    }

    fn entry_view(&self, base: &str, e: &Export) -> EntryView {
        let href = self.export_href(base, e);
        let o = &e.options;
        let mut props: Vec<(String, String)> = Vec::new();
        let mut add = |k: &str, v: String| props.push((k.to_string(), v));
        add("status", e.phase.name().into());
        add("packageContent", o.package.as_str().into());
        add("includeDeleted", o.include_deleted.to_string());
        if let Some(q) = &o.search_query {
            add("searchQuery", q.clone());
        }
        if let Some(c) = e.completed {
            add("completedDate", c.format(DATE_FMT).to_string());
        }
        add("adminEmailAddress", e.admin.clone());
        if !matches!(e.phase, Phase::Pending | Phase::Generating(_)) {
            add("numberOfFiles", e.files.len().to_string());
        }
        add("requestId", e.id.to_string());
        add("userEmailAddress", e.user_email());
        if let Some(end) = o.end {
            add("endDate", end.format(DATE_FMT).to_string());
        }
        add("requestDate", e.requested.format(DATE_FMT).to_string());
        if let Some(begin) = o.begin {
            add("beginDate", begin.format(DATE_FMT).to_string());
        }
        if e.phase.files_available() {
            for (i, f) in e.files.iter().enumerate() {
                add(
                    &format!("fileUrl{i}"),
                    format!("{base}{FILE_PATH}/{}", f.token),
                );
            }
        }
        EntryView {
            id: href.clone(),
            updated: rfc3339_millis(e.updated),
            self_href: href.clone(),
            edit_href: Some(href),
            props,
        }
    }

    /// Starts encrypting the files of export `e` in the background.
    fn start_generation(
        self: &Arc<Self>,
        e: &Export,
        key: Arc<RecipientKey>,
    ) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        let jobs: Vec<(MboxSpec, PathBuf, String)> = (0..self.cfg.google_files_per_export)
            .map(|n| {
                let token = file_token();
                let path = self
                    .files_dir
                    .path()
                    .join(format!("{}-{n}-{}.gpg", e.id, &token[..8]));
                (e.mbox_spec(n, self.cfg.google_file_size), path, token)
            })
            .collect();
        let sim = Arc::clone(self);
        let id = e.id;
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(move || generate_files(&key, jobs))
                .await
                .unwrap_or_else(|e| Err(format!("the encryption task failed: {e}")));
            sim.finish_generation(id, result);
            let _ = tx.send(true);
        });
        rx
    }

    fn finish_generation(&self, id: u64, result: Result<Vec<FileInfo>, String>) {
        let now = self.now();
        let mut st = lock(&self.state);
        let Db { exports, files, .. } = &mut *st;
        let Some(e) = exports.get_mut(&id) else {
            return;
        };
        if !matches!(e.phase, Phase::Generating(_)) {
            return;
        }
        e.completed = Some(now);
        e.updated = now;
        match result {
            Ok(generated) => {
                for (n, f) in generated.iter().enumerate() {
                    files.insert(f.token.clone(), (id, n as u32));
                }
                e.files = generated;
                e.phase = Phase::Completed;
            }
            Err(msg) => {
                tracing::warn!(request_id = id, "google sim: export failed: {msg}");
                e.phase = Phase::Error;
            }
        }
    }
}

/// Encrypts every file of an export; on failure removes what was written.
fn generate_files(
    key: &RecipientKey,
    jobs: Vec<(MboxSpec, PathBuf, String)>,
) -> Result<Vec<FileInfo>, String> {
    let mut done: Vec<FileInfo> = Vec::new();
    for (spec, path, token) in jobs {
        let partial = path.with_extension("partial");
        let mut reader = HashingReader::new(MboxReader::new(spec));
        let result = crypto::encrypt_to_file(key, &mut reader, &partial).and_then(|()| {
            std::fs::rename(&partial, &path)
                .map_err(|e| format!("cannot rename {}: {e}", partial.display()))
        });
        if let Err(e) = result {
            let _ = std::fs::remove_file(&partial);
            remove_files(done.into_iter().map(|f| f.path).collect());
            return Err(e);
        }
        let (plaintext_sha256, _len) = reader.finish();
        done.push(FileInfo {
            token,
            path,
            plaintext_sha256,
        });
    }
    Ok(done)
}

/// Marks an export `EXPIRED` once past retention; returns the files to remove.
fn expire(e: &mut Export, now: DateTime<Utc>) -> Vec<PathBuf> {
    let live = matches!(
        e.phase,
        Phase::Pending | Phase::Completed | Phase::MarkedDelete
    );
    if live && now - e.requested >= retention() {
        e.phase = Phase::Expired;
        e.updated = now;
        return e.files.iter().map(|f| f.path.clone()).collect();
    }
    Vec::new()
}

fn remove_files(paths: Vec<PathBuf>) {
    for p in paths {
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("google sim: cannot remove {}: {e}", p.display());
            }
        }
    }
}

/// An opaque, URL-safe file token like the page's `OQAAABW3Z2Olwk...`.
fn file_token() -> String {
    let mut buf = [0u8; 42];
    rand::thread_rng().fill(&mut buf[..]);
    format!("OQAAAB{}", URL_SAFE_NO_PAD.encode(buf))
}

fn write_private_file(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let _ = std::fs::remove_file(path);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A Google-style JSON error.
fn google_error(status: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    let status_name = match status.as_u16() {
        400 | 415 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 if reason.ends_with("LimitExceeded") => "RESOURCE_EXHAUSTED",
        403 => "PERMISSION_DENIED",
        404 | 410 => "NOT_FOUND",
        416 => "OUT_OF_RANGE",
        429 => "RESOURCE_EXHAUSTED",
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

fn bad_request(message: impl Into<String>) -> Response {
    google_error(StatusCode::BAD_REQUEST, "invalid", message)
}

fn export_not_found(id: &str) -> Response {
    google_error(
        StatusCode::NOT_FOUND,
        "notFound",
        format!("No mailbox export request with id '{id}' for this domain and user"),
    )
}

fn atom_response(status: StatusCode, doc: String) -> Response {
    (status, [(header::CONTENT_TYPE, ATOM_CONTENT_TYPE)], doc).into_response()
}

fn not_found_response() -> Response {
    google_error(StatusCode::NOT_FOUND, "notFound", "Not Found")
}

async fn not_found() -> Response {
    not_found_response()
}

/// Lowercases and checks a domain path segment.
fn check_domain(domain: &str) -> Result<String, String> {
    let d = domain.trim().to_ascii_lowercase();
    let ok = d.contains('.')
        && !d.starts_with('.')
        && !d.ends_with('.')
        && d.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if ok {
        Ok(d)
    } else {
        Err(format!("'{domain}' is not a valid domain name"))
    }
}

/// Checks a user path segment (a username, or `user@domain` of the same domain).
fn check_user(user: &str, domain: &str) -> Result<String, String> {
    let u = user.trim().to_ascii_lowercase();
    let u = match u.split_once('@') {
        Some((name, d)) if d == domain => name.to_string(),
        Some(_) => return Err(format!("user '{user}' is not in domain '{domain}'")),
        None => u,
    };
    let ok = !u.is_empty()
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '\''));
    if ok {
        Ok(u)
    } else {
        Err(format!("'{user}' is not a valid username"))
    }
}

// ---- token endpoint ----

async fn token_endpoint(State(sim): State<Arc<GoogleSim>>, body: Bytes) -> Response {
    bump(&sim.stats().google_token_requests);
    let mut grant_type = None;
    let mut assertion = None;
    for (k, v) in url::form_urlencoded::parse(&body) {
        match k.as_ref() {
            "grant_type" => grant_type = Some(v.into_owned()),
            "assertion" => assertion = Some(v.into_owned()),
            _ => {}
        }
    }
    let oauth_error = |error: &str, description: String| {
        bump(&sim.stats().unauthenticated);
        (
            StatusCode::BAD_REQUEST,
            [
                (header::CONTENT_TYPE, "application/json; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            serde_json::json!({ "error": error, "error_description": description }).to_string(),
        )
            .into_response()
    };
    match grant_type.as_deref() {
        None => {
            return oauth_error(
                "invalid_request",
                "Missing required parameter: grant_type".into(),
            )
        }
        Some(JWT_BEARER) => {}
        Some(other) => {
            return oauth_error(
                "unsupported_grant_type",
                format!("Invalid grant_type: {other}"),
            )
        }
    }
    let Some(assertion) = assertion else {
        return oauth_error(
            "invalid_request",
            "Missing required parameter: assertion".into(),
        );
    };
    let base = sim.base();
    let audience = format!("{base}/token");
    let expected = token::Expected {
        audience: &audience,
        subject: &sim.cfg.credentials.google_admin_email,
    };
    let now = Utc::now().timestamp();
    if let Err(e) = sim.account.verify_assertion(&assertion, &expected, now) {
        return oauth_error(e.error, e.description);
    }
    let access_token = token::new_access_token();
    let ttl = sim.cfg.google_token_ttl;
    {
        let mut st = lock(&sim.state);
        let now = Instant::now();
        st.tokens.retain(|_, until| *until > now);
        st.tokens.insert(access_token.clone(), now + ttl);
    }
    sim.tokens_issued.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        serde_json::json!({
            "access_token": access_token,
            "expires_in": ttl.as_secs(),
            "token_type": "Bearer",
        })
        .to_string(),
    )
        .into_response()
}

// ---- public key ----

async fn upload_key(
    State(sim): State<Arc<GoogleSim>>,
    UrlPath(domain): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = sim.guard(&headers).await {
        return r;
    }
    let domain = match check_domain(&domain) {
        Ok(d) => d,
        Err(e) => return bad_request(e),
    };
    let props = match atom::parse_entry_properties(&body) {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let Some((_, encoded)) = props.iter().find(|(n, _)| n == "publicKey") else {
        return bad_request("the entry has no publicKey property");
    };
    let key = match crypto::parse_uploaded_key(encoded) {
        Ok(k) => k,
        Err(e) => return bad_request(e),
    };
    tracing::debug!(%domain, fingerprint = %key.fingerprint, "google sim: public key uploaded");
    lock(&sim.state).keys.insert(domain.clone(), Arc::new(key));
    let base = sim.base();
    let href = format!("{base}{KEY_PATH}/{domain}");
    let view = EntryView {
        id: href.clone(),
        updated: rfc3339_millis(sim.now()),
        self_href: href.clone(),
        edit_href: Some(href),
        props: vec![("publicKey".into(), encoded.clone())],
    };
    atom_response(StatusCode::CREATED, atom::render_entry(&view))
}

// ---- exports ----

fn is_atom_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/atom+xml"))
}

async fn create_export(
    State(sim): State<Arc<GoogleSim>>,
    UrlPath((domain, user)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = sim.guard(&headers).await {
        return r;
    }
    let domain = match check_domain(&domain) {
        Ok(d) => d,
        Err(e) => return bad_request(e),
    };
    let user = match check_user(&user, &domain) {
        Ok(u) => u,
        Err(e) => return bad_request(e),
    };
    if !is_atom_content_type(&headers) {
        return google_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupportedMediaType",
            "Content-Type must be application/atom+xml",
        );
    }
    let props = match atom::parse_entry_properties(&body) {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let options = match parse_options(&props) {
        Ok(o) => o,
        Err(e) => return bad_request(e),
    };
    let now = sim.now();
    let base = sim.base();
    let limit = sim.cfg.google_daily_limit;
    let (doc, href) = {
        let mut st = lock(&sim.state);
        let used = st
            .daily
            .entry((domain.clone(), now.date_naive()))
            .or_insert(0);
        if *used >= limit {
            return google_error(
                StatusCode::FORBIDDEN,
                "dailyLimitExceeded",
                format!(
                    "Quota exceeded: at most {limit} mailbox export requests per day for domain \
                     {domain}; try again tomorrow (UTC)"
                ),
            );
        }
        *used += 1;
        *st.created.entry(domain.clone()).or_insert(0) += 1;
        let id = st.next_id;
        st.next_id += rand::thread_rng().gen_range(1..=97);
        let export = Export {
            id,
            domain,
            user,
            admin: sim.cfg.credentials.google_admin_email.clone(),
            requested: now,
            updated: now,
            completed: None,
            options,
            polls: 0,
            phase: Phase::Pending,
            deletes: 0,
            files: Vec::new(),
        };
        let view = sim.entry_view(&base, &export);
        let href = view.self_href.clone();
        st.exports.insert(id, export);
        (atom::render_entry(&view), href)
    };
    bump(&sim.stats().google_exports_created);
    let mut r = atom_response(StatusCode::CREATED, doc);
    if let Ok(v) = HeaderValue::from_str(&href) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn export_status(
    State(sim): State<Arc<GoogleSim>>,
    UrlPath((domain, user, id)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    bump(&sim.stats().google_status_requests);
    if let Some(r) = sim.guard(&headers).await {
        return r;
    }
    let Some((domain, user, rid)) = lookup_key(&domain, &user, &id) else {
        return export_not_found(&id);
    };
    let now = sim.now();
    let (waiter, removed) = {
        let mut st = lock(&sim.state);
        let has_key = st.keys.get(&domain).cloned();
        let Some(e) = find_export(&mut st, rid, &domain, &user) else {
            return export_not_found(&id);
        };
        let removed = expire(e, now);
        if matches!(e.phase, Phase::Pending) {
            e.polls += 1;
            if e.polls > sim.cfg.google_pending_polls {
                let error_user = sim
                    .cfg
                    .google_error_user
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(&e.user));
                match has_key {
                    Some(key) if !error_user => {
                        e.phase = Phase::Generating(sim.start_generation(e, key));
                    }
                    _ => {
                        e.phase = Phase::Error;
                        e.completed = Some(now);
                        e.updated = now;
                    }
                }
            }
        }
        let waiter = match &e.phase {
            Phase::Generating(rx) => Some(rx.clone()),
            _ => None,
        };
        (waiter, removed)
    };
    remove_files(removed);
    if let Some(mut rx) = waiter {
        let _ = rx.wait_for(|done| *done).await;
    }
    let base = sim.base();
    let mut st = lock(&sim.state);
    let Some(e) = find_export(&mut st, rid, &domain, &user) else {
        return export_not_found(&id);
    };
    // The vendor page answers status requests with 201 CREATED.
    atom_response(
        StatusCode::CREATED,
        atom::render_entry(&sim.entry_view(&base, e)),
    )
}

/// Normalizes the path of one export; None when it cannot name one.
fn lookup_key(domain: &str, user: &str, id: &str) -> Option<(String, String, u64)> {
    let domain = check_domain(domain).ok()?;
    let user = check_user(user, &domain).ok()?;
    let id = id.trim().parse().ok()?;
    Some((domain, user, id))
}

fn find_export<'a>(st: &'a mut Db, id: u64, domain: &str, user: &str) -> Option<&'a mut Export> {
    st.exports
        .get_mut(&id)
        .filter(|e| e.domain == domain && e.user == user)
}

async fn delete_export(
    State(sim): State<Arc<GoogleSim>>,
    UrlPath((domain, user, id)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = sim.guard(&headers).await {
        return r;
    }
    let Some((domain, user, rid)) = lookup_key(&domain, &user, &id) else {
        return export_not_found(&id);
    };
    let now = sim.now();
    let base = sim.base();
    let (result, mut removed) = {
        let mut st = lock(&sim.state);
        let Some(e) = find_export(&mut st, rid, &domain, &user) else {
            return export_not_found(&id);
        };
        let mut removed = expire(e, now);
        let result = match e.phase {
            Phase::Completed | Phase::MarkedDelete => {
                e.deletes += 1;
                e.updated = now;
                if e.deletes > sim.cfg.google_delete_marked_times {
                    e.phase = Phase::Deleted;
                    removed.extend(e.files.iter().map(|f| f.path.clone()));
                } else {
                    e.phase = Phase::MarkedDelete;
                }
                Ok(atom::render_entry(&sim.entry_view(&base, e)))
            }
            ref other => Err(format!(
                "mailbox export request {rid} is {}: only COMPLETED or MARKED_DELETE requests \
                 can be deleted",
                other.name()
            )),
        };
        (result, std::mem::take(&mut removed))
    };
    remove_files(std::mem::take(&mut removed));
    match result {
        Ok(doc) => atom_response(StatusCode::OK, doc),
        Err(msg) => bad_request(msg),
    }
}

/// `start` tokens of the list: opaque, carry the last request id of the previous page.
fn encode_start(after: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("after:{after}"))
}

fn decode_start(token: &str) -> Option<u64> {
    let raw = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    text.strip_prefix("after:")?.parse().ok()
}

fn encode_date(d: NaiveDateTime) -> String {
    d.format(DATE_FMT).to_string().replace(' ', "%20")
}

async fn list_exports(
    State(sim): State<Arc<GoogleSim>>,
    UrlPath(domain): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = sim.guard(&headers).await {
        return r;
    }
    let domain = match check_domain(&domain) {
        Ok(d) => d,
        Err(e) => return bad_request(e),
    };
    let now = sim.now();
    let mut from = None;
    let mut after = None;
    for (k, v) in url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "fromDate" => match NaiveDateTime::parse_from_str(v.trim(), DATE_FMT) {
                Ok(d) => from = Some(d),
                Err(_) => {
                    return bad_request(format!(
                        "fromDate '{v}' is not a date of the form YYYY-MM-DD HH:MM (UTC)"
                    ))
                }
            },
            "start" => match decode_start(&v) {
                Some(id) => after = Some(id),
                None => return bad_request(format!("invalid start token '{v}'")),
            },
            _ => {}
        }
    }
    // Without fromDate: the last 3 weeks (minute precision, like the parameter).
    let from = from.unwrap_or_else(|| {
        let d = (now - retention()).naive_utc();
        NaiveDateTime::parse_from_str(&d.format(DATE_FMT).to_string(), DATE_FMT).unwrap_or(d)
    });
    let page_size = sim.cfg.google_feed_page_size.max(1);
    let base = sim.base();
    let feed_href = format!("{base}{EXPORT_PATH}/{domain}");
    let from_q = encode_date(from);
    let mut self_href = format!("{feed_href}?fromDate={from_q}");
    if let Some(a) = after {
        self_href.push_str(&format!("&start={}", encode_start(a)));
    }
    let mut removed = Vec::new();
    let (entries, start_index, next_href) = {
        let mut st = lock(&sim.state);
        let mut skipped = 0usize;
        let mut page: Vec<EntryView> = Vec::new();
        let mut last_id = None;
        let mut more = false;
        for e in st.exports.values_mut() {
            if e.domain != domain || e.requested.naive_utc() < from {
                continue;
            }
            if after.is_some_and(|a| e.id <= a) {
                skipped += 1;
                continue;
            }
            if page.len() == page_size {
                more = true;
                break;
            }
            removed.extend(expire(e, now));
            page.push(sim.entry_view(&base, e));
            last_id = Some(e.id);
        }
        let next = match (more, last_id) {
            (true, Some(last)) => Some(format!(
                "{feed_href}?fromDate={from_q}&start={}",
                encode_start(last)
            )),
            _ => None,
        };
        (page, skipped + 1, next)
    };
    remove_files(removed);
    let feed = FeedView {
        id: feed_href.clone(),
        updated: rfc3339_millis(now),
        self_href,
        feed_href,
        next_href,
        start_index,
        entries,
    };
    atom_response(StatusCode::OK, atom::render_feed(&feed))
}

// ---- files ----

#[derive(Debug, PartialEq, Eq)]
enum RangeReq {
    Full,
    Partial(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range as RFC 9110 reads it; what we do not serve (other units, several ranges,
/// invalid syntax) is ignored and the whole file is sent.
fn parse_range(value: Option<&HeaderValue>, len: u64) -> RangeReq {
    let Some(spec) = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeReq::Full,
        (true, false) => match num(b) {
            Some(0) => RangeReq::Unsatisfiable,
            Some(_) if len == 0 => RangeReq::Unsatisfiable,
            Some(suffix) => RangeReq::Partial(len.saturating_sub(suffix), len - 1),
            None => RangeReq::Full,
        },
        (false, true) => match num(a) {
            Some(start) if start < len => RangeReq::Partial(start, len - 1),
            Some(_) => RangeReq::Unsatisfiable,
            None => RangeReq::Full,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(start), Some(end)) if end >= start => {
                if start < len {
                    RangeReq::Partial(start, end.min(len - 1))
                } else {
                    RangeReq::Unsatisfiable
                }
            }
            _ => RangeReq::Full,
        },
    }
}

async fn download(
    State(sim): State<Arc<GoogleSim>>,
    UrlPath(file): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = sim.guard(&headers).await {
        return r;
    }
    let gone = |what: &str| {
        google_error(
            StatusCode::GONE,
            "expired",
            format!("The file of this mailbox export has been {what}"),
        )
    };
    let now = sim.now();
    let (path, removed, name) = {
        let mut st = lock(&sim.state);
        let Some(&(id, n)) = st.files.get(&file) else {
            return not_found_response();
        };
        let Some(e) = st.exports.get_mut(&id) else {
            return not_found_response();
        };
        let removed = expire(e, now);
        match e.phase {
            Phase::Completed | Phase::MarkedDelete => {}
            Phase::Expired => {
                drop(st);
                remove_files(removed);
                return gone("deleted after the 3-week retention period");
            }
            _ => {
                return google_error(
                    StatusCode::NOT_FOUND,
                    "notFound",
                    "The file of this mailbox export has been deleted",
                )
            }
        }
        let Some(f) = e.files.get(n as usize) else {
            return not_found_response();
        };
        (f.path.clone(), removed, format!("{id}-{n}"))
    };
    remove_files(removed);
    let mut f = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return not_found().await,
        Err(e) => {
            tracing::error!("google sim: cannot open {}: {e}", path.display());
            return super::server_error(500);
        }
    };
    let len = match f.metadata().await {
        Ok(m) => m.len(),
        Err(_) => return super::server_error(500),
    };
    let (status, start, count) = match parse_range(headers.get(header::RANGE), len) {
        RangeReq::Full => (StatusCode::OK, 0, len),
        RangeReq::Partial(s, e) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        RangeReq::Unsatisfiable => {
            let mut r = google_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "requestedRangeNotSatisfiable",
                format!("Requested range not satisfiable: the file has {len} bytes"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    if start > 0 && f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return super::server_error(500);
    }
    let mut hdrs = HeaderMap::new();
    hdrs.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    hdrs.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    hdrs.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{name}-{len}\"")) {
        hdrs.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
        {
            hdrs.insert(header::CONTENT_RANGE, v);
        }
    }
    if method == Method::HEAD {
        return (status, hdrs, Body::empty()).into_response();
    }
    bump(&sim.stats().google_downloads);
    let body = if sim.faults.take_cut() {
        let half = count / 2;
        let head = tokio_util::io::ReaderStream::new(f.take(half));
        // Pause first: hyper flushes what it buffered (headers, half the body) when the body
        // stream is pending, so the client really gets the first half before the connection
        // drops, as with a network cut.
        let cut = futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "simulated connection cut",
            ))
        });
        Body::from_stream(head.chain(cut))
    } else {
        Body::from_stream(tokio_util::io::ReaderStream::new(f.take(count)))
    };
    (status, hdrs, body).into_response()
}
