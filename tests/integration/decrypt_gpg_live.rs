//! Interoperability with the installed GnuPG: fresh keys and messages made by `gpg` at test time (skipped without gpg, failing on CI).
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use auditflow::steps::decrypt::{decrypt_file, DecryptError, DecryptionKey};

const PASSPHRASE: &str = "live test passphrase";

/// Whether `gpg` can run. Without it the test is skipped with a note, except on CI (`CI` set),
/// where a missing gpg is a failure: CI must install gnupg.
pub(crate) fn gpg_or_skip() -> bool {
    let ok = Command::new("gpg")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("gpg is not installed, but CI is set: CI must install gnupg");
        }
        eprintln!("note: gpg not found; skipping the live GnuPG interoperability test");
    }
    ok
}

/// A throwaway GnuPG home; stops its agent when dropped.
pub(crate) struct GnupgHome {
    dir: tempfile::TempDir,
}

impl GnupgHome {
    pub(crate) fn new() -> Self {
        // Short path: gpg-agent's socket path must fit in sun_path.
        let dir = tempfile::Builder::new()
            .prefix("afgpg")
            .tempdir_in("/tmp")
            .expect("temp GNUPGHOME");
        GnupgHome { dir }
    }

    pub(crate) fn gpg(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", self.dir.path())
            .args([
                "--batch",
                "--no-tty",
                "--quiet",
                "--pinentry-mode",
                "loopback",
            ])
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs gpg with `args`, feeding `stdin`, and returns stdout.
    fn run(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let mut child = self
            .gpg()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn gpg");
        let mut input = child.stdin.take().expect("stdin");
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().expect("gpg output");
        writer.join().expect("stdin writer");
        assert!(
            out.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for GnupgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.dir.path())
            .args(["--kill", "all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Deterministic mbox-like text interleaved with incompressible bytes.
fn plaintext(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut n = 0u64;
    while out.len() < len {
        n += 1;
        write!(
            out,
            "From sender{n}@example.invalid Mon Jan  1 00:00:00 2024\nSubject: message {n}\n\n"
        )
        .unwrap();
        for _ in 0..64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.extend_from_slice(&state.to_le_bytes());
        }
        out.extend_from_slice(b"\n\n");
    }
    out.truncate(len);
    out
}

fn decrypt_to(key: &DecryptionKey, input: &Path, dir: &Path) -> Result<Vec<u8>, DecryptError> {
    let output = dir.join("out.mbox");
    let result = decrypt_file(key, input, &output)?;
    let data = fs::read(&output).expect("read output");
    assert_eq!(result.sha256, auditflow::durable::sha256_hex(&data));
    assert_eq!(result.bytes, data.len() as u64);
    fs::remove_file(&output).expect("remove output");
    Ok(data)
}

#[test]
fn fresh_gnupg_messages_decrypt() {
    if !gpg_or_skip() {
        return;
    }
    let home = GnupgHome::new();
    let params = format!(
        "Key-Type: RSA\nKey-Length: 3072\nKey-Usage: sign,cert\nSubkey-Type: RSA\n\
         Subkey-Length: 3072\nSubkey-Usage: encrypt\nName-Real: auditflow live test\n\
         Name-Email: live@test.invalid\nExpire-Date: 0\nPassphrase: {PASSPHRASE}\n%commit\n"
    );
    home.run(&["--gen-key"], params.as_bytes());
    let work = tempfile::tempdir().expect("work dir");
    let key_path = work.path().join("secret.asc");
    let secret = home.run(
        &[
            "--passphrase",
            PASSPHRASE,
            "--armor",
            "--export-secret-keys",
            "live@test.invalid",
        ],
        b"",
    );
    fs::write(&key_path, secret).expect("write key");
    let key = DecryptionKey::load(&key_path, Some(PASSPHRASE)).expect("load fresh key");
    assert!(matches!(
        DecryptionKey::load(&key_path, Some("wrong")),
        Err(DecryptError::WrongPassphrase { .. })
    ));

    let out_dir = tempfile::tempdir().expect("out dir");
    let small = plaintext(20_000);
    let large = plaintext(6 * 1024 * 1024 + 12_345);
    let encrypt = ["--trust-model", "always", "-r", "live@test.invalid"];
    let cases: Vec<(&str, Vec<&str>, &Vec<u8>)> = vec![
        ("default.gpg", vec!["--encrypt"], &small),
        (
            "zip.gpg",
            vec!["--compress-algo", "zip", "--encrypt"],
            &small,
        ),
        (
            "bzip2.gpg",
            vec!["--compress-algo", "bzip2", "--encrypt"],
            &small,
        ),
        (
            "none.gpg",
            vec!["--compress-algo", "uncompressed", "--encrypt"],
            &small,
        ),
        ("armored.asc", vec!["--armor", "--encrypt"], &small),
        // Multi-MB from stdin: partial body lengths throughout.
        ("large-stdin.gpg", vec!["--encrypt"], &large),
        (
            "large-stdin-uncompressed.asc",
            vec!["--armor", "--compress-algo", "uncompressed", "--encrypt"],
            &large,
        ),
    ];
    for (name, args, data) in cases {
        let mut all: Vec<&str> = encrypt.to_vec();
        all.extend(args);
        let encrypted = home.run(&all, data);
        let path = work.path().join(name);
        fs::write(&path, &encrypted).expect("write message");
        let decrypted =
            decrypt_to(&key, &path, out_dir.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(decrypted == *data, "{name}: plaintext differs");
    }

    // Tampering with a fresh multi-MB message is caught, and nothing is left behind.
    let mut encrypted = home.run(
        &[
            &encrypt[..],
            &["--compress-algo", "uncompressed", "--encrypt"],
        ]
        .concat(),
        &large,
    );
    let middle = encrypted.len() / 2;
    encrypted[middle] ^= 0x04;
    let path = work.path().join("tampered.gpg");
    fs::write(&path, &encrypted).expect("write tampered");
    match decrypt_to(&key, &path, out_dir.path()) {
        Err(DecryptError::Integrity { .. }) => {}
        other => panic!(
            "tampered: expected Integrity, got {:?}",
            other.map(|d| d.len())
        ),
    }
    assert_eq!(fs::read_dir(out_dir.path()).expect("out dir").count(), 0);
}
