//! Download step core: streams one URL to `<dest>.part`, resumes, verifies, then renames.
//!
//! Guarantees:
//! - constant memory: the body goes through a bounded queue to a writer thread that hashes
//!   and appends it, whatever the file size;
//! - the final name appears only after the length (Content-Length / Content-Range total /
//!   the caller's expected size) and every known SHA-256 (server digest headers, the caller's
//!   expected value) and the caller's expected MD5 (Cloud Storage `md5Hash`) match, and
//!   after the data is synced to disk;
//! - an interrupted transfer resumes with `Range: bytes=N-` from the `.part`, in the same run
//!   or a later one, and the SHA-256 always covers the whole file;
//! - URLs in messages, logs and results are redacted (no query, no userinfo).
mod headers;
mod names;
mod part;

use crate::vendors::http::redact_url;
use crate::vendors::redirect::{send_guarded, Hop, SendError};
pub use names::{file_name_from_url, safe_join};

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::future::BoxFuture;
use futures::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio_util::sync::CancellationToken;

use crate::retry::{is_retryable_status, parse_retry_after, RetryPolicy};
use headers::{ContentRange, ServerDigest};
use part::{FileHasher, PartWriter};

/// One file to fetch.
#[derive(Clone)]
pub struct FileToFetch {
    /// Where to fetch it from (the query string may carry a signed token; never logged).
    pub url: url::Url,
    /// The final path; the transfer goes to `<dest>.part` until verified.
    pub dest: PathBuf,
    /// SHA-256 the file must have: 64 hex digits, optionally prefixed `sha256:`.
    pub expected_sha256: Option<String>,
    /// Size in bytes the file must have.
    pub expected_size: Option<u64>,
    /// MD5 the file must have, base64 as Cloud Storage's `md5Hash` gives it.
    pub expected_md5: Option<String>,
}

impl std::fmt::Debug for FileToFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileToFetch")
            .field("url", &redact_url(&self.url))
            .field("dest", &self.dest)
            .field("expected_sha256", &self.expected_sha256)
            .field("expected_size", &self.expected_size)
            .field("expected_md5", &self.expected_md5)
            .finish()
    }
}

/// Returns the request headers (auth) for one attempt; called again before every attempt, so
/// tokens may be refreshed between attempts. An `Err` fails the download with
/// [`DownloadError::Auth`].
pub type HeaderFn = std::sync::Arc<
    dyn Fn(&url::Url) -> BoxFuture<'static, Result<HeaderMap, crate::vendors::VendorError>>
        + Send
        + Sync,
>;

/// Progress of one download. Called from the downloading task: keep it cheap.
pub trait DownloadObserver: Send + Sync {
    /// A response was accepted and its body starts: once per attempt that gets that far.
    /// `total` is the whole file's size when known; `resumed_from` the bytes already held.
    fn started(&self, url: &str, total: Option<u64>, resumed_from: u64);
    /// Bytes of the whole file held so far (at most ~10 calls a second, and once at the end).
    fn progress(&self, bytes_so_far: u64);
    /// Attempt number `attempt` (2 for the first retry) starts after `wait`.
    fn retrying(&self, attempt: u32, wait: Duration, reason: &str);
}

/// An observer that ignores everything.
pub struct NoProgress;

impl DownloadObserver for NoProgress {
    fn started(&self, _url: &str, _total: Option<u64>, _resumed_from: u64) {}
    fn progress(&self, _bytes_so_far: u64) {}
    fn retrying(&self, _attempt: u32, _wait: Duration, _reason: &str) {}
}

/// A verified file at its final path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The final path (the `.part` file renamed once verified).
    pub path: PathBuf,
    /// The file's size in bytes.
    pub bytes: u64,
    /// SHA-256 of the whole file.
    pub sha256: crate::durable::Sha256Digest,
    /// Base64 MD5 of the whole file (Cloud Storage's `md5Hash` form); empty when the file
    /// was verified by an earlier process and not re-hashed.
    pub md5: String,
    /// The URL without query and userinfo.
    pub url: String,
    /// HTTP requests made (1 when the first one succeeded).
    pub attempts: u32,
    /// True when the final file kept bytes fetched before its last request (a `.part` from
    /// an earlier attempt or run was continued with a range request).
    pub resumed: bool,
}

/// Tunables beyond the retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadOptions {
    /// An attempt is stalled, fails and is retried (resuming from the bytes held) when no
    /// response comes for this long, or the body brings less than [`STALL_PROGRESS_BYTES`] in
    /// this long: a server trickling a byte a minute does not keep an attempt alive.
    pub stall_timeout: Duration,
}

/// The default [`DownloadOptions::stall_timeout`] (a step's `download.stall_timeout`).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The least a body must bring per `stall_timeout` to count as progress (16 KiB: 136 bytes
/// a second at the default 2 minutes).
pub const STALL_PROGRESS_BYTES: u64 = 16 << 10;

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

/// Progress of a body against the stall rule: a window of `stall_timeout` that restarts
/// whenever [`STALL_PROGRESS_BYTES`] have come in it.
struct StallWindow {
    limit: Duration,
    started: Instant,
    bytes: u64,
}

impl StallWindow {
    fn new(limit: Duration) -> Self {
        StallWindow {
            limit,
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Counts bytes received; enough of them start a new window.
    fn received(&mut self, len: u64) {
        self.bytes += len;
        if self.bytes >= STALL_PROGRESS_BYTES {
            self.started = Instant::now();
            self.bytes = 0;
        }
    }

    /// How long the next chunk may take before the window ends.
    fn remaining(&self) -> Duration {
        self.limit.saturating_sub(self.started.elapsed())
    }
}

/// Why a file could not be downloaded. Every message names the URL (redacted) or the path and
/// says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server answered a status that is not retried (or the retries ran out).
    #[error("download of {url} failed with HTTP {status}: {message}")]
    Http {
        /// The URL, without query and credentials.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the server's error body, or the status's reason.
        message: String,
    },
    /// The connection failed or stalled on the last attempt.
    #[error("download of {url} failed: {message}; check the network or proxy and run again (the .part file is kept and resumed)")]
    Transport {
        /// The URL, without query and credentials.
        url: String,
        /// What went wrong, from the HTTP client or the stall timer.
        message: String,
    },
    /// The file's size differs from the expected or announced size.
    #[error("download of {url} is incomplete or the wrong size: expected {expected} bytes, got {got}; run again to resume, and if it persists check the expected size in the workflow or the server's copy")]
    Length {
        /// The URL, without query and credentials.
        url: String,
        /// Bytes expected (workflow `size`, or the server's Content-Length/Content-Range).
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// The file's SHA-256 differs from the expected one (the workflow's or the server's digest).
    #[error("{}", checksum_message(.url, .expected, .got))]
    Checksum {
        /// The URL, without query and credentials.
        url: String,
        /// The expected digest, lowercase hex.
        expected: String,
        /// The digest of the bytes received, lowercase hex.
        got: String,
    },
    /// The file's MD5 differs from the expected one (Cloud Storage `md5Hash`).
    #[error("download of {url} failed verification: expected MD5 {expected} (base64), got {got}; the file was not kept; run again, and if it persists the stored object is damaged or the listed md5Hash is wrong")]
    Md5 {
        /// The URL, without query and credentials.
        url: String,
        /// The expected digest as given (base64).
        expected: String,
        /// The digest of the bytes received (base64).
        got: String,
    },
    /// A destination name would escape the output directory or is not a plain name.
    #[error("unsafe file name {name:?}: {reason}; give a plain file name (no path separators, `..` or control characters) in the workflow")]
    BadName {
        /// The name as given.
        name: String,
        /// What makes it unsafe.
        reason: String,
    },
    /// Writing the `.part` file or renaming it failed.
    #[error("{}: {source}; check that the destination directory is writable and has free space", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Ctrl-C, SIGTERM or the step's timeout stopped the download.
    #[error("download of {url} was cancelled; the .part file is kept and resumed by the next run")]
    Cancelled {
        /// The URL, without query and credentials.
        url: String,
    },
    /// The connection could not produce its auth headers (e.g. a token refresh failed).
    #[error(
        "could not get credentials for {url}: {cause}; check the credentials and their scopes"
    )]
    Auth {
        /// The URL, without query and credentials.
        url: String,
        /// Why, from the vendor adapter (told in the message, not as a further cause).
        cause: Box<crate::vendors::VendorError>,
    },
}

fn checksum_message(url: &str, expected: &str, got: &str) -> String {
    if got.is_empty() {
        format!("the expected SHA-256 given for {url} ({expected:?}) is not 64 hex digits; fix it in the workflow")
    } else {
        format!("download of {url} failed verification: expected SHA-256 {expected}, got {got}; the file was not kept; run again, and if it persists the server's copy is damaged or the expected checksum is wrong")
    }
}

/// Downloads `spec.url` to `spec.dest` (see the module docs), with default [`DownloadOptions`].
pub async fn download(
    client: &reqwest::Client,
    spec: &FileToFetch,
    headers: &HeaderFn,
    policy: &RetryPolicy,
    observer: &dyn DownloadObserver,
    cancel: &CancellationToken,
) -> Result<Downloaded, DownloadError> {
    download_with_options(
        client,
        spec,
        headers,
        policy,
        observer,
        cancel,
        &DownloadOptions::default(),
    )
    .await
}

/// [`download`] with explicit options.
pub async fn download_with_options(
    client: &reqwest::Client,
    spec: &FileToFetch,
    headers: &HeaderFn,
    policy: &RetryPolicy,
    observer: &dyn DownloadObserver,
    cancel: &CancellationToken,
    options: &DownloadOptions,
) -> Result<Downloaded, DownloadError> {
    let url = redact_url(&spec.url);
    let expected_sha256 = parse_expected_sha256(spec, &url)?;
    let (dir, part) = part_path(&spec.dest)?;
    create_dir(&dir).await?;
    let _guard = InFlight::acquire(&spec.dest)?;

    let ctx = FetchState {
        client,
        spec,
        headers,
        observer,
        cancel,
        options,
        url,
        part,
        dir,
        expected_sha256,
    };
    let mut st = PartState::load(&ctx).await?;
    retry_attempts(&ctx, &mut st, policy).await
}

/// The workflow's expected SHA-256 as bytes; one that is not 64 hex digits is an error.
fn parse_expected_sha256(spec: &FileToFetch, url: &str) -> Result<Option<[u8; 32]>, DownloadError> {
    let Some(s) = &spec.expected_sha256 else {
        return Ok(None);
    };
    headers::parse_expected_sha256(s)
        .map(Some)
        .ok_or_else(|| DownloadError::Checksum {
            url: url.to_string(),
            expected: s.clone(),
            got: String::new(),
        })
}

/// The destination's directory and its `<name>.part` beside it.
fn part_path(dest: &Path) -> Result<(PathBuf, PathBuf), DownloadError> {
    let file_name =
        dest.file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| DownloadError::BadName {
                name: dest.display().to_string(),
                reason: "the destination path does not end in a UTF-8 file name".to_string(),
            })?;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let part = safe_join(&dir, &format!("{file_name}.part"))?;
    Ok((dir, part))
}

/// Creates the destination directory (private) off the async threads.
async fn create_dir(dir: &Path) -> Result<(), DownloadError> {
    let mk = dir.to_path_buf();
    tokio::task::spawn_blocking(move || crate::durable::create_private_dir(&mk))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
        .map_err(|source| DownloadError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// Runs attempts until one succeeds, the policy gives up or the download is cancelled;
/// progress beyond anything held before renews the retry budget.
async fn retry_attempts(
    ctx: &FetchState<'_>,
    st: &mut PartState,
    policy: &RetryPolicy,
) -> Result<Downloaded, DownloadError> {
    let max_attempts = policy.max_attempts.max(1);
    let mut backoff = new_backoff(policy);
    let mut window_start = Instant::now();
    let mut attempts = 0u32;
    loop {
        if ctx.cancel.is_cancelled() {
            return Err(cancelled(ctx));
        }
        attempts += 1;
        let high_water = st.high_water;
        let failure = match attempt(ctx, st, attempts).await {
            Ok(done) => return Ok(done),
            Err(f) => f,
        };
        // Progress beyond anything held before renews the retry budget: a flaky link on a
        // multi-gigabyte file keeps going as long as each attempt gets further.
        if st.high_water > high_water && max_attempts > 1 {
            backoff = new_backoff(policy);
            window_start = Instant::now();
        }
        let wait = match failure.next {
            Next::Fail => None,
            Next::RetryNow => Some(Duration::ZERO),
            Next::Retry { after } => backoff.next().and_then(|wait| {
                let wait = after.map_or(wait, |after| after.max(wait));
                match policy.max_elapsed {
                    Some(max) if window_start.elapsed() + wait > max => None,
                    _ => Some(wait),
                }
            }),
        };
        let Some(wait) = wait else {
            if st.offset == 0 {
                // Nothing worth resuming: do not leave bad bytes for the next run.
                remove_quietly(&ctx.part).await;
            }
            tracing::warn!(url = %ctx.url, attempts, error = %failure.error, "download failed");
            return Err(failure.error);
        };
        let reason = failure.error.to_string();
        tracing::info!(url = %ctx.url, attempt = attempts + 1, wait_ms = wait.as_millis() as u64, %reason, "retrying download");
        ctx.observer.retrying(attempts + 1, wait, &reason);
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Err(cancelled(ctx)),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One file's download in progress: what it fetches, where the part file is, how to report.
struct FetchState<'a> {
    client: &'a reqwest::Client,
    spec: &'a FileToFetch,
    headers: &'a HeaderFn,
    observer: &'a dyn DownloadObserver,
    cancel: &'a CancellationToken,
    options: &'a DownloadOptions,
    url: String,
    part: PathBuf,
    dir: PathBuf,
    expected_sha256: Option<[u8; 32]>,
}

/// What is known about the `.part` file and the remote file between attempts.
struct PartState {
    /// Bytes in the `.part` that are kept.
    offset: u64,
    /// Digests of those bytes; `None` (with `offset > 0`) means re-hash them from disk.
    hasher: Option<FileHasher>,
    /// The whole file's size as the server last announced it.
    total: Option<u64>,
    /// A strong ETag, sent as `If-Range` so a changed file comes back whole.
    etag: Option<HeaderValue>,
    digests: Vec<ServerDigest>,
    resumed: bool,
    /// The most bytes ever held: growth renews the retry budget.
    high_water: u64,
    restarted_on_416: bool,
}

impl PartState {
    async fn load(ctx: &FetchState<'_>) -> Result<Self, DownloadError> {
        let offset = match tokio::fs::symlink_metadata(&ctx.part).await {
            Ok(meta) if meta.file_type().is_file() => meta.len(),
            Ok(_) => {
                return Err(DownloadError::Io {
                    path: ctx.part.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "exists but is not a regular file (a link or directory); remove it",
                    ),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(DownloadError::Io {
                    path: ctx.part.clone(),
                    source,
                })
            }
        };
        let mut st = PartState {
            offset,
            hasher: if offset == 0 {
                Some(FileHasher::new())
            } else {
                None
            },
            total: None,
            etag: None,
            digests: Vec::new(),
            resumed: false,
            high_water: offset,
            restarted_on_416: false,
        };
        if offset > 0 {
            if ctx.spec.expected_size.is_some_and(|size| offset > size) {
                tracing::info!(url = %ctx.url, offset, "the .part is longer than the expected size; starting over");
                st.restart();
            } else {
                tracing::info!(url = %ctx.url, offset, "resuming from a .part left by an earlier run");
            }
        }
        Ok(st)
    }

    /// Forget the `.part` content: the next writer truncates it.
    fn restart(&mut self) {
        self.offset = 0;
        self.hasher = Some(FileHasher::new());
        self.total = None;
        self.etag = None;
        self.digests.clear();
        self.resumed = false;
    }
}

enum Next {
    Fail,
    Retry { after: Option<Duration> },
    RetryNow,
}

/// A failed attempt: the error, and whether to give up, retry later or retry at once.
struct AttemptFailure {
    error: DownloadError,
    next: Next,
}

impl AttemptFailure {
    fn fail(error: DownloadError) -> Self {
        AttemptFailure {
            error,
            next: Next::Fail,
        }
    }
    fn retry(error: DownloadError) -> Self {
        AttemptFailure {
            error,
            next: Next::Retry { after: None },
        }
    }
}

/// One request for the file: headers, response, body to the `.part`, verification, rename.
async fn attempt(
    ctx: &FetchState<'_>,
    st: &mut PartState,
    n: u32,
) -> Result<Downloaded, AttemptFailure> {
    let request_headers = request_headers(ctx, st).await?;
    tracing::debug!(url = %ctx.url, attempt = n, from = st.offset, "requesting");
    let response = send_request(ctx, request_headers).await?;
    let announced = Announced::read(&response);
    let accepted = accept_response(ctx, st, response, &announced)?;
    let total = settle_total(ctx, st, &accepted, announced)?;

    ctx.observer.started(&ctx.url, total, accepted.start);
    let part::Written { file, hasher, len } = receive_body(ctx, st, accepted.body, total).await?;
    let verified = verify_written(ctx, st, len, hasher, total, n)?;
    make_visible(ctx, file).await?;
    tracing::info!(url = %ctx.url, bytes = len, sha256 = %verified.sha256, attempts = n, resumed = st.resumed, "downloaded");
    Ok(Downloaded {
        path: ctx.spec.dest.clone(),
        bytes: len,
        sha256: verified.sha256,
        md5: verified.md5,
        url: ctx.url.clone(),
        attempts: n,
        resumed: st.resumed,
    })
}

/// A transport error naming the attempt's URL.
fn transport(ctx: &FetchState<'_>, message: String) -> DownloadError {
    DownloadError::Transport {
        url: ctx.url.clone(),
        message,
    }
}

/// The connection's auth headers (marked sensitive), identity encoding, and the range from
/// the bytes held (with the ETag as `If-Range`).
async fn request_headers(
    ctx: &FetchState<'_>,
    st: &PartState,
) -> Result<HeaderMap, AttemptFailure> {
    let auth = tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => return Err(AttemptFailure::fail(cancelled(ctx))),
        h = (ctx.headers)(&ctx.spec.url) => h,
    };
    let mut request_headers = auth.map_err(|cause| {
        AttemptFailure::fail(DownloadError::Auth {
            url: ctx.url.clone(),
            cause: Box::new(cause),
        })
    })?;
    for (_, value) in request_headers.iter_mut() {
        value.set_sensitive(true);
    }
    request_headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    request_headers.remove(header::RANGE);
    request_headers.remove(header::IF_RANGE);
    if st.offset > 0 {
        let range = HeaderValue::from_str(&format!("bytes={}-", st.offset))
            .map_err(|e| AttemptFailure::fail(transport(ctx, e.to_string())))?;
        request_headers.insert(header::RANGE, range);
        if let Some(etag) = &st.etag {
            request_headers.insert(header::IF_RANGE, etag.clone());
        }
    }
    Ok(request_headers)
}

/// Sends the GET (same-origin redirects followed), within the stall timeout.
async fn send_request(
    ctx: &FetchState<'_>,
    request_headers: HeaderMap,
) -> Result<reqwest::Response, AttemptFailure> {
    let send = send_guarded(
        ctx.client,
        Hop {
            method: reqwest::Method::GET,
            url: ctx.spec.url.clone(),
            headers: request_headers,
            body: None,
            timeout: None,
        },
    );
    tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => Err(AttemptFailure::fail(cancelled(ctx))),
        r = tokio::time::timeout(ctx.options.stall_timeout, send) => match r {
            Err(_) => Err(AttemptFailure::retry(transport(ctx, format!(
                "no response within {} s", ctx.options.stall_timeout.as_secs_f64()
            )))),
            Ok(Err(SendError::Redirect(message))) => {
                Err(AttemptFailure::fail(transport(ctx, message)))
            }
            Ok(Err(SendError::Client(e))) => Err(client_failure(ctx, e)),
            Ok(Ok(r)) => Ok(r),
        },
    }
}

/// A client error before any answer: fatal for TLS rejections, rehearsal refusals, builder
/// and redirect errors; retried otherwise.
fn client_failure(ctx: &FetchState<'_>, e: reqwest::Error) -> AttemptFailure {
    let rejected = crate::vendors::tls::rejection(&e);
    let refused = crate::vendors::client::rehearsal_refusal(&e);
    let fatal = e.is_builder() || e.is_redirect() || rejected.is_some() || refused.is_some();
    let error = transport(
        ctx,
        match (rejected, refused) {
            (Some(r), _) => crate::vendors::tls::rejection_message(&r),
            (None, Some(refused)) => refused.to_string(),
            (None, None) => describe_reqwest(e),
        },
    );
    if fatal {
        AttemptFailure::fail(error)
    } else {
        AttemptFailure::retry(error)
    }
}

/// What a response's headers say about the file.
struct Announced {
    status: u16,
    content_length: Option<u64>,
    content_range: Option<ContentRange>,
    digests: Vec<ServerDigest>,
    /// A strong ETag (weak ones cannot guard a range).
    etag: Option<HeaderValue>,
}

impl Announced {
    fn read(response: &reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let h = response.headers();
        Announced {
            status,
            content_length: header_u64(h, header::CONTENT_LENGTH),
            content_range: h
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(headers::parse_content_range),
            digests: headers::server_digests(h, status == 200),
            etag: h
                .get(header::ETAG)
                .filter(|v| !v.as_bytes().starts_with(b"W/"))
                .cloned(),
        }
    }
}

/// A response worth reading: where its bytes start in the file, the size it announces, and
/// its body (none when the `.part` already holds the whole file).
struct Accepted {
    start: u64,
    total: Option<u64>,
    body: Option<reqwest::Response>,
}

/// Decides by status whether the response brings the file (whole or the range asked for).
fn accept_response(
    ctx: &FetchState<'_>,
    st: &mut PartState,
    response: reqwest::Response,
    announced: &Announced,
) -> Result<Accepted, AttemptFailure> {
    match announced.status {
        200 => {
            if st.offset > 0 {
                tracing::info!(url = %ctx.url, offset = st.offset, "the server sent the whole file instead of the range; starting over");
                st.restart();
            }
            Ok(Accepted {
                start: 0,
                total: announced.content_length,
                body: Some(response),
            })
        }
        206 => accept_range(ctx, st, response, announced),
        416 if st.offset > 0 => range_not_satisfiable(ctx, st, announced),
        s if is_retryable_status(s) => {
            let after = if s == 429 || s == 503 {
                response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, chrono::Utc::now()))
            } else {
                None
            };
            Err(AttemptFailure {
                error: http_error(ctx, s),
                next: Next::Retry { after },
            })
        }
        s => Err(AttemptFailure::fail(http_error(ctx, s))),
    }
}

/// An HTTP error with the status's reason and advice.
fn http_error(ctx: &FetchState<'_>, status: u16) -> DownloadError {
    DownloadError::Http {
        url: ctx.url.clone(),
        status,
        message: status_advice(status),
    }
}

/// A `206`: accepted when its `Content-Range` starts at the bytes held and agrees with its
/// `Content-Length`; otherwise the `.part` starts over.
fn accept_range(
    ctx: &FetchState<'_>,
    st: &mut PartState,
    response: reqwest::Response,
    announced: &Announced,
) -> Result<Accepted, AttemptFailure> {
    match announced.content_range {
        Some(ContentRange::Bytes { start, end, total }) if start == st.offset => {
            let len = end - start + 1;
            if announced.content_length.is_some_and(|cl| cl != len) {
                return Err(AttemptFailure::retry(transport(ctx, format!(
                    "the server's Content-Length ({}) does not match its Content-Range ({start}-{end})",
                    announced.content_length.unwrap_or_default()
                ))));
            }
            Ok(Accepted {
                start,
                total,
                body: Some(response),
            })
        }
        other => {
            let offset = st.offset;
            st.restart();
            Err(AttemptFailure::retry(transport(
                ctx,
                format!(
                    "asked for the file from byte {offset} but the server answered {}; starting over",
                    match other {
                        Some(ContentRange::Bytes { start, .. }) => format!("from byte {start}"),
                        _ => "with no usable Content-Range".to_string(),
                    }
                ),
            )))
        }
    }
}

/// A `416` to a range request: the `.part` is complete when the server's size is what it
/// holds (a run stopped before the rename); otherwise it starts over, at once the first time.
fn range_not_satisfiable(
    ctx: &FetchState<'_>,
    st: &mut PartState,
    announced: &Announced,
) -> Result<Accepted, AttemptFailure> {
    let complete = matches!(announced.content_range, Some(ContentRange::Unsatisfied { total }) if total == st.offset)
        && ctx.spec.expected_size.is_none_or(|size| size == st.offset);
    if complete {
        return Ok(Accepted {
            start: st.offset,
            total: Some(st.offset),
            body: None,
        });
    }
    let error = DownloadError::Http {
        url: ctx.url.clone(),
        status: announced.status,
        message: format!(
            "the server cannot serve the file from byte {}; starting over",
            st.offset
        ),
    };
    st.restart();
    let next = if st.restarted_on_416 {
        Next::Retry { after: None }
    } else {
        st.restarted_on_416 = true;
        Next::RetryNow
    };
    Err(AttemptFailure { error, next })
}

/// The size the whole file must have, checked against the expected size and what earlier
/// attempts were told (a changed size or checksum starts over); remembers the new answer.
fn settle_total(
    ctx: &FetchState<'_>,
    st: &mut PartState,
    accepted: &Accepted,
    announced: Announced,
) -> Result<Option<u64>, AttemptFailure> {
    let total = if accepted.body.is_some() && accepted.start > 0 {
        accepted
            .total
            .or(announced.content_length.map(|cl| accepted.start + cl))
    } else {
        accepted.total
    };
    if let (Some(size), Some(total)) = (ctx.spec.expected_size, total) {
        if size != total {
            return Err(AttemptFailure::retry(DownloadError::Length {
                url: ctx.url.clone(),
                expected: size,
                got: total,
            }));
        }
    }
    if let (Some(before), Some(now)) = (st.total, total) {
        if before != now {
            st.restart();
            return Err(AttemptFailure::retry(transport(
                ctx,
                format!(
                    "the file changed on the server (size {before} became {now}); starting over"
                ),
            )));
        }
    }
    let digests = announced.digests;
    let changed = digests
        .iter()
        .any(|d| !st.digests.is_empty() && !st.digests.iter().any(|o| o.sha256 == d.sha256));
    if changed {
        st.restart();
        return Err(AttemptFailure::retry(transport(
            ctx,
            "the file changed on the server (its checksum changed); starting over".to_string(),
        )));
    }
    if !digests.is_empty() {
        st.digests = digests;
    }
    if accepted.body.is_some() {
        st.total = total;
        st.etag = announced.etag;
    }
    st.resumed = accepted.start > 0;
    Ok(total)
}

/// Streams the body (if any) to the `.part` and finishes the writer; the bytes written are
/// kept for the next attempt whatever happened.
async fn receive_body(
    ctx: &FetchState<'_>,
    st: &mut PartState,
    body: Option<reqwest::Response>,
    total: Option<u64>,
) -> Result<part::Written, AttemptFailure> {
    let mut writer = PartWriter::start(ctx.part.clone(), st.offset, st.hasher.take(), total);
    let body_error = match body {
        Some(response) => pump_body(ctx, response, &mut writer, st.offset, total).await,
        None => None,
    };
    let written = match writer.finish().await {
        Ok(w) => w,
        Err(source) => {
            st.hasher = None;
            return Err(AttemptFailure::fail(DownloadError::Io {
                path: ctx.part.clone(),
                source,
            }));
        }
    };
    st.offset = written.len;
    st.hasher = Some(written.hasher.clone());
    st.high_water = st.high_water.max(written.len);
    ctx.observer.progress(written.len);
    if let Some(mut failure) = body_error {
        if matches!(failure.error, DownloadError::Length { got, expected, .. } if got > expected) {
            st.restart();
        }
        if matches!(failure.error, DownloadError::Cancelled { .. }) {
            failure.next = Next::Fail;
        }
        return Err(failure);
    }
    Ok(written)
}

/// Feeds the body's chunks to the writer until it ends, stalls, breaks off, overruns the
/// size, is cancelled or the writer fails (its error then comes from `finish`).
async fn pump_body(
    ctx: &FetchState<'_>,
    response: reqwest::Response,
    writer: &mut PartWriter,
    mut held: u64,
    total: Option<u64>,
) -> Option<AttemptFailure> {
    let mut stream = response.bytes_stream();
    let mut last_report = Instant::now();
    let mut window = StallWindow::new(ctx.options.stall_timeout);
    loop {
        let next = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Some(AttemptFailure::fail(cancelled(ctx))),
            next = tokio::time::timeout(window.remaining(), stream.next()) => next,
        };
        let chunk = match next {
            Err(_) => return Some(AttemptFailure::retry(stalled(ctx, &window, held))),
            Ok(None) => return None,
            Ok(Some(Err(e))) => {
                let cause = describe_reqwest(e);
                tracing::info!(url = %ctx.url, at = held, %cause, "the transfer broke off");
                let error = match total {
                    Some(expected) => DownloadError::Length {
                        url: ctx.url.clone(),
                        expected,
                        got: held,
                    },
                    None => transport(ctx, cause),
                };
                return Some(AttemptFailure::retry(error));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        let len = chunk.len() as u64;
        if total.is_some_and(|t| held + len > t) {
            return Some(AttemptFailure::retry(DownloadError::Length {
                url: ctx.url.clone(),
                expected: total.unwrap_or_default(),
                got: held + len,
            }));
        }
        if !writer.send(chunk).await {
            return None; // the writer failed: its error comes from finish()
        }
        held += len;
        window.received(len);
        if last_report.elapsed() >= super::PROGRESS_EVERY {
            ctx.observer.progress(held);
            last_report = Instant::now();
        }
    }
}

/// The error of a body that brought too little in the stall window.
fn stalled(ctx: &FetchState<'_>, window: &StallWindow, held: u64) -> DownloadError {
    transport(
        ctx,
        format!(
            "stalled: {} byte(s) in the last {} at byte {held}, less than the {} KiB \
             that count as progress (download.stall_timeout); resuming from the \
             bytes held",
            window.bytes,
            crate::workflow::duration::format_duration(ctx.options.stall_timeout),
            STALL_PROGRESS_BYTES >> 10
        ),
    )
}

/// The whole file's digests as reported: SHA-256 and base64 MD5.
struct Verified {
    sha256: crate::durable::Sha256Digest,
    md5: String,
}

/// Checks the whole file's length, MD5 and SHA-256 (the server's and the workflow's).
fn verify_written(
    ctx: &FetchState<'_>,
    st: &mut PartState,
    len: u64,
    hasher: FileHasher,
    total: Option<u64>,
    n: u32,
) -> Result<Verified, AttemptFailure> {
    if let Some(expected) = total.or(ctx.spec.expected_size) {
        if len != expected {
            if len > expected {
                st.restart();
            }
            return Err(AttemptFailure::retry(DownloadError::Length {
                url: ctx.url.clone(),
                expected,
                got: len,
            }));
        }
    }
    let digests = hasher.finalize();
    let md5 = base64::engine::general_purpose::STANDARD.encode(digests.md5);
    check_md5(ctx, st, &md5, n)?;
    check_sha256(ctx, st, digests.sha256)?;
    Ok(Verified {
        sha256: crate::durable::Sha256Digest::from_bytes(digests.sha256),
        md5,
    })
}

/// The workflow's MD5 (Cloud Storage `md5Hash`): one more try on a mismatch, then fail.
fn check_md5(
    ctx: &FetchState<'_>,
    st: &mut PartState,
    md5: &str,
    n: u32,
) -> Result<(), AttemptFailure> {
    let Some(want) = &ctx.spec.expected_md5 else {
        return Ok(());
    };
    if want.trim() == md5 {
        return Ok(());
    }
    let error = DownloadError::Md5 {
        url: ctx.url.clone(),
        expected: want.trim().to_string(),
        got: md5.to_string(),
    };
    st.restart();
    // The object's bytes do not change between attempts: one more try, then fail.
    Err(if n > 1 {
        AttemptFailure::fail(error)
    } else {
        AttemptFailure::retry(error)
    })
}

/// The server's digests and the workflow's SHA-256 against the bytes held.
fn check_sha256(
    ctx: &FetchState<'_>,
    st: &mut PartState,
    digest: [u8; 32],
) -> Result<(), AttemptFailure> {
    let got = || hex::encode(digest);
    if let Some(bad) = st.digests.iter().find(|d| d.sha256 != digest) {
        let expected = hex::encode(bad.sha256);
        tracing::warn!(url = %ctx.url, header = bad.header, %expected, got = %got(), "checksum mismatch; starting over");
        st.restart();
        return Err(AttemptFailure::retry(DownloadError::Checksum {
            url: ctx.url.clone(),
            expected,
            got: got(),
        }));
    }
    if let Some(want) = ctx.expected_sha256 {
        if want != digest {
            let error = DownloadError::Checksum {
                url: ctx.url.clone(),
                expected: hex::encode(want),
                got: got(),
            };
            // When the server vouched for what we hold, fetching it again cannot help.
            let server_agrees = !st.digests.is_empty();
            st.restart();
            return Err(if server_agrees {
                AttemptFailure::fail(error)
            } else {
                AttemptFailure::retry(error)
            });
        }
    }
    Ok(())
}

/// Durable, then visible: syncs the `.part`, renames it to the destination, syncs the directory.
async fn make_visible(ctx: &FetchState<'_>, file: std::fs::File) -> Result<(), AttemptFailure> {
    let synced = tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    synced.map_err(|source| {
        AttemptFailure::fail(DownloadError::Io {
            path: ctx.part.clone(),
            source,
        })
    })?;
    tokio::fs::rename(&ctx.part, &ctx.spec.dest)
        .await
        .map_err(|source| {
            AttemptFailure::fail(DownloadError::Io {
                path: ctx.spec.dest.clone(),
                source,
            })
        })?;
    sync_dir(&ctx.dir).await;
    Ok(())
}

/// The policy's backoff with a `Send` random source (the thread-local one would make the
/// download future `!Send`).
fn new_backoff(policy: &RetryPolicy) -> crate::retry::Backoff<rand::rngs::StdRng> {
    use rand::SeedableRng as _;
    policy.backoff_with(rand::rngs::StdRng::from_entropy())
}

fn cancelled(ctx: &FetchState<'_>) -> DownloadError {
    DownloadError::Cancelled {
        url: ctx.url.clone(),
    }
}

fn header_u64(h: &HeaderMap, name: header::HeaderName) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// A reqwest error and its causes, without the URL (it may carry tokens).
fn describe_reqwest(e: reqwest::Error) -> String {
    crate::vendors::http::error_chain(&e.without_url())
}

fn status_advice(status: u16) -> String {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("unexpected status");
    let advice = match status {
        401 => "the credentials were refused; check them and their scopes",
        403 => "access denied; check that the account may read this export",
        404 | 410 => "the file is not there; the export may have expired or the URL is wrong",
        429 | 503 => "the server is overloaded or rate-limiting; try again later",
        s if is_retryable_status(s) => "the server kept failing; try again later",
        s if (300..400).contains(&s) => "a redirect was not followed; check the URL",
        s if (200..300).contains(&s) => "the server did not send the file",
        _ => "the server refused the request; check the URL and the credentials",
    };
    format!("{reason}: {advice}")
}

async fn remove_quietly(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a bad .part file");
        }
    }
}

/// Makes a rename durable (best effort; see [`crate::durable::sync_dir`]).
async fn sync_dir(dir: &Path) {
    let dir = dir.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || crate::durable::sync_dir(&dir)).await;
}

/// Destinations being downloaded in this process: two downloads to one path would share a `.part`.
static IN_FLIGHT: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(Default::default);

struct InFlight(PathBuf);

impl InFlight {
    fn acquire(dest: &Path) -> Result<Self, DownloadError> {
        let key = std::path::absolute(dest).unwrap_or_else(|_| dest.to_path_buf());
        let mut set = IN_FLIGHT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !set.insert(key.clone()) {
            return Err(DownloadError::Io {
                path: dest.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "another download to this file is already running; give each download its own file name",
                ),
            });
        }
        Ok(InFlight(key))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut set = IN_FLIGHT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set.remove(&self.0);
    }
}
