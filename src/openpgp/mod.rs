//! OpenPGP key handling shared by `decrypt`, the upload-key preflight and `auditflow keygen`.
//!
//! It sits below `template` (the preflight is the `openpgp_public_key` template helper, which
//! renders before the upload request is sent) and below `steps` (decryption loads its secret
//! keys with [`parse_secret_keys`]), so it imports neither: only `pgp` and [`crate::durable`].
use std::fs::File;
use std::io::Read;
use std::path::Path;

use pgp::composed::{Deserializable, SignedPublicKey, SignedSecretKey, SignedSecretSubKey};
use pgp::types::{KeyDetails, S2kParams, SecretParams, StringToKey};

pub mod check;
pub mod generate;
pub mod sign;

/// Largest key file we are willing to read (a transferable key is a few KB).
pub const MAX_KEY_FILE: u64 = 4 * 1024 * 1024;

/// Why a key file could not be read (before any OpenPGP parsing).
#[derive(Debug)]
pub enum ReadKeyError {
    /// The OS error opening or reading it.
    Io(std::io::Error),
    /// Larger than [`MAX_KEY_FILE`].
    TooLarge,
    /// Empty or only whitespace.
    Empty,
}

/// Reads a key file, refusing huge and empty ones. The caller zeroes the bytes when done if
/// they may hold unprotected secret material.
pub fn read_key_file(path: &Path) -> Result<Vec<u8>, ReadKeyError> {
    let file = File::open(path).map_err(ReadKeyError::Io)?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadKeyError::Io)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        bytes.fill(0);
        return Err(ReadKeyError::TooLarge);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ReadKeyError::Empty);
    }
    Ok(bytes)
}

/// Parses the transferable secret keys in a file, armored or binary; the error text never
/// quotes the file.
pub fn parse_secret_keys(bytes: &[u8]) -> Result<Vec<SignedSecretKey>, String> {
    let mut keys = Vec::new();
    let mut failed = false;
    match SignedSecretKey::from_reader_many_buf(bytes) {
        Ok((iter, _headers)) => {
            for key in iter {
                match key {
                    Ok(key) => keys.push(key),
                    Err(_) => failed = true,
                }
            }
        }
        Err(_) => failed = true,
    }
    if !keys.is_empty() {
        if failed {
            tracing::warn!("some keys in the secret key file could not be parsed and are ignored");
        }
        return Ok(keys);
    }
    if SignedPublicKey::from_reader_single_buf(bytes).is_ok() {
        Err(
            "it holds a public key only; decryption needs the secret key (export it with \
             `gpg --export-secret-keys --armor KEYID`)"
                .to_string(),
        )
    } else {
        Err(
            "it is not an OpenPGP secret key (expected an armored \"PGP PRIVATE KEY BLOCK\" or \
             the binary output of `gpg --export-secret-keys`)"
                .to_string(),
        )
    }
}

/// Whether one of these self-signatures marks its component for encryption (key flags).
pub fn for_encryption<'a>(
    signatures: impl IntoIterator<Item = &'a pgp::packet::Signature>,
) -> bool {
    signatures.into_iter().any(|sig| {
        let flags = sig.key_flags();
        flags.encrypt_comms() || flags.encrypt_storage()
    })
}

/// Whether a secret key's primary key is marked for encryption.
pub fn primary_for_encryption(key: &SignedSecretKey) -> bool {
    for_encryption(&key.details.direct_signatures)
        || key
            .details
            .users
            .iter()
            .any(|user| for_encryption(&user.signatures))
}

/// Whether a secret subkey is marked for encryption.
pub fn subkey_for_encryption(sub: &SignedSecretSubKey) -> bool {
    for_encryption(&sub.signatures)
}

/// Whether a secret (sub)key's material is usable as is, locked by a passphrase, or absent.
pub enum Lock {
    /// Not protected.
    Plain,
    /// Protected by a passphrase.
    Locked,
    /// No secret material (a GnuPG stub, e.g. a key kept on a smartcard).
    Stub,
}

/// The [`Lock`] state of secret key material.
pub fn unlock_state(params: &SecretParams) -> Lock {
    match params {
        SecretParams::Plain(_) => Lock::Plain,
        SecretParams::Encrypted(enc) => match enc.string_to_key_params() {
            S2kParams::Cfb { s2k, .. }
            | S2kParams::MalleableCfb { s2k, .. }
            | S2kParams::Aead { s2k, .. }
                if matches!(s2k, StringToKey::Private { .. }) =>
            {
                Lock::Stub
            }
            _ => Lock::Locked,
        },
    }
}

/// The long key id (16 upper-case hex digits).
pub fn key_id_hex(key: &dyn KeyDetails) -> String {
    hex::encode_upper(key.legacy_key_id())
}

/// The fingerprint (upper-case hex).
pub fn fingerprint_hex(key: &dyn KeyDetails) -> String {
    hex::encode_upper(key.fingerprint().as_bytes())
}
