//! Which Google calls must not be repeated, and how to find one whose answer was lost.
//!
//! Creating a mailbox export costs one of the domain's 100 daily requests and starts days of
//! work, so it is never sent twice for one step: when a crash, a timeout or a 5xx hides
//! whether it arrived, the export list (`GET .../mail/export/DOMAIN?fromDate=...`) is read
//! and the request is recognised by its user and the properties that were sent.
//! Uploading the public key replaces the key with itself when repeated: it is resent.
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use crate::vendors::{Body, Lookup, Recovery, Request, Response};

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

/// False for the calls that change something at Google when repeated.
pub fn idempotent(req: &Request) -> bool {
    export_create(req).is_none() && !key_upload(req)
}

/// How to tell whether `req`, possibly sent at `since`, was carried out.
pub fn recovery(req: &Request, since: DateTime<Utc>) -> Recovery {
    if key_upload(req) {
        return Recovery::Resend;
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
    Recovery::Lookup(Box::new(Lookup {
        request: Request {
            method: ::http::Method::GET,
            url,
            headers: req.headers.clone(),
            body: Body::Empty,
        },
        original: req.clone(),
    }))
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

/// The entries of one list page that are the export `original` asked for.
pub fn matches(original: &Request, page: &Response) -> Vec<Value> {
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
        let m = matches(&create("alice"), &page);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0]["properties"]["requestId"], "1");
        assert!(matches(&create("carol"), &page).is_empty());
    }
}
