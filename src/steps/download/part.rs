//! The `.part` writer: blocking threads that hash and append chunks from bounded channels.
//!
//! Hashing and disk writes run beside the network reads, each on its own thread (the bounded
//! channels are the only buffers, so memory stays bounded whatever the file size). Network
//! chunks are copied into recycled 256 KiB batches, so the threads are woken, and `write`
//! called, once per batch, and the steady state allocates nothing. When the length is known, a
//! batch is never made larger than what is still to come (a 16 KiB file takes 16 KiB, not 256).
//! The SHA-256 and MD5 states always cover exactly the bytes in the file: a resumed `.part` whose
//! prefix was never hashed in this process is re-hashed from disk before the new bytes.
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

/// The digests of a download kept while it streams: SHA-256 (always checked and recorded)
/// and MD5 (Cloud Storage's `md5Hash`), both over exactly the bytes in the `.part`.
#[derive(Clone, Default)]
pub(super) struct FileHasher {
    sha256: Sha256,
    md5: md5::Md5,
}

/// A finished [`FileHasher`].
pub(super) struct FileDigest {
    /// SHA-256 of the file.
    pub sha256: [u8; 32],
    /// MD5 of the file.
    pub md5: [u8; 16],
}

impl FileHasher {
    /// Hashes of nothing yet.
    pub(super) fn new() -> Self {
        Self::default()
    }

    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.md5.update(bytes);
    }

    /// Both digests of the bytes seen.
    pub(super) fn finalize(self) -> FileDigest {
        FileDigest {
            sha256: self.sha256.finalize().into(),
            md5: self.md5.finalize().into(),
        }
    }
}
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Batches queued for each thread; a batch is shared by both, so at most about
/// `(2 * QUEUE_BATCHES + 3) * BATCH_BYTES` (~8.8 MiB) is held whatever the file size.
const QUEUE_BATCHES: usize = 16;
/// Bytes gathered before a batch is handed to the threads.
const BATCH_BYTES: usize = 256 * 1024;
/// Spare batch buffers kept for reuse.
const POOL_BUFFERS: usize = 8;
/// Read buffer for re-hashing a resumed prefix.
const READ_BUFFER: usize = 1024 * 1024;

/// What the writer leaves behind: the open file, the hash of all of it, and its length.
pub(super) struct Written {
    pub file: File,
    pub hasher: FileHasher,
    pub len: u64,
}

type Batch = Arc<Vec<u8>>;
type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

pub(super) struct PartWriter {
    to_disk: mpsc::Sender<Batch>,
    to_hash: mpsc::Sender<Batch>,
    disk: JoinHandle<io::Result<(File, u64)>>,
    hash: JoinHandle<io::Result<FileHasher>>,
    batch: Vec<u8>,
    pool: Pool,
    /// Bytes still expected after those already queued, when the length is known.
    left: Option<u64>,
}

/// Capacity of a new batch: a full one, or what is still expected when that is less.
fn batch_capacity(left: Option<u64>) -> usize {
    left.map_or(BATCH_BYTES, |l| {
        usize::try_from(l).map_or(BATCH_BYTES, |l| l.min(BATCH_BYTES))
    })
}

impl PartWriter {
    /// Opens (or creates) `path`, cuts it to `offset` bytes and appends from there.
    ///
    /// `hasher` must cover bytes `0..offset`; `None` re-hashes them from the file first.
    /// `total`, the whole file's length when known, only sizes the buffers (more bytes are
    /// still accepted; the caller checks the length).
    /// Hashing and writing run on two threads fed the same batches, so each proceeds at
    /// its own pace (SHA-256 and page-cache copies cost about the same per byte).
    pub(super) fn start(
        path: PathBuf,
        offset: u64,
        hasher: Option<FileHasher>,
        total: Option<u64>,
    ) -> Self {
        let left = total.map(|t| t.saturating_sub(offset));
        let (to_disk, mut disk_rx) = mpsc::channel::<Batch>(QUEUE_BATCHES);
        let (to_hash, mut hash_rx) = mpsc::channel::<Batch>(QUEUE_BATCHES);
        let pool: Pool = Arc::default();
        let disk_path = path.clone();
        let disk_pool = pool.clone();
        let disk = tokio::task::spawn_blocking(move || {
            let mut file = open_part(&disk_path)?;
            let on_disk = file.metadata()?.len();
            if on_disk < offset {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the .part file shrank to {on_disk} bytes while {offset} were expected; another program changed it"),
                ));
            }
            if on_disk > offset {
                file.set_len(offset)?;
            }
            file.seek(SeekFrom::Start(offset))?;
            let mut len = offset;
            while let Some(batch) = disk_rx.blocking_recv() {
                file.write_all(&batch)?;
                len += batch.len() as u64;
                // Crash tests: part of the file is in the `.part`.
                crate::failpoint::hit("download-mid");
                recycle(&disk_pool, batch);
            }
            Ok((file, len))
        });
        let hash_pool = pool.clone();
        let hash = tokio::task::spawn_blocking(move || {
            // Bytes past `offset` are never read here, so the disk thread may append meanwhile.
            let mut hasher = match hasher {
                Some(h) => h,
                None => hash_prefix(&mut File::open(&path)?, offset)?,
            };
            while let Some(batch) = hash_rx.blocking_recv() {
                hasher.update(batch.as_slice());
                recycle(&hash_pool, batch);
            }
            Ok(hasher)
        });
        PartWriter {
            to_disk,
            to_hash,
            disk,
            hash,
            batch: Vec::with_capacity(batch_capacity(left)),
            pool,
            left,
        }
    }

    /// Queues one chunk; false when the writer has stopped (its error comes from `finish`).
    ///
    /// The chunk is copied into a recycled batch buffer and dropped at once: the HTTP
    /// client can then reuse its read buffer instead of allocating (and page-faulting) a
    /// fresh one for every read, which costs more than the copy.
    pub(super) async fn send(&mut self, chunk: Bytes) -> bool {
        let mut rest: &[u8] = &chunk;
        while !rest.is_empty() {
            let room = BATCH_BYTES - self.batch.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.batch.extend_from_slice(now);
            self.left = self.left.map(|l| l.saturating_sub(now.len() as u64));
            rest = later;
            if self.batch.len() >= BATCH_BYTES && !self.flush_batch(false).await {
                return false;
            }
        }
        true
    }

    /// Hands the batch to the threads; unless it is the `last`, a recycled or new (sized)
    /// buffer takes its place.
    async fn flush_batch(&mut self, last: bool) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let fresh = if last {
            Vec::new()
        } else {
            let recycled = {
                let mut pool = self
                    .pool
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                pool.pop()
            };
            recycled.unwrap_or_else(|| Vec::with_capacity(batch_capacity(self.left)))
        };
        let batch = Arc::new(std::mem::replace(&mut self.batch, fresh));
        self.to_disk.send(batch.clone()).await.is_ok() && self.to_hash.send(batch).await.is_ok()
    }

    /// Writes everything queued and returns the writer's state or its I/O error.
    pub(super) async fn finish(mut self) -> io::Result<Written> {
        self.flush_batch(true).await;
        drop(self.to_disk);
        drop(self.to_hash);
        let stopped =
            |e: tokio::task::JoinError| io::Error::other(format!("the .part writer stopped: {e}"));
        let disk = self.disk.await.map_err(stopped)?;
        let hash = self.hash.await.map_err(stopped)?;
        let (file, len) = disk?;
        let hasher = hash?;
        Ok(Written { file, hasher, len })
    }
}

/// Hands a batch buffer back for reuse once both threads are done with it.
fn recycle(pool: &Pool, batch: Batch) {
    if let Some(mut buf) = Arc::into_inner(batch) {
        buf.clear();
        let mut pool = pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.len() < POOL_BUFFERS {
            pool.push(buf);
        }
    }
}

fn open_part(path: &std::path::Path) -> io::Result<File> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the .part path exists but is not a regular file (a link or directory); remove it",
            ))
        }
        _ => {}
    }
    // Mail in transit is as private as the finished file (which is this file renamed): 0600,
    // also for a `.part` an earlier version left with a looser mode.
    let file = crate::durable::private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    crate::durable::restrict_mode(path, 0o600)?;
    Ok(file)
}

fn hash_prefix(file: &mut File, len: u64) -> io::Result<FileHasher> {
    let mut hasher = FileHasher::new();
    file.seek(SeekFrom::Start(0))?;
    let mut reader = file.take(len);
    let mut buf = vec![0u8; READ_BUFFER];
    let mut done = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    if done != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the .part file ended early while re-hashing it",
        ));
    }
    Ok(hasher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_after_rehashing_the_prefix_and_cuts_extra_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.part");
        std::fs::write(&path, b"hello, garbage").expect("write");
        let mut w = PartWriter::start(path.clone(), 7, None, None);
        assert!(w.send(Bytes::from_static(b"wor")).await);
        assert!(w.send(Bytes::from_static(b"ld")).await);
        let written = w.finish().await.expect("finish");
        assert_eq!(written.len, 12);
        assert_eq!(std::fs::read(&path).expect("read"), b"hello, world");
        let want: [u8; 32] = Sha256::digest(b"hello, world").into();
        let got: [u8; 32] = written.hasher.finalize().sha256;
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn many_chunks_are_batched_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.part");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = PartWriter::start(
            path.clone(),
            0,
            Some(FileHasher::new()),
            Some(data.len() as u64),
        );
        for chunk in data.chunks(10_007) {
            assert!(w.send(Bytes::copy_from_slice(chunk)).await);
        }
        let written = w.finish().await.expect("finish");
        assert_eq!(written.len, data.len() as u64);
        assert!(std::fs::read(&path).expect("read") == data);
        let want: [u8; 32] = Sha256::digest(&data).into();
        let got: [u8; 32] = written.hasher.finalize().sha256;
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn batches_are_no_larger_than_what_is_still_expected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.part");
        std::fs::write(&path, b"0123").expect("write");
        let mut w = PartWriter::start(path.clone(), 4, None, Some(16 * 1024 + 4));
        assert_eq!(w.batch.capacity(), 16 * 1024);
        let data = vec![7u8; 16 * 1024];
        assert!(w.send(Bytes::copy_from_slice(&data)).await);
        assert_eq!(w.batch.capacity(), 16 * 1024, "no reallocation");
        // More than announced is still written (the caller reports the length error).
        assert!(w.send(Bytes::from_static(b"xy")).await);
        let written = w.finish().await.expect("finish");
        assert_eq!(written.len, 4 + 16 * 1024 + 2);
        assert_eq!(
            std::fs::read(&path).expect("read").len() as u64,
            written.len
        );
        let unknown =
            PartWriter::start(dir.path().join("g.part"), 0, Some(FileHasher::new()), None);
        assert_eq!(unknown.batch.capacity(), BATCH_BYTES);
        assert!(unknown.finish().await.is_ok());
    }

    #[tokio::test]
    async fn a_part_shorter_than_recorded_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.part");
        std::fs::write(&path, b"abc").expect("write");
        let w = PartWriter::start(path, 10, None, None);
        assert!(w.finish().await.is_err());
    }
}
