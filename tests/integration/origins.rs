//! Where credentials go (issue 10 item 6) and TLS the way MailStore is deployed, through the
//! real binary: two local servers are two origins; a local HTTPS server with a self-signed
//! CA:TRUE certificate stands in for MailStore Server.
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::case::Case;
use crate::common::{serve, wf, Reply, Seen};

/// Headers a request to another origin must never carry.
const CREDENTIAL_HEADERS: [&str; 6] = [
    "authorization",
    "x-mc-app-id",
    "x-mc-date",
    "x-mc-req-id",
    "cookie",
    "x-api-key",
];

fn assert_anonymous(seen: &[Seen]) {
    assert!(!seen.is_empty(), "the other origin was never asked");
    for s in seen {
        for h in CREDENTIAL_HEADERS {
            assert!(
                !s.headers.contains_key(h),
                "{} {} carried {h}: {:?}",
                s.method,
                s.path,
                s.headers
            );
        }
        assert!(!s.headers.contains_key("referer"), "{:?}", s.headers);
    }
}

fn atom_export(file_urls: &[String]) -> Reply {
    let mut props = String::from(
        "<apps:property name='status' value='COMPLETED'/><apps:property name='requestId' value='7'/>",
    );
    props.push_str(&format!(
        "<apps:property name='numberOfFiles' value='{}'/>",
        file_urls.len()
    ));
    for (i, u) in file_urls.iter().enumerate() {
        props.push_str(&format!("<apps:property name='fileUrl{i}' value='{u}'/>"));
    }
    let body = format!(
        "<?xml version='1.0' encoding='UTF-8'?><entry xmlns='http://www.w3.org/2005/Atom' \
         xmlns:apps='http://schemas.google.com/apps/2006'><id>x</id>{props}</entry>"
    );
    Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/atom+xml".into())],
        body,
        delay: std::time::Duration::ZERO,
    }
}

fn file(body: &str) -> Reply {
    Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        body: body.into(),
        delay: std::time::Duration::ZERO,
    }
}

const GOOGLE_FETCH: &str = r#"
    name: google-fetch
    connections:
      google:
        kind: google
        base_url: "{{ env.GOOGLE_AUDIT_BASE_URL }}"
        credentials: {bearer_token: "{{ env.GOOGLE_ACCESS_TOKEN }}"}
        credential_origins: ["{{ env.STORAGE_ORIGINS }}"]
    defaults:
      retry: {max_attempts: 1}
    steps:
      - id: status
        call: {connection: google, method: GET, path: /a/feeds/compliance/audit/mail/export/example.com/quinn/7}
      - id: download
        download:
          connection: google
          urls: '{{ numbered steps.status.body.properties "fileUrl" }}'
          to: enc
    "#;

/// A Google export whose `fileUrl0` is on another origin and `fileUrl1` on the API's own.
async fn google_export_case(
    allow_storage: bool,
) -> (
    Arc<crate::common::Script>,
    Arc<crate::common::Script>,
    String,
) {
    let (storage, storage_seen) = serve(vec![("/bucket/f0.gpg", vec![file("zero")])]).await;
    let (api, api_seen) = serve(vec![("/a/data/compliance/audit/f1", vec![file("one")])]).await;
    let urls = vec![
        format!("{storage}/bucket/f0.gpg?sig=s1"),
        format!("{api}/a/data/compliance/audit/f1"),
    ];
    api_seen.replies.lock().unwrap().insert(
        "/a/feeds/compliance/audit/mail/export/example.com/quinn/7".into(),
        vec![atom_export(&urls)],
    );
    let ran = Case::yaml(GOOGLE_FETCH)
        .env("GOOGLE_AUDIT_BASE_URL", &api)
        .env("GOOGLE_ACCESS_TOKEN", "ya29.secret-token")
        .env("STORAGE_ORIGINS", if allow_storage { &storage } else { "" })
        .run()
        .await;
    (api_seen, storage_seen, ran.stdout)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_url_on_another_origin_gets_no_token() {
    let (api_seen, storage_seen, stdout) = google_export_case(false).await;
    assert_anonymous(&storage_seen.requests("/bucket/f0.gpg"));
    // The API's own origin still gets the token, for the call and the download.
    for s in api_seen.all() {
        assert_eq!(
            s.headers.get("authorization").map(String::as_str),
            Some("Bearer ya29.secret-token"),
            "{} {}",
            s.method,
            s.path
        );
    }
    assert_eq!(api_seen.requests("/a/data/compliance/audit/f1").len(), 1);
    assert!(
        stdout.contains("is not the origin of connection `google`: sent without its credentials"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_origin_gets_the_token() {
    let (_, storage_seen, stdout) = google_export_case(true).await;
    let seen = storage_seen.requests("/bucket/f0.gpg");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some("Bearer ya29.secret-token")
    );
    assert!(!stdout.contains("sent without its credentials"), "{stdout}");
}

const MIMECAST_CALL: &str = r#"
    name: mimecast-events
    connections:
      mc:
        kind: mimecast
        base_url: "{{ env.MIMECAST_BASE_URL }}"
        credentials:
          access_key: "{{ env.MC_ACCESS_KEY }}"
          secret_key: "{{ env.MC_SECRET_KEY }}"
          app_id: "{{ env.MC_APP_ID }}"
          app_key: "{{ env.MC_APP_KEY }}"
    defaults:
      retry: {max_attempts: 3, initial_interval: 10ms}
    steps:
      - id: events
        call:
          connection: mc
          path: /api/audit/get-audit-events
          json: {data: [{startDateTime: "2024-01-01T00:00:00+0000"}]}
    "#;

fn mimecast_case(api: &str) -> Case {
    Case::yaml(MIMECAST_CALL)
        .env("MIMECAST_BASE_URL", api)
        .env("MC_ACCESS_KEY", "access-key-1")
        .env("MC_SECRET_KEY", "c2VjcmV0LWtleS1ieXRlcw==")
        .env("MC_APP_ID", "app-id-visible")
        .env("MC_APP_KEY", "app-key-1")
}

fn redirect(status: u16, to: &str) -> Reply {
    Reply {
        status,
        headers: vec![("location".into(), to.into())],
        body: String::new(),
        delay: std::time::Duration::ZERO,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_to_another_origin_drops_every_vendor_header() {
    let ok = Reply::json(
        200,
        serde_json::json!({"meta": {"status": 200}, "data": [], "fail": []}),
    );
    let (other, other_seen) = serve(vec![("/landing", vec![ok])]).await;
    let (api, api_seen) = serve(vec![(
        "/api/audit/get-audit-events",
        vec![redirect(302, &format!("{other}/landing?token=in-query"))],
    )])
    .await;
    mimecast_case(&api).run().await;
    let sent = api_seen.requests("/api/audit/get-audit-events");
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].headers.contains_key("x-mc-app-id"),
        "{:?}",
        sent[0].headers
    );
    let landed = other_seen.requests("/landing");
    assert_anonymous(&landed);
    // 302 after a POST is a GET without the signed body.
    assert_eq!(landed[0].method, "GET");
    assert_eq!(landed[0].body, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_307_does_not_replay_a_signed_body_to_another_origin() {
    let (other, other_seen) = serve(vec![]).await;
    let (api, api_seen) = serve(vec![(
        "/api/audit/get-audit-events",
        vec![redirect(307, &format!("{other}/landing"))],
    )])
    .await;
    mimecast_case(&api)
        .code(1)
        .stderr_has("HTTP 307 redirecting to")
        .stderr_has("is not replayed there")
        .run()
        .await;
    assert!(other_seen.all().is_empty(), "{:?}", other_seen.all());
    // A configuration problem: not retried.
    assert_eq!(api_seen.requests("/api/audit/get-audit-events").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn same_origin_redirects_keep_credentials_and_no_referer_is_ever_sent() {
    let (other, other_seen) = serve(vec![(
        "/end",
        vec![Reply::json(200, serde_json::json!([1]))],
    )])
    .await;
    let (api, api_seen) = serve(vec![
        ("/start", vec![redirect(302, "/next?access_token=q-secret")]),
        ("/next", vec![redirect(301, &format!("{other}/end"))]),
    ])
    .await;
    Case::yaml(
        r#"
        name: http-redirects
        connections:
          api:
            kind: http
            base_url: "{{ env.API }}"
            credentials: {bearer_token: "{{ env.TOKEN }}"}
        steps:
          - id: get
            call:
              connection: api
              path: /start
              headers: {X-Api-Key: "{{ env.TOKEN }}", Accept: application/json}
        "#,
    )
    .env("API", &api)
    .env("TOKEN", "bearer-secret")
    .run()
    .await;
    let next = api_seen.requests("/next");
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0].headers.get("authorization").map(String::as_str),
        Some("Bearer bearer-secret")
    );
    for s in api_seen.all() {
        assert!(!s.headers.contains_key("referer"), "{:?}", s.headers);
    }
    let end = other_seen.requests("/end");
    assert_anonymous(&end);
    assert_eq!(
        end[0].headers.get("accept").map(String::as_str),
        Some("application/json")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_redirected_to_another_origin_loses_the_token() {
    let (storage, storage_seen) = serve(vec![("/signed/f0", vec![file("zero")])]).await;
    let (api, api_seen) = serve(vec![]).await;
    let location = format!("{storage}/signed/f0?X-Goog-Signature=abc");
    api_seen.replies.lock().unwrap().extend([
        (
            "/a/feeds/compliance/audit/mail/export/example.com/quinn/7".to_string(),
            vec![atom_export(&[format!("{api}/a/data/compliance/audit/f0")])],
        ),
        (
            "/a/data/compliance/audit/f0".to_string(),
            vec![redirect(302, &location)],
        ),
    ]);
    let ran = Case::yaml(GOOGLE_FETCH)
        .env("GOOGLE_AUDIT_BASE_URL", &api)
        .env("GOOGLE_ACCESS_TOKEN", "ya29.secret-token")
        .env("STORAGE_ORIGINS", "")
        .run()
        .await;
    let asked = api_seen.requests("/a/data/compliance/audit/f0");
    assert_eq!(
        asked[0].headers.get("authorization").map(String::as_str),
        Some("Bearer ya29.secret-token")
    );
    assert_anonymous(&storage_seen.requests("/signed/f0"));
    let saved = std::fs::read_to_string(ran.path().join("enc/f0")).unwrap();
    assert_eq!(saved, "zero");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_next_page_on_another_origin_is_fetched_without_the_connections_credentials() {
    let (other, other_seen) = serve(vec![(
        "/page2",
        vec![Reply::json(200, serde_json::json!([2]))],
    )])
    .await;
    let first = Reply::json(200, serde_json::json!([1])).header(
        "link",
        &format!("<{other}/page2?access_token=q>; rel=\"next\""),
    );
    let (api, api_seen) = serve(vec![("/items", vec![first])]).await;
    Case::yaml(
        r#"
        name: http-other-origin
        connections:
          api:
            kind: http
            base_url: "{{ env.API }}"
            credentials: {bearer_token: "{{ env.TOKEN }}"}
        steps:
          - id: get
            call:
              connection: api
              path: /items
              paginate: true
              headers: {X-Api-Key: "{{ env.TOKEN }}", Cookie: "s=1", Accept: application/json}
        outputs:
          items: "{{ json steps.get.body }}"
        "#,
    )
    .env("API", &api)
    .env("TOKEN", "bearer-secret")
    .stdout_has("is not the origin of connection `api`: sent without its credentials")
    .run()
    .await;
    let first = api_seen.requests("/items");
    assert_eq!(
        first[0].headers.get("authorization").map(String::as_str),
        Some("Bearer bearer-secret")
    );
    let seen = other_seen.requests("/page2");
    assert_anonymous(&seen);
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers.get("accept").map(String::as_str),
        Some("application/json")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_by_another_origin_says_the_credentials_were_withheld() {
    let denied = Reply::json(401, serde_json::json!({"message": "login required"}));
    let (other, _) = serve(vec![("/page2", vec![denied])]).await;
    let first = Reply::json(200, serde_json::json!([1]))
        .header("link", &format!("<{other}/page2>; rel=\"next\""));
    let (api, _) = serve(vec![("/items", vec![first])]).await;
    Case::yaml(
        r#"
        name: http-other-origin-denied
        connections:
          api:
            kind: http
            base_url: "{{ env.API }}"
            credentials: {bearer_token: "{{ env.TOKEN }}"}
        steps:
          - id: get
            call: {connection: api, path: /items, paginate: true}
        "#,
    )
    .env("API", &api)
    .env("TOKEN", "bearer-secret")
    .code(1)
    .stderr_has("HTTP 401: login required")
    .stderr_has("is not the origin of connection `api`: sent without its credentials")
    .run()
    .await;
}

// ---------------------------------------------------------------------------------------
// TLS

/// A self-signed certificate with CA:TRUE used as the server's own, as `openssl req -x509`
/// makes it: (PEM, DER, key DER).
fn self_signed_ca(names: &[&str]) -> (String, Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(ToString::to_string).collect::<Vec<_>>())
            .unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), cert.der().to_vec(), key.serialize_der())
}

/// The certificate's fingerprint as the simulator prints it (written apart from the adapters'
/// own, which the tests check).
fn fingerprint(der: &[u8]) -> String {
    auditflow_sim::tls::fingerprint(der)
}

/// A one-answer MailStore over HTTPS: every request gets GetServerInfo's answer. Returns
/// the base URL (`https://127.0.0.1:PORT`) and the count of TCP connections accepted.
async fn mailstore_tls(cert_der: Vec<u8>, key_der: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(cert_der)],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key_der).into(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    answer_server_info(&mut tls).await;
                }
            });
        }
    });
    (format!("https://127.0.0.1:{port}"), connections)
}

/// Reads one HTTP/1.1 request (head and Content-Length body) and answers it.
async fn answer_server_info<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = s.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let Ok(n) = s.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::json!({
        "error": null, "token": null, "statusVersion": 2, "statusCode": "succeeded",
        "percentProgress": null, "statusText": null, "logOutput": null,
        "result": {"version": "MailStore Server 24.1", "machineName": "ARCHIVE01"}
    })
    .to_string();
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

trait SavedServerInfo {
    fn saved_server_info(&self);
}

impl SavedServerInfo for crate::case::Ran {
    /// The answer went through: GetServerInfo's result is saved.
    fn saved_server_info(&self) {
        let saved = std::fs::read_to_string(self.path().join("out/server-info.json")).unwrap();
        assert!(saved.contains("MailStore Server 24.1"), "{saved}");
    }
}

fn server_info(base: &str) -> Case {
    Case::file(Path::new(&wf("mailstore/server-info.yaml")))
        .env("MAILSTORE_BASE_URL", base)
        .env("MAILSTORE_USERNAME", "admin")
        .env("MAILSTORE_PASSWORD", "pw-secret")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_self_signed_server_fails_once_with_its_fingerprint() {
    let (_, der, key) = self_signed_ca(&["localhost", "127.0.0.1"]);
    let (base, connections) = mailstore_tls(der.clone(), key).await;
    let started = std::time::Instant::now();
    server_info(&base)
        .code(1)
        .stderr_has("TLS certificate was refused")
        .stderr_has(&fingerprint(&der))
        .stderr_has("tls_pin_sha256")
        .run()
        .await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "certificate errors are not retried"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread")]
async fn ca_file_accepts_the_servers_own_ca_certificate_relative_to_the_working_directory() {
    let (pem, der, key) = self_signed_ca(&["localhost", "127.0.0.1"]);
    let (base, _) = mailstore_tls(der, key).await;
    // The shipped workflow lives elsewhere: the relative path is the working directory's.
    server_info(&base)
        .write("mailstore.pem", &pem)
        .env("MAILSTORE_CA_FILE", "mailstore.pem")
        .run()
        .await
        .saved_server_info();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pin_accepts_the_certificate_whatever_its_name_and_a_wrong_pin_fails() {
    let (_, der, key) = self_signed_ca(&["archive01.internal"]);
    let (base, _) = mailstore_tls(der.clone(), key).await;
    server_info(&base)
        .env("MAILSTORE_TLS_PIN", &fingerprint(&der).to_lowercase())
        .run()
        .await
        .saved_server_info();
    let (_, other, _) = self_signed_ca(&["archive01.internal"]);
    server_info(&base)
        .env("MAILSTORE_TLS_PIN", &fingerprint(&other))
        .code(1)
        .stderr_has("not one of the connection's tls_pin_sha256")
        .stderr_has(&fingerprint(&der))
        .run()
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ssl_cert_file_is_honoured() {
    let (pem, der, key) = self_signed_ca(&["localhost", "127.0.0.1"]);
    let (base, _) = mailstore_tls(der, key).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trust.pem");
    std::fs::write(&path, pem).unwrap();
    server_info(&base)
        .env("SSL_CERT_FILE", &path.display().to_string())
        .run()
        .await
        .saved_server_info();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_from_a_self_signed_server_fails_once_with_its_fingerprint() {
    let (_, der, key) = self_signed_ca(&["localhost", "127.0.0.1"]);
    let (base, connections) = mailstore_tls(der.clone(), key).await;
    Case::yaml(
        r#"
        name: tls-download
        defaults:
          retry: {max_attempts: 4, initial_interval: 10ms}
        steps:
          - id: get
            download: {urls: ["{{ env.BASE }}/file.bin"], to: out}
        "#,
    )
    .env("BASE", &base)
    .code(1)
    .stderr_has("TLS certificate was refused")
    .stderr_has(&fingerprint(&der))
    .run()
    .await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "certificate errors are not retried"
    );
}
