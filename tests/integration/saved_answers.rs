//! `save_to` keeps the vendor's answer as evidence wherever it is written: a poll saves its
//! last answer (the one that ended it, success or terminal failure), and a call whose
//! `expect` fails still saves the answer that broke the rule.
use crate::common::{auditflow, serve, text, Dir, Reply};

fn status(state: &str) -> Reply {
    Reply::json(200, serde_json::json!({"state": state}))
}

fn read_json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).expect("saved file")).expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poll_saves_the_answer_that_ended_it() {
    let (url, _) = serve(vec![
        ("/ok", vec![status("PENDING"), status("DONE")]),
        ("/bad", vec![status("PENDING"), status("ERROR")]),
    ])
    .await;
    let d = Dir::new();
    let wf = |path: &str| {
        d.write(
            &format!("{path}.yaml"),
            &format!(
                "name: poll-{path}\ninputs:\n  out_dir: {{default: out}}\nsteps:\n  - id: wait\n    poll:\n      call: {{url: '{url}/{path}', save_to: '{{{{ inputs.out_dir }}}}/{path}.json'}}\n      until: '{{{{ eq response.body.state \"DONE\" }}}}'\n      fail_if: '{{{{ eq response.body.state \"ERROR\" }}}}'\n      interval: {{initial: 10ms}}\n"
            ),
        )
        .display()
        .to_string()
    };
    let o = auditflow(&["run", &wf("ok")], &[], d.path());
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(read_json(&d.path().join("out/ok.json"))["state"], "DONE");
    let v = auditflow(&["verify", "out"], &[], d.path());
    assert!(v.status.success(), "the manifest lists it: {:?}", text(&v));

    let o = auditflow(&["run", &wf("bad")], &[], d.path());
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert_eq!(
        read_json(&d.path().join("out/bad.json"))["state"],
        "ERROR",
        "the terminal answer is kept as evidence"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_expect_keeps_the_answer_that_broke_it() {
    let (url, _) = serve(vec![(
        "/events",
        vec![Reply::json(
            200,
            serde_json::json!({"records": [{"id": 1, "severity": "high"}]}),
        )],
    )])
    .await;
    let d = Dir::new();
    let wf = d.write(
        "check.yaml",
        &format!(
            "name: check\ninputs:\n  out_dir: {{default: out}}\nsteps:\n  - id: events\n    call:\n      url: '{url}/events'\n      save_to: '{{{{ inputs.out_dir }}}}/events.json'\n      expect:\n        condition: '{{{{ eq (len response.body.records) 0 }}}}'\n        message: 'high-severity events found'\n"
        ),
    );
    let o = auditflow(&["run", &wf.display().to_string()], &[], d.path());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(
        format!("{out}{err}").contains("high-severity events found"),
        "{out}\n{err}"
    );
    let saved = read_json(&d.path().join("out/events.json"));
    assert_eq!(saved["records"][0]["severity"], "high", "{saved}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_says_how_to_shorten_it_and_the_simulator_setting_caps_it() {
    let (url, _) = serve(vec![(
        "/slow",
        vec![status("PENDING"), status("PENDING"), status("DONE")],
    )])
    .await;
    let d = Dir::new();
    let wf = d
        .write(
            "slow.yaml",
            &format!(
                "name: slow\nsteps:\n  - id: wait\n    poll:\n      call: {{url: '{url}/slow'}}\n      until: '{{{{ eq response.body.state \"DONE\" }}}}'\n      interval: {{initial: 15m}}\n"
            ),
        )
        .display()
        .to_string();
    let o = auditflow(&["run", &wf, "--max-wait", "300ms"], &[], d.path());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(75), "{out}\n{err}");
    assert!(
        out.contains("the next poll is in 15m") && out.contains("AUDITFLOW_MAX_POLL_INTERVAL=1s"),
        "{out}"
    );
    let o = auditflow(
        &["run", &wf, "--fresh"],
        &[("AUDITFLOW_MAX_POLL_INTERVAL", "50ms")],
        d.path(),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        format!("{out}{err}").contains("AUDITFLOW_MAX_POLL_INTERVAL=50ms: no poll waits longer"),
        "{out}\n{err}"
    );
    let o = auditflow(
        &["run", &wf, "--fresh"],
        &[("AUDITFLOW_MAX_POLL_INTERVAL", "soon")],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
}
