//! Decryption of checked-in GnuPG fixtures (see tests/fixtures/gpg/README.md): interoperability and every failure mode.
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use auditflow::steps::decrypt::{decrypt_file, output_name, DecryptError, DecryptionKey};

const PASSPHRASE: &str = "auditflow-fixture-passphrase";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gpg")
        .join(name)
}

/// The passphrase-protected key, loaded once (unlocking runs GnuPG's S2K).
fn protected_key() -> &'static DecryptionKey {
    static KEY: OnceLock<DecryptionKey> = OnceLock::new();
    KEY.get_or_init(|| {
        DecryptionKey::load(&fixture("protected.sec.asc"), Some(PASSPHRASE)).expect("load key")
    })
}

/// Names of all entries in `dir`, so a test can assert that nothing (no temp file) is left.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Decrypts `input` into a fresh directory and checks the output against `plaintext`.
fn assert_decrypts(key: &DecryptionKey, input: &Path, plaintext: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join(output_name(input));
    let result =
        decrypt_file(key, input, &output).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    let expected = fs::read(fixture(plaintext)).expect("plaintext");
    let actual = fs::read(&output).expect("output");
    assert!(actual == expected, "{}: plaintext differs", input.display());
    let encrypted = fs::read(input).expect("input");
    assert_eq!(result.input, input);
    assert_eq!(result.path, output);
    assert_eq!(result.bytes, expected.len() as u64);
    assert_eq!(result.sha256, auditflow::durable::sha256_hex(&expected));
    assert_eq!(result.input_bytes, encrypted.len() as u64);
    assert_eq!(
        result.input_sha256,
        auditflow::durable::sha256_hex(&encrypted)
    );
    let mode = fs::metadata(&output)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "{}: output mode {mode:o}", input.display());
    assert_eq!(
        entries(dir.path()),
        vec![output_name(input)],
        "leftover files"
    );
}

/// Decrypts `input` expecting failure; checks that the output directory stays empty.
fn decrypt_err(key: &DecryptionKey, input: &Path) -> DecryptError {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("out.mbox");
    let Err(err) = decrypt_file(key, input, &output) else {
        panic!("{} decrypted, expected an error", input.display());
    };
    assert!(
        entries(dir.path()).is_empty(),
        "{}: files left behind after {err}: {:?}",
        input.display(),
        entries(dir.path())
    );
    err
}

/// Writes `bytes` to a file in a temp dir and returns both.
fn temp_input(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    fs::write(&path, bytes).expect("write input");
    (dir, path)
}

#[test]
fn gnupg_fixtures_decrypt_byte_identically() {
    let key = protected_key();
    for (input, plaintext) in [
        ("zlib.gpg", "mailbox.mbox"),
        ("zip.gpg", "mailbox.mbox"),
        ("bzip2.gpg", "mailbox.mbox"),
        ("uncompressed.gpg", "mailbox.mbox"),
        ("zlib-armored.asc", "mailbox.mbox"),
        ("stdin-partial.gpg", "mailbox.mbox"),
        ("stdin-partial-uncompressed.gpg", "random.bin"),
        ("random.gpg", "random.bin"),
        ("signed.gpg", "mailbox.mbox"),
    ] {
        assert_decrypts(key, &fixture(input), plaintext);
    }
}

#[test]
fn key_formats_binary_subkeys_only_and_unprotected() {
    let binary = DecryptionKey::load(&fixture("protected.sec.gpg"), Some(PASSPHRASE)).unwrap();
    assert_eq!(binary.key_ids(), protected_key().key_ids());
    assert_decrypts(&binary, &fixture("zlib.gpg"), "mailbox.mbox");

    // `gpg --export-secret-subkeys` leaves the primary key as a stub without secret material.
    let subkeys =
        DecryptionKey::load(&fixture("protected-subkeys.sec.asc"), Some(PASSPHRASE)).unwrap();
    assert_eq!(subkeys.key_ids(), protected_key().key_ids());
    assert_decrypts(&subkeys, &fixture("bzip2.gpg"), "mailbox.mbox");

    // A key without a passphrase loads with or without one.
    let plain = DecryptionKey::load(&fixture("plain.sec.asc"), None).unwrap();
    assert_decrypts(&plain, &fixture("to-plain-key.gpg"), "mailbox.mbox");
    DecryptionKey::load(&fixture("plain.sec.asc"), Some("unused")).unwrap();

    // A file with several secret keys: each is unlocked and used.
    let both = DecryptionKey::load(&fixture("both.sec.asc"), Some(PASSPHRASE)).unwrap();
    assert_eq!(both.key_ids().len(), 4, "{:?}", both.key_ids());
    assert_decrypts(&both, &fixture("zlib.gpg"), "mailbox.mbox");
    assert_decrypts(&both, &fixture("to-plain-key.gpg"), "mailbox.mbox");
    assert!(matches!(
        DecryptionKey::load(&fixture("both.sec.asc"), None),
        Err(DecryptError::PassphraseRequired { .. })
    ));
}

#[test]
fn key_ids_and_debug_show_no_secrets() {
    let key = protected_key();
    let ids = key.key_ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    for id in &ids {
        assert_eq!(id.len(), 16);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    }
    let debug = format!("{key:?}");
    assert!(debug.contains(&ids[0]), "{debug}");
    assert!(
        debug.len() < 400,
        "Debug too long, may print key material: {debug}"
    );
    assert!(!debug.contains(PASSPHRASE));
}

#[test]
fn wrong_or_missing_passphrase() {
    let path = fixture("protected.sec.asc");
    match DecryptionKey::load(&path, Some("not the passphrase")) {
        Err(e @ DecryptError::WrongPassphrase { .. }) => {
            let text = e.to_string();
            assert!(text.contains("protected.sec.asc"), "{text}");
            assert!(!text.contains("not the passphrase"), "{text}");
        }
        other => panic!("expected WrongPassphrase, got {other:?}"),
    }
    match DecryptionKey::load(&fixture("protected.sec.gpg"), None) {
        Err(DecryptError::PassphraseRequired { path }) => {
            assert!(path.ends_with("protected.sec.gpg"));
        }
        other => panic!("expected PassphraseRequired, got {other:?}"),
    }
    match DecryptionKey::load(&fixture("protected-subkeys.sec.asc"), Some("nope")) {
        Err(DecryptError::WrongPassphrase { .. }) => {}
        other => panic!("expected WrongPassphrase, got {other:?}"),
    }
}

#[test]
fn unusable_key_files() {
    for (name, needle) in [
        ("protected.pub.asc", "public key only"),
        ("mailbox.mbox", "not an OpenPGP secret key"),
        ("zlib.gpg", "not an OpenPGP secret key"),
    ] {
        match DecryptionKey::load(&fixture(name), Some(PASSPHRASE)) {
            Err(e @ DecryptError::KeyFile { .. }) => {
                let text = e.to_string();
                assert!(text.contains(name) && text.contains(needle), "{text}");
            }
            other => panic!("{name}: expected KeyFile, got {other:?}"),
        }
    }
    let (_dir, empty) = temp_input("empty.asc", b"");
    assert!(matches!(
        DecryptionKey::load(&empty, None),
        Err(DecryptError::KeyFile { .. })
    ));
    match DecryptionKey::load(Path::new("/nonexistent/key.asc"), None) {
        Err(DecryptError::Io { path, .. }) => assert!(path.ends_with("key.asc")),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn wrong_key_names_both_sides() {
    let plain = DecryptionKey::load(&fixture("plain.sec.asc"), None).unwrap();
    match decrypt_err(&plain, &fixture("zlib.gpg")) {
        e @ DecryptError::NoMatchingKey { .. } => {
            let DecryptError::NoMatchingKey {
                input,
                recipients,
                available,
            } = &e
            else {
                unreachable!()
            };
            assert!(input.ends_with("zlib.gpg"));
            assert_eq!(recipients.as_slice(), &protected_key().key_ids()[1..]);
            assert_eq!(available, &plain.key_ids());
            let text = e.to_string();
            assert!(text.contains("this domain's key"), "{text}");
        }
        other => panic!("expected NoMatchingKey, got {other:?}"),
    }
}

/// The offset of the SEIPD packet body in a binary fixture (after the one PKESK).
fn seipd_body_offset(bytes: &[u8]) -> usize {
    // Old-format PKESK with a two-octet length (ctb 0x85), as GnuPG writes it.
    assert_eq!(bytes[0], 0x85);
    let pkesk_len = u16::from_be_bytes([bytes[1], bytes[2]]) as usize;
    let seipd = 3 + pkesk_len;
    assert_eq!(bytes[seipd], 0xd2, "SEIPD new-format header");
    seipd + 2
}

#[test]
fn tampered_ciphertext_is_an_integrity_error() {
    let key = protected_key();
    for name in ["zlib.gpg", "uncompressed.gpg", "random.gpg", "bzip2.gpg"] {
        let original = fs::read(fixture(name)).unwrap();
        let body = seipd_body_offset(&original) + 8; // past a possible length header
                                                     // Flip a byte at the start of the encrypted data, in the middle, and in the MDC.
        for at in [body + 40, (body + original.len()) / 2, original.len() - 3] {
            let mut bytes = original.clone();
            bytes[at] ^= 0x01;
            let (_dir, path) = temp_input(name, &bytes);
            match decrypt_err(key, &path) {
                DecryptError::Integrity { input } => assert_eq!(input, path),
                other => panic!("{name}, byte {at}: expected Integrity, got {other:?}"),
            }
        }
        // A modified encrypted session key.
        let mut bytes = original.clone();
        bytes[100] ^= 0x80;
        let (_dir, path) = temp_input(name, &bytes);
        match decrypt_err(key, &path) {
            DecryptError::Integrity { .. } => {}
            other => panic!("{name}, PKESK: expected Integrity, got {other:?}"),
        }
    }
}

#[test]
fn tampered_armored_ciphertext_is_an_integrity_error() {
    let text = fs::read_to_string(fixture("zlib-armored.asc")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // A body line well inside the base64, changed to another valid base64 character.
    let line = lines.len() / 2;
    let mut chars: Vec<char> = lines[line].chars().collect();
    chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
    lines[line] = chars.into_iter().collect();
    let (_dir, path) = temp_input("tampered.asc", (lines.join("\n") + "\n").as_bytes());
    match decrypt_err(protected_key(), &path) {
        DecryptError::Integrity { .. } => {}
        other => panic!("expected Integrity, got {other:?}"),
    }
}

#[test]
fn truncated_files_are_truncated_at_every_length() {
    let key = protected_key();
    for name in [
        "zlib.gpg",
        "uncompressed.gpg",
        "stdin-partial-uncompressed.gpg",
    ] {
        let original = fs::read(fixture(name)).unwrap();
        // Every length for the start and the end, a stride in between.
        let lengths = (1..original.len())
            .filter(|&n| n < 420 || n > original.len() - 64 || n % 97 == 0)
            .collect::<Vec<_>>();
        let dir = tempfile::tempdir().unwrap();
        let out_dir = tempfile::tempdir().unwrap();
        for n in lengths {
            let path = dir.path().join(name);
            fs::write(&path, &original[..n]).unwrap();
            let output = out_dir.path().join("out.mbox");
            match decrypt_file(key, &path, &output) {
                Err(DecryptError::Truncated { .. }) => {}
                other => panic!("{name} cut to {n} of {} bytes: {other:?}", original.len()),
            }
            assert!(
                entries(out_dir.path()).is_empty(),
                "{name} cut to {n}: leftovers"
            );
        }
    }
}

#[test]
fn truncated_armored_file() {
    let text = fs::read_to_string(fixture("zlib-armored.asc")).unwrap();
    for cut in [text.len() / 2, text.len() - 40, text.len() - 20] {
        let (_dir, path) = temp_input("cut.asc", &text.as_bytes()[..cut]);
        match decrypt_err(protected_key(), &path) {
            DecryptError::Truncated { .. } => {}
            other => panic!("armored cut to {cut}: expected Truncated, got {other:?}"),
        }
    }
}

#[test]
fn not_openpgp_inputs_are_malformed() {
    let key = protected_key();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "mailbox.mbox",
            fs::read(fixture("mailbox.mbox")).unwrap(),
            "neither",
        ),
        ("empty.gpg", Vec::new(), "empty"),
        (
            "jpeg.gpg",
            vec![0xff, 0xd8, 0xff, 0xe0, 0, 16, b'J', b'F'],
            "not an OpenPGP",
        ),
        (
            "key.gpg",
            fs::read(fixture("protected.sec.gpg")).unwrap(),
            "key",
        ),
        (
            "key.asc",
            fs::read(fixture("protected.pub.asc")).unwrap(),
            "PUBLIC KEY",
        ),
        (
            "literal.gpg",
            vec![0xcb, 0x06, b'b', 0, 0, 0, 0, 0, b'x'],
            "not an encrypted",
        ),
    ];
    for (name, bytes, needle) in cases {
        let (_dir, path) = temp_input(name, &bytes);
        match decrypt_err(key, &path) {
            e @ DecryptError::Malformed { .. } => {
                let text = e.to_string();
                assert!(
                    text.contains(name) && text.contains(needle),
                    "{name}: {text}"
                );
            }
            other => panic!("{name}: expected Malformed, got {other:?}"),
        }
    }
    match decrypt_err(key, Path::new("/nonexistent/in.gpg")) {
        DecryptError::Io { path, .. } => assert!(path.ends_with("in.gpg")),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn existing_output_is_replaced_only_on_success() {
    let key = protected_key();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("export.mbox");
    fs::write(&output, b"previous").unwrap();
    let mut bad = fs::read(fixture("zlib.gpg")).unwrap();
    let last = bad.len() - 2;
    bad[last] ^= 0xff;
    let (_in_dir, bad_path) = temp_input("bad.gpg", &bad);
    assert!(matches!(
        decrypt_file(key, &bad_path, &output),
        Err(DecryptError::Integrity { .. })
    ));
    assert_eq!(fs::read(&output).unwrap(), b"previous");
    decrypt_file(key, &fixture("zlib.gpg"), &output).unwrap();
    assert_eq!(
        fs::read(&output).unwrap(),
        fs::read(fixture("mailbox.mbox")).unwrap()
    );
    assert_eq!(entries(dir.path()), vec!["export.mbox".to_string()]);
}

#[test]
fn missing_output_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("missing/export.mbox");
    match decrypt_file(protected_key(), &fixture("zlib.gpg"), &output) {
        Err(DecryptError::Io { path, .. }) => assert!(path.ends_with("missing")),
        other => panic!("expected Io, got {other:?}"),
    }
}
