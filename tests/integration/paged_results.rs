//! Paginated results in bounded memory (issue 22, item 1): pages saved to `save_to` as they
//! arrive (the same bytes as the merged answer), only what later steps read held, and the
//! pages held for later steps (or merged by the vendor adapter: Google) bounded by
//! `max_response_size` with a clear error.
use serde_json::{json, Value};

use crate::case::Case;
use crate::common::{root, serve, Reply};

const FIND: &str = "/api/gateway/find-processing-messages";

/// Mimecast API 1.0 credentials (the scripted server does not check the signature).
const MIMECAST_ENV: [(&str, &str); 4] = [
    ("MIMECAST_ACCESS_KEY", "access-key"),
    ("MIMECAST_SECRET_KEY", "c2VjcmV0LWtleS1mb3ItdGVzdHM="),
    ("MIMECAST_APP_ID", "app-id"),
    ("MIMECAST_APP_KEY", "app-key"),
];

/// One queued message, about 300 bytes of JSON.
fn message(i: usize) -> Value {
    json!({
        "id": format!("msg-{i:06}"),
        "fromEnv": {"emailAddress": format!("sender{i}@example.com")},
        "to": {"emailAddress": "auditor@example.com", "displayableName": "Audit \"Team\""},
        "subject": format!("Quarterly report {i}\nline two"),
        "attachment": i.is_multiple_of(2),
        "size": 1000 + i,
        "info": "Awaiting delivery",
    })
}

/// `pages` find-processing-messages pages of `per_page` messages (in Mimecast's
/// `{"messages": [...]}` wrapper), each but the last with a next-page token, reporting
/// `total`; and the answer merged whole, as it was saved before pages were streamed.
fn mimecast_pages(pages: usize, per_page: usize, total: usize) -> (Vec<Reply>, Value) {
    let mut replies = Vec::new();
    let mut data = Vec::new();
    let mut last_meta = Value::Null;
    for p in 0..pages {
        let messages: Vec<Value> = (0..per_page).map(|i| message(p * per_page + i)).collect();
        let item = json!({"messages": messages});
        let mut pagination = json!({"pageSize": per_page, "totalCount": total});
        last_meta = json!({"status": 200, "pagination": pagination.clone()});
        if p + 1 < pages {
            pagination["next"] = json!(format!("token-{}", p + 1));
        }
        replies.push(Reply::json(
            200,
            json!({"meta": {"status": 200, "pagination": pagination}, "data": [item], "fail": []}),
        ));
        data.push(item);
    }
    let merged = json!({"meta": last_meta, "data": data, "fail": []});
    (replies, merged)
}

/// The shipped find-processing-messages workflow against `replies`.
async fn find_processing(replies: Vec<Reply>) -> Case {
    let (base, _script) = serve(vec![(FIND, replies)]).await;
    let mut case = Case::file(&root().join("workflows/mimecast/find-processing-messages.yaml"))
        .env("MIMECAST_BASE_URL", &base)
        .input("out_dir", "out")
        .report();
    for (k, v) in MIMECAST_ENV {
        case = case.env(k, v);
    }
    case
}

#[tokio::test]
async fn mimecast_pages_are_saved_as_they_arrive_byte_for_byte() {
    let (replies, merged) = mimecast_pages(40, 100, 4000);
    let ran = find_processing(replies).await.run().await;
    let saved = ran.path().join("out/processing-messages.json");
    let text = std::fs::read_to_string(&saved).unwrap();
    assert_eq!(text, serde_json::to_string_pretty(&merged).unwrap());
    assert!(text.len() > 1_000_000, "{} bytes", text.len());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(ran.report()["outputs"]["pages"], 40);
    // No temporary file is left beside the saved one.
    let mut names: Vec<String> = std::fs::read_dir(ran.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["manifest.json", "processing-messages.json"]);
    // The manifest records the pages, the records checked against totalCount, the file's hash.
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(ran.path().join("out/manifest.json")).unwrap(),
    )
    .unwrap();
    let run = manifest["runs"].as_array().and_then(|r| r.last()).unwrap();
    assert_eq!(
        run["calls"]["find"],
        json!({"pages": 40, "items": 4000, "reported_total": 4000, "truncated": false}),
        "{manifest:#}"
    );
    let sha = auditflow::durable::sha256_hex(text.as_bytes());
    assert!(manifest.to_string().contains(&sha), "{manifest:#}");
}

#[tokio::test]
async fn a_total_the_streamed_pages_do_not_reach_fails_and_saves_nothing() {
    let (replies, _) = mimecast_pages(5, 10, 51);
    let ran = find_processing(replies)
        .await
        .code(1)
        .stderr_has("step `find`")
        .stderr_has(
            "mimecast reports 51 records in all (totalCount) but the 5 page(s) fetched hold 50",
        )
        .run()
        .await;
    assert!(!ran.path().join("out/processing-messages.json").exists());
    let left = std::fs::read_dir(ran.path().join("out")).map_or(0, Iterator::count);
    assert_eq!(left, 0, "a temporary file was left behind");
}

/// `pages` `Link`-paged JSON array pages of five ~4 KiB records each.
fn link_pages(base: &str, pages: usize) -> (Vec<Reply>, Value) {
    let mut replies = Vec::new();
    let mut all = Vec::new();
    for p in 0..pages {
        let records: Vec<Value> = (0..5)
            .map(|i| json!({"id": p * 5 + i, "pad": "x".repeat(4000)}))
            .collect();
        let mut reply = Reply::json(200, Value::Array(records.clone()));
        if p + 1 < pages {
            reply = reply.header(
                "link",
                &format!("<{base}/items?page={}>; rel=\"next\"", p + 1),
            );
        }
        replies.push(reply);
        all.extend(records);
    }
    (replies, Value::Array(all))
}

/// A `Link`-paged call (12 pages, about 240 KiB in all) with `max_response_size` `limit`
/// whose workflow outputs are `outputs` (YAML lines).
async fn link_case(limit: &str, outputs: &str) -> (Case, Value) {
    let (base, script) = serve(vec![]).await;
    let (replies, merged) = link_pages(&base, 12);
    script
        .replies
        .lock()
        .unwrap()
        .insert("/items".to_string(), replies);
    let yaml = format!(
        r#"
        name: paged
        connections:
          api: {{kind: http, base_url: '{{{{ env.API_URL }}}}'}}
        steps:
          - id: list
            call:
              connection: api
              path: /items
              paginate: true
              max_response_size: {limit}
              save_to: out/items.json
        outputs:
        {outputs}
        "#
    );
    (Case::yaml(&yaml).env("API_URL", &base).report(), merged)
}

#[tokio::test]
async fn pages_no_later_step_reads_are_not_held_whatever_their_size() {
    let (case, merged) = link_case(
        "64KiB",
        "  items: '{{ steps.list.items }}'\n          pages: '{{ steps.list.pages }}'",
    )
    .await;
    let ran = case.run().await;
    let text = std::fs::read_to_string(ran.path().join("out/items.json")).unwrap();
    assert_eq!(text, serde_json::to_string_pretty(&merged).unwrap());
    assert_eq!(ran.report()["outputs"]["items"], 60);
    assert_eq!(ran.report()["outputs"]["pages"], 12);
}

#[tokio::test]
async fn pages_a_later_step_reads_are_held_within_the_limit() {
    let (case, merged) = link_case(
        "1MiB",
        "  last: '{{ steps.list.records.59.id }}'\n          n: '{{ len steps.list.body }}'",
    )
    .await;
    let ran = case.run().await;
    let text = std::fs::read_to_string(ran.path().join("out/items.json")).unwrap();
    assert_eq!(text, serde_json::to_string_pretty(&merged).unwrap());
    assert_eq!(ran.report()["outputs"]["last"], 59);
    assert_eq!(ran.report()["outputs"]["n"], 60);
}

#[tokio::test]
async fn pages_held_for_later_steps_over_the_limit_fail_with_the_figures() {
    let (case, _) = link_case("64KiB", "  last: '{{ steps.list.records.59.id }}'").await;
    let ran = case
        .code(1)
        .stderr_has("step `list`")
        .stderr_has("the http pages held in memory reach ")
        .stderr_has("after 4 page(s), over the limit of 65536 bytes (`max_response_size`")
        .stderr_has("a later template reads this step's `body` or `records`")
        .stderr_has("read the `save_to` file instead")
        .run()
        .await;
    assert!(!ran.path().join("out/items.json").exists());
}

#[tokio::test]
async fn link_pages_of_mixed_shapes_cannot_be_saved_page_by_page() {
    let (base, script) = serve(vec![]).await;
    let replies = vec![
        Reply::json(200, json!([{"id": 1}])).header("link", "</items?page=2>; rel=\"next\""),
        Reply::json(200, json!({"id": 2})),
    ];
    script
        .replies
        .lock()
        .unwrap()
        .insert("/items".to_string(), replies);
    let ran = Case::yaml(
        r#"
        name: mixed
        steps:
          - id: list
            call: {url: '{{ env.API_URL }}/items', paginate: true, save_to: out/items.json}
        outputs:
          items: '{{ steps.list.items }}'
        "#,
    )
    .env("API_URL", &base)
    .code(1)
    .stderr_has("step `list`")
    .stderr_has(
        "page 2 of the http answer is not a JSON array while the pages before it were JSON arrays",
    )
    .run()
    .await;
    assert!(!ran.path().join("out/items.json").exists());
}

/// Three Google Atom feed pages of two ~600-byte entries each, linked by `next`.
fn google_feed_pages(base: &str, path: &str) -> Vec<Reply> {
    (0..3)
        .map(|p| {
            let next = if p < 2 {
                format!("<link rel='next' href='{base}{path}?page={}'/>", p + 1)
            } else {
                String::new()
            };
            let entries: String = (0..2)
                .map(|i| {
                    format!(
                        "<entry><id>e{p}-{i}</id><apps:property name='requestId' value='{p}{i}'/>\
                         <apps:property name='note' value='{}'/></entry>",
                        "n".repeat(600)
                    )
                })
                .collect();
            Reply {
                status: 200,
                headers: vec![("content-type".into(), "application/atom+xml".into())],
                body: format!(
                    "<?xml version='1.0'?>\n<feed xmlns='http://www.w3.org/2005/Atom' \
                     xmlns:apps='http://schemas.google.com/apps/2006'><id>f</id>{next}{entries}</feed>"
                ),
                delay: std::time::Duration::ZERO,
            }
        })
        .collect()
}

/// A Google feed call nobody reads the body of, with `max_response_size` `limit`.
async fn google_case(limit: &str) -> Case {
    const PATH: &str = "/a/feeds/compliance/audit/mail/export/example.com";
    let (base, script) = serve(vec![]).await;
    let pages = google_feed_pages(&base, PATH);
    script.replies.lock().unwrap().insert(PATH.into(), pages);
    let yaml = format!(
        r#"
        name: google-held
        connections:
          google:
            kind: google
            base_url: '{{{{ env.GOOGLE_AUDIT_BASE_URL }}}}'
            credentials: {{bearer_token: '{{{{ env.GOOGLE_ACCESS_TOKEN }}}}'}}
        steps:
          - id: list
            call:
              connection: google
              method: GET
              path: {PATH}
              paginate: true
              max_response_size: {limit}
              save_to: out/exports.json
        outputs:
          pages: '{{{{ steps.list.pages }}}}'
          items: '{{{{ steps.list.items }}}}'
        "#
    );
    Case::yaml(&yaml)
        .env("GOOGLE_AUDIT_BASE_URL", &base)
        .env("GOOGLE_ACCESS_TOKEN", "ya29.test-token")
        .report()
}

#[tokio::test]
async fn google_pages_are_merged_in_memory_within_the_limit() {
    let ran = google_case("64KiB").await.run().await;
    assert_eq!(ran.report()["outputs"]["pages"], 3);
    assert_eq!(ran.report()["outputs"]["items"], 6);
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(ran.path().join("out/exports.json")).unwrap(),
    )
    .unwrap();
    let ids: Vec<&str> = saved["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["e0-0", "e0-1", "e1-0", "e1-1", "e2-0", "e2-1"],
        "{saved:#}"
    );
}

#[tokio::test]
async fn google_pages_over_the_limit_fail_naming_the_vendor_merge() {
    let ran = google_case("2KiB")
        .await
        .code(1)
        .stderr_has("step `list`")
        .stderr_has("the google pages held in memory reach ")
        .stderr_has("over the limit of 2048 bytes")
        .stderr_has("this vendor's pages are merged in memory: narrow the request")
        .run()
        .await;
    assert!(!ran.path().join("out/exports.json").exists());
}
