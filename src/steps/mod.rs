//! Step implementations: call, poll, download (with extraction), decrypt (loops and `uses` live in the engine).
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::events::{Emitter, Event, StatusClass};
use crate::retry::RetryPolicy;
use crate::template::TemplateError;
use crate::vendors::{Connection, Request, Response, VendorError};
use crate::workflow::model::Count;

/// How often a download or decrypt reports its byte count (a bar redraws no faster anyway).
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_millis(100);

pub mod at_most_once;
pub mod call;
mod call_save;
pub mod decrypt;
pub mod download;
pub mod download_and_decrypt;
mod expect_records;
pub mod extract;
pub mod overwrite;
pub mod poll;
pub(crate) mod quota;
pub mod vault_export;

pub use crate::state::budget::Budgets;

/// What a running step needs from the engine.
pub struct StepEnv<'a> {
    /// The step's path, for events (`id`, `loop[2].id`).
    pub step: &'a str,
    /// Where the step's events go.
    pub emitter: &'a Emitter,
    /// Cancelled on Ctrl-C, SIGTERM or the step's timeout; every wait watches it.
    pub cancel: &'a CancellationToken,
    /// The step's retry policy (its own fields over the file's defaults).
    pub retry: RetryPolicy,
    /// `--dry-run`: show requests instead of sending them.
    pub dry_run: bool,
    /// When the step started; with `deadline`, bounds polls.
    pub started: Instant,
    /// The step's `timeout`, measured from `started` (polls default to 7d).
    pub deadline: Option<Duration>,
    /// Detach (exit 75) once polling has waited this long.
    pub max_wait: Option<Duration>,
    /// A rehearsal: no wait between two polls is longer than this.
    pub poll_wait_cap: Option<Duration>,
    /// The run's journal and what earlier processes recorded for this step (None: no state).
    pub ledger: Option<&'a at_most_once::Ledger>,
    /// Which existing files the step may replace (None: any, with `--overwrite` or the
    /// step's `overwrite: true`).
    pub overwrite: Option<&'a overwrite::OverwriteGuard>,
    /// The quota budgets calls spend from (None: a dry run).
    pub budgets: Option<&'a Budgets>,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A template in one of the step's fields failed to render.
    #[error("`{field}`: {source}")]
    Template {
        /// The field, e.g. `call.json.query`.
        field: String,
        /// Why rendering failed.
        source: TemplateError,
    },
    /// The vendor request failed on its last attempt.
    #[error("{source}{}", attempts_note(*attempts))]
    Vendor {
        /// The last attempt's error.
        source: Box<VendorError>,
        /// Attempts made in all.
        attempts: u32,
    },
    /// The result would be incomplete: pages left behind, or not the vendor's total.
    #[error(transparent)]
    Paging(#[from] call::PagingError),
    /// The answer did not meet `expect` (status or condition).
    #[error("{message}")]
    Expect {
        /// What was expected and what came back.
        message: String,
    },
    /// A poll's `fail_when` condition held (a terminal vendor state).
    #[error("{message}{}", explanation.map(|e| format!(": {e}")).unwrap_or_default())]
    PollFailed {
        /// The condition and the state observed.
        message: String,
        /// What commonly causes this vendor state and what to do, when the adapter knows.
        explanation: Option<&'static str>,
    },
    /// The step's `timeout` ran out.
    #[error("timed out after {}", crate::workflow::duration::format_duration(*after))]
    Timeout {
        /// The timeout that ran out.
        after: Duration,
    },
    /// A poll detached after `max_wait`, or a call waits for a quota; the run is pending
    /// (exit 75) and resumes later.
    #[error("still waiting: {waiting_for}")]
    Pending {
        /// What the step waits for (the `until` condition and the last state, or the quota).
        waiting_for: String,
        /// Polls made in this process.
        polls: u32,
        /// It waits for a quota (a budget or the vendor's answer), not for a vendor state.
        quota: bool,
    },
    /// The quota ledger in the state directory could not be read or written.
    #[error("{message}")]
    Quota {
        /// Which ledger and what to do.
        message: String,
    },
    /// Writing a file the step produces failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file the step would write exists and is not the run's (see [`overwrite`]).
    #[error("{} already exists and was not written by this run or recorded unchanged in the evidence manifest; nothing was written for this step. Move the file away, or pass --overwrite (or set `overwrite: true` on the step) to replace it", path.display())]
    WouldOverwrite {
        /// The existing file.
        path: PathBuf,
    },
    /// A rendered URL field does not parse.
    #[error("`{field}` renders to `{value}`, which is not a URL: {source}")]
    RenderedUrl {
        /// The field, e.g. `call.url`.
        field: &'static str,
        /// What it rendered to (masked).
        value: String,
        /// The URL parser's complaint.
        source: url::ParseError,
    },
    /// A path joined onto a connection's base URL does not parse.
    #[error("`{path}` joined onto the base URL is not a URL: {source}")]
    JoinedUrl {
        /// The rendered path.
        path: String,
        /// The URL parser's complaint.
        source: url::ParseError,
    },
    /// One item of a list of URLs does not parse.
    #[error("`{field}` item {index} is not a URL: {source}")]
    ListUrl {
        /// The list field, e.g. `download.urls`.
        field: &'static str,
        /// 0-based position of the bad item.
        index: usize,
        /// The URL parser's complaint.
        source: url::ParseError,
    },
    /// A relative `path` on a connection without a base URL.
    #[error("connection `{connection}` has no base URL (is its environment variable set?)")]
    NoBaseUrl {
        /// The connection's name.
        connection: String,
    },
    /// A rendered value of the wrong shape (`expected`: what the field takes).
    #[error("`{field}` must be {expected}; found {found}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What the field takes, e.g. "a list of strings".
        expected: &'static str,
        /// A short description of the value found.
        found: String,
    },
    /// A rendered duration that does not parse (`reason` from the duration parser).
    #[error("{field}: {reason}")]
    BadDuration {
        /// The field.
        field: String,
        /// Why it does not parse.
        reason: crate::duration::DurationError,
    },
    /// `download.names` and `download.urls` rendered to lists of different lengths.
    #[error("`download.names` has {names} names for {urls} URLs")]
    NamesMismatch {
        /// How many names.
        names: usize,
        /// How many URLs.
        urls: usize,
    },
    /// A value that cannot be written as JSON (`what`: the response, the report).
    #[error("cannot serialise the {what}: {source}")]
    Serialize {
        /// What was being written.
        what: &'static str,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// A blocking task (key loading, decryption) panicked or was cancelled.
    #[error("{task} task failed: {source}")]
    TaskFailed {
        /// Which task (`key loading`, `decryption`).
        task: &'static str,
        /// The join error.
        source: tokio::task::JoinError,
    },
    /// Reading or writing the run's journal failed.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// Resuming would send a must-not-repeat request that differs from the one recorded.
    #[error("an earlier process of this run sent step `{step}` a different request at {}; its inputs changed, so resuming could repeat it. Check the vendor, then pass --fresh to start the run over", at.to_rfc3339())]
    RequestChanged {
        /// The step's path.
        step: String,
        /// When the earlier process recorded its request.
        at: chrono::DateTime<chrono::Utc>,
    },
    /// A must-not-repeat request may have been carried out and the vendor cannot say.
    #[error("a request that must not be repeated ({method} {url}) may have reached {vendor} at {}, but its answer was lost, and {vendor} offers no way to look it up. Check at {vendor} whether it was carried out; then either run again with --fresh (the run starts over and sends it again), or mark the call `idempotent: true` if repeating it is harmless", since.to_rfc3339())]
    OutcomeUnknown {
        /// The request's method.
        method: http::Method,
        /// Redacted and masked.
        url: String,
        /// The vendor it was sent to.
        vendor: crate::vendors::VendorKind,
        /// When the intent to send it was recorded.
        since: chrono::DateTime<chrono::Utc>,
    },
    /// Looking up a lost answer did not reach the end of the vendor's list.
    #[error("looking up whether {vendor} carried out step `{step}` read {pages} pages without reaching the end (or its pages point back to one already read); check at {vendor}, then run again")]
    LookupTooLong {
        /// The vendor looked up.
        vendor: crate::vendors::VendorKind,
        /// The step's path.
        step: String,
        /// Pages read before giving up.
        pages: u32,
    },
    /// `for_each.items` rendered to something other than a list (or null).
    #[error("`for_each.items` must be a list, got {found}")]
    ItemsNotList {
        /// A short description of the value found.
        found: String,
    },
    /// Iterations of a `for_each` failed (with `fail_fast: false`, after all were tried); each
    /// line names the item and its error.
    #[error("{} of {count} iterations of `{step}` failed:\n  {}", .failures.len(), .failures.join("\n  "))]
    IterationsFailed {
        /// The loop step's path.
        step: String,
        /// Iterations in all.
        count: usize,
        /// One line per failed iteration: the item and its error.
        failures: Vec<String>,
    },
    /// A download failed.
    #[error(transparent)]
    Download(#[from] download::DownloadError),
    /// A decryption failed.
    #[error(transparent)]
    Decrypt(#[from] decrypt::DecryptError),
    /// Taking files out of a downloaded archive failed.
    #[error(transparent)]
    Extract(#[from] extract::ExtractError),
    /// An export's own accounts (results count, checksums, error reports) do not check out.
    #[error(transparent)]
    ExportCheck(#[from] vault_export::CheckError),
    /// Ctrl-C or SIGTERM stopped the step; the run resumes it next time.
    #[error("cancelled")]
    Cancelled,
}

fn attempts_note(n: u32) -> String {
    if n > 1 {
        format!(" (after {n} attempts)")
    } else {
        String::new()
    }
}

impl StepError {
    /// A template error in `field`.
    pub fn template(field: impl Into<String>, source: TemplateError) -> Self {
        StepError::Template {
            field: field.into(),
            source,
        }
    }
}

/// Forwards what a vendor adapter observes (MailStore logs and progress) as events.
pub struct StepObserver<'a> {
    /// The step's path, for the events.
    pub step: &'a str,
    /// Where the events go.
    pub emitter: &'a Emitter,
}

impl crate::vendors::Observer for StepObserver<'_> {
    fn log(&self, line: &str) {
        self.emitter.log(self.step, line);
    }
    fn process_log(&self, line: &str) {
        self.emitter.emit(Event::Log {
            step: self.step.to_string(),
            line: line.to_string(),
            vendor_log: true,
        });
    }
    fn progress(&self, percent: f64) {
        self.emitter.emit(Event::Progress {
            step: self.step.to_string(),
            percent: Some(percent),
            bytes: None,
            total: None,
            file: None,
        });
    }
}

/// Sends one request under the step's retry policy: retryable failures wait (the server's
/// `Retry-After` or rate-limit reset when given, else the backoff) and try again with a fresh,
/// re-signed request. Returns the response and the number of attempts.
pub async fn send_with_retry(
    conn: &Connection,
    req: &Request,
    env: &StepEnv<'_>,
) -> Result<(Response, u32), StepError> {
    let start = Instant::now();
    let mut backoff = env.retry.backoff();
    let mut attempt = 0u32;
    let observer = StepObserver {
        step: env.step,
        emitter: env.emitter,
    };
    loop {
        attempt += 1;
        if env.cancel.is_cancelled() {
            return Err(StepError::Cancelled);
        }
        let sent = conn.send(req, &observer, env.cancel).await;
        count_answer(conn, env, &sent);
        let err = match sent {
            Ok(resp) => return Ok((resp, attempt)),
            Err(e) => e,
        };
        if matches!(err, VendorError::Cancelled { .. }) {
            return Err(StepError::Cancelled);
        }
        if !pause_before_retry(&err, attempt, &mut backoff, start, env).await? {
            return Err(StepError::Vendor {
                source: Box::new(err),
                attempts: attempt,
            });
        }
    }
}

/// Reports how the vendor answered one attempt (its status class, or `network` when no
/// answer came), for the per-step request counts of the reports; a cancelled attempt is not
/// counted.
pub(crate) fn count_answer(
    conn: &Connection,
    env: &StepEnv<'_>,
    sent: &Result<Response, VendorError>,
) {
    if matches!(sent, Err(VendorError::Cancelled { .. })) {
        return;
    }
    env.emitter.emit(Event::Answer {
        step: env.step.to_string(),
        vendor: conn.settings().kind.as_str().to_string(),
        class: StatusClass::of(match sent {
            Ok(resp) => Some(resp.status),
            Err(e) => e.status(),
        }),
    });
}

/// After failed attempt `attempt`: false when there is no next one (not retryable, attempts
/// or `max_elapsed` used up); otherwise reports the retry, waits (the server's `Retry-After`
/// or the backoff) and returns true. Cancellation ends the wait with an error.
pub(crate) async fn pause_before_retry(
    err: &VendorError,
    attempt: u32,
    backoff: &mut crate::retry::Backoff<rand::rngs::StdRng>,
    start: Instant,
    env: &StepEnv<'_>,
) -> Result<bool, StepError> {
    if !err.retryable() {
        return Ok(false);
    }
    let Some(backoff_wait) = backoff.next() else {
        return Ok(false);
    };
    let wait = err.retry_after().unwrap_or(backoff_wait);
    if env
        .retry
        .max_elapsed
        .is_some_and(|limit| start.elapsed() + wait > limit)
    {
        return Ok(false);
    }
    env.emitter.emit(Event::Retry {
        step: env.step.to_string(),
        attempt,
        error: err.to_string(),
        wait,
    });
    tokio::select! {
        _ = tokio::time::sleep(wait) => Ok(true),
        _ = env.cancel.cancelled() => Err(StepError::Cancelled),
    }
}

/// The `openpgp_public_key` helper's check: the key files read now and checked against the
/// clock (see [`crate::template::supply_key_check`]).
pub(crate) fn check_upload_key(
    path: &std::path::Path,
    private: Option<crate::openpgp::check::PrivateKey<'_>>,
) -> Result<String, crate::openpgp::check::KeyCheckError> {
    crate::openpgp::check::check_public_key(path, private, std::time::SystemTime::now())
        .map(|key| key.armored)
}

/// Renders a compiled template field to a string; errors name the field.
pub fn render_tpl(
    field: &str,
    t: &crate::template::Tpl,
    ctx: &serde_json::Value,
) -> Result<String, StepError> {
    t.render_string(ctx)
        .map_err(|e| StepError::template(field, e))
}

/// Renders a template the plan keeps as written (a count written as a template, a budget's
/// key) to a string; errors name the field.
pub fn render_str(field: &str, src: &str, ctx: &serde_json::Value) -> Result<String, StepError> {
    crate::template::Template::compile(src)
        .and_then(|t| t.render_string(ctx))
        .map_err(|e| StepError::template(field, e))
}

/// A `concurrency`-like count: the number written, or its template rendered; `default` when
/// absent. Anything but a whole number of at least 1 fails, naming `field`.
pub fn render_count(
    field: &'static str,
    count: Option<&Count>,
    default: usize,
    ctx: &serde_json::Value,
) -> Result<usize, StepError> {
    let text = match count {
        None => return Ok(default),
        Some(Count::Number(n)) => n.to_string(),
        Some(Count::Template(t)) => render_str(field, t, ctx)?,
    };
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(StepError::WrongType {
            field,
            expected: "a whole number of at least 1",
            found: format!("`{}`", text.trim()),
        }),
    }
}

/// [`crate::template::render_optional`] of a compiled template, with an error naming `field`.
pub fn render_opt_tpl(
    field: &str,
    t: Option<&crate::template::Tpl>,
    ctx: &serde_json::Value,
) -> Result<Option<String>, StepError> {
    crate::template::render_optional_tpl(t, ctx).map_err(|e| StepError::template(field, e))
}

/// [`crate::template::render_optional`], with an error naming `field`.
pub fn render_optional(
    field: &str,
    src: &Option<String>,
    ctx: &serde_json::Value,
) -> Result<Option<String>, StepError> {
    crate::template::render_optional(src.as_deref(), ctx).map_err(|e| StepError::template(field, e))
}

/// A response as templates see it: the [`RESPONSE_FIELDS`] (`status`, `headers`, `body`,
/// `request_id`).
///
/// [`RESPONSE_FIELDS`]: crate::workflow::step_output::RESPONSE_FIELDS
pub fn response_value(r: &Response) -> serde_json::Value {
    use crate::workflow::step_output::{outputs_object, StepOutput as O};
    outputs_object([
        (O::Status, serde_json::json!(r.status)),
        (O::Headers, serde_json::json!(r.headers)),
        (O::Body, r.body.clone()),
        (O::RequestId, serde_json::json!(r.request_id)),
    ])
}

impl From<crate::durable::WriteError> for StepError {
    fn from(e: crate::durable::WriteError) -> Self {
        StepError::Io {
            path: e.path,
            source: e.source,
        }
    }
}
