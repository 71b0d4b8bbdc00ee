//! Which Google calls must not be repeated, and how to find one whose answer was lost.
//!
//! Creating a mailbox export costs one of the domain's 100 daily requests and starts days of
//! work, so it is never sent twice for one step: when a crash, a timeout or a 5xx hides
//! whether it arrived, the export list (`GET .../mail/export/DOMAIN?fromDate=...`) is read
//! and the request is recognised by its user and the properties that were sent.
//! Uploading the public key replaces the key with itself when repeated: it is resent.
//! Vault's `matters.exports.create` and `matters.create` are looked up the same way: the
//! matter's export list (`GET /v1/matters/{matterId}/exports`) by export name, query and
//! creation time, and the open matters (`GET /v1/matters?state=OPEN`) by name.
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use crate::vendors::{Body, Lookup, Recovery, Request, Response};

/// How long Google keeps an Email Audit export's files (then the request is `EXPIRED`): no
/// older request can be adopted.
const RETENTION_DAYS: i64 = 21;
const EXPORT: [&str; 5] = ["compliance", "audit", "mail", "export", ""];
const DATE_FMT: &str = "%Y-%m-%d %H:%M";
/// Properties of a create request that identify it in the list.
const IDENTIFYING: [&str; 5] = [
    "beginDate",
    "endDate",
    "searchQuery",
    "includeDeleted",
    "packageContent",
];
/// Look this far before the intent for the request (clock skew between us and Google).
const SKEW_MINUTES: i64 = 10;

fn segments(req: &Request) -> Vec<String> {
    req.url
        .path_segments()
        .map(|s| {
            s.map(|x| {
                percent_encoding::percent_decode_str(x)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect()
        })
        .unwrap_or_default()
}

/// `(index of "export", domain, user)` when `req` is `POST .../compliance/audit/mail/export/D/U`.
fn export_create(req: &Request) -> Option<(usize, String, String)> {
    if req.method != ::http::Method::POST {
        return None;
    }
    let s = segments(req);
    let at = s.windows(4).position(|w| {
        w[0] == EXPORT[0] && w[1] == EXPORT[1] && w[2] == EXPORT[2] && w[3] == EXPORT[3]
    })?;
    match &s[at + 4..] {
        [domain, user] if !domain.is_empty() && !user.is_empty() => {
            Some((at + 3, domain.clone(), user.clone()))
        }
        _ => None,
    }
}

fn key_upload(req: &Request) -> bool {
    if req.method != ::http::Method::POST {
        return false;
    }
    let s = segments(req);
    s.windows(3)
        .any(|w| w[0] == "compliance" && w[1] == "audit" && w[2] == "publickey")
}

/// What a Vault create call creates.
enum VaultCreate {
    /// `POST .../v1/matters/{matterId}/exports`.
    Export,
    /// `POST .../v1/matters`.
    Matter,
}

fn vault_create(req: &Request) -> Option<VaultCreate> {
    if req.method != ::http::Method::POST {
        return None;
    }
    let s = segments(req);
    match s.as_slice() {
        [.., v, m, id, e] if v == "v1" && m == "matters" && !id.is_empty() && e == "exports" => {
            Some(VaultCreate::Export)
        }
        [.., v, m] if v == "v1" && m == "matters" => Some(VaultCreate::Matter),
        _ => None,
    }
}

/// False for the calls that change something at Google when repeated.
pub fn idempotent(req: &Request) -> bool {
    export_create(req).is_none() && !key_upload(req) && vault_create(req).is_none()
}

/// The Vault listing that shows whether `req` (a create) was carried out.
fn vault_lookup(req: &Request, what: &VaultCreate, since: DateTime<Utc>) -> Recovery {
    let mut url = req.url.clone();
    url.set_query(None);
    if matches!(what, VaultCreate::Matter) {
        url.query_pairs_mut().append_pair("state", "OPEN");
    }
    lookup_at(req, url, since)
}

/// A GET of `url` with `req`'s headers, to find whether `req` (sent at `since`) was carried out.
fn lookup_at(req: &Request, url: url::Url, since: DateTime<Utc>) -> Recovery {
    Recovery::Lookup(Box::new(Lookup {
        request: Request {
            method: ::http::Method::GET,
            url,
            headers: req.headers.clone(),
            body: Body::Empty,
        },
        original: req.clone(),
        since,
    }))
}

/// How to tell whether `req`, possibly sent at `since`, was carried out.
pub fn recovery(req: &Request, since: DateTime<Utc>) -> Recovery {
    if key_upload(req) {
        return Recovery::Resend;
    }
    if let Some(what) = vault_create(req) {
        return vault_lookup(req, &what, since);
    }
    let Some((export_at, domain, _)) = export_create(req) else {
        return Recovery::Unknown;
    };
    let mut url = req.url.clone();
    let s = segments(req);
    let mut path: Vec<String> = s[..=export_at].to_vec();
    path.push(domain);
    let encoded: Vec<String> = path
        .iter()
        .map(|p| percent_encoding::utf8_percent_encode(p, SEGMENT).to_string())
        .collect();
    url.set_path(&format!("/{}", encoded.join("/")));
    let from = (since - TimeDelta::minutes(SKEW_MINUTES))
        .format(DATE_FMT)
        .to_string();
    url.query_pairs_mut().clear().append_pair("fromDate", &from);
    lookup_at(req, url, since)
}

/// Where to look for a request like `req` (a create that must not be repeated) made by an
/// earlier run whose state was lost, before sending it: the domain's Email Audit requests of
/// the last three weeks (the files' retention), the matter's Vault exports, the open matters.
/// None for requests that are harmless to repeat (the key upload) or not creates.
pub fn adoption(req: &Request, now: DateTime<Utc>) -> Option<Lookup> {
    let since = if vault_create(req).is_some() {
        DateTime::<Utc>::UNIX_EPOCH
    } else {
        now - TimeDelta::days(RETENTION_DAYS) + TimeDelta::minutes(SKEW_MINUTES)
    };
    match recovery(req, since) {
        Recovery::Lookup(l) => Some(*l),
        Recovery::Resend | Recovery::Unknown => None,
    }
}

/// Whether a listed entry that matches `original` can still be continued: an Email Audit
/// request `PENDING` or `COMPLETED` (not `ERROR`, `EXPIRED`, `MARKED_DELETE`, `DELETED`), a
/// Vault export `IN_PROGRESS` or `COMPLETED` (not `FAILED`), an open matter with the same
/// description.
pub fn usable(original: &Request, entry: &Value) -> bool {
    let status = |p: &str| entry.pointer(p).and_then(Value::as_str).map(norm);
    match vault_create(original) {
        Some(VaultCreate::Export) => matches!(
            status("/status").as_deref(),
            Some("in_progress" | "completed")
        ),
        // An open matter of the same name could be another case's: its description (which
        // the shipped workflow writes, naming the export) must be the one sent too.
        Some(VaultCreate::Matter) => {
            let sent = sent_json(original)
                .and_then(|v| v.get("description"))
                .and_then(Value::as_str)
                .map(norm);
            let listed = entry.get("description").and_then(Value::as_str).map(norm);
            status("/state").as_deref() == Some("open")
                && (sent.is_none() || sent.as_deref() == Some("") || sent == listed)
        }
        None => matches!(
            status("/properties/status").as_deref(),
            Some("pending" | "completed")
        ),
    }
}

/// What the vendor says of an entry found: its status and creation time.
pub fn describe(entry: &Value) -> String {
    let field = |ps: &[&str]| {
        ps.iter()
            .find_map(|p| entry.pointer(p).and_then(Value::as_str))
            .map(str::to_string)
    };
    let status = field(&["/properties/status", "/status", "/state"]);
    let created = field(&["/properties/requestDate", "/createTime"]);
    match (status, created) {
        (Some(s), Some(c)) => format!("{s}, created {c}"),
        (Some(s), None) => s,
        (None, Some(c)) => format!("created {c}"),
        (None, None) => "listed".into(),
    }
}

const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

fn norm(v: &str) -> String {
    v.trim().to_ascii_lowercase()
}

/// The entries of one list page that are the export (or matter) `original` asked for;
/// a Vault export must also have been created after `since` (less the clock skew).
pub fn matches(original: &Request, page: &Response, since: DateTime<Utc>) -> Vec<Value> {
    if let Some(what) = vault_create(original) {
        return vault_matches(original, &what, page, since);
    }
    let Some((_, domain, user)) = export_create(original) else {
        return vec![];
    };
    let want_user = norm(&user);
    let want_full = if want_user.contains('@') {
        want_user.clone()
    } else {
        format!("{want_user}@{}", norm(&domain))
    };
    let sent: Vec<(String, String)> = match &original.body {
        Body::Atom(props) => props
            .iter()
            .filter(|(k, _)| IDENTIFYING.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), norm(v)))
            .collect(),
        _ => vec![],
    };
    let Some(entries) = page.body.get("entries").and_then(Value::as_array) else {
        return vec![];
    };
    entries
        .iter()
        .filter(|e| {
            let props = &e["properties"];
            let email = props
                .get("userEmailAddress")
                .and_then(Value::as_str)
                .map(norm)
                .unwrap_or_default();
            if email != want_full && email.split('@').next() != Some(want_user.as_str()) {
                return false;
            }
            sent.iter()
                .all(|(k, v)| match props.get(k).and_then(Value::as_str) {
                    Some(have) => norm(have) == *v,
                    None => true,
                })
        })
        .cloned()
        .collect()
}

/// The name and (for an export) the mail query a Vault create request sent.
fn sent_json(original: &Request) -> Option<&Value> {
    match &original.body {
        Body::Json(v) => Some(v),
        _ => None,
    }
}

/// The sorted, lower-cased accounts of a Vault query.
fn accounts(query: &Value) -> Vec<String> {
    let mut a: Vec<String> = query
        .pointer("/accountInfo/emails")
        .and_then(Value::as_array)
        .map(|e| e.iter().filter_map(Value::as_str).map(norm).collect())
        .unwrap_or_default();
    a.sort();
    a
}

/// Whether the listed export's query is the one sent: corpus, accounts, and every other
/// scalar field that was sent and is listed (`dataScope`, `startTime`, `terms`...).
fn same_query(sent: &Value, listed: &Value) -> bool {
    if accounts(sent) != accounts(listed) {
        return false;
    }
    let Some(fields) = sent.as_object() else {
        return true;
    };
    fields.iter().all(|(k, v)| match (v, listed.get(k)) {
        (Value::String(a), Some(Value::String(b))) => norm(a) == norm(b),
        _ => true,
    })
}

fn vault_matches(
    original: &Request,
    what: &VaultCreate,
    page: &Response,
    since: DateTime<Utc>,
) -> Vec<Value> {
    let Some(sent) = sent_json(original) else {
        return vec![];
    };
    let name = sent.get("name").and_then(Value::as_str).unwrap_or_default();
    let field = match what {
        VaultCreate::Export => "exports",
        VaultCreate::Matter => "matters",
    };
    let not_before = since - TimeDelta::minutes(SKEW_MINUTES);
    let Some(items) = page.body.get(field).and_then(Value::as_array) else {
        return vec![];
    };
    items
        .iter()
        .filter(|e| e.get("name").and_then(Value::as_str) == Some(name))
        .filter(|e| match what {
            VaultCreate::Matter => true,
            VaultCreate::Export => {
                let recent = e
                    .get("createTime")
                    .and_then(Value::as_str)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .is_none_or(|t| t >= not_before);
                recent && same_query(&sent["query"], &e["query"])
            }
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(user: &str) -> Request {
        Request {
            method: ::http::Method::POST,
            url: url::Url::parse(&format!(
                "https://g.example/a/feeds/compliance/audit/mail/export/example.com/{user}"
            ))
            .unwrap(),
            headers: vec![],
            body: Body::Atom(vec![
                ("beginDate".into(), "2024-01-01 00:00".into()),
                ("packageContent".into(), "FULL_MESSAGE".into()),
            ]),
        }
    }

    #[test]
    fn classifies_creates_and_key_uploads() {
        assert!(!idempotent(&create("alice")));
        let mut key = create("x");
        key.url =
            url::Url::parse("https://g.example/a/feeds/compliance/audit/publickey/example.com")
                .unwrap();
        assert!(!idempotent(&key));
        assert!(matches!(recovery(&key, Utc::now()), Recovery::Resend));
        let mut status = create("alice");
        status.method = ::http::Method::GET;
        assert!(idempotent(&status));
        let mut one = create("alice");
        one.url = url::Url::parse(
            "https://g.example/a/feeds/compliance/audit/mail/export/example.com/alice/123",
        )
        .unwrap();
        assert!(idempotent(&one));
    }

    #[test]
    fn lookup_lists_the_domain_since_before_the_intent() {
        let since = DateTime::parse_from_rfc3339("2026-11-23T10:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let Recovery::Lookup(l) = recovery(&create("alice"), since) else {
            panic!("a create is looked up")
        };
        assert_eq!(l.request.method, ::http::Method::GET);
        assert_eq!(
            l.request.url.as_str(),
            "https://g.example/a/feeds/compliance/audit/mail/export/example.com?fromDate=2026-11-23+10%3A20"
        );
    }

    #[test]
    fn matches_by_user_and_sent_properties() {
        let page = Response {
            status: 200,
            headers: Default::default(),
            body: json!({"kind": "feed", "entries": [
                {"properties": {"userEmailAddress": "alice@example.com", "requestId": "1",
                    "beginDate": "2024-01-01 00:00", "packageContent": "FULL_MESSAGE"}},
                {"properties": {"userEmailAddress": "alice@example.com", "requestId": "2",
                    "beginDate": "2023-01-01 00:00", "packageContent": "FULL_MESSAGE"}},
                {"properties": {"userEmailAddress": "bob@example.com", "requestId": "3",
                    "beginDate": "2024-01-01 00:00"}}
            ]}),
            request_id: None,
        };
        let m = matches(&create("alice"), &page, Utc::now());
        assert_eq!(m.len(), 1);
        assert_eq!(m[0]["properties"]["requestId"], "1");
        assert!(matches(&create("carol"), &page, Utc::now()).is_empty());
    }

    fn vault_export(name: &str, emails: &[&str]) -> Request {
        Request {
            method: ::http::Method::POST,
            url: url::Url::parse("https://vault.example/v1/matters/m1/exports").unwrap(),
            headers: vec![],
            body: Body::Json(json!({"name": name, "query": {"corpus": "MAIL",
                "dataScope": "ALL_DATA", "searchMethod": "ACCOUNT",
                "accountInfo": {"emails": emails}}})),
        }
    }

    #[test]
    fn vault_creates_are_looked_up_by_name_query_and_time() {
        let req = vault_export("x", &["b@example.com", "a@example.com"]);
        assert!(!idempotent(&req));
        let since = DateTime::parse_from_rfc3339("2026-11-23T10:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let Recovery::Lookup(l) = recovery(&req, since) else {
            panic!("an export create is looked up")
        };
        assert_eq!(
            l.request.url.as_str(),
            "https://vault.example/v1/matters/m1/exports"
        );
        let q = |emails: Vec<&str>| {
            json!({"corpus": "MAIL", "dataScope": "ALL_DATA",
            "searchMethod": "ACCOUNT", "accountInfo": {"emails": emails}})
        };
        let page = Response {
            status: 200,
            headers: Default::default(),
            body: json!({"exports": [
                {"id": "old", "name": "x", "createTime": "2026-11-01T00:00:00Z",
                 "query": q(vec!["a@example.com", "b@example.com"])},
                {"id": "other", "name": "x", "createTime": "2026-11-23T10:31:00Z",
                 "query": q(vec!["a@example.com"])},
                {"id": "it", "name": "x", "createTime": "2026-11-23T10:31:00Z",
                 "query": q(vec!["A@example.com", "b@example.com"])},
                {"id": "named", "name": "y", "createTime": "2026-11-23T10:31:00Z",
                 "query": q(vec!["a@example.com", "b@example.com"])}
            ]}),
            request_id: None,
        };
        let m = matches(&req, &page, since);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0]["id"], "it");
        let mut matter = req.clone();
        matter.url = url::Url::parse("https://vault.example/v1/matters").unwrap();
        matter.body = Body::Json(json!({"name": "case 7"}));
        assert!(!idempotent(&matter));
        let Recovery::Lookup(l) = recovery(&matter, since) else {
            panic!("a matter create is looked up")
        };
        assert_eq!(
            l.request.url.as_str(),
            "https://vault.example/v1/matters?state=OPEN"
        );
        let mut get = req;
        get.method = ::http::Method::GET;
        assert!(idempotent(&get));
    }

    #[test]
    fn adoption_looks_three_weeks_back_and_takes_only_live_requests() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let l = adoption(&create("alice"), now).expect("a create can be adopted");
        assert_eq!(
            l.request.url.as_str(),
            "https://g.example/a/feeds/compliance/audit/mail/export/example.com?fromDate=2026-11-15+12%3A00"
        );
        let entry = |status: &str| json!({"properties": {"status": status}});
        assert!(usable(&create("alice"), &entry("PENDING")));
        assert!(usable(&create("alice"), &entry("COMPLETED")));
        for dead in ["ERROR", "EXPIRED", "MARKED_DELETE", "DELETED"] {
            assert!(!usable(&create("alice"), &entry(dead)), "{dead}");
        }
        let v = vault_export("x", &["a@example.com"]);
        assert!(adoption(&v, now).is_some());
        assert!(usable(&v, &json!({"status": "IN_PROGRESS"})));
        assert!(!usable(&v, &json!({"status": "FAILED"})));
        let mut matter = v.clone();
        matter.url = url::Url::parse("https://vault.example/v1/matters").unwrap();
        matter.body = Body::Json(json!({"name": "m", "description": "for export x"}));
        assert!(usable(
            &matter,
            &json!({"state": "OPEN", "description": "for export x"})
        ));
        assert!(
            !usable(
                &matter,
                &json!({"state": "OPEN", "description": "another case"})
            ),
            "another case's matter of the same name is not adopted"
        );
        assert!(!usable(
            &matter,
            &json!({"state": "CLOSED", "description": "for export x"})
        ));
        let mut key = create("x");
        key.url =
            url::Url::parse("https://g.example/a/feeds/compliance/audit/publickey/example.com")
                .unwrap();
        assert!(adoption(&key, now).is_none(), "a key upload is resent");
        assert_eq!(
            describe(
                &json!({"properties": {"status": "PENDING", "requestDate": "2026-12-01 10:00"}})
            ),
            "PENDING, created 2026-12-01 10:00"
        );
    }
}
