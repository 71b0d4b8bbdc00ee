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
//! this step needs (`cargo bench --bench decrypt`, 2-core machine, 256 MiB of mbox text: 0.79 s against
//! gpg's 1.47 s; near-incompressible: 0.84x gpg; peak RSS under 12 MiB; see docs/performance.md). rPGP's RSA is the
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
//! Three threads share the work, connected by bounded channels: the calling thread reads the file,
//! hashes it (SHA-256) and decrypts (armor, AES, MDC), and is the one that learns the integrity
//! verdict; a second one decompresses and unwraps the literal data; a helper hashes the plaintext,
//! writes it and syncs it. A fourth starts the plaintext's writeback every 16 MiB (`sync_data`),
//! so that the final sync has only the tail to wait for. Memory stays constant: rPGP's readers
//! buffer 8 KiB per layer (4 MiB chunks for GnuPG's AEAD), and at most 8 chunks of 64 KiB
//! (decrypted) and 8 of 256 KiB (plaintext) are queued. Passphrase-protected keys are unlocked
//! with a block-wise S2K (`s2k.rs`) in the GnuPG case.
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use pgp::armor::{BlockType, Dearmor, DearmorOptions};
use pgp::composed::{DecryptionOptions, Edata, Esk, Message, PlainSessionKey, SignedSecretKey};
use pgp::packet::PublicKeyEncryptedSessionKey;
use pgp::types::{
    DecryptionKey as PgpDecryptionKey, EskType, Password, PkeskVersion, Seipdv1ReadMode,
};
use sha2::{Digest, Sha256};

/// Plaintext written between two early flushes (see [`threads::Flusher`]).
const FLUSH_EVERY: usize = 16 * 1024 * 1024;
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
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The secret key is passphrase-protected and no passphrase was given.
    #[error(
        "the secret key in {} is protected by a passphrase, but none was given: set \
         AUDIT_PGP_PASSPHRASE (or the variable named with --passphrase-env)",
        path.display()
    )]
    PassphraseRequired {
        /// The key file.
        path: PathBuf,
    },
    /// The passphrase does not unlock the secret key.
    #[error(
        "wrong passphrase for the secret key in {}: check AUDIT_PGP_PASSPHRASE (or the variable \
         named with --passphrase-env)",
        path.display()
    )]
    WrongPassphrase {
        /// The key file.
        path: PathBuf,
    },
    /// The message is not encrypted to any key in the secret key file.
    #[error(
        "{} is encrypted to key(s) {}, but the secret key file holds {}: was it encrypted to \
         this domain's key? Use the secret key it was encrypted to",
        input.display(),
        list(recipients),
        list(available)
    )]
    NoMatchingKey {
        /// The encrypted file.
        input: PathBuf,
        /// Key ids (hex) the message is encrypted to.
        recipients: Vec<String>,
        /// Key ids (hex) of the secret keys and subkeys in the key file.
        available: Vec<String>,
    },
    /// The integrity check failed: the ciphertext was modified or corrupted.
    #[error(
        "{} failed the OpenPGP integrity check: it was tampered with or corrupted, and no \
         output was kept; download it again",
        input.display()
    )]
    Integrity {
        /// The encrypted file.
        input: PathBuf,
    },
    /// The file ends before the encrypted message does.
    #[error(
        "{} is truncated (the file ends before the encrypted message does) and no output was \
         kept; download it again",
        input.display()
    )]
    Truncated {
        /// The encrypted file.
        input: PathBuf,
    },
    /// Not an encrypted OpenPGP message, or one this module cannot read.
    #[error("{} cannot be decrypted: {message}", input.display())]
    Malformed {
        /// The file.
        input: PathBuf,
        /// What the OpenPGP parser found wrong.
        message: String,
    },
    /// Reading the input or writing the output failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file read or written.
        path: PathBuf,
        /// The OS error.
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

mod guard;
mod key;
mod s2k;
mod stream;
#[cfg(test)]
mod tests;
mod threads;

use guard::*;
pub use key::DecryptionKey;
use stream::*;
use threads::*;

/// The result of decrypting one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DecryptedFile {
    /// The encrypted input.
    pub input: PathBuf,
    /// The plaintext output (final path).
    pub path: PathBuf,
    /// Plaintext size.
    pub bytes: u64,
    /// SHA-256 of the plaintext.
    pub sha256: crate::durable::Sha256Digest,
    /// Size of the encrypted input.
    pub input_bytes: u64,
    /// SHA-256 of the encrypted input.
    pub input_sha256: crate::durable::Sha256Digest,
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

/// Told how far a decrypt has got: `(bytes of the encrypted input read, its size)`. Called
/// on the decrypting thread about every [`crate::steps::PROGRESS_EVERY`] and once at the
/// end of the input: keep it cheap.
pub type OnProgress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Decrypts `input` into `output` (final path) through a temp file beside it; synchronous
/// (callers use `spawn_blocking`). An existing `output` is replaced atomically, and only once
/// the whole message has decrypted and passed its integrity check.
pub fn decrypt_file(
    key: &DecryptionKey,
    input: &Path,
    output: &Path,
) -> Result<DecryptedFile, DecryptError> {
    decrypt_file_reporting(key, input, output, &|_, _| {})
}

/// [`decrypt_file`], telling `progress` how much of the input has been read (for a byte bar:
/// the input is read at the pace the plaintext is written).
pub fn decrypt_file_reporting(
    key: &DecryptionKey,
    input: &Path,
    output: &Path,
    progress: OnProgress<'_>,
) -> Result<DecryptedFile, DecryptError> {
    // rPGP's readers panic on some states they consider impossible; never let that (or any
    // other panic) escape as a crash. The temp file is removed by its destructor on unwind.
    let inner = || decrypt_file_inner(key, (input, output), progress);
    match catch_unwind(AssertUnwindSafe(inner)) {
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
    (input, output): (&Path, &Path),
    progress: OnProgress<'_>,
) -> Result<DecryptedFile, DecryptError> {
    let input_io = |source| DecryptError::Io {
        path: input.to_path_buf(),
        source,
    };
    let file = File::open(input).map_err(input_io)?;
    let size = file.metadata().map_err(input_io)?.len();
    let progress = InputProgress::new(progress, size);
    // Hashing and writing the plaintext happen on a helper thread, so that the decompressing
    // thread only decompresses.
    let writer_stopped = Arc::new(AtomicBool::new(false));
    let (temp, hashed) = std::thread::scope(|scope| {
        let (jobs, queue) = mpsc::sync_channel::<Job>(HELPER_QUEUE);
        let stopped = Arc::clone(&writer_stopped);
        let helper = scope.spawn(move || helper_main(queue, &stopped));
        let decrypted =
            decrypt_stream(key, (input, output), (file, progress), jobs, writer_stopped);
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
    let (temp, (input_bytes, input_sha256)) = temp?;
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
        input_bytes,
        "decrypted"
    );
    Ok(DecryptedFile {
        input: input.to_path_buf(),
        path: output.to_path_buf(),
        bytes: hashed.output_bytes,
        sha256: hashed.output_sha256,
        input_bytes,
        input_sha256,
    })
}
