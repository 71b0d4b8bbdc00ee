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

pub(super) async fn download(
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
        let removed = expire(e, now, sim.cleanup_after());
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
            return crate::server_error(500);
        }
    };
    let len = match f.metadata().await {
        Ok(m) => m.len(),
        Err(_) => return crate::server_error(500),
    };
    let etag = format!("\"{name}-{len}\"");
    let range = if_range_holds(headers.get(header::IF_RANGE), &etag)
        .then(|| headers.get(header::RANGE))
        .flatten();
    let (status, start, count) = match parse_range(range, len) {
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
        return crate::server_error(500);
    }
    let mut hdrs = HeaderMap::new();
    hdrs.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    hdrs.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    hdrs.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if let Ok(v) = HeaderValue::from_str(&etag) {
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
    } else if let Some(rate) = sim.faults.cfg.download_rate.filter(|r| *r > 0) {
        Body::from_stream(throttled(f.take(count), rate))
    } else {
        Body::from_stream(tokio_util::io::ReaderStream::new(f.take(count)))
    };
    (status, hdrs, body).into_response()
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
