//! Tests of the simulated MailStore over real HTTP.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::{parse_form, MailStoreSim};
use crate::tls::{fingerprint, SimCertificate};
use crate::{FaultConfig, Faults, SimConfig, Stats};

struct Harness {
    base: String,
    sim: Arc<MailStoreSim>,
    stats: Arc<Stats>,
    cfg: SimConfig,
    http: reqwest::Client,
}

async fn start(cfg: SimConfig) -> Harness {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stats = Arc::new(Stats::default());
    let faults = Arc::new(Faults::new(cfg.faults.clone(), stats.clone()));
    let sim = MailStoreSim::new(&cfg, faults);
    let (base, _task) = crate::serve(
        ([127, 0, 0, 1], 0).into(),
        sim.clone().router(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("serve on loopback");
    Harness {
        base,
        sim,
        stats,
        cfg,
        http: reqwest::Client::builder().build().expect("http client"),
    }
}

/// The service over HTTPS with a freshly generated certificate, and a client that trusts
/// only that certificate (the PEM file the simulator wrote).
async fn start_tls(cfg: SimConfig, dir: &std::path::Path) -> (Harness, SimCertificate) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stats = Arc::new(Stats::default());
    let faults = Arc::new(Faults::new(cfg.faults.clone(), stats.clone()));
    let sim = MailStoreSim::new(&cfg, faults);
    let cert = SimCertificate::generate(dir, cfg.host).expect("certificate");
    let (base, _task) = crate::serve_maybe_tls(
        ([127, 0, 0, 1], 0).into(),
        sim.clone().router(),
        tokio_util::sync::CancellationToken::new(),
        Some(&cert),
    )
    .await
    .expect("serve on loopback");
    let pem = std::fs::read(&cert.pem_file).expect("PEM written");
    let trusted = reqwest::Certificate::from_pem(&pem).expect("a PEM certificate");
    let http = reqwest::Client::builder()
        .tls_certs_only([trusted])
        .build()
        .expect("http client");
    let h = Harness {
        base,
        sim,
        stats,
        cfg,
        http,
    };
    (h, cert)
}

/// A JSON answer: checks and strips the BOM.
fn decode(bytes: &[u8]) -> Value {
    assert!(
        bytes.starts_with(&[0xEF, 0xBB, 0xBF]),
        "answer must start with a UTF-8 BOM: {:?}",
        &bytes[..bytes.len().min(8)]
    );
    serde_json::from_slice(&bytes[3..]).expect("JSON after the BOM")
}

impl Harness {
    fn count(&self, f: impl Fn(&Stats) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.stats).load(Ordering::Relaxed)
    }

    async fn raw(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let c = &self.cfg.credentials;
        self.http
            .post(format!("{}{path}", self.base))
            .basic_auth(&c.mailstore_username, Some(&c.mailstore_password))
            .form(form)
            .send()
            .await
            .expect("request sent")
    }

    async fn call(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let resp = self.raw(path, form).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        decode(&resp.bytes().await.expect("body"))
    }

    async fn status(&self, token: &str, last_known: i64, timeout_ms: u64) -> Value {
        self.call(
            "/api/get-status",
            &[
                ("token", token),
                ("lastKnownStatusVersion", &last_known.to_string()),
                ("millisecondsTimeout", &timeout_ms.to_string()),
            ],
        )
        .await
    }
}

fn version(v: &Value) -> i64 {
    v["statusVersion"].as_i64().expect("statusVersion")
}

fn fast(steps: u32, interval_ms: u64) -> SimConfig {
    SimConfig {
        mailstore_steps: steps,
        mailstore_step_interval: Duration::from_millis(interval_ms),
        ..SimConfig::default()
    }
}

/// Polls like a careful client until the process ends; returns every answer.
async fn poll_to_end(h: &Harness, first: &Value) -> Vec<Value> {
    let token = first["token"].as_str().expect("token").to_string();
    let mut answers = vec![first.clone()];
    let mut last = first.clone();
    while last["statusCode"] == "running" {
        let next = h.status(&token, version(&last), 5000).await;
        answers.push(next.clone());
        last = next;
        assert!(answers.len() < 500, "process never ends");
    }
    answers
}

#[tokio::test]
async fn server_info_answers_with_bom_in_the_page_shape() {
    let h = start(SimConfig::default()).await;
    let v = h.call("/api/invoke/GetServerInfo", &[]).await;
    assert_eq!(v["statusCode"], "succeeded");
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["token"], Value::Null);
    assert_eq!(v["statusVersion"], 2);
    assert!(v["result"]["version"].is_string());
    assert!(v["result"]["machineName"].is_string());
    for key in ["percentProgress", "statusText", "logOutput"] {
        assert!(v.get(key).is_some(), "answer lacks {key}");
    }
}

#[tokio::test]
async fn bad_basic_auth_is_401_with_challenge() {
    let h = start(SimConfig::default()).await;
    let resp = h
        .http
        .post(format!("{}/api/invoke/GetServerInfo", h.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Basic realm=\"MailStore Server\"")
    );
    let resp = h
        .http
        .post(format!("{}/api/invoke/GetServerInfo", h.base))
        .basic_auth("admin", Some("wrong"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = h
        .http
        .post(format!("{}/api/invoke/GetServerInfo", h.base))
        .bearer_auth("sim-mailstore-password")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.count(|s| &s.unauthenticated), 3);
    assert_eq!(h.count(|s| &s.requests), 0, "no fault draw before auth");
}

#[tokio::test]
async fn stores_metadata_and_unknown_functions() {
    let h = start(SimConfig::default()).await;
    let v = h
        .call("/api/invoke/GetStores", &[("includeSize", "true")])
        .await;
    let stores = v["result"].as_array().expect("stores");
    assert_eq!(stores.len(), 3);
    assert_eq!(stores[0]["id"], 1);
    assert!(stores[0]["size"].is_number());
    let v = h
        .call("/api/invoke/GetStores", &[("includeSize", "maybe")])
        .await;
    assert_eq!(v["statusCode"], "failed");

    let meta = h.call("/api/get-metadata", &[]).await;
    let functions = meta.as_array().expect("a bare list of functions");
    let verify = functions
        .iter()
        .find(|f| f["name"] == "VerifyStore")
        .expect("VerifyStore listed");
    assert!(verify["args"]
        .as_array()
        .expect("args")
        .iter()
        .any(|a| a["name"] == "id"));

    let v = h.call("/api/invoke/DeleteEverything", &[]).await;
    assert_eq!(v["statusCode"], "failed");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .starts_with("Unknown function"));
    assert!(v["error"]["details"].is_string());

    // Arguments must be form-encoded.
    let c = &h.cfg.credentials;
    let resp = h
        .http
        .post(format!("{}/api/invoke/VerifyStore", h.base))
        .basic_auth(&c.mailstore_username, Some(&c.mailstore_password))
        .json(&serde_json::json!({"id": 1}))
        .send()
        .await
        .expect("sent");
    let v = decode(&resp.bytes().await.expect("body"));
    assert_eq!(v["statusCode"], "failed");
    assert_eq!(h.sim.running_processes(), 0);
}

#[tokio::test]
async fn verify_store_runs_to_succeeded_through_long_polls() {
    let h = start(fast(6, 40)).await;
    let first = h.call("/api/invoke/VerifyStore", &[("id", "2")]).await;
    assert_eq!(first["statusCode"], "running");
    assert_eq!(first["statusVersion"], 3);
    assert_eq!(first["percentProgress"], 0);
    let token = first["token"].as_str().expect("token");
    assert_eq!(token.len(), 32);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        first["logOutput"],
        "Verifying file group #2...\r\nCreating a list of messages to be verified...\r\n"
    );
    assert_eq!(h.sim.running_processes(), 1);

    let answers = poll_to_end(&h, &first).await;
    let versions: Vec<i64> = answers.iter().map(version).collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "statusVersion must grow: {versions:?}"
    );
    let last = answers.last().expect("final answer");
    assert_eq!(last["statusCode"], "succeeded");
    assert_eq!(last["token"], Value::Null);
    assert_eq!(last["error"], Value::Null);
    assert_eq!(last["result"], Value::Null);
    assert_eq!(last["percentProgress"], 100);
    let log: String = answers
        .iter()
        .filter_map(|a| a["logOutput"].as_str())
        .collect();
    let lines: Vec<&str> = log.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "Verifying file group #2...");
    assert!(lines[2].ends_with("messages are about to be verified."));
    assert_eq!(lines[3], "Verifying...");
    let counts: Vec<i64> = lines
        .iter()
        .filter_map(|l| l.strip_suffix(" messages verified..."))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    assert!(!counts.is_empty());
    assert!(
        counts
            .iter()
            .enumerate()
            .all(|(i, n)| *n == 100 * (i as i64 + 1)),
        "each hundred once, in order: {counts:?}"
    );
    assert!(lines[lines.len() - 2].ends_with(" messages verified."));
    assert_eq!(
        lines[lines.len() - 1],
        "Finished. No errors have been found."
    );
    assert_eq!(h.count(|s| &s.wrong_status_versions), 0);
    assert_eq!(h.sim.running_processes(), 0);
}

#[tokio::test]
async fn wrong_last_known_status_version_is_counted() {
    let h = start(fast(3, 60)).await;
    let first = h.call("/api/invoke/VerifyStore", &[("id", "1")]).await;
    let token = first["token"].as_str().expect("token").to_string();
    // A client that starts from 0 instead of the version it was given.
    let v = h.status(&token, 0, 2000).await;
    assert_eq!(h.count(|s| &s.wrong_status_versions), 1);
    // Still answered at once, with the log since version 0.
    assert!(v["logOutput"]
        .as_str()
        .unwrap_or("")
        .starts_with("Verifying file group #1..."));
    // Polling correctly from here on counts nothing more.
    let rest = poll_to_end(&h, &v).await;
    assert_eq!(
        rest.last().map(|a| a["statusCode"].clone()),
        Some("succeeded".into())
    );
    assert_eq!(h.count(|s| &s.wrong_status_versions), 1);
    // Repeating a stale version is counted too (and still answered).
    let v = h.status(&token, version(&first), 100).await;
    assert_eq!(v["statusCode"], "succeeded");
    assert_eq!(h.count(|s| &s.wrong_status_versions), 2);
}

#[tokio::test]
async fn failing_store_ends_failed_with_message_and_details() {
    let cfg = SimConfig {
        mailstore_failing_stores: vec![2],
        ..fast(4, 30)
    };
    let h = start(cfg).await;
    let first = h.call("/api/invoke/VerifyStore", &[("id", "2")]).await;
    let answers = poll_to_end(&h, &first).await;
    let last = answers.last().expect("final");
    assert_eq!(last["statusCode"], "failed");
    assert_eq!(last["token"], Value::Null);
    let message = last["error"]["message"].as_str().expect("message");
    assert!(message.starts_with("Store 2 is damaged: "), "{message}");
    assert!(!last["error"]["details"].as_str().unwrap_or("").is_empty());

    // The other stores verify fine.
    let ok = h.call("/api/invoke/VerifyStore", &[("id", "3")]).await;
    let answers = poll_to_end(&h, &ok).await;
    assert_eq!(
        answers.last().map(|a| a["statusCode"].clone()),
        Some("succeeded".into())
    );
}

#[tokio::test]
async fn verify_store_argument_errors() {
    let h = start(SimConfig::default()).await;
    let v = h.call("/api/invoke/VerifyStore", &[("id", "99")]).await;
    assert_eq!(v["statusCode"], "failed");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("not found"));
    let v = h.call("/api/invoke/VerifyStore", &[]).await;
    assert_eq!(v["error"]["message"], "Missing argument 'id'.");
    let v = h.call("/api/invoke/VerifyStore", &[("id", "one")]).await;
    assert_eq!(v["statusCode"], "failed");
    let v = h
        .call(
            "/api/invoke/VerifyStore",
            &[("id", "1"), ("includeIndexes", "yes")],
        )
        .await;
    assert_eq!(v["statusCode"], "failed");
    assert_eq!(h.sim.running_processes(), 0);

    // get-status without a known token or without its arguments.
    let v = h.status("0123456789abcdef0123456789abcdef", 3, 10).await;
    assert_eq!(v["statusCode"], "failed");
    let v = h.call("/api/get-status", &[("token", "abc")]).await;
    assert_eq!(v["statusCode"], "failed");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("lastKnownStatusVersion"));
}

#[tokio::test]
async fn cancel_async_stops_a_process() {
    let h = start(fast(100, 50)).await;
    let first = h.call("/api/invoke/VerifyStore", &[("id", "1")]).await;
    let token = first["token"].as_str().expect("token").to_string();
    assert_eq!(h.sim.running_processes(), 1);
    let v = h.call("/api/cancel-async", &[("token", &token)]).await;
    assert_eq!(v["statusCode"], "succeeded");
    assert_eq!(h.sim.running_processes(), 0);
    assert_eq!(h.count(|s| &s.mailstore_cancelled), 1);

    let v = h.status(&token, version(&first), 1000).await;
    assert_eq!(v["statusCode"], "cancelled");
    assert_eq!(v["token"], Value::Null);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("cancelled by the user"));
    // Nothing moves any more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = h.status(&token, version(&v), 50).await;
    assert_eq!(version(&again), version(&v));

    // Cancelling a finished process changes nothing and counts nothing.
    let v = h.call("/api/cancel-async", &[("token", &token)]).await;
    assert_eq!(v["statusCode"], "succeeded");
    assert_eq!(h.count(|s| &s.mailstore_cancelled), 1);

    // The alias the brief names works the same way.
    let second = h.call("/api/invoke/VerifyStore", &[("id", "3")]).await;
    let token2 = second["token"].as_str().expect("token").to_string();
    h.call("/api/invoke/CancelAsync", &[("token", &token2)])
        .await;
    assert_eq!(h.count(|s| &s.mailstore_cancelled), 2);
    assert_eq!(h.sim.running_processes(), 0);
}

#[tokio::test]
async fn long_poll_waits_for_a_new_version_or_the_timeout() {
    // A new version 1 s after the start: the poll answers then, not before.
    let h = start(fast(2, 1_000)).await;
    let first = h.call("/api/invoke/VerifyStore", &[("id", "1")]).await;
    let token = first["token"].as_str().expect("token").to_string();
    let t0 = Instant::now();
    let v = h.status(&token, version(&first), 10_000).await;
    let waited = t0.elapsed();
    assert!(version(&v) > version(&first));
    assert!(
        waited >= Duration::from_millis(450),
        "answered after {waited:?}"
    );
    assert!(waited < Duration::from_secs(8), "answered after {waited:?}");

    // No new version within the timeout: the last status is repeated after the timeout.
    let h = start(fast(2, 5_000)).await;
    let first = h.call("/api/invoke/VerifyStore", &[("id", "1")]).await;
    let token = first["token"].as_str().expect("token").to_string();
    let t0 = Instant::now();
    let v = h.status(&token, version(&first), 300).await;
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "answered after {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(3_000),
        "answered after {waited:?}"
    );
    assert_eq!(version(&v), version(&first));
    assert_eq!(v["statusCode"], "running");
    assert_eq!(v["token"], token.as_str());
    assert_eq!(v["logOutput"], Value::Null);
    assert_eq!(h.count(|s| &s.wrong_status_versions), 0);
}

#[tokio::test]
async fn forced_faults_come_after_auth() {
    let cfg = SimConfig {
        faults: FaultConfig {
            force_each_once: true,
            ..FaultConfig::default()
        },
        ..SimConfig::default()
    };
    let h = start(cfg).await;
    let resp = h.raw("/api/invoke/GetServerInfo", &[]).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let resp = h.raw("/api/invoke/GetServerInfo", &[]).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v = h.call("/api/invoke/GetServerInfo", &[]).await;
    assert_eq!(v["statusCode"], "succeeded");
    assert_eq!(h.count(|s| &s.injected_429), 1);
    assert_eq!(h.count(|s| &s.injected_5xx), 1);
    assert_eq!(h.count(|s| &s.unauthenticated), 0);
}

#[test]
fn form_parsing() {
    let pairs = parse_form(b"token=ab12&lastKnownStatusVersion=3&text=x+y%20z&sym=%41%2B%26")
        .expect("valid form");
    assert_eq!(
        pairs,
        vec![
            ("token".to_string(), "ab12".to_string()),
            ("lastKnownStatusVersion".to_string(), "3".to_string()),
            ("text".to_string(), "x y z".to_string()),
            ("sym".to_string(), "A+&".to_string()),
        ]
    );
    assert_eq!(parse_form(b"").expect("empty"), vec![]);
    assert_eq!(
        parse_form(b"flag&x=").expect("bare names"),
        vec![
            ("flag".to_string(), String::new()),
            ("x".to_string(), String::new())
        ]
    );
    assert!(parse_form(b"a=%zz").is_err());
    assert!(parse_form(b"a=%4").is_err());
    assert!(parse_form(b"a=%ff").is_err(), "not UTF-8");
    assert!(parse_form(&[0x61, 0x3d, 0xff]).is_err());
}

#[tokio::test]
async fn final_status_keeps_its_token_when_configured() {
    // Default: the API page's `"token": null` (asserted in the tests above).
    let h = start(SimConfig {
        mailstore_keep_final_token: true,
        ..fast(3, 20)
    })
    .await;
    let first = h.call("/api/invoke/VerifyStore", &[("id", "1")]).await;
    let token = first["token"].as_str().expect("token").to_string();
    let answers = poll_to_end(&h, &first).await;
    let last = answers.last().expect("final answer");
    assert_eq!(last["statusCode"], "succeeded");
    assert_eq!(last["token"], token.as_str());
    assert_eq!(last["percentProgress"], 100);
    // A failed process keeps it too; completion is told by statusCode alone.
    let h = start(SimConfig {
        mailstore_keep_final_token: true,
        mailstore_failing_stores: vec![2],
        ..fast(3, 20)
    })
    .await;
    let first = h.call("/api/invoke/VerifyStore", &[("id", "2")]).await;
    let answers = poll_to_end(&h, &first).await;
    let last = answers.last().expect("final answer");
    assert_eq!(last["statusCode"], "failed");
    assert_eq!(last["token"], first["token"]);
}

#[tokio::test]
async fn tutorial_functions_are_listed_and_served() {
    let h = start(fast(3, 20)).await;
    let meta = h.call("/api/get-metadata", &[]).await;
    let functions = meta.as_array().expect("a bare list of functions");
    let args_of = |name: &str| -> Vec<String> {
        functions
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed"))["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a["name"].as_str().expect("arg name").to_string())
            .collect()
    };
    assert!(args_of("GetUsers").is_empty());
    assert_eq!(args_of("GetUserInfo"), vec!["userName"]);
    assert_eq!(args_of("GetFolderStatistics"), vec!["timeoutMSec"]);
    assert_eq!(args_of("VerifyStores"), vec!["includeIndexes"]);
    assert_eq!(
        args_of("GetWorkerResults"),
        vec![
            "fromIncluding",
            "toExcluding",
            "timeZoneID",
            "profileID",
            "userName"
        ]
    );

    // The tutorial: every address of every user, and the admins.
    let users = h.call("/api/invoke/GetUsers", &[]).await;
    assert_eq!(users["statusCode"], "succeeded");
    let mut addresses = Vec::new();
    let mut admins = Vec::new();
    for user in users["result"].as_array().expect("users") {
        let name = user["userName"].as_str().expect("userName");
        let info = h
            .call("/api/invoke/GetUserInfo", &[("userName", name)])
            .await;
        assert_eq!(info["statusCode"], "succeeded", "{info}");
        let result = &info["result"];
        for a in result["emailAddresses"].as_array().expect("addresses") {
            addresses.push(a.as_str().expect("address").to_string());
        }
        if result["privileges"]
            .as_array()
            .expect("privileges")
            .contains(&Value::from("admin"))
        {
            admins.push(name.to_string());
        }
        for p in result["privilegesOnFolders"].as_array().expect("folders") {
            assert!(p["folder"].is_string() && p["privileges"].is_array());
        }
    }
    assert!(addresses.contains(&"john.doe@example.com".to_string()));
    assert_eq!(admins, vec!["admin"]);
    let v = h
        .call("/api/invoke/GetUserInfo", &[("userName", "nobody")])
        .await;
    assert_eq!(v["statusCode"], "failed");

    let stats = h.call("/api/invoke/GetFolderStatistics", &[]).await;
    assert_eq!(stats["statusCode"], "succeeded");
    let folders = stats["result"].as_array().expect("folders");
    assert_eq!(folders.len(), 3);
    assert!(folders.iter().all(|f| f["count"].as_i64() > Some(0)));

    let results = h
        .call(
            "/api/invoke/GetWorkerResults",
            &[
                ("fromIncluding", "2026-02-01T00:00:00"),
                ("toExcluding", "2026-02-03T00:00:00"),
                ("timeZoneID", "$Local"),
                ("userName", "john.doe"),
            ],
        )
        .await;
    assert_eq!(results["statusCode"], "succeeded", "{results}");
    let runs = results["result"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r["userName"] == "john.doe"));
    let v = h
        .call("/api/invoke/GetWorkerResults", &[("fromIncluding", "soon")])
        .await;
    assert_eq!(v["statusCode"], "failed");

    let first = h.call("/api/invoke/VerifyStores", &[]).await;
    assert_eq!(first["statusCode"], "running");
    assert!(first["logOutput"]
        .as_str()
        .expect("log")
        .contains("Verifying file group #3..."));
    let answers = poll_to_end(&h, &first).await;
    assert_eq!(answers.last().expect("final")["statusCode"], "succeeded");
}

// ---------- HTTPS (issue 12 item 1) ----------

/// The DER of the one certificate in a PEM file, decoded here without the simulator's code.
fn pem_der(path: &std::path::Path) -> Vec<u8> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).expect("PEM");
    assert!(!text.contains("PRIVATE KEY"), "the key must not be written");
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64")
}

#[tokio::test]
async fn https_with_the_generated_certificate_trusted_as_the_only_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, cert) = start_tls(fast(3, 20), dir.path()).await;
    assert!(h.base.starts_with("https://127.0.0.1:"), "{}", h.base);
    // The fingerprint printed is SHA-256 over the DER of the certificate in the file.
    let der = pem_der(&cert.pem_file);
    assert_eq!(cert.sha256, fingerprint(&der));
    assert_eq!(cert.sha256.len(), 32 * 3 - 1);
    assert!(cert
        .sha256
        .split(':')
        .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit())));

    // webpki accepts the self-signed end-entity certificate as its own trust anchor, for the
    // IP address and for `localhost`.
    let v = h.call("/api/invoke/GetServerInfo", &[]).await;
    assert_eq!(v["statusCode"], "succeeded");
    let first = h.call("/api/invoke/VerifyStore", &[("id", "1")]).await;
    let answers = poll_to_end(&h, &first).await;
    assert_eq!(answers.last().expect("end")["statusCode"], "succeeded");
    let port = h.base.rsplit(':').next().expect("port");
    let c = &h.cfg.credentials;
    let by_name = h
        .http
        .post(format!("https://localhost:{port}/api/invoke/GetServerInfo"))
        .basic_auth(&c.mailstore_username, Some(&c.mailstore_password))
        .send()
        .await
        .expect("localhost is in the certificate");
    assert_eq!(by_name.status(), StatusCode::OK);

    // A client that does not trust it, or speaks plain HTTP, gets nothing.
    let stranger = reqwest::Client::builder()
        .tls_certs_only([])
        .build()
        .expect("client");
    let url = format!("{}/api/invoke/GetServerInfo", h.base);
    let err = stranger.post(&url).send().await.expect_err("untrusted");
    assert!(err.is_connect(), "{err:?}");
    let plain = url.replacen("https://", "http://", 1);
    assert!(reqwest::Client::new().post(&plain).send().await.is_err());
}

#[tokio::test]
async fn a_second_start_makes_a_new_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = SimConfig::default().host;
    let a = SimCertificate::generate(dir.path(), host).expect("cert");
    let b = SimCertificate::generate(dir.path(), host).expect("cert");
    assert_ne!(a.sha256, b.sha256);
    assert_eq!(
        fingerprint(&pem_der(&b.pem_file)),
        b.sha256,
        "the file is the newest"
    );
}

// ---------- time scale (issue 12 item 4) ----------

/// Real time a VerifyStore of `steps` x 60 simulated seconds takes at `scale`.
async fn verify_takes(steps: u32, scale: f64) -> Duration {
    let h = start(SimConfig {
        mailstore_steps: steps,
        mailstore_step_interval: Duration::from_secs(60),
        time_scale: scale,
        ..SimConfig::default()
    })
    .await;
    let t = Instant::now();
    let first = h.call("/api/invoke/VerifyStore", &[("id", "1")]).await;
    let answers = poll_to_end(&h, &first).await;
    assert_eq!(answers.last().expect("end")["statusCode"], "succeeded");
    t.elapsed()
}

#[tokio::test]
async fn long_running_processes_take_simulated_minutes_at_the_time_scale() {
    // 5 steps of a simulated minute: 0.5 s at 600x, 5 ms at 60000x.
    let slow = verify_takes(5, 600.0).await;
    assert!(slow >= Duration::from_millis(450), "{slow:?}");
    let quick = verify_takes(5, 60_000.0).await;
    assert!(quick < slow / 2, "{quick:?} vs {slow:?}");
}
