//! Tests of the simulated Google side over real HTTP (router served on 127.0.0.1:0).
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use pgp::composed::{
    ArmorOptions, EncryptionCaps, KeyType, Message, SecretKeyParamsBuilder, SignedPublicKey,
    SignedSecretKey, SubkeyParamsBuilder,
};
use pgp::ser::Serialize as _;
use pgp::types::Password;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use super::GoogleSim;
use crate::{Faults, SimConfig, Stats, StatsSnapshot};

// ---------- fixtures ----------

/// An RSA-2048 OpenPGP key (certify/sign primary, encryption subkey), made once per binary.
fn rsa_key() -> &'static SignedSecretKey {
    static KEY: OnceLock<SignedSecretKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut sub = SubkeyParamsBuilder::default();
        sub.key_type(KeyType::Rsa(2048))
            .can_sign(false)
            .can_encrypt(EncryptionCaps::All)
            .can_authenticate(false);
        let mut params = SecretKeyParamsBuilder::default();
        params
            .key_type(KeyType::Rsa(2048))
            .can_certify(true)
            .can_sign(true)
            .can_encrypt(EncryptionCaps::None)
            .primary_user_id("Audit Export <audit@example.com>".into())
            .subkeys(vec![sub.build().expect("subkey params")]);
        params
            .build()
            .expect("key params")
            .generate(rand::thread_rng())
            .expect("rsa keygen")
    })
}

fn armored_public(key: &SignedSecretKey) -> String {
    SignedPublicKey::from(key.clone())
        .to_armored_string(ArmorOptions::default())
        .expect("armor")
}

/// The `publicKey` value as the page asks: base64 of the armored key.
fn encoded_rsa_key() -> String {
    STANDARD.encode(armored_public(rsa_key()))
}

fn ed25519_key_encoded() -> String {
    let mut sub = SubkeyParamsBuilder::default();
    sub.key_type(KeyType::X25519)
        .can_encrypt(EncryptionCaps::All);
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(KeyType::Ed25519)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id("Not RSA <x@example.com>".into())
        .subkeys(vec![sub.build().expect("subkey params")]);
    let key = params
        .build()
        .expect("params")
        .generate(rand::thread_rng())
        .expect("keygen");
    STANDARD.encode(armored_public(&key))
}

struct Sim {
    sim: Arc<GoogleSim>,
    base: String,
    stats: Arc<Stats>,
    http: reqwest::Client,
    _task: tokio::task::JoinHandle<()>,
}

const TOKEN: &str = "sim-google-access-token";
const DOMAIN: &str = "example.com";

async fn start(cfg: SimConfig) -> Sim {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stats = Arc::new(Stats::default());
    let faults = Arc::new(Faults::new(cfg.faults.clone(), stats.clone()));
    let sim = GoogleSim::new(&cfg, faults).expect("sim");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let router = sim.clone().router();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    sim.set_base_url(&base);
    Sim {
        sim,
        base,
        stats,
        http: reqwest::Client::new(),
        _task: task,
    }
}

fn cfg() -> SimConfig {
    SimConfig {
        google_pending_polls: 2,
        google_files_per_export: 2,
        google_file_size: 40_000,
        ..SimConfig::default()
    }
}

fn snap(s: &Sim) -> StatsSnapshot {
    s.stats.snapshot()
}

/// A page-style create body.
fn create_body(begin: &str, end: &str, package: &str) -> String {
    format!(
        "<atom:entry xmlns:atom='http://www.w3.org/2005/Atom' xmlns:apps='http://schemas.google.com/apps/2006'>
   <apps:property name='beginDate' value='{begin}'/>
   <apps:property name=\"endDate\" value=\"{end}\"/>
   <apps:property name='includeDeleted' value='false'/>
   <apps:property name='searchQuery' value='in:chat'/>
   <apps:property name='packageContent' value='{package}'/>
</atom:entry>"
    )
}

fn key_body(encoded: &str) -> String {
    format!(
        "<atom:entry xmlns:atom='http://www.w3.org/2005/Atom' xmlns:apps='http://schemas.google.com/apps/2006'>\n\
         <apps:property name=\"publicKey\" value=\"{encoded}\"/>\n</atom:entry>"
    )
}

/// Reads `name='X' value='Y'` from an answer, independently of the simulator's parser.
fn prop(doc: &str, name: &str) -> Option<String> {
    let needle = format!("name='{name}' value='");
    let start = doc.find(&needle)? + needle.len();
    let end = doc[start..].find('\'')? + start;
    Some(
        doc[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&apos;", "'")
            .replace("&quot;", "\"")
            .replace("&amp;", "&"),
    )
}

fn next_link(feed: &str) -> Option<String> {
    let at = feed.find("rel='next'")?;
    let tag_end = feed[at..].find("/>")? + at;
    let tag = &feed[at..tag_end];
    let h = tag.find("href='")? + "href='".len();
    let e = tag[h..].find('\'')? + h;
    Some(tag[h..e].replace("&amp;", "&"))
}

impl Sim {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn export_url(&self, user: &str) -> String {
        self.url(&format!(
            "/a/feeds/compliance/audit/mail/export/{DOMAIN}/{user}"
        ))
    }

    async fn upload_key(&self, encoded: &str) -> (StatusCode, String) {
        let r = self
            .http
            .post(self.url(&format!("/a/feeds/compliance/audit/publickey/{DOMAIN}")))
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/atom+xml")
            .body(key_body(encoded))
            .send()
            .await
            .expect("send");
        (r.status(), r.text().await.expect("body"))
    }

    async fn create_raw(&self, user: &str, body: &str) -> (StatusCode, String) {
        let r = self
            .http
            .post(self.export_url(user))
            .bearer_auth(TOKEN)
            .header("Content-type", "application/atom+xml")
            .body(body.to_string())
            .send()
            .await
            .expect("send");
        (r.status(), r.text().await.expect("body"))
    }

    /// Creates an export; returns its request id.
    async fn create(&self, user: &str) -> String {
        let (status, doc) = self
            .create_raw(
                user,
                &create_body("2022-07-01 04:30", "2022-08-30 20:00", "FULL_MESSAGE"),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{doc}");
        prop(&doc, "requestId").expect("requestId")
    }

    async fn status(&self, user: &str, id: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}/{id}", self.export_url(user)))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        (r.status(), r.text().await.expect("body"))
    }

    async fn delete(&self, user: &str, id: &str) -> (StatusCode, String) {
        let r = self
            .http
            .delete(format!("{}/{id}", self.export_url(user)))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        (r.status(), r.text().await.expect("body"))
    }

    /// Polls until the status is no longer PENDING; returns the final entry.
    async fn poll_done(&self, user: &str, id: &str) -> String {
        for _ in 0..50 {
            let (status, doc) = self.status(user, id).await;
            assert_eq!(status, StatusCode::CREATED, "{doc}");
            if prop(&doc, "status").as_deref() != Some("PENDING") {
                return doc;
            }
        }
        panic!("export {id} never left PENDING");
    }

    async fn get_file(&self, url: &str, range: Option<&str>) -> reqwest::Response {
        let mut rq = self.http.get(url).bearer_auth(TOKEN);
        if let Some(r) = range {
            rq = rq.header("Range", r);
        }
        rq.send().await.expect("send")
    }
}

/// The ETag a file answers with.
async fn r_etag(s: &Sim, url: &str) -> String {
    let r = s.get_file(url, None).await;
    r.headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("ETag")
        .to_string()
}

fn decrypt(data: &[u8]) -> Vec<u8> {
    let msg = Message::from_bytes(data).expect("an OpenPGP message");
    let decrypted = msg
        .decrypt(&Password::empty(), rsa_key())
        .expect("decrypts with the domain key");
    assert!(decrypted.is_compressed(), "GnuPG-style compressed payload");
    let mut literal = decrypted.decompress().expect("decompress");
    literal.as_data_vec().expect("literal data")
}

/// (tag, body offset) of the OpenPGP packet at `at`, new or old format headers.
fn packet_at(data: &[u8], at: usize) -> (u8, usize, Option<usize>) {
    let b = data[at];
    assert!(b & 0x80 != 0, "not a packet header at {at}");
    if b & 0x40 != 0 {
        let tag = b & 0x3f;
        let l = data[at + 1] as usize;
        match l {
            0..=191 => (tag, at + 2, Some(l)),
            192..=223 => (
                tag,
                at + 3,
                Some(((l - 192) << 8) + data[at + 2] as usize + 192),
            ),
            255 => {
                let n =
                    u32::from_be_bytes([data[at + 2], data[at + 3], data[at + 4], data[at + 5]]);
                (tag, at + 6, Some(n as usize))
            }
            _ => (tag, at + 2, None), // partial body length
        }
    } else {
        let tag = (b >> 2) & 0x0f;
        match b & 3 {
            0 => (tag, at + 2, Some(data[at + 1] as usize)),
            1 => (
                tag,
                at + 3,
                Some(u16::from_be_bytes([data[at + 1], data[at + 2]]) as usize),
            ),
            _ => panic!("unexpected old-format length type"),
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

// ---------- auth and faults ----------

#[tokio::test]
async fn bearer_token_is_required() {
    let s = start(cfg()).await;
    let list = s.url(&format!("/a/feeds/compliance/audit/mail/export/{DOMAIN}"));

    let r = s.http.get(&list).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], 401);
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");

    for auth in ["Bearer wrong-token", "Basic c2ltOnNpbQ==", "Bearer ", TOKEN] {
        let r = s
            .http
            .get(&list)
            .header("Authorization", auth)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth}");
    }
    assert_eq!(snap(&s).unauthenticated, 5);

    let r = s
        .http
        .get(&list)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    // The scheme is case-insensitive.
    let r = s
        .http
        .get(&list)
        .header("Authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(snap(&s).unauthenticated, 5);
    assert_eq!(snap(&s).requests, 7);
}

#[tokio::test]
async fn injected_faults_come_before_auth() {
    let mut c = cfg();
    c.faults.force_each_once = true;
    let s = start(c).await;
    let list = s.url(&format!("/a/feeds/compliance/audit/mail/export/{DOMAIN}"));
    let r = s.http.get(&list).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let r = s
        .http
        .get(&list)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = s
        .http
        .get(&list)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let st = snap(&s);
    assert_eq!(
        (st.injected_429, st.injected_5xx, st.unauthenticated),
        (1, 1, 0)
    );
}

// ---------- JWT bearer grant ----------

struct Jwt {
    key: rsa::RsaPrivateKey,
    kid: String,
    email: String,
    token_uri: String,
}

impl Jwt {
    fn from_key_file(s: &Sim) -> Jwt {
        let path = s.sim.service_account_key_file();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path)
                .expect("key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "key file must be private");
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read key file")).expect("json");
        assert_eq!(json["type"], "service_account");
        assert!(json["client_id"].as_str().is_some_and(|c| !c.is_empty()));
        let pem = json["private_key"].as_str().expect("private_key");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let key = <rsa::RsaPrivateKey as rsa::pkcs8::DecodePrivateKey>::from_pkcs8_pem(pem)
            .expect("PKCS#8 PEM");
        Jwt {
            key,
            kid: json["private_key_id"].as_str().expect("kid").to_string(),
            email: json["client_email"].as_str().expect("email").to_string(),
            token_uri: json["token_uri"].as_str().expect("token_uri").to_string(),
        }
    }

    fn sign(&self, claims: serde_json::Value) -> String {
        use rsa::signature::{SignatureEncoding as _, Signer as _};
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(self.key.clone());
        let sig = signer.sign(input.as_bytes()).to_bytes();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn claims(&self, sub: &str, aud: &str, iat: i64, exp: i64) -> serde_json::Value {
        serde_json::json!({
            "iss": self.email,
            "scope": "https://apps-apis.google.com/a/feeds/compliance/audit/",
            "aud": aud,
            "sub": sub,
            "iat": iat,
            "exp": exp,
        })
    }
}

async fn grant(s: &Sim, uri: &str, assertion: &str) -> (StatusCode, serde_json::Value) {
    let r = s
        .http
        .post(uri)
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ])
        .send()
        .await
        .expect("send");
    (r.status(), r.json().await.expect("json"))
}

#[tokio::test]
async fn jwt_bearer_grant_issues_tokens_and_rejects_bad_assertions() {
    let s = start(cfg()).await;
    let jwt = Jwt::from_key_file(&s);
    assert_eq!(
        jwt.email,
        "auditflow-sim@sim-project.iam.gserviceaccount.com"
    );
    assert_eq!(jwt.token_uri, s.url("/token"));
    let now = chrono::Utc::now().timestamp();
    let admin = "admin@example.com";
    let aud = jwt.token_uri.clone();

    let good = jwt.sign(jwt.claims(admin, &aud, now, now + 3600));
    let (status, body) = grant(&s, &aud, &good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let access = body["access_token"].as_str().expect("token").to_string();
    assert_eq!(s.sim.tokens_issued(), 1);
    assert_eq!(snap(&s).unauthenticated, 0);
    // The token endpoint draws no faults.
    assert_eq!(snap(&s).requests, 0);

    // The issued token works on the API.
    let r = s
        .http
        .get(s.url(&format!("/a/feeds/compliance/audit/mail/export/{DOMAIN}")))
        .bearer_auth(&access)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);

    let mut tampered = good.clone();
    let last = tampered.pop().expect("char");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let mut wrong_iss = jwt.claims(admin, &aud, now, now + 3600);
    wrong_iss["iss"] = "someone@else.iam.gserviceaccount.com".into();
    let mut no_scope = jwt.claims(admin, &aud, now, now + 3600);
    no_scope["scope"] = "https://www.googleapis.com/auth/gmail.readonly".into();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong sub",
            jwt.sign(jwt.claims("bob@example.com", &aud, now, now + 3600)),
            "invalid_grant",
        ),
        (
            "wrong aud",
            jwt.sign(jwt.claims(admin, "https://oauth2.example.net/token", now, now + 3600)),
            "invalid_grant",
        ),
        (
            "expired",
            jwt.sign(jwt.claims(admin, &aud, now - 7200, now - 3600)),
            "invalid_grant",
        ),
        (
            "too long",
            jwt.sign(jwt.claims(admin, &aud, now, now + 7200)),
            "invalid_grant",
        ),
        ("bad signature", tampered, "invalid_grant"),
        ("wrong iss", jwt.sign(wrong_iss), "invalid_grant"),
        ("not a jwt", "abc.def".to_string(), "invalid_grant"),
        ("scope", jwt.sign(no_scope), "invalid_scope"),
    ];
    let n = cases.len() as u64;
    for (what, assertion, code) in cases {
        let (status, body) = grant(&s, &aud, &assertion).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert_eq!(body["error"], code, "{what}: {body}");
        assert!(body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
    }
    let r = s
        .http
        .post(&aud)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "unsupported_grant_type");

    assert_eq!(s.sim.tokens_issued(), 1);
    assert_eq!(snap(&s).unauthenticated, n + 1);
    assert_eq!(snap(&s).google_token_requests, n + 2);
}

#[tokio::test]
async fn issued_tokens_expire() {
    let c = SimConfig {
        google_token_ttl: Duration::from_millis(300),
        ..cfg()
    };
    let s = start(c).await;
    let jwt = Jwt::from_key_file(&s);
    let now = chrono::Utc::now().timestamp();
    let (status, body) = grant(
        &s,
        &jwt.token_uri,
        &jwt.sign(jwt.claims("admin@example.com", &jwt.token_uri, now, now + 600)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let access = body["access_token"].as_str().expect("token").to_string();
    let list = s.url(&format!("/a/feeds/compliance/audit/mail/export/{DOMAIN}"));
    let r = s
        .http
        .get(&list)
        .bearer_auth(&access)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = s
        .http
        .get(&list)
        .bearer_auth(&access)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

// ---------- public key ----------

#[tokio::test]
async fn public_key_upload_accepts_rsa_and_rejects_the_rest() {
    let s = start(cfg()).await;
    let encoded = encoded_rsa_key();
    let (status, doc) = s.upload_key(&encoded).await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    assert_eq!(prop(&doc, "publicKey").as_deref(), Some(encoded.as_str()));

    // The page's way: base64 with line breaks (Motobit style) is fine too.
    let wrapped: String = encoded
        .as_bytes()
        .chunks(66)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n");
    assert_eq!(s.upload_key(&wrapped).await.0, StatusCode::CREATED);

    let not_armored = STANDARD.encode(
        SignedPublicKey::from(rsa_key().clone())
            .to_bytes()
            .expect("binary key"),
    );
    let garbage_armor = STANDARD.encode(
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n",
    );
    for (what, value) in [
        ("not base64", "@@@ not base64 @@@".to_string()),
        ("empty", String::new()),
        ("binary key", not_armored),
        ("plain text", STANDARD.encode("hello")),
        ("bad armor", garbage_armor),
        ("not RSA", ed25519_key_encoded()),
    ] {
        let (status, body) = s.upload_key(&value).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("json error");
        assert!(json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let r = s
        .http
        .post(s.url(&format!("/a/feeds/compliance/audit/publickey/{DOMAIN}")))
        .bearer_auth(TOKEN)
        .body("<atom:entry><apps:property name='other' value='x'/></atom:entry>")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

// ---------- the export life cycle ----------

#[tokio::test]
async fn export_completes_and_files_decrypt_to_the_plaintext() {
    let s = start(cfg()).await;
    assert_eq!(
        s.upload_key(&encoded_rsa_key()).await.0,
        StatusCode::CREATED
    );

    let (status, doc) = s
        .create_raw(
            "quinn",
            &create_body("2022-07-01 04:30", "2022-08-30 20:00", "FULL_MESSAGE"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    assert!(doc.contains("<entry xmlns='http://www.w3.org/2005/Atom'"));
    assert_eq!(prop(&doc, "status").as_deref(), Some("PENDING"));
    assert_eq!(
        prop(&doc, "userEmailAddress").as_deref(),
        Some("quinn@example.com")
    );
    assert_eq!(
        prop(&doc, "adminEmailAddress").as_deref(),
        Some("admin@example.com")
    );
    assert_eq!(prop(&doc, "beginDate").as_deref(), Some("2022-07-01 04:30"));
    assert_eq!(prop(&doc, "endDate").as_deref(), Some("2022-08-30 20:00"));
    assert_eq!(prop(&doc, "searchQuery").as_deref(), Some("in:chat"));
    assert_eq!(
        prop(&doc, "packageContent").as_deref(),
        Some("FULL_MESSAGE")
    );
    assert_eq!(prop(&doc, "includeDeleted").as_deref(), Some("false"));
    let request_date = prop(&doc, "requestDate").expect("requestDate");
    assert!(chrono::NaiveDateTime::parse_from_str(&request_date, "%Y-%m-%d %H:%M").is_ok());
    let id = prop(&doc, "requestId").expect("requestId");
    assert!(id.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(s.sim.exports_created(DOMAIN), 1);
    assert_eq!(snap(&s).google_exports_created, 1);
    assert!(
        s.sim.plaintext(&id, 0).is_none(),
        "no files before completion"
    );

    for _ in 0..2 {
        let (status, doc) = s.status("quinn", &id).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(prop(&doc, "status").as_deref(), Some("PENDING"));
        assert!(prop(&doc, "fileUrl0").is_none());
    }
    let (status, doc) = s.status("quinn", &id).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(prop(&doc, "status").as_deref(), Some("COMPLETED"), "{doc}");
    assert_eq!(prop(&doc, "numberOfFiles").as_deref(), Some("2"));
    assert!(prop(&doc, "completedDate").is_some());
    assert!(prop(&doc, "fileUrl2").is_none());
    let urls: Vec<String> = (0..2)
        .map(|i| prop(&doc, &format!("fileUrl{i}")).expect("fileUrl"))
        .collect();
    for u in &urls {
        assert!(
            u.starts_with(&format!("{}/a/data/compliance/audit/", s.base)),
            "{u}"
        );
    }
    assert_ne!(urls[0], urls[1]);

    // Files need the bearer token too.
    let r = s.http.get(&urls[0]).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    for (n, u) in urls.iter().enumerate() {
        let r = s.get_file(u, None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()
                .get("accept-ranges")
                .and_then(|v| v.to_str().ok()),
            Some("bytes")
        );
        let declared: usize = r
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        let data = r.bytes().await.expect("body").to_vec();
        assert_eq!(data.len(), declared);

        // A PKESK, then a version-1 SEIPD packet (with MDC), binary (no armor).
        let (tag, body, len) = packet_at(&data, 0);
        assert_eq!(tag, 1, "first packet is a PKESK");
        let next = body + len.expect("PKESK has a fixed length");
        let (tag, body, _) = packet_at(&data, next);
        assert_eq!(tag, 18, "then a SEIPD packet");
        assert_eq!(data[body], 1, "SEIPD version 1");

        let plain = decrypt(&data);
        let expected = s.sim.plaintext(&id, n as u32).expect("plaintext");
        assert_eq!(plain, expected, "file {n} decrypts to plaintext()");
        assert!(plain.len() >= 40_000);
        assert!(plain.starts_with(b"From "));
        assert_eq!(
            s.sim.plaintext_sha256(&id, n as u32).as_deref(),
            Some(sha256_hex(&plain).as_str())
        );
        let text = String::from_utf8(plain).expect("text");
        assert!(text.contains("To: quinn@example.com\n"));
        assert!(text.contains("Date: "));
    }
    assert_ne!(s.sim.plaintext(&id, 0), s.sim.plaintext(&id, 1));
    assert!(s.sim.plaintext(&id, 2).is_none());
    assert_eq!(snap(&s).google_downloads, 2);

    // Ranges on the first file.
    let full = s
        .get_file(&urls[0], None)
        .await
        .bytes()
        .await
        .expect("body");
    let len = full.len();
    let r = s.get_file(&urls[0], Some("bytes=100-")).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok()),
        Some(format!("bytes 100-{}/{len}", len - 1).as_str())
    );
    assert_eq!(r.bytes().await.expect("body"), full.slice(100..));
    let r = s.get_file(&urls[0], Some("bytes=5-14")).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some("10")
    );
    assert_eq!(r.bytes().await.expect("body"), full.slice(5..15));
    let r = s.get_file(&urls[0], Some("bytes=-20")).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.expect("body"), full.slice(len - 20..));
    let r = s.get_file(&urls[0], Some(&format!("bytes={len}-"))).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        r.headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok()),
        Some(format!("bytes */{len}").as_str())
    );
    // If-Range (RFC 9110 13.1.5): the current ETag keeps the range; a stale tag, a weak tag
    // or a date answers 200 with the whole file.
    let etag = r_etag(&s, &urls[0]).await;
    let if_range = |v: String| {
        s.http
            .get(&urls[0])
            .bearer_auth(TOKEN)
            .header("Range", "bytes=100-")
            .header("If-Range", v)
            .send()
    };
    let r = if_range(etag.clone()).await.expect("send");
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.expect("body"), full.slice(100..));
    for stale in [
        "\"not-the-tag\"".to_string(),
        format!("W/{etag}"),
        "Tue, 01 Jan 2030 00:00:00 GMT".to_string(),
    ] {
        let r = if_range(stale.clone()).await.expect("send");
        assert_eq!(r.status(), StatusCode::OK, "{stale}");
        assert!(r.headers().get("content-range").is_none(), "{stale}");
        assert_eq!(r.bytes().await.expect("body"), full, "{stale}");
    }
    // Resuming after a partial read gives the same bytes as a whole download.
    let head = s
        .get_file(&urls[0], Some("bytes=0-999"))
        .await
        .bytes()
        .await
        .expect("b");
    let tail = s
        .get_file(&urls[0], Some("bytes=1000-"))
        .await
        .bytes()
        .await
        .expect("b");
    assert_eq!([head, tail].concat(), full.to_vec());

    let r = s
        .get_file(&s.url("/a/data/compliance/audit/OQAAABnope"), None)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (status, _) = s.status("quinn", "999999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s.status("someoneelse", &id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn header_only_exports_have_no_bodies() {
    let c = SimConfig {
        google_pending_polls: 0,
        google_files_per_export: 1,
        google_file_size: 5_000,
        ..cfg()
    };
    let s = start(c).await;
    assert_eq!(
        s.upload_key(&encoded_rsa_key()).await.0,
        StatusCode::CREATED
    );
    let (status, doc) = s
        .create_raw(
            "kim",
            &create_body("2022-07-01 04:30", "2022-07-02 04:30", "HEADER_ONLY"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = prop(&doc, "requestId").expect("id");
    let doc = s.poll_done("kim", &id).await;
    assert_eq!(prop(&doc, "packageContent").as_deref(), Some("HEADER_ONLY"));
    let url = prop(&doc, "fileUrl0").expect("url");
    let data = s.get_file(&url, None).await.bytes().await.expect("body");
    let plain = String::from_utf8(decrypt(&data)).expect("text");
    assert_eq!(plain.as_bytes(), s.sim.plaintext(&id, 0).expect("plain"));
    for message in plain.split("\n\nFrom ") {
        let body = message.split_once("\n\n").map(|(_, b)| b).unwrap_or("");
        assert!(
            body.trim().is_empty(),
            "header-only message has a body: {body:?}"
        );
    }
    // Dates stay within the requested window.
    assert!(plain.contains(" Jul 2022") || plain.contains(" Jul  2022"));
}

#[tokio::test]
async fn a_cut_download_really_ends_early() {
    let mut c = cfg();
    c.google_pending_polls = 0;
    c.google_file_size = 300_000;
    c.faults.cut_downloads = 1;
    let s = start(c).await;
    assert_eq!(
        s.upload_key(&encoded_rsa_key()).await.0,
        StatusCode::CREATED
    );
    let id = s.create("quinn").await;
    let doc = s.poll_done("quinn", &id).await;
    let url = prop(&doc, "fileUrl0").expect("url");

    let r = s.get_file(&url, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let declared: usize = r
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("content-length");
    let mut stream = r.bytes_stream();
    let mut got = 0usize;
    let mut failed = false;
    use futures::StreamExt as _;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => got += b.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body must end with an error");
    assert!(got < declared, "got {got} of {declared}");
    assert!(
        got > 0 && got <= declared / 2 + 1,
        "about half: {got} of {declared}"
    );
    assert_eq!(snap(&s).injected_cuts, 1);

    // The next download is whole, and resuming from where the cut happened works.
    let full = s.get_file(&url, None).await.bytes().await.expect("whole");
    assert_eq!(full.len(), declared);
    let rest = s
        .get_file(&url, Some(&format!("bytes={got}-")))
        .await
        .bytes()
        .await
        .expect("rest");
    assert_eq!(rest, full.slice(got..));
    assert_eq!(decrypt(&full), s.sim.plaintext(&id, 0).expect("plain"));
    assert_eq!(snap(&s).google_downloads, 3);
}

#[tokio::test]
async fn error_user_and_missing_key_end_in_error() {
    let c = SimConfig {
        google_pending_polls: 1,
        google_error_user: Some("broken".into()),
        ..cfg()
    };
    let s = start(c).await;
    // No key yet: the export fails.
    let id = s.create("quinn").await;
    let doc = s.poll_done("quinn", &id).await;
    assert_eq!(prop(&doc, "status").as_deref(), Some("ERROR"));
    assert_eq!(prop(&doc, "numberOfFiles").as_deref(), Some("0"));
    assert!(prop(&doc, "fileUrl0").is_none());

    assert_eq!(
        s.upload_key(&encoded_rsa_key()).await.0,
        StatusCode::CREATED
    );
    let id = s.create("broken").await;
    let (_, doc) = s.status("broken", &id).await;
    assert_eq!(prop(&doc, "status").as_deref(), Some("PENDING"));
    let (_, doc) = s.status("broken", &id).await;
    assert_eq!(prop(&doc, "status").as_deref(), Some("ERROR"));
    assert_eq!(prop(&doc, "numberOfFiles").as_deref(), Some("0"));
    assert!(s.sim.plaintext(&id, 0).is_none());
    // ERROR requests cannot be deleted.
    assert_eq!(s.delete("broken", &id).await.0, StatusCode::BAD_REQUEST);

    let id = s.create("quinn").await;
    let doc = s.poll_done("quinn", &id).await;
    assert_eq!(prop(&doc, "status").as_deref(), Some("COMPLETED"));
    // Two status requests per export: one PENDING, then the end state.
    assert_eq!(snap(&s).google_status_requests, 6);
}

#[tokio::test]
async fn daily_limit_per_domain() {
    // The "Usage limits and quotas" page: an exceeded quota is answered 503.
    daily_limit_answered(
        crate::GoogleQuotaAnswer::Unavailable503,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    daily_limit_answered(
        crate::GoogleQuotaAnswer::Forbidden403,
        StatusCode::FORBIDDEN,
    )
    .await;
}

async fn daily_limit_answered(answer: crate::GoogleQuotaAnswer, expected: StatusCode) {
    let c = SimConfig {
        google_daily_limit: 2,
        google_quota_answer: answer,
        ..cfg()
    };
    let s = start(c).await;
    s.create("a").await;
    s.create("b").await;
    let (status, body) = s
        .create_raw(
            "c",
            &create_body("2022-07-01 04:30", "2022-08-30 20:00", "FULL_MESSAGE"),
        )
        .await;
    assert_eq!(status, expected, "{body}");
    assert!(body.to_lowercase().contains("quota") || body.contains("limit"));
    assert_eq!(s.sim.exports_created(DOMAIN), 2);
    assert_eq!(snap(&s).google_exports_created, 2);
    // The quota is per UTC day of the simulated clock.
    s.sim.advance_clock(Duration::from_secs(24 * 3600));
    s.create("c").await;
    assert_eq!(s.sim.exports_created(DOMAIN), 3);
    assert_eq!(s.sim.exports_created("other.example"), 0);
}

#[tokio::test]
async fn list_pages_follow_rel_next() {
    let c = SimConfig {
        google_feed_page_size: 2,
        ..cfg()
    };
    let s = start(c).await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(s.create(&format!("user{i}")).await);
    }
    let mut url = s.url(&format!(
        "/a/feeds/compliance/audit/mail/export/{DOMAIN}?fromDate=2000-01-01%2000:00"
    ));
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = s
            .http
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::OK);
        let feed = r.text().await.expect("body");
        assert!(feed.contains("<feed"));
        pages += 1;
        let entries: Vec<&str> = feed.split("<entry>").skip(1).collect();
        assert!(entries.len() <= 2);
        for e in &entries {
            seen.push(prop(e, "requestId").expect("requestId"));
            assert_eq!(prop(e, "status").as_deref(), Some("PENDING"));
        }
        if entries.len() == 2 {
            assert!(feed.contains("<atom:id>"), "mixed prefixes: {feed}");
            assert!(feed.contains("        <id>"), "mixed prefixes: {feed}");
        }
        match next_link(&feed) {
            Some(next) => {
                assert!(next.starts_with(&s.base), "absolute: {next}");
                assert!(next.contains("start="));
                url = next;
            }
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);

    // Default window is the last three weeks; fromDate filters.
    let list = s.url(&format!("/a/feeds/compliance/audit/mail/export/{DOMAIN}"));
    let feed = s
        .http
        .get(&list)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("s")
        .text()
        .await
        .expect("b");
    assert_eq!(feed.matches("<entry>").count(), 2);
    let r = s
        .http
        .get(format!("{list}?fromDate=2999-01-01%2000:00"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let feed = r.text().await.expect("body");
    assert_eq!(feed.matches("<entry>").count(), 0);
    assert!(next_link(&feed).is_none());
    for bad in [
        "fromDate=yesterday",
        "fromDate=2022-13-01%2000:00",
        "start=!!!",
    ] {
        let r = s
            .http
            .get(format!("{list}?{bad}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    // A domain the admin does not manage: 403, as Google answers.
    let r =
        s.http
            .get(s.url(
                "/a/feeds/compliance/audit/mail/export/other.example?fromDate=2000-01-01%2000:00",
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn delete_marks_then_deletes() {
    let c = SimConfig {
        google_pending_polls: 0,
        google_files_per_export: 1,
        google_file_size: 2_000,
        ..cfg()
    };
    let s = start(c).await;
    assert_eq!(
        s.upload_key(&encoded_rsa_key()).await.0,
        StatusCode::CREATED
    );
    let pending = s.create("quinn").await;
    let (status, body) = s.delete("quinn", &pending).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "PENDING cannot be deleted: {body}"
    );

    let doc = s.poll_done("quinn", &pending).await;
    let url = prop(&doc, "fileUrl0").expect("url");
    let (status, doc) = s.delete("quinn", &pending).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(prop(&doc, "status").as_deref(), Some("MARKED_DELETE"));
    assert_eq!(s.get_file(&url, None).await.status(), StatusCode::OK);
    let (_, doc) = s.status("quinn", &pending).await;
    assert_eq!(prop(&doc, "status").as_deref(), Some("MARKED_DELETE"));
    assert!(prop(&doc, "fileUrl0").is_some());

    let (status, doc) = s.delete("quinn", &pending).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(prop(&doc, "status").as_deref(), Some("DELETED"));
    assert!(prop(&doc, "fileUrl0").is_none());
    assert_eq!(s.get_file(&url, None).await.status(), StatusCode::NOT_FOUND);
    let (_, doc) = s.status("quinn", &pending).await;
    assert_eq!(prop(&doc, "status").as_deref(), Some("DELETED"));
    assert_eq!(s.delete("quinn", &pending).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(s.delete("quinn", "123").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn exports_expire_after_three_weeks() {
    let c = SimConfig {
        google_pending_polls: 0,
        google_files_per_export: 1,
        google_file_size: 2_000,
        ..cfg()
    };
    let s = start(c).await;
    assert_eq!(
        s.upload_key(&encoded_rsa_key()).await.0,
        StatusCode::CREATED
    );
    let id = s.create("quinn").await;
    let doc = s.poll_done("quinn", &id).await;
    let url = prop(&doc, "fileUrl0").expect("url");
    s.sim.advance_clock(Duration::from_secs(20 * 24 * 3600));
    assert_eq!(s.get_file(&url, None).await.status(), StatusCode::OK);
    s.sim.advance_clock(Duration::from_secs(2 * 24 * 3600));
    let (_, doc) = s.status("quinn", &id).await;
    assert_eq!(prop(&doc, "status").as_deref(), Some("EXPIRED"));
    assert!(prop(&doc, "fileUrl0").is_none());
    assert_eq!(s.get_file(&url, None).await.status(), StatusCode::GONE);
    assert_eq!(s.sim.export_status(&id).as_deref(), Some("EXPIRED"));
    assert_eq!(s.delete("quinn", &id).await.0, StatusCode::BAD_REQUEST);
    // Out of the default list window, still listed from an older date.
    let list = s.url(&format!("/a/feeds/compliance/audit/mail/export/{DOMAIN}"));
    let feed = s
        .http
        .get(&list)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("s")
        .text()
        .await
        .expect("b");
    assert_eq!(feed.matches("<entry>").count(), 0);
    let feed = s
        .http
        .get(format!("{list}?fromDate=2000-01-01%2000:00"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("s")
        .text()
        .await
        .expect("b");
    assert_eq!(prop(&feed, "status").as_deref(), Some("EXPIRED"));
}

#[tokio::test]
async fn malformed_create_requests_get_400_not_a_panic() {
    let s = start(cfg()).await;
    let bad_bodies = [
        "",
        "garbage",
        "<atom:entry",
        "<feed/>",
        "<atom:entry><apps:property name='beginDate'/></atom:entry>",
        "<atom:entry><apps:property name='beginDate' value='2022-07-01'/></atom:entry>",
        "<atom:entry><apps:property name='beginDate' value='July 1 2022'/></atom:entry>",
        "<atom:entry><apps:property name='endDate' value='2022-02-30 10:00'/></atom:entry>",
        "<atom:entry><apps:property name='includeDeleted' value='maybe'/></atom:entry>",
        "<atom:entry><apps:property name='packageContent' value='EVERYTHING'/></atom:entry>",
        "<atom:entry><apps:property name='searchQuery' value='&nope;'/></atom:entry>",
        "<atom:entry><apps:property name='endDate' value='2022-01-01 00:00'/>\
         <apps:property name='endDate' value='2022-01-02 00:00'/></atom:entry>",
    ];
    for body in bad_bodies {
        let (status, text) = s.create_raw("quinn", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}: {text}");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json error");
        assert!(json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let (status, text) = s
        .create_raw(
            "quinn",
            &create_body("2022-09-01 00:00", "2022-08-30 20:00", "FULL_MESSAGE"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("after"), "{text}");
    let (status, _) = s
        .create_raw(
            "quinn",
            &create_body("2022-07-01 04:30", "2022-08-30 20:00", "full_message"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Wrong content type.
    let r = s
        .http
        .post(s.export_url("quinn"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = s
        .http
        .post(s.url("/a/feeds/compliance/audit/mail/export/not_a_domain/quinn"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/atom+xml")
        .body(create_body(
            "2022-07-01 04:30",
            "2022-08-30 20:00",
            "FULL_MESSAGE",
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(s.sim.exports_created(DOMAIN), 0);
    assert_eq!(snap(&s).google_exports_created, 0);

    // Sloppy but readable XML (as on the vendor page), unprefixed, extra properties: accepted.
    let sloppy = "<entry><id>>https://x/a/id>/id>\
        <property name=\"beginDate\" value=\"2022-07-01 04:30\"/>\
        <apps:property name='userEmailAddress' value='quinn@example.com'/></entry>";
    let (status, doc) = s.create_raw("quinn", sloppy).await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    assert_eq!(prop(&doc, "beginDate").as_deref(), Some("2022-07-01 04:30"));
    assert_eq!(
        prop(&doc, "packageContent").as_deref(),
        Some("FULL_MESSAGE")
    );
    // An empty entry takes the defaults.
    let (status, _) = s.create_raw("quinn", "<atom:entry/>").await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn large_files_stream_and_concurrent_polls_agree() {
    let c = SimConfig {
        google_pending_polls: 0,
        google_files_per_export: 1,
        google_file_size: 6 * 1024 * 1024,
        ..cfg()
    };
    let s = start(c).await;
    assert_eq!(
        s.upload_key(&encoded_rsa_key()).await.0,
        StatusCode::CREATED
    );
    let id = s.create("quinn").await;
    // Several polls while the file is being encrypted: all wait and see the same result.
    let (a, b, c) = tokio::join!(
        s.status("quinn", &id),
        s.status("quinn", &id),
        s.status("quinn", &id)
    );
    let url = prop(&a.1, "fileUrl0").expect("url");
    for (status, doc) in [a, b, c] {
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(prop(&doc, "status").as_deref(), Some("COMPLETED"));
        assert_eq!(prop(&doc, "fileUrl0").as_deref(), Some(url.as_str()));
    }
    let data = s.get_file(&url, None).await.bytes().await.expect("body");
    // Compressed: the encrypted file is much smaller than the mbox.
    assert!(data.len() < 6 * 1024 * 1024 / 2, "{} bytes", data.len());
    let plain = decrypt(&data);
    assert!(plain.len() >= 6 * 1024 * 1024);
    assert_eq!(
        s.sim.plaintext_sha256(&id, 0).as_deref(),
        Some(sha256_hex(&plain).as_str())
    );
}

#[tokio::test]
async fn work_dir_holds_the_key_file_and_the_export_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = SimConfig {
        google_pending_polls: 0,
        google_files_per_export: 1,
        google_file_size: 1_000,
        work_dir: Some(dir.path().to_path_buf()),
        ..cfg()
    };
    let s = start(c).await;
    let key_file = s.sim.service_account_key_file();
    assert_eq!(key_file.parent(), Some(dir.path()));
    assert!(key_file.exists());
    assert_eq!(
        s.upload_key(&encoded_rsa_key()).await.0,
        StatusCode::CREATED
    );
    let id = s.create("quinn").await;
    s.poll_done("quinn", &id).await;
    let encrypted: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "gpg"))
        .collect();
    assert_eq!(encrypted.len(), 1, "{encrypted:?}");
    let Sim { sim, _task, .. } = s;
    _task.abort();
    let _ = _task.await;
    drop(sim);
    assert!(!key_file.exists(), "key file removed with the simulator");
    assert!(
        walk(dir.path()).is_empty(),
        "export files removed with the simulator"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn standard_google_audience_is_accepted() {
    let s = start(cfg()).await;
    let jwt = Jwt::from_key_file(&s);
    let now = chrono::Utc::now().timestamp();
    // Google's auth library signs for the standard endpoint whatever the key file says; other
    // clients sign for the key file's token_uri (the simulator's own URL).
    for aud in [
        "https://oauth2.googleapis.com/token",
        jwt.token_uri.as_str(),
    ] {
        let assertion = jwt.sign(jwt.claims("admin@example.com", aud, now, now + 3600));
        let (status, body) = grant(&s, &jwt.token_uri, &assertion).await;
        assert_eq!(status, StatusCode::OK, "{aud}: {body}");
    }
    assert_eq!(s.sim.tokens_issued(), 2);
}

#[tokio::test]
async fn exports_of_a_domain_the_admin_does_not_manage_are_forbidden() {
    let s = start(cfg()).await;
    let other = |path: &str| s.url(&format!("/a/feeds/compliance/audit/mail/export/{path}"));
    let r = s
        .http
        .post(other("other.example/quinn"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/atom+xml")
        .body(create_body(
            "2022-07-01 04:30",
            "2022-08-30 20:00",
            "FULL_MESSAGE",
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], 403);
    assert_eq!(body["error"]["errors"][0]["reason"], "forbidden");
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(s.sim.exports_created("other.example"), 0);
    for path in ["other.example/quinn/12345", "other.example"] {
        let r = s
            .http
            .get(other(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let r = s
        .http
        .delete(other("other.example/quinn/12345"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The admin's own domain is served.
    s.create("quinn").await;
}

/// Every entry of the default list (last three weeks), following `rel="next"`:
/// (requestId, userEmailAddress, requestDate, status) per entry, and the page count.
async fn list_all(s: &Sim) -> (Vec<[String; 4]>, usize) {
    let mut url = s.url(&format!("/a/feeds/compliance/audit/mail/export/{DOMAIN}"));
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let r = s
            .http
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::OK);
        let feed = r.text().await.expect("body");
        pages += 1;
        for e in feed.split("<entry>").skip(1) {
            let p = |n: &str| prop(e, n).unwrap_or_default();
            all.push([
                p("requestId"),
                p("userEmailAddress"),
                p("requestDate"),
                p("status"),
            ]);
        }
        match next_link(&feed) {
            Some(next) => url = next,
            None => return (all, pages),
        }
        assert!(pages < 50, "too many pages");
    }
}

#[tokio::test]
async fn seeded_history_pages_past_rel_next_and_keeps_the_daily_limit() {
    let c = SimConfig {
        google_seed_history: true,
        google_daily_limit: 8,
        ..cfg()
    };
    assert_eq!(c.google_feed_page_size, 100);
    let s = start(c.clone()).await;
    let (entries, pages) = list_all(&s).await;
    assert!(entries.len() > 100, "{} entries", entries.len());
    assert!(pages >= 2, "rel=next reached");
    let mut per_day = std::collections::HashMap::new();
    for [_, user, date, status] in &entries {
        assert!(user.ends_with("@example.com"), "{user}");
        assert!(status == "DELETED" || status == "ERROR", "{status}");
        *per_day.entry(date[..10].to_string()).or_insert(0) += 1;
    }
    assert!(per_day.len() >= 20, "{} days", per_day.len());
    assert!(per_day.values().all(|n| *n <= 8), "{per_day:?}");
    // No seeded request today: the whole daily limit is left.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(!per_day.contains_key(&today));
    for i in 0..8 {
        s.create(&format!("user{i}")).await;
    }
    let (status, _) = s
        .create_raw(
            "user9",
            &create_body("2022-07-01 04:30", "2022-08-30 20:00", "FULL_MESSAGE"),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Deterministic: another simulator seeds the same users, dates and outcomes.
    let other = start(c).await;
    let (again, _) = list_all(&other).await;
    let strip = |v: &[[String; 4]]| -> Vec<[String; 3]> {
        v.iter()
            .map(|[_, u, d, st]| [u.clone(), d.clone(), st.clone()])
            .collect()
    };
    assert_eq!(strip(&again), strip(&entries));
}

// ---------- time scale (issue 12 item 4) ----------

/// `YYYY-MM-DD HH:MM` property of an entry, as a time.
fn prop_time(doc: &str, name: &str) -> chrono::NaiveDateTime {
    let v = prop(doc, name).unwrap_or_else(|| panic!("no {name} in {doc}"));
    chrono::NaiveDateTime::parse_from_str(&v, "%Y-%m-%d %H:%M").expect("date")
}

#[tokio::test]
async fn at_a_high_time_scale_exports_take_hours_of_simulated_time_and_little_real_time() {
    // 36000 simulated seconds per real second: a 6-hour export takes 0.6 s.
    let mut c = SimConfig {
        google_files_per_export: 1,
        google_file_size: 2_000,
        time_scale: 36_000.0,
        ..cfg()
    };
    crate::timing::Timing::Realistic.apply(&mut c);
    let s = start(c).await;
    assert_eq!(
        s.upload_key(&encoded_rsa_key()).await.0,
        StatusCode::CREATED
    );
    let real = std::time::Instant::now();
    let id = s.create("rita").await;
    // Polls do not hurry it: PENDING until 6 simulated hours have passed.
    for _ in 0..3 {
        let (_, doc) = s.status("rita", &id).await;
        assert_eq!(prop(&doc, "status").as_deref(), Some("PENDING"), "{doc}");
    }
    let doc = loop {
        let (_, doc) = s.status("rita", &id).await;
        if prop(&doc, "status").as_deref() != Some("PENDING") {
            break doc;
        }
        assert!(real.elapsed() < Duration::from_secs(20), "never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(prop(&doc, "status").as_deref(), Some("COMPLETED"), "{doc}");
    let took = prop_time(&doc, "completedDate") - prop_time(&doc, "requestDate");
    assert!(took >= chrono::TimeDelta::hours(6), "simulated {took}");
    assert!(
        real.elapsed() >= Duration::from_millis(500),
        "{:?}",
        real.elapsed()
    );
}

#[tokio::test]
async fn at_a_high_time_scale_marked_delete_is_cleaned_up_and_exports_expire() {
    // 1e6 simulated seconds per real second: the 24 h cleanup takes 86 ms, the 3-week
    // retention 1.8 s.
    let c = SimConfig {
        google_pending_polls: 0,
        google_files_per_export: 1,
        google_file_size: 2_000,
        time_scale: 1_000_000.0,
        ..cfg()
    };
    let s = start(c).await;
    assert_eq!(
        s.upload_key(&encoded_rsa_key()).await.0,
        StatusCode::CREATED
    );
    let marked = s.create("quinn").await;
    let kept = s.create("rita").await;
    let doc = s.poll_done("quinn", &marked).await;
    let marked_url = prop(&doc, "fileUrl0").expect("url");
    let doc = s.poll_done("rita", &kept).await;
    let kept_url = prop(&doc, "fileUrl0").expect("url");

    // One DELETE leaves it MARKED_DELETE; Google's cleanup job finishes it within 24 h
    // without another call.
    let (status, doc) = s.delete("quinn", &marked).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(prop(&doc, "status").as_deref(), Some("MARKED_DELETE"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, doc) = s.status("quinn", &marked).await;
    assert_eq!(prop(&doc, "status").as_deref(), Some("DELETED"), "{doc}");
    assert_eq!(
        s.get_file(&marked_url, None).await.status(),
        StatusCode::NOT_FOUND
    );

    // The other one stays COMPLETED (downloadable) until the 3-week retention ends.
    assert_eq!(s.get_file(&kept_url, None).await.status(), StatusCode::OK);
    let real = std::time::Instant::now();
    let doc = loop {
        let (_, doc) = s.status("rita", &kept).await;
        if prop(&doc, "status").as_deref() != Some("COMPLETED") {
            break doc;
        }
        assert!(real.elapsed() < Duration::from_secs(30), "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(prop(&doc, "status").as_deref(), Some("EXPIRED"), "{doc}");
    assert_eq!(s.get_file(&kept_url, None).await.status(), StatusCode::GONE);
}

#[tokio::test]
async fn marked_delete_waits_for_the_cleanup_at_real_speed() {
    // Time scale 1 (the default): a MARKED_DELETE export stays so until a day passes.
    let c = SimConfig {
        google_pending_polls: 0,
        google_files_per_export: 1,
        google_file_size: 2_000,
        ..cfg()
    };
    let s = start(c).await;
    assert_eq!(
        s.upload_key(&encoded_rsa_key()).await.0,
        StatusCode::CREATED
    );
    let id = s.create("quinn").await;
    s.poll_done("quinn", &id).await;
    assert_eq!(s.delete("quinn", &id).await.0, StatusCode::OK);
    s.sim.advance_clock(Duration::from_secs(23 * 3600));
    assert_eq!(s.sim.export_status(&id).as_deref(), Some("MARKED_DELETE"));
    s.sim.advance_clock(Duration::from_secs(3600));
    assert_eq!(s.sim.export_status(&id).as_deref(), Some("DELETED"));
}
