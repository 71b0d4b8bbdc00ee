//! Streaming decryption of one opened file: session key, encryption layer, integrity verdict.
use super::*;

/// Decrypts the opened `file`, sending the plaintext to the helper through `jobs`, and hashes
/// the input. Returns the temp file holding the plaintext, once it has passed the integrity
/// check, with the input's size and SHA-256.
pub(super) fn decrypt_stream(
    key: &DecryptionKey,
    (input, output): (&Path, &Path),
    (file, progress): (File, InputProgress<'_>),
    jobs: SyncSender<Job>,
    writer_stopped: Arc<AtomicBool>,
) -> Result<(tempfile::NamedTempFile, (u64, crate::durable::Sha256Digest)), DecryptError> {
    let input_io = |source| DecryptError::Io {
        path: input.to_path_buf(),
        source,
    };
    let eof = Arc::new(AtomicBool::new(false));
    let mut raw = BufReader::with_capacity(
        INPUT_BUFFER,
        HashingReader {
            inner: file,
            sha256: Sha256::new(),
            bytes: 0,
            eof: Arc::clone(&eof),
            writer_stopped,
            progress,
        },
    );
    let ctx = Decryption {
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
    Ok((temp, raw.into_inner().digest()))
}

/// One file being decrypted: the key, its paths, and the channel to the helper thread.
pub(super) struct Decryption<'k> {
    pub(super) key: &'k DecryptionKey,
    pub(super) input: &'k Path,
    pub(super) output: &'k Path,
    /// Set once the input file has been read to its end.
    pub(super) eof: &'k AtomicBool,
    /// To the helper thread.
    pub(super) jobs: SyncSender<Job>,
}

impl Decryption<'_> {
    pub(super) fn malformed(&self, message: String) -> DecryptError {
        DecryptError::Malformed {
            input: self.input.to_path_buf(),
            message,
        }
    }

    pub(super) fn at_eof(&self) -> bool {
        self.eof.load(Ordering::Relaxed)
    }

    /// An error in the outer (ciphertext) structure.
    pub(super) fn outer_error(&self, what: &str, err: impl fmt::Display) -> DecryptError {
        if self.at_eof() {
            DecryptError::Truncated {
                input: self.input.to_path_buf(),
            }
        } else {
            self.malformed(format!("{what}: {err}; download it again"))
        }
    }

    /// An error reported by the encryption layer (or below it) while streaming.
    pub(super) fn stream_error(&self, failure: &FirstError) -> DecryptError {
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
    pub(super) fn run<R: BufRead + fmt::Debug + Send>(
        &self,
        src: R,
    ) -> Result<tempfile::NamedTempFile, DecryptError> {
        let mut edata = self.open_encrypted(src)?;
        let temp = self.temp_file()?;
        let temp_io = |source| DecryptError::Io {
            path: temp.path().to_path_buf(),
            source,
        };
        let for_helper = temp.as_file().try_clone().map_err(temp_io)?;
        self.jobs
            .send(Job::Output(for_helper))
            .map_err(|_| temp_io(helper_stopped()))?;
        self.decrypt_to_helper(&mut edata, &temp_io)?;
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

    /// Reads the message's packets up to its encrypted data, checks that it is encrypted to a
    /// key with integrity protection, and opens that data with the session key.
    fn open_encrypted<'a, R: BufRead + fmt::Debug + Send + 'a>(
        &self,
        mut src: R,
    ) -> Result<Edata<'a>, DecryptError> {
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
        Ok(edata)
    }

    /// Streams the decrypted packets to the helper (through a decompressing thread) and
    /// gives the encryption layer's verdict first, then the inner layers'.
    fn decrypt_to_helper(
        &self,
        edata: &mut Edata<'_>,
        temp_io: &dyn Fn(io::Error) -> DecryptError,
    ) -> Result<(), DecryptError> {
        // Pipeline: this thread decrypts (file, armor, AES, MDC) and hands the decrypted packet
        // stream to a second thread that decompresses it and passes the plaintext on to the
        // helper. The encryption layer is always read to its end here, so its verdict (MDC,
        // truncation) is known even when the inner layers fail first.
        let mut guard = Guard::new(edata);
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
            Ok(Ok(())) => Ok(()),
            // The helper stopped: its error is reported once it has been joined.
            Ok(Err(CopyError::Write)) => Err(temp_io(helper_stopped())),
            Ok(Err(CopyError::Inner(message))) => Err(self.malformed(format!(
                "it decrypted and passed the integrity check, but {message}; ask the sender \
                 to export it again"
            ))),
            Err(_) => Err(self.malformed(
                "the OpenPGP reader failed on the decrypted data; ask the sender to export \
                 it again"
                    .to_string(),
            )),
        }
    }

    /// Creates the temp file (mode 0600) in the output's directory, so the rename is atomic.
    pub(super) fn temp_file(&self) -> Result<tempfile::NamedTempFile, DecryptError> {
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
pub(super) fn check_first_packet<R: BufRead>(src: &mut R) -> Result<(), String> {
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
