//! `auditflow keygen`: an RSA OpenPGP key made the way Google's Email Audit API wants it.
//!
//! The key is laid out as `gpg --full-generate-key` makes an RSA key: an RSA primary key for
//! certification and signing, and an RSA subkey for encryption (Google encrypts mailbox
//! exports to it). The secret key file is written with mode 0600 from its creation, through
//! a temporary file renamed without replacing anything.
use std::io::Write as _;
use std::path::{Path, PathBuf};

use pgp::composed::{
    ArmorOptions, EncryptionCaps, KeyType, SecretKeyParamsBuilder, SignedPublicKey,
    SignedSecretKey, SubkeyParamsBuilder,
};

use super::fingerprint_hex;

/// Why a key could not be made or written; names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    /// rPGP refused the parameters or failed (not caused by the user).
    #[error("key generation failed: {0}")]
    Generate(String),
    /// An output file exists already: nothing is replaced.
    #[error("{} already exists; nothing was written (a key is never overwritten): pick another --out name, or move the old files away", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// Writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Generates an RSA primary key (certify, sign) with an RSA encryption subkey, both
/// protected by `passphrase` when given.
pub fn rsa_key(
    user_id: &str,
    bits: u32,
    passphrase: Option<&str>,
) -> Result<SignedSecretKey, KeygenError> {
    let gen = |e: &dyn std::fmt::Display| KeygenError::Generate(e.to_string());
    let passphrase = passphrase.map(str::to_string);
    let sub = SubkeyParamsBuilder::default()
        .key_type(KeyType::Rsa(bits))
        .passphrase(passphrase.clone())
        .can_encrypt(EncryptionCaps::All)
        .build()
        .map_err(|e| gen(&e))?;
    SecretKeyParamsBuilder::default()
        .key_type(KeyType::Rsa(bits))
        .can_certify(true)
        .can_sign(true)
        .passphrase(passphrase)
        .primary_user_id(user_id.to_string())
        .subkey(sub)
        .build()
        .map_err(|e| gen(&e))?
        .generate(rand::thread_rng())
        .map_err(|e| gen(&e))
}

/// Generates an Ed25519 key that only certifies and signs (`keygen --sign`): for signing
/// evidence manifests, kept apart from the key Google encrypts exports to. Version 4
/// EdDSA, which every GnuPG 2.2 and later verifies.
pub fn signing_key(
    user_id: &str,
    passphrase: Option<&str>,
) -> Result<SignedSecretKey, KeygenError> {
    let gen = |e: &dyn std::fmt::Display| KeygenError::Generate(e.to_string());
    SecretKeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .passphrase(passphrase.map(str::to_string))
        .primary_user_id(user_id.to_string())
        .build()
        .map_err(|e| gen(&e))?
        .generate(rand::thread_rng())
        .map_err(|e| gen(&e))
}

/// The files `keygen` wrote.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// `<name>.pub.asc`, mode 0644: what gets uploaded.
    pub public: PathBuf,
    /// `<name>.sec.asc`, mode 0600: what decrypts the exports.
    pub secret: PathBuf,
    /// The primary key's fingerprint.
    pub fingerprint: String,
}

/// The files for `name`: `<name>.pub.asc` and `<name>.sec.asc`.
pub fn key_file_paths(name: &Path) -> (PathBuf, PathBuf) {
    let with = |ext: &str| {
        let mut s = name.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    (with(".pub.asc"), with(".sec.asc"))
}

/// Fails if either file for `name` exists (checked before the slow key generation, and
/// again when each file is linked into place).
pub fn refuse_existing(name: &Path) -> Result<(), KeygenError> {
    let (public, secret) = key_file_paths(name);
    for path in [public, secret] {
        if path.symlink_metadata().is_ok() {
            return Err(KeygenError::Exists { path });
        }
    }
    Ok(())
}

/// Writes `<name>.pub.asc` (0644) and `<name>.sec.asc` (0600), refusing to replace either.
pub fn write_key_files(key: &SignedSecretKey, name: &Path) -> Result<KeyFiles, KeygenError> {
    refuse_existing(name)?;
    let (public, secret) = key_file_paths(name);
    let armor_err = |e: pgp::errors::Error| KeygenError::Generate(format!("cannot armor: {e}"));
    let sec_text = key
        .to_armored_string(ArmorOptions::default())
        .map_err(armor_err)?;
    let pub_text = SignedPublicKey::from(key.clone())
        .to_armored_string(ArmorOptions::default())
        .map_err(armor_err)?;
    write_new(&secret, sec_text.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, pub_text.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&secret);
        return Err(e);
    }
    Ok(KeyFiles {
        public,
        secret,
        fingerprint: fingerprint_hex(&key.primary_key),
    })
}

/// Writes a new file through a temporary file created with `mode`, synced, then linked
/// under its name only if nothing is there.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeygenError> {
    let io = |source| KeygenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = crate::durable::private_temp_file(&dir, ".auditflow-key-", ".tmp").map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            KeygenError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            io(e.error)
        }
    })?;
    crate::durable::sync_dir(&dir);
    Ok(())
}
