//! Secrets stay secret and state stays small (issue 10, items 7–9): values derived from a
//! secret are masked everywhere, dry-run shows no credential material, the journal keeps only
//! what resume needs without credential query parameters, and answers held in memory are
//! bounded.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use base64::Engine as _;
use serde_json::json;

use crate::case::Case;
use crate::common::{auditflow_async, serve, text, wf, Dir, Reply};

/// Every journal under the default state directory of a run's temp dir, concatenated.
fn journals(dir: &Path) -> String {
    let runs = dir.join(".auditflow/runs");
    let mut out = String::new();
    for run in std::fs::read_dir(&runs).expect("runs dir").flatten() {
        let p: PathBuf = run.path().join("journal.jsonl");
        out.push_str(&std::fs::read_to_string(&p).expect("journal"));
    }
    out
}

const USER: &str = "alice";
const PASSWORD: &str = "correct-horse-battery";

#[tokio::test]
async fn a_secret_transformed_by_a_template_is_masked_in_output_report_and_journal() {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let (base, script) = serve(vec![
        ("/login", vec![Reply::json(200, json!({"seen": encoded}))]),
        (
            "/use",
            vec![Reply::json(
                400,
                json!({"error": format!("rejected credentials {encoded}")}),
            )],
        ),
    ])
    .await;
    let ran = Case::yaml(
        r#"
        name: derived
        inputs:
          user: {type: string}
          password: {type: string, secret: true}
        steps:
          - id: login
            call:
              url: "{{ env.BASE }}/login"
              headers:
                Authorization: 'Basic {{ base64 (concat inputs.user ":" inputs.password) }}'
          - id: use
            retry: {max_attempts: 1}
            call:
              url: "{{ env.BASE }}/use"
              json: {token: "{{ steps.login.body.seen }}"}
        "#,
    )
    .env("BASE", &base)
    .input("user", USER)
    .input("password", PASSWORD)
    .arg("--log-format")
    .arg("json")
    .report()
    .code(1)
    .stderr_has("rejected credentials ***")
    .run()
    .await;
    // The header really carried the derived value.
    let sent = &script.requests("/login")[0].headers["authorization"];
    assert_eq!(sent, &format!("Basic {encoded}"));
    let journal = journals(ran.path());
    let report = ran.report().to_string();
    for (what, text) in [
        ("stdout", &ran.stdout),
        ("stderr", &ran.stderr),
        ("journal", &journal),
        ("report", &report),
    ] {
        assert!(
            !text.contains(&encoded),
            "{what} shows the derived secret:\n{text}"
        );
        assert!(
            !text.contains(PASSWORD),
            "{what} shows the password:\n{text}"
        );
    }
}

#[tokio::test]
async fn dry_run_of_a_mimecast_workflow_shows_no_credential_material() {
    let dir = Dir::new();
    let creds = [
        ("MIMECAST_BASE_URL", "http://127.0.0.1:9"),
        ("MIMECAST_ACCESS_KEY", "access-key-0123"),
        ("MIMECAST_SECRET_KEY", "c2VjcmV0LWtleS0wMTIz"),
        ("MIMECAST_APP_ID", "app-id-4f6a-visible"),
        ("MIMECAST_APP_KEY", "app-key-89ab"),
    ];
    let args = vec![
        "run".to_string(),
        wf("mimecast/audit-events.yaml"),
        "--dry-run".into(),
    ];
    let env = creds
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let o = auditflow_async(args, env, dir.path().to_path_buf()).await;
    let (stdout, stderr) = text(&o);
    assert!(stdout.contains("x-mc-app-id: ***"), "{stdout}");
    for (name, value) in &creds[1..] {
        assert!(
            !stdout.contains(value) && !stderr.contains(value),
            "{name} shown by dry-run:\n{stdout}\n{stderr}"
        );
    }
}

#[tokio::test]
async fn the_journal_keeps_what_later_steps_read_and_no_credential_query_parameters() {
    let big: Vec<String> = (0..40_000)
        .map(|i| format!("message-{i:06}-padding-padding"))
        .collect();
    let signed = "https://storage.example/export/f1?alt=media&access_token=ya29.SIGNED-TOKEN-77";
    let (base, script) = serve(vec![
        (
            "/big",
            vec![Reply::json(200, json!({"id": "b-1", "items": big}))],
        ),
        (
            "/status",
            vec![Reply::json(200, json!({"fileUrl": signed}))],
        ),
        (
            "/next",
            vec![
                Reply::json(500, json!({"error": "down"})),
                Reply::json(200, json!({"ok": true})),
            ],
        ),
    ])
    .await;
    let case = Case::yaml(
        r#"
        name: keep
        steps:
          - id: big
            call: {url: "{{ env.BASE }}/big?access_token=query-token-1234"}
          - id: status
            call: {url: "{{ env.BASE }}/status"}
          - id: next
            retry: {max_attempts: 1}
            call:
              url: "{{ env.BASE }}/next"
              json: {id: "{{ steps.big.body.id }}", url: "{{ steps.status.body.fileUrl }}"}
        "#,
    )
    .env("BASE", &base)
    .code(1);
    let first = case.run().await;
    let journal = journals(first.path());
    assert!(
        journal.len() < 16 * 1024,
        "journal of {} bytes after a ~1.5 MB answer nobody reads",
        journal.len()
    );
    assert!(!journal.contains("SIGNED-TOKEN"), "{journal}");
    assert!(!journal.contains("query-token-1234"), "{journal}");
    assert!(
        journal.contains("\"b-1\""),
        "what `next` reads is kept:\n{journal}"
    );

    // Resume: `big` is replayed from the journal (not fetched again), `next` gets its id.
    first.again().env("BASE", &base).run().await;
    assert_eq!(script.requests("/big").len(), 1);
    let sent = script.requests("/next");
    assert_eq!(sent.len(), 2);
    let body: serde_json::Value = serde_json::from_str(&sent[1].body).expect("json body");
    assert_eq!(body["id"], "b-1");
    // The signed URL was cut in the journal, so `status` ran again for the real one.
    assert_eq!(body["url"], signed);
    assert_eq!(script.requests("/status").len(), 2);
}

#[tokio::test]
async fn an_answer_over_the_limit_fails_at_once_saying_what_to_do() {
    let (base, script) = serve(vec![(
        "/large",
        vec![Reply::json(200, json!({"blob": "x".repeat(200 * 1024)}))],
    )])
    .await;
    Case::yaml(
        r#"
        name: limit
        steps:
          - id: large
            call:
              url: "{{ env.BASE }}/large"
              max_response_size: 64KiB
        "#,
    )
    .env("BASE", &base)
    .code(1)
    .stderr_has("larger than the step's limit of 64KiB")
    .stderr_has("Content-Length is")
    .stderr_has("`download` step")
    .stderr_has("raise `max_response_size`")
    .run()
    .await;
    assert_eq!(script.requests("/large").len(), 1, "not retried");
}

/// A server whose one route streams `total` bytes of JSON-ish text without a Content-Length,
/// counting what it produced.
async fn streaming_server(total: u64) -> (String, Arc<AtomicU64>) {
    let produced = Arc::new(AtomicU64::new(0));
    let counter = produced.clone();
    let app = axum::Router::new().route(
        "/stream",
        axum::routing::get(move || {
            let counter = counter.clone();
            async move {
                let chunk = Bytes::from(vec![b'a'; 64 * 1024]);
                let chunks = (0..total / chunk.len() as u64).map(move |_| {
                    counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(chunk.clone())
                });
                Body::from_stream(futures::stream::iter(chunks))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), produced)
}

#[tokio::test]
async fn a_streamed_answer_without_length_stops_at_the_limit() {
    let total = 64 << 20;
    let (base, produced) = streaming_server(total).await;
    let started = Instant::now();
    Case::yaml(
        r#"
        name: stream
        steps:
          - id: stream
            call:
              url: "{{ env.BASE }}/stream"
              max_response_size: 1MiB
        "#,
    )
    .env("BASE", &base)
    .code(1)
    .stderr_has("larger than the step's limit of 1MiB")
    .run()
    .await;
    assert!(started.elapsed() < Duration::from_secs(60));
    let sent = produced.load(Ordering::SeqCst);
    assert!(
        sent < total / 2,
        "the server produced {sent} of {total} bytes: the answer was read past the limit"
    );
}

#[tokio::test]
async fn save_to_writes_a_large_answer_as_pretty_json_with_its_digest() {
    let items: Vec<serde_json::Value> = (0..20_000)
        .map(|i| json!({"id": i, "subject": format!("message {i}")}))
        .collect();
    let body = json!({"data": items});
    let (base, _) = serve(vec![("/list", vec![Reply::json(200, body.clone())])]).await;
    let ran = Case::yaml(
        r#"
        name: save
        steps:
          - id: list
            call: {url: "{{ env.BASE }}/list", save_to: out/list.json}
        "#,
    )
    .env("BASE", &base)
    .report()
    .run()
    .await;
    let saved = std::fs::read(ran.path().join("out/list.json")).expect("saved file");
    assert_eq!(saved, serde_json::to_vec_pretty(&body).unwrap());
    let artifact = &ran.report()["artifacts"][0];
    assert_eq!(artifact["bytes"], saved.len() as u64);
    let digest = auditflow::durable::sha256_hex(&saved);
    assert_eq!(artifact["sha256"], digest.as_str());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ran.path().join("out/list.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn a_secret_encoded_by_vendor_code_and_echoed_back_is_masked() {
    let password = "s3cret.pass@word!";
    let form_encoded = "s3cret.pass%40word%21";
    let (base, script) = serve(vec![(
        "/login",
        vec![Reply::json(
            400,
            json!({"error": format!("bad form: password={form_encoded}")}),
        )],
    )])
    .await;
    let ran = Case::yaml(
        r#"
        name: encoded
        inputs:
          password: {type: string, secret: true}
        steps:
          - id: login
            retry: {max_attempts: 1}
            call:
              url: "{{ env.BASE }}/login"
              form: {password: "{{ inputs.password }}"}
        "#,
    )
    .env("BASE", &base)
    .input("password", password)
    .code(1)
    .stderr_has("bad form: password=***")
    .run()
    .await;
    assert_eq!(
        script.requests("/login")[0].body,
        format!("password={form_encoded}")
    );
    let journal = journals(ran.path());
    for text in [&ran.stdout, &ran.stderr, &journal] {
        assert!(!text.contains(form_encoded), "{text}");
    }
}

/// A test secret that is a plain word (`wrong`) does not mask the vendor's own words: the
/// error reads as the vendor wrote it, the run warns that the secret is too weak to be masked
/// inside text, and the value standing alone is still masked.
#[tokio::test]
async fn a_short_plain_word_secret_keeps_the_vendors_text_and_is_warned_about() {
    let (base, _script) = serve(vec![(
        "/token",
        vec![Reply::json(
            401,
            json!({"error": "unknown client or wrong secret", "echo": "wrong"}),
        )],
    )])
    .await;
    let ran = Case::yaml(
        r#"
        name: weak
        inputs:
          secret: {type: string, secret: true}
        steps:
          - id: token
            retry: {max_attempts: 1}
            call:
              url: "{{ env.BASE }}/token"
              form: {client_secret: "{{ inputs.secret }}"}
              expect:
                condition: '{{ eq response.body.echo "right" }}'
        "#,
    )
    .env("BASE", &base)
    .input("secret", "wrong")
    .code(1)
    .stderr_has("unknown client or wrong secret")
    .stdout_has("the secret in input `secret` is a short plain word")
    .run()
    .await;
    assert!(!ran.stdout.contains("or *** secret"), "{}", ran.stdout);
}
