//! Plain http adapter and shared behaviour: auth, Link paging, Retry-After, transport errors, cancel.

use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::vendors_common::*;
use auditflow::secrets::Secrets;
use auditflow::vendors::{
    Body, Connection, Credentials, NoObserver, Pagination, Request, VendorError, VendorKind,
};

const TOKEN: &str = "plain-bearer-token-xyz";

async fn items(headers: HeaderMap, Query(q): Query<Vec<(String, String)>>) -> impl IntoResponse {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return (
            StatusCode::UNAUTHORIZED,
            HeaderMap::new(),
            "{\"message\":\"who are you\"}".to_string(),
        )
            .into_response();
    }
    let page: u32 = q
        .iter()
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1);
    let mut h = HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    if page < 3 {
        h.insert(
            "link",
            format!(
                "</items?page=1>; rel=\"first\", </items?page={}>; rel=\"next\"",
                page + 1
            )
            .parse()
            .unwrap(),
        );
    }
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend(serde_json::to_vec(&json!([page * 10, page * 10 + 1])).unwrap());
    (StatusCode::OK, h, body).into_response()
}

async fn start() -> String {
    let app = Router::new()
        .route("/items", get(items))
        .route(
            "/busy",
            get(|| async {
                let when = (chrono::Utc::now() + chrono::Duration::seconds(120))
                    .format("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string();
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", when)],
                    "try later",
                )
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/text",
            get(|| async { ([("content-type", "text/plain")], "plain words") }),
        );
    serve(app).await
}

fn get_req(base: &str, path: &str) -> Request {
    Request {
        method: ::http::Method::GET,
        url: url(base, path),
        headers: vec![("X-Trace".into(), "abc".into())],
        body: Body::Empty,
    }
}

fn bearer(base: &str) -> Connection {
    Connection::new(
        settings(
            VendorKind::Http,
            base,
            Credentials::Bearer {
                token: TOKEN.into(),
            },
        ),
        Secrets::new(),
    )
    .unwrap()
}

#[tokio::test]
async fn link_pages_are_followed_and_arrays_concatenated() {
    let base = start().await;
    let conn = bearer(&base);
    let p = Pagination::default();
    let mut next = Some(conn.first_page(&get_req(&base, "/items"), &p));
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
    assert_eq!(all.body, json!([10, 11, 20, 21, 30, 31]));

    let resp = conn
        .send(
            &get_req(&base, "/text"),
            &NoObserver,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(resp.body, json!("plain words"));
}

#[tokio::test]
async fn statuses_and_retry_after_dates_are_mapped() {
    let base = start().await;
    let conn = bearer(&base);
    let err = conn
        .send(
            &get_req(&base, "/busy"),
            &NoObserver,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(err.retryable());
    let wait = err.retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
    assert_eq!(err.to_string(), "http: HTTP 503: try later");

    let anon = Connection::new(
        settings(VendorKind::Http, &base, Credentials::None),
        Secrets::new(),
    )
    .unwrap();
    let err = anon
        .send(
            &get_req(&base, "/items"),
            &NoObserver,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(!err.retryable());
    assert_eq!(err.to_string(), "http: HTTP 401: who are you");
}

#[tokio::test]
async fn transport_errors_timeouts_and_cancel() {
    let base = start().await;
    // Nothing listens on this port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let conn = bearer(&closed);
    let err = conn
        .send(
            &get_req(&closed, "/items?access_token=query-secret"),
            &NoObserver,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, VendorError::Transport { timeout: false, .. }),
        "{err:?}"
    );
    assert!(err.retryable());
    assert_no_secret(&err.to_string(), &["query-secret", TOKEN]);

    let mut s = settings(
        VendorKind::Http,
        &base,
        Credentials::Bearer {
            token: TOKEN.into(),
        },
    );
    s.request_timeout = Duration::from_millis(300);
    let conn = Connection::new(s, Secrets::new()).unwrap();
    let err = conn
        .send(
            &get_req(&base, "/slow"),
            &NoObserver,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, VendorError::Transport { timeout: true, .. }),
        "{err:?}"
    );
    assert!(err.retryable());

    let conn = bearer(&base);
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c2.cancel();
    });
    let started = std::time::Instant::now();
    let err = conn
        .send(&get_req(&base, "/slow"), &NoObserver, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, VendorError::Cancelled { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!err.retryable());
}

#[tokio::test]
async fn dry_run_and_configuration_errors() {
    let base = "http://127.0.0.1:9";
    let conn = Connection::new(
        settings(
            VendorKind::Http,
            base,
            Credentials::Basic {
                username: "u".into(),
                password: "plain-password-secret".into(),
            },
        ),
        Secrets::new(),
    )
    .unwrap();
    let req = Request {
        method: ::http::Method::POST,
        url: url(base, "/x"),
        headers: vec![("Authorization".into(), "mine".into())],
        body: Body::Form(vec![("a".into(), "1 2".into()), ("b".into(), "&".into())]),
    };
    let p = conn.prepare(&req).unwrap();
    assert_eq!(p.body.as_deref(), Some("a=1+2&b=%26"));
    assert_eq!(
        p.headers,
        vec![
            (
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded".to_string()
            ),
            (
                "Authorization".to_string(),
                "Basic <credentials>".to_string()
            ),
        ]
    );

    let mut s = settings(VendorKind::Http, base, Credentials::None);
    s.ca_file = Some("/nonexistent/ca-secret-dir/ca.pem".into());
    let err = Connection::new(s, Secrets::new()).err().unwrap();
    assert!(matches!(err, VendorError::Config { .. }));
    assert!(err
        .to_string()
        .contains("/nonexistent/ca-secret-dir/ca.pem"));

    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let mut s = settings(VendorKind::Http, base, Credentials::None);
    s.ca_file = Some(not_pem);
    let err = Connection::new(s, Secrets::new()).err().unwrap();
    assert!(matches!(err, VendorError::Config { .. }), "{err:?}");

    let mut s = settings(VendorKind::Http, base, Credentials::None);
    s.insecure_tls = true;
    assert!(Connection::new(s, Secrets::new()).is_ok());

    // Header values from the workflow that cannot be sent: named, not quoted.
    let conn = Connection::new(
        settings(VendorKind::Http, base, Credentials::None),
        Secrets::new(),
    )
    .unwrap();
    let req = Request {
        headers: vec![("X-Key".into(), "bad\nvalue-secret".into())],
        ..req
    };
    let err = conn
        .send(&req, &NoObserver, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, VendorError::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("X-Key"));
    assert_no_secret(&err.to_string(), &["value-secret"]);
}
