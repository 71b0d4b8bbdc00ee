//! Mimecast request authentication: API 1.0 HMAC signatures (`x-mc-*` headers) and 2.0 bearer tokens.
use std::time::Instant;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use hmac::Mac;

use crate::{bump, Stats};

use super::envelope::error_envelope;
use super::HmacSha1;
use super::{lock, MimecastSim};

impl MimecastSim {
    /// Checks the credentials of an `/api/...` request. On success of an API 1.0 request its
    /// request id is recorded, so that it cannot authenticate a second time.
    pub(super) fn authenticate(&self, headers: &HeaderMap, path: &str) -> Result<(), AuthFailure> {
        let auth = header_str(headers, header::AUTHORIZATION.as_str())
            .ok_or(AuthFailure::MissingAuthorization)?;
        if let Some(token) = strip_scheme(auth, "Bearer") {
            return self.check_bearer(token.trim());
        }
        let creds = auth
            .strip_prefix("MC ")
            .ok_or(AuthFailure::MalformedAuthorization)?;
        let (key, signature) = creds
            .trim()
            .rsplit_once(':')
            .ok_or(AuthFailure::MalformedAuthorization)?;
        let date = header_str(headers, "x-mc-date").ok_or(AuthFailure::MissingDate)?;
        let req_id = header_str(headers, "x-mc-req-id").ok_or(AuthFailure::MissingRequestId)?;
        let app_id = header_str(headers, "x-mc-app-id").ok_or(AuthFailure::MissingAppId)?;
        if key != self.access_key {
            return Err(AuthFailure::UnknownAccessKey);
        }
        if app_id != self.app_id {
            return Err(AuthFailure::WrongAppId);
        }
        let when = parse_mc_date(date).ok_or(AuthFailure::BadDate)?;
        if let Ok(max_skew) = TimeDelta::from_std(self.max_skew) {
            if (Utc::now() - when).abs() > max_skew {
                return Err(AuthFailure::DateOutOfRange);
            }
        }
        let sig = STANDARD
            .decode(signature.trim())
            .map_err(|_| AuthFailure::BadSignature)?;
        let mut mac =
            HmacSha1::new_from_slice(&self.secret_key).map_err(|_| AuthFailure::BadSignature)?;
        mac.update(format!("{date}:{req_id}:{path}:{}", self.app_key).as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| AuthFailure::BadSignature)?;
        if !lock(&self.seen_request_ids).insert(req_id.to_string()) {
            return Err(AuthFailure::ReusedRequestId);
        }
        Ok(())
    }

    pub(super) fn check_bearer(&self, token: &str) -> Result<(), AuthFailure> {
        match lock(&self.tokens).get(token) {
            None => Err(AuthFailure::UnknownToken),
            Some(expiry) if Instant::now() >= *expiry => Err(AuthFailure::ExpiredToken),
            Some(_) => Ok(()),
        }
    }
}

/// Why a request did not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AuthFailure {
    MissingAuthorization,
    MalformedAuthorization,
    MissingDate,
    MissingRequestId,
    MissingAppId,
    UnknownAccessKey,
    WrongAppId,
    BadDate,
    DateOutOfRange,
    BadSignature,
    ReusedRequestId,
    UnknownToken,
    ExpiredToken,
}

impl AuthFailure {
    pub(super) fn code_and_message(self) -> (&'static str, &'static str) {
        use AuthFailure::*;
        match self {
            MissingAuthorization => (
                "err_xdk_missing_authorization",
                "0001 Credentials are missing from the request",
            ),
            MalformedAuthorization => (
                "err_xdk_invalid_authorization",
                "0001 Authorization header must be 'MC accessKey:signature' or 'Bearer token'",
            ),
            MissingDate => ("err_xdk_missing_header", "0006 Missing header: x-mc-date"),
            MissingRequestId => ("err_xdk_missing_header", "0006 Missing header: x-mc-req-id"),
            MissingAppId => ("err_xdk_missing_header", "0006 Missing header: x-mc-app-id"),
            UnknownAccessKey => ("err_xdk_invalid_access_key", "0002 Invalid Access Key"),
            WrongAppId => ("err_xdk_invalid_app_id", "0003 Invalid Application ID"),
            BadDate => (
                "err_xdk_invalid_date",
                "0005 Invalid x-mc-date: expected 'EEE, dd MMM yyyy HH:mm:ss UTC'",
            ),
            DateOutOfRange => (
                "err_xdk_date_out_of_range",
                "0005 x-mc-date is outside the allowed time window",
            ),
            BadSignature => ("err_xdk_invalid_signature", "0004 Invalid Signature"),
            ReusedRequestId => (
                "err_xdk_request_id_reused",
                "0007 x-mc-req-id has already been used",
            ),
            UnknownToken => ("err_xdk_invalid_token", "Access token is invalid"),
            ExpiredToken => ("err_xdk_token_expired", "Access token has expired"),
        }
    }

    pub(super) fn count(self, stats: &Stats) {
        bump(&stats.unauthenticated);
        match self {
            AuthFailure::BadSignature => bump(&stats.bad_signatures),
            AuthFailure::BadDate | AuthFailure::DateOutOfRange | AuthFailure::MissingDate => {
                bump(&stats.bad_dates);
            }
            AuthFailure::ReusedRequestId => bump(&stats.reused_request_ids),
            _ => {}
        }
    }

    pub(super) fn response(self) -> Response {
        let (code, message) = self.code_and_message();
        error_envelope(StatusCode::UNAUTHORIZED, code, message, false)
    }
}

/// `x-mc-date`: `Tue, 24 Nov 2015 12:50:11 UTC` (Mimecast's own C# sample sends `GMT`).
pub(super) fn parse_mc_date(s: &str) -> Option<DateTime<Utc>> {
    let base = s.strip_suffix(" UTC").or_else(|| s.strip_suffix(" GMT"))?;
    NaiveDateTime::parse_from_str(base, "%a, %d %b %Y %H:%M:%S")
        .ok()
        .map(|n| n.and_utc())
}

/// A header as text, when present, valid and not blank.
pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
}

/// `Bearer abc` → `abc` (scheme compared case-insensitively).
pub(super) fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}
