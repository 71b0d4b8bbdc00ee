//! Servers as they misbehave (issue 22): a server echoing a credential into the cut of an
//! error excerpt, a credential variable holding the key itself, helpers splitting secrets, a
//! Google feed whose `next` is itself, a stalled download, an archive bomb, a state directory
//! that is not the user's own.
use std::path::{Path, PathBuf};

use crate::case::{Case, Ran};
use crate::common::{auditflow, serve, text, Reply};

/// Every text a failed run leaves for people and machines to read: its stdout and stderr,
/// `report.json`, `junit.xml`, the journals under `.auditflow/runs` and `runs show`.
fn everything_written(ran: &Ran) -> Vec<(String, String)> {
    let mut out = vec![
        ("stdout".to_string(), ran.stdout.clone()),
        ("stderr".to_string(), ran.stderr.clone()),
    ];
    for name in ["report.json", "junit.xml"] {
        if let Ok(t) = std::fs::read_to_string(ran.path().join(name)) {
            out.push((name.to_string(), t));
        }
    }
    let runs = ran.path().join(".auditflow/runs");
    for run in std::fs::read_dir(&runs).expect("runs dir").flatten() {
        let journal: PathBuf = run.path().join("journal.jsonl");
        out.push((
            journal.display().to_string(),
            std::fs::read_to_string(&journal).expect("journal"),
        ));
        let id = run.file_name().to_string_lossy().into_owned();
        for json in [false, true] {
            let mut args = vec!["runs", "show", id.as_str()];
            if json {
                args.push("--json");
            }
            let (shown, err) = text(&auditflow(&args, &[], ran.path()));
            out.push((format!("runs show {id} (json: {json})"), shown + &err));
        }
    }
    out
}

/// Fails with where `needle` (or, when `partial`, any 12 characters of it) shows.
fn assert_nowhere(written: &[(String, String)], needle: &str, partial: bool) {
    let chars: Vec<char> = needle.chars().collect();
    let pieces: Vec<String> = if partial && chars.len() > 12 {
        chars.windows(12).map(|w| w.iter().collect()).collect()
    } else {
        vec![needle.to_string()]
    };
    for (what, text) in written {
        for piece in &pieces {
            assert!(
                !text.contains(piece.as_str()),
                "{what} shows {piece:?} of a secret:\n{text}"
            );
        }
    }
}

fn has_file(dir: &Path, name: &str) -> bool {
    dir.join(name).exists()
}

#[tokio::test]
async fn a_secret_echoed_across_the_excerpt_cut_or_with_blanks_is_never_shown() {
    // 26 characters starting at character 175 of the 200 the excerpt keeps: cut, then masked,
    // it showed 25 of them; "two  spaces" collapsed to one space and was shown whole.
    const TOKEN: &str = "TOK-abcdefghijklmnopqrstuv";
    const SPACED: &str = "open  sesame  42";
    let body = format!("{} {TOKEN} {}", "e".repeat(174), "z".repeat(100));
    let mut reply = Reply::json(401, serde_json::json!({}));
    reply.headers = vec![("content-type".into(), "text/plain".into())];
    reply.body = body;
    let mut spaced = reply.clone();
    spaced.body = format!("denied for   {SPACED} (check it)");
    let (base, _script) = serve(vec![("/cut", vec![reply]), ("/spaced", vec![spaced])]).await;
    let ran = Case::yaml(
        r#"
        name: echo
        inputs:
          token: {type: string, secret: true}
          phrase: {type: string, secret: true}
        connections:
          api:
            kind: http
            base_url: "{{ env.BASE }}"
            credentials: {bearer_token: "{{ inputs.token }}"}
        steps:
          - id: cut
            continue_on_error: true
            retry: {max_attempts: 1}
            call: {connection: api, path: /cut}
          - id: spaced
            retry: {max_attempts: 1}
            call: {connection: api, path: /spaced, headers: {x-phrase: "{{ inputs.phrase }}"}}
        "#,
    )
    .env("BASE", &base)
    .input("token", TOKEN)
    .input("phrase", SPACED)
    .report()
    .arg("--junit")
    .arg("junit.xml")
    .code(1)
    .stderr_has("HTTP 401")
    .stderr_has("denied for ***")
    .run()
    .await;
    assert!(has_file(ran.path(), "junit.xml"));
    let written = everything_written(&ran);
    assert!(
        written
            .iter()
            .filter(|(_, t)| t.contains(&"e".repeat(100)))
            .count()
            >= 4,
        "the excerpt is quoted in the outputs: {written:#?}"
    );
    assert_nowhere(&written, TOKEN, true);
    assert_nowhere(&written, SPACED, false);
    assert_nowhere(&written, "open sesame 42", false);
}

/// A service-account key as a CI variable of type "Variable" gives it: the JSON itself.
fn inline_key_json() -> String {
    serde_json::json!({
        "type": "service_account",
        "client_email": "auditor@project.iam.gserviceaccount.com",
        "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
        "token_uri": "http://127.0.0.1:9/token",
    })
    .to_string()
}

#[tokio::test]
async fn a_key_given_where_its_path_belongs_is_refused_and_never_shown() {
    let (base, script) = serve(vec![]).await;
    let pem_only =
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
    for (form, value) in [
        ("JSON", inline_key_json()),
        ("a PEM block", pem_only.to_string()),
    ] {
        let ran = Case::file(&crate::common::root().join("workflows/google/list-exports.yaml"))
            .env("GOOGLE_AUDIT_BASE_URL", &base)
            .env("GOOGLE_APPLICATION_CREDENTIALS", &value)
            .env("GOOGLE_ADMIN_EMAIL", "admin@example.com")
            .input("domain", "example.com")
            .report()
            .arg("--junit")
            .arg("junit.xml")
            .code(1)
            .stderr_has("this variable must name a file; it holds the key itself")
            .stderr_has(&format!("({form}, not shown)"))
            .stderr_has("GOOGLE_APPLICATION_CREDENTIALS")
            .run()
            .await;
        let written = everything_written(&ran);
        assert_nowhere(&written, "PRIVATE KEY", false);
        assert_nowhere(&written, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", false);
        assert_nowhere(&written, "auditor@project", false);
    }
    assert!(script.all().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_credential_variable_is_masked_even_where_it_is_not_a_secret_field() {
    // The key file's path is credential material too: an unreadable one is reported by the
    // field that names it, the path itself masked.
    let (base, _script) = serve(vec![]).await;
    let ran = Case::file(&crate::common::root().join("workflows/google/list-exports.yaml"))
        .env("GOOGLE_AUDIT_BASE_URL", &base)
        .env(
            "GOOGLE_APPLICATION_CREDENTIALS",
            "/nonexistent/ci-secret-sa.json",
        )
        .env("GOOGLE_ADMIN_EMAIL", "admin@example.com")
        .input("domain", "example.com")
        .report()
        .code(1)
        .stderr_has("credentials.service_account_file names (***)")
        .run()
        .await;
    assert_nowhere(&everything_written(&ran), "ci-secret-sa", false);
}

const CREDS: &str = "robert:s3cret-pass-99";
const PASS: &str = "s3cret-pass-99";

/// A workflow that splits a secret and sends, keeps and outputs its parts.
const SPLITS_A_SECRET: &str = r#"
    name: parts
    inputs:
      creds: {type: string, secret: true}
    cursors:
      last: {initial: ""}
    steps:
      - id: echo
        call:
          url: "{{ env.BASE }}/echo"
          method: POST
          json: {parts: '{{ split inputs.creds ":" }}'}
      - id: keep
        set_cursor: {name: last, value: "{{ steps.echo.body.got }}"}
    outputs:
      parts: '{{ split inputs.creds ":" }}'
      echoed: "{{ steps.echo.body.got }}"
    "#;

#[tokio::test]
async fn the_parts_of_a_split_secret_are_secrets_in_requests_shown_records_and_cursors() {
    let (base, script) = serve(vec![(
        "/echo",
        vec![Reply::json(
            200,
            serde_json::json!({"got": ["robert", PASS]}),
        )],
    )])
    .await;
    let ran = Case::yaml(SPLITS_A_SECRET)
        .env("BASE", &base)
        .input("creds", CREDS)
        .report()
        .arg("--junit")
        .arg("junit.xml")
        .code(1)
        .stderr_has("cursor")
        .run()
        .await;
    // The server got the clear parts; nothing written shows them.
    let sent: serde_json::Value = serde_json::from_str(&script.requests("/echo")[0].body).unwrap();
    assert_eq!(sent["parts"], serde_json::json!(["robert", PASS]));
    let written = everything_written(&ran);
    assert!(
        written
            .iter()
            .any(|(what, t)| what.contains("journal") && t.contains("***")),
        "{written:#?}"
    );
    assert_nowhere(&written, PASS, false);
    assert_nowhere(&written, "robert", false);
    // No cursor holds it.
    let cursors = ran.path().join(".auditflow/cursors");
    for f in walk(&cursors) {
        let t = std::fs::read_to_string(&f).unwrap();
        assert!(!t.contains(PASS), "{}: {t}", f.display());
    }
    let dry = ran
        .again()
        .env("BASE", &base)
        .input("creds", CREDS)
        .arg("--dry-run")
        .run()
        .await;
    assert!(dry.stdout.contains("\"parts\""), "{}", dry.stdout);
    assert_nowhere(
        &[
            ("dry-run stdout".into(), dry.stdout),
            ("dry-run stderr".into(), dry.stderr),
        ],
        PASS,
        false,
    );
    assert_eq!(script.requests("/echo").len(), 1, "a dry run sends nothing");
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A Google Atom answer.
fn atom(body: String) -> Reply {
    Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/atom+xml".into())],
        body,
        delay: std::time::Duration::ZERO,
    }
}

#[tokio::test]
async fn a_google_feed_whose_next_link_is_itself_is_a_loop_not_the_last_page() {
    const PATH: &str = "/a/feeds/compliance/audit/mail/export/example.com";
    let (base, script) = serve(vec![]).await;
    // The next link names the very URL the workflow asks for (an empty fromDate is left out).
    let feed = format!(
        "<?xml version='1.0'?>\n<feed xmlns='http://www.w3.org/2005/Atom' \
         xmlns:apps='http://schemas.google.com/apps/2006'><id>f</id>\
         <link rel='next' href='{base}{PATH}'/>\
         <entry><id>e</id><apps:property name='requestId' value='1'/></entry></feed>"
    );
    script
        .replies
        .lock()
        .unwrap()
        .insert(PATH.to_string(), vec![atom(feed)]);
    let ran = Case::file(&crate::common::root().join("workflows/google/list-exports.yaml"))
        .env("GOOGLE_AUDIT_BASE_URL", &base)
        .env("GOOGLE_ACCESS_TOKEN", "ya29.test-token")
        .input("domain", "example.com")
        .code(1)
        .stderr_has("step `list`")
        .stderr_has("answer on page 1 points back to a page already fetched")
        .run()
        .await;
    let asked = script.requests(PATH);
    assert_eq!(asked.len(), 1, "{:?}", asked);
    assert_eq!(asked[0].query, None);
    assert!(!ran.path().join("out/exports.json").exists());
}

/// What the trickling server saw: the `Range` header of each request.
type Ranges = std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>;

/// A server for one file of `data`: the first answer sends 20 KiB at once, then one byte
/// every 300 ms for ever; later answers serve the `Range` asked for at once.
async fn trickling_server(data: Vec<u8>) -> (String, Ranges) {
    use axum::body::Body;
    use axum::http::{header, HeaderMap, StatusCode};
    use futures::StreamExt as _;
    let ranges: Ranges = Default::default();
    let seen = ranges.clone();
    let data = std::sync::Arc::new(data);
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let data = data.clone();
        let seen = seen.clone();
        async move {
            let range = headers
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let first = {
                let mut s = seen.lock().unwrap();
                s.push(range.clone());
                s.len() == 1
            };
            let total = data.len();
            if first {
                let head = data[..20 << 10].to_vec();
                let rest = data[20 << 10..].to_vec();
                let stream = futures::stream::iter(std::iter::once(head))
                    .chain(futures::stream::unfold(rest, |rest| async move {
                        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                        let (one, more) = rest.split_at(1);
                        Some((one.to_vec(), more.to_vec()))
                    }))
                    .map(Ok::<_, std::io::Error>);
                return axum::response::Response::builder()
                    .header(header::CONTENT_LENGTH, total)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(Body::from_stream(stream))
                    .unwrap();
            }
            let from: usize = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.trim_end_matches('-').parse().ok())
                .unwrap_or(0);
            axum::response::Response::builder()
                .status(StatusCode::PARTIAL_CONTENT)
                .header(
                    header::CONTENT_RANGE,
                    format!("bytes {from}-{}/{total}", total - 1),
                )
                .header(header::CONTENT_LENGTH, total - from)
                .body(Body::from(data[from..].to_vec()))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), ranges)
}

#[tokio::test]
async fn a_trickling_download_stalls_and_resumes_from_its_part_file() {
    let data: Vec<u8> = (0..64u32 << 10).map(|i| (i * 7 % 251) as u8).collect();
    let sha = auditflow::durable::sha256_hex(&data);
    let (base, ranges) = trickling_server(data.clone()).await;
    let started = std::time::Instant::now();
    let ran = Case::yaml(
        r#"
        name: trickle
        steps:
          - id: fetch
            retry: {max_attempts: 3, initial_interval: 50ms, jitter: none}
            download:
              urls: "{{ env.BASE }}/export.bin"
              to: out
              sha256: "{{ env.SHA }}"
              stall_timeout: 1s
        "#,
    )
    .env("BASE", &base)
    .env("SHA", &sha)
    .run()
    .await;
    let took = started.elapsed();
    assert_eq!(
        std::fs::read(ran.path().join("out/export.bin")).unwrap(),
        data
    );
    let ranges = ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[0], None);
    let from: u64 = ranges[1]
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .expect("a ranged resume");
    assert!(from > 20 << 10, "resumed from {from}");
    assert!(took < std::time::Duration::from_secs(20), "took {took:?}");
    assert!(
        ran.stdout.contains("stalled") || ran.stderr.contains("stalled"),
        "the retry says why:\n{}\n{}",
        ran.stdout,
        ran.stderr
    );
}

/// Serves `data` to every GET, whole.
async fn file_server(data: Vec<u8>) -> String {
    let data = std::sync::Arc::new(data);
    let app = axum::Router::new().fallback(move || {
        let data = data.clone();
        async move { axum::body::Bytes::from(data.as_ref().clone()) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// A ZIP archive of `entries`, deflated.
fn zip_of(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write as _;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(
            *name,
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated),
        )
        .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Runs a download step with `extract` (and `limits` inside it) on `archive`.
async fn extract_case(archive: Vec<u8>, limits: &str, code: i32) -> Ran {
    let base = file_server(archive).await;
    Case::yaml(&format!(
        r#"
        name: bomb
        steps:
          - id: fetch
            retry: {{max_attempts: 1}}
            download:
              urls: "{{{{ env.BASE }}}}/export-1.zip"
              to: archives
              extract: {{to: mail{limits}}}
        "#
    ))
    .env("BASE", &base)
    .code(code)
    .run()
    .await
}

/// The names in `dir` (none when it does not exist).
fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn an_archive_bomb_is_refused_with_its_figures_and_leaves_nothing() {
    // 8 MiB of one byte deflates to about 8 KiB: a ratio near 1000.
    let bomb = zip_of(&[("bomb@example.com.mbox", vec![b'A'; 8 << 20])]);
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let ran = extract_case(bomb, "", 1).await;
    let all = format!("{}{}", ran.stdout, ran.stderr);
    assert!(all.contains("step `fetch`"), "{all}");
    assert!(
        all.contains("entry \"bomb@example.com.mbox\" expands"),
        "{all}"
    );
    assert!(
        all.contains(
            "to 8388608 bytes or more, over 100 times its size (download.extract.max_ratio)"
        ),
        "{all}"
    );
    assert!(
        names_in(&ran.path().join("mail")).is_empty(),
        "{:?}",
        names_in(&ran.path().join("mail"))
    );
    // Genuine mail compresses a few times: with a ratio allowed per step it is extracted.
    let ok = extract_case(
        zip_of(&[("bomb@example.com.mbox", vec![b'A'; 8 << 20])]),
        ", max_ratio: 2000",
        0,
    )
    .await;
    assert_eq!(
        std::fs::metadata(ok.path().join("mail/bomb@example.com.mbox"))
            .unwrap()
            .len(),
        8 << 20
    );
}

#[tokio::test]
async fn extraction_stops_at_the_total_the_step_allows() {
    // Two entries of 600 KiB that do not compress much; together over a 1 MiB total.
    let noise = |seed: u32| -> Vec<u8> {
        let mut x = seed;
        (0..600 << 10)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    };
    let archive = zip_of(&[("a.mbox", noise(1)), ("b.mbox", noise(2))]);
    let ran = extract_case(archive, ", max_total: 1MiB", 1).await;
    let all = format!("{}{}", ran.stdout, ran.stderr);
    assert!(
        all.contains("entry \"b.mbox\" brings the files this step extracts to 1228800 bytes or more, over download.extract.max_total (1048576 bytes)"),
        "{all}"
    );
    assert!(
        names_in(&ran.path().join("mail")).is_empty(),
        "{:?}",
        names_in(&ran.path().join("mail"))
    );
}

/// A one-step workflow whose one request is refused at once (nothing listens on port 9).
const NOTHING_SENT: &str = r#"
    name: local
    steps:
      - id: one
        retry: {max_attempts: 1}
        call: {url: "http://127.0.0.1:9/x"}
    "#;

#[tokio::test]
async fn a_symlink_inside_the_state_directory_is_never_followed() {
    for link in ["active", "runs", "active/0123.lock"] {
        let first = Case::yaml(NOTHING_SENT).code(1).run().await;
        let state = first.path().join(".auditflow");
        assert!(
            state.join("active").is_dir(),
            "the first run made the state"
        );
        // Another place the link points at: nothing may be written there.
        let elsewhere = first.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let at = state.join(link);
        if at.is_dir() {
            std::fs::rename(&at, first.path().join("moved")).unwrap();
        }
        std::os::unix::fs::symlink(&elsewhere, &at).unwrap();
        let again = first
            .again()
            .code(2)
            .stderr_has("in the state directory is a symbolic link")
            .stderr_has(link)
            .run()
            .await;
        assert!(
            names_in(&elsewhere).is_empty(),
            "{link}: {:?}",
            names_in(&elsewhere)
        );
        let (shown, err) = text(&auditflow(&["runs", "list"], &[], again.path()));
        assert!(err.contains("symbolic link"), "{link}: {shown}{err}");
    }
}

#[tokio::test]
async fn a_state_directory_of_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let me = std::fs::metadata(dir.path()).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    // As root, a directory given to `nobody`; otherwise one root owns.
    let theirs = if me.unwrap() == 0 {
        let p = dir.path().join("theirs");
        std::fs::create_dir(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        p
    } else {
        PathBuf::from("/")
    };
    let state = theirs.display().to_string();
    let ran = Case::yaml(NOTHING_SENT)
        .arg("--state-dir")
        .arg(&state)
        .code(2)
        .stderr_has("belongs to user id")
        .stderr_has("Pass a --state-dir of your own")
        .run()
        .await;
    assert!(!ran.stderr.contains("made it 0700"), "{}", ran.stderr);
    assert!(!Path::new(&state).join("auditflow-state.json").exists());
}

#[tokio::test]
async fn a_long_secret_item_of_a_failed_loop_is_masked_before_it_is_cut() {
    // A loop item (a part of a secret) longer than the 60 characters a failure line shows.
    let part = format!("tenant-key-{}", "q7".repeat(40));
    let ran = Case::yaml(
        r#"
        name: loop
        inputs:
          keys: {type: string, secret: true}
        steps:
          - id: each
            for_each:
              items: '{{ split inputs.keys "," }}'
              steps:
                - id: one
                  retry: {max_attempts: 1}
                  call: {url: "http://127.0.0.1:9/x", headers: {x-key: "{{ item }}"}}
        "#,
    )
    .input("keys", &format!("{part},other-key-0001"))
    .report()
    .code(1)
    .stderr_has("item 0 (***)")
    .run()
    .await;
    assert_nowhere(&everything_written(&ran), &part, true);
}
