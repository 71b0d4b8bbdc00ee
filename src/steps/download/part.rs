//! The `.part` writer: a blocking thread that hashes and appends chunks from a bounded channel.
//!
//! Hashing and disk writes run beside the network reads (the channel is the only buffer, so
//! memory stays bounded whatever the file size). The SHA-256 state always covers exactly the
//! bytes in the file: a resumed `.part` whose prefix was never hashed in this process is
//! re-hashed from disk before anything is appended.
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks queued between the network and the disk (hyper's chunks are 8–400 KiB).
const QUEUE_CHUNKS: usize = 16;
/// Write buffer, so small network chunks do not each cost a system call.
const WRITE_BUFFER: usize = 512 * 1024;
/// Read buffer for re-hashing a resumed prefix.
const READ_BUFFER: usize = 1024 * 1024;

/// What the writer leaves behind: the open file, the hash of all of it, and its length.
pub(super) struct Written {
    pub file: File,
    pub hasher: Sha256,
    pub len: u64,
}

pub(super) struct PartWriter {
    tx: mpsc::Sender<Bytes>,
    handle: JoinHandle<io::Result<Written>>,
}

impl PartWriter {
    /// Opens (or creates) `path`, cuts it to `offset` bytes and appends from there.
    ///
    /// `hasher` must cover bytes `0..offset`; `None` re-hashes them from the file first.
    pub fn start(path: PathBuf, offset: u64, hasher: Option<Sha256>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE_CHUNKS);
        let handle = tokio::task::spawn_blocking(move || {
            let mut file = open_part(&path)?;
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
            let mut hasher = match hasher {
                Some(h) => h,
                None => hash_prefix(&mut file, offset)?,
            };
            file.seek(SeekFrom::Start(offset))?;
            let mut len = offset;
            let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
                out.write_all(&chunk)?;
                len += chunk.len() as u64;
            }
            let file = out.into_inner().map_err(|e| e.into_error())?;
            Ok(Written { file, hasher, len })
        });
        PartWriter { tx, handle }
    }

    /// Queues one chunk; false when the writer has stopped (its error comes from `finish`).
    pub async fn send(&self, chunk: Bytes) -> bool {
        self.tx.send(chunk).await.is_ok()
    }

    /// Flushes everything queued and returns the writer's state or its I/O error.
    pub async fn finish(self) -> io::Result<Written> {
        drop(self.tx);
        match self.handle.await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(format!("the .part writer stopped: {e}"))),
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
        let w = PartWriter::start(path.clone(), 7, None);
        assert!(w.send(Bytes::from_static(b"world")).await);
        let written = w.finish().await.expect("finish");
        assert_eq!(written.len, 12);
        assert_eq!(std::fs::read(&path).expect("read"), b"hello, world");
        let want: [u8; 32] = Sha256::digest(b"hello, world").into();
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
