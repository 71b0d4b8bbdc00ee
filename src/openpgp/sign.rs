//! Signed evidence: a detached, ASCII-armored OpenPGP signature over `manifest.json`
//! (`manifest.json.asc`), made with the key `run --sign-key` names and checked by
//! `auditflow verify --signer` (or by `gpg --verify manifest.json.asc manifest.json`).
//!
//! The manifest lists every artifact's size and SHA-256, so one signature over it covers
//! every file: whoever edits an mbox must edit the manifest, and cannot sign it again
//! without the key. The signature is a binary-document signature (type 0x00, SHA-256) made
//! by the key's signing-capable component: the primary key when its self-signature allows
//! signing (what `keygen` makes), else the first signing subkey (GnuPG's usual layout).
use std::path::Path;

use pgp::composed::{
    ArmorOptions, Deserializable, DetachedSignature, SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::types::Password;

use super::{fingerprint_hex, parse_secret_keys, read_key_file, ReadKeyError};

/// Why signing or checking a signature failed; names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key file cannot be read.
    #[error("signing key {}: {message}", path.display())]
    KeyFile {
        /// The key file.
        path: std::path::PathBuf,
        /// What is wrong, never quoting the file.
        message: String,
    },
    /// The key has no component allowed to sign.
    #[error("{}: no key in it may sign (its key flags allow no signing); make one with `auditflow keygen --sign`", path.display())]
    NoSigningKey {
        /// The key file.
        path: std::path::PathBuf,
    },
    /// The passphrase does not unlock the key (or none was given for a protected key).
    #[error("{}: the passphrase in {var} does not unlock the signing key (or the variable is not set); set it to the key's passphrase", path.display())]
    Locked {
        /// The key file.
        path: std::path::PathBuf,
        /// The environment variable that holds the passphrase.
        var: String,
    },
    /// rPGP failed to sign or to encode.
    #[error("cannot sign {}: {message}", path.display())]
    Sign {
        /// The signed file.
        path: std::path::PathBuf,
        /// rPGP's words.
        message: String,
    },
    /// The data or signature file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The signature file holds no readable OpenPGP signature.
    #[error("{} is not an OpenPGP signature ({message})", path.display())]
    NotASignature {
        /// The signature file.
        path: std::path::PathBuf,
        /// rPGP's words.
        message: String,
    },
    /// No key of the signer's file made this signature over this data.
    #[error("the signature {} does not verify with {}: the signed file was changed after signing, or another key signed it", sig.display(), signer.display())]
    Bad {
        /// The signature file.
        sig: std::path::PathBuf,
        /// The signer's key file.
        signer: std::path::PathBuf,
    },
}

/// A secret key ready to sign, checked when loaded (before a run sends anything).
pub struct Signer {
    key: SignedSecretKey,
    password: Password,
    path: std::path::PathBuf,
    /// The fingerprint of the component that signs (upper-case hex).
    pub fingerprint: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("path", &self.path)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Which component of a key signs.
enum Component<'a> {
    Primary,
    Subkey(&'a pgp::composed::SignedSecretSubKey),
}

fn signing_component(key: &SignedSecretKey) -> Option<Component<'_>> {
    let flags_sign = |sigs: &[pgp::packet::Signature]| sigs.iter().any(|s| s.key_flags().sign());
    let primary = flags_sign(&key.details.direct_signatures)
        || key.details.users.iter().any(|u| flags_sign(&u.signatures));
    if primary {
        return Some(Component::Primary);
    }
    key.secret_subkeys
        .iter()
        .find(|s| flags_sign(&s.signatures))
        .map(Component::Subkey)
}

impl Signer {
    /// Loads the first key of `path` that may sign and checks that `passphrase` (from the
    /// environment variable `var`) unlocks it, by signing a probe.
    pub fn load(path: &Path, passphrase: Option<&str>, var: &str) -> Result<Signer, SignError> {
        let key_file = |message: String| SignError::KeyFile {
            path: path.to_path_buf(),
            message,
        };
        let mut bytes = read_signer_file(path)?;
        let keys = parse_secret_keys(&bytes);
        bytes.fill(0);
        let keys = keys.map_err(key_file)?;
        let key = keys
            .into_iter()
            .find(|k| signing_component(k).is_some())
            .ok_or_else(|| SignError::NoSigningKey {
                path: path.to_path_buf(),
            })?;
        let fingerprint = match signing_component(&key) {
            Some(Component::Subkey(s)) => fingerprint_hex(&s.key),
            _ => fingerprint_hex(&key.primary_key),
        };
        let signer = Signer {
            key,
            password: passphrase
                .map(Password::from)
                .unwrap_or_else(Password::empty),
            path: path.to_path_buf(),
            fingerprint,
        };
        signer
            .sign_bytes(b"auditflow signing key check")
            .map_err(|_| SignError::Locked {
                path: path.to_path_buf(),
                var: var.to_string(),
            })?;
        Ok(signer)
    }

    fn sign_bytes(&self, data: &[u8]) -> pgp::errors::Result<DetachedSignature> {
        let rng = rand::thread_rng();
        match signing_component(&self.key) {
            Some(Component::Subkey(s)) => DetachedSignature::sign_binary_data(
                rng,
                &s.key,
                &self.password,
                HashAlgorithm::Sha256,
                data,
            ),
            _ => DetachedSignature::sign_binary_data(
                rng,
                &self.key.primary_key,
                &self.password,
                HashAlgorithm::Sha256,
                data,
            ),
        }
    }

    /// Signs `file` and writes the armored detached signature to `file` + `.asc`
    /// (atomically). Returns the signature's path.
    pub fn sign_file(&self, file: &Path) -> Result<std::path::PathBuf, SignError> {
        let data = std::fs::read(file).map_err(|source| SignError::Read {
            path: file.to_path_buf(),
            source,
        })?;
        let failed = |e: &dyn std::fmt::Display| SignError::Sign {
            path: file.to_path_buf(),
            message: e.to_string(),
        };
        let sig = self.sign_bytes(&data).map_err(|e| failed(&e))?;
        let text = sig
            .to_armored_string(ArmorOptions::default())
            .map_err(|e| failed(&e))?;
        let out = signature_path(file);
        crate::durable::write_atomic(&out, text.as_bytes()).map_err(|source| SignError::Read {
            path: out.clone(),
            source,
        })?;
        Ok(out)
    }
}

/// The bytes of a key file (the caller zeroes them when they may hold secret material).
fn read_signer_file(path: &Path) -> Result<Vec<u8>, SignError> {
    read_key_file(path).map_err(|e| SignError::KeyFile {
        path: path.to_path_buf(),
        message: match e {
            ReadKeyError::Io(e) => e.to_string(),
            ReadKeyError::TooLarge => "larger than any key file".into(),
            ReadKeyError::Empty => "the file is empty".into(),
        },
    })
}

/// Where the detached signature of `file` goes: `file` + `.asc`.
pub fn signature_path(file: &Path) -> std::path::PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".asc");
    std::path::PathBuf::from(name)
}

/// The public keys in a signer's key file: a public key file, or (its public parts) a
/// secret one.
fn signer_keys(path: &Path) -> Result<Vec<SignedPublicKey>, SignError> {
    let key_file = |message: String| SignError::KeyFile {
        path: path.to_path_buf(),
        message,
    };
    let mut bytes = read_signer_file(path)?;
    let public: Vec<SignedPublicKey> = SignedPublicKey::from_reader_many_buf(&bytes[..])
        .map(|(it, _)| it.filter_map(Result::ok).collect())
        .unwrap_or_default();
    if !public.is_empty() {
        return Ok(public);
    }
    let secret = parse_secret_keys(&bytes);
    bytes.fill(0);
    let secret = secret.map_err(key_file)?;
    Ok(secret.iter().map(SignedSecretKey::to_public_key).collect())
}

/// Checks the detached signature `sig` of `file` against the keys of `signer`; returns the
/// fingerprint of the key component that made it.
pub fn verify_file(file: &Path, sig: &Path, signer: &Path) -> Result<String, SignError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| SignError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let data = read(file)?;
    let sig_bytes = read(sig)?;
    let signature = DetachedSignature::from_armor_single(&sig_bytes[..])
        .map(|(s, _)| s)
        .or_else(|_| DetachedSignature::from_bytes(&sig_bytes[..]))
        .map_err(|e| SignError::NotASignature {
            path: sig.to_path_buf(),
            message: e.to_string(),
        })?;
    for key in signer_keys(signer)? {
        if signature.verify(&key.primary_key, &data).is_ok() {
            return Ok(fingerprint_hex(&key.primary_key));
        }
        for sub in &key.public_subkeys {
            if signature.verify(&sub.key, &data).is_ok() {
                return Ok(fingerprint_hex(&sub.key));
            }
        }
    }
    Err(SignError::Bad {
        sig: sig.to_path_buf(),
        signer: signer.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_file_verifies_and_any_change_or_other_key_fails() {
        let d = tempfile::tempdir().expect("tempdir");
        let key = crate::openpgp::generate::signing_key("Evidence <e@example.com>", Some("pw"))
            .expect("key");
        let files =
            crate::openpgp::generate::write_key_files(&key, &d.path().join("k")).expect("written");
        let other =
            crate::openpgp::generate::signing_key("Other <o@example.com>", None).expect("key");
        let other_files = crate::openpgp::generate::write_key_files(&other, &d.path().join("o"))
            .expect("written");
        assert!(matches!(
            Signer::load(&files.secret, Some("wrong"), "V"),
            Err(SignError::Locked { .. })
        ));
        let signer = Signer::load(&files.secret, Some("pw"), "V").expect("unlocks");
        let manifest = d.path().join("manifest.json");
        std::fs::write(&manifest, b"{\"artifacts\": {}}\n").expect("write");
        let sig = signer.sign_file(&manifest).expect("signed");
        assert_eq!(sig, d.path().join("manifest.json.asc"));
        let fp = verify_file(&manifest, &sig, &files.public).expect("verifies");
        assert_eq!(fp, signer.fingerprint);
        assert!(matches!(
            verify_file(&manifest, &sig, &other_files.public),
            Err(SignError::Bad { .. })
        ));
        std::fs::write(&manifest, b"{\"artifacts\": {\"x\": 1}}\n").expect("write");
        assert!(matches!(
            verify_file(&manifest, &sig, &files.public),
            Err(SignError::Bad { .. })
        ));
    }
}
