//! Issue 10 items 1 and 2: a 2xx answer of the wrong kind fails the step (never "no data"),
//! and pages are never left behind silently; the manifest records pages and records per call.
use std::path::Path;

use serde_json::{json, Value};

use crate::case::Case;
use crate::common::{serve, wf, Reply};
use auditflow_sim::{self as sim, SimConfig, SimHandle};

/// What a single-sign-on proxy answers instead of the API.
const SIGN_IN_FIRST_LINE: &str = "<html><head><title>Sign in to Contoso SSO</title></head>";

fn sign_in_page() -> Reply {
    Reply {
        status: 200,
        headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
        body: format!("\n{SIGN_IN_FIRST_LINE}\n<body><form action=/login></form></body></html>\n"),
        delay: std::time::Duration::ZERO,
    }
}

fn mimecast_env(base: &str) -> Vec<(String, String)> {
    [
        ("MIMECAST_BASE_URL", base),
        ("MIMECAST_ACCESS_KEY", "access"),
        ("MIMECAST_SECRET_KEY", "c2VjcmV0LWtleS0wMTIz"),
        ("MIMECAST_APP_ID", "app"),
        ("MIMECAST_APP_KEY", "appkey"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn google_env(base: &str) -> Vec<(String, String)> {
    vec![
        ("GOOGLE_AUDIT_BASE_URL".into(), base.into()),
        ("GOOGLE_ACCESS_TOKEN".into(), "ya29.test-token".into()),
    ]
}

/// Runs a shipped workflow against a server that answers `path` with a sign-in page and
/// checks the failure names the step, the vendor, the status, the content type and the
/// first line of the body; nothing is saved.
async fn sign_in_case(
    workflow: &str,
    path: &str,
    vendor: &str,
    step: &str,
    inputs: &[(&str, &str)],
) {
    let (base, _) = serve(vec![(path, vec![sign_in_page()])]).await;
    let env = if vendor == "google" {
        google_env(&base)
    } else {
        mimecast_env(&base)
    };
    let mut case = Case::file(Path::new(&wf(workflow))).envs(&env).code(1);
    for (k, v) in inputs {
        case = case.input(k, v);
    }
    let ran = case.run().await;
    let all = format!("{}{}", ran.stdout, ran.stderr);
    for want in [
        format!("step `{step}`"),
        format!("{vendor}: HTTP 200 answer is not"),
        "text/html; charset=utf-8".to_string(),
        SIGN_IN_FIRST_LINE.to_string(),
    ] {
        assert!(all.contains(&want), "lacks {want:?}:\n{all}");
    }
    assert!(
        !ran.path().join("out").exists(),
        "nothing may be saved from a sign-in page:\n{all}"
    );
}

#[tokio::test]
async fn sign_in_page_fails_mimecast_audit_events() {
    sign_in_case(
        "mimecast/audit-events.yaml",
        "/api/audit/get-audit-events",
        "mimecast",
        "events",
        &[],
    )
    .await;
}

#[tokio::test]
async fn sign_in_page_fails_mimecast_find_processing_messages() {
    sign_in_case(
        "mimecast/find-processing-messages.yaml",
        "/api/gateway/find-processing-messages",
        "mimecast",
        "find",
        &[],
    )
    .await;
}

#[tokio::test]
async fn sign_in_page_fails_google_list_exports() {
    sign_in_case(
        "google/list-exports.yaml",
        "/a/feeds/compliance/audit/mail/export/example.com",
        "google",
        "list",
        &[("domain", "example.com")],
    )
    .await;
}

#[tokio::test]
async fn sign_in_page_fails_google_upload_public_key() {
    // A real public key: the upload preflight refuses anything else before sending.
    let key_path = crate::common::key().1.display().to_string();
    sign_in_case(
        "google/upload-public-key.yaml",
        "/a/feeds/compliance/audit/publickey/example.com",
        "google",
        "upload",
        &[("domain", "example.com"), ("public_key_file", &key_path)],
    )
    .await;
}

#[tokio::test]
async fn mimecast_json_without_the_envelope_fails() {
    let (base, _) = serve(vec![(
        "/api/audit/get-audit-events",
        vec![Reply::json(200, json!({"result": "ok", "items": []}))],
    )])
    .await;
    let ran = Case::file(Path::new(&wf("mimecast/audit-events.yaml")))
        .envs(&mimecast_env(&base))
        .code(1)
        .run()
        .await;
    let all = format!("{}{}", ran.stdout, ran.stderr);
    assert!(all.contains("step `events`"), "{all}");
    assert!(
        all.contains("`meta` (object), `data` (array) and `fail` (array)"),
        "{all}"
    );
    assert!(all.contains("application/json"), "{all}");
    assert!(all.contains(r#"{\"result\":\"ok\",\"items\":[]}"#), "{all}");
}

#[tokio::test]
async fn google_empty_answer_is_accepted_only_for_delete() {
    let (base, _) = serve(vec![(
        "/a/feeds/compliance/audit/mail/export/example.com/alice/42",
        vec![Reply {
            status: 200,
            headers: vec![],
            body: String::new(),
            delay: std::time::Duration::ZERO,
        }],
    )])
    .await;
    let workflow = |method: &str| {
        format!(
            r#"
            name: g
            connections:
              google: {{kind: google, base_url: "{base}", credentials: {{bearer_token: t}}}}
            steps:
              - id: s
                call: {{connection: google, method: {method}, path: /a/feeds/compliance/audit/mail/export/example.com/alice/42}}
            "#
        )
    };
    Case::yaml(&workflow("DELETE")).run().await;
    let ran = Case::yaml(&workflow("GET")).code(1).run().await;
    let all = format!("{}{}", ran.stdout, ran.stderr);
    assert!(
        all.contains("google: HTTP 200 answer is not a Google Atom"),
        "{all}"
    );
}

/// A plain `http` call to `path` answering `reply`, with extra call fields.
fn http_case(base: &str, path: &str, extra: &str) -> Case {
    Case::yaml(&format!(
        r#"
        name: h
        steps:
          - id: get
            call:
              url: "{base}{path}"
              save_to: out/got.json
              {extra}
        "#
    ))
}

#[tokio::test]
async fn http_body_that_does_not_parse_as_its_declared_type_fails() {
    let html_as_json = Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: "<!DOCTYPE html>\n<html>sign in</html>".into(),
        delay: std::time::Duration::ZERO,
    };
    let (base, _) = serve(vec![("/x", vec![html_as_json])]).await;
    let ran = http_case(&base, "/x", "").code(1).run().await;
    let all = format!("{}{}", ran.stdout, ran.stderr);
    assert!(all.contains("step `get`"), "{all}");
    assert!(
        all.contains(
            "http: HTTP 200 answer is not the JSON its content type application/json declares"
        ),
        "{all}"
    );
    assert!(all.contains("<!DOCTYPE html>"), "{all}");
    assert!(!ran.path().join("out/got.json").exists());
}

#[tokio::test]
async fn http_expect_content_type_must_match() {
    let (base, _) = serve(vec![
        ("/html", vec![sign_in_page()]),
        ("/json", vec![Reply::json(200, json!({"ok": true}))]),
    ])
    .await;
    let expect = "expect: {content_type: application/json}";
    let ran = http_case(&base, "/html", expect).code(1).run().await;
    let all = format!("{}{}", ran.stdout, ran.stderr);
    assert!(
        all.contains("content type text/html; charset=utf-8, not the expected application/json"),
        "{all}"
    );
    let ran = http_case(&base, "/json", expect).run().await;
    assert!(ran.path().join("out/got.json").exists());
}

#[tokio::test]
async fn http_link_next_without_paginate_fails() {
    let page = Reply::json(200, json!([1, 2])).header("link", "</items?page=2>; rel=\"next\"");
    let (base, _) = serve(vec![("/items", vec![page])]).await;
    let ran = http_case(&base, "/items", "").code(1).run().await;
    let all = format!("{}{}", ran.stdout, ran.stderr);
    assert!(all.contains("step `get`"), "{all}");
    assert!(
        all.contains("rel=\\\"next\\\"") || all.contains("rel=\"next\""),
        "{all}"
    );
    assert!(all.contains("`paginate: true`"), "{all}");
}

/// A vendor whose next page points back to a page already fetched fails at once, naming the
/// loop (not after 10,000 pages with advice to raise `max_pages`), and saves nothing.
#[tokio::test]
async fn pages_that_loop_back_fail_at_once() {
    let page =
        |n: u32| Reply::json(200, json!([n])).header("link", "</items?page=2>; rel=\"next\"");
    let (base, script) = serve(vec![("/items", vec![page(1), page(2), page(3)])]).await;
    let ran = http_case(&base, "/items", "paginate: true")
        .code(1)
        .run()
        .await;
    let all = format!("{}{}", ran.stdout, ran.stderr);
    assert!(all.contains("step `get`"), "{all}");
    assert!(
        all.contains("answer on page 2 points back to a page already fetched"),
        "{all}"
    );
    assert_eq!(script.requests("/items").len(), 2, "{all}");
    assert!(!ran.path().join("out/got.json").exists());
}

#[tokio::test]
async fn google_rel_next_without_paginate_fails() {
    let feed = |next: &str| {
        format!(
            "<?xml version='1.0'?>\n<feed xmlns='http://www.w3.org/2005/Atom' \
             xmlns:apps='http://schemas.google.com/apps/2006'><id>f</id>{next}\
             <entry><id>e</id><apps:property name='requestId' value='1'/></entry></feed>"
        )
    };
    let atom = |body: String| Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/atom+xml".into())],
        body,
        delay: std::time::Duration::ZERO,
    };
    let (base, _) = serve(vec![(
        "/a/feeds/compliance/audit/mail/export/example.com",
        vec![atom(feed("<link rel='next' href='?start=2'/>"))],
    )])
    .await;
    let mut wf_text = std::fs::read_to_string(wf("google/list-exports.yaml")).unwrap();
    wf_text = wf_text.replace("      paginate: true\n", "");
    let ran = Case::yaml(&wf_text)
        .envs(&google_env(&base))
        .input("domain", "example.com")
        .code(1)
        .run()
        .await;
    let all = format!("{}{}", ran.stdout, ran.stderr);
    assert!(all.contains("step `list`"), "{all}");
    assert!(all.contains("<link rel='next'>"), "{all}");
    assert!(all.contains("`paginate: true`"), "{all}");
}

#[tokio::test]
async fn mimecast_total_count_is_checked() {
    let short = json!({"meta": {"status": 200, "pagination": {"pageSize": 50, "totalCount": 5}},
                       "data": [{"id": 1}, {"id": 2}, {"id": 3}], "fail": []});
    let (base, _) = serve(vec![(
        "/api/audit/get-audit-events",
        vec![Reply::json(200, short)],
    )])
    .await;
    let ran = Case::file(Path::new(&wf("mimecast/audit-events.yaml")))
        .envs(&mimecast_env(&base))
        .code(1)
        .run()
        .await;
    let all = format!("{}{}", ran.stdout, ran.stderr);
    assert!(all.contains("step `events`"), "{all}");
    assert!(
        all.contains("reports 5 records in all (totalCount) but the 1 page(s) fetched hold 3"),
        "{all}"
    );
}

// ---- against the simulator: 120 messages in the processing queue, 50 a page by default ----

async fn simulator() -> SimHandle {
    sim::start(SimConfig::default()).await.unwrap()
}

/// The shipped find-processing-messages workflow with its `paginate:` line replaced.
fn find_messages(paginate_line: &str) -> String {
    let text = std::fs::read_to_string(wf("mimecast/find-processing-messages.yaml")).unwrap();
    assert!(text.contains("      paginate: {page_size: 100}\n"));
    text.replace("      paginate: {page_size: 100}\n", paginate_line)
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("out/manifest.json")).unwrap()).unwrap()
}

#[tokio::test]
async fn misindented_paginate_inside_json_fails() {
    let h = simulator().await;
    // `paginate:` indented under `json:` is a body field the API ignores, not pagination.
    let wf_text = find_messages("").replace(
        "            filterBy:\n",
        "            paginate: {page_size: 100}\n            filterBy:\n",
    );
    assert!(wf_text.contains("paginate"));
    let ran = Case::yaml(&wf_text).envs(&h.env()).code(1).run().await;
    let all = format!("{}{}", ran.stdout, ran.stderr);
    assert!(all.contains("step `find`"), "{all}");
    assert!(all.contains("meta.pagination.next"), "{all}");
    assert!(all.contains("`paginate: true`"), "{all}");
    assert!(
        !ran.path().join("out/processing-messages.json").exists(),
        "{all}"
    );
}

#[tokio::test]
async fn every_page_is_recorded_in_the_manifest() {
    let h = simulator().await;
    let ran = Case::yaml(&find_messages("      paginate: {page_size: 50}\n"))
        .envs(&h.env())
        .run()
        .await;
    let m = manifest(ran.path());
    assert_eq!(
        m["runs"][0]["calls"]["find"],
        json!({"pages": 3, "items": 120, "reported_total": 120, "truncated": false}),
        "{m:#}"
    );
    assert!(
        m["artifacts"]["processing-messages.json"]
            .get("truncated")
            .is_none(),
        "{m:#}"
    );
}

#[tokio::test]
async fn paginate_false_is_one_page_on_purpose_and_recorded_as_truncated() {
    let h = simulator().await;
    let ran = Case::yaml(&find_messages("      paginate: false\n"))
        .envs(&h.env())
        .stdout_has("one page saved on purpose (paginate: false)")
        .run()
        .await;
    let m = manifest(ran.path());
    assert_eq!(
        m["runs"][0]["calls"]["find"],
        json!({"pages": 1, "items": 50, "reported_total": 120, "truncated": true}),
        "{m:#}"
    );
    assert_eq!(
        m["artifacts"]["processing-messages.json"]["truncated"], true,
        "{m:#}"
    );
}

#[tokio::test]
async fn max_pages_with_pages_left_fails_unless_truncate() {
    let h = simulator().await;
    let ran = Case::yaml(&find_messages(
        "      paginate: {page_size: 20, max_pages: 2}\n",
    ))
    .envs(&h.env())
    .code(1)
    .run()
    .await;
    let all = format!("{}{}", ran.stdout, ran.stderr);
    assert!(all.contains("step `find`"), "{all}");
    assert!(all.contains("after paginate.max_pages = 2"), "{all}");
    assert!(!ran.path().join("out/processing-messages.json").exists());

    let ran = Case::yaml(&find_messages(
        "      paginate: {page_size: 20, max_pages: 2, truncate: true}\n",
    ))
    .envs(&h.env())
    .stdout_has("stopped after 2 pages")
    .run()
    .await;
    let m = manifest(ran.path());
    assert_eq!(
        m["runs"][0]["calls"]["find"],
        json!({"pages": 2, "items": 40, "reported_total": 120, "truncated": true}),
        "{m:#}"
    );

    // A limit that is not reached changes nothing.
    let ran = Case::yaml(&find_messages(
        "      paginate: {page_size: 50, max_pages: 3}\n",
    ))
    .envs(&h.env())
    .run()
    .await;
    assert_eq!(
        manifest(ran.path())["runs"][0]["calls"]["find"]["items"],
        120
    );
}

#[tokio::test]
async fn records_are_the_flat_list_across_pages_and_wrappers() {
    let h = simulator().await;
    // 3 pages of `data: [{"messages": [...]}]`: `records` holds the 120 messages themselves.
    let text = find_messages("      paginate: {page_size: 50}\n");
    let text = format!(
        "{text}\n  records: '{{{{ len steps.find.records }}}}'\n  data_items: '{{{{ len steps.find.body.data }}}}'\n  first_id: '{{{{ steps.find.records.[0].id }}}}'\n"
    );
    let ran = Case::yaml(&text).envs(&h.env()).report().run().await;
    let outputs = &ran.report()["outputs"];
    assert_eq!(outputs["records"], json!(120), "{outputs:#}");
    assert_eq!(
        outputs["data_items"],
        json!(3),
        "one wrapper per page: {outputs:#}"
    );
    assert!(
        outputs["first_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{outputs:#}"
    );
}
