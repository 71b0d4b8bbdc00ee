//! Tests of the simulated Vault and Cloud Storage over real HTTP (the whole simulator started).
use std::io::Read as _;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use md5::{Digest as _, Md5};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{SimConfig, SimHandle};

const EDISCOVERY: &str = "https://www.googleapis.com/auth/ediscovery";
const STORAGE_RO: &str = "https://www.googleapis.com/auth/devstorage.read_only";

async fn start(cfg: SimConfig) -> SimHandle {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = SimConfig {
        mailstore_tls: false,
        vault_pending_polls: 2,
        vault_mbox_size: 6_000,
        ..cfg
    };
    crate::start(cfg).await.expect("sim starts")
}

struct Client {
    http: reqwest::Client,
    token: String,
    vault: String,
    storage: String,
}

impl Client {
    fn new(s: &SimHandle) -> Client {
        Client {
            http: reqwest::Client::new(),
            token: s.credentials.google_access_token.clone(),
            vault: s.vault_url.clone(),
            storage: s.storage_url.clone(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("request");
        let status = r.status();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn matter(&self, name: &str) -> String {
        let url = format!("{}/v1/matters", self.vault);
        let (st, m) = self
            .call(
                reqwest::Method::POST,
                &url,
                Some(json!({"name": name, "description": "d"})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{m}");
        assert_eq!(m["state"], "OPEN");
        assert_eq!(m["name"], name);
        m["matterId"].as_str().expect("matterId").to_string()
    }

    async fn export(&self, matter: &str, name: &str, emails: &[&str]) -> (StatusCode, Value) {
        let url = format!("{}/v1/matters/{matter}/exports", self.vault);
        self.call(reqwest::Method::POST, &url, Some(export_body(name, emails)))
            .await
    }

    async fn get_export(&self, matter: &str, id: &str) -> (StatusCode, Value) {
        let url = format!("{}/v1/matters/{matter}/exports/{id}", self.vault);
        self.call(reqwest::Method::GET, &url, None).await
    }

    /// The bytes of a `cloudStorageSink.files[]` entry (`alt=media`).
    async fn media_bytes(&self, f: &Value) -> Vec<u8> {
        let url = self.object_url(
            f["bucketName"].as_str().expect("bucket"),
            f["objectName"].as_str().expect("object"),
        );
        let r = self
            .http
            .get(format!("{url}?alt=media"))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("media");
        assert_eq!(r.status(), StatusCode::OK);
        r.bytes().await.expect("bytes").to_vec()
    }

    async fn media_text(&self, f: &Value) -> String {
        String::from_utf8(self.media_bytes(f).await).expect("utf-8")
    }

    fn object_url(&self, bucket: &str, object: &str) -> String {
        let enc: String = url::form_urlencoded::byte_serialize(object.as_bytes()).collect();
        format!(
            "{}/storage/v1/b/{bucket}/o/{}",
            self.storage,
            enc.replace('+', "%20")
        )
    }
}

fn export_body(name: &str, emails: &[&str]) -> Value {
    json!({
        "name": name,
        "query": {
            "corpus": "MAIL",
            "dataScope": "ALL_DATA",
            "searchMethod": "ACCOUNT",
            "accountInfo": {"emails": emails},
            "startTime": "2025-01-01T00:00:00Z",
            "endTime": "2025-06-30T00:00:00Z",
            "terms": "subject:audit",
            "timeZone": "Etc/GMT"
        },
        "exportOptions": {"mailOptions": {"exportFormat": "MBOX"}}
    })
}

async fn poll_to_end(c: &Client, matter: &str, id: &str) -> Value {
    for _ in 0..10 {
        let (st, e) = c.get_export(matter, id).await;
        assert_eq!(st, StatusCode::OK, "{e}");
        if e["status"] != "IN_PROGRESS" {
            return e;
        }
    }
    panic!("export {id} never left IN_PROGRESS");
}

#[tokio::test]
async fn an_export_completes_and_its_zips_download_with_ranges_and_md5() {
    let s = start(SimConfig::default()).await;
    let c = Client::new(&s);
    let matter = c.matter("Case 7").await;
    let (st, e) = c
        .export(
            &matter,
            "mail export",
            &["alice@example.com", "Bob@Example.com"],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{e}");
    assert_eq!(e["status"], "IN_PROGRESS");
    assert_eq!(e["matterId"], matter.as_str());
    assert_eq!(e["requester"]["email"], "admin@example.com");
    assert_eq!(e["query"]["accountInfo"]["emails"][1], "Bob@Example.com");
    assert!(e.get("cloudStorageSink").is_none());
    let id = e["id"].as_str().expect("id").to_string();

    let (_, first) = c.get_export(&matter, &id).await;
    assert_eq!(first["status"], "IN_PROGRESS", "one poll is not enough");
    let done = poll_to_end(&c, &matter, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let files = done["cloudStorageSink"]["files"].as_array().expect("files");
    let names: Vec<&str> = files
        .iter()
        .map(|f| {
            f["objectName"]
                .as_str()
                .expect("name")
                .rsplit('/')
                .next()
                .expect("base")
        })
        .collect();
    assert_eq!(
        names,
        [
            "mail export-1.zip",
            "mail export-2.zip",
            "mail export-metadata.xml",
            "mail export-results-count.csv",
            "mail export-checksums.csv"
        ]
    );
    let mut total: u64 = files[2..]
        .iter()
        .map(|f| {
            f["size"]
                .as_str()
                .expect("size")
                .parse::<u64>()
                .expect("int")
        })
        .sum();
    for (f, account) in files.iter().zip(["alice@example.com", "bob@example.com"]) {
        let bucket = f["bucketName"].as_str().expect("bucket");
        let object = f["objectName"].as_str().expect("object");
        assert!(object.contains('/') && object.contains(' '), "{object}");
        let size: u64 = f["size"]
            .as_str()
            .expect("size string")
            .parse()
            .expect("int64");
        total += size;
        let url = c.object_url(bucket, object);

        let (st, meta) = c.call(reqwest::Method::GET, &url, None).await;
        assert_eq!(st, StatusCode::OK, "{meta}");
        assert_eq!(meta["size"], f["size"]);
        assert_eq!(meta["md5Hash"], f["md5Hash"]);
        assert_eq!(meta["name"], object);

        // An unencoded slash in the object name is another path: 404.
        let raw = format!("{}/storage/v1/b/{bucket}/o/{object}", c.storage);
        assert_eq!(
            c.call(reqwest::Method::GET, &raw, None).await.0,
            StatusCode::NOT_FOUND
        );

        let media = format!("{url}?alt=media");
        let r = c
            .http
            .get(&media)
            .bearer_auth(&c.token)
            .send()
            .await
            .expect("media");
        assert_eq!(r.status(), StatusCode::OK);
        let hash = r.headers()["x-goog-hash"]
            .to_str()
            .expect("ascii")
            .to_string();
        let bytes = r.bytes().await.expect("bytes").to_vec();
        assert_eq!(bytes.len() as u64, size);
        let md5 = STANDARD.encode(Md5::digest(&bytes));
        assert_eq!(f["md5Hash"], md5.as_str());
        assert!(
            hash.contains(&format!("md5={md5}")) && hash.contains("crc32c="),
            "{hash}"
        );

        let r = c
            .http
            .get(&media)
            .bearer_auth(&c.token)
            .header("Range", "bytes=100-")
            .send()
            .await
            .expect("range");
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            r.headers()["content-range"].to_str().expect("ascii"),
            format!("bytes 100-{}/{size}", size - 1)
        );
        assert!(r.headers()["x-goog-hash"]
            .to_str()
            .expect("ascii")
            .contains(&md5));
        assert_eq!(r.bytes().await.expect("tail").as_ref(), &bytes[100..]);

        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
        let mut mbox = String::new();
        zip.by_name(&format!("{account}.mbox"))
            .expect("the account's mbox")
            .read_to_string(&mut mbox)
            .expect("utf-8 mbox");
        assert!(mbox.starts_with("From "), "{}", &mbox[..40]);
    }
    let counts = c.media_text(&files[3]).await;
    assert!(
        counts.starts_with("Account,Message Count\r\nalice@example.com,"),
        "{counts}"
    );
    let sums = c.media_text(&files[4]).await;
    for f in &files[..4] {
        let name = f["objectName"]
            .as_str()
            .expect("name")
            .rsplit('/')
            .next()
            .expect("base");
        let md5 = STANDARD
            .decode(f["md5Hash"].as_str().expect("md5"))
            .expect("base64");
        let hex = hex::encode(&md5);
        assert!(
            sums.contains(&format!("{name},{hex}\r\n")),
            "{name}: {sums}"
        );
    }
    assert_eq!(done["stats"]["sizeInBytes"], total.to_string().as_str());
    let n: u64 = done["stats"]["exportedArtifactCount"]
        .as_str()
        .expect("count")
        .parse()
        .expect("int");
    assert!(n >= 2);
    s.shutdown().await;
}

#[tokio::test]
async fn an_unknown_account_gets_an_exception_and_no_mail_and_a_short_one_is_counted_in_full() {
    let s = start(SimConfig {
        vault_directory: Some(vec!["alice@example.com".into(), "bob@example.com".into()]),
        vault_short_account: Some("bob@example.com".into()),
        ..SimConfig::default()
    })
    .await;
    let c = Client::new(&s);
    let matter = c.matter("Typo").await;
    let accounts = ["alice@example.com", "bob@example.com", "alcie@example.com"];
    let (_, e) = c.export(&matter, "q4", &accounts).await;
    let id = e["id"].as_str().expect("id").to_string();
    let done = poll_to_end(&c, &matter, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let files = done["cloudStorageSink"]["files"].as_array().expect("files");
    let by_name = |n: &str| {
        files
            .iter()
            .find(|f| {
                f["objectName"]
                    .as_str()
                    .is_some_and(|o| o.ends_with(&format!("/{n}")))
            })
            .unwrap_or_else(|| panic!("{n} in {files:?}"))
    };
    let zips = files
        .iter()
        .filter(|f| {
            f["objectName"]
                .as_str()
                .is_some_and(|o| o.ends_with(".zip"))
        })
        .count();
    assert_eq!(zips, 2, "no archive for the unknown account");
    let exceptions = c.media_text(by_name("q4-account-exceptions.csv")).await;
    assert!(exceptions.contains("alcie@example.com"), "{exceptions}");
    let errors = c.media_text(by_name("error.csv")).await;
    assert!(errors.contains("alcie@example.com"), "{errors}");
    let counts = c.media_text(by_name("q4-results-count.csv")).await;
    assert!(!counts.contains("alcie"), "{counts}");
    // bob's mbox holds one message less than the results-count figure.
    let bob_count: u64 = counts
        .lines()
        .find_map(|l| l.strip_prefix("bob@example.com,"))
        .expect("bob's row")
        .trim()
        .parse()
        .expect("a count");
    let zip_bytes = c.media_bytes(by_name("q4-2.zip")).await;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).expect("a zip");
    let mut mbox = String::new();
    zip.by_name("bob@example.com.mbox")
        .expect("bob's mbox")
        .read_to_string(&mut mbox)
        .expect("utf-8");
    let in_mbox = mbox.lines().filter(|l| l.starts_with("From ")).count() as u64;
    assert_eq!(in_mbox + 1, bob_count);
    s.shutdown().await;
}

#[tokio::test]
async fn the_21st_export_in_progress_is_refused_until_one_ends() {
    let s = start(SimConfig::default()).await;
    let c = Client::new(&s);
    let matter = c.matter("Limit").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let (st, e) = c
            .export(&matter, &format!("e{i}"), &["a@example.com"])
            .await;
        assert_eq!(st, StatusCode::OK, "{e}");
        ids.push(e["id"].as_str().expect("id").to_string());
    }
    let (st, e) = c.export(&matter, "e20", &["a@example.com"]).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{e}");
    assert_eq!(e["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(s.vault.exports_in_progress(), 20);
    poll_to_end(&c, &matter, &ids[0]).await;
    let (st, e) = c.export(&matter, "e20", &["a@example.com"]).await;
    assert_eq!(st, StatusCode::OK, "{e}");

    // The list pages through all 21 with nextPageToken.
    let mut seen = 0;
    let mut token = String::new();
    loop {
        let url = format!(
            "{}/v1/matters/{matter}/exports?pageSize=8&pageToken={token}",
            c.vault
        );
        let (st, page) = c.call(reqwest::Method::GET, &url, None).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        seen += page["exports"].as_array().map_or(0, Vec::len);
        match page["nextPageToken"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, 21);
    s.shutdown().await;
}

#[tokio::test]
async fn exports_and_their_objects_are_gone_after_15_days() {
    let s = start(SimConfig::default()).await;
    let c = Client::new(&s);
    let matter = c.matter("Old").await;
    let (_, e) = c.export(&matter, "old", &["a@example.com"]).await;
    let id = e["id"].as_str().expect("id").to_string();
    let done = poll_to_end(&c, &matter, &id).await;
    let f = &done["cloudStorageSink"]["files"][0];
    let url = c.object_url(
        f["bucketName"].as_str().expect("b"),
        f["objectName"].as_str().expect("o"),
    );
    s.vault.advance_clock(Duration::from_secs(14 * 86_400));
    assert_eq!(c.get_export(&matter, &id).await.0, StatusCode::OK);
    s.vault.advance_clock(Duration::from_secs(86_400));
    let (st, err) = c.get_export(&matter, &id).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["status"], "NOT_FOUND");
    let (st, _) = c
        .call(reqwest::Method::GET, &format!("{url}?alt=media"), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    s.shutdown().await;
}

#[tokio::test]
async fn bad_requests_are_refused_in_googles_words() {
    let s = start(SimConfig {
        vault_failing_account: Some("broken@example.com".into()),
        ..SimConfig::default()
    })
    .await;
    let c = Client::new(&s);
    let matter = c.matter("Checks").await;
    let (st, e) = c.export(&matter, "x", &["eve@elsewhere.org"]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e["error"]["message"]
        .as_str()
        .expect("msg")
        .contains("eve@elsewhere.org"));
    let (st, _) = c.export("no-such-matter", "x", &["a@example.com"]).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let mut body = export_body("x", &["a@example.com"]);
    body["query"]["corpsu"] = "MAIL".into();
    let url = format!("{}/v1/matters/{matter}/exports", c.vault);
    let (st, e) = c.call(reqwest::Method::POST, &url, Some(body)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["status"], "INVALID_ARGUMENT");
    let (_, e) = c.export(&matter, "f", &["broken@example.com"]).await;
    let id = e["id"].as_str().expect("id").to_string();
    assert_eq!(poll_to_end(&c, &matter, &id).await["status"], "FAILED");
    // Deleted exports are gone.
    let (st, _) = c
        .call(reqwest::Method::DELETE, &format!("{url}/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(c.get_export(&matter, &id).await.0, StatusCode::NOT_FOUND);
    s.shutdown().await;
}

/// An access token from the simulator's token endpoint with `scope`.
async fn issued_token(s: &SimHandle, scope: &str) -> String {
    let path = s.google.service_account_key_file();
    let key: Value = serde_json::from_slice(&std::fs::read(path).expect("key file")).expect("json");
    let pem = key["private_key"].as_str().expect("pem");
    let rsa =
        <rsa::RsaPrivateKey as rsa::pkcs8::DecodePrivateKey>::from_pkcs8_pem(pem).expect("key");
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": key["client_email"], "scope": scope, "aud": s.google_token_url,
        "sub": s.credentials.google_admin_email, "iat": now, "exp": now + 600,
    });
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    let sig = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(rsa)
        .sign(input.as_bytes())
        .to_bytes();
    let assertion = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
    let r = reqwest::Client::new()
        .post(&s.google_token_url)
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &assertion),
        ])
        .send()
        .await
        .expect("token");
    let v: Value = r.json().await.expect("json");
    v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

#[tokio::test]
async fn tokens_need_the_vault_and_storage_scopes() {
    let s = start(SimConfig::default()).await;
    let mut c = Client::new(&s);
    let url = format!("{}/v1/matters", c.vault);
    c.token = "wrong".into();
    let (st, e) = c.call(reqwest::Method::GET, &url, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(e["error"]["status"], "UNAUTHENTICATED");

    c.token = issued_token(&s, "https://apps-apis.google.com/a/feeds/compliance/audit/").await;
    let (st, e) = c.call(reqwest::Method::GET, &url, None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{e}");

    c.token = issued_token(&s, EDISCOVERY).await;
    let matter = c.matter("Scoped").await;
    let (_, e) = c.export(&matter, "s", &["a@example.com"]).await;
    let id = e["id"].as_str().expect("id").to_string();
    let done = poll_to_end(&c, &matter, &id).await;
    let f = &done["cloudStorageSink"]["files"][0];
    let obj = c.object_url(
        f["bucketName"].as_str().expect("b"),
        f["objectName"].as_str().expect("o"),
    );
    let (st, _) = c.call(reqwest::Method::GET, &obj, None).await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "Vault's scope does not read Storage"
    );

    c.token = issued_token(&s, &format!("{EDISCOVERY} {STORAGE_RO}")).await;
    let (st, _) = c.call(reqwest::Method::GET, &obj, None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(s.stats.snapshot().unauthenticated >= 1);
    s.shutdown().await;
}
