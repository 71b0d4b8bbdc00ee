//! `GET /a/data/compliance/audit/{file}`: the encrypted export files, with byte ranges.
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::bump;

use super::answers::{google_error, not_found, not_found_response};
use super::export::{expire, remove_files, Phase};
use super::{lock, GoogleSim};

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeReq {
    Full,
    Partial(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range as RFC 9110 reads it; what we do not serve (other units, several ranges,
/// invalid syntax) is ignored and the whole file is sent.
pub(crate) fn parse_range(value: Option<&HeaderValue>, len: u64) -> RangeReq {
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

/// RFC 9110 section 13.1.5: a Range is honoured only when `If-Range` is absent or names the
/// current entity tag (strong comparison). A date never matches (no `Last-Modified` is sent),
/// nor does a weak tag; then the whole file is answered with 200.
fn if_range_holds(if_range: Option<&HeaderValue>, etag: &str) -> bool {
    match if_range {
        None => true,
        Some(v) => v.to_str().is_ok_and(|v| v.trim() == etag),
    }
}

/// `GET` or `HEAD` of one export file: the export must still be held (completed or marked
/// for deletion), then the file is answered whole or by range, with the injected faults.
pub(super) async fn download(
    State(sim): State<Arc<GoogleSim>>,
    UrlPath(file): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = sim.guard(&headers).await {
        return r;
    }
    let (path, name) = match held_file(&sim, &file) {
        Ok(found) => found,
        Err(answer) => return *answer,
    };
    let (mut f, len) = match open_file(&path).await {
        Ok(opened) => opened,
        Err(answer) => return answer,
    };
    let etag = format!("\"{name}-{len}\"");
    let (status, start, count) = match requested_bytes(&headers, len, &etag) {
        Ok(bytes) => bytes,
        Err(answer) => return *answer,
    };
    if start > 0 && f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return crate::server_error(500);
    }
    let hdrs = file_headers(status, &etag, start, count, len);
    if method == Method::HEAD {
        return (status, hdrs, Body::empty()).into_response();
    }
    bump(&sim.stats().google_downloads);
    (status, hdrs, file_body(&sim, f, count)).into_response()
}

/// The path and entity name (`{export id}-{n}`) of export file `file`, or the answer when its
/// export is gone (expired files are removed here, outside the lock).
/// (The answer is boxed: it is the rare path, and a `Response` is large.)
fn held_file(sim: &GoogleSim, file: &str) -> Result<(std::path::PathBuf, String), Box<Response>> {
    let now = sim.now();
    let (found, removed) = {
        let mut st = lock(&sim.state);
        let Some(&(id, n)) = st.files.get(file) else {
            return Err(Box::new(not_found_response()));
        };
        let Some(e) = st.exports.get_mut(&id) else {
            return Err(Box::new(not_found_response()));
        };
        let removed = expire(e, now, sim.cleanup_after());
        let found = match e.phase {
            Phase::Completed | Phase::MarkedDelete => match e.files.get(n as usize) {
                Some(f) => Ok((f.path.clone(), format!("{id}-{n}"))),
                None => Err(not_found_response()),
            },
            Phase::Expired => Err(google_error(
                StatusCode::GONE,
                "expired",
                "The file of this mailbox export has been deleted after the 3-week retention period",
            )),
            _ => Err(google_error(
                StatusCode::NOT_FOUND,
                "notFound",
                "The file of this mailbox export has been deleted",
            )),
        };
        (found, removed)
    };
    remove_files(removed);
    found.map_err(Box::new)
}

/// The file and its length, or the answer when it cannot be read.
async fn open_file(path: &std::path::Path) -> Result<(tokio::fs::File, u64), Response> {
    let f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found().await),
        Err(e) => {
            tracing::error!("google sim: cannot open {}: {e}", path.display());
            return Err(crate::server_error(500));
        }
    };
    match f.metadata().await {
        Ok(m) => Ok((f, m.len())),
        Err(_) => Err(crate::server_error(500)),
    }
}

/// The status, first byte and byte count the request's `Range` (and `If-Range`) asks for, or
/// the 416 answer.
fn requested_bytes(
    headers: &HeaderMap,
    len: u64,
    etag: &str,
) -> Result<(StatusCode, u64, u64), Box<Response>> {
    let range = if_range_holds(headers.get(header::IF_RANGE), etag)
        .then(|| headers.get(header::RANGE))
        .flatten();
    match parse_range(range, len) {
        RangeReq::Full => Ok((StatusCode::OK, 0, len)),
        RangeReq::Partial(s, e) => Ok((StatusCode::PARTIAL_CONTENT, s, e - s + 1)),
        RangeReq::Unsatisfiable => {
            let mut r = google_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "requestedRangeNotSatisfiable",
                format!("Requested range not satisfiable: the file has {len} bytes"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            Err(Box::new(r))
        }
    }
}

/// The headers of a file answer: type, ranges accepted, length, entity tag, and the range sent
/// when partial.
fn file_headers(status: StatusCode, etag: &str, start: u64, count: u64, len: u64) -> HeaderMap {
    let mut hdrs = HeaderMap::new();
    hdrs.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    hdrs.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    hdrs.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if let Ok(v) = HeaderValue::from_str(etag) {
        hdrs.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
        {
            hdrs.insert(header::CONTENT_RANGE, v);
        }
    }
    hdrs
}

/// `count` bytes of `f` as the answer's body: cut halfway when a cut is due, throttled when a
/// download rate is set.
fn file_body(sim: &GoogleSim, f: tokio::fs::File, count: u64) -> Body {
    if sim.faults.take_cut() {
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
    } else if let Some(rate) = sim.faults.cfg.download_rate.filter(|r| *r > 0) {
        Body::from_stream(throttled(f.take(count), rate))
    } else {
        Body::from_stream(tokio_util::io::ReaderStream::new(f.take(count)))
    }
}

/// `reader` as a stream of at most `rate` bytes per second (chunks of a tenth of a second).
fn throttled(
    reader: impl tokio::io::AsyncRead + Send + 'static,
    rate: u64,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    use futures::StreamExt as _;
    let chunk = usize::try_from((rate / 10).max(1))
        .unwrap_or(usize::MAX)
        .min(1 << 20);
    tokio_util::io::ReaderStream::with_capacity(reader, chunk).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c
    })
}
