//! Step implementations: call, poll, download, decrypt (loops and `uses` live in the engine).
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::events::{Emitter, Event};
use crate::retry::RetryPolicy;
use crate::template::TemplateError;
use crate::vendors::{Connection, Request, Response, VendorError};

pub mod call;
pub mod decrypt;
pub mod download;
pub mod files;
pub mod once;
pub mod poll;

/// What a running step needs from the engine.
pub struct StepEnv<'a> {
    /// The step's path, for events (`id`, `loop[2].id`).
    pub step: &'a str,
    pub emitter: &'a Emitter,
    pub cancel: &'a CancellationToken,
    pub retry: RetryPolicy,
    pub dry_run: bool,
    /// When the step started; with `deadline`, bounds polls.
    pub started: Instant,
    pub deadline: Option<Duration>,
    /// Detach (exit 75) once polling has waited this long.
    pub max_wait: Option<Duration>,
    /// The run's journal and what earlier processes recorded for this step (None: no state).
    pub ledger: Option<&'a once::Ledger>,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("`{field}`: {source}")]
    Template {
        field: String,
        source: TemplateError,
    },
    #[error("{source}{}", attempts_note(*attempts))]
    Vendor {
        source: Box<VendorError>,
        attempts: u32,
    },
    #[error("{message}")]
    Expect { message: String },
    #[error("{message}")]
    PollFailed { message: String },
    #[error("timed out after {}", crate::workflow::duration::format_duration(*after))]
    Timeout { after: Duration },
    #[error("still waiting: {waiting_for}")]
    Pending { waiting_for: String, polls: u32 },
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{message}")]
    Invalid { message: String },
    #[error(transparent)]
    Download(#[from] download::DownloadError),
    #[error(transparent)]
    Decrypt(#[from] decrypt::DecryptError),
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
    pub fn template(field: impl Into<String>, source: TemplateError) -> Self {
        StepError::Template {
            field: field.into(),
            source,
        }
    }
}

/// Forwards what a vendor adapter observes (MailStore logs and progress) as events.
pub struct StepObserver<'a> {
    pub step: &'a str,
    pub emitter: &'a Emitter,
}

impl crate::vendors::Observer for StepObserver<'_> {
    fn log(&self, line: &str) {
        self.emitter.log(self.step, line);
    }
    fn progress(&self, percent: f64) {
        self.emitter.emit(Event::Progress {
            step: self.step.to_string(),
            percent: Some(percent),
            bytes: None,
            total: None,
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
        let err = match conn.send(req, &observer, env.cancel).await {
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

/// Renders a template field to a string; errors name the field.
pub fn render_str(field: &str, src: &str, ctx: &serde_json::Value) -> Result<String, StepError> {
    crate::template::Template::compile(src)
        .and_then(|t| t.render_string(ctx))
        .map_err(|e| StepError::template(field, e))
}

/// Renders an optional field where "not given" is allowed: no template, an empty result, or
/// an undefined `env.*` variable all mean absent (one file can offer several credential kinds,
/// a passphrase may not be set). Any other template error is an error naming the field.
pub fn render_optional(
    field: &str,
    src: &Option<String>,
    ctx: &serde_json::Value,
) -> Result<Option<String>, StepError> {
    let Some(src) = src else {
        return Ok(None);
    };
    let t = crate::template::Template::compile(src).map_err(|e| StepError::template(field, e))?;
    match t.render_string(ctx) {
        Ok(s) if s.is_empty() => Ok(None),
        Ok(s) => Ok(Some(s)),
        Err(TemplateError::UndefinedVariable { path, .. }) if path.starts_with("env.") => Ok(None),
        Err(e) => Err(StepError::template(field, e)),
    }
}

/// A response as templates see it: `status`, `headers`, `body`, `request_id`.
pub fn response_value(r: &Response) -> serde_json::Value {
    serde_json::json!({
        "status": r.status,
        "headers": r.headers,
        "body": r.body,
        "request_id": r.request_id,
    })
}

/// Writes bytes to `path` through a temporary file beside it, renamed when complete
/// (mode 0600); see [`crate::durable::write_atomic`].
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<(), StepError> {
    crate::durable::write_atomic(path, bytes).map_err(|source| StepError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub use crate::durable::{sha256_file, sha256_hex};
