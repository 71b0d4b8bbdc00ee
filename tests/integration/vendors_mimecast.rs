//! Mimecast adapter against in-process servers: 1.0 signing, envelope errors, 429, paging, 2.0 tokens.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as AxResponse};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::vendors_common::*;
use auditflow::secrets::Secrets;
use auditflow::vendors::{
    Body, Connection, Credentials, NoObserver, Pagination, Request, VendorError, VendorKind,
};

const ACCESS_KEY: &str = "test-access-key-123";
// base64 of "test-mimecast-secret-0123456789"
const SECRET_KEY: &str = "dGVzdC1taW1lY2FzdC1zZWNyZXQtMDEyMzQ1Njc4OQ==";
const APP_ID: &str = "test-app-id";
const APP_KEY: &str = "test-app-key-456";
const CLIENT_ID: &str = "test-client-id";
const CLIENT_SECRET: &str = "test-client-secret-789";

fn v1_credentials() -> Credentials {
    Credentials::Mimecast1 {
        access_key: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
        app_id: APP_ID.into(),
        app_key: APP_KEY.into(),
    }
}

fn post_req(base: &str, path: &str, body: Body) -> Request {
    Request {
        method: ::http::Method::POST,
        url: url(base, path),
        headers: vec![],
        body,
    }
}

#[derive(Default)]
struct V1State {
    seen_ids: Mutex<HashSet<String>>,
    last_id: Mutex<Option<String>>,
    rejected: Mutex<Vec<String>>,
    accepted: AtomicU32,
}

/// Checks a 1.0 request the way the service does, written from the vendor page (not from the
/// adapter): HMAC-SHA1 over `date:reqid:uri:appkey` with the decoded secret key.
fn check_v1(headers: &HeaderMap, uri: &str, state: &V1State) -> Result<(), String> {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or(format!("missing {n}"))
    };
    let auth = h("authorization")?;
    let date = h("x-mc-date")?;
    let req_id = h("x-mc-req-id")?;
    if h("x-mc-app-id")? != APP_ID {
        return Err("bad app id".into());
    }
    if h("content-type")? != "application/json" || h("accept")? != "application/json" {
        return Err("bad content type or accept".into());
    }
    let rest = auth.strip_prefix("MC ").ok_or("not MC")?;
    let (ak, sig) = rest.split_once(':').ok_or("no colon")?;
    if ak != ACCESS_KEY {
        return Err("bad access key".into());
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET_KEY)
        .unwrap();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&key).unwrap();
    mac.update(format!("{date}:{req_id}:{uri}:{APP_KEY}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if sig != expected {
        return Err("bad signature".into());
    }
    let when = chrono::NaiveDateTime::parse_from_str(&date, "%a, %d %b %Y %H:%M:%S UTC")
        .map_err(|e| format!("bad date {date}: {e}"))?
        .and_utc();
    if (chrono::Utc::now() - when).num_seconds().abs() > 15 * 60 {
        return Err("date skew".into());
    }
    uuid::Uuid::parse_str(&req_id).map_err(|_| "req id is not a uuid")?;
    if !state.seen_ids.lock().unwrap().insert(req_id.clone()) {
        return Err("reused request id".into());
    }
    *state.last_id.lock().unwrap() = Some(req_id);
    Ok(())
}

#[tokio::test]
async fn v1_requests_are_signed_with_a_fresh_request_id_each_attempt() {
    let state = Arc::new(V1State::default());
    let app = Router::new()
        .route(
            "/api/gateway/find-processing-messages",
            post(
                |State(s): State<Arc<V1State>>, headers: HeaderMap, body: Bytes| async move {
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    match check_v1(&headers, "/api/gateway/find-processing-messages", &s) {
                        Ok(()) => {
                            s.accepted.fetch_add(1, Ordering::SeqCst);
                            axum::Json(json!({"meta": {"status": 200}, "fail": [],
                            "data": [{"messages": [], "echo": body}]}))
                            .into_response()
                        }
                        Err(e) => {
                            s.rejected.lock().unwrap().push(e.clone());
                            (
                                StatusCode::UNAUTHORIZED,
                                axum::Json(json!({"meta": {"status": 401},
                            "data": [], "fail": [{"errors": [{"code": "err_xdk_client_auth",
                            "message": e, "retryable": false}]}]})),
                            )
                                .into_response()
                        }
                    }
                },
            ),
        )
        .with_state(state.clone());
    let base = serve(app).await;
    let secrets = Secrets::new();
    let conn = Connection::new(
        settings(VendorKind::Mimecast, &base, v1_credentials()),
        secrets.clone(),
    )
    .unwrap();
    let req = post_req(
        &base,
        "/api/gateway/find-processing-messages",
        Body::Json(json!({"data": [{"type": "processing"}]})),
    );
    let cancel = CancellationToken::new();
    for _ in 0..3 {
        let resp = conn
            .clone()
            .send(&req, &NoObserver, &cancel)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.body["data"][0]["echo"]["data"][0]["type"],
            "processing"
        );
        assert_eq!(resp.request_id, *state.last_id.lock().unwrap());
    }
    assert_eq!(*state.rejected.lock().unwrap(), Vec::<String>::new());
    assert_eq!(state.accepted.load(Ordering::SeqCst), 3);
    assert_eq!(state.seen_ids.lock().unwrap().len(), 3);
    // The signature and the header were registered as secrets.
    let masked = secrets.mask(&format!("MC {ACCESS_KEY}:x"));
    assert!(!masked.contains(ACCESS_KEY));

    // An empty body is sent as {"data":[]}.
    let resp = conn
        .send(
            &post_req(&base, "/api/gateway/find-processing-messages", Body::Empty),
            &NoObserver,
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(resp.body["data"][0]["echo"], json!({"data": []}));

    // Dry run: placeholders, no secret.
    let p = conn.prepare(&req).unwrap();
    assert_eq!(p.method, "POST");
    let auth = p
        .headers
        .iter()
        .find(|(n, _)| n == "Authorization")
        .unwrap();
    assert_eq!(auth.1, "MC <access key>:<signature>");
    assert!(p.headers.iter().any(|(n, _)| n == "x-mc-req-id"));
    assert_no_secret(&format!("{p:?}"), &[SECRET_KEY, APP_KEY, ACCESS_KEY]);
}

#[tokio::test]
async fn wrong_signature_is_an_http_error_with_the_vendor_message() {
    let state = Arc::new(V1State::default());
    let app = Router::new()
        .route(
            "/api/ess/get-latest-channel-token",
            post(
                |State(s): State<Arc<V1State>>, headers: HeaderMap| async move {
                    let e = check_v1(&headers, "/api/ess/get-latest-channel-token", &s)
                        .err()
                        .unwrap_or_default();
                    (
                        StatusCode::UNAUTHORIZED,
                        axum::Json(json!({"meta": {"status": 401},
                    "data": [], "fail": [{"errors": [{"code": "err_xdk_client_auth",
                    "message": e, "retryable": false}]}]})),
                    )
                },
            ),
        )
        .with_state(state);
    let base = serve(app).await;
    let wrong = Credentials::Mimecast1 {
        access_key: ACCESS_KEY.into(),
        secret_key: base64::engine::general_purpose::STANDARD.encode("another-secret-key"),
        app_id: APP_ID.into(),
        app_key: APP_KEY.into(),
    };
    let conn =
        Connection::new(settings(VendorKind::Mimecast, &base, wrong), Secrets::new()).unwrap();
    let err = conn
        .send(
            &post_req(&base, "/api/ess/get-latest-channel-token", Body::Empty),
            &NoObserver,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(!err.retryable());
    assert_eq!(
        err.to_string(),
        "mimecast: HTTP 401: err_xdk_client_auth: bad signature"
    );
}

#[tokio::test]
async fn fail_entries_become_vendor_errors_with_codes_and_retryable_flag() {
    let app = Router::new()
        .route(
            "/api/ess/get-latest-channel-token",
            post(|| async {
                axum::Json(json!({"meta": {"status": 400}, "data": [], "fail": [
                    {"key": {"channelId": ""}, "errors": [
                        {"code": "err_validation_missing", "message": "channelId is required",
                         "retryable": false},
                        {"code": "err_ess_busy", "message": "try later", "retryable": true}]}]}))
            }),
        )
        .route(
            "/api/other",
            post(|| async {
                axum::Json(json!({"meta": {"status": 200}, "data": [], "fail": [
                    {"errors": [{"code": "err_validation_missing",
                      "message": "channelId is required", "retryable": false}]}]}))
            }),
        );
    let base = serve(app).await;
    let conn = Connection::new(
        settings(VendorKind::Mimecast, &base, v1_credentials()),
        Secrets::new(),
    )
    .unwrap();
    let cancel = CancellationToken::new();
    let err = conn
        .send(
            &post_req(&base, "/api/ess/get-latest-channel-token", Body::Empty),
            &NoObserver,
            &cancel,
        )
        .await
        .unwrap_err();
    match &err {
        VendorError::Vendor {
            codes,
            message,
            retryable,
            status,
            ..
        } => {
            assert_eq!(codes, &vec!["err_validation_missing", "err_ess_busy"]);
            assert_eq!(
                message,
                "err_validation_missing: channelId is required; err_ess_busy: try later"
            );
            assert!(*retryable);
            assert_eq!(*status, Some(200));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.retryable());
    let err = conn
        .send(
            &post_req(&base, "/api/other", Body::Empty),
            &NoObserver,
            &cancel,
        )
        .await
        .unwrap_err();
    assert!(!err.retryable());
    assert_eq!(
        err.to_string(),
        "mimecast: err_validation_missing: channelId is required"
    );
}

#[tokio::test]
async fn rate_limit_429_waits_for_x_ratelimit_reset_then_retry_after() {
    let app = Router::new()
        .route(
            "/api/a",
            post(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("x-ratelimit-reset", "1500"), ("retry-after", "30")],
                    axum::Json(
                        json!({"meta": {"status": 429}, "data": [], "fail": [{"errors": [
                        {"code": "err_rate_limit", "message": "slow down", "retryable": true}]}]}),
                    ),
                )
            }),
        )
        .route(
            "/api/b",
            post(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "7")],
                    "busy",
                )
            }),
        );
    let base = serve(app).await;
    let conn = Connection::new(
        settings(VendorKind::Mimecast, &base, v1_credentials()),
        Secrets::new(),
    )
    .unwrap();
    let cancel = CancellationToken::new();
    let err = conn
        .send(
            &post_req(&base, "/api/a", Body::Empty),
            &NoObserver,
            &cancel,
        )
        .await
        .unwrap_err();
    assert!(err.retryable());
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_millis(1500)));
    assert!(
        err.to_string().contains("err_rate_limit: slow down"),
        "{err}"
    );
    let err = conn
        .send(
            &post_req(&base, "/api/b", Body::Empty),
            &NoObserver,
            &cancel,
        )
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(err.to_string(), "mimecast: HTTP 429: busy");
}

#[tokio::test]
async fn pages_are_followed_with_page_tokens_and_aggregated() {
    let seen_sizes = Arc::new(Mutex::new(Vec::<Value>::new()));
    let app = Router::new()
        .route(
            "/api/audit/get-audit-events",
            post(
                |State(seen): State<Arc<Mutex<Vec<Value>>>>, body: Bytes| async move {
                    let body: Value = serde_json::from_slice(&body).unwrap();
                    let pag = &body["meta"]["pagination"];
                    seen.lock().unwrap().push(pag.clone());
                    let size = pag["pageSize"].as_u64().unwrap_or(50) as usize;
                    let start: usize = pag["pageToken"]
                        .as_str()
                        .map(|t| t.trim_start_matches("tok-").parse().unwrap())
                        .unwrap_or(0);
                    let all: Vec<Value> = (0..5).map(|i| json!({"id": i})).collect();
                    let end = (start + size).min(all.len());
                    let mut pagination = json!({"pageSize": size, "totalCount": 5});
                    if end < all.len() {
                        pagination["next"] = json!(format!("tok-{end}"));
                    }
                    axum::Json(json!({"meta": {"status": 200, "pagination": pagination},
                    "data": all[start..end], "fail": []}))
                },
            ),
        )
        .with_state(seen_sizes.clone());
    let base = serve(app).await;
    let conn = Connection::new(
        settings(VendorKind::Mimecast, &base, v1_credentials()),
        Secrets::new(),
    )
    .unwrap();
    let cancel = CancellationToken::new();
    let p = Pagination {
        page_size: Some(2),
        max_pages: None,
    };
    let req = post_req(
        &base,
        "/api/audit/get-audit-events",
        Body::Json(json!({"data": [{"startDateTime": "2024-01-01T00:00:00+0000"}]})),
    );
    let mut next = Some(conn.first_page(&req, &p));
    let mut pages = Vec::new();
    while let Some(r) = next {
        let resp = conn.send(&r, &NoObserver, &cancel).await.unwrap();
        next = conn.next_page(&r, &resp, &p);
        pages.push(resp);
        assert!(pages.len() <= 5);
    }
    assert_eq!(pages.len(), 3);
    assert_eq!(
        *seen_sizes.lock().unwrap(),
        vec![
            json!({"pageSize": 2}),
            json!({"pageSize": 2, "pageToken": "tok-2"}),
            json!({"pageSize": 2, "pageToken": "tok-4"}),
        ]
    );
    let all = conn.aggregate(pages);
    assert_eq!(
        all.body,
        json!({"meta": {"status": 200, "pagination": {"pageSize": 2, "totalCount": 5}},
            "data": [{"id": 0}, {"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}], "fail": []})
    );
}

#[derive(Default)]
struct V2State {
    issued: AtomicU32,
    /// Tokens the API still accepts.
    valid: Mutex<HashSet<String>>,
    api_calls: AtomicU32,
    unauthorized: AtomicU32,
    token_status: Mutex<Option<u16>>,
}

async fn v2_token(State(s): State<Arc<V2State>>, headers: HeaderMap, body: Bytes) -> AxResponse {
    if let Some(code) = *s.token_status.lock().unwrap() {
        let status = StatusCode::from_u16(code).unwrap();
        return (
            status,
            axum::Json(json!({"error": "invalid_client",
            "error_description": "Client authentication failed"})),
        )
            .into_response();
    }
    let f = form(&body);
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct != "application/x-www-form-urlencoded"
        || form_get(&f, "grant_type") != Some("client_credentials")
        || form_get(&f, "client_id") != Some(CLIENT_ID)
        || form_get(&f, "client_secret") != Some(CLIENT_SECRET)
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request"})),
        )
            .into_response();
    }
    let n = s.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("mc2-access-token-{n}");
    s.valid.lock().unwrap().insert(token.clone());
    axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 1800}))
        .into_response()
}

async fn v2_api(State(s): State<Arc<V2State>>, headers: HeaderMap) -> AxResponse {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    if !s.valid.lock().unwrap().contains(&token) {
        s.unauthorized.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"fail": [{"errors": [
            {"code": "token_expired", "message": "token expired", "retryable": false}]}]})),
        )
            .into_response();
    }
    s.api_calls.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({"meta": {"status": 200}, "data": [{"ok": true}], "fail": []})).into_response()
}

fn v2_router(state: Arc<V2State>) -> Router {
    Router::new()
        .route("/oauth/token", post(v2_token))
        .route("/api/account/get-account", post(v2_api))
        .with_state(state)
}

fn v2_credentials() -> Credentials {
    Credentials::Mimecast2 {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
    }
}

#[tokio::test]
async fn v2_token_is_fetched_once_shared_and_refreshed_after_a_401() {
    let state = Arc::new(V2State::default());
    let base = serve(v2_router(state.clone())).await;
    let secrets = Secrets::new();
    let conn = Connection::new(
        settings(VendorKind::Mimecast, &base, v2_credentials()),
        secrets.clone(),
    )
    .unwrap();
    let req = post_req(&base, "/api/account/get-account", Body::Empty);
    // Concurrent first calls from clones share one token request.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let conn = conn.clone();
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            conn.send(&req, &NoObserver, &CancellationToken::new())
                .await
        }));
    }
    for t in tasks {
        let resp = t.await.unwrap().unwrap();
        assert_eq!(resp.body["data"][0]["ok"], true);
    }
    let rec = Recorder::default();
    conn.send(&req, &rec, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(state.issued.load(Ordering::SeqCst), 1);
    assert_eq!(state.api_calls.load(Ordering::SeqCst), 7);
    // The token is a registered secret.
    assert_eq!(secrets.mask("mc2-access-token-1"), "***");

    // The server forgets the token: the next call gets a 401, refreshes once, succeeds.
    state.valid.lock().unwrap().clear();
    let resp = conn
        .send(&req, &rec, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(state.issued.load(Ordering::SeqCst), 2);
    assert_eq!(state.unauthorized.load(Ordering::SeqCst), 1);
    assert!(
        rec.lines().iter().any(|l| l.contains("401")),
        "{:?}",
        rec.lines()
    );
    assert_no_secret(
        &rec.lines().join("\n"),
        &["mc2-access-token", CLIENT_SECRET],
    );
    // And keeps using the new token.
    conn.send(&req, &NoObserver, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(state.issued.load(Ordering::SeqCst), 2);

    // Dry run shows a placeholder and fetches nothing.
    let p = conn.prepare(&req).unwrap();
    assert!(p
        .headers
        .contains(&("Authorization".to_string(), "Bearer <token>".to_string())));
    assert_eq!(state.issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn v2_token_endpoint_failures_are_auth_errors() {
    let state = Arc::new(V2State::default());
    let base = serve(v2_router(state.clone())).await;
    let req = post_req(&base, "/api/account/get-account", Body::Empty);
    let cancel = CancellationToken::new();
    for (code, retryable) in [(401u16, false), (400, false), (429, true), (503, true)] {
        *state.token_status.lock().unwrap() = Some(code);
        let conn = Connection::new(
            settings(VendorKind::Mimecast, &base, v2_credentials()),
            Secrets::new(),
        )
        .unwrap();
        let err = conn.send(&req, &NoObserver, &cancel).await.unwrap_err();
        assert!(matches!(err, VendorError::Auth { .. }), "{err:?}");
        assert_eq!(err.status(), Some(code));
        assert_eq!(err.retryable(), retryable, "{code}");
        let text = err.to_string();
        assert!(
            text.contains("invalid_client: Client authentication failed"),
            "{text}"
        );
        assert_no_secret(&text, &[CLIENT_SECRET]);
        assert_no_secret(&format!("{err:?}"), &[CLIENT_SECRET]);
    }
    // Nothing listening: a retryable auth error.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let conn = Connection::new(
        settings(VendorKind::Mimecast, &closed, v2_credentials()),
        Secrets::new(),
    )
    .unwrap();
    let err = conn
        .send(
            &post_req(&closed, "/api/account/get-account", Body::Empty),
            &NoObserver,
            &cancel,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, VendorError::Auth { status: None, .. }),
        "{err:?}"
    );
    assert!(err.retryable());
}

#[tokio::test]
async fn wrong_credentials_kind_and_bad_secret_key_are_config_errors() {
    let s = settings(
        VendorKind::Mimecast,
        "http://127.0.0.1:1",
        Credentials::Basic {
            username: "u".into(),
            password: "p4ssw0rd-secret".into(),
        },
    );
    let err = Connection::new(s, Secrets::new()).err().unwrap();
    assert!(matches!(err, VendorError::Config { .. }));
    assert_no_secret(&err.to_string(), &["p4ssw0rd-secret"]);
    let s = settings(
        VendorKind::Mimecast,
        "http://127.0.0.1:1",
        Credentials::Mimecast1 {
            access_key: "a".into(),
            secret_key: "%%%not-base64-secret%%%".into(),
            app_id: "i".into(),
            app_key: "k".into(),
        },
    );
    let err = Connection::new(s, Secrets::new()).err().unwrap();
    assert!(err.to_string().contains("not valid base64"));
    assert_no_secret(&err.to_string(), &["%%%not-base64-secret%%%"]);
}

/// Records the adapter's log lines.
#[derive(Default)]
struct LogLines(Mutex<Vec<String>>);

impl auditflow::vendors::Observer for LogLines {
    fn log(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
    fn progress(&self, _percent: f64) {}
}

#[tokio::test]
async fn low_x_ratelimit_remaining_spaces_the_next_requests() {
    // Issue 12 item 5: Mimecast sends X-RateLimit-* on every answer. Answers 1-3 say 2 of 100
    // left with 900 ms to the reset (spread: 300 ms per request); answer 4 says 80 left.
    let arrivals: Arc<Mutex<Vec<std::time::Instant>>> = Arc::default();
    let seen = arrivals.clone();
    let app = Router::new().route(
        "/api/a",
        post(move || {
            let seen = seen.clone();
            async move {
                let n = {
                    let mut s = seen.lock().unwrap();
                    s.push(std::time::Instant::now());
                    s.len()
                };
                let remaining = if n <= 3 { "2" } else { "80" };
                (
                    [
                        ("x-ratelimit-limit", "100"),
                        ("x-ratelimit-remaining", remaining),
                        ("x-ratelimit-reset", "900"),
                    ],
                    axum::Json(json!({"meta": {"status": 200}, "data": [], "fail": []})),
                )
            }
        }),
    );
    let base = serve(app).await;
    let conn = Connection::new(
        settings(VendorKind::Mimecast, &base, v1_credentials()),
        Secrets::new(),
    )
    .unwrap();
    let log = LogLines::default();
    let cancel = CancellationToken::new();
    for _ in 0..5 {
        conn.send(&post_req(&base, "/api/a", Body::Empty), &log, &cancel)
            .await
            .unwrap();
    }
    let at = arrivals.lock().unwrap().clone();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().take(3).enumerate() {
        assert!(*gap >= Duration::from_millis(250), "gap {i}: {gaps:?}");
        assert!(*gap < Duration::from_secs(2), "gap {i}: {gaps:?}");
    }
    assert!(gaps[3] < Duration::from_millis(200), "not paced: {gaps:?}");
    let lines = log.0.lock().unwrap().clone();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].contains("X-RateLimit-Remaining is low"),
        "{lines:?}"
    );
}
