//! OpenPGP decryption of mailbox exports: in-process, streaming, integrity-checked before the output is made final.
//!
//! Google Workspace mailbox exports arrive as OpenPGP files (often gigabytes) encrypted by GnuPG
//! or by Google to the domain's RSA key: a public-key encrypted session key, then SEIPD v1 with
//! an MDC (or GnuPG's OCB "AEAD" packet, which GnuPG 2.4 writes to keys that advertise AEAD, or
//! RFC 9580's SEIPD v2), holding ZIP, ZLIB, BZip2 or uncompressed data, with partial body lengths
//! when the encrypter streamed, binary or ASCII-armored. This module turns one such file into a
//! plaintext file.
//!
//! # Why rPGP (`pgp` 0.21) and not Sequoia (`sequoia-openpgp`)
//!
//! Both are complete, maintained OpenPGP implementations in Rust. rPGP is pure Rust (RustCrypto
//! primitives: `rsa`, `aes`, `sha1`, `flate2`, `bzip2`), MIT/Apache-2.0 like this project, and
//! builds with nothing but cargo. `sequoia-openpgp` 2.x defaults to the `crypto-nettle` backend:
//! `nettle-sys` runs bindgen (libclang) and pkg-config against the system's Nettle/GMP, so every
//! developer machine and CI image would need `nettle-dev`, `libclang` and friends (its other
//! backends are OpenSSL, Botan and CNG, all native). Its pure-Rust `crypto-rust` backend has to be
//! opted into with `allow-experimental-crypto` and `allow-variable-time-crypto`, which its own
//! README says is not recommended for general use; it is also LGPL-2.0-or-later and a much larger
//! build. rPGP decrypts GnuPG's output faster than `gpg` in a few MB of memory, which is what
//! this step needs (`cargo bench --bench decrypt`, 2-core machine: 256 MiB in 0.80 s against
//! gpg's 1.26 s, 1 GiB in 2.9 s against 4.0 s, peak RSS under 8 MiB). rPGP's RSA is the
//! RustCrypto `rsa` crate, whose decryption is not constant-time (the "Marvin" advisory); that
//! matters to an oracle an attacker can time many times over, not to an auditor decrypting
//! files locally.
//!
//! # Streaming and integrity
//!
//! rPGP's default SEIPD v1 mode checks the MDC before releasing any plaintext by buffering the
//! whole message, and refuses messages over 1 GiB. So this module uses
//! [`Seipdv1ReadMode::Streaming`] and provides the guarantee itself:
//!
//! 1. [`DecryptionKey::load`] removes the passphrase protection of every secret (sub)key up front
//!    (`SecretKey::remove_password`), so a wrong passphrase is reported as such and not as rPGP's
//!    "missing key" halfway through a message.
//! 2. [`decrypt_file`] parses the outer message (`Message::from_bytes`, through
//!    `armor::Dearmor` when the file starts with text), finds the PKESK addressed to one of the
//!    key's components and decrypts the session key itself (`pgp::types::DecryptionKey::decrypt`
//!    on the unlocked component), then calls `Edata::decrypt_with_options` in streaming mode.
//!    The decrypted packet stream is read through a guard reader (which remembers the first
//!    error the encryption layer reports, e.g. `Error::MdcError`) and handed to a second
//!    `Message::from_bytes` that unwraps the compressed and literal layers
//!    (`Message::decompress`, `Read`).
//! 3. Plaintext is written, and SHA-256 hashed, into a temporary file created with mode 0600 in
//!    the output directory. Only after the encryption layer has been read to its end — which is
//!    when rPGP compares the MDC (or the final AEAD tag) — and nothing unexpected follows it, is
//!    the file synced and renamed onto the final path. On any error the temporary file is
//!    removed (`tempfile::NamedTempFile` on drop), so no plaintext is left behind.
//!
//! When the inner layers fail first (a flipped ciphertext bit usually breaks decompression long
//! before the MDC is reached), the encryption layer is still read to its end so that the error
//! can say whether the file was tampered with (MDC mismatch), truncated, or authentic but
//! malformed.
//! The price of streaming mode is that unauthenticated plaintext reaches rPGP's decompressor and
//! packet parser (never a final file); their errors are therefore reported without their text,
//! and a panic inside rPGP is caught and reported as a malformed file.
//!
//! Three threads share the work, connected by bounded channels: the calling thread reads the file
//! and decrypts (armor, AES, MDC) and is the one that learns the integrity verdict; a second one
//! decompresses and unwraps the literal data; a helper hashes the input (SHA-256, a copy of each
//! read) and the plaintext, writes the plaintext and syncs it. Memory stays constant: rPGP's
//! readers buffer 8 KiB per layer (4 MiB chunks for GnuPG's AEAD), and at most 8 chunks of
//! 64 KiB (decrypted) and 8 of 256 KiB (plaintext) are queued.
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use pgp::armor::{BlockType, Dearmor, DearmorOptions};
use pgp::composed::{
    DecryptionOptions, Deserializable, Edata, Esk, Message, PlainSessionKey, SignedPublicKey,
    SignedSecretKey,
};
use pgp::packet::PublicKeyEncryptedSessionKey;
use pgp::types::{
    DecryptionKey as PgpDecryptionKey, EskType, KeyDetails, Password, PkeskVersion, S2kParams,
    SecretParams, Seipdv1ReadMode, StringToKey,
};
use sha2::{Digest, Sha256};

/// Largest secret key file we are willing to read (a transferable secret key is a few KB).
const MAX_KEY_FILE: u64 = 4 * 1024 * 1024;
/// Read buffer for the encrypted input.
const INPUT_BUFFER: usize = 64 * 1024;
/// Plaintext is handed to the helper thread in chunks of this size.
const OUTPUT_CHUNK: usize = 256 * 1024;
/// Chunks queued for the helper thread at most (bounds memory: a few MiB).
const HELPER_QUEUE: usize = 8;
/// Decrypted packet-stream chunks handed from the decrypting to the decompressing thread.
const PIPELINE_CHUNK: usize = 64 * 1024;
/// Chunks queued between the decrypting and the decompressing thread at most.
const PIPELINE_QUEUE: usize = 8;
/// Largest armor header or footer accepted (rPGP's default is 1 GiB, buffered in memory).
const ARMOR_HEADER_LIMIT: usize = 1024 * 1024;
/// Compressed packets nested deeper than this are refused.
const MAX_COMPRESSION_LAYERS: usize = 4;

/// Why a file could not be decrypted. Every message names the file and says what to do;
/// none contains a passphrase, key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    /// The secret key file is unreadable or does not hold an OpenPGP secret key.
    #[error("cannot use the secret key file {}: {message}", path.display())]
    KeyFile { path: PathBuf, message: String },
    /// The secret key is passphrase-protected and no passphrase was given.
    #[error(
        "the secret key in {} is protected by a passphrase, but none was given: set \
         AUDIT_PGP_PASSPHRASE (or the variable named with --passphrase-env)",
        path.display()
    )]
    PassphraseRequired { path: PathBuf },
    /// The passphrase does not unlock the secret key.
    #[error(
        "wrong passphrase for the secret key in {}: check AUDIT_PGP_PASSPHRASE (or the variable \
         named with --passphrase-env)",
        path.display()
    )]
    WrongPassphrase { path: PathBuf },
    /// The message is not encrypted to any key in the secret key file.
    #[error(
        "{} is encrypted to key(s) {}, but the secret key file holds {}: was it encrypted to \
         this domain's key? Use the secret key it was encrypted to",
        input.display(),
        list(recipients),
        list(available)
    )]
    NoMatchingKey {
        input: PathBuf,
        recipients: Vec<String>,
        available: Vec<String>,
    },
    /// The integrity check failed: the ciphertext was modified or corrupted.
    #[error(
        "{} failed the OpenPGP integrity check: it was tampered with or corrupted, and no \
         output was kept; download it again",
        input.display()
    )]
    Integrity { input: PathBuf },
    /// The file ends before the encrypted message does.
    #[error(
        "{} is truncated (the file ends before the encrypted message does) and no output was \
         kept; download it again",
        input.display()
    )]
    Truncated { input: PathBuf },
    /// Not an encrypted OpenPGP message, or one this module cannot read.
    #[error("{} cannot be decrypted: {message}", input.display())]
    Malformed { input: PathBuf, message: String },
    /// Reading the input or writing the output failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// The secret key(s) of a key file, with passphrase protection removed in memory, ready to
/// decrypt. A file may hold several transferable secret keys (`gpg --export-secret-keys`
/// without arguments exports all); each is used.
///
/// rPGP zeroizes the secret key material when this is dropped. `Debug` prints the file and
/// the key ids only.
pub struct DecryptionKey {
    keys: Vec<SignedSecretKey>,
    path: PathBuf,
    /// Unlocks, only if a message is addressed to one, the components that are not marked for
    /// encryption and so were left locked by `load` (each unlock runs the S2K, about 0.1 s).
    password: Option<Password>,
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
        } else if bytes.iter().all(|b| b.is_ascii_whitespace()) {
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
    fn components(&self) -> Vec<(&dyn PgpDecryptionKey, bool)> {
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
    fn session_key(
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

fn for_encryption(signatures: &[pgp::packet::Signature]) -> bool {
    signatures.iter().any(|sig| {
        let flags = sig.key_flags();
        flags.encrypt_comms() || flags.encrypt_storage()
    })
}

fn primary_for_encryption(key: &SignedSecretKey) -> bool {
    for_encryption(&key.details.direct_signatures)
        || key
            .details
            .users
            .iter()
            .any(|user| for_encryption(&user.signatures))
}

fn subkey_for_encryption(sub: &pgp::composed::SignedSecretSubKey) -> bool {
    for_encryption(&sub.signatures)
}

/// Whether a secret (sub)key's material is usable as is, locked by a passphrase, or absent.
enum Lock {
    Plain,
    Locked,
    Stub,
}

fn unlock_state(params: &SecretParams) -> Lock {
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
struct Unlocker<'a> {
    path: &'a Path,
    password: Option<&'a Password>,
    /// Components that can decrypt: unlocked, or locked but with a passphrase to unlock later.
    usable: usize,
    protected: bool,
    /// Locked components left for later.
    deferred: usize,
}

impl Unlocker<'_> {
    /// `now`: unlock this component now (checking the passphrase) rather than on demand.
    fn apply(
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
fn parse_secret_keys(bytes: &[u8]) -> Result<Vec<SignedSecretKey>, String> {
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

fn hex_upper(bytes: &[u8]) -> String {
    crate::durable::to_hex(bytes).to_ascii_uppercase()
}

fn key_id_hex(key: &dyn KeyDetails) -> String {
    hex_upper(key.legacy_key_id().as_ref())
}

fn recipient_hex(pkesk: &PublicKeyEncryptedSessionKey) -> String {
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
fn addressed_to(pkesk: &PublicKeyEncryptedSessionKey, key: &dyn PgpDecryptionKey) -> Option<bool> {
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

/// The result of decrypting one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DecryptedFile {
    /// The encrypted input.
    pub input: PathBuf,
    /// The plaintext output (final path).
    pub path: PathBuf,
    /// Plaintext size.
    pub bytes: u64,
    /// SHA-256 of the plaintext, lower-case hex.
    pub sha256: String,
    /// Size of the encrypted input.
    pub input_bytes: u64,
    /// SHA-256 of the encrypted input, lower-case hex.
    pub input_sha256: String,
}

/// The output file name for an input: strips `.gpg`/`.pgp`/`.asc`/`.enc` (repeatedly, any
/// case), then ensures a `.mbox` extension (`"export-0.gpg"` → `"export-0.mbox"`).
pub fn output_name(input: &Path) -> String {
    const SUFFIXES: [&str; 4] = [".gpg", ".pgp", ".asc", ".enc"];
    let mut name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    loop {
        let lower = name.to_ascii_lowercase();
        match SUFFIXES.iter().find(|s| lower.ends_with(*s)) {
            Some(suffix) => name.truncate(name.len() - suffix.len()),
            None => break,
        }
    }
    if name.is_empty() || name == "." || name == ".." {
        name = "decrypted".to_string();
    }
    if !name.to_ascii_lowercase().ends_with(".mbox") {
        name.push_str(".mbox");
    }
    name
}

/// Removes temporary plaintext files of `output` (`.NAME.XXXXXX.partial`) that a crashed
/// process left behind; returns how many. Only the run that owns `output` may call this.
pub fn remove_stale_temps(output: &Path) -> usize {
    let Some(name) = output.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return 0;
    };
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&prefix) && n.ends_with(".partial")
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Decrypts `input` into `output` (final path) through a temp file beside it; synchronous
/// (callers use `spawn_blocking`). An existing `output` is replaced atomically, and only once
/// the whole message has decrypted and passed its integrity check.
pub fn decrypt_file(
    key: &DecryptionKey,
    input: &Path,
    output: &Path,
) -> Result<DecryptedFile, DecryptError> {
    // rPGP's readers panic on some states they consider impossible; never let that (or any
    // other panic) escape as a crash. The temp file is removed by its destructor on unwind.
    match catch_unwind(AssertUnwindSafe(|| decrypt_file_inner(key, input, output))) {
        Ok(result) => result,
        Err(_) => Err(DecryptError::Malformed {
            input: input.to_path_buf(),
            message: "the OpenPGP reader failed on unexpected data (the file is probably \
                      corrupt); download it again"
                .to_string(),
        }),
    }
}

fn decrypt_file_inner(
    key: &DecryptionKey,
    input: &Path,
    output: &Path,
) -> Result<DecryptedFile, DecryptError> {
    let file = File::open(input).map_err(|source| DecryptError::Io {
        path: input.to_path_buf(),
        source,
    })?;
    // Hashing both streams and writing the output happen on a helper thread, so that the
    // decrypting thread only decrypts and decompresses.
    let (temp, hashed) = std::thread::scope(|scope| {
        let (jobs, queue) = mpsc::sync_channel::<Job>(HELPER_QUEUE);
        let helper = scope.spawn(move || helper_main(queue));
        let decrypted = decrypt_stream(key, input, output, file, jobs);
        // `jobs` and every clone of it are gone once `decrypt_stream` returns.
        let hashed = helper.join();
        (decrypted, hashed)
    });
    // A write error stops the helper, which makes the decrypting side fail too: report the
    // cause (e.g. a full disk), not the consequence.
    let hashed = hashed.map_err(|_| DecryptError::Io {
        path: output.to_path_buf(),
        source: io::Error::other("the output writer thread failed"),
    })?;
    if let Some(source) = hashed.write_error {
        return Err(DecryptError::Io {
            path: output.to_path_buf(),
            source,
        });
    }
    let temp = temp?;
    temp.persist(output).map_err(|e| DecryptError::Io {
        path: output.to_path_buf(),
        source: e.error,
    })?;
    // Make the rename durable too.
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::durable::sync_dir(dir);
    }
    tracing::debug!(
        input = %input.display(),
        output = %output.display(),
        bytes = hashed.output_bytes,
        input_bytes = hashed.input_bytes,
        "decrypted"
    );
    Ok(DecryptedFile {
        input: input.to_path_buf(),
        path: output.to_path_buf(),
        bytes: hashed.output_bytes,
        sha256: hashed.output_sha256,
        input_bytes: hashed.input_bytes,
        input_sha256: hashed.input_sha256,
    })
}

/// Decrypts the opened `file`, sending input and output bytes to the helper through `jobs`.
/// Returns the temp file holding the plaintext, once it has passed the integrity check.
fn decrypt_stream(
    key: &DecryptionKey,
    input: &Path,
    output: &Path,
    file: File,
    jobs: SyncSender<Job>,
) -> Result<tempfile::NamedTempFile, DecryptError> {
    let input_io = |source| DecryptError::Io {
        path: input.to_path_buf(),
        source,
    };
    let eof = Arc::new(AtomicBool::new(false));
    let mut raw = BufReader::with_capacity(
        INPUT_BUFFER,
        HashingReader {
            inner: file,
            jobs: jobs.clone(),
            eof: Arc::clone(&eof),
        },
    );
    let ctx = Ctx {
        key,
        input,
        output,
        eof: &eof,
        jobs,
    };

    let first = raw.fill_buf().map_err(input_io)?.first().copied();
    let temp = match first {
        None => return Err(ctx.malformed("the file is empty; download it again".to_string())),
        Some(byte) if byte & 0x80 != 0 => ctx.run(&mut raw)?,
        Some(_) => {
            let mut dearmor = Dearmor::with_options(
                &mut raw,
                DearmorOptions::new().set_limit(ARMOR_HEADER_LIMIT),
            );
            if dearmor.read_header().is_err() {
                return Err(ctx.malformed(
                    "it is neither binary OpenPGP data nor an ASCII-armored \"BEGIN PGP \
                     MESSAGE\" block; is it an encrypted export?"
                        .to_string(),
                ));
            }
            match dearmor.typ {
                Some(BlockType::Message | BlockType::MultiPartMessage(..) | BlockType::File) => {}
                Some(other) => {
                    return Err(ctx.malformed(format!(
                        "it is an armored {other}, not an encrypted message; is it the right file?"
                    )))
                }
                None => {
                    return Err(ctx.malformed("the armor header is unreadable".to_string()));
                }
            }
            let reader = BufReader::with_capacity(INPUT_BUFFER, Guard::new(dearmor));
            ctx.run(reader)?
        }
    };
    // Hash whatever follows the message (e.g. text after an armor footer).
    io::copy(&mut raw, &mut io::sink()).map_err(input_io)?;
    Ok(temp)
}

/// Work for the helper thread.
enum Job {
    /// Bytes read from the input file, to hash.
    Input(Vec<u8>),
    /// The temp file that plaintext goes to.
    Output(File),
    /// Plaintext, to hash and write.
    Plain(Vec<u8>),
}

/// What the helper thread did.
struct Hashed {
    input_bytes: u64,
    input_sha256: String,
    output_bytes: u64,
    output_sha256: String,
    /// The first error writing or syncing the output.
    write_error: Option<io::Error>,
}

/// Hashes the input, hashes and writes the plaintext, and syncs the output file at the end.
fn helper_main(queue: Receiver<Job>) -> Hashed {
    let mut input = Sha256::new();
    let mut input_bytes = 0u64;
    let mut plain = Sha256::new();
    let mut output_bytes = 0u64;
    let mut file: Option<File> = None;
    let mut write_error = None;
    for job in queue {
        match job {
            Job::Input(buf) => {
                input.update(&buf);
                input_bytes += buf.len() as u64;
            }
            Job::Output(f) => file = Some(f),
            Job::Plain(buf) => {
                plain.update(&buf);
                output_bytes += buf.len() as u64;
                let result = match file.as_mut() {
                    Some(f) => f.write_all(&buf),
                    None => Err(io::Error::other("no output file")),
                };
                if let Err(e) = result {
                    // Stop taking work: the decrypting thread notices and gives up.
                    write_error = Some(e);
                    break;
                }
                // Crash tests: part of the plaintext is in the temp file, none renamed.
                crate::failpoint::hit("decrypt-mid");
            }
        }
    }
    if let (Some(f), None) = (file.as_ref(), write_error.as_ref()) {
        write_error = f.sync_all().err();
    }
    Hashed {
        input_bytes,
        input_sha256: crate::durable::to_hex(&input.finalize()),
        output_bytes,
        output_sha256: crate::durable::to_hex(&plain.finalize()),
        write_error,
    }
}

struct Ctx<'k> {
    key: &'k DecryptionKey,
    input: &'k Path,
    output: &'k Path,
    /// Set once the input file has been read to its end.
    eof: &'k AtomicBool,
    /// To the helper thread.
    jobs: SyncSender<Job>,
}

impl Ctx<'_> {
    fn malformed(&self, message: String) -> DecryptError {
        DecryptError::Malformed {
            input: self.input.to_path_buf(),
            message,
        }
    }

    fn at_eof(&self) -> bool {
        self.eof.load(Ordering::Relaxed)
    }

    /// An error in the outer (ciphertext) structure.
    fn outer_error(&self, what: &str, err: impl fmt::Display) -> DecryptError {
        if self.at_eof() {
            DecryptError::Truncated {
                input: self.input.to_path_buf(),
            }
        } else {
            self.malformed(format!("{what}: {err}; download it again"))
        }
    }

    /// An error reported by the encryption layer (or below it) while streaming.
    fn stream_error(&self, failure: &Failure) -> DecryptError {
        if failure.integrity {
            DecryptError::Integrity {
                input: self.input.to_path_buf(),
            }
        } else if failure.kind == io::ErrorKind::UnexpectedEof || self.at_eof() {
            DecryptError::Truncated {
                input: self.input.to_path_buf(),
            }
        } else {
            self.malformed(format!(
                "the encrypted data could not be read ({}); download it again",
                failure.text
            ))
        }
    }

    /// Decrypts the OpenPGP message in `src` (binary packets) into a temp file.
    fn run<R: BufRead + fmt::Debug + Send>(
        &self,
        mut src: R,
    ) -> Result<tempfile::NamedTempFile, DecryptError> {
        if let Err(e) = src.fill_buf() {
            return Err(self.outer_error("its armored content is unreadable", e));
        }
        check_first_packet(&mut src).map_err(|m| self.malformed(m))?;
        let message = Message::from_bytes(src)
            .map_err(|e| self.outer_error("its OpenPGP packets are invalid", e))?;
        let Message::Encrypted { esk, mut edata, .. } = message else {
            return Err(self.malformed(
                "it is an OpenPGP message but not an encrypted one; is it the right file?"
                    .to_string(),
            ));
        };
        if matches!(edata, Edata::SymEncryptedData { .. }) {
            return Err(self.malformed(
                "it uses the obsolete Symmetrically Encrypted Data packet, which has no \
                 integrity protection; ask for it to be encrypted again with a current OpenPGP \
                 implementation"
                    .to_string(),
            ));
        }
        let pkesks: Vec<&PublicKeyEncryptedSessionKey> = esk
            .iter()
            .filter_map(|e| match e {
                Esk::PublicKeyEncryptedSessionKey(p) => Some(p),
                Esk::SymKeyEncryptedSessionKey(_) => None,
            })
            .collect();
        if pkesks.is_empty() {
            return Err(self.malformed(
                "it is encrypted with a password, not to a key; auditflow decrypts exports \
                 encrypted to the domain's OpenPGP key"
                    .to_string(),
            ));
        }
        let session_key = self.key.session_key(self.input, &pkesks)?;
        let options = DecryptionOptions::new()
            .set_seipdv1_read_mode(Seipdv1ReadMode::Streaming)
            .enable_gnupg_aead();
        edata
            .decrypt_with_options(&session_key, options)
            .map_err(|e| self.malformed(format!("unsupported encryption ({e})")))?;
        drop(session_key);

        let temp = self.temp_file()?;
        let temp_io = |source| DecryptError::Io {
            path: temp.path().to_path_buf(),
            source,
        };
        let for_helper = temp.as_file().try_clone().map_err(temp_io)?;
        self.jobs
            .send(Job::Output(for_helper))
            .map_err(|_| temp_io(helper_stopped()))?;
        // Pipeline: this thread decrypts (file, armor, AES, MDC) and hands the decrypted packet
        // stream to a second thread that decompresses it and passes the plaintext on to the
        // helper. The encryption layer is always read to its end here, so its verdict (MDC,
        // truncation) is known even when the inner layers fail first.
        let mut guard = Guard::new(&mut edata);
        let (chunks, chunk_queue) = mpsc::sync_channel::<Result<Vec<u8>, ()>>(PIPELINE_QUEUE);
        let jobs = self.jobs.clone();
        let inner = std::thread::scope(|scope| {
            let inner = scope.spawn(move || {
                copy_plaintext(
                    ChannelReader {
                        queue: chunk_queue,
                        current: Vec::new(),
                        pos: 0,
                        failed: false,
                    },
                    &jobs,
                )
            });
            pump(&mut guard, &chunks);
            drop(chunks);
            inner.join()
        });
        // The encryption layer's verdict comes first: tampered or truncated input explains
        // whatever the inner layers made of it.
        if let Some(failure) = guard.failure() {
            return Err(self.stream_error(failure));
        }
        match inner {
            Ok(Ok(())) => {}
            // The helper stopped: its error is reported once it has been joined.
            Ok(Err(Copy::Write)) => return Err(temp_io(helper_stopped())),
            Ok(Err(Copy::Inner(message))) => {
                return Err(self.malformed(format!(
                    "it decrypted and passed the integrity check, but {message}; ask the sender \
                     to export it again"
                )))
            }
            Err(_) => {
                return Err(self.malformed(
                    "the OpenPGP reader failed on the decrypted data; ask the sender to export \
                     it again"
                        .to_string(),
                ))
            }
        }
        drop(guard);
        // Nothing but the end of the input may follow the encrypted data packet.
        let mut rest = [0u8; 1];
        match edata.get_mut().get_mut().read(&mut rest) {
            Ok(0) => {}
            Ok(_) => {
                return Err(self.malformed(
                    "unexpected data follows the encrypted message; download it again".to_string(),
                ))
            }
            Err(e) => return Err(self.outer_error("the end of the file is invalid", e)),
        }

        // The helper writes, syncs and hashes what it has been sent before the caller renames.
        Ok(temp)
    }

    /// Creates the temp file (mode 0600) in the output's directory, so the rename is atomic.
    fn temp_file(&self) -> Result<tempfile::NamedTempFile, DecryptError> {
        let dir = match self.output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = self
            .output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "decrypted".to_string());
        let prefix = format!(".{name}.");
        crate::durable::private_temp_file(dir, &prefix, ".partial").map_err(|source| {
            DecryptError::Io {
                path: dir.to_path_buf(),
                source,
            }
        })
    }
}

/// Checks that the first packet can start an encrypted message, to tell "not OpenPGP at all"
/// and "a key, not a message" apart from a damaged message.
fn check_first_packet<R: BufRead>(src: &mut R) -> Result<(), String> {
    let buf = src
        .fill_buf()
        .map_err(|e| format!("its armored content is unreadable ({e}); download it again"))?;
    let Some(&ctb) = buf.first() else {
        return Err("the armored block is empty; download it again".to_string());
    };
    if ctb & 0x80 == 0 {
        return Err(
            "it is not OpenPGP data (no packet header at the start); is it an encrypted export?"
                .to_string(),
        );
    }
    let tag = if ctb & 0x40 != 0 {
        ctb & 0x3f
    } else {
        (ctb >> 2) & 0x0f
    };
    match tag {
        // PKESK, SKESK, SED, marker, SEIPD, GnuPG AEAD, padding
        1 | 3 | 9 | 10 | 18 | 20 | 21 => Ok(()),
        5 | 6 | 7 | 14 => {
            Err("it is an OpenPGP key, not an encrypted message; is it the right file?".to_string())
        }
        2 | 4 | 8 | 11 => Err(
            "it is an OpenPGP message but not an encrypted one; is it the right file?".to_string(),
        ),
        _ => Err(
            "it is not an OpenPGP encrypted message (unexpected data at the start); is it an \
             encrypted export?"
                .to_string(),
        ),
    }
}

enum Copy {
    /// The helper thread no longer takes plaintext.
    Write,
    /// The decrypted content is not a valid message; a description without plaintext.
    Inner(String),
}

fn helper_stopped() -> io::Error {
    io::Error::other("the output writer stopped")
}

/// Unwraps the compressed and literal layers of the decrypted packet stream and sends the
/// plaintext to the helper thread in chunks of [`OUTPUT_CHUNK`] bytes.
fn copy_plaintext<R: BufRead + fmt::Debug + Send>(
    src: R,
    jobs: &SyncSender<Job>,
) -> Result<(), Copy> {
    // Error texts of the inner layers are not passed on: they could quote decrypted bytes.
    let mut msg = Message::from_bytes(src)
        .map_err(|_| Copy::Inner("its content is not an OpenPGP message".to_string()))?;
    for _ in 0..MAX_COMPRESSION_LAYERS {
        if !msg.is_compressed() {
            break;
        }
        msg = msg
            .decompress()
            .map_err(|_| Copy::Inner("its compressed data is invalid".to_string()))?;
    }
    if msg.is_compressed() {
        return Err(Copy::Inner(
            "its compressed data is nested too deeply".to_string(),
        ));
    }
    if msg.is_encrypted() {
        return Err(Copy::Inner(
            "it holds another encrypted message inside, which is not supported".to_string(),
        ));
    }
    if msg.is_signed() {
        tracing::debug!("the message is signed; the signature is not verified");
    }
    loop {
        let mut chunk = vec![0u8; OUTPUT_CHUNK];
        let mut filled = 0;
        while filled < chunk.len() {
            let Some(rest) = chunk.get_mut(filled..) else {
                break;
            };
            match msg.read(rest) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    return Err(Copy::Inner(
                        "its compressed or literal data is invalid".to_string(),
                    ))
                }
            }
        }
        if filled == 0 {
            return Ok(());
        }
        let last = filled < chunk.len();
        chunk.truncate(filled);
        jobs.send(Job::Plain(chunk)).map_err(|_| Copy::Write)?;
        if last {
            // `read` returned 0: the message, and the checks rPGP does at its end, are done.
            return Ok(());
        }
    }
}

/// Reads the encryption layer to its end (or first error), sending the decrypted bytes to
/// `chunks` while someone takes them, and an `Err(())` marker if it fails.
fn pump<R: Read>(src: &mut Guard<R>, chunks: &SyncSender<Result<Vec<u8>, ()>>) {
    let mut receiver_alive = true;
    loop {
        let mut chunk = vec![0u8; PIPELINE_CHUNK];
        let mut filled = 0;
        let mut failed = false;
        while filled < chunk.len() {
            let Some(rest) = chunk.get_mut(filled..) else {
                break;
            };
            match src.read(rest) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            // The guard has recorded the error; stop the inner layers at once.
            let _ = chunks.send(Err(()));
            return;
        }
        if filled == 0 {
            return;
        }
        let last = filled < chunk.len();
        chunk.truncate(filled);
        // Once the inner layers have given up, keep reading anyway: the MDC is at the end.
        if receiver_alive && chunks.send(Ok(chunk)).is_err() {
            receiver_alive = false;
        }
        if last {
            // A short chunk means `read` returned 0: the layer is done (and its MDC checked).
            return;
        }
    }
}

/// The decrypted packet stream, as received from [`pump`] on the other thread.
struct ChannelReader {
    queue: Receiver<Result<Vec<u8>, ()>>,
    current: Vec<u8>,
    pos: usize,
    failed: bool,
}

impl fmt::Debug for ChannelReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelReader").finish_non_exhaustive()
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.failed {
            return Err(io::Error::other("the encrypted data could not be read"));
        }
        if self.pos >= self.current.len() {
            match self.queue.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Ok(Err(())) => {
                    self.failed = true;
                    return Err(io::Error::other("the encrypted data could not be read"));
                }
                // The sender is gone: the end of the stream.
                Err(_) => {
                    self.current = Vec::new();
                    self.pos = 0;
                }
            }
        }
        Ok(self.current.get(self.pos..).unwrap_or_default())
    }

    fn consume(&mut self, amt: usize) {
        self.pos = self.pos.saturating_add(amt).min(self.current.len());
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), available.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.consume(n);
        Ok(n)
    }
}

/// Reads the input file, sending a copy of every byte to the helper thread to hash, and noting
/// when it has reached EOF.
struct HashingReader {
    inner: File,
    jobs: SyncSender<Job>,
    eof: Arc<AtomicBool>,
}

impl fmt::Debug for HashingReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashingReader").finish_non_exhaustive()
    }
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if !buf.is_empty() {
                self.eof.store(true, Ordering::Relaxed);
            }
            return Ok(0);
        }
        let data = buf.get(..n).unwrap_or_default().to_vec();
        if self.jobs.send(Job::Input(data)).is_err() {
            // Only when the helper stopped after an output error, which is reported instead.
            return Err(helper_stopped());
        }
        Ok(n)
    }
}

/// What the first error seen by a [`Guard`] was.
#[derive(Debug, Clone)]
struct Failure {
    kind: io::ErrorKind,
    /// An MDC mismatch or an AEAD tag failure.
    integrity: bool,
    text: String,
}

/// Passes a reader through, remembering the first error and never touching the inner reader
/// after it: rPGP's readers may panic when used again after an error, and the layers above
/// replace the precise error (e.g. the MDC mismatch) with a vaguer one of their own.
struct Guard<R> {
    inner: R,
    failure: Option<Failure>,
}

impl<R> Guard<R> {
    fn new(inner: R) -> Self {
        Guard {
            inner,
            failure: None,
        }
    }

    fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }
}

fn record(failure: &mut Option<Failure>, err: &io::Error) {
    if failure.is_none() {
        *failure = Some(Failure {
            kind: err.kind(),
            integrity: is_integrity_error(err),
            text: err.to_string(),
        });
    }
}

fn replay(failure: &Failure) -> io::Error {
    io::Error::new(failure.kind, failure.text.clone())
}

impl<R> fmt::Debug for Guard<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &self.failure {
            return Err(replay(f));
        }
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                record(&mut self.failure, e);
            }
        })
    }
}

impl<R: BufRead> BufRead for Guard<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let Guard { inner, failure } = self;
        if let Some(f) = failure {
            return Err(replay(f));
        }
        match inner.fill_buf() {
            Ok(buf) => Ok(buf),
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    record(failure, &e);
                }
                Err(e)
            }
        }
    }

    fn consume(&mut self, amt: usize) {
        if self.failure.is_none() {
            self.inner.consume(amt);
        }
    }
}

/// Whether an error from the encryption layer is an integrity failure: rPGP's MDC mismatch
/// (`Error::MdcError`) or an AEAD authentication failure, possibly wrapped.
fn is_integrity_error(err: &io::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = match err.get_ref() {
        Some(inner) => Some(inner),
        None => return false,
    };
    let mut depth = 0;
    while let Some(e) = current {
        depth += 1;
        if depth > 16 {
            return false;
        }
        if let Some(pe) = e.downcast_ref::<pgp::errors::Error>() {
            match pe {
                pgp::errors::Error::MdcError | pgp::errors::Error::Aead { .. } => return true,
                pgp::errors::Error::IO { source, .. } => return is_integrity_error(source),
                _ => {}
            }
        }
        if e.downcast_ref::<pgp::crypto::aead::Error>().is_some() {
            return true;
        }
        if let Some(io_err) = e.downcast_ref::<io::Error>() {
            return is_integrity_error(io_err);
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_results_can_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<DecryptionKey>();
        send_sync::<DecryptedFile>();
        send_sync::<DecryptError>();
    }

    #[test]
    fn output_names() {
        let cases = [
            ("export-0.gpg", "export-0.mbox"),
            ("/data/in/export-1.pgp", "export-1.mbox"),
            ("export-2.mbox.gpg", "export-2.mbox"),
            ("EXPORT-3.GPG", "EXPORT-3.mbox"),
            ("export-4.asc", "export-4.mbox"),
            ("export-5.enc", "export-5.mbox"),
            ("export-6.mbox.gpg.asc", "export-6.mbox"),
            ("export-7", "export-7.mbox"),
            ("export-8.tar.gpg", "export-8.tar.mbox"),
            ("export-9.MBOX", "export-9.MBOX"),
            (".gpg", "decrypted.mbox"),
            ("/", "decrypted.mbox"),
            ("", "decrypted.mbox"),
        ];
        for (input, expected) in cases {
            assert_eq!(output_name(Path::new(input)), expected, "{input}");
        }
    }

    #[test]
    fn first_packet_classification() {
        assert!(check_first_packet(&mut &[0x85u8, 0x01][..]).is_ok()); // old-format PKESK
        assert!(check_first_packet(&mut &[0xc1u8, 0x01][..]).is_ok()); // new-format PKESK
        assert!(check_first_packet(&mut &[0xd2u8, 0x01][..]).is_ok()); // SEIPD
        let key = check_first_packet(&mut &[0x95u8, 0x01][..]).unwrap_err();
        assert!(key.contains("key"), "{key}");
        let literal = check_first_packet(&mut &[0xcbu8, 0x01][..]).unwrap_err();
        assert!(literal.contains("not an encrypted"), "{literal}");
        assert!(check_first_packet(&mut &b"From x"[..]).is_err());
        assert!(check_first_packet(&mut &[][..]).is_err());
    }

    #[test]
    fn integrity_errors_are_recognised_through_wrapping() {
        let mdc = io::Error::other(pgp::errors::Error::MdcError);
        assert!(is_integrity_error(&mdc));
        let wrapped = io::Error::other(pgp::errors::Error::from(io::Error::other(
            pgp::errors::Error::MdcError,
        )));
        assert!(is_integrity_error(&wrapped));
        assert!(!is_integrity_error(&io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "eof"
        )));
        assert!(!is_integrity_error(&io::Error::other("other")));
    }

    #[test]
    fn guard_remembers_first_error_and_stops() {
        struct Failing(u32);
        impl Read for Failing {
            fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
                self.0 += 1;
                Err(io::Error::other(pgp::errors::Error::MdcError))
            }
        }
        let mut guard = Guard::new(BufReader::new(Failing(0)));
        let mut buf = [0u8; 4];
        assert!(guard.read(&mut buf).is_err());
        assert!(guard.fill_buf().is_err());
        guard.consume(3);
        let failure = guard.failure().cloned().unwrap();
        assert!(failure.integrity);
        assert_eq!(
            guard.inner.get_ref().0,
            1,
            "inner reader used after its error"
        );
    }

    #[test]
    fn errors_name_the_file_and_the_remedy() {
        let e = DecryptError::NoMatchingKey {
            input: PathBuf::from("x.gpg"),
            recipients: vec!["AAAAAAAAAAAAAAAA".into()],
            available: vec!["BBBBBBBBBBBBBBBB".into(), "CCCCCCCCCCCCCCCC".into()],
        };
        let text = e.to_string();
        assert!(
            text.contains("x.gpg") && text.contains("AAAAAAAAAAAAAAAA"),
            "{text}"
        );
        assert!(
            text.contains("BBBBBBBBBBBBBBBB, CCCCCCCCCCCCCCCC"),
            "{text}"
        );
        assert!(text.contains("this domain's key"), "{text}");
        let e = DecryptError::WrongPassphrase {
            path: PathBuf::from("k.asc"),
        };
        assert!(e.to_string().contains("AUDIT_PGP_PASSPHRASE"));
        let e = DecryptError::Integrity {
            input: PathBuf::from("x.gpg"),
        };
        assert!(e.to_string().contains("tampered") && e.to_string().contains("download it again"));
    }
}
