//! End-to-end engine tests: the real binary against in-process HTTP servers.
use std::time::Duration;

use crate::case::Case;
use crate::common::{serve, Reply};
use serde_json::json;

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
    let started = std::time::Instant::now();
    let ran = Case::yaml(
        r"
        name: retries
        defaults:
          retry: {max_attempts: 5, initial_interval: 50ms, max_interval: 200ms, jitter: none}
        connections:
          api: {kind: http, base_url: '{{ env.API_URL }}'}
        steps:
          - id: fetch
            call: {connection: api, path: /items}
        outputs:
          count: '{{ len steps.fetch.body.items }}'
        ",
    )
    .env("API_URL", &url)
    .report()
    .stdout_has("attempt 1 failed")
    .stdout_has("HTTP 429")
    .stdout_has("attempt 2 failed")
    .stdout_has("HTTP 503")
    .stdout_has("3 attempts")
    .run()
    .await;
    assert_eq!(script.requests("/items").len(), 3);
    // Retry-After: 1 was honoured (at least one second waited).
    assert!(started.elapsed() >= Duration::from_secs(1));
    let r = ran.report();
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
    Case::yaml(
        r"
        name: denied
        defaults:
          retry: {max_attempts: 5, initial_interval: 50ms, max_interval: 200ms, jitter: none}
        steps:
          - id: get
            call: {url: '{{ env.API_URL }}/secret'}
        ",
    )
    .env("API_URL", &url)
    .code(1)
    .stderr_has("step `get` failed")
    .stderr_has("HTTP 401")
    // The vendor's own message.
    .stderr_has("invalid credentials")
    .run()
    .await;
    assert_eq!(
        script.requests("/secret").len(),
        1,
        "401 must not be retried"
    );
}

/// Waits on `/job/{JOB}` until DONE, stops at ERROR, then checks the result in a second step.
const POLL: &str = r#"
    name: poll
    defaults:
      retry: {max_attempts: 5, initial_interval: 50ms, max_interval: 200ms, jitter: none}
    steps:
      - id: wait
        poll:
          call: {url: '{{ env.API_URL }}/job/{{ env.JOB }}'}
          until: '{{ eq response.body.status "DONE" }}'
          fail_if: '{{ eq response.body.status "ERROR" }}'
          interval: 100ms
        timeout: 1m
      - id: after
        call: {url: '{{ env.API_URL }}/job/1', expect: {condition: '{{ eq steps.wait.body.file "x" }}'}}
    "#;

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
    Case::yaml(POLL)
        .env("API_URL", &url)
        .env("JOB", "1")
        .stdout_has("poll 1: PENDING")
        .stdout_has("poll 2: PENDING")
        .stdout_has("poll 3: DONE: done")
        .run()
        .await;
    assert_eq!(script.requests("/job/1").len(), 4);

    Case::yaml(POLL)
        .env("API_URL", &url)
        .env("JOB", "2")
        .code(1)
        .stderr_has("terminal state `ERROR`")
        .run()
        .await;
    assert_eq!(
        script.requests("/job/2").len(),
        1,
        "fail_if must stop at the first ERROR"
    );
}

#[tokio::test]
async fn for_each_runs_with_bounded_concurrency_and_keeps_order() {
    let slow = Reply::json(200, json!({"ok": true})).delay(Duration::from_millis(300));
    let (url, script) = serve(vec![("/u", vec![slow])]).await;
    let ran = Case::yaml(
        r"
        name: loop
        inputs:
          users: {type: list, default: [a, b, c, d, e, f]}
        steps:
          - id: each
            for_each:
              items: '{{ inputs.users }}'
              concurrency: 3
              steps:
                - id: get
                  call: {url: '{{ env.API_URL }}/u', query: {user: '{{ item }}', n: '{{ index }}'}}
        outputs:
          n: '{{ steps.each.count }}'
          first: '{{ steps.each.results.[0].get.status }}'
        ",
    )
    .env("API_URL", &url)
    .report()
    .run()
    .await;
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
    assert_eq!(ran.report()["outputs"]["n"], 6);
    assert_eq!(ran.report()["outputs"]["first"], 200);
}

#[tokio::test]
async fn uses_chain_passes_inputs_and_returns_outputs() {
    let (url, script) = serve(vec![(
        "/echo",
        vec![Reply::json(200, json!({"v": "pong"}))],
    )])
    .await;
    let ran = Case::yaml(
        r"
        name: top
        steps:
          - id: mid
            uses: shared/middle.yaml
            with: {name: alice}
        outputs:
          final: '{{ steps.mid.outputs.answer }}'
        ",
    )
    .write(
        "shared/middle.yaml",
        r"
        name: middle
        inputs:
          name: {required: true}
        steps:
          - id: leaf
            uses: leaf.yaml
            with: {who: '{{ inputs.name }}'}
        outputs:
          answer: '{{ steps.leaf.outputs.answer }}'
        ",
    )
    .write(
        "shared/leaf.yaml",
        r"
        name: leaf
        inputs:
          who: {required: true}
        steps:
          - id: ping
            call: {url: '{{ env.API_URL }}/echo', query: {who: '{{ inputs.who }}'}}
        outputs:
          answer: '{{ steps.ping.body.v }}-{{ inputs.who }}'
        ",
    )
    .env("API_URL", &url)
    .report()
    // Nested step paths.
    .stdout_has("mid/leaf/ping")
    .run()
    .await;
    assert_eq!(
        script.requests("/echo")[0].query.as_deref(),
        Some("who=alice")
    );
    assert_eq!(ran.report()["outputs"]["final"], "pong-alice");
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
    let ran = Case::yaml(
        r"
        name: secrets
        defaults:
          retry: {max_attempts: 5, initial_interval: 50ms, max_interval: 200ms, jitter: none}
        inputs:
          password: {secret: true, required: true}
        connections:
          api:
            kind: http
            base_url: '{{ env.API_URL }}'
            credentials: {bearer_token: '{{ env.API_TOKEN }}'}
        steps:
          - id: ok
            call: {connection: api, path: /ok, headers: {x-password: '{{ inputs.password }}'}}
          - id: fail
            continue_on_error: true
            call: {connection: api, path: /fail, json: {pw: '{{ inputs.password }}'}}
          - id: bad
            call: {connection: api, path: /fail}
        ",
    )
    .env("API_URL", &url)
    .env("API_TOKEN", token)
    .input("password", password)
    .report()
    .arg("--junit")
    .arg("junit.xml")
    .code(1)
    .run()
    .await;
    // The server did get the real values.
    let ok = &script.requests("/ok")[0];
    assert_eq!(ok.headers["authorization"], format!("Bearer {token}"));
    assert_eq!(ok.headers["x-password"], password);
    let dry = ran
        .again()
        .env("API_URL", &url)
        .env("API_TOKEN", token)
        .arg("--dry-run")
        .arg("-i")
        .arg(&format!("password={password}"))
        .run()
        .await;
    assert!(
        dry.stdout.to_lowercase().contains("authorization:"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("\"pw\": \"***\"") || dry.stdout.contains("\"pw\":\"***\""),
        "{}",
        dry.stdout
    );
    assert_eq!(script.all().len(), 3, "dry run must send nothing");
    let report_text = std::fs::read_to_string(ran.path().join("report.json")).unwrap();
    let junit_text = std::fs::read_to_string(ran.path().join("junit.xml")).unwrap();
    for (name, s) in [
        ("stdout", &ran.stdout),
        ("stderr", &ran.stderr),
        ("dry-run stdout", &dry.stdout),
        ("report", &report_text),
        ("junit", &junit_text),
    ] {
        assert!(!s.contains(token), "token leaked in {name}:\n{s}");
        assert!(!s.contains(password), "password leaked in {name}:\n{s}");
    }
    // The run record in the state directory (default .auditflow/) is masked and private.
    let runs: Vec<_> = std::fs::read_dir(ran.path().join(".auditflow/runs"))
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
    let r = ran.report();
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
    Case::yaml(
        r"
        name: inputs
        inputs:
          domain: {required: true, description: the Workspace domain}
          user: {required: true}
        steps:
          - id: a
            call: {url: '{{ env.API_URL }}/x'}
        ",
    )
    .env("API_URL", &url)
    .code(2)
    .stderr_has("missing required inputs: domain (string: the Workspace domain), user (string)")
    .stderr_has("= help: give them with `-i domain=... -i user=...`, or in an `--inputs-file`")
    .run()
    .await;
    assert!(script.all().is_empty());
}

#[tokio::test]
async fn step_names_and_loop_concurrency_take_templates() {
    let (url, script) = serve(vec![("/u", vec![Reply::json(200, json!({}))])]).await;
    let ran = Case::yaml(
        r"
        name: templated
        inputs:
          stores: {type: list, default: [alpha, beta, gamma, delta]}
          concurrency: {type: integer, default: 2}
        steps:
          - id: each
            name: 'Verify {{ len inputs.stores }} stores'
            for_each:
              items: '{{ inputs.stores }}'
              concurrency: '{{ inputs.concurrency }}'
              steps:
                - id: get
                  name: 'VerifyStore {{ item }}'
                  call: {url: '{{ env.API_URL }}/u', query: {store: '{{ item }}'}}
        ",
    )
    .env("API_URL", &url)
    .report()
    .stdout_has("Verify 4 stores")
    .stdout_has("VerifyStore gamma")
    .run()
    .await;
    let max = script
        .max_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=2).contains(&max), "concurrency 2 expected, saw {max}");
    let names: Vec<&str> = ran.report()["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(names.contains(&"VerifyStore alpha"), "{names:?}");
}

#[tokio::test]
async fn a_templated_concurrency_that_is_not_a_number_fails_naming_the_field() {
    let (url, _script) = serve(vec![("/u", vec![Reply::json(200, json!({}))])]).await;
    Case::yaml(
        r"
        name: templated
        inputs:
          concurrency: {default: lots}
        steps:
          - id: each
            for_each:
              items: [a]
              concurrency: '{{ inputs.concurrency }}'
              steps:
                - id: get
                  call: {url: '{{ env.API_URL }}/u'}
        ",
    )
    .env("API_URL", &url)
    .code(1)
    .stderr_has("`for_each.concurrency` must be a whole number of at least 1; found `lots`")
    .run()
    .await;
}
