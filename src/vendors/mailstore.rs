//! MailStore Server Administration API: Basic auth, form-encoded invokes, long-running processes.
//!
//! `POST {base}/api/invoke/{Function}` answers a status object (with a UTF-8 BOM). When its
//! `statusCode` is `running`, the process is followed through `POST {base}/api/get-status`
//! (`token`, `lastKnownStatusVersion` = the last `statusVersion` received, `millisecondsTimeout`)
//! until the code changes. Log chunks go line by line to [`Observer::log`], `percentProgress`
//! to [`Observer::progress`]; the final answer carries the whole log in `logOutput`.
//!
//! Before the first invoke on a connection, `get-metadata` is read once and every invoke's
//! function and argument names are checked against it (see [`metadata`]).
//!
//! A failing `get-status` is retried here (a few times, short backoff, `Retry-After` honoured),
//! never by invoking the function again: functions are not idempotent.
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::body::{form_encode, Encoded};
use super::connection::ConnectionParts;
use super::http::{execute, sleep_or_cancel, Outgoing, RawResponse};
use super::plain::basic_header;
use super::{
    Body, ConnectionSettings, Credentials, Observer, PreparedRequest, Request, Response,
    VendorError, VendorKind,
};
use crate::secrets::Secrets;

mod metadata;

const VENDOR: VendorKind = VendorKind::MailStore;

/// Tries of one `get-status` poll before giving up on following the process.
pub const STATUS_TRIES: u32 = 10;
/// First wait between `get-status` tries (doubled each time, capped at [`STATUS_MAX_WAIT`]).
const STATUS_FIRST_WAIT: Duration = Duration::from_millis(200);
const STATUS_MAX_WAIT: Duration = Duration::from_secs(5);
/// Longest `Retry-After` honoured between `get-status` tries.
const STATUS_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Pause before polling again when a poll brought no new status (the server did not wait).
const UNCHANGED_PAUSE: Duration = Duration::from_millis(200);
/// Time limit of the best-effort `CancelAsync` call.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// Basic auth of a MailStore connection.
pub struct Auth {
    header: String,
    /// The server's functions, read at the first invoke of the run on this connection.
    functions: metadata::FunctionCheck,
}

impl Auth {
    /// The auth of a MailStore connection: its Basic credentials (any other kind is a
    /// `Config` error).
    pub fn new(settings: &ConnectionSettings, secrets: &Secrets) -> Result<Self, VendorError> {
        match &settings.credentials {
            Credentials::Basic { username, password } => Ok(Auth {
                header: basic_header(username, password, secrets),
                functions: metadata::FunctionCheck::default(),
            }),
            other => Err(VendorError::Config {
                vendor: VENDOR,
                message: format!(
                    "connection '{}': mailstore connections take basic credentials, not {other:?}",
                    settings.name
                ),
            }),
        }
    }

    /// The `Authorization` header value (`Basic ...`; a secret).
    pub fn header(&self) -> &str {
        &self.header
    }
}

/// A POST with Basic auth and a form body (`Content-Length: 0` when there is none).
fn outgoing(
    url: Url,
    extra_headers: &[(String, String)],
    body: &Body,
    authorization: &str,
    timeout: Duration,
) -> Result<Outgoing, VendorError> {
    let mut out = Outgoing::new(::http::Method::POST, url, timeout);
    out.extra_headers = extra_headers.to_vec();
    match body {
        Body::Form(pairs) if !pairs.is_empty() => {
            out.body = Some(Encoded {
                content_type: Some("application/x-www-form-urlencoded".into()),
                bytes: form_encode(pairs).into_bytes(),
            });
            out.set_header("Content-Type", "application/x-www-form-urlencoded");
        }
        Body::Form(_) | Body::Empty => {
            out.body = Some(Encoded {
                content_type: None,
                bytes: Vec::new(),
            });
            out.set_header("Content-Length", "0");
        }
        Body::Text { content_type, text } => {
            out.body = Some(Encoded {
                content_type: Some(content_type.clone()),
                bytes: text.clone().into_bytes(),
            });
        }
        Body::Json(_) | Body::Atom(_) => {
            return Err(VendorError::Config {
                vendor: VENDOR,
                message: "MailStore functions take form parameters (a form body)".into(),
            })
        }
    }
    out.set_header("Authorization", authorization);
    Ok(out)
}

fn form(pairs: &[(&str, String)]) -> Body {
    Body::Form(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

pub(super) fn prepare(
    ctx: &ConnectionParts<'_>,
    _auth: &Auth,
    req: &Request,
) -> Result<PreparedRequest, VendorError> {
    Ok(outgoing(
        req.url.clone(),
        &req.headers,
        &req.body,
        "Basic <credentials>",
        ctx.settings.request_timeout,
    )?
    .to_prepared())
}

/// `{base}/api/<tail>`: the prefix before `/api/invoke/` in the request URL, else the
/// connection's base URL.
fn api_url(ctx: &ConnectionParts<'_>, req_url: &Url, tail: &str) -> Result<Url, VendorError> {
    let path = req_url.path();
    if let Some(i) = path.find("/api/invoke/") {
        let mut u = req_url.clone();
        u.set_path(&format!("{}/api/{tail}", &path[..i]));
        u.set_query(None);
        u.set_fragment(None);
        return Ok(u);
    }
    if let Some(i) = path.find("/api/") {
        let mut u = req_url.clone();
        u.set_path(&format!("{}/api/{tail}", &path[..i]));
        u.set_query(None);
        u.set_fragment(None);
        return Ok(u);
    }
    let base = ctx
        .settings
        .base_url
        .as_ref()
        .ok_or_else(|| VendorError::Config {
            vendor: VENDOR,
            message: "cannot tell the API base of this request (no /api/ in it, no base URL)"
                .into(),
        })?;
    Url::parse(&format!(
        "{}/api/{tail}",
        base.as_str().trim_end_matches('/')
    ))
    .map_err(|e| VendorError::Config {
        vendor: VENDOR,
        message: format!("cannot build the {tail} URL: {e}"),
    })
}

/// What has been seen of a process so far.
struct Progress<'a> {
    observer: &'a dyn Observer,
    last_version: Option<i64>,
    log: String,
    partial_line: String,
}

impl Progress<'_> {
    /// Takes in one status: log chunk and progress when the status is new.
    fn absorb(&mut self, status: &Value) {
        let version = status.get("statusVersion").and_then(Value::as_i64);
        let is_new = match (version, self.last_version) {
            (Some(v), Some(last)) => v != last,
            _ => true,
        };
        if version.is_some() {
            self.last_version = version;
        }
        if !is_new {
            return;
        }
        if let Some(chunk) = status.get("logOutput").and_then(Value::as_str) {
            self.log.push_str(chunk);
            self.partial_line.push_str(chunk);
            while let Some(i) = self.partial_line.find('\n') {
                let line: String = self.partial_line.drain(..=i).collect();
                let line = line.trim_end_matches(['\r', '\n']);
                if !line.trim().is_empty() {
                    self.observer.process_log(line);
                }
            }
        }
        if let Some(p) = status.get("percentProgress").and_then(Value::as_f64) {
            self.observer.progress(p.clamp(0.0, 100.0));
        }
    }

    /// Emits the last line when the log did not end with a line break.
    fn flush(&mut self) {
        let rest = std::mem::take(&mut self.partial_line);
        let rest = rest.trim_end_matches(['\r', '\n']);
        if !rest.trim().is_empty() {
            self.observer.process_log(rest);
        }
    }
}

fn status_code(status: &Value) -> &str {
    status
        .get("statusCode")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn parse_status(raw: &RawResponse) -> Result<Value, VendorError> {
    let v = raw.parse().map_err(|e| VendorError::Parse {
        vendor: VENDOR,
        message: e.to_string(),
    })?;
    if !v.is_object() {
        return Err(VendorError::Parse {
            vendor: VENDOR,
            message: "expected a status object".into(),
        });
    }
    Ok(v)
}

/// Sends a MailStore API call (its function and arguments checked first for `invoke`) and,
/// while the process runs, follows it with `get-status` to its end.
pub(super) async fn send(
    ctx: &ConnectionParts<'_>,
    auth: &Auth,
    req: &Request,
    observer: &dyn Observer,
    cancel: &CancellationToken,
) -> Result<Response, VendorError> {
    let function = req
        .url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or("")
        .to_string();
    if req.url.path().contains("/api/invoke/") {
        let args: Vec<&str> = match &req.body {
            Body::Form(pairs) => pairs.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        };
        auth.functions
            .check(ctx, &auth.header, &req.url, &function, &args, cancel)
            .await?;
    }
    let out = outgoing(
        req.url.clone(),
        &req.headers,
        &req.body,
        &auth.header,
        ctx.settings.request_timeout,
    )?;
    let raw = execute(ctx.client, VENDOR, &out, ctx.secrets, cancel).await?;
    if !raw.is_success() {
        return Err(raw.http_error(VENDOR));
    }
    let status = parse_status(&raw)?;
    let mut progress = Progress {
        observer,
        last_version: None,
        log: String::new(),
        partial_line: String::new(),
    };
    progress.absorb(&status);
    let (raw, mut status) = follow_running(
        ctx,
        auth,
        req,
        &function,
        (raw, status),
        &mut progress,
        cancel,
    )
    .await?;
    progress.flush();
    if let Some(obj) = status.as_object_mut() {
        if !progress.log.is_empty() {
            obj.insert("logOutput".into(), Value::String(progress.log));
        }
    }
    if status_code(&status) == "succeeded" {
        return Ok(Response {
            status: raw.status,
            headers: raw.headers,
            body: status,
            request_id: None,
        });
    }
    Err(process_failed(&function, raw.status, status))
}

/// Polls `get-status` while the process runs, taking in each status; cancelling (or a
/// server that stops answering with news) sends `CancelAsync`. Returns the last answer.
async fn follow_running(
    ctx: &ConnectionParts<'_>,
    auth: &Auth,
    req: &Request,
    function: &str,
    (mut raw, mut status): (RawResponse, Value),
    progress: &mut Progress<'_>,
    cancel: &CancellationToken,
) -> Result<(RawResponse, Value), VendorError> {
    while status_code(&status) == "running" {
        let token = status
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| VendorError::Parse {
                vendor: VENDOR,
                message: format!("{function} is running but the answer has no token"),
            })?
            .to_string();
        let before = progress.last_version;
        match get_status(ctx, auth, &req.url, &token, before, cancel).await {
            Ok((r, s)) => {
                raw = r;
                status = s;
            }
            Err(VendorError::Cancelled { .. }) => {
                cancel_async(ctx, auth, &req.url, &token).await;
                return Err(VendorError::Cancelled { vendor: VENDOR });
            }
            Err(e) => return Err(e),
        }
        progress.absorb(&status);
        if status_code(&status) == "running"
            && progress.last_version == before
            && !sleep_or_cancel(UNCHANGED_PAUSE, cancel).await
        {
            cancel_async(ctx, auth, &req.url, &token).await;
            return Err(VendorError::Cancelled { vendor: VENDOR });
        }
    }
    Ok((raw, status))
}

/// The error of a process that ended other than `succeeded`: its error's message and
/// details, or its status code.
fn process_failed(function: &str, http_status: u16, status: Value) -> VendorError {
    let code = status_code(&status).to_string();
    let error = status.get("error");
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            if code.is_empty() {
                format!("{function}: the answer has no statusCode")
            } else {
                format!("{function} ended with status {code}")
            }
        });
    let details = error
        .and_then(|e| e.get("details"))
        .and_then(Value::as_str)
        .map(str::to_string);
    VendorError::Vendor {
        vendor: VENDOR,
        status: Some(http_status),
        codes: if code.is_empty() { vec![] } else { vec![code] },
        message,
        details,
        retryable: false,
        body: Some(Box::new(status)),
    }
}

/// One `get-status` poll, retried on transport errors, 429 and 5xx.
async fn get_status(
    ctx: &ConnectionParts<'_>,
    auth: &Auth,
    req_url: &Url,
    token: &str,
    last_version: Option<i64>,
    cancel: &CancellationToken,
) -> Result<(RawResponse, Value), VendorError> {
    let url = api_url(ctx, req_url, "get-status")?;
    let poll_ms = ctx
        .settings
        .status_poll_timeout
        .as_millis()
        .min(u64::MAX as u128) as u64;
    let body = form(&[
        ("token", token.to_string()),
        (
            "lastKnownStatusVersion",
            last_version.unwrap_or(0).to_string(),
        ),
        ("millisecondsTimeout", poll_ms.to_string()),
    ]);
    let timeout = ctx
        .settings
        .request_timeout
        .saturating_add(ctx.settings.status_poll_timeout);
    let out = outgoing(url, &[], &body, &auth.header, timeout)?;
    let mut wait = STATUS_FIRST_WAIT;
    let mut last = StatusRetry {
        problem: String::new(),
        status: None,
        retry_after: None,
    };
    for attempt in 1..=STATUS_TRIES {
        let result = execute(ctx.client, VENDOR, &out, ctx.secrets, cancel).await;
        last = match status_attempt(result)? {
            StatusAttempt::Answer(raw, status) => return Ok((raw, status)),
            StatusAttempt::Retry(retry) => retry,
        };
        if attempt == STATUS_TRIES {
            break;
        }
        // The server's Retry-After wins over the own backoff.
        let pause = last
            .retry_after
            .map(|ra| ra.min(STATUS_MAX_RETRY_AFTER))
            .unwrap_or(wait);
        tracing::warn!(
            vendor = %VENDOR,
            attempt,
            wait_ms = pause.as_millis() as u64,
            "get-status failed, retrying: {}", last.problem
        );
        if !sleep_or_cancel(pause, cancel).await {
            return Err(VendorError::Cancelled { vendor: VENDOR });
        }
        wait = (wait * 2).min(STATUS_MAX_WAIT);
    }
    // Not retryable: another attempt would invoke the (non-idempotent) function again.
    Err(VendorError::Vendor {
        vendor: VENDOR,
        status: last.status,
        codes: vec![],
        message: format!(
            "lost track of the running process: get-status failed {STATUS_TRIES} times \
             (last: {})",
            last.problem
        ),
        details: None,
        retryable: false,
        body: None,
    })
}

/// A `get-status` attempt worth repeating: what went wrong, the HTTP status when one came,
/// and the server's Retry-After.
struct StatusRetry {
    problem: String,
    status: Option<u16>,
    retry_after: Option<Duration>,
}

/// One `get-status` attempt that did not end the poll.
enum StatusAttempt {
    /// The status, read.
    Answer(RawResponse, Value),
    /// Transport errors, 429 and 5xx: try again.
    Retry(StatusRetry),
}

/// Sorts one `get-status` attempt: an answer, one to retry, or an error that ends the poll.
fn status_attempt(result: Result<RawResponse, VendorError>) -> Result<StatusAttempt, VendorError> {
    match result {
        Ok(raw) if raw.is_success() => {
            let status = parse_status(&raw)?;
            Ok(StatusAttempt::Answer(raw, status))
        }
        Ok(raw) if crate::retry::is_retryable_status(raw.status) => {
            let problem = match raw.http_error(VENDOR) {
                VendorError::Http { message, .. } => format!("HTTP {}: {message}", raw.status),
                other => other.to_string(),
            };
            Ok(StatusAttempt::Retry(StatusRetry {
                problem,
                status: Some(raw.status),
                retry_after: raw.retry_after(),
            }))
        }
        Ok(raw) => Err(raw.http_error(VENDOR)),
        Err(VendorError::Transport { message, .. }) => Ok(StatusAttempt::Retry(StatusRetry {
            problem: message,
            status: None,
            retry_after: None,
        })),
        Err(e) => Err(e),
    }
}

/// Best effort: asks the server to cancel the process (short timeout, errors only logged).
async fn cancel_async(ctx: &ConnectionParts<'_>, auth: &Auth, req_url: &Url, token: &str) {
    let url = match api_url(ctx, req_url, "invoke/CancelAsync") {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(vendor = %VENDOR, "cannot send CancelAsync: {e}");
            return;
        }
    };
    let timeout = ctx.settings.request_timeout.min(CANCEL_TIMEOUT);
    let out = match outgoing(
        url,
        &[],
        &form(&[("token", token.to_string())]),
        &auth.header,
        timeout,
    ) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(vendor = %VENDOR, "cannot send CancelAsync: {e}");
            return;
        }
    };
    match execute(
        ctx.client,
        VENDOR,
        &out,
        ctx.secrets,
        &CancellationToken::new(),
    )
    .await
    {
        Ok(raw) if raw.is_success() => {
            tracing::info!(vendor = %VENDOR, "CancelAsync sent for the running process");
        }
        Ok(raw) => tracing::warn!(vendor = %VENDOR, status = raw.status, "CancelAsync refused"),
        Err(e) => tracing::warn!(vendor = %VENDOR, "CancelAsync failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Rec {
        lines: Mutex<Vec<String>>,
        progress: Mutex<Vec<f64>>,
    }
    impl Observer for Rec {
        fn log(&self, line: &str) {
            self.lines.lock().unwrap().push(line.to_string());
        }
        fn progress(&self, p: f64) {
            self.progress.lock().unwrap().push(p);
        }
    }

    #[test]
    fn log_chunks_become_lines_and_repeats_are_skipped() {
        let rec = Rec::default();
        let mut p = Progress {
            observer: &rec,
            last_version: None,
            log: String::new(),
            partial_line: String::new(),
        };
        p.absorb(
            &serde_json::json!({"statusVersion": 3, "percentProgress": 0,
            "logOutput": "Verifying file group #11...\r\nCreating a list"}),
        );
        p.absorb(
            &serde_json::json!({"statusVersion": 9, "percentProgress": 40,
            "logOutput": " of messages...\r\n  400 messages verified...\r\n"}),
        );
        // The server repeats the last status when nothing new happened.
        p.absorb(
            &serde_json::json!({"statusVersion": 9, "percentProgress": 40,
            "logOutput": " of messages...\r\n  400 messages verified...\r\n"}),
        );
        p.absorb(&serde_json::json!({"statusVersion": 12, "logOutput": "Finished."}));
        p.flush();
        assert_eq!(
            *rec.lines.lock().unwrap(),
            vec![
                "Verifying file group #11...",
                "Creating a list of messages...",
                "  400 messages verified...",
                "Finished."
            ]
        );
        assert_eq!(*rec.progress.lock().unwrap(), vec![0.0, 40.0]);
        assert_eq!(
            p.log,
            "Verifying file group #11...\r\nCreating a list of messages...\r\n  400 messages verified...\r\nFinished."
        );
        assert_eq!(p.last_version, Some(12));
    }
}
