//! Durable runs against the simulator through the real binary: the runner is crashed at many
//! points of a Google mailbox export (failpoints abort like `kill -9`; one case sends SIGKILL
//! itself) and run again; every time the mbox files are byte-identical to what the simulator
//! encrypted and exactly one export was created. Also: detach with exit 75 and resume, damaged
//! or foreign state directories, a changed workflow, `runs list/show`, and `--shard`.
use crate::common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::common::{auditflow_async, key, root, serve, text, wf, Dir, Reply};
use auditflow_sim::{self as sim, SimConfig, SimHandle};

pub(crate) const DOMAIN: &str = "example.com";

pub(crate) fn sim_config(pending_polls: u32) -> SimConfig {
    SimConfig {
        google_pending_polls: pending_polls,
        google_files_per_export: 2,
        google_file_size: 300 * 1024,
        ..SimConfig::default()
    }
}

/// A simulator with the domain's public key uploaded.
async fn start_sim(pending_polls: u32) -> SimHandle {
    start_sim_with(sim_config(pending_polls)).await
}

/// A simulator configured as `cfg`, with the domain's public key uploaded.
pub(crate) async fn start_sim_with(cfg: SimConfig) -> SimHandle {
    let h = sim::start(cfg).await.expect("simulator");
    let d = Dir::new();
    let (_, public, _) = key();
    let o = auditflow(
        &h,
        &[
            "run",
            &wf("google/upload-public-key.yaml"),
            "-i",
            &format!("domain={DOMAIN}"),
            "-i",
            &format!("public_key_file={}", public.display()),
        ],
        &[],
        d.path(),
    )
    .await;
    assert!(o.status.success(), "{:?}", text(&o));
    h
}

pub(crate) fn env_for(h: &SimHandle, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = h.env();
    let (sk, _, pass) = key();
    env.push(("AUDIT_PGP_SECRET_KEY".into(), sk.display().to_string()));
    env.push(("AUDIT_PGP_PASSPHRASE".into(), pass.clone()));
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    env
}

async fn auditflow(h: &SimHandle, args: &[&str], extra: &[(&str, &str)], cwd: &Path) -> Output {
    auditflow_async(
        args.iter().map(std::string::ToString::to_string).collect(),
        env_for(h, extra),
        cwd.to_path_buf(),
    )
    .await
}

/// `auditflow run mailbox-export.yaml` for `user`, state in `dir/state`, files in `dir/out`.
fn export_args(user: &str, dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "run",
        &wf("google/mailbox-export.yaml"),
        "-i",
        &format!("domain={DOMAIN}"),
        "-i",
        &format!("user={user}"),
        "-i",
        "poll_interval=50ms",
        "-i",
        &format!("out_dir={}", dir.join("out").display()),
        "--state-dir",
        &dir.join("state").display().to_string(),
    ]
    .iter()
    .map(std::string::ToString::to_string)
    .collect();
    a.extend(extra.iter().map(std::string::ToString::to_string));
    a
}

async fn export(
    h: &SimHandle,
    user: &str,
    dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let args = export_args(user, dir, extra);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    auditflow(h, &a, env, dir).await
}

fn request_id_of(out: &Path) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).expect("manifest"))
            .expect("manifest json");
    m["artifacts"]
        .as_object()
        .expect("artifacts")
        .values()
        .find_map(|a| a["request_id"].as_str().map(str::to_string))
        .expect("request id in the manifest")
}

/// Every mbox is byte-identical to a plaintext the simulator encrypted, each exactly once;
/// no `.part` or temporary file is left anywhere under `out`.
pub(crate) fn assert_artifacts(h: &SimHandle, out: &Path) {
    let request_id = request_id_of(out);
    let mut mboxes: Vec<Vec<u8>> = std::fs::read_dir(out)
        .expect("out dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "mbox"))
        .map(|p| std::fs::read(p).expect("mbox"))
        .collect();
    let mut expected: Vec<Vec<u8>> = (0..2)
        .map(|n| h.google.plaintext(&request_id, n).expect("plaintext"))
        .collect();
    mboxes.sort();
    expected.sort();
    assert_eq!(mboxes.len(), 2, "two mbox files");
    assert!(
        mboxes == expected,
        "mbox files differ from the simulator's plaintext"
    );
    let mut stack = vec![out.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.ends_with(".part") && !name.starts_with('.'),
                "left over: {}",
                p.display()
            );
        }
    }
    // And the evidence manifest verifies.
    let v = std::process::Command::new(env!("CARGO_BIN_EXE_auditflow"))
        .args(["verify", &out.display().to_string()])
        .output()
        .expect("verify");
    assert!(v.status.success(), "{:?}", text(&v));
}

fn crashed(o: &Output) -> bool {
    !o.status.success() && o.status.code().is_none_or(|c| c != 0 && c != 1 && c != 2)
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_anywhere_then_resume_gives_the_same_files_and_one_export() {
    let h = start_sim(3).await;
    // (failpoint, what the crash interrupts)
    // (failpoint, what the crash interrupts, what the resumed run must say it did)
    let points = [
        (
            "once-after-intent",
            "the intent is durable, the create is not sent",
            "has no such request: it was not carried out; sending it",
        ),
        (
            "once-before-response",
            "the export was created, the answer is not recorded",
            "already carried it out (request",
        ),
        (
            "poll-pending:2",
            "mid-poll, after the second PENDING",
            "status: poll 3: PENDING; next in 112ms",
        ),
        (
            "download-mid:1",
            "mid-download, part of a file in the .part",
            "resuming at byte",
        ),
        (
            "after-download:1",
            "one file downloaded and renamed, not yet recorded",
            "was downloaded and verified by an earlier process",
        ),
        (
            "decrypt-mid:1",
            "mid-decrypt, part of the plaintext in a temp file",
            "partial plaintext file(s) left by an earlier process",
        ),
        (
            "decrypted-unrecorded:1",
            "one plaintext renamed into place, its record not written (the claim covers it)",
            "decrypt",
        ),
        (
            "after-decrypt:1",
            "one file decrypted, the other not",
            "was decrypted by an earlier process",
        ),
        (
            "run-end",
            "every step recorded, the manifest not written",
            "fetch (Wait for the export, download and decrypt it): recorded",
        ),
        (
            "manifest-written",
            "the manifest written, the run's end not recorded",
            "fetch (Wait for the export, download and decrypt it): recorded",
        ),
        (
            "run-recorded",
            "the run's end recorded: its evidence must already be complete",
            "already succeeded with these inputs",
        ),
    ];
    for (i, (point, what, says)) in points.iter().enumerate() {
        let d = Dir::new();
        let user = format!("crash{i}");
        let before = h.google.exports_created(DOMAIN);
        let o = export(&h, &user, d.path(), &[], &[("AUDITFLOW_FAILPOINT", point)]).await;
        let (out1, err1) = text(&o);
        assert!(
            crashed(&o),
            "{point}: the run did not crash: {:?}\n{out1}\n{err1}",
            o.status
        );
        assert!(err1.contains("failpoint"), "{point}: {err1}");
        let o = export(&h, &user, d.path(), &[], &[]).await;
        let (out2, err2) = text(&o);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{point} ({what}): resume failed\n{out2}\n{err2}"
        );
        assert!(out2.contains("resuming"), "{point}: {out2}");
        assert!(out2.contains(says), "{point}: expected `{says}` in\n{out2}");
        assert_eq!(
            h.google.exports_created(DOMAIN) - before,
            1,
            "{point} ({what}): exactly one export\n{out2}\n{err2}"
        );
        assert_artifacts(&h, &d.path().join("out"));
        // A third run starts a new run (the last one succeeded), which would create again:
        // not done here; the journal says succeeded.
        let list = auditflow(
            &h,
            &[
                "runs",
                "list",
                "--state-dir",
                &d.path().join("state").display().to_string(),
            ],
            &[],
            d.path(),
        )
        .await;
        let (l, _) = text(&list);
        assert!(l.contains("succeeded"), "{point}: {l}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crashes_in_a_row_and_a_real_sigkill() {
    let h = start_sim(4).await;
    let d = Dir::new();
    let before = h.google.exports_created(DOMAIN);
    for point in ["once-before-response", "poll-pending:1", "download-mid:1"] {
        let o = export(
            &h,
            "chain",
            d.path(),
            &[],
            &[("AUDITFLOW_FAILPOINT", point)],
        )
        .await;
        assert!(crashed(&o), "{point}: {:?}", text(&o));
    }
    // Then SIGKILL from outside while it polls (the simulator keeps it PENDING for 4 polls
    // of a fresh export; this run only has polls left, so kill it as soon as it started).
    let d2 = Dir::new();
    let args = export_args("sigkill", d2.path(), &[]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_auditflow"))
        .args(&args)
        .current_dir(d2.path())
        .envs(env_for(&h, &[]))
        .env("CI", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let created = h.google.exports_created(DOMAIN);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while h.google.exports_created(DOMAIN) == created {
        assert!(std::time::Instant::now() < deadline, "no export created");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success());
    for dir in [d.path(), d2.path()] {
        let user = if dir == d.path() { "chain" } else { "sigkill" };
        let o = export(&h, user, dir, &[], &[]).await;
        assert_eq!(o.status.code(), Some(0), "{user}: {:?}", text(&o));
        assert_artifacts(&h, &dir.join("out"));
    }
    assert_eq!(
        h.google.exports_created(DOMAIN) - before,
        2,
        "one export per user"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn detach_with_exit_75_then_resume_to_completion() {
    // Stays PENDING for 8 polls (50 ms apart at first, growing): --max-wait 300ms detaches.
    let h = start_sim(8).await;
    let d = Dir::new();
    let o = export(&h, "waiter", d.path(), &["--max-wait", "300ms"], &[]).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(75), "{out}\n{err}");
    assert!(err.contains("pending") && err.contains("PENDING"), "{err}");
    assert!(err.contains("run the same command again"), "{err}");
    assert_eq!(h.google.exports_created(DOMAIN), 1);
    let state = d.path().join("state").display().to_string();
    let list = auditflow(&h, &["runs", "list", "--state-dir", &state], &[], d.path()).await;
    let (l, _) = text(&list);
    assert!(l.contains("pending*"), "{l}");
    let id = l
        .lines()
        .nth(1)
        .and_then(|x| x.split_whitespace().next())
        .expect("a run id")
        .to_string();
    let show = auditflow(
        &h,
        &["runs", "show", &id[..8], "--state-dir", &state],
        &[],
        d.path(),
    )
    .await;
    let (s, e) = text(&show);
    assert!(show.status.success(), "{e}");
    assert!(s.contains("sent once, answer recorded"), "{s}");
    assert!(s.contains("waiting after"), "{s}");
    // The same, for scripts.
    let list = auditflow(
        &h,
        &["runs", "list", "--json", "--state-dir", &state],
        &[],
        d.path(),
    )
    .await;
    let runs: serde_json::Value = serde_json::from_slice(&list.stdout).expect("runs list --json");
    assert_eq!(runs[0]["run_id"], serde_json::json!(id), "{runs}");
    assert_eq!(runs[0]["status"], "pending", "{runs}");
    assert_eq!(runs[0]["unfinished"], true, "{runs}");
    let show = auditflow(
        &h,
        &["runs", "show", &id[..8], "--json", "--state-dir", &state],
        &[],
        d.path(),
    )
    .await;
    let run: serde_json::Value = serde_json::from_slice(&show.stdout).expect("runs show --json");
    let steps = run["steps"].as_array().expect("steps");
    let create = steps
        .iter()
        .find(|s| s["step"] == "create")
        .expect("create step");
    assert!(create["answer_recorded_at"].is_string(), "{run}");
    assert!(create["request_id"].is_string(), "{run}");
    assert!(
        steps
            .iter()
            .any(|s| s["state"] == "waiting" && s["polls"].as_u64() > Some(0)),
        "{run}"
    );
    // Scheduled runs later: each continues polling; the last one finishes.
    let mut code = Some(75);
    for _ in 0..20 {
        let o = export(&h, "waiter", d.path(), &["--max-wait", "400ms"], &[]).await;
        code = o.status.code();
        if code != Some(75) {
            assert_eq!(code, Some(0), "{:?}", text(&o));
            break;
        }
    }
    assert_eq!(code, Some(0));
    assert_eq!(h.google.exports_created(DOMAIN), 1, "never a second export");
    assert_artifacts(&h, &d.path().join("out"));
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_or_foreign_state_is_an_error_never_a_second_export() {
    let h = start_sim(2).await;
    // A directory that is not ours.
    let d = Dir::new();
    std::fs::create_dir_all(d.path().join("state")).unwrap();
    std::fs::write(d.path().join("state/notes.txt"), "someone's notes").unwrap();
    let o = export(&h, "foreign", d.path(), &[], &[]).await;
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("is not an auditflow state directory"), "{err}");
    assert_eq!(h.google.exports_created(DOMAIN), 0);

    // A journal damaged in the middle, after the export was created.
    let d = Dir::new();
    let o = export(
        &h,
        "damaged",
        d.path(),
        &[],
        &[("AUDITFLOW_FAILPOINT", "poll-pending:1")],
    )
    .await;
    assert!(crashed(&o));
    assert_eq!(h.google.exports_created(DOMAIN), 1);
    let runs = d.path().join("state/runs");
    let run_dir = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let journal = run_dir.join("journal.jsonl");
    let text_j = std::fs::read_to_string(&journal).unwrap();
    let mut lines: Vec<&str> = text_j.lines().collect();
    assert!(lines.len() > 3);
    lines[2] = "{\"type\": \"done\", garbage";
    std::fs::write(&journal, lines.join("\n") + "\n").unwrap();
    let o = export(&h, "damaged", d.path(), &[], &[]).await;
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("journal.jsonl:3") && err.contains("damaged"),
        "{err}"
    );
    assert_eq!(h.google.exports_created(DOMAIN), 1, "no second export");

    // A torn last line (a crash while appending) is expected and ignored.
    let d = Dir::new();
    let o = export(
        &h,
        "torn",
        d.path(),
        &[],
        &[("AUDITFLOW_FAILPOINT", "once-before-response")],
    )
    .await;
    assert!(crashed(&o));
    let run_dir = std::fs::read_dir(d.path().join("state/runs"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(run_dir.join("journal.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"type\":\"done\",\"step\":\"cre").unwrap();
    drop(f);
    let o = export(&h, "torn", d.path(), &[], &[]).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("cut off by the crash"), "{out}");
    assert_eq!(h.google.exports_created(DOMAIN), 2, "one export for `torn`");
    assert_artifacts(&h, &d.path().join("out"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_workflow_does_not_resume_a_run_that_created_an_export() {
    let h = start_sim(2).await;
    let d = Dir::new();
    // A private copy of the workflow files, to edit.
    let wfdir = d.path().join("wf");
    for sub in ["google", "shared"] {
        std::fs::create_dir_all(wfdir.join(sub)).unwrap();
    }
    for f in [
        "google/mailbox-export.yaml",
        "shared/google-export-fetch.yaml",
    ] {
        std::fs::copy(root().join("workflows").join(f), wfdir.join(f)).unwrap();
    }
    let file = wfdir
        .join("google/mailbox-export.yaml")
        .display()
        .to_string();
    let args = |extra: &[&str]| {
        let mut a = vec![
            "run".to_string(),
            file.clone(),
            "-i".into(),
            format!("domain={DOMAIN}"),
            "-i".into(),
            "user=edited".into(),
            "-i".into(),
            "poll_interval=50ms".into(),
            "-i".into(),
            format!("out_dir={}", d.path().join("out").display()),
            "--state-dir".into(),
            d.path().join("state").display().to_string(),
        ];
        a.extend(extra.iter().map(std::string::ToString::to_string));
        a
    };
    let run = |a: Vec<String>, env: Vec<(&'static str, &'static str)>| {
        let h = &h;
        let d = d.path().to_path_buf();
        async move {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            auditflow(h, &a, &env, &d).await
        }
    };
    let o = run(args(&[]), vec![("AUDITFLOW_FAILPOINT", "poll-pending:1")]).await;
    assert!(crashed(&o));
    assert_eq!(h.google.exports_created(DOMAIN), 1);
    let shared = wfdir.join("shared/google-export-fetch.yaml");
    let t = std::fs::read_to_string(&shared).unwrap();
    std::fs::write(&shared, format!("{t}\n# edited\n")).unwrap();
    let o = run(args(&[]), vec![]).await;
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the workflow changed") && err.contains("google-export-fetch.yaml was edited"),
        "{err}"
    );
    assert_eq!(h.google.exports_created(DOMAIN), 1);
    // --fresh is the explicit way out: a new run, a new export.
    let o = run(args(&["--fresh"]), vec![]).await;
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(h.google.exports_created(DOMAIN), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn shards_split_items_disjointly_and_completely() {
    let (url, script) = serve(vec![("/u", vec![Reply::json(200, serde_json::json!({}))])]).await;
    let d = Dir::new();
    let users: Vec<String> = (0..40).map(|i| format!("user{i:02}")).collect();
    let wf = d.write(
        "fan.yaml",
        &format!(
            "name: fan\ninputs:\n  users: {{type: list, required: true}}\nsteps:\n  - id: each\n    for_each:\n      items: '{{{{ inputs.users }}}}'\n      concurrency: 4\n      steps:\n        - id: hit\n          call: {{url: '{url}/u', query: {{name: '{{{{ item }}}}'}}}}\n"
        ),
    );
    let inputs = d.write("inputs.yaml", &format!("users: [{}]\n", users.join(", ")));
    let mut counts = Vec::new();
    for i in 1..=3 {
        let shard = format!("{i}/3");
        let o = common::auditflow(
            &[
                "run",
                &wf.display().to_string(),
                "--inputs-file",
                &inputs.display().to_string(),
                "--shard",
                &shard,
                "--state-dir",
                &d.path().join(format!("state{i}")).display().to_string(),
            ],
            &[],
            d.path(),
        );
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
        assert!(out.contains(&format!("shard {shard}:")), "{out}");
        counts.push(script.all().len());
    }
    let mut seen: Vec<String> = script
        .all()
        .iter()
        .map(|s| {
            s.query
                .as_deref()
                .and_then(|q| q.split('=').nth(1))
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let n = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(
        n,
        users.len(),
        "each item exactly once over all shards: {counts:?}"
    );
    assert_eq!(seen, users);
    assert!(
        counts[0] > 0 && counts[1] > counts[0] && counts[2] > counts[1],
        "{counts:?}"
    );
    let bad = common::auditflow(
        &["run", &wf.display().to_string(), "--shard", "4/3"],
        &[],
        d.path(),
    );
    assert_eq!(bad.status.code(), Some(2));
}

fn atom(status: u16, xml: &str) -> Reply {
    Reply {
        status,
        headers: vec![("content-type".into(), "application/atom+xml".into())],
        body: xml.to_string(),
        delay: Duration::ZERO,
    }
}

const FEED_WITH_ALICE: &str = "<?xml version='1.0' encoding='UTF-8'?>\
<feed xmlns='http://www.w3.org/2005/Atom' xmlns:apps='http://schemas.google.com/apps/2006'><id>f</id>\
<entry><id>e1</id>\
<apps:property name='requestId' value='777'/>\
<apps:property name='userEmailAddress' value='alice@example.com'/>\
<apps:property name='beginDate' value='2024-01-01 00:00'/>\
<apps:property name='packageContent' value='FULL_MESSAGE'/>\
<apps:property name='status' value='PENDING'/></entry></feed>";

const EMPTY_FEED: &str = "<?xml version='1.0' encoding='UTF-8'?>\
<feed xmlns='http://www.w3.org/2005/Atom' xmlns:apps='http://schemas.google.com/apps/2006'><id>f</id></feed>";

const CREATED_778: &str = "<?xml version='1.0' encoding='UTF-8'?>\
<entry xmlns='http://www.w3.org/2005/Atom' xmlns:apps='http://schemas.google.com/apps/2006'><id>e</id>\
<apps:property name='requestId' value='778'/><apps:property name='status' value='PENDING'/></entry>";

/// A create-only workflow against a scripted Google; returns (exit code, request id, stderr).
async fn create_once(url: &str, d: &Dir) -> (Option<i32>, String, String) {
    let wf = d.write(
        "create.yaml",
        "name: create-only\nconnections:\n  g: {kind: google, base_url: '{{ env.G_URL }}', credentials: {bearer_token: '{{ env.G_TOKEN }}'}}\ndefaults: {retry: {initial_interval: 10ms, max_attempts: 4}}\nsteps:\n  - id: create\n    call:\n      connection: g\n      method: POST\n      path: /a/feeds/compliance/audit/mail/export/example.com/alice\n      atom: {beginDate: '2024-01-01 00:00', packageContent: FULL_MESSAGE}\noutputs:\n  request_id: '{{ steps.create.body.properties.requestId }}'\n",
    );
    let report = d.path().join("report.json");
    let o = auditflow_async(
        vec![
            "run".into(),
            wf.display().to_string(),
            "--report-json".into(),
            report.display().to_string(),
            "-v".into(),
        ],
        vec![
            ("G_URL".into(), url.to_string()),
            ("G_TOKEN".into(), "tok-secret-123".into()),
        ],
        d.path().to_path_buf(),
    )
    .await;
    let (out, err) = text(&o);
    let id = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|r| r["outputs"]["request_id"].as_str().map(str::to_string))
        .unwrap_or_default();
    (o.status.code(), id, format!("{out}\n{err}"))
}

const CREATE: &str = "/a/feeds/compliance/audit/mail/export/example.com/alice";
const LIST: &str = "/a/feeds/compliance/audit/mail/export/example.com";

#[tokio::test]
async fn a_5xx_after_the_vendor_created_the_export_is_looked_up_not_repeated() {
    // The first listing is the check for an existing request before the first send.
    let (url, script) = serve(vec![
        (CREATE, vec![atom(503, "busy")]),
        (
            LIST,
            vec![atom(200, EMPTY_FEED), atom(200, FEED_WITH_ALICE)],
        ),
    ])
    .await;
    let d = Dir::new();
    let (code, id, out) = create_once(&url, &d).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(id, "777", "the export found in the list is adopted: {out}");
    assert_eq!(script.requests(CREATE).len(), 1, "never sent twice");
    let lists = script.requests(LIST);
    assert_eq!(lists.len(), 2);
    assert!(
        lists[1]
            .query
            .as_deref()
            .unwrap_or_default()
            .starts_with("fromDate="),
        "{:?}",
        lists[0].query
    );
    assert!(!out.contains("tok-secret-123"));
}

#[tokio::test]
async fn a_5xx_before_the_vendor_acted_is_looked_up_then_sent_again() {
    let (url, script) = serve(vec![
        (CREATE, vec![atom(503, "busy"), atom(201, CREATED_778)]),
        (LIST, vec![atom(200, EMPTY_FEED), atom(200, EMPTY_FEED)]),
    ])
    .await;
    let d = Dir::new();
    let (code, id, out) = create_once(&url, &d).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(id, "778");
    assert_eq!(script.requests(CREATE).len(), 2);
    assert_eq!(
        script.requests(LIST).len(),
        2,
        "the check before, the lookup after"
    );
}

#[tokio::test]
async fn a_4xx_is_not_looked_up_and_a_429_is_simply_retried() {
    let (url, script) = serve(vec![
        (
            CREATE,
            vec![
                atom(429, "slow down").header("retry-after", "0"),
                atom(400, "bad date"),
            ],
        ),
        (
            LIST,
            vec![atom(200, EMPTY_FEED), atom(200, FEED_WITH_ALICE)],
        ),
    ])
    .await;
    let d = Dir::new();
    let (code, _, out) = create_once(&url, &d).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("HTTP 400"), "{out}");
    assert_eq!(script.requests(CREATE).len(), 2);
    assert_eq!(
        script.requests(LIST).len(),
        1,
        "the check before the first send; a refusal needs no lookup"
    );
}

const FEED_WITH_ALICE_FAILED: &str = "<?xml version='1.0' encoding='UTF-8'?>\
<feed xmlns='http://www.w3.org/2005/Atom' xmlns:apps='http://schemas.google.com/apps/2006'><id>f</id>\
<entry><id>e1</id>\
<apps:property name='requestId' value='776'/>\
<apps:property name='userEmailAddress' value='alice@example.com'/>\
<apps:property name='beginDate' value='2024-01-01 00:00'/>\
<apps:property name='packageContent' value='FULL_MESSAGE'/>\
<apps:property name='status' value='ERROR'/></entry></feed>";

#[tokio::test]
async fn a_usable_request_the_vendor_holds_is_adopted_instead_of_created() {
    // A new state directory (a lost CI cache): the vendor already holds alice's export.
    let (url, script) = serve(vec![
        (CREATE, vec![atom(201, CREATED_778)]),
        (LIST, vec![atom(200, FEED_WITH_ALICE)]),
    ])
    .await;
    let d = Dir::new();
    let (code, id, out) = create_once(&url, &d).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(id, "777", "{out}");
    assert!(
        out.contains("adopting it instead of creating another"),
        "{out}"
    );
    assert!(script.requests(CREATE).is_empty(), "nothing was created");
    let lists = script.requests(LIST);
    assert_eq!(lists.len(), 1);
    let query = lists[0].query.clone().unwrap_or_default();
    assert!(query.starts_with("fromDate="), "three weeks back: {query}");
}

#[tokio::test]
async fn a_failed_request_at_the_vendor_is_not_adopted() {
    let (url, script) = serve(vec![
        (CREATE, vec![atom(201, CREATED_778)]),
        (LIST, vec![atom(200, FEED_WITH_ALICE_FAILED)]),
    ])
    .await;
    let d = Dir::new();
    let (code, id, out) = create_once(&url, &d).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(id, "778", "an ERROR export is not continued: {out}");
    assert_eq!(script.requests(CREATE).len(), 1);
}

#[tokio::test]
async fn a_non_idempotent_call_without_a_lookup_stops_instead_of_repeating() {
    let (url, script) = serve(vec![(
        "/create",
        vec![Reply::json(502, serde_json::json!({}))],
    )])
    .await;
    let d = Dir::new();
    let wf = d.write(
        "wf.yaml",
        &format!("name: once\ndefaults: {{retry: {{initial_interval: 10ms, max_attempts: 5}}}}\nsteps:\n  - id: make\n    call: {{url: '{url}/create', method: POST, json: {{a: 1}}, idempotent: false}}\n"),
    );
    let o = auditflow_async(
        vec!["run".into(), wf.display().to_string()],
        vec![],
        d.path().to_path_buf(),
    )
    .await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("offers no way to look it up"), "{err}");
    assert_eq!(
        script.requests("/create").len(),
        1,
        "sent once, not five times"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_show_says_a_poll_ended_in_error_not_what_it_saw_before() {
    let h = sim::start(SimConfig {
        google_error_user: Some("broken".into()),
        ..sim_config(2)
    })
    .await
    .expect("simulator");
    let d = Dir::new();
    let o = export(&h, "broken", d.path(), &[], &[]).await;
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    let state = d.path().join("state").display().to_string();
    let list = auditflow(
        &h,
        &["runs", "list", "--json", "--state-dir", &state],
        &[],
        d.path(),
    )
    .await;
    let runs: serde_json::Value = serde_json::from_slice(&list.stdout).expect("runs list --json");
    let id = runs[0]["run_id"].as_str().expect("run id").to_string();
    assert_eq!(runs[0]["status"], "failed", "{runs}");
    let show = auditflow(
        &h,
        &["runs", "show", &id, "--state-dir", &state],
        &[],
        d.path(),
    )
    .await;
    let (s, _) = text(&show);
    let poll = s
        .lines()
        .find(|l| l.contains("polls"))
        .unwrap_or_else(|| panic!("no poll line: {s}"));
    assert!(
        poll.contains("failed after") && poll.contains("ERROR"),
        "{s}"
    );
    assert!(!poll.contains("last saw"), "{s}");
}

#[tokio::test]
async fn a_loop_of_creates_reads_the_vendors_list_once() {
    let users = ["u1", "u2", "u3", "u4", "u5"];
    let mut replies: Vec<(&str, Vec<Reply>)> = vec![(LIST, vec![atom(200, EMPTY_FEED)])];
    let paths: Vec<String> = users.iter().map(|u| format!("{LIST}/{u}")).collect();
    for p in &paths {
        replies.push((p.as_str(), vec![atom(201, CREATED_778)]));
    }
    let (url, script) = serve(replies).await;
    let d = Dir::new();
    let wf = d.write(
        "many.yaml",
        "name: many\nconnections:\n  g: {kind: google, base_url: '{{ env.G_URL }}', credentials: {bearer_token: '{{ env.G_TOKEN }}'}}\nsteps:\n  - id: each\n    for_each:\n      items: [u1, u2, u3, u4, u5]\n      concurrency: 5\n      steps:\n        - id: create\n          call:\n            connection: g\n            method: POST\n            path: /a/feeds/compliance/audit/mail/export/example.com/{{ item }}\n            atom: {packageContent: FULL_MESSAGE}\n",
    );
    let o = auditflow_async(
        vec!["run".into(), wf.display().to_string()],
        vec![
            ("G_URL".into(), url.clone()),
            ("G_TOKEN".into(), "tok-123456789".into()),
        ],
        d.path().to_path_buf(),
    )
    .await;
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        script.requests(LIST).len(),
        1,
        "one listing for the whole loop"
    );
    for p in &paths {
        assert_eq!(script.requests(p).len(), 1, "{p} created once");
    }
}
