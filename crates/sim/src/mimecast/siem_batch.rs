//! `GET /siem/v1/batch/events/cg` (API 2.0, bearer token): per type and day range, pages of
//! URLs of gzip NDJSON files; and the files themselves, behind presigned-style URLs.
//!
//! Wire shapes as Mimecast's 2.0 collectors consume them (Elastic's `siem_logs` CEL program,
//! Sekoia's connector and its recorded answers): query `type`, `dateRangeStartsAt` /
//! `dateRangeEndsAt` (`YYYY-MM-DD`), `pageSize`, `nextPage`; answer
//! `{"value":[{"url","size","expiry"}],"@nextPage":"…","isCaughtUp":bool}`; each URL a gzip of
//! newline-delimited JSON events, fetched without the bearer token (real URLs are presigned
//! object-store links; this simulator serves them on its own listener under
//! [`FILES_PREFIX`] and, like a presigned link, refuses a request that also carries an
//! `Authorization` header). `@nextPage` is returned on every page, also when caught up, so a
//! caller can keep it and continue later from where it stopped; with no `dateRangeEndsAt` the
//! window stays open and later pages list files that appeared since.
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde_json::{json, Value};

use super::auth::{header_str, strip_scheme};
use super::envelope::rate_limited;
use super::siem_data::{gzip, sha256_hex, BatchFile, PackError, SiemBatchType, SiemFile};
use super::MimecastSim;
use crate::Injected;

/// The Cloud Gateway batch endpoint.
pub(super) const BATCH_CG: &str = "/siem/v1/batch/events/cg";
/// Where the listed files are served (no bearer token).
pub(super) const FILES_PREFIX: &str = "/siem-batch-files/cg/";
/// Largest `pageSize` (and the default): Sekoia's connector bounds its chunk size to 100.
const MAX_PAGE_SIZE: u64 = 100;
/// How long a listed URL works (simulated seconds).
const URL_TTL_SECS: i64 = 3600;

/// What a list request (or its `nextPage` token) covers, and where it continues.
struct Window {
    kind: SiemBatchType,
    start: NaiveDate,
    end: Option<NaiveDate>,
    /// The next slot to list.
    after: u64,
    /// Read from a `nextPage` token (a place the caller reached), not from dates.
    continued: bool,
}

impl Window {
    fn token_text(&self) -> String {
        let end = self.end.map_or_else(|| "*".to_string(), |d| d.to_string());
        format!(
            "batch|{}|{}|{end}|{}",
            self.kind.as_str(),
            self.start,
            self.after
        )
    }

    fn from_token_text(text: &str) -> Option<Self> {
        let mut parts = text.strip_prefix("batch|")?.split('|');
        let kind = SiemBatchType::parse(parts.next()?)?;
        let start = parse_day(parts.next()?)?;
        let end = match parts.next()? {
            "*" => None,
            d => Some(parse_day(d)?),
        };
        let after = parts.next()?.parse().ok()?;
        Some(Window {
            kind,
            start,
            end,
            after,
            continued: true,
        })
    }
}

fn parse_day(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// A rejected list request: HTTP status, code, message.
struct Rejection(StatusCode, &'static str, String);

impl Rejection {
    fn invalid(message: impl Into<String>) -> Self {
        Rejection(
            StatusCode::BAD_REQUEST,
            "err_validation_failed",
            message.into(),
        )
    }

    fn response(self) -> Response {
        v2_error(self.0, self.1, &self.2)
    }
}

/// An API 2.0 error answer: `{"fail":[{"code","message","retryable"}]}`.
fn v2_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "fail": [{ "code": code, "message": message, "retryable": false }] });
    (status, Json(body)).into_response()
}

/// An object-store error answer (XML), as a presigned link gives.
fn store_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message></Error>"
    );
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    resp
}

/// The query parameters, each at most once.
fn query_params(req: &Request) -> Result<Vec<(String, String)>, Rejection> {
    let q = req.uri().query().unwrap_or_default();
    let params: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (i, (k, _)) in params.iter().enumerate() {
        if params[..i].iter().any(|(p, _)| p == k) {
            return Err(Rejection::invalid(format!(
                "Query parameter {k} is given more than once."
            )));
        }
    }
    Ok(params)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

impl MimecastSim {
    /// A `/siem/...` call within the quota: faults, bearer authentication, the list.
    pub(super) async fn siem_batch_call(&self, req: Request, path: &str) -> Response {
        match self.faults.draw("mimecast").await {
            Injected::TooManyRequests => return rate_limited(true),
            Injected::ServerError(status) => return crate::server_error(status),
            Injected::None => {}
        }
        if let Err(failure) = self.bearer_only(&req) {
            failure.count(&self.faults.stats);
            let (code, message) = failure.code_and_message();
            return v2_error(StatusCode::UNAUTHORIZED, code, message);
        }
        if path != BATCH_CG {
            return v2_error(
                StatusCode::NOT_FOUND,
                "err_not_found",
                &format!("No such endpoint: {path}"),
            );
        }
        if req.method() != Method::GET {
            return v2_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "err_method_not_allowed",
                "This endpoint accepts GET only.",
            );
        }
        let origin = header_str(req.headers(), header::HOST.as_str())
            .map_or_else(|| "http://127.0.0.1".to_string(), |h| format!("http://{h}"));
        match query_params(&req).and_then(|p| self.batch_window(&p).map(|w| (p, w))) {
            Ok((params, window)) => self.batch_page(&params, window, &origin),
            Err(r) => r.response(),
        }
    }

    /// API 2.0 endpoints take a bearer token only (an `MC` signature is API 1.0).
    fn bearer_only(&self, req: &Request) -> Result<(), super::auth::AuthFailure> {
        use super::auth::AuthFailure;
        let auth = header_str(req.headers(), header::AUTHORIZATION.as_str())
            .ok_or(AuthFailure::MissingAuthorization)?;
        let token = strip_scheme(auth, "Bearer").ok_or(AuthFailure::MalformedAuthorization)?;
        self.check_bearer(token.trim())
    }

    /// The window a list request asks for: from its `nextPage`, else from its dates.
    fn batch_window(&self, params: &[(String, String)]) -> Result<Window, Rejection> {
        let kind = match param(params, "type") {
            None => return Err(Rejection::invalid("Query parameter type is required.")),
            Some(t) => SiemBatchType::parse(t).ok_or_else(|| {
                let all: Vec<&str> = SiemBatchType::ALL.iter().map(|t| t.as_str()).collect();
                Rejection::invalid(format!("Unknown type {t:?}; one of: {}.", all.join(", ")))
            })?,
        };
        if let Some(token) = param(params, "nextPage") {
            let w = self
                .siem_key
                .open(token)
                .and_then(|t| Window::from_token_text(&t))
                .ok_or_else(|| {
                    Rejection::invalid("nextPage is not a token this service issued.")
                })?;
            if w.kind != kind {
                return Err(Rejection::invalid(format!(
                    "nextPage belongs to type {:?}, not {:?}.",
                    w.kind.as_str(),
                    kind.as_str()
                )));
            }
            return Ok(w);
        }
        self.dated_window(kind, params)
    }

    fn dated_window(
        &self,
        kind: SiemBatchType,
        params: &[(String, String)],
    ) -> Result<Window, Rejection> {
        let now = self.clock.now();
        let day = |name: &str| -> Result<Option<NaiveDate>, Rejection> {
            param(params, name)
                .map(|s| {
                    parse_day(s).ok_or_else(|| {
                        Rejection::invalid(format!("{name} must be a date such as 2026-12-01."))
                    })
                })
                .transpose()
        };
        let start = day("dateRangeStartsAt")?.unwrap_or_else(|| now.date_naive());
        let end = day("dateRangeEndsAt")?;
        let oldest = self.batch_schedule.oldest_day(now);
        if start < oldest {
            return Err(Rejection::invalid(format!(
                "dateRangeStartsAt must not be before {oldest}: logs are kept 7 days."
            )));
        }
        if end.is_some_and(|e| e < start) {
            return Err(Rejection::invalid(
                "dateRangeEndsAt must not be before dateRangeStartsAt.",
            ));
        }
        Ok(Window {
            kind,
            start,
            end,
            after: 0,
            continued: false,
        })
    }

    /// One page of the window, with the token that continues after it.
    fn batch_page(&self, params: &[(String, String)], w: Window, origin: &str) -> Response {
        let size = match param(params, "pageSize").map(str::parse::<u64>) {
            None => MAX_PAGE_SIZE,
            Some(Ok(n)) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            Some(_) => {
                return Rejection::invalid(format!(
                    "pageSize must be an integer from 1 to {MAX_PAGE_SIZE}."
                ))
                .response()
            }
        };
        let now = self.clock.now();
        let s = &self.batch_schedule;
        let kept = s.first_kept(now);
        let lo = w.after.max(s.first_on(w.start));
        if lo < kept && w.continued {
            return Rejection::invalid(
                "nextPage points at logs older than the 7-day retention; start a new list \
                 with dateRangeStartsAt.",
            )
            .response();
        }
        let lo = lo.max(kept);
        let hi = s
            .available(now)
            .min(w.end.map_or(u64::MAX, |e| s.through(e)));
        let page_end = lo.saturating_add(size).min(hi).max(lo);
        let mut value = Vec::new();
        for slot in lo..page_end {
            match self.batch_entry(BatchFile::new(s, w.kind, slot), origin, now) {
                Ok(v) => value.push(v),
                Err(e) => {
                    tracing::error!("sim mimecast: {e}");
                    return crate::server_error(500);
                }
            }
        }
        let next = Window {
            after: page_end,
            ..w
        };
        Json(json!({
            "value": value,
            "@nextPage": self.siem_key.seal(&next.token_text()),
            "isCaughtUp": page_end >= hi,
        }))
        .into_response()
    }

    /// `{"url","size","expiry"}` of one file.
    fn batch_entry(
        &self,
        f: BatchFile,
        origin: &str,
        now: DateTime<Utc>,
    ) -> Result<Value, PackError> {
        let bytes = gzip(&f.ndjson())?;
        let object = f.object_name();
        let date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let sig = self
            .siem_key
            .tag(&file_sig_text(&object, &date, URL_TTL_SECS));
        let expiry = now + TimeDelta::seconds(URL_TTL_SECS);
        Ok(json!({
            "url": format!(
                "{origin}{FILES_PREFIX}{object}?X-Amz-Date={date}&X-Amz-Expires={URL_TTL_SECS}&X-Amz-Signature={sig}"
            ),
            "size": bytes.len(),
            "expiry": expiry.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        }))
    }

    /// `GET {FILES_PREFIX}{object}?X-Amz-…`: one listed file.
    pub(super) fn siem_batch_file(&self, req: Request) -> Response {
        if req.method() != Method::GET {
            return store_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
            );
        }
        if req.headers().contains_key(header::AUTHORIZATION) {
            return store_error(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
                 Signature query string parameter or the Authorization header should be specified",
            );
        }
        let object = req
            .uri()
            .path()
            .strip_prefix(FILES_PREFIX)
            .unwrap_or_default()
            .to_string();
        let params = query_params(&req).unwrap_or_default();
        let (Some(date), Some(ttl), Some(sig)) = (
            param(&params, "X-Amz-Date"),
            param(&params, "X-Amz-Expires").and_then(|t| t.parse::<i64>().ok()),
            param(&params, "X-Amz-Signature"),
        ) else {
            return store_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Query-string authentication requires X-Amz-Date, X-Amz-Expires and \
                 X-Amz-Signature",
            );
        };
        if self.siem_key.tag(&file_sig_text(&object, date, ttl)) != sig {
            return store_error(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            );
        }
        let now = self.clock.now();
        let signed = chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
            .map(|d| d.and_utc())
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        if signed + TimeDelta::seconds(ttl) < now {
            return store_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired");
        }
        self.batch_object(&object, now)
    }

    fn batch_object(&self, object: &str, now: DateTime<Utc>) -> Response {
        let s = &self.batch_schedule;
        let file = parse_object(object).map(|(kind, slot)| BatchFile::new(s, kind, slot));
        let Some(file) = file.filter(|f| {
            f.object_name() == object && f.slot < s.available(now) && f.slot >= s.first_kept(now)
        }) else {
            return store_error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            );
        };
        match gzip(&file.ndjson()) {
            Ok(bytes) => {
                crate::bump(&self.faults.stats.siem_batch_downloads);
                let mut resp = bytes.into_response();
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/gzip"),
                );
                resp
            }
            Err(e) => {
                tracing::error!("sim mimecast: {e}");
                crate::server_error(500)
            }
        }
    }

    /// Every API 2.0 batch file of `kind` produced so far (simulated clock), oldest first,
    /// including files past retention (`kept: false`).
    pub fn siem_batch_files(&self, kind: SiemBatchType) -> Vec<SiemFile> {
        let now = self.clock.now();
        let s = &self.batch_schedule;
        let kept = s.first_kept(now);
        (0..s.available(now))
            .map(|slot| {
                let f = BatchFile::new(s, kind, slot);
                SiemFile {
                    seq: slot,
                    name: f.object_name(),
                    content_sha256: sha256_hex(&f.ndjson()),
                    events: f.event_count(),
                    available_at: s.available_at(slot),
                    kept: slot >= kept,
                }
            })
            .collect()
    }
}

fn file_sig_text(object: &str, date: &str, ttl: i64) -> String {
    format!("file|{object}|{date}|{ttl}")
}

/// `url-protect/2026-12-01/000012.json.gz` → (type, slot).
fn parse_object(object: &str) -> Option<(SiemBatchType, u64)> {
    let mut parts = object.split('/');
    let slug = parts.next()?;
    let _day = parts.next()?;
    let slot = parts.next()?.strip_suffix(".json.gz")?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    let kind = SiemBatchType::ALL.into_iter().find(|t| t.slug() == slug)?;
    Some((kind, slot))
}
