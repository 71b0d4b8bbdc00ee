//! The pipeline threads around the decryptor: input hashing, decompression, plaintext writing.
use super::*;

/// Work for the helper thread.
pub(super) enum Job {
    /// Bytes read from the input file, to hash.
    Input(Vec<u8>),
    /// The temp file that plaintext goes to.
    Output(File),
    /// Plaintext, to hash and write.
    Plain(Vec<u8>),
}

/// What the helper thread did.
pub(super) struct Hashed {
    pub(super) input_bytes: u64,
    pub(super) input_sha256: String,
    pub(super) output_bytes: u64,
    pub(super) output_sha256: String,
    /// The first error writing or syncing the output.
    pub(super) write_error: Option<io::Error>,
}

/// Hashes the input, hashes and writes the plaintext, and syncs the output file at the end.
pub(super) fn helper_main(queue: Receiver<Job>) -> Hashed {
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

/// Why unwrapping the plaintext stopped.
pub(super) enum CopyError {
    /// The helper thread no longer takes plaintext.
    Write,
    /// The decrypted content is not a valid message; a description without plaintext.
    Inner(String),
}

pub(super) fn helper_stopped() -> io::Error {
    io::Error::other("the output writer stopped")
}

/// Unwraps the compressed and literal layers of the decrypted packet stream and sends the
/// plaintext to the helper thread in chunks of [`OUTPUT_CHUNK`] bytes.
pub(super) fn copy_plaintext<R: BufRead + fmt::Debug + Send>(
    src: R,
    jobs: &SyncSender<Job>,
) -> Result<(), CopyError> {
    // Error texts of the inner layers are not passed on: they could quote decrypted bytes.
    let mut msg = Message::from_bytes(src)
        .map_err(|_| CopyError::Inner("its content is not an OpenPGP message".to_string()))?;
    for _ in 0..MAX_COMPRESSION_LAYERS {
        if !msg.is_compressed() {
            break;
        }
        msg = msg
            .decompress()
            .map_err(|_| CopyError::Inner("its compressed data is invalid".to_string()))?;
    }
    if msg.is_compressed() {
        return Err(CopyError::Inner(
            "its compressed data is nested too deeply".to_string(),
        ));
    }
    if msg.is_encrypted() {
        return Err(CopyError::Inner(
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
                    return Err(CopyError::Inner(
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
        jobs.send(Job::Plain(chunk)).map_err(|_| CopyError::Write)?;
        if last {
            // `read` returned 0: the message, and the checks rPGP does at its end, are done.
            return Ok(());
        }
    }
}

/// Reads the encryption layer to its end (or first error), sending the decrypted bytes to
/// `chunks` while someone takes them, and an `Err(())` marker if it fails.
pub(super) fn pump<R: Read>(src: &mut Guard<R>, chunks: &SyncSender<Result<Vec<u8>, ()>>) {
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
pub(super) struct ChannelReader {
    pub(super) queue: Receiver<Result<Vec<u8>, ()>>,
    pub(super) current: Vec<u8>,
    pub(super) pos: usize,
    pub(super) failed: bool,
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
pub(super) struct HashingReader {
    pub(super) inner: File,
    pub(super) jobs: SyncSender<Job>,
    pub(super) eof: Arc<AtomicBool>,
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
