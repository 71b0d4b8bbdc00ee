//! Conformance of the built-in simulator to the vendor pages (`shared/vendor-docs`): clients
//! written here from those pages alone — raw HTTP requests, HMAC-SHA1 computed by hand, Basic
//! auth and Atom entries built as text, an RS256 JWT signed in the test — drive every endpoint
//! family and each rejection the vendors document (issue 12). Nothing from `auditflow::vendors`
//! is used, so an adapter bug cannot hide a simulator bug.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use auditflow_sim::{self as sim, FaultConfig, SimConfig, SimHandle};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use sha1::Digest as _;

async fn start(cfg: SimConfig) -> (SimHandle, HashMap<String, String>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let h = sim::start(cfg).await.expect("simulator starts");
    let env = h.env().into_iter().collect();
    (h, env)
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("http client")
}

// ---------------------------------------------------------------- Mimecast (API 1.0 pages)

/// HMAC (RFC 2104) over SHA-1, block size 64, written out instead of taken from a crate.
fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..20].copy_from_slice(&sha1::Sha1::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let mut inner = sha1::Sha1::new();
    inner.update(pad(0x36));
    inner.update(message);
    let mut outer = sha1::Sha1::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[test]
fn hand_written_hmac_sha1_matches_rfc_2202() {
    let hex = |b: &[u8]| hex::encode(b);
    assert_eq!(
        hex(&hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );
    assert_eq!(
        hex(&hmac_sha1(
            &[0xaa; 80],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "aa4ae5e15272d00e95705637ce8a3b55ed402112"
    );
}

/// `x-mc-date` as the page shows it: `Tue, 24 Nov 2015 12:50:11 UTC`.
fn mc_date(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S UTC").to_string()
}

/// The four headers of the page's "Authorization guide": `MC accessKey:base64(HMAC-SHA1(
/// base64decode(secretKey), date:reqId:uri:appKey))`, `x-mc-date`, `x-mc-req-id`, `x-mc-app-id`.
struct McSigned {
    date: String,
    req_id: String,
    secret_b64: String,
}

impl McSigned {
    fn now() -> McSigned {
        McSigned {
            date: mc_date(chrono::Utc::now()),
            req_id: uuid::Uuid::new_v4().to_string().to_uppercase(),
            secret_b64: String::new(),
        }
    }

    fn headers(&self, env: &HashMap<String, String>, uri: &str) -> Vec<(String, String)> {
        let secret_b64 = if self.secret_b64.is_empty() {
            &env["MIMECAST_SECRET_KEY"]
        } else {
            &self.secret_b64
        };
        let key = STANDARD
            .decode(secret_b64)
            .expect("the secret key is base64");
        let to_sign = [
            self.date.as_str(),
            self.req_id.as_str(),
            uri,
            env["MIMECAST_APP_KEY"].as_str(),
        ]
        .join(":");
        let sig = STANDARD.encode(hmac_sha1(&key, to_sign.as_bytes()));
        vec![
            (
                "Authorization".into(),
                format!("MC {}:{sig}", env["MIMECAST_ACCESS_KEY"]),
            ),
            ("x-mc-date".into(), self.date.clone()),
            ("x-mc-req-id".into(), self.req_id.clone()),
            ("x-mc-app-id".into(), env["MIMECAST_APP_ID"].clone()),
        ]
    }
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        let t = self.text.trim_start_matches('\u{feff}');
        serde_json::from_str(t).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn number(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number"))
    }
    /// Mimecast's `fail[0].errors[0].code`.
    fn mc_code(&self) -> String {
        self.json()
            .pointer("/fail/0/errors/0/code")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no fail code in {}", self.text))
            .to_string()
    }
}

async fn answer(resp: reqwest::Response) -> Answer {
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        text: resp.text().await.expect("a body"),
    }
}

async fn mc_post(
    base: &str,
    uri: &str,
    headers: &[(String, String)],
    body: impl Into<String>,
) -> Answer {
    let mut rb = plain_client()
        .post(format!("{base}{uri}"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(body.into());
    for (k, v) in headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    answer(rb.send().await.expect("mimecast answers")).await
}

const FIND: &str = "/api/gateway/find-processing-messages";
const CHANNEL: &str = "/api/ess/get-latest-channel-token";
const AUDIT: &str = "/api/audit/get-audit-events";

fn channel_body() -> String {
    json!({"data": [{"channelId": "B8Y43U-GYVS-WHAU6M"}]}).to_string()
}

#[tokio::test]
async fn mimecast_endpoints_answer_signed_requests_with_rate_limit_headers() {
    let (h, env) = start(SimConfig::default()).await;
    let base = &h.mimecast_url;
    let first_page = json!({"meta": {"pagination": {"pageSize": 10}},
        "data": [{"sortOrder": "descending"}]});
    let a = mc_post(
        base,
        FIND,
        &McSigned::now().headers(&env, FIND),
        first_page.to_string(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let body = a.json();
    assert_eq!(body["meta"]["status"], 200);
    assert_eq!(body["fail"], json!([]));
    // The page's answer: one data item holding the page's `messages`.
    let messages = &body["data"][0]["messages"];
    assert_eq!(messages.as_array().map(Vec::len), Some(10), "{body}");
    // Item 5: the quota on every answer, not only on 429.
    let limit = a.number("x-ratelimit-limit");
    let remaining = a.number("x-ratelimit-remaining");
    assert!(remaining < limit);
    assert!(a.number("x-ratelimit-reset") > 0);
    let next = body["meta"]["pagination"]["next"]
        .as_str()
        .expect("a next page token")
        .to_string();
    let second = json!({"meta": {"pagination": {"pageSize": 10, "pageToken": next}},
        "data": [{"sortOrder": "descending"}]});
    let b = mc_post(
        base,
        FIND,
        &McSigned::now().headers(&env, FIND),
        second.to_string(),
    )
    .await;
    assert_eq!(b.status, 200, "{}", b.text);
    assert_ne!(
        b.json()["data"][0]["messages"][0]["id"],
        messages[0]["id"],
        "page two differs"
    );
    assert_eq!(b.number("x-ratelimit-remaining"), remaining - 1);

    let c = mc_post(
        base,
        CHANNEL,
        &McSigned::now().headers(&env, CHANNEL),
        channel_body(),
    )
    .await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert!(c.json()["data"][0]["channelId"].is_string(), "{}", c.text);
    assert!(c.header("x-ratelimit-remaining").is_some());

    let audit = json!({"data": [{"startDateTime": "2015-11-16T14:49:18+0000"}]});
    let d = mc_post(
        base,
        AUDIT,
        &McSigned::now().headers(&env, AUDIT),
        audit.to_string(),
    )
    .await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert!(d.json()["data"].as_array().is_some_and(|v| !v.is_empty()));
    h.shutdown().await;
}

#[tokio::test]
async fn mimecast_rejects_what_the_authorization_guide_forbids() {
    let (h, env) = start(SimConfig::default()).await;
    let base = &h.mimecast_url;
    // Signed with another secret key.
    let mut wrong = McSigned::now();
    wrong.secret_b64 = STANDARD.encode("not the secret key");
    let a = mc_post(base, CHANNEL, &wrong.headers(&env, CHANNEL), channel_body()).await;
    assert_eq!(
        (a.status, a.mc_code().as_str()),
        (401, "err_xdk_invalid_signature")
    );
    // Signed for another URI.
    let a = mc_post(
        base,
        CHANNEL,
        &McSigned::now().headers(&env, FIND),
        channel_body(),
    )
    .await;
    assert_eq!(
        (a.status, a.mc_code().as_str()),
        (401, "err_xdk_invalid_signature")
    );
    // A date 20 minutes old, correctly signed.
    let stale = McSigned {
        date: mc_date(chrono::Utc::now() - chrono::TimeDelta::minutes(20)),
        ..McSigned::now()
    };
    let a = mc_post(base, CHANNEL, &stale.headers(&env, CHANNEL), channel_body()).await;
    assert_eq!(
        (a.status, a.mc_code().as_str()),
        (401, "err_xdk_date_out_of_range")
    );
    // A date not in the page's format.
    let odd = McSigned {
        date: chrono::Utc::now().to_rfc3339(),
        ..McSigned::now()
    };
    let a = mc_post(base, CHANNEL, &odd.headers(&env, CHANNEL), channel_body()).await;
    assert_eq!(
        (a.status, a.mc_code().as_str()),
        (401, "err_xdk_invalid_date")
    );
    // Each required header left out in turn.
    for missing in ["x-mc-date", "x-mc-req-id", "x-mc-app-id"] {
        let headers: Vec<_> = McSigned::now()
            .headers(&env, CHANNEL)
            .into_iter()
            .filter(|(k, _)| k != missing)
            .collect();
        let a = mc_post(base, CHANNEL, &headers, channel_body()).await;
        assert_eq!(a.status, 401, "without {missing}: {}", a.text);
        assert_eq!(a.mc_code(), "err_xdk_missing_header", "without {missing}");
        assert!(a.text.contains(missing), "{}", a.text);
    }
    let headers: Vec<_> = McSigned::now()
        .headers(&env, CHANNEL)
        .into_iter()
        .filter(|(k, _)| k != "Authorization")
        .collect();
    let a = mc_post(base, CHANNEL, &headers, channel_body()).await;
    assert_eq!(
        (a.status, a.mc_code().as_str()),
        (401, "err_xdk_missing_authorization")
    );
    // The same request id twice.
    let once = McSigned::now().headers(&env, CHANNEL);
    let a = mc_post(base, CHANNEL, &once, channel_body()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = mc_post(base, CHANNEL, &once, channel_body()).await;
    assert_eq!(
        (a.status, a.mc_code().as_str()),
        (401, "err_xdk_request_id_reused")
    );
    // Rejections carry the quota too.
    assert!(a.header("x-ratelimit-remaining").is_some());
    let stats = h.stats.snapshot();
    assert_eq!(stats.bad_signatures, 2);
    assert_eq!(stats.reused_request_ids, 1);
    assert_eq!(stats.bad_dates, 3, "{stats:?}");
    h.shutdown().await;
}

/// `POST /oauth/token` with client credentials, as an RFC 6749 client sends it.
async fn mc_token(base: &str, id: &str, secret: &str) -> Answer {
    let body = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        urlencode(id),
        urlencode(secret)
    );
    let resp = plain_client()
        .post(format!("{base}/oauth/token"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("the token endpoint answers");
    answer(resp).await
}

#[tokio::test]
async fn mimecast_api_2_bearer_tokens() {
    let (h, _) = start(SimConfig::default()).await;
    let env: HashMap<String, String> = h.env_mimecast2().into_iter().collect();
    let base = &h.mimecast_url;
    let bad = mc_token(base, &env["MIMECAST_CLIENT_ID"], "wrong").await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json()["error"], "invalid_client");
    let ok = mc_token(
        base,
        &env["MIMECAST_CLIENT_ID"],
        &env["MIMECAST_CLIENT_SECRET"],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let token = ok.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let bearer = |t: &str| vec![("Authorization".to_string(), format!("Bearer {t}"))];
    let a = mc_post(base, CHANNEL, &bearer(&token), channel_body()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.header("x-ratelimit-limit").is_some());
    let a = mc_post(base, CHANNEL, &bearer("not-issued"), channel_body()).await;
    assert_eq!(a.status, 401, "{}", a.text);
    h.shutdown().await;
}

#[tokio::test]
async fn mimecast_request_id_survives_an_injected_429_and_5xx() {
    // Item 9: the first two requests get an injected 429 and 503; a stock retry resends the
    // identical signed request (same date, same x-mc-req-id) and is accepted.
    let cfg = SimConfig {
        faults: FaultConfig {
            force_each_once: true,
            ..FaultConfig::default()
        },
        ..SimConfig::default()
    };
    let (h, env) = start(cfg).await;
    let same = McSigned::now().headers(&env, CHANNEL);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            mc_post(&h.mimecast_url, CHANNEL, &same, channel_body())
                .await
                .status,
        );
    }
    assert_eq!(statuses, [429, 503, 200]);
    let a = mc_post(&h.mimecast_url, CHANNEL, &same, channel_body()).await;
    assert_eq!(
        (a.status, a.mc_code().as_str()),
        (401, "err_xdk_request_id_reused")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn mimecast_spent_window_answers_429_with_remaining_zero() {
    let cfg = SimConfig {
        mimecast_rate_limit: 2,
        mimecast_rate_window: Duration::from_secs(60),
        ..SimConfig::default()
    };
    let (h, env) = start(cfg).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let a = mc_post(
            &h.mimecast_url,
            CHANNEL,
            &McSigned::now().headers(&env, CHANNEL),
            channel_body(),
        )
        .await;
        seen.push((
            a.status,
            a.number("x-ratelimit-limit"),
            a.number("x-ratelimit-remaining"),
        ));
        assert!(a.number("x-ratelimit-reset") <= 60_000);
    }
    assert_eq!(seen, [(200, 2, 1), (200, 2, 0), (429, 2, 0)]);
    h.shutdown().await;
}

#[tokio::test]
async fn mimecast_accepts_the_python_sample_str_dict_body() {
    // Item 10: the page's Python sample sends `data=str(payload)` (single quotes).
    let (h, env) = start(SimConfig::default()).await;
    let py = "{'data': [{'channelId': 'B8Y43U-GYVS-WHAU6M'}]}";
    let a = mc_post(
        &h.mimecast_url,
        CHANNEL,
        &McSigned::now().headers(&env, CHANNEL),
        py,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.json()["data"][0]["channelId"].is_string());
    h.shutdown().await;
}

const SIEM: &str = "/api/audit/get-siem-logs";

/// One get-siem-logs call as the page describes it: a file (`application/octet-stream`, its name
/// in `Content-Disposition`, the next token in `mc-siem-token`) or JSON.
async fn siem_call(
    base: &str,
    env: &HashMap<String, String>,
    token: Option<&str>,
) -> Result<(String, Vec<u8>, String), Value> {
    let mut item = json!({"type": "MTA", "fileFormat": "json", "compress": true});
    if let Some(t) = token {
        item["token"] = json!(t);
    }
    let mut rb = plain_client()
        .post(format!("{base}{SIEM}"))
        .header("Content-Type", "application/json")
        .body(json!({ "data": [item] }).to_string());
    for (k, v) in McSigned::now().headers(env, SIEM) {
        rb = rb.header(k, v);
    }
    let resp = rb.send().await.expect("mimecast answers");
    assert_eq!(resp.status(), 200);
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if header("content-type").as_deref() != Some("application/octet-stream") {
        return Err(resp.json().await.expect("JSON"));
    }
    let name = header("content-disposition")
        .and_then(|cd| {
            cd.split("filename=\"")
                .nth(1)
                .map(|n| n.trim_end_matches('"').to_string())
        })
        .expect("a file name in Content-Disposition");
    let next = header("mc-siem-token").expect("mc-siem-token");
    Ok((name, resp.bytes().await.expect("body").to_vec(), next))
}

#[tokio::test]
async fn mimecast_get_siem_logs_token_chain_from_the_page() {
    let (h, env) = start(SimConfig::default()).await;
    let base = &h.mimecast_url;
    let mut token: Option<String> = None;
    let mut names = Vec::new();
    let mut rounds = 0;
    while rounds < 2 {
        match siem_call(base, &env, token.as_deref()).await {
            Ok((name, zip, next)) => {
                assert!(name.ends_with(".zip"), "{name}");
                let mut a = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("a ZIP");
                let mut inner = String::new();
                std::io::Read::read_to_string(&mut a.by_index(0).expect("an entry"), &mut inner)
                    .expect("text");
                let doc: Value = serde_json::from_str(&inner).expect("the JSON log file");
                assert_eq!(doc["type"], "MTA");
                names.push(name);
                token = Some(next);
            }
            Err(body) => {
                assert_eq!(body["meta"]["isLastToken"], true, "{body}");
                assert_eq!(body["fail"], json!([]));
                rounds += 1;
                if rounds < 2 {
                    // The next scheduled run, 30 simulated minutes later, continues from the token.
                    h.mimecast.advance_clock(Duration::from_secs(30 * 60));
                }
            }
        }
    }
    let produced: Vec<String> = h
        .mimecast
        .siem_log_files()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, produced, "every file once, in order");
    assert_eq!(names.len(), 9);
    let bad = siem_call(base, &env, Some("not-a-token"))
        .await
        .expect_err("JSON");
    assert_eq!(
        bad["fail"][0]["errors"][0]["code"],
        "err_siem_token_invalid"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn mimecast_siem_batch_lists_gzip_files_fetched_without_credentials() {
    let (h, _) = start(SimConfig::default()).await;
    let env: HashMap<String, String> = h.env_mimecast2().into_iter().collect();
    let base = &h.mimecast_url;
    let ok = mc_token(
        base,
        &env["MIMECAST_CLIENT_ID"],
        &env["MIMECAST_CLIENT_SECRET"],
    )
    .await;
    let token = ok.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let day = h.mimecast.now().date_naive() - chrono::TimeDelta::days(1);
    let url =
        format!("{base}/siem/v1/batch/events/cg?type=receipt&dateRangeStartsAt={day}&pageSize=100");
    let list = answer(
        plain_client()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.text);
    let body = list.json();
    assert_eq!(body["isCaughtUp"], true);
    assert!(body["@nextPage"].is_string());
    let files = body["value"].as_array().expect("value").clone();
    assert!(!files.is_empty());
    for f in &files {
        let resp = plain_client()
            .get(f["url"].as_str().expect("url"))
            .send()
            .await
            .expect("answers");
        assert_eq!(resp.status(), 200);
        let gz = resp.bytes().await.expect("body");
        assert_eq!(f["size"], json!(gz.len()));
        // gzip magic, then a deflate stream.
        assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
    }
    let unsigned = answer(plain_client().get(&url).send().await.expect("answers")).await;
    assert_eq!(unsigned.status, 401);
    h.shutdown().await;
}

// ---------------------------------------------------------------- MailStore (Administration API)

/// RFC 2617 Basic credentials, built by hand.
fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// A client that trusts only the certificate the simulator printed (`MAILSTORE_CA_FILE`).
fn pinned_client(env: &HashMap<String, String>) -> reqwest::Client {
    let pem = std::fs::read(&env["MAILSTORE_CA_FILE"]).expect("the certificate file");
    let cert = reqwest::Certificate::from_pem(&pem).expect("a PEM certificate");
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .build()
        .expect("http client")
}

struct MailStore {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl MailStore {
    fn new(env: &HashMap<String, String>) -> MailStore {
        MailStore {
            http: pinned_client(env),
            base: env["MAILSTORE_BASE_URL"].clone(),
            auth: basic(&env["MAILSTORE_USERNAME"], &env["MAILSTORE_PASSWORD"]),
        }
    }

    /// POST `path` with a form body written by hand.
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("mailstore answers");
        answer(resp).await
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn mailstore_over_https_functions_metadata_and_long_running_process() {
    let (h, env) = start(SimConfig::default()).await;
    let ms = MailStore::new(&env);
    assert!(ms.base.starts_with("https://"));
    let a = ms.post("/api/invoke/GetServerInfo", &[]).await;
    assert_eq!(a.status, 200);
    assert!(a.text.starts_with('\u{feff}'), "the page: a UTF-8 BOM");
    assert_eq!(a.json()["statusCode"], "succeeded");
    assert!(a.json()["result"]["version"].is_string());

    // Item 8: get-metadata names each function with its arguments.
    let meta = ms.post("/api/get-metadata", &[]).await.json();
    let args_of = |name: &str| -> Vec<String> {
        let f = meta
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["name"] == name))
            .unwrap_or_else(|| panic!("{name} not in get-metadata: {meta}"));
        f["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a["name"].as_str().expect("arg name").to_string())
            .collect()
    };
    assert!(args_of("GetServerInfo").is_empty());
    assert_eq!(args_of("GetStores"), ["includeSize"]);
    assert_eq!(args_of("VerifyStore"), ["id", "includeIndexes"]);
    assert_eq!(args_of("VerifyStores"), ["includeIndexes"]);
    assert!(args_of("GetUsers").is_empty());
    assert_eq!(args_of("GetUserInfo"), ["userName"]);
    assert_eq!(args_of("GetFolderStatistics"), ["timeoutMSec"]);
    assert_eq!(
        args_of("GetWorkerResults"),
        [
            "fromIncluding",
            "toExcluding",
            "timeZoneID",
            "profileID",
            "userName"
        ]
    );

    // ... and each answers plausibly.
    let users = ms.post("/api/invoke/GetUsers", &[]).await.json();
    let names: Vec<&str> = users["result"]
        .as_array()
        .expect("a user list")
        .iter()
        .filter_map(|u| u["userName"].as_str())
        .collect();
    assert!(names.contains(&"admin") && names.len() >= 2, "{users}");
    let info = ms
        .post("/api/invoke/GetUserInfo", &[("userName", names[1])])
        .await
        .json();
    assert_eq!(info["statusCode"], "succeeded", "{info}");
    assert!(info["result"]["emailAddresses"][0]
        .as_str()
        .is_some_and(|a| a.contains('@')));
    let nobody = ms
        .post("/api/invoke/GetUserInfo", &[("userName", "nobody")])
        .await
        .json();
    assert!(nobody["error"]["message"].is_string(), "{nobody}");
    let stats = ms.post("/api/invoke/GetFolderStatistics", &[]).await.json();
    assert!(stats["result"][0]["count"].as_i64().is_some(), "{stats}");
    let runs = ms
        .post(
            "/api/invoke/GetWorkerResults",
            &[
                ("fromIncluding", "2026-01-05T00:00:00"),
                ("toExcluding", "2026-01-07T00:00:00"),
                ("timeZoneID", "$Local"),
            ],
        )
        .await
        .json();
    assert_eq!(runs["statusCode"], "succeeded", "{runs}");
    assert!(runs["result"].as_array().is_some_and(|r| !r.is_empty()));

    let stores = ms
        .post("/api/invoke/GetStores", &[("includeSize", "true")])
        .await
        .json();
    assert!(stores["result"][0]["id"].is_number(), "{stores}");

    // The page's long-running process: VerifyStore, then get-status until not running.
    let first = ms
        .post("/api/invoke/VerifyStore", &[("id", "1")])
        .await
        .json();
    assert_eq!(first["statusCode"], "running", "{first}");
    let token = first["token"].as_str().expect("a token").to_string();
    let mut version = first["statusVersion"].as_i64().expect("a version");
    let mut last = first;
    for _ in 0..100 {
        if last["statusCode"] != "running" {
            break;
        }
        let v = version.to_string();
        last = ms
            .post(
                "/api/get-status",
                &[
                    ("token", &token),
                    ("lastKnownStatusVersion", &v),
                    ("millisecondsTimeout", "5000"),
                ],
            )
            .await
            .json();
        version = last["statusVersion"].as_i64().expect("a version");
    }
    assert_eq!(last["statusCode"], "succeeded", "{last}");
    assert_eq!(last["token"], Value::Null, "the API page's final status");
    assert_eq!(h.stats.snapshot().wrong_status_versions, 0);
    h.shutdown().await;
}

#[tokio::test]
async fn mailstore_rejections_and_wrong_status_version() {
    let cfg = SimConfig {
        mailstore_steps: 4,
        mailstore_step_interval: Duration::from_millis(400),
        ..SimConfig::default()
    };
    let (h, env) = start(cfg).await;
    let ms = MailStore::new(&env);
    for auth in [
        basic(&env["MAILSTORE_USERNAME"], "wrong-password"),
        basic("someone", &env["MAILSTORE_PASSWORD"]),
        "Bearer x".to_string(),
    ] {
        let resp = ms
            .http
            .post(format!("{}/api/invoke/GetServerInfo", ms.base))
            .header("Authorization", auth)
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status(), 401);
        assert!(resp.headers().contains_key("www-authenticate"));
    }
    let resp = ms
        .http
        .post(format!("{}/api/invoke/GetServerInfo", ms.base))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 401, "no credentials");

    let unknown = ms.post("/api/invoke/FormatAllDisks", &[]).await;
    assert_eq!(unknown.status, 200, "function errors are in the JSON");
    let body = unknown.json();
    assert_eq!(body["statusCode"], "failed", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("FormatAllDisks")));

    // lastKnownStatusVersion ahead of the server: the server waits millisecondsTimeout for
    // a newer status, then repeats the last one; the version was not the one sent (counted).
    let first = ms
        .post("/api/invoke/VerifyStore", &[("id", "2")])
        .await
        .json();
    let token = first["token"].as_str().expect("a token").to_string();
    let ahead = (first["statusVersion"].as_i64().expect("version") + 1000).to_string();
    let t = Instant::now();
    let again = ms
        .post(
            "/api/get-status",
            &[
                ("token", &token),
                ("lastKnownStatusVersion", &ahead),
                ("millisecondsTimeout", "250"),
            ],
        )
        .await
        .json();
    assert!(t.elapsed() >= Duration::from_millis(200), "it long-polled");
    assert_eq!(again["token"], token.as_str());
    assert_eq!(h.stats.snapshot().wrong_status_versions, 1);
    // An old version is answered at once with the current status.
    let t = Instant::now();
    let old = ms
        .post(
            "/api/get-status",
            &[
                ("token", &token),
                ("lastKnownStatusVersion", "0"),
                ("millisecondsTimeout", "5000"),
            ],
        )
        .await
        .json();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(old["statusVersion"].as_i64() > Some(0), "{old}");
    assert_eq!(h.stats.snapshot().wrong_status_versions, 2);
    // cancel-async ends the process as cancelled.
    let c = ms
        .post("/api/cancel-async", &[("token", &token)])
        .await
        .json();
    assert!(c["error"].is_null(), "{c}");
    let end = ms
        .post(
            "/api/get-status",
            &[
                ("token", &token),
                ("lastKnownStatusVersion", "0"),
                ("millisecondsTimeout", "10"),
            ],
        )
        .await
        .json();
    assert_eq!(end["statusCode"], "cancelled", "{end}");
    assert_eq!(h.stats.snapshot().mailstore_cancelled, 1);
    // An unknown token fails.
    let bad = ms
        .post(
            "/api/get-status",
            &[
                ("token", "0000"),
                ("lastKnownStatusVersion", "0"),
                ("millisecondsTimeout", "10"),
            ],
        )
        .await
        .json();
    assert!(bad["error"]["message"].is_string(), "{bad}");
    h.shutdown().await;
}

// ---------------------------------------------------------------- Google Email Audit

const AUDIT_SCOPE: &str = "https://apps-apis.google.com/a/feeds/compliance/audit/";
const GOOGLE_TOKEN: &str = "https://oauth2.googleapis.com/token";

/// A JWT-bearer assertion signed RS256 with the key file's private key.
fn assertion(key_file: &Value, aud: &str, sub: &str) -> String {
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    let pem = key_file["private_key"].as_str().expect("private_key");
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).expect("a PKCS#8 key");
    let now = chrono::Utc::now().timestamp();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": key_file["private_key_id"]});
    let claims = json!({"iss": key_file["client_email"], "sub": sub, "aud": aud,
        "scope": AUDIT_SCOPE, "iat": now, "exp": now + 3600});
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key).sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

async fn token_request(url: &str, assertion: &str) -> Answer {
    let body = format!(
        "grant_type={}&assertion={assertion}",
        urlencode("urn:ietf:params:oauth:grant-type:jwt-bearer")
    );
    let resp = plain_client()
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("token endpoint answers");
    answer(resp).await
}

#[tokio::test]
async fn google_token_endpoint_takes_the_standard_audience_and_the_key_files() {
    // Item 7: Google's auth library signs for https://oauth2.googleapis.com/token whatever the
    // key file's token_uri says; others sign for token_uri.
    let (h, env) = start(SimConfig::default()).await;
    let key_file: Value = serde_json::from_slice(
        &std::fs::read(h.google.service_account_key_file()).expect("the key file"),
    )
    .expect("JSON");
    let token_uri = key_file["token_uri"].as_str().expect("token_uri");
    assert_eq!(token_uri, env["GOOGLE_TOKEN_URL"]);
    let admin = &env["GOOGLE_ADMIN_EMAIL"];
    let domain = admin.split('@').nth(1).expect("a domain");
    for aud in [GOOGLE_TOKEN, token_uri] {
        let a = token_request(token_uri, &assertion(&key_file, aud, admin)).await;
        assert_eq!(a.status, 200, "aud {aud}: {}", a.text);
        let token = a.json()["access_token"]
            .as_str()
            .expect("a token")
            .to_string();
        let feed = plain_client()
            .get(format!(
                "{}/a/feeds/compliance/audit/mail/export/{domain}",
                env["GOOGLE_AUDIT_BASE_URL"]
            ))
            .header("Authorization", format!("Bearer {token}"))
            .send()
            .await
            .expect("the list feed answers");
        assert_eq!(feed.status(), 200);
    }
    let a = token_request(
        token_uri,
        &assertion(&key_file, "https://example.com/token", admin),
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"], "invalid_grant");
    assert!(a.text.contains("audience"), "{}", a.text);
    h.shutdown().await;
}

/// `apps:property` values of an Atom document, read by hand (single or double quotes).
fn property(xml: &str, name: &str) -> Option<String> {
    xml.split("<apps:property").skip(1).find_map(|tag| {
        let tag = tag.split("/>").next()?;
        let attr = |a: &str| {
            ['\'', '"'].iter().find_map(|q| {
                let start = tag.find(&format!("{a}={q}"))? + a.len() + 2;
                let len = tag[start..].find(*q)?;
                Some(tag[start..start + len].to_string())
            })
        };
        (attr("name")? == name).then(|| attr("value").map(|v| v.replace("&amp;", "&")))?
    })
}

fn atom_entry(props: &[(&str, &str)]) -> String {
    let props: String = props
        .iter()
        .map(|(n, v)| format!("<apps:property name='{n}' value='{v}'/>"))
        .collect();
    format!(
        "<atom:entry xmlns:atom='http://www.w3.org/2005/Atom' \
         xmlns:apps='http://schemas.google.com/apps/2006'>{props}</atom:entry>"
    )
}

struct Google {
    base: String,
    bearer: String,
    domain: String,
}

impl Google {
    async fn send(&self, rb: reqwest::RequestBuilder) -> Answer {
        let resp = rb
            .header("Authorization", &self.bearer)
            .send()
            .await
            .expect("google answers");
        answer(resp).await
    }
    fn url(&self, path: &str) -> String {
        format!("{}/a/feeds/compliance/audit{path}", self.base)
    }
    async fn post_atom(&self, path: &str, body: String) -> Answer {
        let rb = plain_client()
            .post(self.url(path))
            .header("Content-Type", "application/atom+xml")
            .body(body);
        self.send(rb).await
    }
}

#[tokio::test]
async fn google_export_flow_list_and_ranged_download() {
    let cfg = SimConfig {
        google_pending_polls: 1,
        google_file_size: 4096,
        ..SimConfig::default()
    };
    let (h, env) = start(cfg).await;
    let admin = &env["GOOGLE_ADMIN_EMAIL"];
    let g = Google {
        base: env["GOOGLE_AUDIT_BASE_URL"].clone(),
        bearer: format!("Bearer {}", env["GOOGLE_ACCESS_TOKEN"]),
        domain: admin.split('@').nth(1).expect("a domain").to_string(),
    };
    let armored = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/gpg/protected.pub.asc"),
    )
    .expect("the fixture key");
    let key = g
        .post_atom(
            &format!("/publickey/{}", g.domain),
            atom_entry(&[("publicKey", &STANDARD.encode(armored))]),
        )
        .await;
    assert_eq!(key.status, 201, "{}", key.text);
    let created = g
        .post_atom(
            &format!("/mail/export/{}/jane", g.domain),
            atom_entry(&[
                ("beginDate", "2026-01-01 00:00"),
                ("endDate", "2026-01-31 00:00"),
                ("includeDeleted", "false"),
                ("packageContent", "FULL_MESSAGE"),
            ]),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(
        property(&created.text, "status").as_deref(),
        Some("PENDING")
    );
    let id = property(&created.text, "requestId").expect("a requestId");
    let status_url = g.url(&format!("/mail/export/{}/jane/{id}", g.domain));
    let mut done = None;
    for _ in 0..10 {
        let a = g.send(plain_client().get(&status_url)).await;
        assert!((200..300).contains(&a.status), "{}", a.text);
        if property(&a.text, "status").as_deref() == Some("COMPLETED") {
            done = Some(a.text);
            break;
        }
    }
    let done = done.expect("COMPLETED after the pending polls");
    let file = property(&done, "fileUrl0").expect("fileUrl0");

    let full = g.send(plain_client().get(&file)).await;
    assert_eq!(full.status, 200);
    let etag = full.header("etag").expect("an ETag").to_string();
    let len = full.number("content-length");
    let ranged = |if_range: &str| {
        let mut rb = plain_client().get(&file).header("Range", "bytes=10-19");
        if !if_range.is_empty() {
            rb = rb.header("If-Range", if_range);
        }
        rb
    };
    let part = g.send(ranged("")).await;
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 10-19/{len}").as_str())
    );
    let part = g.send(ranged(&etag)).await;
    assert_eq!(part.status, 206, "If-Range with the current ETag");
    // RFC 9110 13.1.5: a validator that does not match sends the whole file.
    for wrong in ["\"another-tag\"", "Tue, 24 Nov 2015 12:50:11 GMT"] {
        let whole = g.send(ranged(wrong)).await;
        assert_eq!(whole.status, 200, "If-Range {wrong}");
        assert_eq!(whole.number("content-length"), len);
        assert!(whole.header("content-range").is_none());
    }

    let feed = g
        .send(plain_client().get(g.url(&format!("/mail/export/{}", g.domain))))
        .await;
    assert_eq!(feed.status, 200);
    assert!(feed.text.contains(&id), "{}", feed.text);

    // Delete until DELETED (MARKED_DELETE first, as the page warns); the files are gone.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let d = g.send(plain_client().delete(&status_url)).await;
        assert!((200..300).contains(&d.status), "{}", d.text);
        let polled = g.send(plain_client().get(&status_url)).await;
        let st = property(&polled.text, "status").expect("a status");
        statuses.push(st.clone());
        if st == "DELETED" {
            break;
        }
    }
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("DELETED"),
        "{statuses:?}"
    );
    assert!(statuses
        .iter()
        .all(|s| s == "MARKED_DELETE" || s == "DELETED"));
    let gone = g.send(plain_client().get(&file)).await;
    assert_eq!(gone.status, 404);
    h.shutdown().await;
}

#[tokio::test]
async fn google_rejects_missing_or_invalid_bearer_and_other_domains() {
    let (h, env) = start(SimConfig::default()).await;
    let base = &env["GOOGLE_AUDIT_BASE_URL"];
    let domain = env["GOOGLE_ADMIN_EMAIL"]
        .split('@')
        .nth(1)
        .expect("a domain")
        .to_string();
    let list = format!("{base}/a/feeds/compliance/audit/mail/export/{domain}");
    let none = answer(plain_client().get(&list).send().await.expect("answer")).await;
    assert_eq!(none.status, 401);
    assert!(none.header("www-authenticate").is_some());
    let bad = plain_client()
        .get(&list)
        .header("Authorization", "Bearer ya29.not-a-token")
        .send()
        .await
        .expect("answer");
    assert_eq!(bad.status(), 401);
    let g = Google {
        base: base.clone(),
        bearer: format!("Bearer {}", env["GOOGLE_ACCESS_TOKEN"]),
        domain: "not-managed.example.org".into(),
    };
    let other = g
        .post_atom(
            &format!("/mail/export/{}/jane", g.domain),
            atom_entry(&[("packageContent", "FULL_MESSAGE")]),
        )
        .await;
    assert_eq!(other.status, 403, "{}", other.text);
    assert_eq!(h.stats.snapshot().google_exports_created, 0);
    let other = g
        .send(plain_client().get(g.url(&format!("/mail/export/{}", g.domain))))
        .await;
    assert_eq!(other.status, 403, "{}", other.text);
    h.shutdown().await;
}
