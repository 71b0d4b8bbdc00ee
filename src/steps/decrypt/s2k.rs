//! Unlocking GnuPG-protected secret keys fast: the iterated-and-salted S2K hashed in big blocks.
//!
//! rPGP's S2K feeds its hasher `salt || passphrase` (a few dozen bytes) at a time through a boxed
//! collision-detecting SHA-1, so GnuPG's usual count (tens of MB, calibrated to ~0.1 s in gpg)
//! took about 0.25 s of every `auditflow decrypt` run on the benchmark machine. The same bytes
//! hashed 64 KiB at a time with the `sha1`/`sha2` crates (SHA-NI where the CPU has it) take a
//! tenth of that. Only the case GnuPG writes is handled here (CFB with an iterated-and-salted
//! SHA-1 or SHA-2 S2K and the SHA-1 checksum, v4 keys); anything else, and any failure (a wrong
//! passphrase included), goes to rPGP's `remove_password`, which stays the authority.
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{SecretKey, SecretSubkey};
use pgp::types::{
    EncryptedSecretParams, KeyDetails, KeyVersion, Password, PlainSecretParams, S2kParams,
    SecretParams, StringToKey,
};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

/// Bytes handed to the hasher per call.
const S2K_BLOCK: usize = 64 * 1024;

/// Removes the passphrase protection of a primary key (what `SecretKey::remove_password` does).
pub(super) fn unlock_primary(key: &mut SecretKey, pw: &Password) -> pgp::errors::Result<()> {
    if let SecretParams::Encrypted(enc) = key.secret_params() {
        if let Some(plain) = plain_params(enc, key, pw) {
            *key = SecretKey::new(key.public_key().clone(), SecretParams::Plain(plain))?;
            return Ok(());
        }
    }
    key.remove_password(pw)
}

/// Removes the passphrase protection of a subkey (what `SecretSubkey::remove_password` does).
pub(super) fn unlock_subkey(key: &mut SecretSubkey, pw: &Password) -> pgp::errors::Result<()> {
    if let SecretParams::Encrypted(enc) = key.secret_params() {
        if let Some(plain) = plain_params(enc, key, pw) {
            *key = SecretSubkey::new(key.public_key().clone(), SecretParams::Plain(plain))?;
            return Ok(());
        }
    }
    key.remove_password(pw)
}

/// The decrypted key material, when the protection is the GnuPG kind and the passphrase is right.
fn plain_params(
    enc: &EncryptedSecretParams,
    details: &impl KeyDetails,
    pw: &Password,
) -> Option<PlainSecretParams> {
    let S2kParams::Cfb {
        sym_alg,
        s2k:
            StringToKey::IteratedAndSalted {
                hash_alg,
                salt,
                count,
            },
        iv,
    } = enc.string_to_key_params()
    else {
        return None;
    };
    // Version 6 keys have their own rules (no SHA-1 S2K): rPGP applies them.
    if details.version() != KeyVersion::V4 {
        return None;
    }
    let mut key = derive_key(*hash_alg, salt, *count, &pw.read(), sym_alg.key_size())?;
    let mut plaintext = enc.data().to_vec();
    let decrypted = sym_alg.decrypt_with_iv_regular(&key, iv, &mut plaintext);
    key.fill(0);
    let plain = decrypted.ok().and_then(|()| {
        let body_len = plaintext.len().checked_sub(20)?;
        let (body, checksum) = plaintext.split_at(body_len);
        if Sha1::digest(body).as_slice() != checksum {
            return None;
        }
        PlainSecretParams::try_from_reader_no_checksum(
            body,
            details.version(),
            details.algorithm(),
            details.public_params(),
        )
        .ok()
    });
    // Best effort: do not leave the key material in freed memory.
    plaintext.fill(0);
    std::hint::black_box(&plaintext);
    plain
}

/// RFC 9580 section 3.7.1.3: `key_size` bytes from hashing the first `count` bytes of
/// `salt || passphrase` repeated (once more per further digest, after as many zero bytes).
pub(super) fn derive_key(
    hash_alg: HashAlgorithm,
    salt: &[u8; 8],
    coded_count: u8,
    passphrase: &[u8],
    key_size: usize,
) -> Option<Vec<u8>> {
    match hash_alg {
        HashAlgorithm::Sha1 => Some(derive::<Sha1>(salt, coded_count, passphrase, key_size)),
        HashAlgorithm::Sha256 => Some(derive::<Sha256>(salt, coded_count, passphrase, key_size)),
        HashAlgorithm::Sha512 => Some(derive::<Sha512>(salt, coded_count, passphrase, key_size)),
        _ => None,
    }
}

fn derive<D: Digest>(
    salt: &[u8; 8],
    coded_count: u8,
    passphrase: &[u8],
    key_size: usize,
) -> Vec<u8> {
    let mut unit = Vec::with_capacity(salt.len() + passphrase.len());
    unit.extend_from_slice(salt);
    unit.extend_from_slice(passphrase);
    let decoded = (16usize + usize::from(coded_count & 15)) << (usize::from(coded_count >> 4) + 6);
    let count = decoded.max(unit.len());
    // Whole repetitions only, so that every block starts at the start of `unit`.
    let mut block = unit.repeat((S2K_BLOCK / unit.len()).max(1));
    let mut key = Vec::with_capacity(key_size + 64);
    let mut round = 0;
    while key.len() < key_size {
        let mut hasher = D::new();
        hasher.update(vec![0u8; round]);
        let mut left = count;
        while left > 0 {
            let n = left.min(block.len());
            hasher.update(&block[..n]);
            left -= n;
        }
        key.extend_from_slice(&hasher.finalize());
        round += 1;
    }
    key.truncate(key_size);
    unit.fill(0);
    block.fill(0);
    std::hint::black_box((&unit, &block));
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast derivation gives rPGP's key for every hash, count, passphrase and key size.
    #[test]
    fn derive_key_matches_rpgp() {
        let salt = [1, 2, 3, 4, 5, 6, 7, 8];
        for hash_alg in [
            HashAlgorithm::Sha1,
            HashAlgorithm::Sha256,
            HashAlgorithm::Sha512,
        ] {
            for count in [0u8, 1, 96, 0x60 + 7, 200] {
                for passphrase in ["", "x", "bench passphrase", &"long".repeat(40)] {
                    for key_size in [16, 24, 32] {
                        let ours =
                            derive_key(hash_alg, &salt, count, passphrase.as_bytes(), key_size)
                                .expect("supported hash");
                        let s2k = StringToKey::IteratedAndSalted {
                            hash_alg,
                            salt,
                            count,
                        };
                        let theirs = s2k
                            .derive_key(passphrase.as_bytes(), key_size)
                            .expect("rPGP derives");
                        assert_eq!(
                            ours,
                            theirs.as_ref(),
                            "{hash_alg:?} {count} {passphrase:?} {key_size}"
                        );
                    }
                }
            }
        }
    }
}
