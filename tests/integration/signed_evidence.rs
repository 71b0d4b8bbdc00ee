//! Signed evidence through the binary: `keygen --sign`, `run --sign-key` writes
//! `manifest.json.asc`, GnuPG alone accepts it, and `verify --signer` fails on a changed
//! file, a re-written manifest, a foreign key; files the manifest does not list are reported
//! (and fail with `--strict`).
use std::path::Path;

use crate::common::{auditflow, serve, text, Dir, Reply};
use crate::decrypt_gpg_live::{gpg_or_skip, GnupgHome};

const PASS: &str = "evidence signing passphrase";

fn keygen(dir: &Path, name: &str) -> (String, String) {
    let o = auditflow(
        &[
            "keygen",
            "--sign",
            "--user-id",
            "Evidence <e@example.com>",
            "--out",
            name,
        ],
        &[("AUDIT_SIGN_PASSPHRASE", PASS)],
        dir,
    );
    assert!(o.status.success(), "{:?}", text(&o));
    (
        dir.join(format!("{name}.pub.asc")).display().to_string(),
        dir.join(format!("{name}.sec.asc")).display().to_string(),
    )
}

fn verify(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut a = vec!["verify", "out"];
    a.extend_from_slice(args);
    let o = auditflow(&a, &[], dir);
    let (out, err) = text(&o);
    (o.status.code(), format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_manifest_verifies_with_gnupg_and_any_change_is_caught() {
    let (url, script) = serve(vec![(
        "/mail.mbox",
        vec![Reply::json(200, serde_json::json!({"from": "alice"}))],
    )])
    .await;
    let d = Dir::new();
    let (public, secret) = keygen(d.path(), "signer");
    let (foreign, _) = keygen(d.path(), "foreign");
    let wf = d.write(
        "wf.yaml",
        &format!(
            "name: evidence\ninputs:\n  out_dir: {{default: out}}\nsteps:\n  - id: get\n    download: {{urls: ['{url}/mail.mbox'], to: '{{{{ inputs.out_dir }}}}'}}\n"
        ),
    );
    let wf = wf.display().to_string();

    // A wrong passphrase is found before anything is sent.
    let o = auditflow(
        &["run", &wf, "--sign-key", &secret],
        &[("AUDIT_SIGN_PASSPHRASE", "not it")],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(
        text(&o).1.contains("does not unlock the signing key"),
        "{:?}",
        text(&o)
    );
    assert!(script.all().is_empty(), "nothing was sent");
    assert!(
        !text(&o).1.contains("not it"),
        "the passphrase is never shown"
    );

    let o = auditflow(
        &["run", &wf, "--sign-key", &secret],
        &[("AUDIT_SIGN_PASSPHRASE", PASS)],
        d.path(),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("signed: out/manifest.json.asc"), "{out}");
    let manifest = d.path().join("out/manifest.json");
    let sig = d.path().join("out/manifest.json.asc");
    assert!(std::fs::read_to_string(&sig)
        .expect("signature")
        .starts_with("-----BEGIN PGP SIGNATURE-----"));

    // GnuPG alone accepts it.
    if gpg_or_skip() {
        let home = GnupgHome::new();
        let imported = home
            .gpg()
            .args(["--import", &public])
            .output()
            .expect("gpg");
        assert!(imported.status.success(), "{imported:?}");
        let checked = home
            .gpg()
            .args([
                "--verify",
                &sig.display().to_string(),
                &manifest.display().to_string(),
            ])
            .output()
            .expect("gpg");
        assert!(
            checked.status.success(),
            "gpg --verify: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }

    let (code, log) = verify(d.path(), &["--signer", &public]);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("signature verified"), "{log}");
    let (code, log) = verify(d.path(), &["--signer", &foreign]);
    assert_eq!(code, Some(1), "a foreign key: {log}");
    assert!(log.contains("BAD SIGNATURE"), "{log}");

    // A file planted beside the evidence: reported; --strict fails on it.
    std::fs::write(d.path().join("out/dave@example.com.mbox"), "From planted").expect("plant");
    let (code, log) = verify(d.path(), &["--signer", &public]);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("UNLISTED dave@example.com.mbox"), "{log}");
    let (code, log) = verify(d.path(), &["--signer", &public, "--strict"]);
    assert_eq!(code, Some(1), "{log}");
    let o = auditflow(&["verify", "out", "--json", "--strict"], &[], d.path());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("verify --json");
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["unlisted"][0], "dave@example.com.mbox", "{v}");
    assert_eq!(v["signature"]["status"], "not_checked", "{v}");
    std::fs::remove_file(d.path().join("out/dave@example.com.mbox")).expect("rm");

    // A changed byte in the evidence fails the hash check.
    let mbox = d.path().join("out/mail.mbox");
    let original = std::fs::read(&mbox).expect("mbox");
    let mut changed = original.clone();
    changed[0] ^= 1;
    std::fs::write(&mbox, &changed).expect("tamper");
    let (code, log) = verify(d.path(), &["--signer", &public]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("CHANGED  mail.mbox"), "{log}");

    // The manifest re-written to match: the hashes agree, the signature does not.
    let text_manifest = std::fs::read_to_string(&manifest).expect("manifest");
    let sha = auditflow::durable::sha256_hex;
    let forged = text_manifest.replace(&sha(&original), &sha(&changed));
    assert_ne!(forged, text_manifest);
    std::fs::write(&manifest, forged).expect("forge");
    let (code, log) = verify(d.path(), &["--signer", &public]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("BAD SIGNATURE"), "{log}");
    assert!(!log.contains("CHANGED"), "the forged hashes match: {log}");
    // The report for people says the same on top.
    let o = auditflow(
        &["report", "out", "--format", "md", "--signer", &public],
        &[],
        d.path(),
    );
    let (md, _) = text(&o);
    assert!(
        md.contains("Not complete: the manifest's signature does not verify"),
        "{md}"
    );

    // A missing signature fails when a signer is expected.
    std::fs::remove_file(&sig).expect("rm sig");
    let (code, log) = verify(d.path(), &["--signer", &public]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("is missing"), "{log}");
}
