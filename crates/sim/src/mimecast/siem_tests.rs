//! Tests of the simulated Mimecast SIEM endpoints over real HTTP: the API 1.0 token chain and
//! the API 2.0 batch list, its paging and its files (signatures and gzip decoded here).
use std::io::Read;
use std::time::Duration;

use chrono::DateTime;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::tests::{start, Harness, Tweak};
use super::SiemBatchType;
use crate::SimConfig;

const SIEM: &str = "/api/audit/get-siem-logs";
const BATCH: &str = "/siem/v1/batch/events/cg";
const DAY: Duration = Duration::from_secs(86_400);

fn hex(bytes: &[u8]) -> String {
    super::siem_data::sha256_hex(bytes)
}

/// One get-siem-logs answer.
enum Answer {
    /// A file: its Content-Disposition name, the body, and `mc-siem-token`.
    File(String, Vec<u8>, String),
    /// JSON: the body and `mc-siem-token` when present.
    Json(Value, Option<String>),
}

async fn siem(h: &Harness, item: Value) -> Answer {
    let body = json!({ "data": [item] }).to_string();
    let resp = h.raw_v1(SIEM, &body, Tweak::default()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_string())
    };
    let token = header("mc-siem-token");
    if header("content-type").as_deref() == Some("application/octet-stream") {
        let cd = header("content-disposition").expect("Content-Disposition");
        let name = cd
            .strip_prefix("attachment; filename=\"")
            .and_then(|n| n.strip_suffix('"'))
            .expect("attachment; filename=\"…\"")
            .to_string();
        let bytes = resp.bytes().await.expect("body").to_vec();
        return Answer::File(name, bytes, token.expect("mc-siem-token on a file"));
    }
    Answer::Json(resp.json().await.expect("JSON body"), token)
}

fn json_zip(token: Option<&str>) -> Value {
    let mut item = json!({ "type": "MTA", "fileFormat": "json", "compress": true });
    if let Some(t) = token {
        item["token"] = json!(t);
    }
    item
}

/// The single entry of a ZIP: its name and bytes.
fn unzip_one(zip: &[u8]) -> (String, Vec<u8>) {
    let mut a = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("a ZIP");
    assert_eq!(a.len(), 1);
    let mut f = a.by_index(0).expect("entry");
    let mut out = Vec::new();
    f.read_to_end(&mut out).expect("inflate");
    (f.name().expect("entry name").to_string(), out)
}

/// Follows the token chain from `token` to `isLastToken`: (name, content sha256) per file and
/// the last token.
async fn drain(h: &Harness, mut token: Option<String>) -> (Vec<(String, String)>, Option<String>) {
    let mut got = Vec::new();
    for _ in 0..1000 {
        match siem(h, json_zip(token.as_deref())).await {
            Answer::File(name, zip, next) => {
                let (inner, content) = unzip_one(&zip);
                assert_eq!(format!("{inner}.zip"), name);
                let doc: Value = serde_json::from_slice(&content).expect("JSON log file");
                assert_eq!(doc["type"], "MTA");
                assert!(!doc["data"].as_array().expect("data").is_empty());
                got.push((name, hex(&content)));
                token = Some(next);
            }
            Answer::Json(body, echoed) => {
                assert_eq!(
                    body,
                    json!({"meta":{"isLastToken":true,"status":200},"data":[],"fail":[]})
                );
                assert_eq!(echoed, token);
                return (got, token);
            }
        }
    }
    panic!("the token chain did not end");
}

fn produced(h: &Harness) -> Vec<(String, String)> {
    h.sim
        .siem_log_files()
        .into_iter()
        .filter(|f| f.kept)
        .map(|f| (f.name, f.content_sha256))
        .collect()
}

#[tokio::test]
async fn token_chain_returns_every_file_once_then_is_last_token() {
    let h = start(SimConfig::default()).await;
    let (got, last) = drain(&h, None).await;
    // One hour of history at one slot per 30 minutes, three stages per slot.
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(got, produced(&h));
    assert!(got[0].0.starts_with("receipt_"), "{}", got[0].0);
    assert!(got[1].0.starts_with("process_"), "{}", got[1].0);
    assert!(got[2].0.starts_with("delivery_"), "{}", got[2].0);
    // Asking again with the last token changes nothing: still caught up.
    let (again, same) = drain(&h, last.clone()).await;
    assert!(again.is_empty());
    assert_eq!(same, last);
}

#[tokio::test]
async fn saved_token_continues_with_files_that_appear_later() {
    let h = start(SimConfig::default()).await;
    let (first, saved) = drain(&h, None).await;
    h.sim.advance_clock(Duration::from_secs(15 * 60));
    let (maybe, saved) = drain(&h, saved).await;
    h.sim.advance_clock(Duration::from_secs(15 * 60));
    let (second, saved2) = drain(&h, saved).await;
    h.sim.advance_clock(Duration::from_secs(60 * 60));
    let (third, _) = drain(&h, saved2).await;
    // One new slot (three files) within these 30 minutes, whichever run it fell in.
    assert_eq!(maybe.len() + second.len(), 3, "{maybe:?} {second:?}");
    assert_eq!(third.len(), 6);
    let mut all = first;
    all.extend(maybe);
    all.extend(second);
    all.extend(third);
    assert_eq!(all, produced(&h));
    assert_eq!(all.len(), 15);
}

#[tokio::test]
async fn a_token_past_retention_is_rejected_and_no_token_starts_at_the_oldest_kept() {
    let h = start(SimConfig::default()).await;
    let Answer::File(_, _, first_token) = siem(&h, json_zip(None)).await else {
        panic!("a file");
    };
    h.sim.advance_clock(8 * DAY);
    let Answer::Json(body, _) = siem(&h, json_zip(Some(&first_token))).await else {
        panic!("JSON");
    };
    assert_eq!(
        body["fail"][0]["errors"][0]["code"],
        "err_siem_token_expired"
    );
    assert_eq!(body["fail"][0]["key"]["token"], json!(first_token));
    let files = h.sim.siem_log_files();
    let oldest = files.iter().find(|f| f.kept).expect("a kept file");
    assert!(!files[0].kept);
    let Answer::File(name, _, _) = siem(&h, json_zip(None)).await else {
        panic!("a file");
    };
    assert_eq!(name, oldest.name);
}

#[tokio::test]
async fn bad_tokens_and_fields_fail_with_the_field_named() {
    let h = start(SimConfig::default()).await;
    let forged = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        "mta|0.0123",
    );
    for (item, code, field) in [
        (
            json!({"token": "garbage"}),
            "err_siem_token_invalid",
            "token",
        ),
        (json!({"token": forged}), "err_siem_token_invalid", "token"),
        (
            json!({"type": "TTP"}),
            "err_validation_invalid_value",
            "type",
        ),
        (
            json!({"fileFormat": "xml"}),
            "err_validation_invalid_value",
            "fileFormat",
        ),
        (
            json!({"compress": "yes"}),
            "err_validation_invalid_type",
            "compress",
        ),
    ] {
        let Answer::Json(body, _) = siem(&h, item.clone()).await else {
            panic!("JSON for {item}");
        };
        let e = &body["fail"][0]["errors"][0];
        assert_eq!(e["code"], code, "{item}: {body}");
        assert_eq!(e["field"], field, "{item}: {body}");
    }
}

#[tokio::test]
async fn key_value_is_the_default_format_and_compress_is_off_by_default() {
    let h = start(SimConfig::default()).await;
    let Answer::File(name, body, _) = siem(&h, json!({})).await else {
        panic!("a file");
    };
    assert!(
        name.starts_with("receipt_") && name.ends_with(".log"),
        "{name}"
    );
    let text = String::from_utf8(body).expect("text");
    let first = text.lines().next().expect("a line");
    assert!(first.starts_with("datetime="), "{first}");
    assert!(first.contains("|acc=C0A0|"), "{first}");
}

#[tokio::test]
async fn get_siem_logs_needs_a_valid_signature() {
    let h = start(SimConfig::default()).await;
    let tweak = Tweak {
        corrupt_signature: true,
        ..Tweak::default()
    };
    let resp = h.raw_v1(SIEM, r#"{"data":[{}]}"#, tweak).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(
        body["fail"][0]["errors"][0]["code"],
        "err_xdk_invalid_signature"
    );
}

async fn list(h: &Harness, token: Option<&str>, query: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut req = h.http.get(format!("{}{BATCH}", h.base)).query(query);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    (status, resp.json().await.expect("JSON body"))
}

fn first_day(h: &Harness, kind: SiemBatchType) -> String {
    let files = h.sim.siem_batch_files(kind);
    files[0].name.split('/').nth(1).expect("day").to_string()
}

/// Downloads and decodes a listed file: the NDJSON bytes.
async fn download(h: &Harness, entry: &Value) -> Vec<u8> {
    let url = entry["url"].as_str().expect("url");
    let resp = h.http.get(url).send().await.expect("download");
    assert_eq!(resp.status(), StatusCode::OK, "{url}");
    let gz = resp.bytes().await.expect("body");
    assert_eq!(entry["size"], json!(gz.len()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

#[tokio::test]
async fn batch_list_pages_with_next_page_and_files_decode_to_the_events() {
    let h = start(SimConfig::default()).await;
    let token = h.good_token().await;
    let kind = SiemBatchType::UrlProtect;
    let day = first_day(&h, kind);
    let mut query = vec![
        ("type", "url protect".to_string()),
        ("dateRangeStartsAt", day),
        ("pageSize", "3".to_string()),
    ];
    let mut got = Vec::new();
    let mut next = String::new();
    for _ in 0..100 {
        let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = list(&h, Some(&token), &q).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page = body["value"].as_array().expect("value");
        assert!(page.len() <= 3);
        for entry in page {
            let expiry = entry["expiry"].as_str().expect("expiry");
            assert!(DateTime::parse_from_rfc3339(expiry).is_ok(), "{expiry}");
            let ndjson = download(&h, entry).await;
            for line in String::from_utf8(ndjson.clone()).expect("text").lines() {
                let e: Value = serde_json::from_str(line).expect("one JSON event a line");
                assert_eq!(e["type"], "url protect");
                assert!(e["timestamp"].is_i64());
            }
            got.push(hex(&ndjson));
        }
        next = body["@nextPage"].as_str().expect("@nextPage").to_string();
        query.retain(|(k, _)| *k == "type");
        query.push(("nextPage", next.clone()));
        if body["isCaughtUp"] == json!(true) {
            break;
        }
    }
    let want: Vec<String> = h
        .sim
        .siem_batch_files(kind)
        .into_iter()
        .map(|f| f.content_sha256)
        .collect();
    assert!(want.len() >= 4, "one hour of 15-minute batches: {want:?}");
    assert_eq!(got, want);
    // The saved @nextPage continues with files that appear later, and only those.
    h.sim.advance_clock(Duration::from_secs(15 * 60));
    let q = [("type", "url protect"), ("nextPage", next.as_str())];
    let (status, body) = list(&h, Some(&token), &q).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["value"].as_array().expect("value").len(), 1, "{body}");
    assert_eq!(body["isCaughtUp"], true);
    let new = download(&h, &body["value"][0]).await;
    let last = h.sim.siem_batch_files(kind).pop().expect("a file");
    assert_eq!(hex(&new), last.content_sha256);
}

#[tokio::test]
async fn batch_list_validates_its_query() {
    let h = start(SimConfig::default()).await;
    let token = h.good_token().await;
    let today = h.sim.now().date_naive();
    let old = (today - chrono::TimeDelta::days(8)).to_string();
    let before = (today - chrono::TimeDelta::days(1)).to_string();
    let today = today.to_string();
    let (_, receipt) = list(&h, Some(&token), &[("type", "receipt")]).await;
    let receipt_next = receipt["@nextPage"]
        .as_str()
        .expect("@nextPage")
        .to_string();
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("type", "mta")],
        vec![("type", "receipt"), ("type", "spam")],
        vec![("type", "receipt"), ("pageSize", "0")],
        vec![("type", "receipt"), ("pageSize", "101")],
        vec![("type", "receipt"), ("dateRangeStartsAt", "01/12/2026")],
        vec![("type", "receipt"), ("dateRangeStartsAt", &old)],
        vec![
            ("type", "receipt"),
            ("dateRangeStartsAt", &today),
            ("dateRangeEndsAt", &before),
        ],
        vec![("type", "receipt"), ("nextPage", "bm90LWEtdG9rZW4")],
        vec![("type", "spam"), ("nextPage", &receipt_next)],
    ];
    for q in cases {
        let (status, body) = list(&h, Some(&token), &q).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q:?}: {body}");
        assert_eq!(body["fail"][0]["code"], "err_validation_failed", "{q:?}");
        assert!(body["fail"][0]["message"].is_string());
    }
}

#[tokio::test]
async fn batch_list_needs_a_live_bearer_token() {
    let h = start(SimConfig::default()).await;
    let q = [("type", "receipt")];
    let (status, body) = list(&h, None, &q).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["fail"][0]["code"], "err_xdk_missing_authorization");
    let (status, body) = list(&h, Some("made-up"), &q).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["fail"][0]["code"], "err_xdk_invalid_token");
    let resp = h
        .http
        .get(format!("{}{BATCH}?type=receipt", h.base))
        .header("Authorization", "MC sim-access-key:c2ln")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let token = h.good_token().await;
    assert_eq!(list(&h, Some(&token), &q).await.0, StatusCode::OK);
    h.sim.expire_tokens();
    let (status, body) = list(&h, Some(&token), &q).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["fail"][0]["code"], "err_xdk_token_expired");
}

#[tokio::test]
async fn file_urls_refuse_credentials_tampering_and_age() {
    let h = start(SimConfig::default()).await;
    let token = h.good_token().await;
    let kind = SiemBatchType::Receipt;
    let day = first_day(&h, kind);
    let q = [("type", "receipt"), ("dateRangeStartsAt", day.as_str())];
    let (_, body) = list(&h, Some(&token), &q).await;
    let url = body["value"][0]["url"].as_str().expect("url").to_string();
    let resp = h
        .http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.expect("text").contains("InvalidArgument"));
    let tampered = url.replace("/000000.json.gz", "/000001.json.gz");
    let resp = h.http.get(&tampered).send().await.expect("sent");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp
        .text()
        .await
        .expect("text")
        .contains("SignatureDoesNotMatch"));
    h.sim.advance_clock(Duration::from_secs(2 * 3600));
    let resp = h.http.get(&url).send().await.expect("sent");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp
        .text()
        .await
        .expect("text")
        .contains("Request has expired"));
}

#[tokio::test]
async fn a_next_page_past_retention_is_rejected() {
    let h = start(SimConfig::default()).await;
    let token = h.good_token().await;
    let day = first_day(&h, SiemBatchType::Spam);
    let q = [
        ("type", "spam"),
        ("dateRangeStartsAt", day.as_str()),
        ("pageSize", "1"),
    ];
    let (_, body) = list(&h, Some(&token), &q).await;
    let next = body["@nextPage"].as_str().expect("@nextPage").to_string();
    h.sim.advance_clock(8 * DAY);
    let token = h.good_token().await;
    let (status, body) = list(&h, Some(&token), &[("type", "spam"), ("nextPage", &next)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["fail"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("retention")),
        "{body}"
    );
    let kept = h.sim.siem_batch_files(SiemBatchType::Spam);
    assert!(kept.iter().any(|f| !f.kept) && kept.iter().any(|f| f.kept));
}
