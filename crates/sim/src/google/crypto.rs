//! OpenPGP for the simulated audit API: checking uploaded keys and encrypting export files to disk.
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use pgp::composed::{Deserializable, MessageBuilder, SignedPublicKey};
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::Signature;
use pgp::types::{CompressionAlgorithm, KeyDetails};

const ARMOR_HEADER: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";

/// Which component of the key the export files are encrypted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Primary,
    Subkey(usize),
}

/// An uploaded domain key, checked and ready to encrypt to.
#[derive(Debug)]
pub(super) struct RecipientKey {
    key: SignedPublicKey,
    target: Target,
    /// Fingerprint of the component that gets the session keys (hex).
    pub fingerprint: String,
}

fn is_rsa(alg: PublicKeyAlgorithm) -> bool {
    matches!(
        alg,
        PublicKeyAlgorithm::RSA | PublicKeyAlgorithm::RSAEncrypt
    )
}

/// Key flags of the newest signature that carries any, read as "may encrypt". Signatures without
/// a key-flags subpacket (old keys) leave the decision to the algorithm.
fn flags_allow_encryption(signatures: &[Signature]) -> bool {
    let newest = signatures
        .iter()
        .filter(|s| {
            let f = s.key_flags();
            f.certify()
                || f.sign()
                || f.encrypt_comms()
                || f.encrypt_storage()
                || f.authentication()
        })
        .max_by_key(|s| s.created().map(pgp::types::Timestamp::as_secs).unwrap_or(0));
    match newest {
        Some(sig) => {
            let f = sig.key_flags();
            f.encrypt_comms() || f.encrypt_storage()
        }
        None => true,
    }
}

/// Why an uploaded `publicKey` is refused (400); the text is Google-like advice.
#[derive(Debug, thiserror::Error)]
pub enum UploadedKeyError {
    /// Nothing uploaded.
    #[error("publicKey is empty")]
    Empty,
    /// Not base64.
    #[error("publicKey is not valid base64: {0}")]
    Base64(base64::DecodeError),
    /// Binary rather than armored.
    #[error(
        "the decoded publicKey is not US-ASCII text: upload the ASCII-armored key \
         (gpg --armor --export), base64-encoded"
    )]
    NotAscii,
    /// Armored, but not a public key block.
    #[error("the decoded publicKey does not start with '{ARMOR_HEADER}'")]
    NotPublicKeyBlock,
    /// Not a readable OpenPGP key.
    #[error("cannot read the OpenPGP public key: {0}")]
    Unreadable(pgp::errors::Error),
    /// Its binding signatures fail.
    #[error("the key's binding signatures do not verify: {0}")]
    Bindings(pgp::errors::Error),
    /// RSA, but no key may encrypt.
    #[error(
        "the RSA key has no encryption-capable key: enable the encrypt capability \
         (gpg --gen-key --expert, option 8)"
    )]
    NoEncryptionKey,
    /// Not RSA.
    #[error(
        "the key is not an RSA key (primary key algorithm {0:?}): Google needs an RSA key with \
         encryption enabled"
    )]
    NotRsa(PublicKeyAlgorithm),
}

/// Reads the `publicKey` property: base64 of an ASCII-armored OpenPGP public key, which must be
/// RSA with an encryption-capable (sub)key whose binding signatures verify.
pub(super) fn parse_uploaded_key(encoded: &str) -> Result<RecipientKey, UploadedKeyError> {
    let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Err(UploadedKeyError::Empty);
    }
    let lenient = GeneralPurpose::new(
        &STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let armored = lenient
        .decode(compact.as_bytes())
        .map_err(UploadedKeyError::Base64)?;
    if !armored.is_ascii() {
        return Err(UploadedKeyError::NotAscii);
    }
    let text = String::from_utf8_lossy(&armored);
    if !text.trim_start().starts_with(ARMOR_HEADER) {
        return Err(UploadedKeyError::NotPublicKeyBlock);
    }
    let (key, _headers) = SignedPublicKey::from_armor_single(armored.as_slice())
        .map_err(UploadedKeyError::Unreadable)?;
    key.verify_bindings().map_err(UploadedKeyError::Bindings)?;

    let primary_alg = key.primary_key.algorithm();
    let rsa_subkey = key
        .public_subkeys
        .iter()
        .position(|sk| is_rsa(sk.key.algorithm()) && flags_allow_encryption(&sk.signatures));
    let target = if let Some(i) = rsa_subkey {
        Target::Subkey(i)
    } else if is_rsa(primary_alg) {
        let self_sigs: Vec<Signature> = key
            .details
            .users
            .iter()
            .flat_map(|u| u.signatures.iter().cloned())
            .chain(key.details.direct_signatures.iter().cloned())
            .collect();
        if primary_alg == PublicKeyAlgorithm::RSA && !flags_allow_encryption(&self_sigs) {
            return Err(UploadedKeyError::NoEncryptionKey);
        }
        Target::Primary
    } else {
        return Err(UploadedKeyError::NotRsa(primary_alg));
    };
    let fingerprint = match target {
        Target::Primary => key.primary_key.fingerprint(),
        Target::Subkey(i) => key.public_subkeys[i].key.fingerprint(),
    };
    Ok(RecipientKey {
        fingerprint: format!("{fingerprint:X}"),
        key,
        target,
    })
}

/// Why an export file could not be encrypted to disk.
#[derive(Debug, thiserror::Error)]
pub(super) enum EncryptError {
    #[error("cannot create {}: {source}", .path.display())]
    Create {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encrypt the session key: {0}")]
    SessionKey(pgp::errors::Error),
    #[error("cannot encrypt to {}: {source}", .path.display())]
    Encrypt {
        path: std::path::PathBuf,
        source: pgp::errors::Error,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot sync {}: {source}", .path.display())]
    Sync {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Encrypts `plaintext` to `recipient` the way GnuPG does for Google: one PKESK, a SEIPD v1
/// packet (with MDC), AES-256, ZLIB compression, a binary literal packet, no armor. Streams to
/// `out` (buffered); nothing is held in memory but the current chunk.
pub(super) fn encrypt_to_file<R: Read>(
    recipient: &RecipientKey,
    plaintext: R,
    out: &Path,
) -> Result<(), EncryptError> {
    let path = || out.to_path_buf();
    let file = std::fs::File::create(out).map_err(|source| EncryptError::Create {
        path: path(),
        source,
    })?;
    let mut writer = BufWriter::with_capacity(256 * 1024, file);
    let mut rng = rand::thread_rng();
    let mut builder = MessageBuilder::from_reader("", plaintext);
    builder.compression(CompressionAlgorithm::ZLIB);
    let mut builder = builder.seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
    match recipient.target {
        Target::Primary => builder.encrypt_to_key(&mut rng, &recipient.key),
        Target::Subkey(i) => builder.encrypt_to_key(&mut rng, &recipient.key.public_subkeys[i]),
    }
    .map_err(EncryptError::SessionKey)?;
    builder
        .to_writer(&mut rng, &mut writer)
        .map_err(|source| EncryptError::Encrypt {
            path: path(),
            source,
        })?;
    writer.flush().map_err(|source| EncryptError::Write {
        path: path(),
        source,
    })?;
    writer
        .into_inner()
        .map_err(|e| EncryptError::Write {
            path: path(),
            source: e.into_error(),
        })?
        .sync_all()
        .map_err(|source| EncryptError::Sync {
            path: path(),
            source,
        })
}
