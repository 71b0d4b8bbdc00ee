//! Cloud Storage JSON API `objects.get`: the object's metadata, or with `alt=media` (and on the
//! `/download/` path Google's clients use) its bytes (one byte range → 206), with the whole
//! object's hashes in `x-goog-hash`; `selfLink` and `mediaLink` name this listener.
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::archive::StoredObject;
use super::errors::{api_error, json_ok, ApiStatus};
use super::{lock, query_params, sweep, Service, VaultSim};
use crate::bump;
use crate::google::files::{parse_range, RangeReq};

/// What `alt` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alt {
    Json,
    Media,
}

/// `GET /storage/v1/b/{bucket}/o/{object}`: metadata unless `alt=media`.
pub(super) async fn get_object(
    State(sim): State<Arc<VaultSim>>,
    Path((bucket, object)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    serve_object(&sim, bucket, object, raw, &headers, Alt::Json).await
}

/// `GET /download/storage/v1/b/{bucket}/o/{object}` (what `mediaLink` names and Google's
/// client libraries download from): the bytes unless `alt=json`.
pub(super) async fn download_object(
    State(sim): State<Arc<VaultSim>>,
    Path((bucket, object)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    serve_object(&sim, bucket, object, raw, &headers, Alt::Media).await
}

async fn serve_object(
    sim: &VaultSim,
    bucket: String,
    object: String,
    raw: Option<String>,
    headers: &HeaderMap,
    default: Alt,
) -> Response {
    if let Some(r) = sim.guard(Service::Storage, headers).await {
        return r;
    }
    let alt = match query_params(raw.as_deref()).get("alt").map(String::as_str) {
        None => default,
        Some("json") => Alt::Json,
        Some("media") => Alt::Media,
        Some(other) => {
            return api_error(
                ApiStatus::InvalidArgument,
                format!("Invalid value for alt: {other}"),
            )
        }
    };
    if bucket != sim.bucket {
        return api_error(ApiStatus::NotFound, "The specified bucket does not exist.");
    }
    let now = sim.now();
    let found = {
        let mut st = lock(&sim.state);
        sweep(&mut st, now, sim.retention());
        st.objects.get(&(bucket.clone(), object.clone())).cloned()
    };
    let Some(o) = found else {
        return api_error(
            ApiStatus::NotFound,
            format!("No such object: {bucket}/{object}"),
        );
    };
    match alt {
        Alt::Json => json_ok(&metadata(&own_origin(headers), &bucket, &object, &o)),
        Alt::Media => media(sim, &object, &o, headers),
    }
}

/// This listener's origin as the client reached it (its `Host`), so `selfLink` and
/// `mediaLink` lead back here and never to the production host.
fn own_origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn metadata(origin: &str, bucket: &str, object: &str, o: &StoredObject) -> serde_json::Value {
    let encoded: String =
        url::form_urlencoded::byte_serialize(object.as_bytes()).collect::<String>();
    let encoded = encoded.replace('+', "%20");
    json!({
        "kind": "storage#object",
        "id": format!("{bucket}/{object}/{}", o.generation),
        "selfLink": format!("{origin}/storage/v1/b/{bucket}/o/{encoded}"),
        "mediaLink": format!(
            "{origin}/download/storage/v1/b/{bucket}/o/{encoded}?generation={}&alt=media",
            o.generation
        ),
        "name": object,
        "bucket": bucket,
        "generation": o.generation.to_string(),
        "metageneration": "1",
        "contentType": content_type(object),
        "storageClass": "STANDARD",
        "size": o.bytes.len().to_string(),
        "md5Hash": o.md5_b64,
        "crc32c": o.crc32c_b64,
        "etag": etag(o),
        "timeCreated": o.created,
        "updated": o.created,
        "timeStorageClassUpdated": o.created,
    })
}

fn etag(o: &StoredObject) -> String {
    format!("C{}EAE=", o.generation)
}

/// The object's content type, by its name (the export's ZIPs, CSVs and XML).
fn content_type(object: &str) -> &'static str {
    let lower = object.to_ascii_lowercase();
    if lower.ends_with(".zip") {
        "application/zip"
    } else if lower.ends_with(".csv") {
        "text/csv"
    } else if lower.ends_with(".xml") {
        "application/xml"
    } else {
        "application/octet-stream"
    }
}

fn header_pairs(object: &str, o: &StoredObject) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    put(
        "x-goog-hash",
        format!("crc32c={},md5={}", o.crc32c_b64, o.md5_b64),
    );
    put("x-goog-generation", o.generation.to_string());
    put("x-goog-metageneration", "1".into());
    put("x-goog-stored-content-length", o.bytes.len().to_string());
    put("x-goog-stored-content-encoding", "identity".into());
    put("x-goog-storage-class", "STANDARD".into());
    put("etag", format!("\"{}\"", etag(o)));
    put("content-type", content_type(object).into());
    put("accept-ranges", "bytes".into());
    h
}

fn media(sim: &VaultSim, object: &str, o: &Arc<StoredObject>, headers: &HeaderMap) -> Response {
    let len = o.bytes.len() as u64;
    let (status, start, count) = match parse_range(headers.get(header::RANGE), len) {
        RangeReq::Full => (StatusCode::OK, 0, len),
        RangeReq::Partial(s, e) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        RangeReq::Unsatisfiable => {
            let mut r = api_error(
                ApiStatus::OutOfRange,
                format!("The requested range cannot be satisfied: the object has {len} bytes."),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let mut h = header_pairs(object, o);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if status == StatusCode::PARTIAL_CONTENT {
        let range = format!("bytes {start}-{}/{len}", start + count - 1);
        if let Ok(v) = HeaderValue::from_str(&range) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    bump(&sim.faults.stats.storage_downloads);
    let slice = bytes::Bytes::copy_from_slice(&o.bytes[start as usize..(start + count) as usize]);
    let body = if sim.faults.take_cut() {
        let head = slice.slice(..slice.len() / 2);
        let first = futures::stream::once(async move { Ok::<_, std::io::Error>(head) });
        // Pause so that hyper flushes the first half before the connection drops.
        let cut = futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "simulated connection cut",
            ))
        });
        Body::from_stream(futures::StreamExt::chain(first, cut))
    } else {
        Body::from(slice)
    };
    (status, h, body).into_response()
}
