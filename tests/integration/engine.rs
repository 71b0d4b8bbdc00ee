//! End-to-end engine tests: the real binary against in-process HTTP servers.

use std::time::Duration;

use crate::common::{auditflow_async, serve, text, Dir, Reply};
use serde_json::json;

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn envs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, e)| (k.to_string(), e.to_string()))
        .collect()
}

const FAST_RETRY: &str = "defaults:\n  retry: {max_attempts: 5, initial_interval: 50ms, max_interval: 200ms, jitter: none}\n";

#[tokio::test]
async fn call_retries_429_then_503_then_succeeds() {
    let (url, script) = serve(vec![(
        "/items",
        vec![
            Reply::json(429, json!({"error": "slow down"})).header("retry-after", "1"),
            Reply::json(503, json!({"error": "unavailable"})),
            Reply::json(200, json!({"items": [1, 2, 3]})),
        ],
    )])
    .await;
    let d = Dir::new();
    let wf = d.write(
        "wf.yaml",
        &format!(
            "name: retries\n{FAST_RETRY}connections:\n  api: {{kind: http, base_url: '{{{{ env.API_URL }}}}'}}\nsteps:\n  - id: fetch\n    call: {{connection: api, path: /items}}\noutputs:\n  count: '{{{{ len steps.fetch.body.items }}}}'\n"
        ),
    );
    let report = d.path().join("report.json");
    let started = std::time::Instant::now();
    let out = auditflow_async(
        args(&[
            "run",
            wf.to_str().unwrap(),
            "--report-json",
            report.to_str().unwrap(),
        ]),
        envs(&[("API_URL", &url)]),
        d.path().to_path_buf(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(script.requests("/items").len(), 3);
    // Retry-After: 1 was honoured (at least one second waited).
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(
        stdout.contains("attempt 1 failed") && stdout.contains("HTTP 429"),
        "{stdout}"
    );
    assert!(
        stdout.contains("attempt 2 failed") && stdout.contains("HTTP 503"),
        "{stdout}"
    );
    assert!(stdout.contains("3 attempts"), "{stdout}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["steps"][0]["attempts"], 3);
    assert_eq!(r["outputs"]["count"], 3);
}

#[tokio::test]
async fn call_401_fails_at_once_with_status() {
    let (url, script) = serve(vec![(
        "/secret",
        vec![Reply::json(401, json!({"error": "invalid credentials"}))],
    )])
    .await;
    let d = Dir::new();
    let wf = d.write(
        "wf.yaml",
        &format!(
            "name: denied\n{FAST_RETRY}steps:\n  - id: get\n    call: {{url: '{url}/secret'}}\n"
        ),
    );
    let out = auditflow_async(
        args(&["run", wf.to_str().unwrap()]),
        vec![],
        d.path().to_path_buf(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(
        script.requests("/secret").len(),
        1,
        "401 must not be retried"
    );
    assert!(
        stderr.contains("step `get` failed") && stderr.contains("HTTP 401"),
        "{stderr}"
    );
    assert!(
        stderr.contains("invalid credentials"),
        "vendor message expected: {stderr}"
    );
}

#[tokio::test]
async fn poll_until_done_and_fail_if_stops_at_once() {
    let pending = || Reply::json(200, json!({"status": "PENDING"}));
    let (url, script) = serve(vec![
        (
            "/job/1",
            vec![
                pending(),
                pending(),
                Reply::json(200, json!({"status": "DONE", "file": "x"})),
            ],
        ),
        (
            "/job/2",
            vec![Reply::json(
                200,
                json!({"status": "ERROR", "reason": "bad key"}),
            )],
        ),
    ])
    .await;
    let d = Dir::new();
    let body = |id: &str| {
        format!(
            "name: poll\n{FAST_RETRY}steps:\n  - id: wait\n    poll:\n      call: {{url: '{url}/job/{id}'}}\n      until: '{{{{ eq response.body.status \"DONE\" }}}}'\n      fail_if: '{{{{ eq response.body.status \"ERROR\" }}}}'\n      interval: 100ms\n    timeout: 1m\n  - id: after\n    call: {{url: '{url}/job/1', expect: {{condition: '{{{{ eq steps.wait.body.file \"x\" }}}}'}}}}\n"
        )
    };
    let ok = d.write("ok.yaml", &body("1"));
    let out = auditflow_async(
        args(&["run", ok.to_str().unwrap()]),
        vec![],
        d.path().to_path_buf(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("poll 1: PENDING") && stdout.contains("poll 2: PENDING"),
        "{stdout}"
    );
    assert!(stdout.contains("poll 3: DONE: done"), "{stdout}");
    assert_eq!(script.requests("/job/1").len(), 4);

    let bad = d.write("bad.yaml", &body("2"));
    let out = auditflow_async(
        args(&["run", bad.to_str().unwrap()]),
        vec![],
        d.path().to_path_buf(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(
        script.requests("/job/2").len(),
        1,
        "fail_if must stop at the first ERROR"
    );
    assert!(stderr.contains("terminal state `ERROR`"), "{stderr}");
}

#[tokio::test]
async fn for_each_runs_with_bounded_concurrency_and_keeps_order() {
    let slow = Reply::json(200, json!({"ok": true})).delay(Duration::from_millis(300));
    let (url, script) = serve(vec![("/u", vec![slow])]).await;
    let d = Dir::new();
    let wf = d.write(
        "wf.yaml",
        &format!(
            "name: loop\ninputs:\n  users: {{type: list, default: [a, b, c, d, e, f]}}\nsteps:\n  - id: each\n    for_each:\n      items: '{{{{ inputs.users }}}}'\n      concurrency: 3\n      steps:\n        - id: get\n          call: {{url: '{url}/u', query: {{user: '{{{{ item }}}}', n: '{{{{ index }}}}'}}}}\noutputs:\n  n: '{{{{ steps.each.count }}}}'\n  first: '{{{{ steps.each.results.[0].get.status }}}}'\n"
        ),
    );
    let report = d.path().join("r.json");
    let out = auditflow_async(
        args(&[
            "run",
            wf.to_str().unwrap(),
            "--report-json",
            report.to_str().unwrap(),
        ]),
        vec![],
        d.path().to_path_buf(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let seen = script.requests("/u");
    assert_eq!(seen.len(), 6);
    let max = script
        .max_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=3).contains(&max), "concurrency 3 expected, saw {max}");
    let mut users: Vec<String> = seen.iter().map(|s| s.query.clone().unwrap()).collect();
    assert!(users.contains(&"n=5&user=f".to_string()), "{users:?}");
    users.sort();
    assert_eq!(users[0], "n=0&user=a");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["outputs"]["n"], 6);
    assert_eq!(r["outputs"]["first"], 200);
}

#[tokio::test]
async fn uses_chain_passes_inputs_and_returns_outputs() {
    let (url, script) = serve(vec![(
        "/echo",
        vec![Reply::json(200, json!({"v": "pong"}))],
    )])
    .await;
    let d = Dir::new();
    d.write(
        "shared/leaf.yaml",
        &format!("name: leaf\ninputs:\n  who: {{required: true}}\nsteps:\n  - id: ping\n    call: {{url: '{url}/echo', query: {{who: '{{{{ inputs.who }}}}'}}}}\noutputs:\n  answer: '{{{{ steps.ping.body.v }}}}-{{{{ inputs.who }}}}'\n"),
    );
    d.write(
        "shared/middle.yaml",
        "name: middle\ninputs:\n  name: {required: true}\nsteps:\n  - id: leaf\n    uses: leaf.yaml\n    with: {who: '{{ inputs.name }}'}\noutputs:\n  answer: '{{ steps.leaf.outputs.answer }}'\n",
    );
    let top = d.write(
        "top.yaml",
        "name: top\nsteps:\n  - id: mid\n    uses: shared/middle.yaml\n    with: {name: alice}\noutputs:\n  final: '{{ steps.mid.outputs.answer }}'\n",
    );
    let report = d.path().join("r.json");
    let out = auditflow_async(
        args(&[
            "run",
            top.to_str().unwrap(),
            "--report-json",
            report.to_str().unwrap(),
        ]),
        vec![],
        d.path().to_path_buf(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(
        script.requests("/echo")[0].query.as_deref(),
        Some("who=alice")
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["outputs"]["final"], "pong-alice");
    assert!(
        stdout.contains("mid/leaf/ping"),
        "nested step paths expected: {stdout}"
    );
}

#[tokio::test]
async fn reports_are_valid_and_no_secret_leaks_anywhere() {
    let token = "tok-SUPER-secret-91823";
    let password = "pw-also-secret-5521";
    let (url, script) = serve(vec![
        ("/ok", vec![Reply::json(200, json!({"echo": token}))]),
        (
            "/fail",
            vec![Reply::json(
                403,
                json!({"error": format!("token {token} is not allowed")}),
            )],
        ),
    ])
    .await;
    let d = Dir::new();
    let wf = d.write(
        "wf.yaml",
        &format!(
            "name: secrets\n{FAST_RETRY}inputs:\n  password: {{secret: true, required: true}}\nconnections:\n  api:\n    kind: http\n    base_url: '{url}'\n    credentials: {{bearer_token: '{{{{ env.API_TOKEN }}}}'}}\nsteps:\n  - id: ok\n    call: {{connection: api, path: /ok, headers: {{x-password: '{{{{ inputs.password }}}}'}}}}\n  - id: fail\n    continue_on_error: true\n    call: {{connection: api, path: /fail, json: {{pw: '{{{{ inputs.password }}}}'}}}}\n  - id: bad\n    call: {{connection: api, path: /fail}}\n"
        ),
    );
    let report = d.path().join("report.json");
    let junit = d.path().join("junit.xml");
    let env = envs(&[("API_TOKEN", token)]);
    let out = auditflow_async(
        args(&[
            "run",
            wf.to_str().unwrap(),
            "--input",
            &format!("password={password}"),
            "--report-json",
            report.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ]),
        env.clone(),
        d.path().to_path_buf(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    // The server did get the real values.
    let ok = &script.requests("/ok")[0];
    assert_eq!(ok.headers["authorization"], format!("Bearer {token}"));
    assert_eq!(ok.headers["x-password"], password);
    let dry = auditflow_async(
        args(&[
            "run",
            wf.to_str().unwrap(),
            "--dry-run",
            "-i",
            &format!("password={password}"),
        ]),
        env,
        d.path().to_path_buf(),
    )
    .await;
    let (dry_out, dry_err) = text(&dry);
    assert_eq!(dry.status.code(), Some(0), "{dry_out}\n{dry_err}");
    assert!(
        dry_out.to_lowercase().contains("authorization:"),
        "{dry_out}"
    );
    assert!(
        dry_out.contains("\"pw\": \"***\"") || dry_out.contains("\"pw\":\"***\""),
        "{dry_out}"
    );
    assert_eq!(script.all().len(), 3, "dry run must send nothing");
    let report_text = std::fs::read_to_string(&report).unwrap();
    let junit_text = std::fs::read_to_string(&junit).unwrap();
    for (name, s) in [
        ("stdout", &stdout),
        ("stderr", &stderr),
        ("dry-run stdout", &dry_out),
        ("report", &report_text),
        ("junit", &junit_text),
    ] {
        assert!(!s.contains(token), "token leaked in {name}:\n{s}");
        assert!(!s.contains(password), "password leaked in {name}:\n{s}");
    }
    // The run record in the state directory (default .auditflow/) is masked and private.
    let runs: Vec<_> = std::fs::read_dir(d.path().join(".auditflow/runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(
        runs.len(),
        1,
        "only the real run leaves a record, not the dry run: {runs:?}"
    );
    // The run's journal and report: masked, private.
    for name in ["journal.jsonl", "report.json"] {
        let p = runs[0].join(name);
        let record = std::fs::read_to_string(&p).unwrap();
        assert!(
            !record.contains(token) && !record.contains(password),
            "{name}: {record}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
    }
    let r: serde_json::Value = serde_json::from_str(&report_text).unwrap();
    assert_eq!(r["inputs"]["password"], "***");
    assert_eq!(r["steps"][1]["status"], "failed_continued");
    assert_eq!(r["steps"][2]["status"], "failed");
    assert!(
        junit_text.contains(r#"tests="3" failures="2""#),
        "{junit_text}"
    );
    assert!(junit_text.contains("HTTP 403"), "{junit_text}");
}

#[tokio::test]
async fn missing_required_input_is_reported_before_any_request() {
    let (url, script) = serve(vec![("/x", vec![Reply::json(200, json!({}))])]).await;
    let d = Dir::new();
    let wf = d.write(
        "wf.yaml",
        &format!("name: inputs\ninputs:\n  domain: {{required: true}}\n  user: {{required: true}}\nsteps:\n  - id: a\n    call: {{url: '{url}/x'}}\n"),
    );
    let out = auditflow_async(
        args(&["run", wf.to_str().unwrap()]),
        vec![],
        d.path().to_path_buf(),
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("missing required inputs: domain, user"),
        "{stderr}"
    );
    assert!(script.all().is_empty());
}
