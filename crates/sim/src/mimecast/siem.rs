//! `/api/audit/get-siem-logs` (API 1.0): one MTA log file per request, the token for the next
//! one in the `mc-siem-token` response header.
//!
//! From the get-siem-logs page: the answer is an `application/octet-stream` file whose name is in
//! `Content-Disposition`; "Only one log file is returned per request and Mimecast uses a token
//! based system for you to request the next available log"; data is kept 7 days. Without a
//! token the earliest available file comes back (XSOAR's collector: "If token is not included
//! the earliest available log will be returned by the API"). A caller that has every file gets
//! JSON `{"meta":{"isLastToken":true,"status":200},"data":[],"fail":[]}` (the shape Rapid7's
//! plugin tests record from the live API). Rejections (bad fields, an unknown token, a token past
//! retention) follow this simulator's 1.0 rule: HTTP 200 with the reasons in `fail`.
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::envelope::{fail_answer, ApiRequest, FieldError};
use super::siem_data::{sha256_hex, zip_one, FileFormat, MtaFile, SiemFile, MTA_FILES_PER_SLOT};
use super::MimecastSim;

/// The `data[0]` item of a get-siem-logs request.
struct SiemLogsRequest {
    format: FileFormat,
    compress: bool,
    token: Option<String>,
}

impl SiemLogsRequest {
    fn read(item: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Self {
        match item.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if t.eq_ignore_ascii_case("MTA") => {}
            Some(_) => errors.push(FieldError::new(
                "err_validation_invalid_value",
                Some("type"),
                "type must be MTA (the only log type this endpoint serves).",
            )),
        }
        let format = match item.get("fileFormat") {
            None | Some(Value::Null) => FileFormat::KeyValue,
            Some(Value::String(f)) if f.eq_ignore_ascii_case("json") => FileFormat::Json,
            Some(Value::String(f)) if f.eq_ignore_ascii_case("key_value") => FileFormat::KeyValue,
            Some(_) => {
                errors.push(FieldError::new(
                    "err_validation_invalid_value",
                    Some("fileFormat"),
                    "fileFormat must be key_value or json.",
                ));
                FileFormat::KeyValue
            }
        };
        let compress = match item.get("compress") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                errors.push(FieldError::new(
                    "err_validation_invalid_type",
                    Some("compress"),
                    "compress must be a boolean.",
                ));
                false
            }
        };
        let token = match item.get("token") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) if t.trim().is_empty() => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => {
                errors.push(FieldError::new(
                    "err_validation_invalid_type",
                    Some("token"),
                    "token must be a string.",
                ));
                None
            }
        };
        SiemLogsRequest {
            format,
            compress,
            token,
        }
    }
}

impl MimecastSim {
    /// `/api/audit/get-siem-logs`.
    pub(super) fn siem_logs(&self, req: &ApiRequest) -> Response {
        let key = req.first_item();
        let item = key.as_object().cloned().unwrap_or_default();
        let mut errors = Vec::new();
        let r = SiemLogsRequest::read(&item, &mut errors);
        if !errors.is_empty() {
            return fail_answer(key, errors);
        }
        let now = self.clock.now();
        let first_kept = self.mta_schedule.first_kept(now) * MTA_FILES_PER_SLOT;
        let available = self.mta_schedule.available(now) * MTA_FILES_PER_SLOT;
        let next = match r.token.as_deref().map(|t| self.open_mta_token(t)) {
            None => first_kept,
            Some(Some(last)) => last.saturating_add(1),
            Some(None) => return fail_answer(key, vec![invalid_token()]),
        };
        if next < first_kept {
            return fail_answer(key, vec![expired_token()]);
        }
        if next >= available {
            return caught_up(r.token.as_deref());
        }
        self.serve_mta_file(MtaFile::new(&self.mta_schedule, next), &r)
    }

    fn serve_mta_file(&self, file: MtaFile, r: &SiemLogsRequest) -> Response {
        let name = file.file_name(r.format, r.compress);
        let content = file.content(r.format);
        let body = if r.compress {
            match zip_one(&file.file_name(r.format, false), &content) {
                Ok(z) => z,
                Err(e) => {
                    tracing::error!("sim mimecast: {e}");
                    return crate::server_error(500);
                }
            }
        } else {
            content
        };
        let mut resp = body.into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        if let Ok(v) = HeaderValue::from_str(&self.mta_token(file.seq)) {
            h.insert("mc-siem-token", v);
        }
        resp
    }

    /// The token that asks for the file after `seq`.
    fn mta_token(&self, seq: u64) -> String {
        self.siem_key.seal(&format!("mta|{seq}"))
    }

    /// The file number a token was issued for.
    fn open_mta_token(&self, token: &str) -> Option<u64> {
        let text = self.siem_key.open(token)?;
        text.strip_prefix("mta|")?.parse().ok()
    }

    /// Every API 1.0 MTA log file produced so far (simulated clock), oldest first, including
    /// files past retention (`kept: false`).
    pub fn siem_log_files(&self) -> Vec<SiemFile> {
        let now = self.clock.now();
        let first_kept = self.mta_schedule.first_kept(now) * MTA_FILES_PER_SLOT;
        let available = self.mta_schedule.available(now) * MTA_FILES_PER_SLOT;
        (0..available)
            .map(|seq| {
                let f = MtaFile::new(&self.mta_schedule, seq);
                SiemFile {
                    seq,
                    name: f.file_name(FileFormat::Json, true),
                    content_sha256: sha256_hex(&f.content(FileFormat::Json)),
                    events: f.event_count(),
                    available_at: self.mta_schedule.available_at(seq / MTA_FILES_PER_SLOT),
                    kept: seq >= first_kept,
                }
            })
            .collect()
    }
}

fn invalid_token() -> FieldError {
    FieldError::new(
        "err_siem_token_invalid",
        Some("token"),
        "The token is not one this service issued (use the mc-siem-token header of the last \
         answer, or omit it to start from the earliest log).",
    )
}

fn expired_token() -> FieldError {
    FieldError::new(
        "err_siem_token_expired",
        Some("token"),
        "The log after this token is older than the 7-day retention and was removed; omit the \
         token to start from the earliest log still kept.",
    )
}

/// Every file was handed out: JSON with `isLastToken`, the request's token echoed.
fn caught_up(token: Option<&str>) -> Response {
    let mut resp = Json(json!({
        "meta": { "isLastToken": true, "status": 200 },
        "data": [],
        "fail": [],
    }))
    .into_response();
    if let Some(v) = token.and_then(|t| HeaderValue::from_str(t).ok()) {
        resp.headers_mut().insert("mc-siem-token", v);
    }
    resp
}
