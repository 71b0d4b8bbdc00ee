//! Loading a secret key file: parsing, unlocking with the passphrase, matching recipients.
use super::*;

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
        let file = File::open(path).map_err(io_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
        let parsed = if bytes.len() as u64 > MAX_KEY_FILE {
            Err(key_file(
                "the file is larger than 4 MiB, which no secret key is; is this the right file?",
            ))
        } else if bytes.iter().all(u8::is_ascii_whitespace) {
            Err(key_file(
                "the file is empty; export the key with `gpg --export-secret-keys --armor`",
            ))
        } else {
            parse_secret_keys(&bytes).map_err(|message| key_file(&message))
        };
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
            unlocker.apply(lock, now, |pw| key.primary_key.remove_password(pw))?;
            for sub in &mut key.secret_subkeys {
                let now = !any_for_encryption || subkey_for_encryption(sub);
                let lock = unlock_state(sub.key.secret_params());
                unlocker.apply(lock, now, |pw| sub.key.remove_password(pw))?;
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

pub(super) fn for_encryption(signatures: &[pgp::packet::Signature]) -> bool {
    signatures.iter().any(|sig| {
        let flags = sig.key_flags();
        flags.encrypt_comms() || flags.encrypt_storage()
    })
}

pub(super) fn primary_for_encryption(key: &SignedSecretKey) -> bool {
    for_encryption(&key.details.direct_signatures)
        || key
            .details
            .users
            .iter()
            .any(|user| for_encryption(&user.signatures))
}

pub(super) fn subkey_for_encryption(sub: &pgp::composed::SignedSecretSubKey) -> bool {
    for_encryption(&sub.signatures)
}

/// Whether a secret (sub)key's material is usable as is, locked by a passphrase, or absent.
pub(super) enum Lock {
    Plain,
    Locked,
    Stub,
}

pub(super) fn unlock_state(params: &SecretParams) -> Lock {
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

/// Parses the transferable secret keys in a file, armored or binary; the error text never
/// quotes the file.
pub(super) fn parse_secret_keys(bytes: &[u8]) -> Result<Vec<SignedSecretKey>, String> {
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

pub(super) fn hex_upper(bytes: &[u8]) -> String {
    crate::durable::to_hex(bytes).to_ascii_uppercase()
}

pub(super) fn key_id_hex(key: &dyn KeyDetails) -> String {
    hex_upper(key.legacy_key_id().as_ref())
}

pub(super) fn recipient_hex(pkesk: &PublicKeyEncryptedSessionKey) -> String {
    if let Ok(id) = pkesk.id() {
        if id.is_wildcard() {
            return "anonymous recipient".to_string();
        }
        return hex_upper(id.as_ref());
    }
    match pkesk.fingerprint() {
        Ok(Some(fp)) => hex_upper(fp.as_bytes()),
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
