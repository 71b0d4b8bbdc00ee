//! The shipped `vault-mail-export.yaml` against the built-in Vault simulator, whose exports
//! hold the documented file set ("Vault export contents"): archives, metadata, results count,
//! checksums, and error reports when an account is unknown. A complete export passes; one
//! account short, or an error report, fails naming the account and the figures, unless the
//! workflow accepts partial exports, which the outputs, the report and the manifest then say.
use std::path::Path;

use auditflow::sim::{self, SimConfig, SimHandle};
use serde_json::Value;

use crate::common::*;

fn quick(directory: Option<&[&str]>, short: Option<&str>) -> SimConfig {
    SimConfig {
        vault_pending_polls: 1,
        vault_mbox_size: 4096,
        vault_directory: directory.map(|d| d.iter().map(|a| (*a).to_string()).collect()),
        vault_short_account: short.map(str::to_string),
        ..SimConfig::default()
    }
}

/// Runs the shipped workflow for `accounts` into `dir/out`; returns the exit code, stdout
/// and stderr.
async fn export(
    h: &SimHandle,
    dir: &Path,
    accounts: &str,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let mut args: Vec<String> = vec![
        "run".into(),
        wf("google/vault-mail-export.yaml"),
        "-i".into(),
        format!("accounts={accounts}"),
        "-i".into(),
        "export_name=q4-audit".into(),
        "-i".into(),
        "poll_interval=50ms".into(),
        "-i".into(),
        "out_dir=out".into(),
        "--state-dir".into(),
        "state".into(),
        "--report-json".into(),
        "report.json".into(),
    ];
    for x in extra {
        args.extend(["-i".to_string(), (*x).to_string()]);
    }
    let out = auditflow_async(args, h.env(), dir.to_path_buf()).await;
    let (o, e) = text(&out);
    (out.status.code(), o, e)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("file")).expect("json")
}

/// Messages (lines starting `From `) in an mbox file.
fn messages_in(path: &Path) -> u64 {
    let text = std::fs::read(path).expect("mbox");
    text.split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"From "))
        .count() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn the_full_documented_file_set_is_verified_and_kept() {
    let h = sim::start(quick(None, None)).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    let (code, o, e) = export(&h, d.path(), "alice@example.com,bob@example.com", &[]).await;
    assert_eq!(code, Some(0), "{o}\n{e}");
    let out = d.path().join("out");
    let archives = out.join("archives");
    for kept in [
        "q4-audit-1.zip",
        "q4-audit-2.zip",
        "q4-audit-metadata.xml",
        "q4-audit-results-count.csv",
        "q4-audit-checksums.csv",
    ] {
        assert!(archives.join(kept).is_file(), "{kept} kept: {o}");
    }
    let counts = std::fs::read_to_string(archives.join("q4-audit-results-count.csv")).unwrap();
    for a in ["alice@example.com", "bob@example.com"] {
        let n = messages_in(&out.join(format!("{a}.mbox")));
        assert!(n > 0);
        assert!(
            counts.contains(&format!("{a},{n}\r\n")),
            "{a}: {n} in {counts}"
        );
    }
    assert!(
        !out.join("q4-audit-metadata.xml").exists(),
        "only mbox files are extracted"
    );
    let m = read_json(&out.join("manifest.json"));
    let downloads = m["artifacts"]
        .as_object()
        .unwrap()
        .values()
        .filter(|a| a["kind"] == "download")
        .count();
    assert_eq!(
        downloads, 5,
        "every object of the export is in the manifest: {m:#}"
    );
    assert!(m["runs"][0].get("partial").is_none(), "{m:#}");
    let r = read_json(&d.path().join("report.json"));
    assert_eq!(r["outputs"]["partial"], false, "{r:#}");
    assert_eq!(
        r["outputs"]["evidence_files"].as_array().map(Vec::len),
        Some(3),
        "{r:#}"
    );
    let v = auditflow(&["verify", "out"], &[], d.path());
    assert_eq!(v.status.code(), Some(0), "{:?}", text(&v));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_short_of_its_results_count_fails_naming_it_and_the_counts() {
    let h = sim::start(quick(None, Some("bob@example.com")))
        .await
        .unwrap();
    let d = tempfile::tempdir().unwrap();
    let (code, o, e) = export(&h, d.path(), "alice@example.com,bob@example.com", &[]).await;
    assert_eq!(code, Some(1), "{o}\n{e}");
    let n = messages_in(&d.path().join("out/bob@example.com.mbox"));
    let want = format!(
        "account bob@example.com: the results-count file says {} messages, {n} were extracted (1 missing)",
        n + 1
    );
    assert!(e.contains(&want), "{want}\n{e}");
    assert!(!e.contains("account alice@example.com"), "{e}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_account_fails_with_the_error_reports_or_is_kept_as_partial() {
    let directory: &[&str] = &["alice@example.com", "bob@example.com"];
    let h = sim::start(quick(Some(directory), None)).await.unwrap();
    // A custodian typo: Vault exports no mail for it and says so in its error reports.
    let accounts = "alice@example.com,alcie@example.com";
    let d = tempfile::tempdir().unwrap();
    let (code, o, e) = export(&h, d.path(), accounts, &[]).await;
    assert_eq!(code, Some(1), "{o}\n{e}");
    assert!(
        e.contains("the Vault export is incomplete")
            && e.contains("error.csv (the export met errors")
            && e.contains("q4-audit-account-exceptions.csv (the export met errors")
            && e.contains("alcie@example.com,ACCOUNT_NOT_FOUND"),
        "{e}"
    );
    assert!(!d.path().join("out/alcie@example.com.mbox").exists());

    let d = tempfile::tempdir().unwrap();
    let (code, o, e) = export(&h, d.path(), accounts, &["accept_partial=true"]).await;
    assert_eq!(code, Some(0), "{o}\n{e}");
    assert!(o.contains("PARTIAL result of `download`"), "{o}");
    let r = read_json(&d.path().join("report.json"));
    assert_eq!(r["outputs"]["partial"], true, "{r:#}");
    let problems = r["partial"]["download"]
        .as_array()
        .expect("report: partial");
    assert_eq!(problems.len(), 2, "{r:#}");
    let m = read_json(&d.path().join("out/manifest.json"));
    let listed = m["runs"][0]["partial"]["download"]
        .as_array()
        .expect("manifest: partial");
    assert!(
        listed
            .iter()
            .any(|p| p.as_str().is_some_and(|p| p.contains("alcie@example.com"))),
        "{m:#}"
    );
    assert!(d.path().join("out/alice@example.com.mbox").is_file());
    h.shutdown().await;
}
