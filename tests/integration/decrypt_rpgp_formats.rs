//! Message shapes GnuPG 2.2 cannot write but other encrypters do: SEIPD v2 (AEAD), anonymous recipients, nested compression.
use std::fs;
use std::path::{Path, PathBuf};

use auditflow::steps::decrypt::{decrypt_file, DecryptError, DecryptionKey};
use pgp::composed::{Deserializable, MessageBuilder, SignedPublicKey, SignedSecretKey};
use pgp::crypto::aead::{AeadAlgorithm, ChunkSize};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::CompressionAlgorithm;
use rand::rngs::StdRng;
use rand::SeedableRng;

const PASSPHRASE: &str = "auditflow-fixture-passphrase";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gpg")
        .join(name)
}

fn public_key(name: &str) -> SignedPublicKey {
    let file = fs::File::open(fixture(name)).expect("key file");
    let (key, _) = SignedSecretKey::from_armor_single(file).expect("parse key");
    key.to_public_key()
}

fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 7 % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

/// Decrypts `bytes` (written to a temp file) and returns the plaintext or the error,
/// checking that an error leaves nothing behind.
fn decrypt(key: &DecryptionKey, bytes: &[u8]) -> Result<Vec<u8>, DecryptError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.pgp");
    fs::write(&input, bytes).expect("write");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let output = out_dir.path().join("out.mbox");
    match decrypt_file(key, &input, &output) {
        Ok(done) => {
            let plain = fs::read(&output).expect("output");
            assert_eq!(done.bytes, plain.len() as u64);
            Ok(plain)
        }
        Err(e) => {
            assert_eq!(fs::read_dir(out_dir.path()).expect("dir").count(), 0);
            Err(e)
        }
    }
}

#[test]
fn seipd_v2_aead_decrypts_and_detects_tampering() {
    let key = DecryptionKey::load(&fixture("protected.sec.asc"), Some(PASSPHRASE)).unwrap();
    let public = public_key("protected.sec.asc");
    let mut rng = StdRng::seed_from_u64(7);
    let plain = data(3 * 1024 * 1024 + 17);
    for (aead, chunk) in [
        (AeadAlgorithm::Ocb, ChunkSize::C4KiB),
        (AeadAlgorithm::Gcm, ChunkSize::C1MiB),
        (AeadAlgorithm::Eax, ChunkSize::C64KiB),
    ] {
        let mut builder = MessageBuilder::from_bytes("", plain.clone()).seipd_v2(
            &mut rng,
            SymmetricKeyAlgorithm::AES256,
            aead,
            chunk,
        );
        builder.compression(CompressionAlgorithm::ZLIB);
        builder
            .encrypt_to_key(&mut rng, &public.public_subkeys[0].key)
            .unwrap();
        let encrypted = builder.to_vec(&mut rng).unwrap();
        let decrypted = decrypt(&key, &encrypted).unwrap_or_else(|e| panic!("{aead:?}: {e}"));
        assert!(decrypted == plain, "{aead:?}: plaintext differs");

        for at in [encrypted.len() / 2, encrypted.len() - 5] {
            let mut bad = encrypted.clone();
            bad[at] ^= 0x10;
            match decrypt(&key, &bad) {
                Err(DecryptError::Integrity { .. }) => {}
                other => panic!("{aead:?} byte {at}: expected Integrity, got {other:?}"),
            }
        }
        match decrypt(&key, &encrypted[..encrypted.len() - 1000]) {
            Err(DecryptError::Truncated { .. }) => {}
            other => panic!("{aead:?} truncated: got {other:?}"),
        }
    }
}

#[test]
fn anonymous_recipient_is_tried_with_every_key() {
    let key = DecryptionKey::load(&fixture("protected.sec.asc"), Some(PASSPHRASE)).unwrap();
    let public = public_key("protected.sec.asc");
    let mut rng = StdRng::seed_from_u64(8);
    let plain = data(100_000);
    let mut builder = MessageBuilder::from_bytes("", plain.clone())
        .seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
    builder
        .encrypt_to_key_anonymous(&mut rng, &public.public_subkeys[0].key)
        .unwrap();
    let encrypted = builder.to_vec(&mut rng).unwrap();
    assert!(decrypt(&key, &encrypted).unwrap() == plain);

    let other = DecryptionKey::load(&fixture("plain.sec.asc"), None).unwrap();
    match decrypt(&other, &encrypted) {
        Err(DecryptError::NoMatchingKey { recipients, .. }) => {
            assert_eq!(recipients, vec!["anonymous recipient".to_string()]);
        }
        other => panic!("expected NoMatchingKey, got {other:?}"),
    }
}

#[test]
fn bzip2_and_uncompressed_from_another_encrypter() {
    let key = DecryptionKey::load(&fixture("plain.sec.asc"), None).unwrap();
    let public = public_key("plain.sec.asc");
    let mut rng = StdRng::seed_from_u64(9);
    let plain = data(70_000);
    for compression in [
        Some(CompressionAlgorithm::BZip2),
        Some(CompressionAlgorithm::ZIP),
        None,
    ] {
        let mut builder = MessageBuilder::from_bytes("export.mbox", plain.clone())
            .seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES128);
        if let Some(c) = compression {
            builder.compression(c);
        }
        builder.partial_chunk_size(512).unwrap();
        builder
            .encrypt_to_key(&mut rng, &public.public_subkeys[0].key)
            .unwrap();
        let encrypted = builder.to_vec(&mut rng).unwrap();
        let decrypted =
            decrypt(&key, &encrypted).unwrap_or_else(|e| panic!("{compression:?}: {e}"));
        assert!(decrypted == plain, "{compression:?}");
    }
}

#[test]
fn message_to_the_primary_key_unlocks_it_on_demand() {
    // `load` unlocks only the encryption subkey of a GnuPG key; the (signing) primary key stays
    // locked until a message addressed to it arrives.
    let key = DecryptionKey::load(&fixture("protected.sec.asc"), Some(PASSPHRASE)).unwrap();
    let public = public_key("protected.sec.asc");
    let mut rng = StdRng::seed_from_u64(10);
    let plain = data(50_000);
    let mut builder = MessageBuilder::from_bytes("", plain.clone())
        .seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
    builder
        .encrypt_to_key(&mut rng, &public.primary_key)
        .unwrap();
    let encrypted = builder.to_vec(&mut rng).unwrap();
    assert!(decrypt(&key, &encrypted).unwrap() == plain);

    // A `--export-secret-subkeys` file has no secret for the primary key (a GnuPG stub).
    let subkeys_only =
        DecryptionKey::load(&fixture("protected-subkeys.sec.asc"), Some(PASSPHRASE)).unwrap();
    match decrypt(&subkeys_only, &encrypted) {
        Err(DecryptError::NoMatchingKey { recipients, .. }) => {
            assert_eq!(recipients, vec![key.key_ids()[0].clone()]);
        }
        other => panic!("expected NoMatchingKey (primary is a stub), got {other:?}"),
    }
}
