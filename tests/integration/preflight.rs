//! Preflights through the binary: the upload-key check (bad keys never reach Google), `keygen`, and MailStore's get-metadata check.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use auditflow::openpgp::generate::rsa_key;
use auditflow_sim::{self as sim, SimConfig, SimHandle};
use pgp::composed::{
    ArmorOptions, Deserializable, EncryptionCaps, KeyType, MessageBuilder, SecretKeyParamsBuilder,
    SignedPublicKey, SignedSecretKey, SubkeyParamsBuilder,
};
use pgp::packet::{SignatureConfig, SignatureType, Subpacket, SubpacketData};
use pgp::ser::Serialize as _;
use pgp::types::{KeyDetails as _, Password, Timestamp};

use crate::common::{auditflow_async, text, wf, Dir};

const PASSPHRASE: &str = "preflight-test-passphrase";

fn plain_sim() -> SimConfig {
    SimConfig {
        mailstore_tls: false,
        ..SimConfig::default()
    }
}

/// Runs the binary with the simulator's environment plus `env`.
async fn run(
    h: &SimHandle,
    args: &[&str],
    env: &[(&str, &str)],
    cwd: &Path,
) -> (Option<i32>, String, String) {
    let mut e = h.env();
    e.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let args = args.iter().map(std::string::ToString::to_string).collect();
    let o = auditflow_async(args, e, cwd.to_path_buf()).await;
    let (out, err) = text(&o);
    (o.status.code(), out, err)
}

fn armored_public(key: &SignedSecretKey) -> String {
    SignedPublicKey::from(key.clone())
        .to_armored_string(ArmorOptions::default())
        .unwrap()
}

fn rsa() -> SignedSecretKey {
    rsa_key("Preflight <t@example.com>", 2048, None).unwrap()
}

fn ecc() -> SignedSecretKey {
    let mut sub = SubkeyParamsBuilder::default();
    sub.key_type(KeyType::X25519)
        .can_encrypt(EncryptionCaps::All);
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(KeyType::Ed25519)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id("Not RSA <x@example.com>".into())
        .subkeys(vec![sub.build().unwrap()]);
    params
        .build()
        .unwrap()
        .generate(rand::thread_rng())
        .unwrap()
}

/// An RSA key made ten days ago whose encryption subkey expired a day after it was made.
fn expired() -> SignedSecretKey {
    let past = Timestamp::from_secs(Timestamp::now().as_secs() - 10 * 86_400);
    let mut sub = SubkeyParamsBuilder::default();
    sub.key_type(KeyType::Rsa(2048))
        .created_at(past)
        .can_encrypt(EncryptionCaps::All);
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(KeyType::Rsa(2048))
        .created_at(past)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id("Expired <e@example.com>".into())
        .subkeys(vec![sub.build().unwrap()]);
    let mut key = params
        .build()
        .unwrap()
        .generate(rand::thread_rng())
        .unwrap();
    let primary = key.primary_key.clone();
    let sub = &mut key.secret_subkeys[0];
    let mut config = sub.signatures[0].config().unwrap().clone();
    config.hashed_subpackets.push(
        Subpacket::regular(SubpacketData::KeyExpirationTime(
            pgp::types::Duration::from_secs(86_400),
        ))
        .unwrap(),
    );
    let sig = config
        .sign_subkey_binding(
            &primary,
            primary.public_key(),
            &Password::empty(),
            sub.key.public_key(),
        )
        .unwrap();
    sub.signatures = vec![sig];
    key
}

/// An RSA key whose only encryption subkey was revoked.
fn revoked() -> SignedSecretKey {
    let mut key = rsa();
    let primary = key.primary_key.clone();
    let sub = &mut key.secret_subkeys[0];
    let mut config = SignatureConfig::from_key(
        rand::thread_rng(),
        &primary,
        SignatureType::SubkeyRevocation,
    )
    .unwrap();
    config.hashed_subpackets = vec![
        Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::now())).unwrap(),
        Subpacket::regular(SubpacketData::IssuerFingerprint(primary.fingerprint())).unwrap(),
    ];
    let sig = config
        .sign_subkey_binding(
            &primary,
            primary.public_key(),
            &Password::empty(),
            sub.key.public_key(),
        )
        .unwrap();
    sub.signatures.push(sig);
    key
}

/// Runs the shipped upload workflow; returns (exit code, stderr, whether the upload answer
/// was saved).
async fn upload(
    h: &SimHandle,
    d: &Dir,
    public: &Path,
    private: Option<&Path>,
) -> (Option<i32>, String, bool) {
    let out = d.path().join("out");
    let mut args = vec![
        "run".to_string(),
        wf("google/upload-public-key.yaml"),
        "-i".into(),
        "domain=example.com".into(),
        "-i".into(),
        format!("public_key_file={}", public.display()),
        "-i".into(),
        format!("out_dir={}", out.display()),
    ];
    if let Some(p) = private {
        args.extend(["-i".into(), format!("private_key_file={}", p.display())]);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = run(h, &a, &[("AUDIT_PGP_PASSPHRASE", PASSPHRASE)], d.path()).await;
    (code, err, out.join("public-key-upload.json").exists())
}

/// A bad key fails the upload step with exit 1 and `expected` in the message; nothing is sent.
async fn refused(public: &[u8], private: Option<&[u8]>, expected: &[&str]) {
    let h = sim::start(plain_sim()).await.unwrap();
    let d = Dir::new();
    let public_path = d.path().join("key.asc");
    std::fs::write(&public_path, public).unwrap();
    let private_path = private.map(|p| {
        let path = d.path().join("secret.asc");
        std::fs::write(&path, p).unwrap();
        path
    });
    let (code, err, uploaded) = upload(&h, &d, &public_path, private_path.as_deref()).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("step `upload` failed"), "{err}");
    for e in expected {
        assert!(err.contains(e), "want {e:?} in: {err}");
    }
    assert!(!uploaded);
    assert_eq!(
        h.stats.requests.load(Ordering::SeqCst),
        0,
        "nothing was sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ecc_key_is_refused_with_what_to_do() {
    refused(
        armored_public(&ecc()).as_bytes(),
        None,
        &["ECC (Curve25519)", "Google needs RSA", "auditflow keygen"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_key_given_as_public_is_refused() {
    let key = rsa();
    let secret = key.to_armored_string(ArmorOptions::default()).unwrap();
    refused(
        secret.as_bytes(),
        None,
        &["SECRET key", "never be uploaded"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_key_is_refused() {
    let bytes = SignedPublicKey::from(rsa()).to_bytes().unwrap();
    refused(
        &bytes,
        None,
        &["binary OpenPGP key", "gpg --armor --export"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_key_is_refused() {
    refused(
        armored_public(&expired()).as_bytes(),
        None,
        &["encryption subkey", "expired on", "gpg --quick-set-expire"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_encryption_subkey_is_refused() {
    refused(
        armored_public(&revoked()).as_bytes(),
        None,
        &["encryption subkey", "was revoked", "auditflow keygen"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mismatched_private_key_is_refused() {
    let other = rsa().to_armored_string(ArmorOptions::default()).unwrap();
    refused(
        armored_public(&rsa()).as_bytes(),
        Some(other.as_bytes()),
        &["secret.asc", "does not hold the secret of the public key"],
    )
    .await;
}

/// `keygen` with the passphrase from `var`; returns (exit code, stdout, stderr).
async fn keygen(
    h: &SimHandle,
    d: &Dir,
    name: &str,
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    run(
        h,
        &[
            "keygen",
            "--user-id",
            "Audit <admin@example.com>",
            "--out",
            name,
            "--passphrase-env",
            "KEY_PASS",
        ],
        env,
        d.path(),
    )
    .await
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn keygen_modes_refusals_and_a_key_that_uploads_and_decrypts() {
    let h = sim::start(plain_sim()).await.unwrap();
    let d = Dir::new();
    // No passphrase in the variable: refused, nothing written.
    let (code, _, err) = keygen(&h, &d, "domain", &[]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("KEY_PASS is empty or not set"), "{err}");
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);

    let started = std::time::Instant::now();
    let (code, out, err) = keygen(&h, &d, "domain", &[("KEY_PASS", PASSPHRASE)]).await;
    assert_eq!(code, Some(0), "{err}");
    eprintln!("keygen RSA-3072 took {:?}", started.elapsed());
    let public: PathBuf = d.path().join("domain.pub.asc");
    let secret: PathBuf = d.path().join("domain.sec.asc");
    assert_eq!(mode(&public), 0o644);
    assert_eq!(mode(&secret), 0o600);
    assert!(out.contains("fingerprint: "), "{out}");
    assert!(
        out.contains("upload-public-key.yaml"),
        "the next command: {out}"
    );
    let secret_text = std::fs::read(&secret).unwrap();

    // Never overwritten.
    let (code, _, err) = keygen(&h, &d, "domain", &[("KEY_PASS", "other")]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("domain.pub.asc already exists"), "{err}");
    assert_eq!(std::fs::read(&secret).unwrap(), secret_text);

    // Wrong passphrase for the private key: refused before the upload.
    let wrong = Dir::new();
    let mut e = h.env();
    e.push(("AUDIT_PGP_PASSPHRASE".into(), "wrong".into()));
    let o = auditflow_async(
        vec![
            "run".into(),
            wf("google/upload-public-key.yaml"),
            "-i".into(),
            "domain=example.com".into(),
            "-i".into(),
            format!("public_key_file={}", public.display()),
            "-i".into(),
            format!("private_key_file={}", secret.display()),
        ],
        e,
        wrong.path().to_path_buf(),
    )
    .await;
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(
        !err.contains("wrong\n") && !err.contains(PASSPHRASE),
        "no secret in: {err}"
    );
    assert_eq!(h.stats.requests.load(Ordering::SeqCst), 0);

    // The key passes the preflight (with its private key) and is uploaded.
    let (code, err, uploaded) = upload(&h, &d, &public, Some(&secret)).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(uploaded);

    // A message encrypted to it decrypts with `auditflow decrypt`.
    let (key, _) =
        SignedPublicKey::from_armor_single(std::fs::File::open(&public).unwrap()).unwrap();
    let plain = b"From a@example.com\nSubject: hi\n\nbody\n".to_vec();
    let mut rng = rand::thread_rng();
    let mut builder = MessageBuilder::from_bytes("", plain.clone())
        .seipd_v1(&mut rng, pgp::crypto::sym::SymmetricKeyAlgorithm::AES256);
    builder
        .encrypt_to_key(&mut rng, &key.public_subkeys[0].key)
        .unwrap();
    std::fs::write(
        d.path().join("export-0.pgp"),
        builder.to_vec(&mut rng).unwrap(),
    )
    .unwrap();
    let (code, _, err) = run(
        &h,
        &[
            "decrypt",
            "--key",
            "domain.sec.asc",
            "--passphrase-env",
            "KEY_PASS",
            "-o",
            "plain",
            "export-0.pgp",
        ],
        &[("KEY_PASS", PASSPHRASE)],
        d.path(),
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        std::fs::read(d.path().join("plain/export-0.mbox")).unwrap(),
        plain
    );
}

/// A MailStore workflow invoking `function` with `form`.
fn mailstore_workflow(d: &Dir, function: &str, form: &str) -> PathBuf {
    d.write(
        "ms.yaml",
        &format!(
            "name: ms\nconnections:\n  ms:\n    kind: mailstore\n    base_url: \"{{{{ env.MAILSTORE_BASE_URL }}}}\"\n    credentials:\n      username: \"{{{{ env.MAILSTORE_USERNAME }}}}\"\n      password: \"{{{{ env.MAILSTORE_PASSWORD }}}}\"\nsteps:\n  - id: invoke\n    call:\n      connection: ms\n      path: /api/invoke/{function}\n      form: {form}\n"
        ),
    )
}

async fn mailstore_refused(function: &str, form: &str, expected: &[&str]) {
    let h = sim::start(plain_sim()).await.unwrap();
    let d = Dir::new();
    let file = mailstore_workflow(&d, function, form);
    let (code, _, err) = run(&h, &["run", &file.display().to_string()], &[], d.path()).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("step `invoke` failed"), "{err}");
    for e in expected {
        assert!(err.contains(e), "want {e:?} in: {err}");
    }
    assert_eq!(
        h.stats.requests.load(Ordering::SeqCst),
        1,
        "only get-metadata was sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mailstore_misspelt_function_is_caught_by_get_metadata() {
    mailstore_refused(
        "VerifyStor",
        "{id: \"1\"}",
        &["no function `VerifyStor`", "did you mean `VerifyStore`?"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mailstore_misspelt_argument_is_caught_by_get_metadata() {
    mailstore_refused(
        "VerifyStore",
        "{idd: \"1\"}",
        &["`VerifyStore` has no argument `idd`", "did you mean `id`?"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mailstore_known_function_runs_after_one_get_metadata() {
    let h = sim::start(plain_sim()).await.unwrap();
    let d = Dir::new();
    let file = d.write(
        "ms.yaml",
        "name: ms\nconnections:\n  ms:\n    kind: mailstore\n    base_url: \"{{ env.MAILSTORE_BASE_URL }}\"\n    credentials:\n      username: \"{{ env.MAILSTORE_USERNAME }}\"\n      password: \"{{ env.MAILSTORE_PASSWORD }}\"\nsteps:\n  - id: a\n    call: {connection: ms, path: /api/invoke/GetServerInfo}\n  - id: b\n    call: {connection: ms, path: /api/invoke/GetStores, form: {includeSize: \"true\"}}\n",
    );
    let (code, _, err) = run(&h, &["run", &file.display().to_string()], &[], d.path()).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        h.stats.requests.load(Ordering::SeqCst),
        3,
        "get-metadata once, then the two invokes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mailstore_without_get_metadata_warns_once_and_goes_on() {
    // An older server: no get-metadata (404), two invokes that succeed.
    let ok = serde_json::json!({"error": null, "token": null, "statusVersion": 2,
        "statusCode": "succeeded", "percentProgress": null, "statusText": null,
        "result": {"version": "old"}, "logOutput": null});
    let (base, script) = crate::common::serve(vec![
        (
            "/api/invoke/GetServerInfo",
            vec![crate::common::Reply::json(200, ok.clone())],
        ),
        (
            "/api/invoke/GetStores",
            vec![crate::common::Reply::json(200, ok)],
        ),
    ])
    .await;
    let d = Dir::new();
    let file = d.write(
        "ms.yaml",
        "name: ms\nconnections:\n  ms:\n    kind: mailstore\n    base_url: \"{{ env.MAILSTORE_BASE_URL }}\"\n    credentials:\n      username: \"{{ env.MAILSTORE_USERNAME }}\"\n      password: \"{{ env.MAILSTORE_PASSWORD }}\"\nsteps:\n  - id: a\n    call: {connection: ms, path: /api/invoke/GetServerInfo}\n  - id: b\n    call: {connection: ms, path: /api/invoke/GetStores, form: {anything: \"1\"}}\n",
    );
    let env = vec![
        ("MAILSTORE_BASE_URL".to_string(), base),
        ("MAILSTORE_USERNAME".into(), "admin".into()),
        ("MAILSTORE_PASSWORD".into(), "pw".into()),
    ];
    let o = auditflow_async(
        vec!["run".into(), file.display().to_string()],
        env,
        d.path().to_path_buf(),
    )
    .await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert_eq!(
        err.matches("get-metadata is not available").count(),
        1,
        "{err}"
    );
    assert_eq!(script.requests("/api/get-metadata").len(), 1);
    assert_eq!(
        script.requests("/api/invoke/GetStores").len(),
        1,
        "sent unchecked"
    );
}
