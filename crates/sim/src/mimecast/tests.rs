//! Tests of the simulated Mimecast over real HTTP (signatures computed here from the page).
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::MimecastSim;
use crate::{FaultConfig, Faults, SimConfig, Stats};

pub(super) struct Harness {
    pub(super) base: String,
    pub(super) sim: Arc<MimecastSim>,
    stats: Arc<Stats>,
    cfg: SimConfig,
    pub(super) http: reqwest::Client,
}

/// Changes to an otherwise correct API 1.0 request.
#[derive(Default)]
pub(super) struct Tweak {
    pub(super) date: Option<String>,
    pub(super) req_id: Option<String>,
    pub(super) access_key: Option<String>,
    pub(super) app_id: Option<String>,
    pub(super) corrupt_signature: bool,
}

/// `Tue, 24 Nov 2015 12:50:11 UTC`, as the Python sample builds it.
fn mc_date(t: DateTime<Utc>) -> String {
    format!("{} UTC", t.format("%a, %d %b %Y %H:%M:%S"))
}

/// The page's recipe: base64(HMAC-SHA1(base64decode(secret), "date:reqid:uri:appkey")).
fn signature(secret_b64: &str, date: &str, req_id: &str, uri: &str, app_key: &str) -> String {
    let key = STANDARD.decode(secret_b64).expect("secret key is base64");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&key).expect("hmac key");
    mac.update([date, req_id, uri, app_key].join(":").as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

pub(super) async fn start(cfg: SimConfig) -> Harness {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stats = Arc::new(Stats::default());
    let faults = Arc::new(Faults::new(cfg.faults.clone(), stats.clone()));
    let sim = MimecastSim::new(&cfg, faults);
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

impl Harness {
    fn count(&self, f: impl Fn(&Stats) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.stats).load(Ordering::Relaxed)
    }

    pub(super) async fn raw_v1(&self, path: &str, body: &str, tweak: Tweak) -> reqwest::Response {
        let c = &self.cfg.credentials;
        let date = tweak.date.unwrap_or_else(|| mc_date(Utc::now()));
        let req_id = tweak
            .req_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut sig = signature(
            &c.mimecast_secret_key,
            &date,
            &req_id,
            path,
            &c.mimecast_app_key,
        );
        if tweak.corrupt_signature {
            sig = signature(
                &c.mimecast_secret_key,
                &date,
                &req_id,
                "/api/some/other-path",
                &c.mimecast_app_key,
            );
        }
        let key = tweak
            .access_key
            .unwrap_or_else(|| c.mimecast_access_key.clone());
        self.http
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("MC {key}:{sig}"))
            .header("x-mc-date", date)
            .header("x-mc-req-id", req_id)
            .header(
                "x-mc-app-id",
                tweak.app_id.unwrap_or_else(|| c.mimecast_app_id.clone()),
            )
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request sent")
    }

    async fn v1(&self, path: &str, body: Value, tweak: Tweak) -> (StatusCode, Value) {
        let resp = self.raw_v1(path, &body.to_string(), tweak).await;
        let status = resp.status();
        (status, resp.json().await.expect("JSON body"))
    }

    async fn token(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}/oauth/token", self.base))
            .form(form)
            .send()
            .await
            .expect("token request sent");
        let status = resp.status();
        (status, resp.json().await.expect("JSON body"))
    }

    pub(super) async fn good_token(&self) -> String {
        let c = &self.cfg.credentials;
        let (status, body) = self
            .token(&[
                ("grant_type", "client_credentials"),
                ("client_id", &c.mimecast_client_id),
                ("client_secret", &c.mimecast_client_secret),
            ])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    async fn bearer(&self, token: &str, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }
}

fn first_error_code(body: &Value) -> &str {
    body["fail"][0]["errors"][0]["code"].as_str().unwrap_or("")
}

const CHANNEL: &str = "/api/ess/get-latest-channel-token";
const FIND: &str = "/api/gateway/find-processing-messages";
const AUDIT: &str = "/api/audit/get-audit-events";

fn channel_body(id: &str) -> Value {
    json!({ "data": [{ "channelId": id }] })
}

#[tokio::test]
async fn good_signature_is_accepted() {
    let h = start(SimConfig::default()).await;
    let (status, body) = h
        .v1(
            CHANNEL,
            channel_body("B8Y43U-GYVS-WHAU6M"),
            Tweak::default(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["meta"]["status"], 200);
    assert_eq!(body["fail"], json!([]));
    let token = body["data"][0]["channelId"]
        .as_str()
        .expect("channel token");
    assert_eq!(token.len(), 43);

    // Same channel, new request: same token. Mimecast's C# sample sends "GMT": accepted too.
    let gmt = Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let (status, again) = h
        .v1(
            CHANNEL,
            channel_body("B8Y43U-GYVS-WHAU6M"),
            Tweak {
                date: Some(gmt),
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["data"][0]["channelId"], token);
    let (_, other) = h
        .v1(CHANNEL, channel_body("OTHER-CHANNEL"), Tweak::default())
        .await;
    assert_ne!(other["data"][0]["channelId"], token);
    assert_eq!(h.count(|s| &s.unauthenticated), 0);
    assert_eq!(h.count(|s| &s.requests), 3);
}

#[tokio::test]
async fn bad_signature_is_rejected_and_counted() {
    let h = start(SimConfig::default()).await;
    let (status, body) = h
        .v1(
            CHANNEL,
            channel_body("X"),
            Tweak {
                corrupt_signature: true,
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["meta"]["status"], 401);
    assert_eq!(body["data"], json!([]));
    assert_eq!(first_error_code(&body), "err_xdk_invalid_signature");
    assert_eq!(body["fail"][0]["errors"][0]["retryable"], false);
    assert_eq!(h.count(|s| &s.bad_signatures), 1);
    assert_eq!(h.count(|s| &s.unauthenticated), 1);
    assert_eq!(h.count(|s| &s.bad_dates), 0);

    // A signature that is not even base64.
    let c = &h.cfg.credentials;
    let resp = h
        .http
        .post(format!("{}{CHANNEL}", h.base))
        .header("Authorization", format!("MC {}:%%%", c.mimecast_access_key))
        .header("x-mc-date", mc_date(Utc::now()))
        .header("x-mc-req-id", uuid::Uuid::new_v4().to_string())
        .header("x-mc-app-id", c.mimecast_app_id.clone())
        .body(channel_body("X").to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.count(|s| &s.bad_signatures), 2);
}

#[tokio::test]
async fn skewed_or_malformed_date_is_rejected_and_counted() {
    let h = start(SimConfig::default()).await;
    // Correctly signed, but an hour old (allowed skew: 15 minutes).
    let (status, body) = h
        .v1(
            CHANNEL,
            channel_body("X"),
            Tweak {
                date: Some(mc_date(Utc::now() - TimeDelta::hours(1))),
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(first_error_code(&body), "err_xdk_date_out_of_range");
    // Ahead of time is as bad as behind.
    let (status, _) = h
        .v1(
            CHANNEL,
            channel_body("X"),
            Tweak {
                date: Some(mc_date(Utc::now() + TimeDelta::minutes(20))),
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An ISO date is not the header's format.
    let (status, body) = h
        .v1(
            CHANNEL,
            channel_body("X"),
            Tweak {
                date: Some(Utc::now().to_rfc3339()),
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(first_error_code(&body), "err_xdk_invalid_date");
    assert_eq!(h.count(|s| &s.bad_dates), 3);
    assert_eq!(h.count(|s| &s.unauthenticated), 3);
    assert_eq!(h.count(|s| &s.bad_signatures), 0);

    // Within the skew is fine.
    let (status, _) = h
        .v1(
            CHANNEL,
            channel_body("X"),
            Tweak {
                date: Some(mc_date(Utc::now() - TimeDelta::minutes(10))),
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn reused_request_id_is_rejected_and_counted() {
    let h = start(SimConfig::default()).await;
    let id = uuid::Uuid::new_v4().to_string();
    let tweak = || Tweak {
        req_id: Some(id.clone()),
        ..Tweak::default()
    };
    let (status, _) = h.v1(CHANNEL, channel_body("X"), tweak()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h.v1(CHANNEL, channel_body("X"), tweak()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(first_error_code(&body), "err_xdk_request_id_reused");
    // Also on another endpoint: ids are unique per account, not per path.
    let (status, _) = h
        .v1(FIND, json!({"data":[{"sortOrder":"ascending"}]}), tweak())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.count(|s| &s.reused_request_ids), 2);
    assert_eq!(h.count(|s| &s.unauthenticated), 2);
}

#[tokio::test]
async fn wrong_app_id_unknown_key_and_missing_headers_are_rejected() {
    let h = start(SimConfig::default()).await;
    let (status, body) = h
        .v1(
            CHANNEL,
            channel_body("X"),
            Tweak {
                app_id: Some("someone-elses-app".into()),
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(first_error_code(&body), "err_xdk_invalid_app_id");
    let (status, body) = h
        .v1(
            CHANNEL,
            channel_body("X"),
            Tweak {
                access_key: Some("unknown-key".into()),
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(first_error_code(&body), "err_xdk_invalid_access_key");

    // No Authorization at all; and a signed request without x-mc-req-id.
    let resp = h
        .http
        .post(format!("{}{CHANNEL}", h.base))
        .json(&channel_body("X"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let c = &h.cfg.credentials;
    let resp = h
        .http
        .post(format!("{}{CHANNEL}", h.base))
        .header(
            "Authorization",
            format!("MC {}:abc=", c.mimecast_access_key),
        )
        .header("x-mc-date", mc_date(Utc::now()))
        .header("x-mc-app-id", c.mimecast_app_id.clone())
        .json(&channel_body("X"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.count(|s| &s.unauthenticated), 4);
    assert_eq!(h.count(|s| &s.bad_signatures), 0);
}

#[tokio::test]
async fn api2_token_flow_with_expiry() {
    let cfg = SimConfig {
        mimecast_token_ttl: Duration::from_millis(1_500),
        ..SimConfig::default()
    };
    let h = start(cfg).await;
    let c = h.cfg.credentials.clone();

    let (status, body) = h
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", &c.mimecast_client_id),
            ("client_secret", "wrong"),
        ])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    let (status, body) = h
        .token(&[
            ("grant_type", "password"),
            ("client_id", &c.mimecast_client_id),
            ("client_secret", &c.mimecast_client_secret),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "unsupported_grant_type");
    // Credentials as JSON instead of a form.
    let resp = h
        .http
        .post(format!("{}/oauth/token", h.base))
        .json(
            &json!({"grant_type":"client_credentials","client_id":c.mimecast_client_id,
                      "client_secret":c.mimecast_client_secret}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(h.sim.tokens_issued(), 0);

    let (status, body) = h
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", &c.mimecast_client_id),
            ("client_secret", &c.mimecast_client_secret),
        ])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 1); // 1.5 s, in whole seconds
    let token = body["access_token"].as_str().expect("token").to_string();
    assert_eq!(h.sim.tokens_issued(), 1);

    let resp = h.bearer(&token, CHANNEL, channel_body("X")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = h.bearer("made-up-token", CHANNEL, channel_body("X")).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Natural expiry after the TTL.
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let resp = h.bearer(&token, CHANNEL, channel_body("X")).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(first_error_code(&body), "err_xdk_token_expired");

    // Forced expiry through the hook.
    let cfg = SimConfig::default();
    let h2 = start(cfg).await;
    let t1 = h2.good_token().await;
    assert_eq!(
        h2.bearer(&t1, CHANNEL, channel_body("X")).await.status(),
        StatusCode::OK
    );
    h2.sim.expire_tokens();
    assert_eq!(
        h2.bearer(&t1, CHANNEL, channel_body("X")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let t2 = h2.good_token().await;
    assert_ne!(t1, t2);
    assert_eq!(
        h2.bearer(&t2, CHANNEL, channel_body("X")).await.status(),
        StatusCode::OK
    );
    assert_eq!(h2.sim.tokens_issued(), 2);
    assert_eq!(h2.count(|s| &s.unauthenticated), 1);
}

/// Walks every page of a list; returns the items and the totalCount of each page.
async fn walk(h: &Harness, path: &str, item: Value, page_size: Option<u64>) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut pagination = json!({});
        if let Some(size) = page_size {
            pagination["pageSize"] = json!(size);
        }
        if let Some(t) = &token {
            pagination["pageToken"] = json!(t);
        }
        let body = json!({ "meta": { "pagination": pagination }, "data": [item.clone()] });
        let (status, resp) = h.v1(path, body, Tweak::default()).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        assert_eq!(resp["fail"], json!([]), "{resp}");
        let meta = &resp["meta"]["pagination"];
        let page: Vec<Value> = if path == FIND {
            resp["data"][0]["messages"]
                .as_array()
                .expect("messages")
                .clone()
        } else {
            resp["data"].as_array().expect("data").clone()
        };
        if let Some(size) = page_size {
            assert_eq!(meta["pageSize"], size);
            assert!(page.len() as u64 <= size);
        }
        pages += 1;
        items.extend(page);
        assert!(
            meta["totalCount"].as_u64().is_some(),
            "totalCount on every page: {meta}"
        );
        match meta["next"].as_str() {
            Some(next) => token = Some(next.to_string()),
            None => {
                assert_eq!(meta["totalCount"].as_u64(), Some(items.len() as u64));
                return (items, pages);
            }
        }
        assert!(pages < 1000, "pagination does not end");
    }
}

#[tokio::test]
async fn find_processing_messages_pages_through_the_whole_queue() {
    let cfg = SimConfig {
        mimecast_queue_size: 53,
        mimecast_default_page_size: 20,
        ..SimConfig::default()
    };
    let h = start(cfg).await;
    let start_date = data_date(Utc::now() - TimeDelta::days(8));
    let (items, pages) = walk(&h, FIND, json!({ "start": start_date }), Some(10)).await;
    assert_eq!(items.len(), 53);
    assert_eq!(pages, 6);
    let ids: HashSet<&str> = items.iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids.len(), 53, "no duplicates across pages");
    // Documented fields are all there.
    for field in [
        "id",
        "fromEnv",
        "fromHeader",
        "to",
        "subject",
        "attachment",
        "routing",
        "size",
        "remoteIp",
        "attempts",
        "nextAttempt",
        "created",
        "info",
        "lockedUntil",
    ] {
        assert!(items[0].get(field).is_some(), "message lacks {field}");
    }
    assert!(items[0]["fromEnv"]["emailAddress"].is_string());
    // Descending by default; ascending when asked, with the default page size.
    let created: Vec<String> = items
        .iter()
        .map(|m| m["created"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]));
    let (asc, pages) = walk(&h, FIND, json!({ "sortOrder": "ascending" }), None).await;
    assert_eq!(pages, 3);
    assert_eq!(asc.len(), 53);
    assert_eq!(
        asc.first().map(|m| &m["id"]),
        items.last().map(|m| &m["id"])
    );

    // A date window holds fewer.
    let (some, _) = walk(
        &h,
        FIND,
        json!({ "start": data_date(Utc::now() - TimeDelta::days(2)), "end": data_date(Utc::now()) }),
        Some(100),
    )
    .await;
    assert!(!some.is_empty() && some.len() < 53, "{}", some.len());
}

fn data_date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%z").to_string()
}

#[tokio::test]
async fn audit_events_page_with_defaults_and_ranges() {
    let h = start(SimConfig::default()).await;
    let range = json!({
        "startDateTime": data_date(Utc::now() - TimeDelta::days(31)),
        "endDateTime": data_date(Utc::now() + TimeDelta::days(1)),
    });
    let (events, pages) = walk(&h, AUDIT, range, None).await;
    assert_eq!(events.len(), 250);
    assert_eq!(pages, 5); // default page size 50
    let ids: HashSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), 250);
    for field in [
        "id",
        "auditType",
        "user",
        "eventTime",
        "eventInfo",
        "category",
    ] {
        assert!(events[0].get(field).is_some(), "event lacks {field}");
    }
    let recent = json!({ "startDateTime": data_date(Utc::now() - TimeDelta::days(3)) });
    let (few, _) = walk(&h, AUDIT, recent, Some(7)).await;
    assert!(!few.is_empty() && few.len() < 250);

    let (status, body) = h
        .v1(
            AUDIT,
            json!({"data":[{"startDateTime":"last tuesday"}]}),
            Tweak::default(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"], json!([]));
    assert_eq!(first_error_code(&body), "err_validation_date_format");
    assert_eq!(body["fail"][0]["errors"][0]["field"], "startDateTime");
}

#[tokio::test]
async fn invalid_page_tokens_and_sizes_fail() {
    let h = start(SimConfig::default()).await;
    let item = json!({ "sortOrder": "descending" });
    let garbage = json!({"meta":{"pagination":{"pageToken":"bm90LWEtdG9rZW4"}},"data":[item]});
    let (status, body) = h.v1(FIND, garbage, Tweak::default()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first_error_code(&body), "err_pagination_invalid_token");
    assert_eq!(body["data"], json!([]));
    assert_eq!(body["fail"][0]["key"], item);

    // A token of another list, or of another query, is not accepted either.
    let (_, audit) = h
        .v1(
            AUDIT,
            json!({"meta":{"pagination":{"pageSize":10}},"data":[{}]}),
            Tweak::default(),
        )
        .await;
    let audit_next = audit["meta"]["pagination"]["next"]
        .as_str()
        .expect("next")
        .to_string();
    let (_, body) = h
        .v1(
            FIND,
            json!({"meta":{"pagination":{"pageToken":audit_next}},"data":[item]}),
            Tweak::default(),
        )
        .await;
    assert_eq!(first_error_code(&body), "err_pagination_invalid_token");
    let (_, body) = h
        .v1(
            AUDIT,
            json!({"meta":{"pagination":{"pageToken":audit_next}},"data":[{"query":"other"}]}),
            Tweak::default(),
        )
        .await;
    assert_eq!(first_error_code(&body), "err_pagination_invalid_token");

    for size in [json!(0), json!(-5), json!(501), json!("ten")] {
        let (status, body) = h
            .v1(
                FIND,
                json!({"meta":{"pagination":{"pageSize":size}},"data":[item]}),
                Tweak::default(),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            first_error_code(&body),
            "err_validation_invalid_value",
            "{size}"
        );
    }
}

#[tokio::test]
async fn find_processing_needs_at_least_one_option() {
    let h = start(SimConfig::default()).await;
    for body in [
        json!({"data":[{}]}),
        json!({"data":[]}),
        json!({}),
        json!({"data":[{"start":null}]}),
        json!({"data":[{"unknownField":"x"}]}),
    ] {
        let (status, resp) = h.v1(FIND, body.clone(), Tweak::default()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(resp["meta"]["status"], 200);
        assert_eq!(resp["data"], json!([]), "{body}");
        assert_eq!(first_error_code(&resp), "err_validation_missing", "{body}");
    }
    let (status, resp) = h
        .v1(
            FIND,
            json!({"data":[{"type":"processing"}]}),
            Tweak::default(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp["fail"], json!([]));
    assert_eq!(resp["meta"]["pagination"]["totalCount"], 120);
    let (_, bulk) = h
        .v1(
            FIND,
            json!({"data":[{"type":"bulk_processing"}]}),
            Tweak::default(),
        )
        .await;
    assert_eq!(bulk["data"][0]["messages"], json!([]));
    let (_, bad) = h
        .v1(
            FIND,
            json!({"data":[{"type":"everything"}]}),
            Tweak::default(),
        )
        .await;
    assert_eq!(first_error_code(&bad), "err_validation_invalid_value");
}

#[tokio::test]
async fn find_processing_search_and_filters() {
    let h = start(SimConfig::default()).await;
    let (msgs, _) = walk(
        &h,
        FIND,
        json!({"searchBy":{"fieldName":"subject","value":"invoice"}}),
        Some(500),
    )
    .await;
    assert!(!msgs.is_empty() && msgs.len() < 120);
    assert!(msgs
        .iter()
        .all(|m| m["subject"].as_str().unwrap_or("").contains("Invoice")));
    let (inbound, _) = walk(
        &h,
        FIND,
        json!({"filterBy":[{"route":"inbound"},{"attachments":true}]}),
        Some(500),
    )
    .await;
    assert!(!inbound.is_empty());
    assert!(inbound
        .iter()
        .all(|m| m["routing"] == "inbound" && m["attachment"] == true));
    let (_, bad) = h
        .v1(
            FIND,
            json!({"data":[{"searchBy":{"fieldName":"colour","value":"red"}}]}),
            Tweak::default(),
        )
        .await;
    assert_eq!(first_error_code(&bad), "err_validation_invalid_value");
    let (_, bad) = h
        .v1(
            FIND,
            json!({"data":[{"start":"2024-05-02T00:00:00+0000","end":"2024-05-01T00:00:00+0000"}]}),
            Tweak::default(),
        )
        .await;
    assert_eq!(first_error_code(&bad), "err_validation_date_range");
}

#[tokio::test]
async fn channel_token_validation() {
    let h = start(SimConfig::default()).await;
    let (status, body) = h.v1(CHANNEL, json!({"data":[{}]}), Tweak::default()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first_error_code(&body), "err_validation_missing");
    assert!(body["fail"][0]["errors"][0]["message"]
        .as_str()
        .unwrap_or("")
        .contains("channelId"));
    let (_, body) = h.v1(CHANNEL, json!({"data":[]}), Tweak::default()).await;
    assert_eq!(first_error_code(&body), "err_validation_missing");
    let (_, body) = h
        .v1(CHANNEL, channel_body("INVALID"), Tweak::default())
        .await;
    assert_eq!(body["data"], json!([]));
    assert!(body["fail"][0]["errors"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_lowercase()
        .contains("channel not found"));
    assert_eq!(body["fail"][0]["key"]["channelId"], "INVALID");
    // Several items: each answered on its own.
    let (_, body) = h
        .v1(
            CHANNEL,
            json!({"data":[{"channelId":"A-1"},{"channelId":"INVALID"},{"channelId":"B-2"}]}),
            Tweak::default(),
        )
        .await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["fail"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn malformed_bodies_unknown_paths_and_methods() {
    let h = start(SimConfig::default()).await;
    for body in [
        "{not json",
        "",
        // A Python literal cut short (a whole `str(dict)` is accepted: see pyrepr.rs).
        "{'data': [{'channelId': 'X'}",
        r#"{"data": {"channelId": "X"}}"#,
        r#"{"data": ["X"]}"#,
    ] {
        let resp = h.raw_v1(CHANNEL, body, Tweak::default()).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let json: Value = resp.json().await.expect("envelope");
        assert_eq!(json["meta"]["status"], 400);
        assert_eq!(first_error_code(&json), "err_xdk_bad_request");
    }
    let (status, body) = h
        .v1("/api/nothing/here", json!({"data":[]}), Tweak::default())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["meta"]["status"], 404);
    let c = &h.cfg.credentials;
    let date = mc_date(Utc::now());
    let id = uuid::Uuid::new_v4().to_string();
    let sig = signature(
        &c.mimecast_secret_key,
        &date,
        &id,
        CHANNEL,
        &c.mimecast_app_key,
    );
    let resp = h
        .http
        .get(format!("{}{CHANNEL}", h.base))
        .header(
            "Authorization",
            format!("MC {}:{sig}", c.mimecast_access_key),
        )
        .header("x-mc-date", date)
        .header("x-mc-req-id", id)
        .header("x-mc-app-id", c.mimecast_app_id.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h.count(|s| &s.unauthenticated), 0);
}

#[tokio::test]
async fn forced_faults_carry_vendor_headers_and_are_not_auth_failures() {
    let cfg = SimConfig {
        faults: FaultConfig {
            force_each_once: true,
            ..FaultConfig::default()
        },
        ..SimConfig::default()
    };
    let h = start(cfg).await;
    let resp = h
        .raw_v1(CHANNEL, &channel_body("X").to_string(), Tweak::default())
        .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let reset: u64 = resp
        .headers()
        .get("x-ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("X-RateLimit-Reset in milliseconds");
    assert!((500..=1000).contains(&reset), "{reset}");
    let body: Value = resp.json().await.expect("envelope");
    assert_eq!(body["meta"]["status"], 429);
    assert_eq!(body["fail"][0]["errors"][0]["retryable"], true);

    // The 503 leaves the request id unused: a stock retry resends the identical signed
    // request (same date, id and signature) and is accepted (issue 12 item 9).
    let c = &h.cfg.credentials;
    let date = mc_date(Utc::now());
    let id = uuid::Uuid::new_v4().to_string();
    let sig = signature(
        &c.mimecast_secret_key,
        &date,
        &id,
        CHANNEL,
        &c.mimecast_app_key,
    );
    let send = || {
        h.http
            .post(format!("{}{CHANNEL}", h.base))
            .header(
                "Authorization",
                format!("MC {}:{sig}", c.mimecast_access_key),
            )
            .header("x-mc-date", &date)
            .header("x-mc-req-id", &id)
            .header("x-mc-app-id", &c.mimecast_app_id)
            .header("Content-Type", "application/json")
            .body(channel_body("X").to_string())
            .send()
    };
    let resp = send().await.expect("request sent");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let resp = send().await.expect("request sent");
    assert_eq!(resp.status(), StatusCode::OK);
    // Once it did authenticate, the same id is spent.
    let resp = send().await.expect("request sent");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.count(|s| &s.reused_request_ids), 1);
    assert_eq!(h.count(|s| &s.injected_429), 1);
    assert_eq!(h.count(|s| &s.injected_5xx), 1);
    assert_eq!(h.count(|s| &s.unauthenticated), 1);

    // API 2.0 callers get Retry-After instead; the token endpoint draws no faults.
    let cfg = SimConfig {
        faults: FaultConfig {
            force_each_once: true,
            ..FaultConfig::default()
        },
        ..SimConfig::default()
    };
    let h2 = start(cfg).await;
    let token = h2.good_token().await;
    let resp = h2.bearer(&token, CHANNEL, channel_body("X")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
}

fn rate_header(resp: &reqwest::Response, name: &str) -> u64 {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing or not a number"))
}

#[tokio::test]
async fn rate_limit_headers_on_every_answer_follow_the_window() {
    let cfg = SimConfig {
        mimecast_rate_limit: 3,
        mimecast_rate_window: Duration::from_secs(60),
        ..SimConfig::default()
    };
    let h = start(cfg).await;
    let body = channel_body("X").to_string();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let resp = h.raw_v1(CHANNEL, &body, Tweak::default()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(rate_header(&resp, "x-ratelimit-limit"), 3);
        let reset = rate_header(&resp, "x-ratelimit-reset");
        assert!(reset > 0 && reset <= 60_000, "{reset}");
        remaining.push(rate_header(&resp, "x-ratelimit-remaining"));
    }
    assert_eq!(remaining, vec![2, 1, 0]);
    // Rejected calls report the window too; a spent window answers 429.
    let resp = h
        .raw_v1(
            CHANNEL,
            &body,
            Tweak {
                corrupt_signature: true,
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rate_header(&resp, "x-ratelimit-remaining"), 0);
    assert_eq!(rate_header(&resp, "x-ratelimit-limit"), 3);
    assert!(rate_header(&resp, "x-ratelimit-reset") > 0);
    let token = h.good_token().await;
    let resp = h.bearer(&token, CHANNEL, channel_body("X")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(rate_header(&resp, "retry-after") >= 1);
}

#[tokio::test]
async fn rate_limit_headers_on_401() {
    let h = start(SimConfig::default()).await;
    let resp = h
        .raw_v1(
            CHANNEL,
            "{}",
            Tweak {
                corrupt_signature: true,
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(rate_header(&resp, "x-ratelimit-limit"), 100_000);
    assert_eq!(rate_header(&resp, "x-ratelimit-remaining"), 99_999);
}

#[tokio::test]
async fn python_sample_str_dict_body_is_accepted() {
    let h = start(SimConfig::default()).await;
    // What `str(payload)` gives for the page's Python sample.
    let body = "{'data': [{'channelId': 'B8Y43U-GYVS-WHAU6M'}]}";
    let resp = h.raw_v1(CHANNEL, body, Tweak::default()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let json: Value = resp.json().await.expect("envelope");
    assert_eq!(json["fail"], json!([]));
    assert_eq!(
        json["data"][0]["channelId"].as_str().map(str::len),
        Some(43)
    );
    // Neither JSON nor a Python literal: still 400.
    let resp = h.raw_v1(CHANNEL, "{'data': [", Tweak::default()).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}
