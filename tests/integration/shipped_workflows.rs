//! Every shipped workflow against the simulator, with faults injected (a 429 and a 503 per
//! vendor, a download cut half way), through the real binary. The simulator must see no bad
//! signature, no wrong `lastKnownStatusVersion` and no request without valid auth.
use crate::common;

use std::path::{Path, PathBuf};

use crate::common::{auditflow_async, key, text, wf};
use auditflow_sim::{self as sim, FaultConfig, SimConfig, SimHandle};

fn faulty() -> SimConfig {
    SimConfig {
        faults: FaultConfig {
            force_each_once: true,
            cut_downloads: 1,
            seed: 3,
            ..FaultConfig::default()
        },
        mailstore_step_interval: std::time::Duration::from_millis(50),
        google_pending_polls: 2,
        ..SimConfig::default()
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(
    h: &SimHandle,
    workflow: &str,
    inputs: &[String],
    extra_env: &[(String, String)],
    cwd: &Path,
) -> Run {
    let mut args = vec!["run".to_string(), workflow.to_string()];
    for i in inputs {
        args.push("-i".into());
        args.push(i.clone());
    }
    let mut env: Vec<(String, String)> = h.env();
    let (sk, _, pass) = key();
    env.push(("AUDIT_PGP_SECRET_KEY".into(), sk.display().to_string()));
    env.push(("AUDIT_PGP_PASSPHRASE".into(), pass.clone()));
    env.extend(extra_env.iter().cloned());
    let out = auditflow_async(args, env, cwd.to_path_buf()).await;
    let (stdout, stderr) = text(&out);
    Run {
        code: out.status.code(),
        stdout,
        stderr,
    }
}

fn assert_clean(h: &SimHandle) {
    let s = h.stats.snapshot();
    assert_eq!(s.bad_signatures, 0, "{s:?}");
    assert_eq!(s.bad_dates, 0, "{s:?}");
    assert_eq!(s.reused_request_ids, 0, "{s:?}");
    assert_eq!(s.wrong_status_versions, 0, "{s:?}");
    assert_eq!(s.unauthenticated, 0, "{s:?}");
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn mimecast_workflows_api1_and_api2() {
    let cfg = faulty();
    let (queue, events) = (cfg.mimecast_queue_size, cfg.mimecast_audit_events);
    let h = sim::start(cfg).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let o = format!("out_dir={}", out.display());

    let r = run(
        &h,
        &wf("mimecast/find-processing-messages.yaml"),
        std::slice::from_ref(&o),
        &[],
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("HTTP 429") && r.stdout.contains("HTTP 503"),
        "faults must show: {}",
        r.stdout
    );
    let body = read_json(&out.join("processing-messages.json"));
    let n: usize = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["messages"].as_array().map_or(0, std::vec::Vec::len))
        .sum();
    assert_eq!(n, queue, "every message of every page");

    // Default window: the last 24 hours (a subset of the simulated events).
    let r = run(
        &h,
        &wf("mimecast/audit-events.yaml"),
        std::slice::from_ref(&o),
        &[],
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let recent = read_json(&out.join("audit-events.json"))["data"]
        .as_array()
        .unwrap()
        .len();
    assert!(recent > 0 && recent < events, "{recent}");
    // A window covering everything: every page, every event.
    let r = run(
        &h,
        &wf("mimecast/audit-events.yaml"),
        &[o.clone(), "start=2000-01-01T00:00:00+0000".into()],
        &[],
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let body = read_json(&out.join("audit-events.json"));
    assert_eq!(body["data"].as_array().unwrap().len(), events);

    let r = run(
        &h,
        &wf("mimecast/latest-channel-token.yaml"),
        &[o.clone(), "channel_id=B8Y43U-GYVS-WHAU6M".into()],
        &[],
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let body = read_json(&out.join("latest-channel-token.json"));
    assert!(body["data"][0]["channelId"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));

    // The vendor's own words on failure.
    let r = run(
        &h,
        &wf("mimecast/latest-channel-token.yaml"),
        &[o.clone(), "channel_id=INVALID".into()],
        &[],
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("mimecast") && r.stderr.contains("err_"),
        "{}",
        r.stderr
    );
    assert_clean(&h);

    // The same file with API 2.0 credentials (client credentials replace the 1.0 keys).
    let v2: Vec<(String, String)> = h.env_mimecast2();
    let mut env2 = v2.clone();
    for k in [
        "MIMECAST_ACCESS_KEY",
        "MIMECAST_SECRET_KEY",
        "MIMECAST_APP_ID",
        "MIMECAST_APP_KEY",
    ] {
        env2.push((k.into(), String::new()));
    }
    let r = run(
        &h,
        &wf("mimecast/find-processing-messages.yaml"),
        &[format!("out_dir={}", d.path().join("v2").display())],
        &env2,
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let body = read_json(&d.path().join("v2/processing-messages.json"));
    let n: usize = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["messages"].as_array().map_or(0, std::vec::Vec::len))
        .sum();
    assert_eq!(n, queue);
    assert_clean(&h);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mailstore_workflows() {
    let cfg = SimConfig {
        mailstore_failing_stores: vec![2],
        ..faulty()
    };
    let h = sim::start(cfg).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let o = format!("out_dir={}", out.display());

    let r = run(
        &h,
        &wf("mailstore/server-info.yaml"),
        std::slice::from_ref(&o),
        &[],
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(read_json(&out.join("server-info.json"))["result"]["version"].is_string());

    let r = run(
        &h,
        &wf("mailstore/verify-stores.yaml"),
        &[
            o.clone(),
            "store_ids=1,2,3".into(),
            "poll_interval=200ms".into(),
        ],
        &[],
        d.path(),
    )
    .await;
    // Store 2 fails; the others finish and keep their whole log; the failure names store 2
    // with MailStore's own message.
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("1 of 3 iterations") && r.stderr.contains("item 1 (2)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("damaged"),
        "vendor message expected: {}",
        r.stderr
    );
    for id in [1, 3] {
        let v = read_json(&out.join(format!("verify-store-{id}.json")));
        assert_eq!(v["statusCode"], "succeeded");
        assert!(v["logOutput"].as_str().unwrap().contains("verified"), "{v}");
    }
    assert_clean(&h);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn google_export_end_to_end_with_manifest() {
    let h = sim::start(SimConfig {
        google_error_user: Some("mallory".into()),
        ..faulty()
    })
    .await
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let o = format!("out_dir={}", out.display());
    let (_, public, _) = key();

    let r = run(
        &h,
        &wf("google/upload-public-key.yaml"),
        &[
            "domain=example.com".into(),
            format!("public_key_file={}", public.display()),
            o.clone(),
        ],
        &[],
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);

    let report = d.path().join("report.json");
    let mut args = vec![
        "domain=example.com".to_string(),
        "user=alice".into(),
        "poll_interval=100ms".into(),
        o.clone(),
    ];
    let r = run(&h, &wf("google/mailbox-export.yaml"), &args, &[], d.path()).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(h.google.exports_created("example.com"), 1);
    let s = h.stats.snapshot();
    assert_eq!(
        s.injected_cuts, 1,
        "one download was cut and resumed: {s:?}"
    );
    // The mbox files are byte-identical to what the simulator encrypted.
    let mut mboxes: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "mbox"))
        .collect();
    mboxes.sort();
    assert_eq!(mboxes.len(), 2, "{mboxes:?}");
    let manifest = read_json(&out.join("manifest.json"));
    let request_id = manifest["artifacts"]
        .as_object()
        .unwrap()
        .values()
        .find_map(|a| a["request_id"].as_str().map(str::to_string))
        .expect("request id in manifest");
    // File names come from the (random) URL tokens, so compare as sets: every plaintext the
    // simulator encrypted is there exactly once.
    let mut expected: Vec<Vec<u8>> = (0..mboxes.len() as u32)
        .map(|n| h.google.plaintext(&request_id, n).expect("plaintext"))
        .collect();
    for m in &mboxes {
        let got = std::fs::read(m).unwrap();
        let pos = expected.iter().position(|p| *p == got);
        assert!(
            pos.is_some(),
            "{} matches no plaintext the simulator encrypted",
            m.display()
        );
        expected.remove(pos.unwrap_or_default());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(m).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
    assert!(expected.is_empty());
    let v = common::auditflow(&["verify", out.to_str().unwrap()], &[], d.path());
    assert_eq!(v.status.code(), Some(0), "{:?}", text(&v));
    // The custodian's messages, counted in the decrypted mbox files (Email Audit gives no
    // count of its own), in the manifest and the evidence report.
    let messages: usize = mboxes
        .iter()
        .map(|m| {
            std::fs::read(m)
                .unwrap()
                .split(|b| *b == b'\n')
                .filter(|l| l.starts_with(b"From "))
                .count()
        })
        .sum();
    assert!(messages > 0);
    let custodians = manifest["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find_map(|r| r["custodians"].as_object()))
        .and_then(|by_step| by_step.values().next())
        .unwrap_or_else(|| panic!("custodians in the manifest: {manifest:#}"));
    assert_eq!(custodians["counts"][0]["custodian"], "alice@example.com");
    assert_eq!(custodians["counts"][0]["exported"], messages as u64);
    assert!(custodians["counts"][0]["vendor_count"].is_null());
    let md = common::auditflow(
        &["report", out.to_str().unwrap(), "--format", "md"],
        &[],
        d.path(),
    );
    let md = text(&md).0;
    assert!(
        md.contains(&format!(
            "| alice@example.com | {messages} | not given | no vendor count |"
        )),
        "{md}"
    );
    assert_clean(&h);

    // ERROR ends the poll at once, naming the status.
    args[1] = "user=mallory".into();
    args.push(format!("out_dir={}", d.path().join("err").display()));
    let r = run(&h, &wf("google/mailbox-export.yaml"), &args, &[], d.path()).await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("ended ERROR"), "{}", r.stderr);

    // List every export, then delete the completed one until DELETED.
    let r = run(
        &h,
        &wf("google/list-exports.yaml"),
        &["domain=example.com".into(), o.clone()],
        &[],
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        read_json(&out.join("exports.json"))["entries"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let r = run(
        &h,
        &wf("google/delete-export.yaml"),
        &[
            "domain=example.com".into(),
            "user=alice".into(),
            format!("request_id={request_id}"),
            "poll_interval=100ms".into(),
            o.clone(),
        ],
        &[],
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("MARKED_DELETE"), "{}", r.stdout);
    let _ = report;
    assert_clean(&h);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn google_service_account_credentials() {
    let h = sim::start(SimConfig::default()).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    let (_, public, _) = key();
    let sa = h.google.service_account_key_file();
    let env = vec![
        ("GOOGLE_ACCESS_TOKEN".to_string(), String::new()),
        (
            "GOOGLE_APPLICATION_CREDENTIALS".to_string(),
            sa.display().to_string(),
        ),
    ];
    let r = run(
        &h,
        &wf("google/upload-public-key.yaml"),
        &[
            "domain=example.org".into(),
            format!("public_key_file={}", public.display()),
            format!("out_dir={}", d.path().display()),
        ],
        &env,
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(h.google.tokens_issued(), 1);
    assert_clean(&h);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn google_export_with_a_wrong_passphrase_fails_cleanly() {
    let h = sim::start(SimConfig {
        google_pending_polls: 1,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let (_, public, _) = key();
    let r = run(
        &h,
        &wf("google/upload-public-key.yaml"),
        &[
            "domain=example.com".into(),
            format!("public_key_file={}", public.display()),
            format!("out_dir={}", out.display()),
        ],
        &[],
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let wrong = vec![(
        "AUDIT_PGP_PASSPHRASE".to_string(),
        "wrong-passphrase-123".to_string(),
    )];
    let r = run(
        &h,
        &wf("google/mailbox-export.yaml"),
        &[
            "domain=example.com".into(),
            "user=bob".into(),
            "poll_interval=100ms".into(),
            format!("out_dir={}", out.display()),
        ],
        &wrong,
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.to_lowercase().contains("passphrase"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stdout.contains("wrong-passphrase-123") && !r.stderr.contains("wrong-passphrase-123")
    );
    let mboxes = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "mbox"))
        .count();
    assert_eq!(mboxes, 0, "no plaintext may be left behind");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn google_export_users_runs_every_user_and_names_the_failed_ones() {
    let h = sim::start(SimConfig {
        google_error_user: Some("mallory".into()),
        ..faulty()
    })
    .await
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let (_, public, _) = key();
    let r = run(
        &h,
        &wf("google/upload-public-key.yaml"),
        &[
            "domain=example.com".into(),
            format!("public_key_file={}", public.display()),
            format!("out_dir={}", out.display()),
        ],
        &[],
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let before = h.stats.snapshot();

    // Three users, each into out_dir/<user>; one download is cut and resumed.
    let users = ["ann", "bob", "cy"];
    let r = run(
        &h,
        &wf("google/export-users.yaml"),
        &[
            "domain=example.com".into(),
            format!("users={}", users.join(",")),
            "poll_interval=100ms".into(),
            format!("out_dir={}", out.display()),
        ],
        &[],
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let mbox_count = crate::common::mbox_count;
    for u in users {
        assert_eq!(mbox_count(&out.join(u)), 2, "{u}");
    }
    let s = h.stats.snapshot();
    assert_eq!(s.google_exports_created - before.google_exports_created, 3);
    // The poll policy: PENDING twice, then COMPLETED; nothing more per user.
    assert_eq!(s.google_status_requests - before.google_status_requests, 9);
    assert_eq!(s.injected_cuts, 1, "{s:?}");
    let v = common::auditflow(&["verify", out.to_str().unwrap()], &[], d.path());
    assert_eq!(v.status.code(), Some(0), "{:?}", text(&v));
    assert_clean(&h);

    // fail_fast is off: a failing user does not stop the others, and is named.
    let r = run(
        &h,
        &wf("google/export-users.yaml"),
        &[
            "domain=example.com".into(),
            "users=mallory,dee".into(),
            "poll_interval=100ms".into(),
            format!("out_dir={}", out.display()),
        ],
        &[],
        d.path(),
    )
    .await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("1 of 2 iterations") && r.stderr.contains("mallory"),
        "{}",
        r.stderr
    );
    assert_eq!(mbox_count(&out.join("dee")), 2);
    assert_eq!(mbox_count(&out.join("mallory")), 0);
    assert_clean(&h);
    h.shutdown().await;
}
