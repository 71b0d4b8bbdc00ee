//! The `.part` writer: blocking threads that hash and append chunks from bounded channels.
//!
//! Hashing and disk writes run beside the network reads, each on its own thread (the bounded
//! channels are the only buffers, so memory stays bounded whatever the file size). Network
//! chunks are batched so the threads are woken, and `writev` called, about once per 256 KiB.
//! The SHA-256 state always covers exactly the bytes in the file: a resumed `.part` whose
//! prefix was never hashed in this process is re-hashed from disk before the new bytes.
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Batches queued between the network and the disk: at most ~`QUEUE_BATCHES * BATCH_BYTES`
/// (plus one network chunk per batch) is held in memory.
const QUEUE_BATCHES: usize = 16;
/// Bytes gathered before a batch is handed to the threads.
const BATCH_BYTES: usize = 256 * 1024;
/// Read buffer for re-hashing a resumed prefix.
const READ_BUFFER: usize = 1024 * 1024;

/// What the writer leaves behind: the open file, the hash of all of it, and its length.
pub(super) struct Written {
    pub file: File,
    pub hasher: Sha256,
    pub len: u64,
}

type Batch = Arc<Vec<Bytes>>;

pub(super) struct PartWriter {
    to_disk: mpsc::Sender<Batch>,
    to_hash: mpsc::Sender<Batch>,
    disk: JoinHandle<io::Result<(File, u64)>>,
    hash: JoinHandle<io::Result<Sha256>>,
    batch: Vec<Bytes>,
    batch_len: usize,
}

impl PartWriter {
    /// Opens (or creates) `path`, cuts it to `offset` bytes and appends from there.
    ///
    /// `hasher` must cover bytes `0..offset`; `None` re-hashes them from the file first.
    /// Hashing and writing run on two threads fed the same batches, so each proceeds at
    /// its own pace (SHA-256 and page-cache copies cost about the same per byte).
    pub fn start(path: PathBuf, offset: u64, hasher: Option<Sha256>) -> Self {
        let (to_disk, mut disk_rx) = mpsc::channel::<Batch>(QUEUE_BATCHES);
        let (to_hash, mut hash_rx) = mpsc::channel::<Batch>(QUEUE_BATCHES);
        let disk_path = path.clone();
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
                write_all_vectored(&mut file, &batch)?;
                len += batch.iter().map(|c| c.len() as u64).sum::<u64>();
            }
            Ok((file, len))
        });
        let hash = tokio::task::spawn_blocking(move || {
            // Bytes past `offset` are never read here, so the disk thread may append meanwhile.
            let mut hasher = match hasher {
                Some(h) => h,
                None => hash_prefix(&mut File::open(&path)?, offset)?,
            };
            while let Some(batch) = hash_rx.blocking_recv() {
                for chunk in batch.iter() {
                    hasher.update(chunk);
                }
            }
            Ok(hasher)
        });
        PartWriter {
            to_disk,
            to_hash,
            disk,
            hash,
            batch: Vec::new(),
            batch_len: 0,
        }
    }

    /// Queues one chunk; false when the writer has stopped (its error comes from `finish`).
    pub async fn send(&mut self, chunk: Bytes) -> bool {
        self.batch_len += chunk.len();
        self.batch.push(chunk);
        if self.batch_len < BATCH_BYTES {
            return true;
        }
        self.flush_batch().await
    }

    async fn flush_batch(&mut self) -> bool {
        self.batch_len = 0;
        if self.batch.is_empty() {
            return true;
        }
        let batch = Arc::new(std::mem::take(&mut self.batch));
        self.to_disk.send(batch.clone()).await.is_ok() && self.to_hash.send(batch).await.is_ok()
    }

    /// Writes everything queued and returns the writer's state or its I/O error.
    pub async fn finish(mut self) -> io::Result<Written> {
        self.flush_batch().await;
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

/// `write_all` for a list of buffers, one `writev` per call where the OS allows.
fn write_all_vectored(file: &mut File, chunks: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the disk accepted no more bytes",
                ))
            }
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn hash_prefix(file: &mut File, len: u64) -> io::Result<Sha256> {
    let mut hasher = Sha256::new();
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
        let mut w = PartWriter::start(path.clone(), 7, None);
        assert!(w.send(Bytes::from_static(b"wor")).await);
        assert!(w.send(Bytes::from_static(b"ld")).await);
        let written = w.finish().await.expect("finish");
        assert_eq!(written.len, 12);
        assert_eq!(std::fs::read(&path).expect("read"), b"hello, world");
        let want: [u8; 32] = Sha256::digest(b"hello, world").into();
        let got: [u8; 32] = written.hasher.finalize().into();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn many_chunks_are_batched_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.part");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = PartWriter::start(path.clone(), 0, Some(Sha256::new()));
        for chunk in data.chunks(10_007) {
            assert!(w.send(Bytes::copy_from_slice(chunk)).await);
        }
        let written = w.finish().await.expect("finish");
        assert_eq!(written.len, data.len() as u64);
        assert!(std::fs::read(&path).expect("read") == data);
        let want: [u8; 32] = Sha256::digest(&data).into();
        let got: [u8; 32] = written.hasher.finalize().into();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_part_shorter_than_recorded_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.part");
        std::fs::write(&path, b"abc").expect("write");
        let w = PartWriter::start(path, 10, None);
        assert!(w.finish().await.is_err());
    }
}
