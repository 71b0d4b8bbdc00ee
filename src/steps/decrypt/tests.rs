//! Unit tests of the decrypt step's key loading, streaming and error reporting.
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
