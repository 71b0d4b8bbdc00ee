//! `auditflow decrypt` and `auditflow verify` on the checked-in GnuPG fixtures.
use crate::common;

use std::path::Path;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpg")
}

#[test]
fn decrypt_command_writes_mbox_and_a_verifiable_manifest() {
    let fx = fixtures();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let key = fx.join("protected.sec.asc");
    let inputs = [fx.join("zlib.gpg"), fx.join("zlib-armored.asc")];
    let mut args = vec![
        "decrypt".to_string(),
        "--key".into(),
        key.display().to_string(),
        "--passphrase-env".into(),
        "FIXTURE_PASSPHRASE".into(),
        "-o".into(),
        out.display().to_string(),
    ];
    args.extend(inputs.iter().map(|p| p.display().to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = common::auditflow(
        &a,
        &[("FIXTURE_PASSPHRASE", "auditflow-fixture-passphrase")],
        d.path(),
    );
    let (stdout, stderr) = common::text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    let expected = std::fs::read(fx.join("mailbox.mbox")).unwrap();
    for name in ["zlib.mbox", "zlib-armored.mbox"] {
        assert_eq!(std::fs::read(out.join(name)).unwrap(), expected, "{name}");
    }
    assert!(
        !stdout.contains("auditflow-fixture-passphrase")
            && !stderr.contains("auditflow-fixture-passphrase")
    );
    let v = common::auditflow(&["verify", out.to_str().unwrap()], &[], d.path());
    assert_eq!(v.status.code(), Some(0), "{:?}", common::text(&v));
    // Tampering with an output is reported, exit 1.
    std::fs::write(out.join("zlib.mbox"), b"From changed\n").unwrap();
    let v = common::auditflow(&["verify", out.to_str().unwrap()], &[], d.path());
    let (vout, _) = common::text(&v);
    assert_eq!(v.status.code(), Some(1));
    assert!(
        vout.contains("CHANGED") && vout.contains("zlib.mbox"),
        "{vout}"
    );
}

#[test]
fn decrypt_command_reports_a_wrong_passphrase_and_leaves_nothing() {
    let fx = fixtures();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let o = common::auditflow(
        &[
            "decrypt",
            "--key",
            fx.join("protected.sec.asc").to_str().unwrap(),
            "--passphrase-env",
            "PW",
            "-o",
            out.to_str().unwrap(),
            fx.join("zlib.gpg").to_str().unwrap(),
        ],
        &[("PW", "not-the-passphrase")],
        d.path(),
    );
    let (_, stderr) = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.to_lowercase().contains("passphrase"), "{stderr}");
    assert!(!stderr.contains("not-the-passphrase"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|r| r.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
