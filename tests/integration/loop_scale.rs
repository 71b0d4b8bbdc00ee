//! Long loops through the real binary: iterations see what they read of the scope around
//! them, results keep what later templates read, and the JSON and JUnit reports (spooled to
//! disk during the run) hold every step.
use serde_json::json;

use crate::case::Case;
use crate::common::{serve, Reply};

#[tokio::test]
async fn a_long_loop_reads_its_scope_and_reports_every_step() {
    let (url, script) = serve(vec![
        (
            "/list",
            vec![Reply::json(
                200,
                json!({"domain": "d.example", "users": [1, 2]}),
            )],
        ),
        ("/u", vec![Reply::json(200, json!({"ok": true, "id": 7}))]),
    ])
    .await;
    let items: Vec<String> = (0..300).map(|i| format!("user{i}")).collect();
    let ran = Case::yaml(&format!(
        r"
        name: long
        inputs:
          users: {{type: list, default: {users}}}
          tag: {{type: string, default: t1}}
        steps:
          - id: list
            call: {{url: '{{{{ env.API_URL }}}}/list'}}
          - id: each
            for_each:
              items: '{{{{ inputs.users }}}}'
              concurrency: 16
              steps:
                - id: get
                  call: {{url: '{{{{ env.API_URL }}}}/u', query: {{user: '{{{{ item }}}}', tag: '{{{{ inputs.tag }}}}', domain: '{{{{ steps.list.body.domain }}}}'}}}}
        outputs:
          n: '{{{{ steps.each.count }}}}'
          last_id: '{{{{ steps.each.results.[299].get.body.id }}}}'
          last_status: '{{{{ steps.each.results.[299].get.status }}}}'
        ",
        users = serde_json::to_string(&items).expect("json")
    ))
    .env("API_URL", &url)
    .report()
    .arg("--junit")
    .arg("junit.xml")
    .run()
    .await;
    let seen = script.requests("/u");
    assert_eq!(seen.len(), 300);
    assert!(
        seen.iter()
            .any(|s| s.query.as_deref() == Some("domain=d.example&tag=t1&user=user299")),
        "{:?}",
        seen.last().map(|s| &s.query)
    );
    let report = ran.report();
    assert_eq!(
        report["outputs"],
        json!({"n": 300, "last_id": 7, "last_status": 200})
    );
    let steps = report["steps"].as_array().expect("steps");
    // list, 300 iterations' `get`, the loop itself
    assert_eq!(steps.len(), 302);
    assert!(steps.iter().any(|s| s["id"] == "each[299].get"));
    let junit = std::fs::read_to_string(ran.path().join("junit.xml")).expect("junit.xml");
    assert!(
        junit.contains(r#"<testsuite name="long" tests="302" failures="0" errors="0" skipped="0""#),
        "{}",
        &junit[..junit.len().min(400)]
    );
    assert_eq!(junit.matches("<testcase ").count(), 302);
    // Test cases are named by item label (`each[299: ...].get`).
    assert!(
        junit.contains(r#"<testcase name="each[299"#)
            && junit.contains(r#"].get" classname="long.call""#),
        "{}",
        &junit[..junit.len().min(800)]
    );
}
