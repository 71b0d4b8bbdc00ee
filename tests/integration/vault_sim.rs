//! The shipped `vault-mail-export.yaml` against the built-in Vault simulator, whose exports
//! hold the documented file set ("Vault export contents"): archives, metadata, results count,
//! checksums, and error reports when an account is unknown. A complete export passes; one
//! account short, or an error report, fails naming the account and the figures, unless the
//! workflow accepts partial exports, which the outputs, the report and the manifest then say.
use std::path::Path;

use auditflow_sim::{self as sim, SimConfig, SimHandle};
use base64::Engine as _;
use md5::Digest as _;
use serde_json::Value;

use crate::common::*;

fn quick(directory: Option<&[&str]>, short: Option<&str>) -> SimConfig {
    SimConfig {
        vault_pending_polls: 1,
        vault_mbox_size: 4096,
        vault_directory: directory.map(|d| d.iter().map(|a| (*a).to_string()).collect()),
        vault_short_account: short.map(str::to_string),
        ..SimConfig::default()
    }
}

/// Runs the shipped workflow for `accounts` into `dir/out`; returns the exit code, stdout
/// and stderr.
async fn export(
    h: &SimHandle,
    dir: &Path,
    accounts: &str,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let mut args: Vec<String> = vec![
        "run".into(),
        wf("google/vault-mail-export.yaml"),
        "-i".into(),
        format!("accounts={accounts}"),
        "-i".into(),
        "export_name=q4-audit".into(),
        "-i".into(),
        "poll_interval=50ms".into(),
        "-i".into(),
        "out_dir=out".into(),
        "--state-dir".into(),
        "state".into(),
        "--report-json".into(),
        "report.json".into(),
    ];
    for x in extra {
        args.extend(["-i".to_string(), (*x).to_string()]);
    }
    let out = auditflow_async(args, h.env(), dir.to_path_buf()).await;
    let (o, e) = text(&out);
    (out.status.code(), o, e)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("file")).expect("json")
}

/// Messages (lines starting `From `) in an mbox file.
fn messages_in(path: &Path) -> u64 {
    let text = std::fs::read(path).expect("mbox");
    text.split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"From "))
        .count() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn the_full_documented_file_set_is_verified_and_kept() {
    let h = sim::start(quick(None, None)).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    let (code, o, e) = export(&h, d.path(), "alice@example.com,bob@example.com", &[]).await;
    assert_eq!(code, Some(0), "{o}\n{e}");
    let out = d.path().join("out");
    let archives = out.join("archives");
    for kept in [
        "q4-audit-1.zip",
        "q4-audit-2.zip",
        "q4-audit-metadata.xml",
        "q4-audit-results-count.csv",
        "q4-audit-checksums.csv",
    ] {
        assert!(archives.join(kept).is_file(), "{kept} kept: {o}");
    }
    let counts = std::fs::read_to_string(archives.join("q4-audit-results-count.csv")).unwrap();
    for a in ["alice@example.com", "bob@example.com"] {
        let n = messages_in(&out.join(format!("{a}.mbox")));
        assert!(n > 0);
        assert!(
            counts.contains(&format!("{a},{n}\r\n")),
            "{a}: {n} in {counts}"
        );
    }
    assert!(
        !out.join("q4-audit-metadata.xml").exists(),
        "only mbox files are extracted"
    );
    let m = read_json(&out.join("manifest.json"));
    let downloads = m["artifacts"]
        .as_object()
        .unwrap()
        .values()
        .filter(|a| a["kind"] == "download")
        .count();
    assert_eq!(
        downloads, 5,
        "every object of the export is in the manifest: {m:#}"
    );
    assert!(m["runs"][0].get("partial").is_none(), "{m:#}");
    let r = read_json(&d.path().join("report.json"));
    assert_eq!(r["outputs"]["partial"], false, "{r:#}");
    assert_eq!(
        r["outputs"]["evidence_files"].as_array().map(Vec::len),
        Some(3),
        "{r:#}"
    );
    let v = auditflow(&["verify", "out"], &[], d.path());
    assert_eq!(v.status.code(), Some(0), "{:?}", text(&v));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_short_of_its_results_count_fails_naming_it_and_the_counts() {
    let h = sim::start(quick(None, Some("bob@example.com")))
        .await
        .unwrap();
    let d = tempfile::tempdir().unwrap();
    let (code, o, e) = export(&h, d.path(), "alice@example.com,bob@example.com", &[]).await;
    assert_eq!(code, Some(1), "{o}\n{e}");
    let n = messages_in(&d.path().join("out/bob@example.com.mbox"));
    let want = format!(
        "account bob@example.com: the results-count file says {} messages, {n} were extracted (1 missing)",
        n + 1
    );
    assert!(e.contains(&want), "{want}\n{e}");
    assert!(!e.contains("account alice@example.com"), "{e}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_account_fails_with_the_error_reports_or_is_kept_as_partial() {
    let directory: &[&str] = &["alice@example.com", "bob@example.com"];
    let h = sim::start(quick(Some(directory), None)).await.unwrap();
    // A custodian typo: Vault exports no mail for it and says so in its error reports.
    let accounts = "alice@example.com,alcie@example.com";
    let d = tempfile::tempdir().unwrap();
    let (code, o, e) = export(&h, d.path(), accounts, &[]).await;
    assert_eq!(code, Some(1), "{o}\n{e}");
    assert!(
        e.contains("the Vault export is incomplete")
            && e.contains("error.csv (the export met errors")
            && e.contains("q4-audit-account-exceptions.csv (the export met errors")
            && e.contains("alcie@example.com,ACCOUNT_NOT_FOUND"),
        "{e}"
    );
    assert!(!d.path().join("out/alcie@example.com.mbox").exists());

    let d = tempfile::tempdir().unwrap();
    let (code, o, e) = export(&h, d.path(), accounts, &["accept_partial=true"]).await;
    assert_eq!(code, Some(0), "{o}\n{e}");
    assert!(o.contains("PARTIAL result of `download`"), "{o}");
    let r = read_json(&d.path().join("report.json"));
    assert_eq!(r["outputs"]["partial"], true, "{r:#}");
    let problems = r["partial"]["download"]
        .as_array()
        .expect("report: partial");
    assert_eq!(problems.len(), 2, "{r:#}");
    let m = read_json(&d.path().join("out/manifest.json"));
    let listed = m["runs"][0]["partial"]["download"]
        .as_array()
        .expect("manifest: partial");
    assert!(
        listed
            .iter()
            .any(|p| p.as_str().is_some_and(|p| p.contains("alcie@example.com"))),
        "{m:#}"
    );
    assert!(d.path().join("out/alice@example.com.mbox").is_file());
    // The report for people says the export is partial, on top and per problem.
    let report = crate::common::auditflow(&["report", "out", "--format", "md"], &[], d.path());
    let (md, _) = crate::common::text(&report);
    assert!(
        md.contains("Not complete: the vendor reported the export incomplete (2 problem(s)"),
        "{md}"
    );
    assert!(md.contains("Partial result, missing: download:"), "{md}");
    h.shutdown().await;
}

/// A small client written from Google's references (Vault v1 REST, Cloud Storage JSON API,
/// the error format), not from `auditflow::vendors`, as google-api-python-client and
/// google-cloud-storage call them: one reqwest client, one connection per origin.
struct GoogleClient {
    http: reqwest::Client,
    token: String,
    vault: String,
    storage: String,
}

impl GoogleClient {
    fn new(h: &SimHandle) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        GoogleClient {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client"),
            token: h.credentials.google_access_token.clone(),
            vault: h.vault_url.clone(),
            storage: h.storage_url.clone(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Vec<u8>) {
        let r = req.bearer_auth(&self.token).send().await.expect("answer");
        let status = r.status().as_u16();
        (status, r.bytes().await.expect("body").to_vec())
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let (status, body) = self.send(req).await;
        let v = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{status}: not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        (status, v)
    }
}

/// Google's error format: `{"error": {"code", "message", "status"}}` with `code` the HTTP status.
fn assert_google_error(status: u16, v: &Value, want: u16, state: &str) {
    assert_eq!(status, want, "{v}");
    assert_eq!(v["error"]["code"], want, "{v}");
    assert_eq!(v["error"]["status"], state, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn googles_own_client_paths_are_served_and_never_lead_off_the_simulator() {
    let h = sim::start(quick(None, None)).await.unwrap();
    // The printed environment names the service-account key file Google's libraries read.
    let env: std::collections::HashMap<String, String> = h.env().into_iter().collect();
    let key_file = env
        .get("GOOGLE_APPLICATION_CREDENTIALS")
        .expect("GOOGLE_APPLICATION_CREDENTIALS in the printed environment");
    let key = read_json(Path::new(key_file));
    assert_eq!(key["type"], "service_account", "{key_file}");
    assert!(
        key["token_uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1")),
        "token_uri {}",
        key["token_uri"]
    );
    let c = GoogleClient::new(&h);
    let (st, matter) = c
        .json(
            c.http
                .post(format!("{}/v1/matters", c.vault))
                .json(&serde_json::json!({
                    "name": "client paths", "description": "reference client"
                })),
        )
        .await;
    assert_eq!(st, 200, "{matter}");
    let id = matter["matterId"].as_str().expect("matterId").to_string();
    // Methods the simulator does not serve: Google's JSON error, and the connection is kept.
    for (method, path) in [
        (reqwest::Method::POST, format!("/v1/matters/{id}:close")),
        (reqwest::Method::PUT, format!("/v1/matters/{id}")),
        (reqwest::Method::DELETE, format!("/v1/matters/{id}")),
    ] {
        let (st, v) = c
            .json(
                c.http
                    .request(method, format!("{}{path}", c.vault))
                    .json(&serde_json::json!({"name": "x"})),
            )
            .await;
        assert_google_error(st, &v, 501, "UNIMPLEMENTED");
    }
    let (st, v) = c.json(c.http.get(format!("{}/v1/nowhere", c.vault))).await;
    assert_google_error(st, &v, 404, "NOT_FOUND");
    let (st, export) = c
        .json(
            c.http
                .post(format!("{}/v1/matters/{id}/exports", c.vault))
                .json(&serde_json::json!({
                    "name": "client-paths",
                    "query": {"corpus": "MAIL", "dataScope": "ALL_DATA", "searchMethod": "ACCOUNT",
                              "accountInfo": {"emails": ["alice@example.com"]}},
                    "exportOptions": {"mailOptions": {"exportFormat": "MBOX"}}
                })),
        )
        .await;
    assert_eq!(st, 200, "{export}");
    let eid = export["id"].as_str().expect("id").to_string();
    let mut done = Value::Null;
    for _ in 0..10 {
        let (_, e) = c
            .json(
                c.http
                    .get(format!("{}/v1/matters/{id}/exports/{eid}", c.vault)),
            )
            .await;
        if e["status"] == "COMPLETED" {
            done = e;
            break;
        }
    }
    let files = done["cloudStorageSink"]["files"]
        .as_array()
        .expect("files")
        .clone();
    assert_eq!(files.len(), 4, "{done}");
    for f in &files {
        let (bucket, object) = (
            f["bucketName"].as_str().expect("bucket"),
            f["objectName"].as_str().expect("object"),
        );
        let encoded: String = url::form_urlencoded::byte_serialize(object.as_bytes())
            .collect::<String>()
            .replace('+', "%20");
        let (st, meta) = c
            .json(
                c.http
                    .get(format!("{}/storage/v1/b/{bucket}/o/{encoded}", c.storage)),
            )
            .await;
        assert_eq!(st, 200, "{meta}");
        for link in ["selfLink", "mediaLink"] {
            let l = meta[link].as_str().expect("link");
            assert!(
                l.starts_with(&c.storage),
                "{link} {l} is not the simulator's"
            );
        }
        // What google-cloud-storage downloads from, then the mediaLink as given.
        let download = format!(
            "{}/download/storage/v1/b/{bucket}/o/{encoded}?alt=media",
            c.storage
        );
        let media = meta["mediaLink"].as_str().expect("mediaLink").to_string();
        for url in [download, media] {
            let (st, bytes) = c.send(c.http.get(&url)).await;
            assert_eq!(st, 200, "{url}");
            assert_eq!(bytes.len().to_string(), f["size"].as_str().expect("size"));
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&bytes));
            assert_eq!(f["md5Hash"], md5.as_str(), "{url}");
        }
        let (st, v) = c
            .json(
                c.http
                    .post(format!("{}/storage/v1/b/{bucket}/o/{encoded}", c.storage))
                    .body("x"),
            )
            .await;
        assert_google_error(st, &v, 501, "UNIMPLEMENTED");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unserved_post_keeps_the_connection_open() {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let h = sim::start(quick(None, None)).await.unwrap();
    let addr = h.vault_url.trim_start_matches("http://").to_string();
    let token = h.credentials.google_access_token.clone();
    let mut s = tokio::io::BufReader::new(tokio::net::TcpStream::connect(&addr).await.unwrap());
    // A body larger than what the server reads ahead with the headers.
    let body = format!(r#"{{"name": "{}"}}"#, "x".repeat(1 << 20));
    let requests = [
        format!("POST /v1/matters/m1:close HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
        format!("GET /v1/matters HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"),
    ];
    let mut statuses = Vec::new();
    let exchange = async {
        for req in requests {
            s.get_mut().write_all(req.as_bytes()).await.unwrap();
            let mut status = String::new();
            s.read_line(&mut status).await.unwrap();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                s.read_line(&mut line).await.unwrap();
                let l = line.trim().to_ascii_lowercase();
                if l.is_empty() {
                    break;
                }
                assert_ne!(l, "connection: close", "{status}");
                if let Some(n) = l.strip_prefix("content-length:") {
                    length = n.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            s.read_exact(&mut body).await.unwrap();
            let v: Value = serde_json::from_slice(&body).unwrap();
            statuses.push((
                status.split_whitespace().nth(1).unwrap_or("").to_string(),
                v,
            ));
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), exchange)
        .await
        .expect("both answers within 30 s on one connection");
    assert_eq!(statuses[0].0, "501", "{:?}", statuses[0].1);
    assert_eq!(statuses[0].1["error"]["status"], "UNIMPLEMENTED");
    assert_eq!(
        statuses[1].0, "200",
        "the same connection answers: {:?}",
        statuses[1].1
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_shows_each_custodians_messages_against_vaults_count() {
    let h = sim::start(quick(None, Some("bob@example.com")))
        .await
        .unwrap();
    let d = tempfile::tempdir().unwrap();
    let accounts = "alice@example.com,bob@example.com";
    let (code, o, e) = export(&h, d.path(), accounts, &["accept_partial=true"]).await;
    assert_eq!(code, Some(0), "{o}\n{e}");
    let alice = messages_in(&d.path().join("out/alice@example.com.mbox"));
    let bob = messages_in(&d.path().join("out/bob@example.com.mbox"));
    let m = read_json(&d.path().join("out/manifest.json"));
    let counts = &m["runs"][0]["custodians"]["download"]["counts"];
    assert_eq!(counts[1]["custodian"], "bob@example.com", "{m:#}");
    assert_eq!(counts[1]["exported"], bob, "{m:#}");
    assert_eq!(counts[1]["vendor_count"], bob + 1, "{m:#}");
    let report = auditflow(&["report", "out", "--format", "md"], &[], d.path());
    let (md, _) = text(&report);
    assert!(
        md.contains(&format!(
            "| alice@example.com | {alice} | {alice} | match | download (google) |"
        )),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "| bob@example.com | {bob} | {} | **short** | download (google) |",
            bob + 1
        )),
        "{md}"
    );
    assert!(
        md.contains("1 custodian(s) have fewer messages exported than the vendor counted"),
        "{md}"
    );
    assert!(
        md.contains("| google |"),
        "requests to Google counted: {md}"
    );
    let html = auditflow(&["report", "out"], &[], d.path());
    let (html, _) = text(&html);
    assert!(
        html.contains(&format!(
            "<tr><td>bob@example.com</td><td>{bob}</td><td>{}</td><td class=\"problem\">short</td>",
            bob + 1
        )),
        "{html}"
    );
    h.shutdown().await;
}
