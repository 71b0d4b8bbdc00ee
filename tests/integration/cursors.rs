//! Cursors across scheduled runs: the shipped Mimecast SIEM workflows against scripted
//! servers that release new files between runs (every file collected once, no gap), a crash
//! between a saved file and its cursor write (nothing skipped, at most the last file again),
//! and a `repeat` that reaches `max_iterations` (exit 75, the next run continues).
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::common::{auditflow_async, serve, text, wf, Dir, Reply, Script};

const APP_ENV: [(&str, &str); 3] = [
    ("MIMECAST_ACCESS_KEY", "access-key"),
    ("MIMECAST_APP_ID", "app-id"),
    ("MIMECAST_APP_KEY", "app-key"),
];

/// `auditflow run <workflow> -i out_dir=<dir>/out --state-dir <dir>/state` with `env`.
async fn run(workflow: &str, dir: &Path, inputs: &[&str], env: &[(&str, &str)]) -> Output {
    run_with(workflow, dir, inputs, env, &[]).await
}

/// [`run`] with `extra` arguments.
async fn run_with(
    workflow: &str,
    dir: &Path,
    inputs: &[&str],
    env: &[(&str, &str)],
    extra: &[&str],
) -> Output {
    let mut args: Vec<String> = vec![
        "run".into(),
        workflow.into(),
        "-i".into(),
        format!("out_dir={}", dir.join("out").display()),
        "--state-dir".into(),
        dir.join("state").display().to_string(),
    ];
    for i in inputs {
        args.extend(["-i".to_string(), i.to_string()]);
    }
    args.extend(extra.iter().map(ToString::to_string));
    let env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    auditflow_async(args, env, dir.to_path_buf()).await
}

fn set_replies(script: &Script, path: &str, replies: Vec<Reply>) {
    script
        .replies
        .lock()
        .unwrap()
        .insert(path.to_string(), replies);
}

/// A get-siem-logs file answer: the file's text, its name, the next file's token.
fn siem_file(name: &str, next_token: &str) -> Reply {
    Reply {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/octet-stream".into()),
            (
                "content-disposition".into(),
                format!("attachment; filename=\"{name}\""),
            ),
            ("mc-siem-token".into(), next_token.into()),
        ],
        body: format!("{{\"data\":[{{\"file\":\"{name}\"}}]}}\n"),
        delay: std::time::Duration::ZERO,
    }
}

fn caught_up() -> Reply {
    Reply::json(
        200,
        json!({"meta": {"status": 200, "isLastToken": true}, "data": [], "fail": []}),
    )
}

/// The `token` of each get-siem-logs request, in order ("" when none was sent).
fn tokens_sent(script: &Script) -> Vec<String> {
    script
        .requests("/api/audit/get-siem-logs")
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(&r.body).unwrap();
            body["data"][0]["token"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

fn siem_env(base: &str) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&str, String)> = APP_ENV.iter().map(|(k, v)| (*k, v.to_string())).collect();
    env.push(("MIMECAST_BASE_URL", base.to_string()));
    env.push((
        "MIMECAST_SECRET_KEY",
        "c2VjcmV0LWtleS1mb3ItdGVzdHM=".to_string(),
    ));
    env
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn saved(dir: &Path, sub: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("out").join(sub))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn siem_logs_three_scheduled_runs_collect_every_file_once() {
    let (base, script) = serve(vec![(
        "/api/audit/get-siem-logs",
        vec![
            siem_file("f1.json", "t1"),
            siem_file("f2.json", "t2"),
            caught_up(),
        ],
    )])
    .await;
    let d = Dir::new();
    let env = siem_env(&base);
    let env = as_refs(&env);
    let workflow = wf("mimecast/siem-logs.yaml");
    let o = run(&workflow, d.path(), &[], &env).await;
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    // Nothing new: the next run asks with the last token and is caught up at once.
    set_replies(&script, "/api/audit/get-siem-logs", vec![caught_up()]);
    let o = run(&workflow, d.path(), &[], &env).await;
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));

    // Mimecast releases two more files.
    set_replies(
        &script,
        "/api/audit/get-siem-logs",
        vec![
            siem_file("f3.json", "t3"),
            siem_file("f4.json", "t4"),
            caught_up(),
        ],
    );
    let o = run(&workflow, d.path(), &[], &env).await;
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));

    assert_eq!(
        tokens_sent(&script),
        // Run 1 ends with t2 (caught up), run 2 asks with t2 again, run 3 goes on from it.
        ["", "t1", "t2", "t2", "t2", "t3", "t4"],
        "each request continues from the last saved file"
    );
    assert_eq!(
        saved(d.path(), "MTA"),
        ["f1.json", "f2.json", "f3.json", "f4.json"]
    );
    let f3 = std::fs::read_to_string(d.path().join("out/MTA/f3.json")).unwrap();
    assert_eq!(
        f3, "{\"data\":[{\"file\":\"f3.json\"}]}\n",
        "saved as it came"
    );
}

#[tokio::test]
async fn siem_logs_crash_before_the_cursor_write_skips_nothing() {
    let (base, script) = serve(vec![(
        "/api/audit/get-siem-logs",
        vec![
            siem_file("f1.json", "t1"),
            siem_file("f2.json", "t2"),
            siem_file("f3.json", "t3"),
            caught_up(),
        ],
    )])
    .await;
    let d = Dir::new();
    let mut env = siem_env(&base);
    let workflow = wf("mimecast/siem-logs.yaml");
    env.push(("AUDITFLOW_FAILPOINT", "cursor-unwritten:2".into()));
    let o = run(&workflow, d.path(), &[], &as_refs(&env)).await;
    assert_ne!(
        o.status.code(),
        Some(0),
        "the failpoint aborts: {:?}",
        text(&o)
    );
    assert_eq!(saved(d.path(), "MTA"), ["f1.json", "f2.json"]);
    env.pop();
    let o = run(&workflow, d.path(), &[], &as_refs(&env)).await;
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let tokens = tokens_sent(&script);
    // f2 was saved but its token not stored: the resumed run takes the token from the
    // journal's record of f2's answer and goes on with f3; nothing is skipped or fetched twice.
    assert_eq!(tokens, ["", "t1", "t2", "t3"]);
    assert_eq!(saved(d.path(), "MTA"), ["f1.json", "f2.json", "f3.json"]);
}

/// A scripted Mimecast API 2.0 host (token endpoint and batch listing) and a file host.
async fn batch_servers(pages: Vec<Reply>) -> (String, Arc<Script>, String, Arc<Script>) {
    let (files, file_script) = serve(vec![]).await;
    let (api, api_script) = serve(vec![
        (
            "/oauth/token",
            vec![Reply::json(
                200,
                json!({"access_token": "bearer-secret-token", "token_type": "Bearer", "expires_in": 1800}),
            )],
        ),
        ("/siem/v1/batch/events/cg", pages),
    ])
    .await;
    (api, api_script, files, file_script)
}

fn page(files: &str, names: &[&str], next: &str, caught_up: bool) -> Reply {
    let value: Vec<Value> = names
        .iter()
        .map(|n| json!({"url": format!("{files}/batch/{n}?X-Amz-Signature=abc"), "expiry": "2099-01-01T00:00:00Z", "size": 10}))
        .collect();
    Reply::json(
        200,
        json!({"value": value, "@nextPage": next, "isCaughtUp": caught_up}),
    )
}

fn release(file_script: &Script, names: &[&str]) {
    for n in names {
        set_replies(
            file_script,
            &format!("/batch/{n}"),
            vec![Reply {
                status: 200,
                headers: vec![("content-type".into(), "application/gzip".into())],
                body: format!("gz:{n}"),
                delay: std::time::Duration::ZERO,
            }],
        );
    }
}

/// The `nextPage` of each listing request, in order ("" when none was sent).
fn next_pages_sent(script: &Script) -> Vec<String> {
    script
        .requests("/siem/v1/batch/events/cg")
        .iter()
        .map(|r| {
            url::form_urlencoded::parse(r.query.as_deref().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "nextPage")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect()
}

/// The files fetched, sorted (a page's files download concurrently).
fn file_requests(file_script: &Script) -> Vec<String> {
    let mut paths: Vec<String> = file_script.all().iter().map(|s| s.path.clone()).collect();
    paths.sort();
    paths
}

fn batch_env(api: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MIMECAST_BASE_URL", api.to_string()),
        ("MIMECAST_CLIENT_ID", "client-id".into()),
        ("MIMECAST_CLIENT_SECRET", "client-secret".into()),
    ]
}

#[tokio::test]
async fn batch_events_three_scheduled_runs_collect_every_file_once() {
    let (api, api_script, files, file_script) = batch_servers(vec![]).await;
    let d = Dir::new();
    let env = batch_env(&api);
    let env = as_refs(&env);
    let workflow = wf("mimecast/siem-batch-events.yaml");
    let listing = "/siem/v1/batch/events/cg";
    let mut expected = Vec::new();
    for (run_no, pages, names) in [
        (
            1,
            vec![
                page(&files, &["a.gz", "b.gz"], "p1", false),
                page(&files, &["c.gz"], "p2", true),
            ],
            vec!["a.gz", "b.gz", "c.gz"],
        ),
        (2, vec![page(&files, &["d.gz"], "p3", true)], vec!["d.gz"]),
        (3, vec![page(&files, &[], "p3", true)], vec![]),
    ] {
        release(&file_script, &names);
        set_replies(&api_script, listing, pages);
        let o = run(&workflow, d.path(), &[], &env).await;
        assert_eq!(o.status.code(), Some(0), "run {run_no}: {:?}", text(&o));
        expected.extend(names.iter().map(|n| format!("/batch/{n}")));
    }
    assert_eq!(file_requests(&file_script), expected, "every file once");
    assert_eq!(next_pages_sent(&api_script), ["", "p1", "p2", "p3"]);
    // Only the first listing (no position yet) names the start day.
    let first = api_script.requests(listing)[0].query.clone().unwrap();
    assert!(first.contains("dateRangeStartsAt="), "{first}");
    assert!(!api_script.requests(listing)[1]
        .query
        .clone()
        .unwrap()
        .contains("dateRangeStartsAt"));
    assert_eq!(saved(d.path(), "receipt"), ["a.gz", "b.gz", "c.gz", "d.gz"]);
    assert!(api_script
        .requests(listing)
        .iter()
        .all(|r| r.method == "GET" && r.body.is_empty()));
    // The bearer token went to the API host only, never to the pre-signed file host.
    assert!(api_script.requests(listing)[0].headers["authorization"].starts_with("Bearer "));
    for s in file_script.all() {
        assert!(!s.headers.contains_key("authorization"), "{s:?}");
    }
}

#[tokio::test]
async fn batch_events_crash_before_the_cursor_write_skips_nothing() {
    let (api, api_script, files, file_script) = batch_servers(vec![]).await;
    release(&file_script, &["a.gz", "b.gz", "c.gz"]);
    set_replies(
        &api_script,
        "/siem/v1/batch/events/cg",
        vec![
            page(&files, &["a.gz", "b.gz"], "p1", false),
            page(&files, &["c.gz"], "p2", true),
        ],
    );
    let d = Dir::new();
    let mut env = batch_env(&api);
    let workflow = wf("mimecast/siem-batch-events.yaml");
    env.push(("AUDITFLOW_FAILPOINT", "cursor-unwritten:1".into()));
    let o = run(&workflow, d.path(), &[], &as_refs(&env)).await;
    assert_ne!(
        o.status.code(),
        Some(0),
        "the failpoint aborts: {:?}",
        text(&o)
    );
    env.pop();
    // Asked from the same position, the vendor lists the same pages again.
    set_replies(
        &api_script,
        "/siem/v1/batch/events/cg",
        vec![
            page(&files, &["a.gz", "b.gz"], "p1", false),
            page(&files, &["c.gz"], "p2", true),
        ],
    );
    let o = run(&workflow, d.path(), &[], &as_refs(&env)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).0);
    let got = file_requests(&file_script);
    for n in ["a.gz", "b.gz", "c.gz"] {
        let times = got.iter().filter(|p| p.ends_with(n)).count();
        assert!(times >= 1, "{n} never fetched: {got:?}\n{}", text(&o).0);
    }
    assert!(got.len() <= 4, "at most the last file again: {got:?}");
    let pages = next_pages_sent(&api_script);
    // The listing's answer holds pre-signed URLs, which the journal does not keep: the
    // resumed run lists from the stored position again, and keeps the files it has.
    assert_eq!(
        pages,
        ["", "", "p1"],
        "the listing never moves past an unsaved page"
    );
    assert_eq!(got.len(), 3, "no file fetched twice: {got:?}");
    assert_eq!(saved(d.path(), "receipt"), ["a.gz", "b.gz", "c.gz"]);
}

#[tokio::test]
async fn max_iterations_ends_75_and_the_next_run_continues_from_the_cursor() {
    let (base, script) = serve(vec![(
        "/next",
        vec![Reply::json(200, json!({"more": true}))],
    )])
    .await;
    let d = Dir::new();
    let src = format!(
        r#"name: counter
inputs:
  out_dir: {{default: out}}
cursors:
  position: {{initial: "p0"}}
steps:
  - id: chain
    repeat:
      max_iterations: 3
      until: "{{{{ not steps.get.body.more }}}}"
      steps:
        - id: get
          call: {{url: "{base}/next?from={{{{ cursors.position }}}}"}}
        - id: advance
          set_cursor: {{name: position, value: "{{{{ steps.get.body.next }}}}"}}
"#
    );
    let path = d.write("counter.yaml", &src);
    let path = path.display().to_string();
    set_replies(
        &script,
        "/next",
        (1..=4)
            .map(|i| Reply::json(200, json!({"more": true, "next": format!("p{i}")})))
            .collect(),
    );
    let o = run(&path, d.path(), &[], &[]).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(75), "{out}\n{err}");
    assert!(err.contains("more data remains"), "{err}");
    let o = run(&path, d.path(), &[], &[]).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(75), "{out}\n{err}");
    assert!(
        !err.contains("resum"),
        "a new run, not a resumed one: {err}"
    );
    let froms: Vec<String> = script
        .requests("/next")
        .iter()
        .map(|r| r.query.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        froms,
        ["from=p0", "from=p1", "from=p2", "from=p3", "from=p4", "from=p4"]
    );
}

#[tokio::test]
async fn a_cursor_value_holding_a_secret_is_refused_and_not_stored() {
    let (base, _script) = serve(vec![("/x", vec![Reply::json(200, json!({"ok": true}))])]).await;
    let d = Dir::new();
    let src = format!(
        r#"name: leaky
inputs:
  out_dir: {{default: out}}
  password: {{secret: true, default: hunter2-very-secret}}
cursors:
  position: {{}}
steps:
  - id: get
    call: {{url: "{base}/x"}}
  - id: advance
    set_cursor: {{name: position, value: "after-{{{{ inputs.password }}}}"}}
"#
    );
    let path = d.write("leaky.yaml", &src).display().to_string();
    let o = run(&path, d.path(), &[], &[]).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("holds a secret"), "{err}");
    assert!(!format!("{out}{err}").contains("hunter2"), "{out}\n{err}");
    assert!(
        !d.path().join("state/cursors").exists(),
        "no cursor written"
    );
}

#[tokio::test]
async fn a_cursor_in_the_shared_store_survives_the_loss_of_every_runners_disk() {
    let Some(pg) = crate::shared_state::Pg::schema().await else {
        return;
    };
    let (base, script) = serve(vec![(
        "/api/audit/get-siem-logs",
        vec![
            siem_file("f1.json", "t1"),
            siem_file("f2.json", "t2"),
            caught_up(),
        ],
    )])
    .await;
    let env = siem_env(&base);
    let env = as_refs(&env);
    let workflow = wf("mimecast/siem-logs.yaml");
    let store = ["--state", pg.url.as_str()];
    let first = Dir::new();
    let o = run_with(&workflow, first.path(), &[], &env, &store).await;
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    // Every runner's disk is gone: the next run, elsewhere, continues from the store.
    drop(first);
    set_replies(
        &script,
        "/api/audit/get-siem-logs",
        vec![siem_file("f3.json", "t3"), caught_up()],
    );
    let second = Dir::new();
    let o = run_with(&workflow, second.path(), &[], &env, &store).await;
    let (_, e) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(
        !e.contains("no stored position"),
        "the cursor was found: {e}"
    );
    assert_eq!(
        tokens_sent(&script),
        ["", "t1", "t2", "t2", "t3"],
        "the second runner went on from the first one's last file"
    );
    assert_eq!(saved(second.path(), "MTA"), ["f3.json"]);
    let listed =
        crate::common::auditflow(&["cursors", "list", "--state", &pg.url], &[], second.path());
    let (o, _) = text(&listed);
    assert!(o.contains("\"t3\""), "{o}");
}
