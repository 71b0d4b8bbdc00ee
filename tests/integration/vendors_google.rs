//! Google Email Audit adapter: Atom build/parse (vendor samples), feed paging, bearer and
//! service-account auth against in-process servers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as AxResponse};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::vendors_common::*;
use auditflow::secrets::Secrets;
use auditflow::vendors::{
    atom, Body, Connection, Credentials, NoObserver, Pagination, Request, VendorError, VendorKind,
};

const STATIC_TOKEN: &str = "ya29.static-test-token";
const SUBJECT: &str = "admin@example.com";
const CLIENT_EMAIL: &str = "auditflow@test-project.iam.gserviceaccount.com";
const SCOPE: &str = "https://apps-apis.google.com/a/feeds/compliance/audit/";

// ---- samples copied from google-email-audit-mailbox-export.he.txt (the vendor page) ----

const PUBLICKEY_RESPONSE: &str = r#"<entry xmlns:atom='http://www.w3.org/2005/Atom' xmlns:apps='http://schemas.google.com/apps/2006'>
<id>https://apps-apis.google.com/a/feeds/compliance/audit/publickey/DOMAIN_NAME/id>/id>
<updated>2009-04-17T15:02:45.646Z</updated>
<link rel='self' type='application/atom+xml' href='https://apps-apis.google.com/a/feeds/compliance/audit/publickey/DOMAIN_NAME/id'/>
<link rel='edit' type='application/atom+xml' href='https://apps-apis.google.com/a/feeds/compliance/audit/publickey/DOMAIN_NAME/id'/>
<apps:property name='publicKey' value='ENCODED_KEY'/>
</entry>"#;

const CREATE_RESPONSE: &str = r#"<entry xmlns:atom='http://www.w3.org/2005/Atom' xmlns:apps='http://schemas.google.com/apps/2006'>
    <id>https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/example.com/quinn/53156>/id>
    <updated>2022-10-17T15:02:45.646Z</updated>
    <link rel='self' type='application/atom+xml' href='https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/example.com/quinn/53156'/>
    <link rel='edit' type='application/atom+xml' href='https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/example.com/quinn/53156'/>
    <apps:property name='status' value='PENDING'/>
    <apps:property name='packageContent' value='FULL_MESSAGE'/>
    <apps:property name='includeDeleted' value='false'/>
    <apps:property name='searchQuery' value='in:chat'/>
    <apps:property name='completedDate' value='2022-09-18 10:13'/>
    <apps:property name='adminEmailAddress' value='admin1@example.com'/>
    <apps:property name='requestId' value='53156'/>
    <apps:property name='userEmailAddress' value='quinn@example.com'/>
    <apps:property name='endDate' value='2022-08-30 20:00'/>
    <apps:property name='requestDate' value='2022-09-17 12:51'/>
    <apps:property name='beginDate' value='2022-07-01 04:30'/>
</entry>"#;

const ERROR_STATUS: &str = r#"<entry xmlns:atom='http://www.w3.org/2005/Atom' xmlns:apps='http://schemas.google.com/apps/2006'>
    <id>https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/example.com/quinn/53156</id>
    <updated>2022-10-17T15:02:45.646Z</updated>
    <link rel='self' type='application/atom+xml' href='https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/example.com/quinn/53156'/>
    <link rel='edit' type='application/atom+xml' href='https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/example.com/quinn/53156'/>
    <apps:property name='status' value='ERROR'/>
    <apps:property name='packageContent' value='FULL_MESSAGE'/>
    <apps:property name='includeDeleted' value='false'/>
    <apps:property name='searchQuery' value='in:chat'/>
    <apps:property name='completedDate' value='2022-09-18 10:13'/>
    <apps:property name='adminEmailAddress' value='admin1@example.com'/>
    <apps:property name='numberOfFiles' value='0'/>
    <apps:property name='requestId' value='53156'/>
    <apps:property name='userEmailAddress' value='quinn@example.com'/>
    <apps:property name='endDate' value='2022-08-30 20:00'/>
    <apps:property name='requestDate' value='2022-09-17 12:51'/>
    <apps:property name='beginDate' value='2022-07-01 04:30'/>
</entry>"#;

const COMPLETED_STATUS: &str = r#"<entry>...
    ...
    <apps:property name='status' value='COMPLETED'/>
    <apps:property name='packageContent' value='FULL_MESSAGE'/>
    <apps:property name='completedDate' value='2022-09-18 10:13'/>
    <apps:property name='adminEmailAddress' value='admin2@example.com'/>
    <apps:property name='numberOfFiles' value='2'/>
    <apps:property name='requestId' value='34201'/>
    <apps:property name='userEmailAddress' value='namrata@example.com'/>
    <apps:property name='requestDate' value='2022-09-17 12:51'/>
    <apps:property name='fileUrl0'  value='https://apps-apis.google.com/a/data/compliance/audit/OQAAABW3Z2OlwkDFR0H5n_6lnYAzv-pWlkAlbTyAzvJEV0MC4c7lBDW' />
    <apps:property name='fileUrl1'  value='https://apps-apis.google.com/a/data/compliance/audit/OQAAABW3Z2OlwkD55nLv-pWlkAlbTyAzvJEVPnVYW45C4cC34gtyVCC' />
</entry>"#;

const FEED: &str = r#"<feed xmlns:atom='http://www.w3.org/2005/Atom'
xmlns:openSearch='http://a9.com/-/spec/opensearchrss/1.0/'
xmlns:apps='http://schemas.google.com/apps/2006'>
    <id>https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/domain</id>
    <updated>2010-03-17T15:29:21.064Z</updated>
    <link rel='next' type='application/atom+xml' href='https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/tapoloka.com?fromDate=2022-08-30%2021:00'/>
    <link rel='http://schemas.google.com/g/2005#feed' type='application/atom+xml' href='https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/tapoloka.com'/>
    <link rel='http://schemas.google.com/g/2005#post' type='application/atom+xml' href='https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/tapoloka.com'/>
    <link rel='self' type='application/atom+xml' href='https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/tapoloka.com?fromDate=2022-08-30%2021:00'/>
    <openSearch:startIndex>1</openSearch:startIndex>
    <entry>
        <atom:id>https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/domain/request ID</atom:id>
        <atom:updated>2022-04-17T15:29:21.064Z</atom:updated>
        <atom:link rel='self' type='application/atom+xml' href='https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/domain/request ID'/>
        <atom:link rel='edit' type='application/atom+xml' href='https://apps-apis.google.com/feeds/compliance/audit/mail/export/domain/request ID'/>
        <apps:property name='status' value='ERROR'/>
        <apps:property name='packageContent' value='FULL_MESSAGE'/>
        <apps:property name='includeDeleted' value='false'/>
        <apps:property name='searchQuery' value='in:chat'/>
        <apps:property name='completedDate' value='2022-09-18 10:13'/>
        <apps:property name='adminEmailAddress' value='admin1@example.com'/>
        <apps:property name='numberOfFiles' value='0'/>
        <apps:property name='requestId' value='the mailbox ID for this request'/>
   </entry>
   <entry>
        <id>>https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/domain/second request ID</id>
        ...
        <apps:property name='status' value='COMPLETED'/>
        <apps:property name='packageContent' value='FULL_MESSAGE'/>
        <apps:property name='includeDeleted' value='false'/>
        <apps:property name='completedDate' value='2022-09-18 10:13'/>
        <apps:property name='adminEmailAddress' value='admin1@example.com'/>
        <apps:property name='numberOfFiles' value='0'/>
        <apps:property name='requestId' value='the mailbox ID for this request'/>
        <apps:property name='userEmailAddress' value='quinn@example.com'/>
        <apps:property name='endDate' value='2022-08-30 20:00'/>
        <apps:property name='requestDate' value='2022-09-17 12:51'/>
        <apps:property name='beginDate' value='2022-07-01 04:30'/>
   </entry>
</feed>"#;

fn warnings(v: &Value) -> Vec<String> {
    v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn vendor_samples_parse_tolerantly() {
    let v = atom::parse(PUBLICKEY_RESPONSE);
    assert_eq!(v["kind"], "entry");
    assert_eq!(
        v["id"],
        "https://apps-apis.google.com/a/feeds/compliance/audit/publickey/DOMAIN_NAME/id"
    );
    assert_eq!(v["properties"], json!({"publicKey": "ENCODED_KEY"}));
    assert_eq!(v["links"].as_array().unwrap().len(), 2);
    assert_eq!(v["links"][0]["rel"], "self");
    assert!(!warnings(&v).is_empty());

    let v = atom::parse(CREATE_RESPONSE);
    assert_eq!(
        v["id"],
        "https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/example.com/quinn/53156"
    );
    assert_eq!(v["properties"]["status"], "PENDING");
    assert_eq!(v["properties"]["requestId"], "53156");
    assert_eq!(v["properties"].as_object().unwrap().len(), 11);
    assert!(warnings(&v).iter().any(|w| w.contains("id")), "{v}");

    let v = atom::parse(ERROR_STATUS);
    assert_eq!(v["properties"]["status"], "ERROR");
    assert_eq!(v["properties"]["numberOfFiles"], "0");
    assert_eq!(warnings(&v), Vec::<String>::new());

    let v = atom::parse(COMPLETED_STATUS);
    assert_eq!(v["kind"], "entry");
    assert_eq!(v["id"], Value::Null);
    assert_eq!(v["properties"]["status"], "COMPLETED");
    assert_eq!(v["properties"]["numberOfFiles"], "2");
    assert!(v["properties"]["fileUrl1"]
        .as_str()
        .unwrap()
        .ends_with("W45C4cC34gtyVCC"));
    assert!(warnings(&v).iter().any(|w| w.contains("...")), "{v}");

    let v = atom::parse(FEED);
    assert_eq!(v["kind"], "feed");
    assert_eq!(
        v["id"],
        "https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/domain"
    );
    assert_eq!(
        v["next"],
        "https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/tapoloka.com?fromDate=2022-08-30%2021:00"
    );
    assert_eq!(v["links"].as_array().unwrap().len(), 4);
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[0]["id"],
        "https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/domain/request ID"
    );
    assert_eq!(entries[0]["properties"]["status"], "ERROR");
    assert_eq!(entries[0]["links"].as_array().unwrap().len(), 2);
    assert_eq!(
        entries[1]["id"],
        "https://apps-apis.google.com/a/feeds/compliance/audit/mail/export/domain/second request ID"
    );
    assert_eq!(entries[1]["properties"]["status"], "COMPLETED");
    assert_eq!(entries[1]["properties"]["beginDate"], "2022-07-01 04:30");
    let w = warnings(&v);
    assert!(w.iter().any(|w| w.contains("stray '>'")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("...")), "{w:?}");
}

#[test]
fn truncated_and_garbled_samples_never_panic() {
    for sample in [
        PUBLICKEY_RESPONSE,
        CREATE_RESPONSE,
        ERROR_STATUS,
        COMPLETED_STATUS,
        FEED,
    ] {
        for (i, _) in sample.char_indices().step_by(7) {
            let v = atom::parse(&sample[..i]);
            assert!(v["warnings"].is_array());
            let v = atom::parse(&sample[i..]);
            assert!(v["warnings"].is_array());
        }
    }
}

// ---- the test server ----

#[derive(Default)]
struct G {
    base: Mutex<String>,
    public_key: Mutex<Option<rsa::RsaPublicKey>>,
    issued: AtomicU32,
    valid: Mutex<HashSet<String>>,
    jwt_problems: Mutex<Vec<String>>,
    bodies: Mutex<Vec<(String, String)>>,
}

fn bearer_ok(s: &G, headers: &HeaderMap) -> bool {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    token == STATIC_TOKEN || s.valid.lock().unwrap().contains(token)
}

fn atom_response(status: StatusCode, xml: String) -> AxResponse {
    (
        status,
        [("content-type", "application/atom+xml; charset=UTF-8")],
        xml,
    )
        .into_response()
}

fn unauthorized() -> AxResponse {
    (
        StatusCode::UNAUTHORIZED,
        [("content-type", "text/html; charset=UTF-8")],
        "<HTML><HEAD><TITLE>Token invalid</TITLE></HEAD><BODY><H1>Token invalid</H1></BODY></HTML>",
    )
        .into_response()
}

/// Checks the JWT bearer grant the way Google does, with the public key only.
fn check_assertion(s: &G, jwt: &str) -> Result<(), String> {
    use rsa::signature::Verifier;
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err("not three parts".into());
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let sig = b64.decode(parts[2]).map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err("alg".into());
    }
    let key = s.public_key.lock().unwrap().clone().ok_or("no key")?;
    let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key);
    let sig = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).map_err(|e| e.to_string())?;
    verifier
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .map_err(|_| "signature does not verify".to_string())?;
    let aud = format!("{}/token", s.base.lock().unwrap());
    if claims["iss"] != CLIENT_EMAIL
        || claims["sub"] != SUBJECT
        || claims["scope"] != SCOPE
        || claims["aud"] != aud.as_str()
    {
        return Err(format!("claims {claims}"));
    }
    let iat = claims["iat"].as_i64().ok_or("iat")?;
    let exp = claims["exp"].as_i64().ok_or("exp")?;
    if exp - iat != 3600 || (chrono::Utc::now().timestamp() - iat).abs() > 300 {
        return Err("times".into());
    }
    Ok(())
}

async fn token(State(s): State<Arc<G>>, body: Bytes) -> AxResponse {
    let f = form(&body);
    if form_get(&f, "grant_type") != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    if let Err(e) = check_assertion(&s, form_get(&f, "assertion").unwrap_or("")) {
        s.jwt_problems.lock().unwrap().push(e);
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant",
            "error_description": "Invalid JWT Signature."})),
        )
            .into_response();
    }
    let n = s.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let t = format!("ya29.sa-token-{n}");
    s.valid.lock().unwrap().insert(t.clone());
    axum::Json(json!({"access_token": t, "token_type": "Bearer", "expires_in": 3599}))
        .into_response()
}

async fn create_export(State(s): State<Arc<G>>, headers: HeaderMap, body: String) -> AxResponse {
    if !bearer_ok(&s, &headers) {
        return unauthorized();
    }
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    s.bodies.lock().unwrap().push((ct, body));
    atom_response(StatusCode::CREATED, CREATE_RESPONSE.to_string())
}

async fn list_exports(
    State(s): State<Arc<G>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> AxResponse {
    if !bearer_ok(&s, &headers) {
        return unauthorized();
    }
    let page: u32 = q
        .iter()
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1);
    let base = s.base.lock().unwrap().clone();
    let next = match page {
        // relative link on page 1, absolute on page 2, none on page 3
        1 => "<link rel='next' type='application/atom+xml' href='/a/feeds/compliance/audit/mail/export/example.com?fromDate=2022-08-30%2021:00&amp;page=2'/>".to_string(),
        2 => format!("<link rel=\"next\" href=\"{base}/a/feeds/compliance/audit/mail/export/example.com?fromDate=2022-08-30%2021:00&amp;page=3\"/>"),
        _ => String::new(),
    };
    let entries: String = (0..2)
        .map(|i| {
            let id = page * 10 + i;
            format!(
                "<atom:entry><atom:id>{base}/a/feeds/compliance/audit/mail/export/example.com/u/{id}</atom:id>\
                 <apps:property name='requestId' value='{id}'/><apps:property name=\"status\" value=\"PENDING\"/></atom:entry>"
            )
        })
        .collect();
    atom_response(
        StatusCode::OK,
        format!(
            "<?xml version='1.0' encoding='UTF-8'?><feed xmlns='http://www.w3.org/2005/Atom' \
             xmlns:atom='http://www.w3.org/2005/Atom' xmlns:apps='http://schemas.google.com/apps/2006'>\
             <id>{base}/a/feeds/compliance/audit/mail/export/example.com</id>{next}{entries}</feed>"
        ),
    )
}

async fn forbidden() -> AxResponse {
    (
        StatusCode::FORBIDDEN,
        [("content-type", "application/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><AppsForYourDomainErrors><error errorCode=\"1100\" \
         invalidInput=\"\" reason=\"UserDeletedRecently\" /></AppsForYourDomainErrors>",
    )
        .into_response()
}

async fn start() -> (Arc<G>, String) {
    let s = Arc::new(G::default());
    let app = Router::new()
        .route("/token", post(token))
        .route(
            "/a/feeds/compliance/audit/mail/export/example.com/quinn",
            post(create_export),
        )
        .route(
            "/a/feeds/compliance/audit/mail/export/example.com",
            get(list_exports),
        )
        .route(
            "/a/feeds/compliance/audit/mail/export/example.com/gone",
            post(forbidden),
        )
        .with_state(s.clone());
    let base = serve(app).await;
    *s.base.lock().unwrap() = base.clone();
    (s, base)
}

fn bearer_conn(base: &str) -> Connection {
    Connection::new(
        settings(
            VendorKind::Google,
            base,
            Credentials::Bearer {
                token: STATIC_TOKEN.into(),
            },
        ),
        Secrets::new(),
    )
    .unwrap()
}

fn export_props() -> Vec<(String, String)> {
    vec![
        ("beginDate".into(), "2022-07-01 04:30".into()),
        ("endDate".into(), "2022-08-30 20:00".into()),
        ("includeDeleted".into(), "false".into()),
        ("searchQuery".into(), "from:\"Tom & Jerry\" <x> 'y'".into()),
        ("packageContent".into(), "FULL_MESSAGE".into()),
    ]
}

fn create_req(base: &str) -> Request {
    Request {
        method: ::http::Method::POST,
        url: url(
            base,
            "/a/feeds/compliance/audit/mail/export/example.com/quinn",
        ),
        headers: vec![],
        body: Body::Atom(export_props()),
    }
}

#[tokio::test]
async fn an_export_is_created_with_an_escaped_atom_entry() {
    let (s, base) = start().await;
    let conn = bearer_conn(&base);
    let resp = conn
        .send(&create_req(&base), &NoObserver, &CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status, 201);
    assert_eq!(resp.request_id.as_deref(), Some("53156"));
    assert_eq!(resp.body["kind"], "entry");
    assert_eq!(resp.body["properties"]["status"], "PENDING");
    let bodies = s.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0].0, "application/atom+xml");
    assert_eq!(
        bodies[0].1,
        "<atom:entry xmlns:atom='http://www.w3.org/2005/Atom' xmlns:apps='http://schemas.google.com/apps/2006'>\
         <apps:property name=\"beginDate\" value=\"2022-07-01 04:30\"/>\
         <apps:property name=\"endDate\" value=\"2022-08-30 20:00\"/>\
         <apps:property name=\"includeDeleted\" value=\"false\"/>\
         <apps:property name=\"searchQuery\" value=\"from:&quot;Tom &amp; Jerry&quot; &lt;x&gt; &apos;y&apos;\"/>\
         <apps:property name=\"packageContent\" value=\"FULL_MESSAGE\"/></atom:entry>"
    );
    // Dry run shows the same body and a placeholder.
    let p = conn.prepare(&create_req(&base)).unwrap();
    assert_eq!(p.body.as_deref(), Some(bodies[0].1.as_str()));
    assert!(p
        .headers
        .contains(&("Authorization".to_string(), "Bearer <token>".to_string())));
    assert!(p.headers.contains(&(
        "Content-Type".to_string(),
        "application/atom+xml".to_string()
    )));
    // Download headers carry the token.
    let h = conn
        .download_headers(&url(&base, "/a/data/f"))
        .await
        .unwrap();
    assert_eq!(
        h.get("authorization").unwrap().to_str().unwrap(),
        format!("Bearer {STATIC_TOKEN}")
    );
}

#[tokio::test]
async fn feed_pages_are_followed_through_next_links_and_aggregated() {
    let (_s, base) = start().await;
    let conn = bearer_conn(&base);
    let req = Request {
        method: ::http::Method::GET,
        url: url(
            &base,
            "/a/feeds/compliance/audit/mail/export/example.com?fromDate=2022-08-30%2021:00",
        ),
        headers: vec![],
        body: Body::Empty,
    };
    let p = Pagination::default();
    let mut next = Some(conn.first_page(&req, &p));
    let mut pages = Vec::new();
    while let Some(r) = next {
        let resp = conn
            .send(&r, &NoObserver, &CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        next = conn.next_page(&r, &resp, &p);
        pages.push(resp);
        assert!(pages.len() <= 5);
    }
    assert_eq!(pages.len(), 3);
    let all = conn.aggregate(pages);
    assert_eq!(all.body["kind"], "feed");
    assert_eq!(all.body["next"], Value::Null);
    let ids: Vec<&str> = all.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["properties"]["requestId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["10", "11", "20", "21", "30", "31"]);
}

#[tokio::test]
async fn google_xml_errors_give_the_reason() {
    let (_s, base) = start().await;
    let conn = bearer_conn(&base);
    let req = Request {
        url: url(
            &base,
            "/a/feeds/compliance/audit/mail/export/example.com/gone",
        ),
        ..create_req(&base)
    };
    let err = conn
        .send(&req, &NoObserver, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(!err.retryable());
    assert_eq!(err.to_string(), "google: HTTP 403: UserDeletedRecently");
    // A wrong static token: 401, no refresh possible, the token is not in the message.
    let conn = Connection::new(
        settings(
            VendorKind::Google,
            &base,
            Credentials::Bearer {
                token: "ya29.wrong-static-token".into(),
            },
        ),
        Secrets::new(),
    )
    .unwrap();
    let err = conn
        .send(&create_req(&base), &NoObserver, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(
        err.to_string(),
        "google: HTTP 401: Token invalid Token invalid"
    );
    assert_no_secret(&format!("{err} {err:?}"), &["ya29.wrong-static-token"]);
}

fn write_key_file(
    dir: &std::path::Path,
    token_uri: &str,
) -> (std::path::PathBuf, rsa::RsaPublicKey, String) {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let path = dir.join("sa-key.json");
    let file = json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "1234567890",
        "token_uri": token_uri,
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
    (path, rsa::RsaPublicKey::from(&key), pem)
}

#[tokio::test]
async fn service_account_jwt_is_verified_token_cached_and_refreshed_after_401() {
    let (s, base) = start().await;
    let dir = tempfile::tempdir().unwrap();
    // The key file's token_uri is used (no override).
    let (path, public, pem) = write_key_file(dir.path(), &format!("{base}/token"));
    *s.public_key.lock().unwrap() = Some(public);
    let secrets = Secrets::new();
    let conn = Connection::new(
        settings(
            VendorKind::Google,
            &base,
            Credentials::GoogleServiceAccount {
                key_file: path.clone(),
                subject: SUBJECT.into(),
                scopes: vec![SCOPE.into()],
                token_url: None,
            },
        ),
        secrets.clone(),
    )
    .unwrap();
    let rec = Recorder::default();
    for _ in 0..3 {
        let resp = conn
            .send(&create_req(&base), &rec, &CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status, 201);
    }
    assert_eq!(*s.jwt_problems.lock().unwrap(), Vec::<String>::new());
    assert_eq!(s.issued.load(Ordering::SeqCst), 1);
    assert_eq!(secrets.mask("Bearer ya29.sa-token-1"), "***");
    // The server drops the token: one 401, one refresh, success.
    s.valid.lock().unwrap().clear();
    conn.send(&create_req(&base), &rec, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(s.issued.load(Ordering::SeqCst), 2);
    let h = conn
        .download_headers(&url(&base, "/a/data/f"))
        .await
        .unwrap();
    assert_eq!(
        h.get("authorization").unwrap().to_str().unwrap(),
        "Bearer ya29.sa-token-2"
    );
    assert_eq!(s.issued.load(Ordering::SeqCst), 2);
    assert_no_secret(&rec.lines().join("\n"), &["ya29.sa-token", pem.as_str()]);

    // A token_url override wins over the key file; a failing grant is an Auth error that
    // names the key file and shows nothing of the key.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (path2, _wrong_public, pem2) = write_key_file(&other, "http://127.0.0.1:1/never-used");
    let conn = Connection::new(
        settings(
            VendorKind::Google,
            &base,
            Credentials::GoogleServiceAccount {
                key_file: path2.clone(),
                subject: SUBJECT.into(),
                scopes: vec![SCOPE.into()],
                token_url: Some(format!("{base}/token")),
            },
        ),
        Secrets::new(),
    )
    .unwrap();
    let err = conn
        .send(&create_req(&base), &NoObserver, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VendorError::Auth {
                status: Some(400),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.retryable());
    let text = err.to_string();
    assert!(text.contains(&path2.display().to_string()), "{text}");
    assert!(text.contains("Invalid JWT Signature."), "{text}");
    let pem_body: String = pem2.lines().nth(1).unwrap().to_string();
    assert_no_secret(&format!("{text} {err:?}"), &[pem_body.as_str()]);
    assert_eq!(
        *s.jwt_problems.lock().unwrap(),
        vec!["signature does not verify".to_string()]
    );
}

#[tokio::test]
async fn bad_key_files_are_config_errors_naming_the_file_only() {
    let (_s, base) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad-key.json");
    std::fs::write(
        &bad,
        json!({"type": "service_account", "client_email": CLIENT_EMAIL,
            "private_key": "-----BEGIN PRIVATE KEY-----\nTOTALLYSECRETJUNK\n-----END PRIVATE KEY-----\n",
            "token_uri": format!("{base}/token")})
        .to_string(),
    )
    .unwrap();
    let missing = dir.path().join("missing.json");
    let not_json = dir.path().join("not-json.json");
    std::fs::write(&not_json, "TOTALLYSECRETJUNK").unwrap();
    for path in [bad, missing, not_json] {
        let conn = Connection::new(
            settings(
                VendorKind::Google,
                &base,
                Credentials::GoogleServiceAccount {
                    key_file: path.clone(),
                    subject: SUBJECT.into(),
                    scopes: vec![],
                    token_url: None,
                },
            ),
            Secrets::new(),
        )
        .unwrap();
        let err = conn
            .send(&create_req(&base), &NoObserver, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, VendorError::Config { .. }), "{err:?}");
        assert!(!err.retryable());
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert_no_secret(&format!("{text} {err:?}"), &["TOTALLYSECRETJUNK"]);
    }
}
