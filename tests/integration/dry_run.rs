//! `--dry-run` through the real binary: every shipped workflow renders all its steps and exits 0,
//! values from responses it never got show as `<steps.X.path>` placeholders, loops show one
//! item, nothing is sent, secrets stay masked, and a real template error still fails.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::{auditflow_async, text, wf, Dir};

/// A TCP listener that only counts connections: anything a dry run sent would show here.
async fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = l.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (addr.to_string(), n)
}

const PASSWORD: &str = "mailstore-pw-never-shown";
const SECRET_KEY: &str = "c2VjcmV0LW1pbWVjYXN0LWtleQ==";

fn env(addr: &str, dir: &Dir) -> Vec<(String, String)> {
    let http = format!("http://{addr}");
    [
        ("MIMECAST_BASE_URL", http.as_str()),
        ("MIMECAST_ACCESS_KEY", "access-key-id"),
        ("MIMECAST_SECRET_KEY", SECRET_KEY),
        ("MIMECAST_APP_ID", "app-id-value"),
        ("MIMECAST_APP_KEY", "app-key-value"),
        ("MAILSTORE_BASE_URL", &format!("https://{addr}")),
        ("MAILSTORE_USERNAME", "admin"),
        ("MAILSTORE_PASSWORD", PASSWORD),
        ("MAILSTORE_TLS_PIN", &"AB".repeat(32)),
        ("GOOGLE_AUDIT_BASE_URL", http.as_str()),
        ("GOOGLE_VAULT_BASE_URL", http.as_str()),
        ("GOOGLE_STORAGE_BASE_URL", http.as_str()),
        ("GOOGLE_ACCESS_TOKEN", "google-token-never-shown"),
        ("GOOGLE_ADMIN_EMAIL", "admin@example.com"),
        ("GOOGLE_TOKEN_URL", &format!("{http}/token")),
        (
            "AUDIT_PGP_SECRET_KEY",
            &dir.path().join("secret.asc").display().to_string(),
        ),
        ("AUDIT_PGP_PASSPHRASE", "passphrase-never-shown"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Each shipped workflow with the inputs it requires, and a placeholder its dry run must show
/// (None: nothing it renders comes from a response).
fn shipped(dir: &Dir) -> Vec<(&'static str, Vec<String>, Option<&'static str>)> {
    // A real public key: the upload workflow checks it even in a dry run.
    let public = std::fs::read_to_string(&crate::common::key().1).unwrap();
    let key = dir.write("public.asc", &public);
    let g = |more: &[&str]| {
        let mut v = vec!["domain=example.com".to_string()];
        v.extend(more.iter().map(std::string::ToString::to_string));
        v
    };
    vec![
        (
            "google/delete-export.yaml",
            g(&["user=al", "request_id=42"]),
            Some("<steps.delete.body.properties.status>"),
        ),
        (
            "google/export-users.yaml",
            g(&["users=al,bob"]),
            // In a URL path too, where `urlencode` would have escaped the brackets.
            Some("export/example.com/al/<steps.create.body.properties.requestId>"),
        ),
        (
            "google/list-exports.yaml",
            g(&[]),
            Some("<len steps.list.body.entries>"),
        ),
        (
            "google/mailbox-export.yaml",
            g(&["user=al"]),
            Some("request_id = <steps.create.body.properties.requestId>"),
        ),
        (
            "google/upload-public-key.yaml",
            g(&[&format!("public_key_file={}", key.display())]),
            None,
        ),
        (
            "google/vault-mail-export.yaml",
            vec![
                "accounts=al@example.com,bob@example.com".into(),
                "export_name=dry".into(),
            ],
            Some("<steps."),
        ),
        (
            "mailstore/server-info.yaml",
            vec![],
            Some("<steps.info.body.result.version>"),
        ),
        (
            "mailstore/verify-stores.yaml",
            vec!["store_ids=1,2".into()],
            Some("<steps."),
        ),
        (
            "mimecast/audit-events.yaml",
            vec![],
            Some("<len steps.events.body.data>"),
        ),
        ("mimecast/find-processing-messages.yaml", vec![], None),
        (
            "mimecast/siem-logs.yaml",
            vec![],
            Some("would output files = <steps.files.iterations>"),
        ),
        (
            "mimecast/siem-batch-events.yaml",
            vec![],
            Some("would download <pluck steps.list.body.value \"url\">"),
        ),
        (
            "mimecast/latest-channel-token.yaml",
            vec!["channel_id=c1".into()],
            Some("<steps.token.body.data[0]"),
        ),
        (
            "shared/google-export-fetch.yaml",
            g(&["user=al", "request_id=42"]),
            Some("would download <numbered steps.status.body.properties \"fileUrl\">"),
        ),
    ]
}

async fn dry_run(
    file: &str,
    inputs: &[String],
    env: &[(String, String)],
    dir: &Dir,
) -> (i32, String) {
    let mut args = vec!["run".to_string(), "--dry-run".into(), file.to_string()];
    for i in inputs {
        args.extend(["-i".to_string(), i.clone()]);
    }
    let out = auditflow_async(args, env.to_vec(), dir.path().to_path_buf()).await;
    let (stdout, stderr) = text(&out);
    (
        out.status.code().unwrap_or(-1),
        format!("{stdout}\n{stderr}"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_shipped_workflow_dry_runs_to_the_end_with_placeholders_and_sends_nothing() {
    let dir = Dir::new();
    let (addr, connections) = counting_listener().await;
    let env = env(&addr, &dir);
    let cases = shipped(&dir);
    let on_disk = walk(&crate::common::root().join("workflows"));
    assert_eq!(
        on_disk.len(),
        cases.len(),
        "a shipped workflow has no case: {on_disk:?}"
    );
    for (file, inputs, placeholder) in cases {
        // The API 2.0 batch endpoint takes OAuth credentials only.
        let mut env = env.clone();
        if file == "mimecast/siem-batch-events.yaml" {
            env.push(("MIMECAST_CLIENT_ID".into(), "client-id".into()));
            env.push(("MIMECAST_CLIENT_SECRET".into(), PASSWORD.into()));
        }
        let (code, out) = dry_run(&wf(file), &inputs, &env, &dir).await;
        assert_eq!(code, 0, "{file}:\n{out}");
        assert!(out.contains("dry run: nothing is sent"), "{file}:\n{out}");
        if let Some(p) = placeholder {
            assert!(out.contains(p), "{file} must show `{p}`:\n{out}");
        }
        for secret in [
            PASSWORD,
            SECRET_KEY,
            "google-token-never-shown",
            "passphrase-never-shown",
        ] {
            assert!(!out.contains(secret), "{file} shows a secret:\n{out}");
        }
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0, "a dry run connected");
    assert!(!dir.path().join("out").exists(), "a dry run wrote files");
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loop_shows_one_item_and_uses_children_render_every_step() {
    let dir = Dir::new();
    let (addr, connections) = counting_listener().await;
    let env = env(&addr, &dir);
    let (code, out) = dry_run(
        &wf("google/export-users.yaml"),
        &["domain=example.com".into(), "users=al,bob,carol".into()],
        &env,
        &dir,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("showing the first of 3 items (al)"), "{out}");
    assert!(
        !out.contains("export[1]"),
        "one representative item only:\n{out}"
    );
    for step in [
        "mailbox/create",
        "mailbox/fetch/status",
        "mailbox/fetch/download",
        "mailbox/fetch/decrypt",
    ] {
        assert!(
            out.contains(&format!("✓ export[0: al].{step}")),
            "{step} not rendered:\n{out}"
        );
    }
    assert!(
        out.contains("fails at once if"),
        "the poll says when it fails:\n{out}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loop_over_a_response_shows_a_placeholder_item_and_a_real_error_still_fails() {
    let dir = Dir::new();
    let (addr, connections) = counting_listener().await;
    let base = format!("http://{addr}");
    let ok = dir.write(
        "loop.yaml",
        "name: loop\nsteps:\n  - id: list\n    call: {url: '{{ env.BASE }}/list'}\n  - id: each\n    for_each:\n      items: '{{ steps.list.body.ids }}'\n      steps:\n        - id: get\n          call: {url: '{{ env.BASE }}/item/{{ item.id }}'}\n  - id: after\n    if: '{{ eq steps.list.body.more true }}'\n    call: {url: '{{ env.BASE }}/more'}\n  - id: next\n    if: '{{ default steps.list.body.next \"\" }}'\n    call: {url: '{{ env.BASE }}/next'}\noutputs:\n  n: '{{ len steps.list.body.ids }}'\n",
    );
    let env = vec![("BASE".to_string(), base)];
    let (code, out) = dry_run(&ok.display().to_string(), &[], &env, &dir).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("items come from <steps.list.body.ids>"),
        "{out}"
    );
    assert!(
        out.contains("/item/%3Citem.id%3E") || out.contains("/item/<item.id>"),
        "{out}"
    );
    assert!(
        out.contains("runs only if"),
        "an undecided `when` is shown:\n{out}"
    );
    assert!(out.contains("✓ after"), "{out}");
    // A placeholder is a non-empty text: this `if:` renders true, and is still noted.
    assert!(
        out.contains("runs only if `{{ default steps.list.body.next \"\" }}`"),
        "an `if:` a placeholder made true is noted too:\n{out}"
    );
    assert!(out.contains("✓ next"), "{out}");
    assert!(
        out.contains("would output n = <len steps.list.body.ids>"),
        "{out}"
    );

    let bad = dir.write(
        "bad.yaml",
        "name: bad\ninputs:\n  n: {type: integer, default: 3}\nsteps:\n  - id: each\n    for_each:\n      items: '{{ inputs.n }}'\n      steps: [{id: get, call: {url: '{{ env.BASE }}/x'}}]\n",
    );
    let (code, out) = dry_run(&bad.display().to_string(), &[], &env, &dir).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("must be a list"), "{out}");
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

/// A Google export that ends ERROR: the run explains why and is not resumed into the same dead
/// request; the next invocation says so and creates a new export.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_ended_by_a_terminal_vendor_failure_is_not_resumed() {
    use auditflow::sim::{self, SimConfig};
    let h = sim::start(SimConfig {
        google_error_user: Some("broken".into()),
        google_pending_polls: 1,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = Dir::new();
    let (_, public, _) = crate::common::key();
    let env = h.env();
    let upload = [
        "run".to_string(),
        wf("google/upload-public-key.yaml"),
        "-i".into(),
        "domain=example.com".into(),
        "-i".into(),
        format!("public_key_file={}", public.display()),
    ];
    let o = auditflow_async(upload.to_vec(), env.clone(), dir.path().to_path_buf()).await;
    assert!(o.status.success(), "{:?}", text(&o));
    let args: Vec<String> = [
        "run",
        &wf("google/mailbox-export.yaml"),
        "-i",
        "domain=example.com",
        "-i",
        "user=broken",
        "-i",
        "poll_interval=50ms",
        "--state-dir",
        &dir.path().join("state").display().to_string(),
    ]
    .iter()
    .map(std::string::ToString::to_string)
    .collect();

    let first = auditflow_async(args.clone(), env.clone(), dir.path().to_path_buf()).await;
    let (out, err) = text(&first);
    assert_eq!(first.status.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("ended ERROR"), "{err}");
    assert!(
        err.contains("no public key was uploaded"),
        "the cause: {err}"
    );
    assert!(err.contains("upload-public-key.yaml"), "what to do: {err}");
    assert!(out.contains("will not be resumed"), "{out}");
    assert_eq!(h.google.exports_created("example.com"), 1);

    let second = auditflow_async(args, env, dir.path().to_path_buf()).await;
    let (out, err) = text(&second);
    assert_eq!(second.status.code(), Some(1), "{out}\n{err}");
    assert!(
        out.contains("ended in a terminal vendor failure") && out.contains("starting a new run"),
        "the new run says why (a warning of the run): {out}"
    );
    assert!(!out.contains("resuming:"), "not resumed: {out}");
    assert_eq!(
        h.google.exports_created("example.com"),
        2,
        "a new export request, not the dead one polled again"
    );
    h.shutdown().await;
}
