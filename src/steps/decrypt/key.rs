//! Loading a secret key file: parsing, unlocking with the passphrase, matching recipients.
use super::s2k;
use super::*;
use crate::openpgp::{
    key_id_hex, parse_secret_keys, primary_for_encryption, read_key_file, subkey_for_encryption,
    unlock_state, Lock, ReadKeyError,
};

/// The secret key(s) of a key file, with passphrase protection removed in memory, ready to
/// decrypt. A file may hold several transferable secret keys (`gpg --export-secret-keys`
/// without arguments exports all); each is used.
///
/// rPGP zeroizes the secret key material when this is dropped. `Debug` prints the file and
/// the key ids only.
pub struct DecryptionKey {
    pub(super) keys: Vec<SignedSecretKey>,
    pub(super) path: PathBuf,
    /// Unlocks, only if a message is addressed to one, the components that are not marked for
    /// encryption and so were left locked by `load` (each unlock runs the S2K, about 0.1 s).
    pub(super) password: Option<Password>,
}

impl fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptionKey")
            .field("path", &self.path)
            .field("key_ids", &self.key_ids())
            .finish_non_exhaustive()
    }
}

impl DecryptionKey {
    /// Loads an armored or binary secret key and checks the passphrase NOW (wrong →
    /// [`DecryptError::WrongPassphrase`], needed but absent → [`DecryptError::PassphraseRequired`]).
    pub fn load(path: &Path, passphrase: Option<&str>) -> Result<DecryptionKey, DecryptError> {
        let key_file = |message: &str| DecryptError::KeyFile {
            path: path.to_path_buf(),
            message: message.to_string(),
        };
        let io_err = |source| DecryptError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = read_key_file(path).map_err(|e| match e {
            ReadKeyError::Io(source) => io_err(source),
            ReadKeyError::TooLarge => key_file(
                "the file is larger than 4 MiB, which no secret key is; is this the right file?",
            ),
            ReadKeyError::Empty => key_file(
                "the file is empty; export the key with `gpg --export-secret-keys --armor`",
            ),
        })?;
        let parsed = parse_secret_keys(&bytes).map_err(|message| key_file(&message));
        // Best effort: do not leave an unprotected key's bytes in freed memory.
        bytes.fill(0);
        std::hint::black_box(&bytes);
        let mut keys = parsed?;

        // Unlock the components marked for encryption now (all of them if none is marked):
        // this checks the passphrase before any message is read. The others (typically the
        // signing primary key) stay locked unless a message is addressed to them.
        let any_for_encryption = keys.iter().any(|k| {
            primary_for_encryption(k) || k.secret_subkeys.iter().any(subkey_for_encryption)
        });
        let password = passphrase.map(Password::from);
        let mut unlocker = Unlocker {
            path,
            password: password.as_ref(),
            usable: 0,
            protected: false,
            deferred: 0,
        };
        for key in &mut keys {
            let now = !any_for_encryption || primary_for_encryption(key);
            let lock = unlock_state(key.primary_key.secret_params());
            unlocker.apply(lock, now, |pw| {
                s2k::unlock_primary(&mut key.primary_key, pw)
            })?;
            for sub in &mut key.secret_subkeys {
                let now = !any_for_encryption || subkey_for_encryption(sub);
                let lock = unlock_state(sub.key.secret_params());
                unlocker.apply(lock, now, |pw| s2k::unlock_subkey(&mut sub.key, pw))?;
            }
        }
        if unlocker.usable == 0 {
            return Err(key_file(
                "it holds no usable secret key material (only stubs, e.g. keys kept on a \
                 smartcard, or keys locked by a passphrase that was not given); export the \
                 secret keys with `gpg --export-secret-keys`",
            ));
        }
        if passphrase.is_some() && !unlocker.protected {
            tracing::debug!(path = %path.display(), "the secret key is not passphrase-protected; the passphrase was not needed");
        }
        let deferred = unlocker.deferred;
        let loaded = DecryptionKey {
            keys,
            path: path.to_path_buf(),
            password: if deferred > 0 { password } else { None },
        };
        tracing::debug!(path = %path.display(), key_ids = ?loaded.key_ids(), deferred, "secret key loaded");
        Ok(loaded)
    }

    /// Hex ids (16 upper-case digits, as GnuPG prints long key ids) of the primary key and
    /// subkeys, for messages.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for key in &self.keys {
            ids.push(key_id_hex(&key.primary_key));
            ids.extend(key.secret_subkeys.iter().map(|s| key_id_hex(&s.key)));
        }
        ids
    }

    /// The components that hold secret material, with whether it is still locked.
    pub(super) fn components(&self) -> Vec<(&dyn PgpDecryptionKey, bool)> {
        let mut out: Vec<(&dyn PgpDecryptionKey, bool)> = Vec::new();
        for key in &self.keys {
            let parts = std::iter::once((
                &key.primary_key as &dyn PgpDecryptionKey,
                unlock_state(key.primary_key.secret_params()),
            ))
            .chain(key.secret_subkeys.iter().map(|sub| {
                (
                    &sub.key as &dyn PgpDecryptionKey,
                    unlock_state(sub.key.secret_params()),
                )
            }));
            for (component, lock) in parts {
                match lock {
                    Lock::Plain => out.push((component, false)),
                    Lock::Locked if self.password.is_some() => out.push((component, true)),
                    Lock::Locked | Lock::Stub => {}
                }
            }
        }
        out
    }

    /// Finds the PKESK addressed to one of this key's components and decrypts the session key.
    pub(super) fn session_key(
        &self,
        input: &Path,
        pkesks: &[&PublicKeyEncryptedSessionKey],
    ) -> Result<PlainSessionKey, DecryptError> {
        let components = self.components();
        let empty = Password::empty();
        let mut addressed_but_failed = false;
        for pkesk in pkesks {
            let typ = match pkesk.version() {
                PkeskVersion::V3 => EskType::V3_4,
                PkeskVersion::V6 => EskType::V6,
                PkeskVersion::Other(_) => continue,
            };
            let Ok(values) = pkesk.values() else { continue };
            for (component, locked) in &components {
                let Some(explicit) = addressed_to(pkesk, *component) else {
                    continue;
                };
                let password = match (locked, self.password.as_ref()) {
                    (true, Some(pw)) => pw,
                    _ => &empty,
                };
                match component.decrypt(password, values, typ) {
                    Ok(Ok(session_key)) => return Ok(session_key),
                    Ok(Err(_)) => addressed_but_failed |= explicit,
                    // Unlocking a component that `load` left locked failed.
                    Err(_) if *locked && explicit => {
                        return Err(DecryptError::WrongPassphrase {
                            path: self.path.clone(),
                        })
                    }
                    Err(_) => addressed_but_failed |= explicit,
                }
            }
        }
        if addressed_but_failed {
            // The key id matched and the key is unlocked, yet the RSA decryption or the session
            // key checksum failed: the encrypted session key was modified.
            return Err(DecryptError::Integrity {
                input: input.to_path_buf(),
            });
        }
        Err(DecryptError::NoMatchingKey {
            input: input.to_path_buf(),
            recipients: pkesks.iter().map(|p| recipient_hex(p)).collect(),
            available: self.key_ids(),
        })
    }
}

/// Removes the passphrase protection of components, keeping count.
pub(super) struct Unlocker<'a> {
    pub(super) path: &'a Path,
    pub(super) password: Option<&'a Password>,
    /// Components that can decrypt: unlocked, or locked but with a passphrase to unlock later.
    pub(super) usable: usize,
    pub(super) protected: bool,
    /// Locked components left for later.
    pub(super) deferred: usize,
}

impl Unlocker<'_> {
    /// `now`: unlock this component now (checking the passphrase) rather than on demand.
    pub(super) fn apply(
        &mut self,
        lock: Lock,
        now: bool,
        remove_password: impl FnOnce(&Password) -> pgp::errors::Result<()>,
    ) -> Result<(), DecryptError> {
        match lock {
            Lock::Plain => self.usable += 1,
            Lock::Stub => {}
            Lock::Locked => {
                self.protected = true;
                let Some(pw) = self.password else {
                    if now {
                        return Err(DecryptError::PassphraseRequired {
                            path: self.path.to_path_buf(),
                        });
                    }
                    return Ok(());
                };
                if now {
                    // rPGP checks the SHA-1 (or AEAD tag, or 16-bit checksum) of the decrypted
                    // key material: a wrong passphrase fails here, before any message is read.
                    remove_password(pw).map_err(|_| DecryptError::WrongPassphrase {
                        path: self.path.to_path_buf(),
                    })?;
                } else {
                    self.deferred += 1;
                }
                self.usable += 1;
            }
        }
        Ok(())
    }
}

pub(super) fn recipient_hex(pkesk: &PublicKeyEncryptedSessionKey) -> String {
    if let Ok(id) = pkesk.id() {
        if id.is_wildcard() {
            return "anonymous recipient".to_string();
        }
        return hex::encode_upper(id);
    }
    match pkesk.fingerprint() {
        Ok(Some(fp)) => hex::encode_upper(fp.as_bytes()),
        Ok(None) => "anonymous recipient".to_string(),
        Err(_) => "unknown".to_string(),
    }
}

/// Whether `pkesk` may be for `key`: `Some(true)` if it names the key, `Some(false)` if it is
/// for an anonymous recipient (any key may try), `None` if it names another key.
pub(super) fn addressed_to(
    pkesk: &PublicKeyEncryptedSessionKey,
    key: &dyn PgpDecryptionKey,
) -> Option<bool> {
    if let Ok(id) = pkesk.id() {
        if id.is_wildcard() {
            return Some(false);
        }
        return (*id == key.legacy_key_id()).then_some(true);
    }
    match pkesk.fingerprint() {
        Ok(Some(fp)) => (*fp == key.fingerprint()).then_some(true),
        Ok(None) => Some(false),
        Err(_) => None,
    }
}
