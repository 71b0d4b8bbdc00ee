//! Redirects: reqwest follows same-origin ones by itself; a hop to another origin is made
//! here, carrying only the headers that may cross origins.
use std::time::Duration;

use ::http::Method;
use reqwest::header::HeaderMap;
use url::Url;

use super::http::redact_url;

/// The most redirects one request follows, automatic and [`send_guarded`] hops together.
const MAX_REDIRECTS: usize = 10;

/// reqwest follows a redirect by itself only when it stays on the same origin (every header
/// and a 307/308 body may go along); at an origin change it stops and hands the 3xx back.
pub(super) fn same_origin_redirects() -> reqwest::redirect::Policy {
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
