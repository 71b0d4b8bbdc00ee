//! Vendor adapters: sign, encode and send one request attempt, parse the answer, map errors.
//!
//! The engine renders a step into a vendor-neutral [`Request`], asks a [`Connection`] to send
//! it once ([`Connection::send`]), and decides about retries from the returned
//! [`VendorError`]. Adapters never import the engine, the steps or the workflow model.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

pub mod atom;
pub mod body;
pub mod build;
pub mod client;
mod connection;
pub mod errors;
pub mod google;
pub mod http;
pub mod link;
pub mod mailstore;
pub mod mimecast;
mod plain;
pub mod redirect;
pub mod tls;
mod token;
mod wrong_server;

pub use build::{BuildError, ConnectionCache};
pub use connection::{withheld_note, Connection, ItemCount, ItemSlot, PageItems, Pagination};

/// Which vendor a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorKind {
    /// Any HTTP API (`kind: http`): no signing, optional Basic or bearer auth.
    Http,
    /// Mimecast API 1.0 (HMAC-signed) or 2.0 (OAuth client credentials).
    Mimecast,
    /// MailStore Server Administration API (Basic auth, long-running processes).
    MailStore,
    /// Google Workspace Email Audit API (OAuth bearer, Atom XML).
    Google,
}

impl VendorKind {
    /// The vendor's name as written in a workflow's `kind:` and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            VendorKind::Http => "http",
            VendorKind::Mimecast => "mimecast",
            VendorKind::MailStore => "mailstore",
            VendorKind::Google => "google",
        }
    }
}

impl std::fmt::Display for VendorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rendered credentials of a connection. Every string in here is a secret
/// (the engine registers them with [`Secrets`](crate::secrets::Secrets) before building the connection).
#[derive(Clone)]
pub enum Credentials {
    /// No authentication (plain http connections, or a `url:` call).
    None,
    /// Mimecast API 1.0: HMAC-SHA1 signed requests.
    Mimecast1 {
        /// The access key, sent in the `Authorization: MC <access_key>:<signature>` header.
        access_key: String,
        /// The base64 secret key that signs each request.
        secret_key: String,
        /// The application id (`x-mc-app-id`).
        app_id: String,
        /// The application key, part of the signed string.
        app_key: String,
    },
    /// Mimecast API 2.0: OAuth 2.0 client credentials against `{base}/oauth/token`.
    Mimecast2 {
        /// OAuth client id.
        client_id: String,
        /// OAuth client secret.
        client_secret: String,
    },
    /// HTTP Basic (MailStore, or plain http).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// A ready bearer token (Google `GOOGLE_ACCESS_TOKEN`, or plain http).
    Bearer {
        /// The access token, sent as `Authorization: Bearer <token>`.
        token: String,
    },
    /// Google service-account key file with domain-wide delegation acting as `subject`.
    GoogleServiceAccount {
        /// The service account's JSON key file.
        key_file: PathBuf,
        /// The admin's email address the service account acts as (JWT `sub`).
        subject: String,
        /// OAuth scopes asked for (the Email Audit API's scope).
        scopes: Vec<String>,
        /// Overrides the token endpoint of the key file (tests point it at the simulator).
        token_url: Option<String>,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secret material.
        let name = match self {
            Credentials::None => "None",
            Credentials::Mimecast1 { .. } => "Mimecast1(***)",
            Credentials::Mimecast2 { .. } => "Mimecast2(***)",
            Credentials::Basic { .. } => "Basic(***)",
            Credentials::Bearer { .. } => "Bearer(***)",
            Credentials::GoogleServiceAccount { .. } => "GoogleServiceAccount(***)",
        };
        f.write_str(name)
    }
}

/// Rendered settings of one named connection.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// The connection's name in the workflow (for messages).
    pub name: String,
    /// The vendor, which picks the adapter.
    pub kind: VendorKind,
    /// Base URL; requests with a relative path are joined onto it.
    pub base_url: Option<url::Url>,
    /// The rendered credentials (all secret).
    pub credentials: Credentials,
    /// Extra PEM certificates to trust: a CA, or the server's own (self-signed) certificate.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 digests of the certificates accepted (any name, no chain); empty: no pinning.
    pub tls_pins: Vec<[u8; 32]>,
    /// Accept any certificate. Only when written explicitly; the engine warns on every run.
    pub insecure_tls: bool,
    /// Origins besides the base URL's that may receive the credentials (URLs a vendor's
    /// answer names on another host, e.g. a storage service).
    pub credential_origins: Vec<url::Origin>,
    /// Time limit of one HTTP attempt.
    pub request_timeout: Duration,
    /// MailStore: `millisecondsTimeout` sent with each `get-status` long poll.
    pub status_poll_timeout: Duration,
    /// A rehearsal against the built-in simulator: requests go to loopback addresses only,
    /// any other host is refused before a connection is made.
    pub loopback_only: bool,
    /// The environment variables the base URL was read from (for messages that say what to
    /// set); empty when it was written in the workflow.
    pub base_url_vars: Vec<String>,
}

/// A request body, before vendor encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// No body.
    Empty,
    /// Sent as `application/json`.
    Json(Value),
    /// Sent as `application/x-www-form-urlencoded`, in this order.
    Form(Vec<(String, String)>),
    /// Sent as an Atom `entry` of `apps:property name/value` pairs (`application/atom+xml`).
    Atom(Vec<(String, String)>),
    /// Raw text with its content type.
    Text {
        /// The `Content-Type` header value (default `text/plain`).
        content_type: String,
        /// The body.
        text: String,
    },
}

/// A vendor-neutral request: one attempt of a `call` (or one poll, or one page).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The HTTP method.
    pub method: ::http::Method,
    /// Absolute URL including the query string.
    pub url: url::Url,
    /// Extra headers from the workflow (the adapter adds auth and content type).
    pub headers: Vec<(String, String)>,
    /// The body, before the vendor's encoding.
    pub body: Body,
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Header names in lower case; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// The body parsed by content type: JSON (UTF-8 BOM tolerated), Atom (see [`atom`]),
    /// or a JSON string holding the text.
    pub body: Value,
    /// Vendor request id, when the vendor gives one (Google `requestId`, Mimecast `x-mc-req-id`).
    pub request_id: Option<String>,
}

impl Response {
    /// A response with no headers and a null body (no page fetched, or a dry run).
    pub fn empty(status: u16) -> Self {
        Response {
            status,
            headers: BTreeMap::new(),
            body: Value::Null,
            request_id: None,
        }
    }
}

/// How to tell whether a request that must not be repeated was carried out, when a crash,
/// a timeout or a 5xx hid the answer.
#[derive(Debug, Clone)]
pub enum Recovery {
    /// Sending it again has the same effect (Google's public key upload).
    Resend,
    /// Read what the vendor holds (following its pages) and pick this request out of it
    /// with [`Connection::lookup_matches`].
    Lookup(Box<Lookup>),
    /// The vendor offers no way to tell.
    Unknown,
}

/// A listing that shows whether `original` was carried out.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The listing request to send (paged like any call).
    pub request: Request,
    /// The request whose outcome is unknown, to match against the listing.
    pub original: Request,
    /// When the intent to send `original` was recorded (what it created is not older).
    pub since: chrono::DateTime<chrono::Utc>,
}

/// What a request looks like on the wire, for `--dry-run` (secrets are masked by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRequest {
    /// The HTTP method.
    pub method: String,
    /// The full URL with query string.
    pub url: String,
    /// Every header as sent, the vendor's signing and auth headers included.
    pub headers: Vec<(String, String)>,
    /// The encoded body as text, when there is one.
    pub body: Option<String>,
}

/// Receives what happens during one attempt (long-running MailStore processes, token refreshes).
pub trait Observer: Send + Sync {
    /// A line for the log (MailStore `logOutput` chunks, a token refresh...).
    fn log(&self, line: &str);
    /// Progress of a long-running process, 0..=100.
    fn progress(&self, percent: f64);
    /// A line of a long-running process's own log (MailStore `logOutput`): detail people
    /// see with `--verbose`.
    fn process_log(&self, line: &str) {
        self.log(line);
    }
}

/// An observer that drops everything.
pub struct NoObserver;
impl Observer for NoObserver {
    fn log(&self, _line: &str) {}
    fn progress(&self, _percent: f64) {}
}

/// Errors of one attempt.
#[derive(Debug, thiserror::Error)]
pub enum VendorError {
    /// Could not connect, connection reset, or the attempt timed out. Retryable.
    #[error("{vendor}: {message}")]
    Transport {
        /// The vendor of the connection.
        vendor: VendorKind,
        /// What went wrong, from the HTTP client.
        message: String,
        /// The attempt ran out of time (as opposed to failing to connect or a reset).
        timeout: bool,
    },
    /// A non-success HTTP status.
    #[error("{vendor}: HTTP {status}: {message}")]
    Http {
        /// The vendor of the connection.
        vendor: VendorKind,
        /// The HTTP status code.
        status: u16,
        /// The vendor's error text from the body, or the status's reason.
        message: String,
        /// From `Retry-After` or the vendor's own rate-limit reset header.
        retry_after: Option<Duration>,
        /// The parsed body, for `expect.condition` and messages (boxed: it is large and
        /// rarely there, and every `Result` of the adapters carries this error).
        body: Option<Box<Value>>,
    },
    /// The vendor answered 2xx but reported a failure in its envelope
    /// (Mimecast `fail` entries, MailStore `error`, ...).
    #[error("{vendor}: {message}")]
    Vendor {
        /// The vendor of the connection.
        vendor: VendorKind,
        /// The HTTP status of the answer, when there was one.
        status: Option<u16>,
        /// Vendor error codes (Mimecast `errors[].code`), for messages and conditions.
        codes: Vec<String>,
        /// The vendor's error message.
        message: String,
        /// More text from the vendor (MailStore `error.details`), when given.
        details: Option<String>,
        /// Whether the vendor's code means "try again later" (e.g. Mimecast throttling).
        retryable: bool,
        /// The parsed body (boxed, as for `Http`).
        body: Option<Box<Value>>,
    },
    /// Getting or refreshing a token failed.
    #[error("{vendor}: authentication failed: {message}")]
    Auth {
        /// The vendor of the connection.
        vendor: VendorKind,
        /// The token endpoint's HTTP status, when it answered.
        status: Option<u16>,
        /// Why, from the token endpoint (`error_description`) or the key file.
        message: String,
        /// The token endpoint was unreachable or answered 5xx/429.
        retryable: bool,
    },
    /// A 2xx answer that is not what the vendor sends (an HTML sign-in page from a proxy, a
    /// JSON object without the vendor's envelope, a body that does not parse as its declared
    /// content type). Never "no data": the step fails.
    #[error(
        "{vendor}: HTTP {status} answer is not {expected} (content type {}, body starts {first_line:?}); \
         check the connection's base URL and any proxy or sign-in page in front of it",
        content_type.as_deref().unwrap_or("none")
    )]
    Unexpected {
        /// The vendor of the connection.
        vendor: VendorKind,
        /// The HTTP status of the answer.
        status: u16,
        /// The answer's `Content-Type`, when it had one.
        content_type: Option<String>,
        /// The first non-blank line of the body, shortened (masked like every message).
        first_line: String,
        /// What the adapter expected, e.g. "a Mimecast JSON envelope {meta, data, fail}".
        expected: String,
    },
    /// The answer could not be understood.
    #[error("{vendor}: could not parse the response: {message}")]
    Parse {
        /// The vendor of the connection.
        vendor: VendorKind,
        /// What could not be parsed and why.
        message: String,
    },
    /// The connection or request is unusable as configured (bad key file, bad CA file...).
    #[error("{vendor}: {message}")]
    Config {
        /// The vendor of the connection.
        vendor: VendorKind,
        /// What is wrong and which setting to change.
        message: String,
    },
    /// The attempt was cancelled (Ctrl-C, step timeout).
    #[error("{vendor}: cancelled")]
    Cancelled {
        /// The vendor of the connection.
        vendor: VendorKind,
    },
}

impl VendorError {
    /// Whether another attempt may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            VendorError::Transport { .. } => true,
            VendorError::Http { status, .. } => crate::retry::is_retryable_status(*status),
            VendorError::Vendor { retryable, .. } => *retryable,
            VendorError::Auth { retryable, .. } => *retryable,
            VendorError::Parse { .. }
            | VendorError::Unexpected { .. }
            | VendorError::Config { .. }
            | VendorError::Cancelled { .. } => false,
        }
    }

    /// A wait the server asked for before the next attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            VendorError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The vendor's words when this answer says a quota is spent for longer than a retry
    /// waits (not a short rate limit): Google's 403/429 with reason `dailyLimitExceeded` or
    /// `quotaExceeded`, and a 429 `RESOURCE_EXHAUSTED` (Vault: too many exports in progress).
    pub fn quota_spent(&self) -> Option<String> {
        let VendorError::Http {
            vendor,
            status,
            message,
            body,
            ..
        } = self
        else {
            return None;
        };
        let err = body.as_ref()?.get("error")?;
        let reasons = err.get("errors").and_then(Value::as_array);
        let reason = reasons
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("reason").and_then(Value::as_str))
            .find(|r| matches!(*r, "dailyLimitExceeded" | "quotaExceeded"));
        match (status, reason) {
            (403 | 429, Some(r)) => Some(format!("{vendor}: HTTP {status} {r}: {message}")),
            (429, None)
                if err.get("status").and_then(Value::as_str) == Some("RESOURCE_EXHAUSTED") =>
            {
                Some(format!("{vendor}: HTTP 429 RESOURCE_EXHAUSTED: {message}"))
            }
            _ => None,
        }
    }

    /// The HTTP status behind the error, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            VendorError::Http { status, .. } => Some(*status),
            VendorError::Vendor { status, .. } | VendorError::Auth { status, .. } => *status,
            VendorError::Unexpected { status, .. } => Some(*status),
            _ => None,
        }
    }
}
