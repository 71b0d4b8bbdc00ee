//! Google's JSON APIs behind a `google` connection: Vault (`/v1/matters...`) and the Cloud
//! Storage JSON API (`/storage/v1/...`), which answer JSON, page with `nextPageToken` and
//! report errors as `{"error": {"code", "message", "status"}}`, unlike the Atom feeds of the
//! Email Audit API.
use serde_json::Value;

use crate::vendors::http::RawResponse;
use crate::vendors::{Request, Response, VendorError, VendorKind};

const VENDOR: VendorKind = VendorKind::Google;

/// What a 2xx answer of a JSON API must be.
const JSON_EXPECTED: &str = "a Google JSON object (JSON content type)";

/// List fields of the Vault list calls this adapter pages through.
const LIST_FIELDS: [&str; 3] = ["exports", "matters", "items"];

/// Whether `url` is on Vault (`.../v1/matters...`) or the Cloud Storage JSON API
/// (`.../storage/v1/...`) rather than the Email Audit API.
pub fn is_json_api(url: &url::Url) -> bool {
    let segments: Vec<&str> = url
        .path_segments()
        .map(Iterator::collect)
        .unwrap_or_default();
    segments
        .windows(2)
        .any(|w| matches!(w, ["v1", "matters"] | ["storage", "v1"]))
}

/// `v` without the object members that rendered to an empty string (at any depth): Google's
/// JSON APIs take an absent field as unset, while `""` for a timestamp such as Vault's
/// `startTime` is an error, so optional inputs left empty are left out (as for Atom).
pub fn prune_empty(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, x)| !matches!(x, Value::String(s) if s.is_empty()))
                .map(|(k, x)| (k.clone(), prune_empty(x)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(prune_empty).collect()),
        other => other.clone(),
    }
}

/// A JSON API answer as a [`Response`]; a non-2xx carries the vendor's `error.status` and
/// `error.message`, and a 2xx must be a JSON object (an empty body only for `DELETE` or 204).
pub fn finish(raw: RawResponse, method: &::http::Method) -> Result<Response, VendorError> {
    if !raw.is_success() {
        return Err(with_status(raw.http_error(VENDOR)));
    }
    let body = raw.parse_declared(VENDOR)?;
    let ok = if body.is_null() {
        *method == ::http::Method::DELETE || raw.status == 204
    } else {
        crate::vendors::body::is_json_mime(&raw.mime()) && body.is_object()
    };
    if !ok {
        return Err(raw.unexpected(VENDOR, JSON_EXPECTED));
    }
    let request_id = ["id", "matterId"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str))
        .map(str::to_string);
    Ok(Response {
        status: raw.status,
        headers: raw.headers,
        body,
        request_id,
    })
}

/// Puts Google's canonical status (`RESOURCE_EXHAUSTED`, `NOT_FOUND`...) before the message.
fn with_status(err: VendorError) -> VendorError {
    match err {
        VendorError::Http {
            vendor,
            status,
            message,
            retry_after,
            body,
        } => {
            let code = body
                .as_ref()
                .and_then(|b| b.pointer("/error/status"))
                .and_then(Value::as_str)
                .filter(|s| !message.starts_with(*s));
            VendorError::Http {
                vendor,
                status,
                message: match code {
                    Some(c) => format!("{c}: {message}"),
                    None => message,
                },
                retry_after,
                body,
            }
        }
        other => other,
    }
}

/// The next page after `resp`: the same request with `pageToken` set to its `nextPageToken`.
pub fn next_page(req: &Request, resp: &Response) -> Option<Request> {
    let token = resp
        .body
        .get("nextPageToken")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())?;
    let mut next = req.clone();
    let kept: Vec<(String, String)> = req
        .url
        .query_pairs()
        .filter(|(k, _)| k != "pageToken")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    next.url
        .query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("pageToken", token);
    // A token that repeats the current page's is a next page all the same: the paging loop
    // check refuses it rather than taking the page for the last.
    Some(next)
}

/// The list field of a page (`exports`, `matters`, `items`), when it has one.
fn list_field(body: &Value) -> Option<&'static str> {
    LIST_FIELDS
        .into_iter()
        .find(|f| body.get(*f).is_some_and(Value::is_array))
}

/// Concatenates the list field of all pages; the rest is the last page's.
pub fn aggregate(pages: Vec<Response>) -> Response {
    let field = pages.iter().find_map(|p| list_field(&p.body));
    let mut items = Vec::new();
    let mut last = None;
    for p in pages {
        if let Some(a) = field.and_then(|f| p.body.get(f)).and_then(Value::as_array) {
            items.extend(a.iter().cloned());
        }
        last = Some(p);
    }
    let mut last = last.unwrap_or_else(|| Response::empty(200));
    if let (Some(f), Some(o)) = (field, last.body.as_object_mut()) {
        o.insert(f.to_string(), Value::Array(items));
        o.remove("nextPageToken");
    }
    last
}

/// Items of a list answer, the resource itself for a single one, none for no body.
pub fn records(resp: &Response) -> Vec<&Value> {
    match list_field(&resp.body) {
        Some(f) => resp.body[f]
            .as_array()
            .map_or_else(Vec::new, |a| a.iter().collect()),
        None if resp.body.is_null() => Vec::new(),
        None => vec![&resp.body],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(status: u16, content_type: &str, body: &str) -> RawResponse {
        RawResponse {
            status,
            headers: [("content-type".to_string(), content_type.to_string())]
                .into_iter()
                .collect(),
            bytes: body.as_bytes().to_vec(),
            secrets: Default::default(),
        }
    }

    #[test]
    fn paths_of_vault_and_storage_are_json() {
        for (u, json) in [
            ("https://vault.googleapis.com/v1/matters/m/exports", true),
            ("https://vault.googleapis.com/v1/matters", true),
            ("https://storage.googleapis.com/storage/v1/b/b/o/x", true),
            (
                "https://apps.example/a/feeds/compliance/audit/mail/export/d",
                false,
            ),
        ] {
            assert_eq!(is_json_api(&url::Url::parse(u).unwrap()), json, "{u}");
        }
    }

    #[test]
    fn json_answers_and_google_errors() {
        let get = ::http::Method::GET;
        let r = finish(
            raw(
                200,
                "application/json; charset=UTF-8",
                r#"{"id":"e1","status":"IN_PROGRESS"}"#,
            ),
            &get,
        )
        .unwrap();
        assert_eq!(r.request_id.as_deref(), Some("e1"));
        for (ct, body) in [
            ("text/html", "<html>sign in</html>"),
            ("application/json", "[1]"),
        ] {
            let e = finish(raw(200, ct, body), &get).unwrap_err();
            assert!(matches!(e, VendorError::Unexpected { .. }), "{body}: {e}");
        }
        let e = finish(
            raw(429, "application/json", r#"{"error":{"code":429,"message":"Quota exceeded for exports","status":"RESOURCE_EXHAUSTED"}}"#),
            &get,
        )
        .unwrap_err();
        assert_eq!(e.status(), Some(429));
        assert!(
            e.to_string()
                .contains("RESOURCE_EXHAUSTED: Quota exceeded for exports"),
            "{e}"
        );
    }

    #[test]
    fn pages_follow_next_page_token() {
        let req = Request {
            method: ::http::Method::GET,
            url: url::Url::parse("https://v.example/v1/matters/m/exports?pageSize=2").unwrap(),
            headers: vec![],
            body: crate::vendors::Body::Empty,
        };
        let page = |items: Value, next: Option<&str>| Response {
            status: 200,
            headers: Default::default(),
            body: serde_json::json!({"exports": items, "nextPageToken": next}),
            request_id: None,
        };
        let first = page(serde_json::json!([{"id": "a"}, {"id": "b"}]), Some("t2"));
        let next = next_page(&req, &first).unwrap();
        assert_eq!(
            next.url.as_str(),
            "https://v.example/v1/matters/m/exports?pageSize=2&pageToken=t2"
        );
        let last = page(serde_json::json!([{"id": "c"}]), None);
        assert!(next_page(&next, &last).is_none());
        let all = aggregate(vec![first, last]);
        assert_eq!(records(&all).len(), 3);
        assert!(all.body.get("nextPageToken").is_none());
    }

    #[test]
    fn empty_optional_fields_are_left_out() {
        let v = serde_json::json!({"name": "x", "query": {"startTime": "", "terms": "a",
            "accountInfo": {"emails": ["a@x"]}}});
        assert_eq!(
            prune_empty(&v),
            serde_json::json!({"name": "x", "query": {"terms": "a", "accountInfo": {"emails": ["a@x"]}}})
        );
    }
}
