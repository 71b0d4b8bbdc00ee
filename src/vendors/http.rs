//! Sending one request and reading its answer: the outgoing request, the raw response with its
//! size limit, transport errors and their chains, URL redaction. The client, redirects, bodies,
//! error bodies and `Link` headers have their own modules beside this one.
use std::collections::BTreeMap;
use std::time::Duration;

use ::http::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::body::{is_xml_mime, mime_of, parse_body, strip_bom, Encoded};
use super::client::rehearsal_refusal;
use super::errors::{error_message, first_line};
use super::redirect::{send_guarded, Hop, SendError};
use super::{PreparedRequest, VendorError, VendorKind};
use crate::secrets::Secrets;

/// One request ready to go: the workflow's extra headers, then the adapter's own headers
/// (which replace workflow headers of the same name: auth and content type always win).
#[derive(Clone)]
pub struct Outgoing {
    /// The HTTP method.
    pub method: Method,
    /// The full URL, query included.
    pub url: Url,
    /// The workflow's own headers (templates rendered), sent first.
    pub extra_headers: Vec<(String, String)>,
    /// The adapter's headers (auth, content type...), replacing workflow headers of the same name.
    pub headers: Vec<(String, String)>,
    /// The body, if the request has one.
    pub body: Option<Encoded>,
    /// Time limit of this attempt.
    pub timeout: Duration,
}

impl std::fmt::Debug for Outgoing {
    // Header values may be secrets: names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.merged_headers().into_iter().map(|(n, _)| n).collect();
        f.debug_struct("Outgoing")
            .field("method", &self.method)
            .field("url", &redact_url(&self.url))
            .field("headers", &names)
            .field("body", &self.body)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Outgoing {
    /// A request without headers or body.
    pub fn new(method: Method, url: Url, timeout: Duration) -> Self {
        Outgoing {
            method,
            url,
            extra_headers: Vec::new(),
            headers: Vec::new(),
            body: None,
            timeout,
        }
    }

    /// Sets an adapter header (replacing an earlier one of the same name).
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.into()));
    }

    /// The headers as sent, in order.
    pub fn merged_headers(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .extra_headers
            .iter()
            .filter(|(n, _)| !self.headers.iter().any(|(a, _)| a.eq_ignore_ascii_case(n)))
            .cloned()
            .collect();
        if let Some(Encoded {
            content_type: Some(ct),
            ..
        }) = &self.body
        {
            let overridden = self
                .headers
                .iter()
                .chain(out.iter())
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
            if !overridden {
                out.push(("Content-Type".into(), ct.clone()));
            }
        }
        out.extend(self.headers.iter().cloned());
        out
    }

    /// What `--dry-run` shows.
    pub fn to_prepared(&self) -> PreparedRequest {
        PreparedRequest {
            method: self.method.to_string(),
            url: self.url.to_string(),
            headers: self.merged_headers(),
            body: self
                .body
                .as_ref()
                .filter(|b| !b.bytes.is_empty())
                .map(|b| String::from_utf8_lossy(&b.bytes).into_owned()),
        }
    }

    fn header_map(&self, vendor: VendorKind) -> Result<HeaderMap, VendorError> {
        let mut map = HeaderMap::new();
        for (name, value) in self.merged_headers() {
            let hn = HeaderName::from_bytes(name.as_bytes()).map_err(|_| VendorError::Config {
                vendor,
                message: format!("invalid header name {name:?}"),
            })?;
            // The value may be a secret: never quote it.
            let mut hv = HeaderValue::from_str(&value).map_err(|_| VendorError::Config {
                vendor,
                message: format!("invalid value for header {name}"),
            })?;
            if hn == reqwest::header::AUTHORIZATION {
                hv.set_sensitive(true);
            }
            map.append(hn, hv);
        }
        Ok(map)
    }
}

/// A raw answer: status, headers (lower-case names, repeats joined with ", ") and body bytes,
/// with the secrets of the connection it came on, masked in every excerpt of it an error quotes
/// before that excerpt is cut.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The headers, names in lower case (a repeated header's values joined).
    pub headers: BTreeMap<String, String>,
    /// The body as received.
    pub bytes: Vec<u8>,
    /// The secrets of the connection it came on, masked in every excerpt an error quotes.
    pub secrets: Secrets,
}

impl RawResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A header's value by name, in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(std::string::String::as_str)
    }

    /// The `Content-Type` header, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    /// The body as text (UTF-8 BOM removed, invalid sequences replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(strip_bom(&self.bytes)).into_owned()
    }

    /// The body parsed by content type; an error when a JSON body does not parse.
    pub fn parse(&self) -> Result<Value, super::body::InvalidJson> {
        parse_body(self.content_type(), &self.bytes)
    }

    /// The body parsed by content type, or its text when it does not parse.
    pub fn parse_lenient(&self) -> Value {
        self.parse().unwrap_or_else(|_| Value::String(self.text()))
    }

    /// The body parsed as the content type the server declared; a JSON body that is not
    /// JSON, or an XML body that is not markup, is an [`VendorError::Unexpected`].
    pub fn parse_declared(&self, vendor: VendorKind) -> Result<Value, VendorError> {
        let mime = mime_of(self.content_type());
        let body = self.parse().map_err(|_| {
            self.unexpected(vendor, format!("the JSON its content type {mime} declares"))
        })?;
        let markup = self.text().trim_start().starts_with('<');
        if is_xml_mime(&mime) && !body.is_null() && !markup {
            return Err(
                self.unexpected(vendor, format!("the XML its content type {mime} declares"))
            );
        }
        Ok(body)
    }

    /// The MIME type of the answer: lower case, no parameters, "" when there is none.
    pub fn mime(&self) -> String {
        mime_of(self.content_type())
    }

    /// The error of a 2xx answer that is not what `expected` describes: status, content type
    /// and the first line of the body.
    pub fn unexpected(&self, vendor: VendorKind, expected: impl Into<String>) -> VendorError {
        VendorError::Unexpected {
            vendor,
            status: self.status,
            content_type: self.content_type().map(str::to_string),
            first_line: first_line(&self.text(), &self.secrets),
            expected: expected.into(),
        }
    }

    /// `Retry-After` (seconds or HTTP date), if present and valid.
    pub fn retry_after(&self) -> Option<Duration> {
        self.header("retry-after")
            .and_then(|v| crate::retry::parse_retry_after(v, chrono::Utc::now()))
    }

    /// The generic error of a non-2xx answer.
    pub fn http_error(&self, vendor: VendorKind) -> VendorError {
        let body = self.parse_lenient();
        VendorError::Http {
            vendor,
            status: self.status,
            message: error_message(&body, &self.text(), self.content_type(), &self.secrets),
            retry_after: self.retry_after(),
            body: Some(Box::new(body)),
        }
    }
}

/// A URL for messages: scheme, host, port and path; no user info, query or fragment.
///
/// Query strings and userinfo may carry tokens (signed URLs, `access_token=`), so neither
/// ever leaves through a message, a log line or a result.
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    // Both fail only for URLs that cannot have credentials (`data:`, `mailto:`); nothing to strip.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// The error and its sources, joined with ": "; a source whose text the message already
/// holds (many errors print their cause) is left out. Give reqwest errors without their URL.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// Maps a failure of [`send_guarded`].
pub fn send_error(
    vendor: VendorKind,
    method: &Method,
    url: &Url,
    timeout: Duration,
    err: SendError,
) -> VendorError {
    match err {
        SendError::Client(e) => transport_error(vendor, method, url, timeout, e),
        SendError::Redirect(message) => VendorError::Config { vendor, message },
    }
}

/// Maps a transport failure; a refused server certificate is a configuration error (not
/// retried) whose message gives the certificate's fingerprint and how to trust it.
pub fn transport_error(
    vendor: VendorKind,
    method: &Method,
    url: &Url,
    timeout: Duration,
    err: reqwest::Error,
) -> VendorError {
    let is_timeout = err.is_timeout();
    let err = err.without_url();
    if let Some(refused) = rehearsal_refusal(&err) {
        return VendorError::Config {
            vendor,
            message: format!("{method} {}: {refused}", redact_url(url)),
        };
    }
    if let Some(rejected) = super::tls::rejection(&err) {
        return VendorError::Config {
            vendor,
            message: format!(
                "{method} {}: {}",
                redact_url(url),
                super::tls::rejection_message(&rejected)
            ),
        };
    }
    let chain = error_chain(&err);
    if url.scheme() == "https" && not_tls(&chain) {
        // Retrying cannot help: the port speaks plain HTTP (or something else).
        return VendorError::Config {
            vendor,
            message: format!(
                "{method} {}: the server did not answer in TLS ({chain}); if it serves plain HTTP, write the base URL with `http://`",
                redact_url(url)
            ),
        };
    }
    let message = if is_timeout {
        format!(
            "{method} {}: timed out after {}",
            redact_url(url),
            crate::workflow::duration::format_duration(timeout)
        )
    } else {
        format!("{method} {}: {chain}", redact_url(url))
    };
    VendorError::Transport {
        vendor,
        message,
        timeout: is_timeout,
    }
}

/// Whether a transport error says the peer did not speak TLS (rustls: a plain-HTTP answer to
/// a ClientHello is a record of an invalid content type).
fn not_tls(chain: &str) -> bool {
    chain.contains("InvalidContentType") || chain.contains("corrupt message")
}

/// Sends one request and reads the whole answer; `Cancelled` as soon as `cancel` fires.
pub async fn execute(
    client: &reqwest::Client,
    vendor: VendorKind,
    out: &Outgoing,
    secrets: &Secrets,
    cancel: &CancellationToken,
) -> Result<RawResponse, VendorError> {
    let hop = Hop {
        method: out.method.clone(),
        url: out.url.clone(),
        headers: out.header_map(vendor)?,
        body: out.body.as_ref().map(|b| b.bytes.clone()),
        timeout: Some(out.timeout),
    };
    tracing::debug!(vendor = %vendor, method = %out.method, url = %redact_url(&out.url), "request");
    let fut = async {
        let resp = send_guarded(client, hop)
            .await
            .map_err(|e| send_error(vendor, &out.method, &out.url, out.timeout, e))?;
        let status = resp.status().as_u16();
        let headers = header_map_to_btree(resp.headers());
        let bytes = read_body_limited(resp, vendor, out).await?;
        Ok(RawResponse {
            status,
            headers,
            bytes,
            secrets: secrets.clone(),
        })
    };
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(VendorError::Cancelled { vendor }),
        r = fut => {
            if let Ok(raw) = &r {
                tracing::debug!(vendor = %vendor, status = raw.status, "response");
            }
            r
        }
    }
}

/// The largest answer held in memory when the step sets no `max_response_size`.
pub const DEFAULT_MAX_RESPONSE: u64 = 64 << 20;

tokio::task_local! {
    /// The largest answer the running step may hold in memory (see [`with_max_response`]).
    static MAX_RESPONSE: u64;
}

/// Runs `fut` (a step's requests) with answers limited to `limit` bytes; outside of it,
/// [`DEFAULT_MAX_RESPONSE`] applies. A task-local, so that every adapter's requests obey the
/// step's limit without each of them carrying it.
pub async fn with_max_response<F: std::future::Future>(limit: u64, fut: F) -> F::Output {
    MAX_RESPONSE.scope(limit, fut).await
}

fn max_response() -> u64 {
    MAX_RESPONSE
        .try_with(|l| *l)
        .unwrap_or(DEFAULT_MAX_RESPONSE)
}

/// Reads an answer's body chunk by chunk, failing as soon as it exceeds the step's limit
/// (at once when `Content-Length` already says so), so a huge answer never sits in memory.
async fn read_body_limited(
    mut resp: reqwest::Response,
    vendor: VendorKind,
    out: &Outgoing,
) -> Result<Vec<u8>, VendorError> {
    let limit = max_response();
    if let Some(len) = resp.content_length().filter(|l| *l > limit) {
        return Err(too_large(vendor, out, limit, Some(len)));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(vendor, &out.method, &out.url, out.timeout, e))?
    {
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(too_large(vendor, out, limit, None));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// The answer is bigger than the step may hold: not retryable, says what to do instead.
fn too_large(vendor: VendorKind, out: &Outgoing, limit: u64, length: Option<u64>) -> VendorError {
    use crate::workflow::bytesize::format_byte_size;
    let size = match length {
        Some(n) => format!("its Content-Length is {n} bytes"),
        None => "it went on past that".to_string(),
    };
    VendorError::Config {
        vendor,
        message: format!(
            "{} {}: the answer is larger than the step's limit of {} ({size}); a `call` holds its answer in memory: fetch large content with a `download` step (it streams to disk), or raise `max_response_size` on the step",
            out.method,
            redact_url(&out.url),
            format_byte_size(limit)
        ),
    }
}

/// Response headers with lower-case names, repeated headers joined with ", ".
pub fn header_map_to_btree(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_ascii_lowercase())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

/// Cancellable sleep: false when cancelled.
pub async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests;
