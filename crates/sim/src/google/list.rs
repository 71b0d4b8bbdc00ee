//! `GET .../mail/export/{domain}`: the paged Atom feed of a domain's export requests.
use std::sync::Arc;

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, Utc};

use super::answers::{atom_response, bad_request};
use super::atom::{self, EntryView, FeedView};
use super::export::{expire, remove_files};
use super::{lock, retention, rfc3339_millis, GoogleSim, DATE_FMT, EXPORT_PATH};

/// `start` tokens of the list: opaque, carry the last request id of the previous page.
pub(super) fn encode_start(after: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("after:{after}"))
}

pub(super) fn decode_start(token: &str) -> Option<u64> {
    let raw = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    text.strip_prefix("after:")?.parse().ok()
}

pub(super) fn encode_date(d: NaiveDateTime) -> String {
    d.format(DATE_FMT).to_string().replace(' ', "%20")
}

/// The list's page: its entries, the 1-based index of its first, and the last request id
/// when more follow.
struct ListPage {
    entries: Vec<EntryView>,
    start_index: usize,
    more_after: Option<u64>,
}

/// `GET .../mail/export/{domain}?fromDate=&start=`: a page of the domain's export requests
/// made since `fromDate` (3 weeks back by default), after the `start` token's.
pub(super) async fn list_exports(
    State(sim): State<Arc<GoogleSim>>,
    UrlPath(domain): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    crate::bump(&sim.stats().google_list_requests);
    let domain = match sim.admit_domain(&headers, &domain).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let now = sim.now();
    let (from, after) = match list_query(query.as_deref().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return bad_request(e.to_string()),
    };
    // Without fromDate: the last 3 weeks (minute precision, like the parameter).
    let from = from.unwrap_or_else(|| {
        let d = (now - retention()).naive_utc();
        NaiveDateTime::parse_from_str(&d.format(DATE_FMT).to_string(), DATE_FMT).unwrap_or(d)
    });
    let base = sim.base();
    let feed_href = format!("{base}{EXPORT_PATH}/{domain}");
    let from_q = encode_date(from);
    let mut self_href = format!("{feed_href}?fromDate={from_q}");
    if let Some(a) = after {
        self_href.push_str(&format!("&start={}", encode_start(a)));
    }
    let page = list_page(&sim, &base, &domain, (from, after), now);
    let next_href = page
        .more_after
        .map(|last| format!("{feed_href}?fromDate={from_q}&start={}", encode_start(last)));
    let feed = FeedView {
        id: feed_href.clone(),
        updated: rfc3339_millis(now),
        self_href,
        feed_href,
        next_href,
        start_index: page.start_index,
        entries: page.entries,
    };
    atom_response(StatusCode::OK, atom::render_feed(&feed))
}

/// A list query the API refuses (400).
#[derive(Debug, thiserror::Error)]
enum ListQueryError {
    #[error("fromDate '{0}' is not a date of the form YYYY-MM-DD HH:MM (UTC)")]
    FromDate(String),
    #[error("invalid start token '{0}'")]
    Start(String),
}

/// `fromDate` and the `start` token's request id of the list's query.
fn list_query(query: &str) -> Result<(Option<NaiveDateTime>, Option<u64>), ListQueryError> {
    let mut from = None;
    let mut after = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "fromDate" => match NaiveDateTime::parse_from_str(v.trim(), DATE_FMT) {
                Ok(d) => from = Some(d),
                Err(_) => return Err(ListQueryError::FromDate(v.into_owned())),
            },
            "start" => match decode_start(&v) {
                Some(id) => after = Some(id),
                None => return Err(ListQueryError::Start(v.into_owned())),
            },
            _ => {}
        }
    }
    Ok((from, after))
}

/// The page of `domain`'s exports requested since `from`, after request `after`, at `now`
/// (expired ones marked so, and their files removed outside the lock).
fn list_page(
    sim: &GoogleSim,
    base: &str,
    domain: &str,
    (from, after): (NaiveDateTime, Option<u64>),
    now: DateTime<Utc>,
) -> ListPage {
    let page_size = sim.cfg.google_feed_page_size.max(1);
    let mut removed = Vec::new();
    let mut skipped = 0usize;
    let mut entries: Vec<EntryView> = Vec::new();
    let mut last_id = None;
    let mut more = false;
    {
        let mut st = lock(&sim.state);
        for e in st.exports.values_mut() {
            if e.domain != domain || e.requested.naive_utc() < from {
                continue;
            }
            if after.is_some_and(|a| e.id <= a) {
                skipped += 1;
                continue;
            }
            if entries.len() == page_size {
                more = true;
                break;
            }
            removed.extend(expire(e, now, sim.cleanup_after()));
            entries.push(sim.entry_view(base, e));
            last_id = Some(e.id);
        }
    }
    remove_files(removed);
    ListPage {
        entries,
        start_index: skipped + 1,
        more_after: last_id.filter(|_| more),
    }
}
