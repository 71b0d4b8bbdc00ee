//! Bytes a report collects during a run (one entry per step: 100,000s in a long loop), kept in
//! an unlinked temporary file rather than in memory until the report is written.
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::durable::WriteError;

/// An append-only byte buffer on disk (in memory when no temporary file can be made).
pub(crate) struct Spool {
    out: Option<BufWriter<File>>,
    mem: Vec<u8>,
    count: usize,
}

impl Spool {
    pub(crate) fn new() -> Spool {
        Spool {
            out: tempfile::tempfile().ok().map(BufWriter::new),
            mem: Vec::new(),
            count: 0,
        }
    }

    /// Entries pushed so far.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Appends one entry.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let spilled = self.out.as_mut().map(|w| w.write_all(bytes));
        if !matches!(spilled, Some(Ok(()))) {
            // From here on in memory, after what the file holds.
            self.out = None;
            self.mem.extend_from_slice(bytes);
        }
        self.count += 1;
    }

    /// Copies everything pushed, in order, to `to`; later pushes still append.
    pub(crate) fn copy_to(&mut self, to: &mut dyn Write) -> std::io::Result<()> {
        if let Some(w) = self.out.as_mut() {
            w.flush()?;
            let mut f = w.get_ref().try_clone()?;
            f.seek(SeekFrom::Start(0))?;
            std::io::copy(&mut f, to)?;
            // The clone shares the file offset: back to the end for later appends.
            w.get_mut().seek(SeekFrom::End(0))?;
        }
        to.write_all(&self.mem)
    }
}

/// Writes a report file through a private temporary file beside it, fsync'd and renamed when
/// complete (as [`crate::durable::write_private`], without the whole text in memory).
pub(crate) fn write_report(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), WriteError> {
    let failed = |source| WriteError {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    crate::durable::create_private_dir(&dir).map_err(failed)?;
    let tmp = crate::durable::private_temp_file(&dir, ".auditflow-", ".tmp").map_err(failed)?;
    let mut out = BufWriter::new(tmp);
    write(&mut out).map_err(failed)?;
    let tmp = out.into_inner().map_err(|e| failed(e.into_error()))?;
    tmp.as_file().sync_all().map_err(failed)?;
    tmp.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_in_order_and_keeps_appending() {
        let mut s = Spool::new();
        s.push(b"a");
        s.push(b"bc");
        let mut got = Vec::new();
        s.copy_to(&mut got).expect("copy");
        s.push(b"d");
        s.copy_to(&mut got).expect("copy again");
        assert_eq!(got, b"abcabcd");
        assert_eq!(s.count(), 3);
    }
}
