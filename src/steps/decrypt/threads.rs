//! The pipeline threads around the decryptor: input hashing, decompression, plaintext writing.
use super::*;

/// Work for the helper thread.
pub(super) enum Job {
    /// The temp file that plaintext goes to.
    Output(File),
    /// Plaintext, to hash and write.
    Plain(Vec<u8>),
}

/// What the helper thread did.
pub(super) struct Hashed {
    pub(super) output_bytes: u64,
    pub(super) output_sha256: crate::durable::Sha256Digest,
    /// The first error writing or syncing the output.
    pub(super) write_error: Option<io::Error>,
}

/// Hashes and writes the plaintext, and syncs the output file at the end. Sets `stopped` when
/// it gives up on a write error, which stops the reading of the input.
pub(super) fn helper_main(queue: Receiver<Job>, stopped: &AtomicBool) -> Hashed {
    let mut plain = Sha256::new();
    let mut output_bytes = 0u64;
    let mut file: Option<File> = None;
    let mut flusher: Option<Flusher> = None;
    let mut write_error = None;
    for job in queue {
        match job {
            Job::Output(f) => {
                flusher = Flusher::start(&f);
                file = Some(f);
            }
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
                    stopped.store(true, Ordering::Relaxed);
                    break;
                }
                if let Some(flusher) = flusher.as_mut() {
                    flusher.written(buf.len());
                }
                // Crash tests: part of the plaintext is in the temp file, none renamed.
                crate::failpoint::hit("decrypt-mid");
            }
        }
    }
    // The flusher shares the file description: an error it saw is not reported again by the
    // final sync, so it counts as this file's write error.
    let flush_error = flusher.and_then(Flusher::finish);
    if write_error.is_none() {
        write_error = flush_error;
    }
    if let (Some(f), None) = (file.as_ref(), write_error.as_ref()) {
        write_error = f.sync_all().err();
    }
    Hashed {
        output_bytes,
        output_sha256: crate::durable::Sha256Digest::from_bytes(plain.finalize().into()),
        write_error,
    }
}

/// Starts writing the plaintext back to disk while it is being decrypted, so that the final
/// `sync_all` waits for the last few MiB instead of the whole file (on the benchmark machine,
/// 256 MiB took 0.2-0.3 s to write back after the last byte). A thread of its own calls
/// `sync_data` every [`FLUSH_EVERY`] bytes written; the writer never waits for it (a request
/// made while it is busy is merged into the next one).
pub(super) struct Flusher {
    requests: SyncSender<()>,
    thread: std::thread::JoinHandle<Option<io::Error>>,
    unflushed: usize,
}

impl Flusher {
    /// `None` if the file cannot be shared or the thread not started: the final sync does it all.
    pub(super) fn start(file: &File) -> Option<Flusher> {
        let file = file.try_clone().ok()?;
        let (requests, queue) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("decrypt-flush".to_string())
            .spawn(move || {
                for () in queue {
                    if let Err(e) = file.sync_data() {
                        return Some(e);
                    }
                }
                None
            })
            .ok()?;
        Some(Flusher {
            requests,
            thread,
            unflushed: 0,
        })
    }

    /// Counts `n` bytes written, asking for a flush every [`FLUSH_EVERY`].
    pub(super) fn written(&mut self, n: usize) {
        self.unflushed += n;
        if self.unflushed >= FLUSH_EVERY {
            self.unflushed = 0;
            // Full: a flush is pending already and will include these bytes.
            let _ = self.requests.try_send(());
        }
    }

    /// Stops the thread; returns the first error a flush reported.
    pub(super) fn finish(self) -> Option<io::Error> {
        drop(self.requests);
        self.thread
            .join()
            .unwrap_or_else(|_| Some(io::Error::other("the output flusher thread failed")))
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

/// Reports the bytes of the input read, at most every [`crate::steps::PROGRESS_EVERY`].
pub(super) struct InputProgress<'p> {
    on: OnProgress<'p>,
    size: u64,
    last: std::time::Instant,
}

impl<'p> InputProgress<'p> {
    pub(super) fn new(on: OnProgress<'p>, size: u64) -> Self {
        InputProgress {
            on,
            size,
            last: std::time::Instant::now(),
        }
    }

    /// `read` bytes read so far; `done`: the end of the input (always reported).
    fn update(&mut self, read: u64, done: bool) {
        if done || self.last.elapsed() >= crate::steps::PROGRESS_EVERY {
            // A file that grew while it was read: the bar's end moves with it.
            (self.on)(read, self.size.max(read));
            self.last = std::time::Instant::now();
        }
    }
}

/// Reads the input file, hashing every byte on the way (on the thread that reads it, while
/// it is in cache), noting when it has reached EOF, and reporting how far it has got.
pub(super) struct HashingReader<'p> {
    pub(super) inner: File,
    pub(super) sha256: Sha256,
    pub(super) bytes: u64,
    pub(super) eof: Arc<AtomicBool>,
    /// Set by the helper thread when it stopped on a write error: stop reading at once.
    pub(super) writer_stopped: Arc<AtomicBool>,
    pub(super) progress: InputProgress<'p>,
}

impl HashingReader<'_> {
    /// Size and SHA-256 of what has been read.
    pub(super) fn digest(self) -> (u64, crate::durable::Sha256Digest) {
        (
            self.bytes,
            crate::durable::Sha256Digest::from_bytes(self.sha256.finalize().into()),
        )
    }
}

impl fmt::Debug for HashingReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashingReader").finish_non_exhaustive()
    }
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.writer_stopped.load(Ordering::Relaxed) {
            // The output error is reported instead.
            return Err(helper_stopped());
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            if !buf.is_empty() && !self.eof.swap(true, Ordering::Relaxed) {
                self.progress.update(self.bytes, true);
            }
            return Ok(0);
        }
        self.sha256.update(buf.get(..n).unwrap_or_default());
        self.bytes += n as u64;
        self.progress.update(self.bytes, false);
        Ok(n)
    }
}
