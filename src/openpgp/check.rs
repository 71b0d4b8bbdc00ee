//! The upload-key preflight: is this file a public key Google will take, and does the private key match it?
//!
//! Google's Email Audit API wants "an OpenPGP **RSA** public key, ASCII-armored" with an
//! encryption-capable key, and rejects anything else only after the upload ("Invalid
//! Encryption Public Key") or, worse, fails every later export with status `ERROR`. This
//! module checks the same things locally, before anything is sent, and says what to do.
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use pgp::composed::{Deserializable, SignedPublicKey, SignedSecretKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, Password, PublicParams};
use rsa::traits::PublicKeyParts;

use super::{
    fingerprint_hex, for_encryption, parse_secret_keys, read_key_file, unlock_state, Lock,
    ReadKeyError,
};

/// What to run to get a key Google takes.
const MAKE_ONE: &str =
    "make one with `auditflow keygen --user-id 'Audit <admin@DOMAIN>' --out NAME`";

/// A public key that passed the preflight.
#[derive(Debug, Clone)]
pub struct CheckedKey {
    /// The armored text, as read (what gets uploaded).
    pub armored: String,
    /// Fingerprint of the primary key (upper-case hex).
    pub fingerprint: String,
    /// Fingerprint of the RSA component exports will be encrypted to.
    pub encryption_key: String,
    /// Its size in bits.
    pub bits: usize,
}

/// The domain's private key, to check against the public key.
#[derive(Debug, Clone, Copy)]
pub struct PrivateKey<'a> {
    /// The secret key file (armored or binary).
    pub path: &'a Path,
    /// Its passphrase, if it has one.
    pub passphrase: Option<&'a str>,
}

/// A key file that failed the preflight: the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct KeyCheckError {
    /// The file found wrong (the public key, or the private key file).
    pub path: PathBuf,
    /// What is wrong and what to do.
    pub problem: Problem,
}

/// What is wrong with a key file; every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The file cannot be read.
    #[error("cannot read it: {0}")]
    Io(std::io::Error),
    /// Larger than any key.
    #[error("it is larger than 4 MiB, which no key is; is this the right file?")]
    TooLarge,
    /// Empty.
    #[error("it is empty; export the public key with `gpg --armor --export KEYID`, or {MAKE_ONE}")]
    Empty,
    /// A secret key where the public key belongs.
    #[error("it holds a SECRET key, which must never be uploaded; give the public key instead (`gpg --armor --export KEYID`, or the .pub.asc file `auditflow keygen` wrote)")]
    SecretKey,
    /// A binary (unarmored) public key.
    #[error("it is a binary OpenPGP key; Google needs the ASCII-armored text (\"-----BEGIN PGP PUBLIC KEY BLOCK-----\"): export it with `gpg --armor --export KEYID`")]
    Binary,
    /// Armored, but not a public key block.
    #[error("it is an armored \"{0}\", not a public key; give the output of `gpg --armor --export KEYID`")]
    OtherBlock(String),
    /// Not OpenPGP at all.
    #[error("it is not an OpenPGP public key (expected \"-----BEGIN PGP PUBLIC KEY BLOCK-----\"); export one with `gpg --armor --export KEYID`, or {MAKE_ONE}")]
    NotOpenPgp,
    /// The armored block does not parse.
    #[error("the armored public key is damaged and cannot be parsed; export it again with `gpg --armor --export KEYID`")]
    Unparsable,
    /// More than one key in the file.
    #[error("it holds {0} keys; Google takes exactly one: export only the domain's key (`gpg --armor --export KEYID`)")]
    SeveralKeys(usize),
    /// No RSA key that can encrypt.
    #[error("the key is {0}; Google needs RSA: {MAKE_ONE}")]
    NotRsa(String),
    /// RSA, but no component is marked for encryption.
    #[error("no key in it is marked for encryption (key flags); Google encrypts exports to an RSA key with the encrypt capability: add an RSA encryption subkey (`gpg --quick-add-key FINGERPRINT rsa3072 encr`) and export again, or {MAKE_ONE}")]
    NoEncryptionKey,
    /// The key (or its encryption subkey) expired.
    #[error("{what} expired on {at}; extend it (`gpg --quick-set-expire FINGERPRINT 2y '*'` and `gpg --quick-set-expire FINGERPRINT 2y`) and export it again, or {MAKE_ONE}")]
    Expired {
        /// "the key" or "its RSA encryption subkey ..."
        what: String,
        /// When, RFC 3339.
        at: String,
    },
    /// The key (or every encryption subkey) was revoked.
    #[error("{0} was revoked; a revoked key must not be used: {MAKE_ONE}")]
    Revoked(String),
    /// The private key file does not hold the secret of the key being uploaded.
    #[error("it does not hold the secret of the public key being uploaded: the public key encrypts to {public}, this file holds {private}; exports encrypted to that key could not be decrypted with this file. Upload the public key of this private key, or give the matching private key")]
    Mismatch {
        /// Fingerprints of the public key's encryption components.
        public: String,
        /// Fingerprints of the components in the private key file.
        private: String,
    },
    /// The private key file is not usable.
    #[error("{0}")]
    PrivateKey(String),
}

/// Checks the public key file (and the private key, when given) without sending anything.
pub fn check_public_key(
    path: &Path,
    private: Option<PrivateKey<'_>>,
    now: SystemTime,
) -> Result<CheckedKey, KeyCheckError> {
    let err = |problem| KeyCheckError {
        path: path.to_path_buf(),
        problem,
    };
    let bytes = read_key_file(path).map_err(|e| err(read_problem(e)))?;
    let (armored, key) = parse_public(&bytes).map_err(err)?;
    let usable = encryption_component(&key, now).map_err(err)?;
    if let Some(private) = private {
        match_private(&usable, private).map_err(|problem| KeyCheckError {
            path: private.path.to_path_buf(),
            problem,
        })?;
    }
    Ok(CheckedKey {
        armored,
        fingerprint: fingerprint_hex(&key.primary_key),
        encryption_key: usable.fingerprint,
        bits: usable.bits,
    })
}

fn read_problem(e: ReadKeyError) -> Problem {
    match e {
        ReadKeyError::Io(e) => Problem::Io(e),
        ReadKeyError::TooLarge => Problem::TooLarge,
        ReadKeyError::Empty => Problem::Empty,
    }
}

/// The armored text and the one public key in it.
fn parse_public(bytes: &[u8]) -> Result<(String, SignedPublicKey), Problem> {
    let text = std::str::from_utf8(bytes).ok();
    let Some(block) = text.and_then(armor_block) else {
        return Err(binary_problem(bytes));
    };
    match block {
        "PGP PUBLIC KEY BLOCK" => {}
        "PGP PRIVATE KEY BLOCK" => return Err(Problem::SecretKey),
        other => return Err(Problem::OtherBlock(other.to_string())),
    }
    let text = text.unwrap_or_default();
    let (keys, _) = SignedPublicKey::from_string_many(text).map_err(|_| Problem::Unparsable)?;
    let keys = keys
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Problem::Unparsable)?;
    match keys.len() {
        0 => Err(Problem::Unparsable),
        1 => Ok((
            text.to_string(),
            keys.into_iter().next().ok_or(Problem::Unparsable)?,
        )),
        n => Err(Problem::SeveralKeys(n)),
    }
}

/// The type of the first armor block (`PGP PUBLIC KEY BLOCK`), if the text is armored.
fn armor_block(text: &str) -> Option<&str> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("-----BEGIN "))?;
    line.strip_prefix("-----BEGIN ")?.strip_suffix("-----")
}

/// What a file that is not armored text is.
fn binary_problem(bytes: &[u8]) -> Problem {
    if SignedSecretKey::from_bytes(bytes).is_ok() {
        Problem::SecretKey
    } else if SignedPublicKey::from_bytes(bytes).is_ok() {
        Problem::Binary
    } else {
        Problem::NotOpenPgp
    }
}

/// The RSA component exports will be encrypted to.
struct Usable {
    fingerprint: String,
    bits: usize,
}

/// Picks a usable RSA encryption component, or says why there is none.
fn encryption_component(key: &SignedPublicKey, now: SystemTime) -> Result<Usable, Problem> {
    if !key.details.revocation_signatures.is_empty() {
        return Err(Problem::Revoked("the key".into()));
    }
    let primary_sigs: Vec<&Signature> = key
        .details
        .direct_signatures
        .iter()
        .chain(key.details.users.iter().flat_map(|u| u.signatures.iter()))
        .collect();
    if let Some(at) = expired_at(key.primary_key.created_at(), &primary_sigs, now) {
        return Err(Problem::Expired {
            what: "the key".into(),
            at,
        });
    }
    // (component, its self-signatures), primary first.
    let mut candidates: Vec<(&dyn KeyDetails, Vec<&Signature>)> =
        vec![(&key.primary_key, primary_sigs)];
    for sub in &key.public_subkeys {
        candidates.push((&sub.key, sub.signatures.iter().collect()));
    }
    let mut first_problem = None;
    let mut rsa_seen = false;
    for (component, sigs) in candidates {
        let is_rsa = matches!(component.public_params(), PublicParams::RSA(_));
        rsa_seen |= is_rsa;
        if !for_encryption(sigs.iter().copied()) {
            continue;
        }
        let problem = component_problem(component, &sigs, now);
        match (problem, component.public_params()) {
            (None, PublicParams::RSA(rsa)) => {
                return Ok(Usable {
                    fingerprint: fingerprint_hex(component),
                    bits: rsa.key.size() * 8,
                })
            }
            (problem, params) => {
                let problem = problem.unwrap_or_else(|| Problem::NotRsa(describe(params)));
                first_problem.get_or_insert(problem);
            }
        }
    }
    Err(first_problem.unwrap_or_else(|| {
        if rsa_seen {
            Problem::NoEncryptionKey
        } else {
            Problem::NotRsa(describe(key.primary_key.public_params()))
        }
    }))
}

/// Why an encryption-capable component cannot be used (revoked, expired), if it cannot.
fn component_problem(
    component: &dyn KeyDetails,
    sigs: &[&Signature],
    now: SystemTime,
) -> Option<Problem> {
    let what = || {
        format!(
            "its {} encryption subkey {}",
            describe(component.public_params()),
            fingerprint_hex(component)
        )
    };
    if sigs
        .iter()
        .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
    {
        return Some(Problem::Revoked(what()));
    }
    expired_at(component.created_at(), sigs, now).map(|at| Problem::Expired { what: what(), at })
}

/// When the component expired, per its newest self-signature carrying an expiration time
/// (None: it has not, or never does).
fn expired_at(
    created: pgp::types::Timestamp,
    sigs: &[&Signature],
    now: SystemTime,
) -> Option<String> {
    let newest = sigs
        .iter()
        .filter(|s| {
            !matches!(
                s.typ(),
                Some(SignatureType::SubkeyRevocation | SignatureType::CertRevocation)
            )
        })
        .max_by_key(|s| s.created().map(pgp::types::Timestamp::as_secs))?;
    let lifetime = newest.key_expiration_time().filter(|d| d.as_secs() > 0)?;
    let expires = SystemTime::from(created) + Duration::from(lifetime);
    (expires <= now).then(|| rfc3339(expires))
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(0), 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// How users know the algorithm: "RSA-3072", "ECC (Curve25519)".
fn describe(params: &PublicParams) -> String {
    match params {
        PublicParams::RSA(rsa) => format!("RSA-{}", rsa.key.size() * 8),
        PublicParams::ECDH(ecdh) => format!("ECC ({})", ecdh.curve().name()),
        PublicParams::EdDSALegacy(_) | PublicParams::Ed25519(_) | PublicParams::X25519(_) => {
            "ECC (Curve25519)".into()
        }
        PublicParams::Ed448(_) | PublicParams::X448(_) => "ECC (Curve448)".into(),
        PublicParams::ECDSA(_) => "ECC (ECDSA)".into(),
        PublicParams::DSA(_) => "DSA".into(),
        PublicParams::Elgamal(_) => "ElGamal".into(),
        _ => "of an algorithm Google does not take".into(),
    }
}

/// Checks that the private key file holds the secret of `usable`, and that the passphrase
/// unlocks it.
fn match_private(usable: &Usable, private: PrivateKey<'_>) -> Result<(), Problem> {
    let mut bytes = read_key_file(private.path).map_err(|e| match e {
        ReadKeyError::Io(e) => Problem::Io(e),
        ReadKeyError::TooLarge => Problem::TooLarge,
        ReadKeyError::Empty => Problem::PrivateKey("the private key file is empty".into()),
    })?;
    let parsed = parse_secret_keys(&bytes);
    bytes.fill(0);
    std::hint::black_box(&bytes);
    let keys = parsed.map_err(Problem::PrivateKey)?;
    let mut held = Vec::new();
    for key in &keys {
        let primary = (
            fingerprint_hex(&key.primary_key),
            key.primary_key.secret_params(),
        );
        let subs = key
            .secret_subkeys
            .iter()
            .map(|s| (fingerprint_hex(&s.key), s.key.secret_params()));
        for (fp, params) in std::iter::once(primary).chain(subs) {
            if fp == usable.fingerprint {
                return unlockable(key, &fp, params, private.passphrase);
            }
            held.push(fp);
        }
    }
    Err(Problem::Mismatch {
        public: usable.fingerprint.clone(),
        private: held.join(", "),
    })
}

/// Whether the matching component's secret can be used with the given passphrase.
fn unlockable(
    key: &SignedSecretKey,
    fingerprint: &str,
    params: &pgp::types::SecretParams,
    passphrase: Option<&str>,
) -> Result<(), Problem> {
    match unlock_state(params) {
        Lock::Plain => Ok(()),
        Lock::Stub => Err(Problem::PrivateKey(format!(
            "the secret of {fingerprint} is not in the file (a stub, e.g. a key kept on a smartcard); export the secret keys with `gpg --export-secret-keys --armor`"
        ))),
        Lock::Locked => {
            let Some(pw) = passphrase.filter(|p| !p.is_empty()) else {
                return Err(Problem::PrivateKey(
                    "the private key is protected by a passphrase, but none was given: set the environment variable the workflow reads it from (AUDIT_PGP_PASSPHRASE)".into(),
                ));
            };
            let mut key = key.clone();
            let password = Password::from(pw);
            let unlocked = if fingerprint_hex(&key.primary_key) == fingerprint {
                key.primary_key.remove_password(&password)
            } else {
                key.secret_subkeys
                    .iter_mut()
                    .find(|s| fingerprint_hex(&s.key) == fingerprint)
                    .map_or(Ok(()), |s| s.key.remove_password(&password))
            };
            unlocked.map_err(|_| {
                Problem::PrivateKey(
                    "wrong passphrase for the private key: check AUDIT_PGP_PASSPHRASE".into(),
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armor_block_reads_the_first_header() {
        assert_eq!(
            armor_block("\n-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nabc\n"),
            Some("PGP PUBLIC KEY BLOCK")
        );
        assert_eq!(armor_block("hello"), None);
    }

    #[test]
    fn not_openpgp_bytes_are_named_so() {
        assert!(matches!(
            binary_problem(b"\x00\x01junk"),
            Problem::NotOpenPgp
        ));
        assert!(matches!(
            parse_public(b"-----BEGIN PGP MESSAGE-----\n\n-----END PGP MESSAGE-----\n"),
            Err(Problem::OtherBlock(b)) if b == "PGP MESSAGE"
        ));
    }
}
