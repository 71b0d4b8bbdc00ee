//! MailStore adapter against an in-process server: BOM answers, long-running processes, errors, cancel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as AxResponse};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::vendors_common::*;
use auditflow::secrets::Secrets;
use auditflow::vendors::{Body, Connection, Credentials, Request, VendorError, VendorKind};

const USER: &str = "admin";
const PASSWORD: &str = "mailstore-test-password";

type Form = Vec<(String, String)>;

struct Proc {
    /// Statuses still to hand out through get-status, in order.
    script: Vec<Value>,
    last_sent_version: i64,
    endless: bool,
}

#[derive(Default)]
struct Ms {
    invokes: Mutex<Vec<(String, Form)>>,
    content_lengths: Mutex<Vec<Option<String>>>,
    status_calls: Mutex<Vec<Vec<(String, String)>>>,
    wrong_versions: AtomicU32,
    fail_status_next: AtomicU32,
    cancels: Mutex<Vec<String>>,
    procs: Mutex<HashMap<String, Proc>>,
}

/// A JSON answer with the UTF-8 BOM, as MailStore sends it.
fn bom_json(status: StatusCode, v: &Value) -> AxResponse {
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(serde_json::to_vec_pretty(v).unwrap());
    (status, [("content-type", "application/json")], bytes).into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

fn status(version: i64, code: &str, percent: Value, log: Value, token: Option<&str>) -> Value {
    json!({"error": null, "token": token, "statusVersion": version, "statusCode": code,
        "percentProgress": percent, "statusText": null, "result": null, "logOutput": log})
}

async fn invoke(
    State(s): State<Arc<Ms>>,
    Path(function): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> AxResponse {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, "401 Unauthorized").into_response();
    }
    let f = form(&body);
    s.invokes
        .lock()
        .unwrap()
        .push((function.clone(), f.clone()));
    let lengths: Vec<&str> = headers
        .get_all("content-length")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    s.content_lengths
        .lock()
        .unwrap()
        .push((!lengths.is_empty()).then(|| lengths.join(",")));
    match function.as_str() {
        "GetServerInfo" => bom_json(
            StatusCode::OK,
            &json!({"error": null, "token": null, "statusVersion": 2, "statusCode": "succeeded",
                "percentProgress": null, "statusText": null,
                "result": {"version": "9.0.0.9702", "machineName": "MAILSTORE"},
                "logOutput": null}),
        ),
        "CancelAsync" => {
            s.cancels
                .lock()
                .unwrap()
                .push(form_get(&f, "token").unwrap_or("").to_string());
            bom_json(
                StatusCode::OK,
                &status(1, "succeeded", Value::Null, Value::Null, None),
            )
        }
        "VerifyStore" => {
            let id = form_get(&f, "id").unwrap_or("");
            let token = format!("tok-{id}-b3af0ebae4dd755d");
            let (first, script, endless) = match id {
                "1" => {
                    let first = status(
                        3,
                        "running",
                        json!(0),
                        json!("Verifying file group #1...\r\nCreating a list of messages to be verified...\r\n"),
                        Some(&token),
                    );
                    let script = vec![
                        // Nothing new within millisecondsTimeout: the last status is repeated.
                        first.clone(),
                        status(
                            9,
                            "running",
                            json!(40),
                            json!("  400 messages verified...\r\n  800 mes"),
                            Some(&token),
                        ),
                        status(
                            15,
                            "running",
                            json!(80),
                            json!("sages verified...\r\n"),
                            Some(&token),
                        ),
                        json!({"error": null, "token": token, "statusVersion": 20,
                            "statusCode": "succeeded", "percentProgress": 100, "statusText": null,
                            "result": {"verified": 1249},
                            "logOutput": "  1249 messages verified.\r\nFinished. No errors have been found.\r\n"}),
                    ];
                    (first, script, false)
                }
                "99" => {
                    let first = status(
                        2,
                        "running",
                        json!(0),
                        json!("Verifying file group #99...\r\n"),
                        Some(&token),
                    );
                    let script = vec![json!({"error": {"message": "Store 99 cannot be verified",
                        "details": "System.IO.IOException: the disk is on fire"},
                        "token": token, "statusVersion": 5, "statusCode": "failed",
                        "percentProgress": null, "statusText": null, "result": null,
                        "logOutput": "Error.\r\n"})];
                    (first, script, false)
                }
                "7" => (
                    status(
                        1,
                        "running",
                        json!(0),
                        json!("Starting...\r\n"),
                        Some(&token),
                    ),
                    vec![],
                    true,
                ),
                _ => {
                    return bom_json(
                        StatusCode::OK,
                        &json!({"error": {"message": format!("Unknown store {id}"), "details": null},
                            "token": null, "statusVersion": 1, "statusCode": "failed",
                            "percentProgress": null, "statusText": null, "result": null,
                            "logOutput": null}),
                    )
                }
            };
            let version = first["statusVersion"].as_i64().unwrap();
            s.procs.lock().unwrap().insert(
                token,
                Proc {
                    script,
                    last_sent_version: version,
                    endless,
                },
            );
            bom_json(StatusCode::OK, &first)
        }
        _ => (StatusCode::NOT_FOUND, "no such function").into_response(),
    }
}

async fn get_status(State(s): State<Arc<Ms>>, headers: HeaderMap, body: Bytes) -> AxResponse {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, "401 Unauthorized").into_response();
    }
    let f = form(&body);
    s.status_calls.lock().unwrap().push(f.clone());
    if s.fail_status_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "0")],
            "Service Unavailable",
        )
            .into_response();
    }
    let token = form_get(&f, "token").unwrap_or("").to_string();
    let last: i64 = form_get(&f, "lastKnownStatusVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let endless = {
        let mut procs = s.procs.lock().unwrap();
        let Some(p) = procs.get_mut(&token) else {
            return bom_json(
                StatusCode::OK,
                &json!({"error": {"message": "unknown token", "details": null},
                    "statusCode": "failed", "statusVersion": 0}),
            );
        };
        if last != p.last_sent_version {
            s.wrong_versions.fetch_add(1, Ordering::SeqCst);
        }
        if !p.endless {
            let next = if p.script.is_empty() {
                json!({"statusCode": "failed", "statusVersion": 999,
                    "error": {"message": "script exhausted", "details": null}})
            } else {
                p.script.remove(0)
            };
            p.last_sent_version = next["statusVersion"].as_i64().unwrap_or(0);
            return bom_json(StatusCode::OK, &next);
        }
        p.last_sent_version += 1;
        p.last_sent_version
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    bom_json(
        StatusCode::OK,
        &status(
            endless,
            "running",
            json!(1),
            json!(format!("step {endless}\r\n")),
            Some(&token),
        ),
    )
}

async fn start() -> (Arc<Ms>, String) {
    let s = Arc::new(Ms::default());
    let app = Router::new()
        .route("/api/invoke/{function}", post(invoke))
        .route("/api/get-status", post(get_status))
        .with_state(s.clone());
    let base = serve(app).await;
    (s, base)
}

fn connection(base: &str, secrets: &Secrets) -> Connection {
    Connection::new(
        settings(
            VendorKind::MailStore,
            base,
            Credentials::Basic {
                username: USER.into(),
                password: PASSWORD.into(),
            },
        ),
        secrets.clone(),
    )
    .unwrap()
}

fn invoke_req(base: &str, function: &str, form: &[(&str, &str)]) -> Request {
    Request {
        method: ::http::Method::POST,
        url: url(base, &format!("/api/invoke/{function}")),
        headers: vec![],
        body: Body::Form(
            form.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    }
}

#[tokio::test]
async fn a_quick_function_answers_with_a_bom_and_an_empty_body_has_content_length_zero() {
    let (s, base) = start().await;
    let conn = connection(&base, &Secrets::new());
    let rec = Recorder::default();
    let resp = conn
        .send(
            &invoke_req(&base, "GetServerInfo", &[]),
            &rec,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body["statusCode"], "succeeded");
    assert_eq!(resp.body["result"]["version"], "9.0.0.9702");
    assert_eq!(resp.body["logOutput"], Value::Null);
    assert_eq!(
        *s.content_lengths.lock().unwrap(),
        vec![Some("0".to_string())]
    );
    assert!(rec.lines().is_empty());

    // Dry run: Basic placeholder, form body, no password.
    let p = conn
        .prepare(&invoke_req(&base, "VerifyStore", &[("id", "11")]))
        .unwrap();
    assert_eq!(p.method, "POST");
    assert_eq!(p.body.as_deref(), Some("id=11"));
    assert!(p.headers.contains(&(
        "Authorization".to_string(),
        "Basic <credentials>".to_string()
    )));
    assert_no_secret(&format!("{p:?}"), &[PASSWORD]);
}

#[tokio::test]
async fn a_long_running_process_is_followed_to_the_end_with_the_whole_log() {
    let (s, base) = start().await;
    let conn = connection(&base, &Secrets::new());
    let rec = Recorder::default();
    let resp = conn
        .send(
            &invoke_req(&base, "VerifyStore", &[("id", "1")]),
            &rec,
            &CancellationToken::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.body["statusCode"], "succeeded");
    assert_eq!(resp.body["statusVersion"], 20);
    assert_eq!(resp.body["result"], json!({"verified": 1249}));
    assert_eq!(
        resp.body["logOutput"],
        "Verifying file group #1...\r\nCreating a list of messages to be verified...\r\n  400 messages verified...\r\n  800 messages verified...\r\n  1249 messages verified.\r\nFinished. No errors have been found.\r\n"
    );
    assert_eq!(
        rec.lines(),
        vec![
            "Verifying file group #1...",
            "Creating a list of messages to be verified...",
            "  400 messages verified...",
            "  800 messages verified...",
            "  1249 messages verified.",
            "Finished. No errors have been found.",
        ]
    );
    assert_eq!(rec.progress(), vec![0.0, 40.0, 80.0, 100.0]);
    assert_eq!(s.wrong_versions.load(Ordering::SeqCst), 0);
    let calls = s.status_calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4);
    let versions: Vec<&str> = calls
        .iter()
        .map(|c| form_get(c, "lastKnownStatusVersion").unwrap())
        .collect();
    assert_eq!(versions, vec!["3", "3", "9", "15"]);
    assert!(calls
        .iter()
        .all(|c| form_get(c, "millisecondsTimeout") == Some("200")
            && form_get(c, "token") == Some("tok-1-b3af0ebae4dd755d")));
    assert_eq!(s.invokes.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_failed_process_maps_error_message_and_details() {
    let (_s, base) = start().await;
    let conn = connection(&base, &Secrets::new());
    let rec = Recorder::default();
    let err = conn
        .send(
            &invoke_req(&base, "VerifyStore", &[("id", "99")]),
            &rec,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    match &err {
        VendorError::Vendor {
            message,
            details,
            retryable,
            codes,
            body,
            ..
        } => {
            assert_eq!(message, "Store 99 cannot be verified");
            assert_eq!(
                details.as_deref(),
                Some("System.IO.IOException: the disk is on fire")
            );
            assert!(!retryable);
            assert_eq!(codes, &vec!["failed".to_string()]);
            assert_eq!(
                body.as_ref().unwrap()["logOutput"],
                "Verifying file group #99...\r\nError.\r\n"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.retryable());
    assert_eq!(err.to_string(), "mailstore: Store 99 cannot be verified");
    assert_eq!(rec.lines(), vec!["Verifying file group #99...", "Error."]);

    // A failure straight away (no process) too.
    let err = conn
        .send(
            &invoke_req(&base, "VerifyStore", &[("id", "5")]),
            &rec,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "mailstore: Unknown store 5");
}

#[tokio::test]
async fn get_status_errors_are_retried_inside_without_invoking_again() {
    let (s, base) = start().await;
    s.fail_status_next.store(3, Ordering::SeqCst);
    let conn = connection(&base, &Secrets::new());
    let resp = conn
        .send(
            &invoke_req(&base, "VerifyStore", &[("id", "1")]),
            &Recorder::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.body["statusCode"], "succeeded");
    assert_eq!(s.invokes.lock().unwrap().len(), 1);
    assert_eq!(s.status_calls.lock().unwrap().len(), 4 + 3);
    assert_eq!(s.wrong_versions.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn get_status_failing_for_good_is_not_retryable() {
    let (s, base) = start().await;
    s.fail_status_next.store(1000, Ordering::SeqCst);
    let conn = connection(&base, &Secrets::new());
    let err = conn
        .send(
            &invoke_req(&base, "VerifyStore", &[("id", "1")]),
            &Recorder::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    // Retrying would invoke VerifyStore again.
    assert!(!err.retryable(), "{err:?}");
    assert!(err.to_string().contains("HTTP 503"), "{err}");
    assert_eq!(s.invokes.lock().unwrap().len(), 1);
    assert_eq!(s.status_calls.lock().unwrap().len(), 10);
}

#[tokio::test]
async fn cancelling_a_running_process_sends_cancel_async() {
    let (s, base) = start().await;
    let conn = connection(&base, &Secrets::new());
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c2.cancel();
    });
    let rec = Recorder::default();
    let err = conn
        .send(
            &invoke_req(&base, "VerifyStore", &[("id", "7")]),
            &rec,
            &cancel,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, VendorError::Cancelled { .. }), "{err:?}");
    assert_eq!(
        *s.cancels.lock().unwrap(),
        vec!["tok-7-b3af0ebae4dd755d".to_string()]
    );
    assert!(rec.lines().len() >= 2, "{:?}", rec.lines());
    assert_eq!(s.wrong_versions.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn wrong_password_is_an_http_401_without_the_password() {
    let (_s, base) = start().await;
    let secrets = Secrets::new();
    let conn = Connection::new(
        settings(
            VendorKind::MailStore,
            &base,
            Credentials::Basic {
                username: USER.into(),
                password: "the-wrong-password".into(),
            },
        ),
        secrets,
    )
    .unwrap();
    let err = conn
        .send(
            &invoke_req(&base, "GetServerInfo", &[]),
            &Recorder::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.to_string(), "mailstore: HTTP 401: 401 Unauthorized");
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:the-wrong-password"));
    assert_no_secret(&format!("{err} {err:?}"), &["the-wrong-password", &basic]);
}
