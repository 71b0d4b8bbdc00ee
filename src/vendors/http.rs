//! Shared HTTP plumbing: client building, body encoding, sending one request, parsing and errors.
use std::collections::BTreeMap;
use std::time::Duration;

use ::http::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{atom, Body, ConnectionSettings, PreparedRequest, VendorError, VendorKind};
use crate::secrets::Secrets;

/// Longest excerpt of a response body quoted in an error message.
const EXCERPT_CHARS: usize = 200;

/// Builds the HTTP client of a connection: TLS through [`super::tls`] (platform roots,
/// `SSL_CERT_FILE`, `ca_file`, pins, `insecure_tls`), no `Referer`, and redirects followed
/// automatically only within one origin (see [`send_guarded`] for the others).
///
/// No overall timeout is set on the client (downloads may take long); every adapter request
/// carries its own timeout.
pub fn build_client(settings: &ConnectionSettings) -> Result<reqwest::Client, VendorError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let vendor = settings.kind;
    let tls = super::tls::client_config(settings)?;
    let builder = reqwest::Client::builder()
        .connect_timeout(settings.request_timeout)
        .user_agent(concat!("auditflow/", env!("CARGO_PKG_VERSION")))
        .referer(false)
        .redirect(same_origin_redirects())
        .tls_backend_preconfigured(tls);
    let builder = if settings.loopback_only {
        loopback::confine(builder)
    } else {
        builder
    };
    builder.build().map_err(|e| VendorError::Config {
        vendor,
        message: format!("cannot build the HTTP client: {}", error_chain(&e)),
    })
}

/// A client that cannot leave the machine (a rehearsal against the built-in simulator).
mod loopback {
    use std::net::{Ipv4Addr, SocketAddr};

    use reqwest::dns::{Addrs, Name, Resolve, Resolving};
    use url::{Host, Url};

    /// What a refused request's error says.
    pub(super) const REFUSED: &str = "a rehearsal (--dry-run=sim) sends requests to the built-in \
        simulator only: this one names another host and was not sent. Name the vendor through \
        a connection whose base_url comes from its environment variable (as the shipped \
        workflows do), which the rehearsal points at the simulator";

    /// Host names resolve to nothing but `localhost`; a URL with an address that is not a
    /// loopback one goes through a proxy whose name does not resolve. Either way the request
    /// fails before any connection is made, with [`REFUSED`] in its error.
    pub(super) fn confine(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let outside = reqwest::Proxy::custom(|url: &Url| {
            (!is_loopback(url)).then_some("http://outside-the-simulator.invalid")
        });
        builder.proxy(outside).dns_resolver(LoopbackOnly)
    }

    pub(super) fn is_loopback(url: &Url) -> bool {
        match url.host() {
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        }
    }

    struct LoopbackOnly;

    impl Resolve for LoopbackOnly {
        fn resolve(&self, name: Name) -> Resolving {
            let local = name.as_str().eq_ignore_ascii_case("localhost");
            Box::pin(async move {
                if local {
                    let addrs: Addrs =
                        Box::new(std::iter::once(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))));
                    Ok(addrs)
                } else {
                    Err(REFUSED.into())
                }
            })
        }
    }
}

/// The refusal of a rehearsal's client to leave the machine, when that is what `err` is: a
/// configuration error, not a transient one (trying again changes nothing).
pub fn rehearsal_refusal(err: &reqwest::Error) -> Option<&'static str> {
    error_chain(err)
        .contains(loopback::REFUSED)
        .then_some(loopback::REFUSED)
}

/// The most redirects one request follows, automatic and [`send_guarded`] hops together.
const MAX_REDIRECTS: usize = 10;

/// reqwest follows a redirect by itself only when it stays on the same origin (every header
/// and a 307/308 body may go along); at an origin change it stops and hands the 3xx back.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let same = attempt
            .previous()
            .last()
            .is_some_and(|prev| prev.origin() == attempt.url().origin());
        if same {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// Headers that may follow a request to another origin: content negotiation and ranges.
/// Everything else (Authorization, vendor signatures, cookies, workflow headers) stays behind.
const PORTABLE_HEADERS: [reqwest::header::HeaderName; 4] = [
    reqwest::header::ACCEPT,
    reqwest::header::ACCEPT_ENCODING,
    reqwest::header::RANGE,
    reqwest::header::IF_RANGE,
];

/// One request as [`send_guarded`] sends it.
pub struct Hop {
    /// The method (a 303 and a 301/302 after a POST turn it into GET at another origin).
    pub method: Method,
    /// Where it goes.
    pub url: Url,
    /// Every header, credentials included (only [`PORTABLE_HEADERS`] leave the origin).
    pub headers: HeaderMap,
    /// The body (may be signed; never replayed to another origin).
    pub body: Option<Vec<u8>>,
    /// Time limit of each hop; None: the caller bounds the whole exchange.
    pub timeout: Option<Duration>,
}

/// Why [`send_guarded`] got no response.
#[derive(Debug)]
pub enum SendError {
    /// The HTTP client failed (connect, TLS, timeout...).
    Client(reqwest::Error),
    /// A redirect that is not followed; the text says why and what to do.
    Redirect(String),
}

/// Sends a request, following redirects: within an origin reqwest does it; to another
/// origin this function does, with only [`PORTABLE_HEADERS`] and no body (303, and 301/302
/// after a POST, turn into a GET). A 307/308 that would replay a body to another origin is
/// an error: the body may be signed or hold credentials.
pub async fn send_guarded(
    client: &reqwest::Client,
    mut hop: Hop,
) -> Result<reqwest::Response, SendError> {
    for _ in 0..=MAX_REDIRECTS {
        let mut rb = client
            .request(hop.method.clone(), hop.url.clone())
            .headers(hop.headers.clone());
        if let Some(t) = hop.timeout {
            rb = rb.timeout(t);
        }
        if let Some(body) = &hop.body {
            rb = rb.body(body.clone());
        }
        let resp = rb.send().await.map_err(SendError::Client)?;
        let Some(target) = cross_origin_location(&resp) else {
            return Ok(resp);
        };
        hop = cross_origin_hop(hop, resp.status().as_u16(), resp.url(), target)?;
    }
    Err(SendError::Redirect(format!(
        "{} {}: more than {MAX_REDIRECTS} redirects",
        hop.method,
        redact_url(&hop.url)
    )))
}

/// The target of a redirect answer that leaves the origin of the URL it answered.
fn cross_origin_location(resp: &reqwest::Response) -> Option<Url> {
    if !matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)?
        .to_str()
        .ok()?;
    let target = resp.url().join(location).ok()?;
    (target.origin() != resp.url().origin()).then_some(target)
}

/// The request that follows a redirect to another origin, stripped of credentials.
fn cross_origin_hop(hop: Hop, status: u16, from: &Url, target: Url) -> Result<Hop, SendError> {
    let becomes_get = status == 303 || (matches!(status, 301 | 302) && hop.method == Method::POST);
    let keeps_body = !becomes_get && hop.body.as_ref().is_some_and(|b| !b.is_empty());
    if keeps_body || (!becomes_get && !matches!(hop.method, Method::GET | Method::HEAD)) {
        return Err(SendError::Redirect(format!(
            "{} {} answered HTTP {status} redirecting to {}, another origin; the request \
             (its body and credentials) is not replayed there. Set base_url to the origin the \
             vendor redirects to if that is the right server",
            hop.method,
            redact_url(from),
            origin_text(&target)
        )));
    }
    let mut headers = HeaderMap::new();
    for name in PORTABLE_HEADERS {
        for v in hop.headers.get_all(&name) {
            headers.append(name.clone(), v.clone());
        }
    }
    tracing::debug!(
        from = %redact_url(from),
        to = %redact_url(&target),
        status,
        "redirect to another origin: followed without credentials"
    );
    Ok(Hop {
        method: if becomes_get { Method::GET } else { hop.method },
        url: target,
        headers,
        body: None,
        timeout: hop.timeout,
    })
}

/// `scheme://host:port` of a URL, for messages.
pub fn origin_text(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// An encoded request body.
#[derive(Clone, PartialEq)]
pub struct Encoded {
    /// The `Content-Type` to send with it, if the body has one.
    pub content_type: Option<String>,
    /// The body's bytes.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Encoded {
    // The body may hold secrets (client secret, assertion, password): length only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded")
            .field("content_type", &self.content_type)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Encodes a body the generic way: JSON, form, Atom entry or text; `Empty` gives `None`.
pub fn encode_body(vendor: VendorKind, body: &Body) -> Result<Option<Encoded>, VendorError> {
    Ok(match body {
        Body::Empty => None,
        Body::Json(v) => Some(Encoded {
            content_type: Some("application/json".into()),
            bytes: serde_json::to_vec(v).map_err(|e| VendorError::Config {
                vendor,
                message: format!("cannot encode the JSON body: {e}"),
            })?,
        }),
        Body::Form(pairs) => Some(Encoded {
            content_type: Some("application/x-www-form-urlencoded".into()),
            bytes: form_encode(pairs).into_bytes(),
        }),
        Body::Atom(props) => Some(Encoded {
            content_type: Some("application/atom+xml".into()),
            bytes: atom::build_entry(props).into_bytes(),
        }),
        Body::Text { content_type, text } => Some(Encoded {
            content_type: Some(content_type.clone()),
            bytes: text.clone().into_bytes(),
        }),
    })
}

/// `application/x-www-form-urlencoded` serialization, pairs in the given order.
pub fn form_encode(pairs: &[(String, String)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

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
    pub fn parse(&self) -> Result<Value, String> {
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

/// Removes a leading UTF-8 byte order mark.
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// The MIME type of a `Content-Type` value: lower case, no parameters, "" when absent.
pub fn mime_of(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a MIME type (as [`mime_of`] gives it) is JSON.
pub fn is_json_mime(mime: &str) -> bool {
    mime == "application/json" || mime.ends_with("+json") || mime.ends_with("/json")
}

/// Whether a MIME type (as [`mime_of`] gives it) is XML (Atom included).
pub fn is_xml_mime(mime: &str) -> bool {
    mime == "application/atom+xml" || mime.ends_with("/xml") || mime.ends_with("+xml")
}

/// Parses a body by content type: JSON (BOM tolerated), Atom/XML into the [`atom`] shape,
/// anything else a JSON string of the text. An empty body is `null`.
pub fn parse_body(content_type: Option<&str>, bytes: &[u8]) -> Result<Value, String> {
    let bytes = strip_bom(bytes);
    let text = String::from_utf8_lossy(bytes);
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    let mime = mime_of(content_type);
    if is_json_mime(&mime) {
        return serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"));
    }
    if is_xml_mime(&mime) {
        return Ok(atom::parse(&text));
    }
    if mime.is_empty() {
        let t = text.trim_start();
        if t.starts_with('{') || t.starts_with('[') {
            if let Ok(v) = serde_json::from_slice(bytes) {
                return Ok(v);
            }
        }
    }
    Ok(Value::String(text.into_owned()))
}

/// The vendor's own error message in an error answer, else a short excerpt of the body
/// (`secrets` masked before it is cut).
pub fn error_message(
    body: &Value,
    text: &str,
    content_type: Option<&str>,
    secrets: &Secrets,
) -> String {
    if let Some(m) = json_error_message(body, secrets) {
        return m;
    }
    // JSON sent with another content type.
    if body.is_string() && text.trim_start().starts_with('{') {
        if let Some(m) = serde_json::from_str::<Value>(text.trim())
            .ok()
            .as_ref()
            .and_then(|v| json_error_message(v, secrets))
        {
            return m;
        }
    }
    let mime = mime_of(content_type);
    let t = text.trim_start();
    if is_xml_mime(&mime) || mime == "text/html" || t.starts_with('<') {
        if let Some(m) = xml_error_message(text, secrets) {
            return m;
        }
    }
    let ex = excerpt(text, secrets);
    if ex.is_empty() {
        "(empty body)".to_string()
    } else {
        ex
    }
}

/// Mimecast `fail[].errors[]`, MailStore `error.message`, OAuth `error_description`, or a
/// plain `message`/`error` string.
pub fn json_error_message(body: &Value, secrets: &Secrets) -> Option<String> {
    let obj = body.as_object()?;
    if let Some((codes, message, _)) = mimecast_fail(body, secrets) {
        if !codes.is_empty() || !message.is_empty() {
            return Some(message);
        }
    }
    if let Some(err) = obj.get("error") {
        if let Some(m) = err.get("message").and_then(Value::as_str) {
            return Some(m.to_string());
        }
        if let Some(d) = obj.get("error_description").and_then(Value::as_str) {
            return Some(match err.as_str() {
                Some(e) => format!("{e}: {d}"),
                None => d.to_string(),
            });
        }
        if let Some(e) = err.as_str() {
            return Some(e.to_string());
        }
    }
    for key in ["message", "error_description", "detail", "title"] {
        if let Some(m) = obj.get(key).and_then(Value::as_str) {
            return Some(m.to_string());
        }
    }
    None
}

/// Reads a Mimecast `fail` array: (codes, joined message, any retryable). None when `fail`
/// is absent or empty. An entry without errors is quoted as an excerpt, `secrets` masked.
pub fn mimecast_fail(body: &Value, secrets: &Secrets) -> Option<(Vec<String>, String, bool)> {
    let fails = body.get("fail")?.as_array()?;
    if fails.is_empty() {
        return None;
    }
    let mut codes = Vec::new();
    let mut parts = Vec::new();
    let mut retryable = false;
    for f in fails {
        let errors = f.get("errors").and_then(Value::as_array);
        match errors {
            Some(errors) if !errors.is_empty() => {
                for e in errors {
                    let code = e.get("code").and_then(Value::as_str).unwrap_or("");
                    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                    if e.get("retryable").and_then(Value::as_bool) == Some(true) {
                        retryable = true;
                    }
                    if !code.is_empty() {
                        codes.push(code.to_string());
                    }
                    parts.push(match (code.is_empty(), message.is_empty()) {
                        (false, false) => format!("{code}: {message}"),
                        (false, true) => code.to_string(),
                        (true, false) => message.to_string(),
                        (true, true) => "unspecified error".to_string(),
                    });
                }
            }
            _ => parts.push(format!("failed: {}", excerpt(&f.to_string(), secrets))),
        }
    }
    Some((codes, parts.join("; "), retryable))
}

/// Google-style XML errors: a `reason` attribute or element, `internalReason`, else the text.
pub fn xml_error_message(text: &str, secrets: &Secrets) -> Option<String> {
    for attr in ["reason=\"", "reason='"] {
        if let Some(i) = text.find(attr) {
            let rest = &text[i + attr.len()..];
            let quote = attr.as_bytes()[attr.len() - 1] as char;
            if let Some(end) = rest.find(quote) {
                let v = atom::unescape(&rest[..end], &mut Vec::new());
                if !v.trim().is_empty() {
                    return Some(v.trim().to_string());
                }
            }
        }
    }
    for el in ["internalReason", "reason", "message"] {
        if let Some(v) = element_text(text, el) {
            return Some(v);
        }
    }
    let stripped = strip_tags(text);
    let ex = excerpt(&stripped, secrets);
    (!ex.is_empty()).then_some(ex)
}

fn element_text(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&close)? + start;
    let v = atom::unescape(&text[start..end], &mut Vec::new());
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// The first characters of a text, whitespace collapsed: `secrets` are masked first (a secret
/// crossing the cut or holding runs of blanks is never shown in part), then the text is
/// collapsed and cut.
pub fn excerpt(text: &str, secrets: &Secrets) -> String {
    let masked = secrets.mask_window(text, EXCERPT_SCAN_BYTES);
    let collapsed = masked.split_whitespace().collect::<Vec<_>>().join(" ");
    cut_chars(&collapsed, EXCERPT_CHARS)
}

/// How much of a text an excerpt or first line looks at: twenty times the excerpt, enough
/// for any readable message, and a bound on the work of masking (every registered secret is
/// looked for in it) an error body that may be 64 MiB.
const EXCERPT_SCAN_BYTES: usize = 4 << 10;

/// `text` cut to `max` characters, `…` marking a cut.
fn cut_chars(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        let mut s: String = text.chars().take(max).collect();
        s.push('…');
        s
    } else {
        text.to_string()
    }
}

/// The first non-blank line of a text, trimmed and shortened ("" for an empty body);
/// `secrets` are masked before the line is taken and cut.
pub fn first_line(text: &str, secrets: &Secrets) -> String {
    let masked = secrets.mask_window(text, EXCERPT_SCAN_BYTES);
    let line = masked
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    const MAX: usize = 120;
    cut_chars(line, MAX)
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

/// The `rel="next"` target of a `Link` header (RFC 8288), resolved against `base`.
pub fn link_next(link: &str, base: &Url) -> Option<Url> {
    for part in split_links(link) {
        let part = part.trim();
        let Some(rest) = part.strip_prefix('<') else {
            continue;
        };
        let Some(end) = rest.find('>') else {
            continue;
        };
        let target = &rest[..end];
        let params = &rest[end + 1..];
        let is_next = params.split(';').any(|p| {
            let mut kv = p.splitn(2, '=');
            let k = kv.next().unwrap_or("").trim();
            let v = kv.next().unwrap_or("").trim().trim_matches('"');
            k.eq_ignore_ascii_case("rel")
                && v.split_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return base.join(target.trim()).ok();
        }
    }
    None
}

/// Splits a `Link` header on the commas between link values (not inside `<...>` or quotes).
fn split_links(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_angle = false;
    let mut in_quote = false;
    for (i, c) in s.char_indices() {
        match c {
            '<' if !in_quote => in_angle = true,
            '>' if !in_quote => in_angle = false,
            '"' if !in_angle => in_quote = !in_quote,
            ',' if !in_angle && !in_quote => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
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
