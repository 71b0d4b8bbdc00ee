//! Nightly jobs whose inputs move (a date range per night): a pending run of an earlier night
//! is not found by the new night's inputs, so the new run warns about it and `--resume RUN`
//! continues it with its own recorded inputs. The same nights run with a state directory and
//! with the shared PostgreSQL store.
use serde_json::json;

use crate::common::*;

const WORKFLOW: &str = r#"
name: nightly
inputs:
  day: {type: string, required: true}
  token: {type: string, default: "", secret: true}
steps:
  - id: wait
    poll:
      call:
        url: "{{ env.BASE }}/status/{{ inputs.day }}"
      until: '{{ eq response.body.state "DONE" }}'
      interval: {initial: 5s}
outputs:
  day: "{{ inputs.day }}"
"#;

fn run(d: &Dir, base: &str, store: &[&str], extra: &[&str]) -> (Option<i32>, String, String) {
    let wf = d.path().join("nightly.yaml");
    let mut args = vec!["run", wf.to_str().unwrap()];
    args.extend_from_slice(store);
    args.extend_from_slice(extra);
    let out = auditflow(&args, &[("BASE", base)], d.path());
    let (o, e) = text(&out);
    (out.status.code(), o, e)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_night_warns_about_the_pending_one_and_resume_continues_it() {
    nights(&["--state-dir", "st"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nights_in_the_shared_store_warn_and_resume_the_same_way() {
    let Some(pg) = crate::shared_state::Pg::schema().await else {
        return;
    };
    nights(&["--state", &pg.url]).await;
}

async fn nights(store: &[&str]) {
    let pending = Reply::json(200, json!({"state": "PENDING"}));
    let done = Reply::json(200, json!({"state": "DONE"}));
    let (base, script) = serve(vec![
        ("/status/2026-11-30", vec![pending, done.clone()]),
        ("/status/2026-12-01", vec![done]),
    ])
    .await;
    let d = Dir::new();
    d.write("nightly.yaml", WORKFLOW);

    // Night 1: the vendor is not done; the run detaches.
    let (code, _, e) = run(
        &d,
        &base,
        store,
        &["-i", "day=2026-11-30", "--max-wait", "1s"],
    );
    assert_eq!(code, Some(75), "{e}");
    let mut args = vec!["runs", "list", "--json"];
    args.extend_from_slice(store);
    let list = auditflow(&args, &[], d.path());
    let runs: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let id = runs[0]["run_id"].as_str().unwrap().to_string();

    // Night 2: other inputs, so a new run; it names the pending one and how to continue it.
    let (code, o, e) = run(&d, &base, store, &["-i", "day=2026-12-01"]);
    let e = format!("{o}{e}");
    assert_eq!(code, Some(0), "{e}");
    assert!(
        e.contains(&format!("run {} of this workflow", &id[..8]))
            && e.contains("input `day`: \"2026-11-30\" there, \"2026-12-01\" here")
            && e.contains(&format!("--resume {}", &id[..8])),
        "{e}"
    );

    // Resuming with another value of a recorded input is refused (it would be another run).
    let (code, _, e) = run(
        &d,
        &base,
        store,
        &["--resume", &id[..8], "-i", "day=2026-12-01"],
    );
    assert_eq!(code, Some(2), "{e}");
    assert!(e.contains("input `day` was \"2026-11-30\""), "{e}");

    // --resume continues night 1 with its own inputs (secret ones given again as usual).
    let (code, o, e) = run(
        &d,
        &base,
        store,
        &["--resume", &id[..8], "-i", "token=t0ps3cret"],
    );
    assert_eq!(code, Some(0), "{o}\n{e}");
    assert!(e.contains("resum") || o.contains("resum"), "{o}\n{e}");
    assert_eq!(script.requests("/status/2026-11-30").len(), 2);

    // It is finished now: nothing to resume, and no more warnings.
    let (code, _, e) = run(&d, &base, store, &["--resume", &id[..8]]);
    assert_eq!(code, Some(2), "{e}");
    assert!(e.contains("nothing to resume"), "{e}");
    let (code, o, e) = run(&d, &base, store, &["-i", "day=2026-12-01"]);
    assert_eq!(code, Some(0), "{e}");
    assert!(
        !o.contains("is unfinished") && !e.contains("is unfinished"),
        "{o}{e}"
    );
}
