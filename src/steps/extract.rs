//! Takes the wanted files (`.mbox`) out of downloaded ZIP archives (Vault exports): each entry
//! is streamed to a private temporary file in the target directory, hashed on the way, synced
//! and renamed; an entry whose path is absolute or climbs out with `..` fails the step before
//! anything of that archive is written, and kept names are reduced to one safe file name.
//! Archive bombs are refused: an entry may expand at most [`Limits::max_ratio`] times its
//! compressed size, and a step's extracted files may total at most [`Limits::max_total`],
//! checked on the sizes the archive declares before anything is written and again on the
//! bytes as they stream; a refused entry leaves no file.
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::workflow::model::ExtractFormat;

/// Longest file name written, in bytes.
const MAX_NAME_BYTES: usize = 255;

/// Bounds of one step's extraction (`download.extract.max_ratio` and `max_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest ratio of an entry's size to its compressed size.
    pub max_ratio: u64,
    /// Largest total of the files extracted, in bytes.
    pub max_total: u64,
}

/// The default [`Limits::max_ratio`]: mail compresses a few times, a bomb a thousand.
pub const DEFAULT_MAX_RATIO: u64 = 100;

/// The default [`Limits::max_total`]: 1 TiB.
pub const DEFAULT_MAX_TOTAL: u64 = 1 << 40;

/// Entries up to this size are not held to the ratio (a small, repetitive file is no bomb).
const RATIO_FREE_BYTES: u64 = 1 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ratio: DEFAULT_MAX_RATIO,
            max_total: DEFAULT_MAX_TOTAL,
        }
    }
}

impl Limits {
    /// The most bytes entry `p` may expand to, `used` bytes having been extracted before it,
    /// and which bound that is.
    fn allowance(&self, p: &Planned, used: u64) -> (u64, Bound) {
        let by_ratio = p
            .compressed
            .saturating_mul(self.max_ratio)
            .max(RATIO_FREE_BYTES);
        let by_total = self.max_total.saturating_sub(used);
        if by_ratio <= by_total {
            (by_ratio, Bound::Ratio)
        } else {
            (by_total, Bound::Total)
        }
    }

    /// The error of entry `p` reaching `size` bytes past the allowance `bound`.
    fn exceeded(
        &self,
        archive: &Path,
        p: &Planned,
        size: u64,
        used: u64,
        bound: Bound,
    ) -> ExtractError {
        match bound {
            Bound::Ratio => ExtractError::Ratio {
                archive: archive.to_path_buf(),
                entry: p.entry.clone(),
                compressed: p.compressed,
                size,
                max_ratio: self.max_ratio,
            },
            Bound::Total => ExtractError::Total {
                archive: archive.to_path_buf(),
                entry: p.entry.clone(),
                total: used.saturating_add(size),
                max_total: self.max_total,
            },
        }
    }

    /// Checks the sizes the archive declares for `planned`, `used` bytes having been
    /// extracted by the step before: nothing is written when one is over a bound.
    pub fn check_declared(
        &self,
        archive: &Path,
        planned: &[Planned],
        mut used: u64,
    ) -> Result<(), ExtractError> {
        for p in planned {
            let (allowed, bound) = self.allowance(p, used);
            if p.declared > allowed {
                return Err(self.exceeded(archive, p, p.declared, used, bound));
            }
            used = used.saturating_add(p.declared);
        }
        Ok(())
    }
}

/// Which bound an entry's allowance comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Ratio,
    Total,
}

/// Why an archive could not be extracted. Messages name the archive and the entry.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The archive does not open or an entry does not read as ZIP.
    #[error("{}: not a readable ZIP archive: {message}; the download may be damaged: remove it and run again", archive.display())]
    Archive {
        /// The archive.
        archive: PathBuf,
        /// What the ZIP reader said.
        message: String,
    },
    /// An entry's path would be written outside the target directory (zip-slip).
    #[error("{}: entry {entry:?} {reason}, which could write outside the output directory; nothing of this archive was extracted. Check where the archive came from", archive.display())]
    Unsafe {
        /// The archive.
        archive: PathBuf,
        /// The entry's name as stored.
        entry: String,
        /// What makes it unsafe.
        reason: &'static str,
    },
    /// An entry's data ends before its declared size (the zip reader itself refuses one
    /// that goes past it, as soon as it does).
    #[error("{}: entry {entry:?} ends after {found} bytes while the archive declares {declared}: it is damaged; nothing of this entry was kept. Download it again", archive.display())]
    ShortEntry {
        /// The archive.
        archive: PathBuf,
        /// The entry's name as stored.
        entry: String,
        /// Its uncompressed size as declared.
        declared: u64,
        /// The bytes it held.
        found: u64,
    },
    /// An entry expands too many times its compressed size (an archive bomb).
    #[error("{}: entry {entry:?} expands {compressed} compressed bytes to {size} bytes or more, over {max_ratio} times its size (download.extract.max_ratio): it looks like an archive bomb and nothing of it was kept. Check where the archive came from; raise max_ratio only if the entry is genuine", archive.display())]
    Ratio {
        /// The archive.
        archive: PathBuf,
        /// The entry's name as stored.
        entry: String,
        /// Its compressed size.
        compressed: u64,
        /// Its size as declared, or as far as it was read.
        size: u64,
        /// The bound.
        max_ratio: u64,
    },
    /// The step's extracted files would pass their total bound.
    #[error("{}: entry {entry:?} brings the files this step extracts to {total} bytes or more, over download.extract.max_total ({max_total} bytes): nothing of it was kept. Free the space and raise max_total if the export is genuinely that large", archive.display())]
    Total {
        /// The archive.
        archive: PathBuf,
        /// The entry's name as stored.
        entry: String,
        /// The step's total with this entry (as declared, or as far as it was read).
        total: u64,
        /// The bound.
        max_total: u64,
    },
    /// Writing an extracted file failed.
    #[error("cannot write {}: {source}; check that the output directory is writable and has free space", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// One entry to take out of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Its index in the archive.
    pub index: usize,
    /// Its name as stored (for messages and the manifest).
    pub entry: String,
    /// Where it goes.
    pub dest: PathBuf,
    /// Its uncompressed size as the archive declares it.
    pub declared: u64,
    /// Its compressed size.
    pub compressed: u64,
}

/// A file taken out of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of its contents.
    pub sha256: crate::durable::Sha256Digest,
    /// Base64 MD5.
    pub md5: String,
}

fn open(archive: &Path) -> Result<zip::ZipArchive<File>, ExtractError> {
    let bad = |message: String| ExtractError::Archive {
        archive: archive.to_path_buf(),
        message,
    };
    let file = File::open(archive).map_err(|e| bad(e.to_string()))?;
    zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))
}

/// Why a stored entry name is unsafe: absolute, a drive or UNC path, or a `..` component.
fn unsafe_reason(name: &str) -> Option<&'static str> {
    if name.contains('\0') {
        return Some("holds a NUL byte");
    }
    if name.starts_with(['/', '\\']) {
        return Some("is an absolute path");
    }
    let b = name.as_bytes();
    if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
        return Some("names a drive");
    }
    if name.split(['/', '\\']).any(|c| c == "..") {
        return Some("climbs out with `..`");
    }
    None
}

/// The entry's last path component made into one plain file name: control characters and
/// characters Windows forbids become `_`, a leading dot is dropped, and it is cut to 255 bytes.
pub fn sanitize(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut out: String = last
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') {
                '_'
            } else {
                c
            }
        })
        .collect();
    while out.starts_with('.') {
        out.remove(0);
    }
    while out.len() > MAX_NAME_BYTES {
        out.pop();
    }
    out
}

/// `name` with `-n` before its extension.
fn numbered(name: &str, n: usize) -> String {
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{}-{n}{}", &name[..dot], &name[dot..]),
        _ => format!("{name}-{n}"),
    }
}

/// The entries of `archive` that `format` keeps and where each goes in `to`; `taken` holds
/// the names already given (by earlier archives of the step). Fails on the first unsafe
/// entry name, whether it would be kept or not.
pub fn plan(
    archive: &Path,
    to: &Path,
    format: ExtractFormat,
    taken: &mut HashSet<String>,
) -> Result<Vec<Planned>, ExtractError> {
    let mut zip = open(archive)?;
    let mut out = Vec::new();
    for index in 0..zip.len() {
        let entry = zip.by_index(index).map_err(|e| ExtractError::Archive {
            archive: archive.to_path_buf(),
            message: e.to_string(),
        })?;
        let name = entry
            .name()
            .map_err(|e| ExtractError::Archive {
                archive: archive.to_path_buf(),
                message: e.to_string(),
            })?
            .into_owned();
        if let Some(reason) = unsafe_reason(&name) {
            return Err(ExtractError::Unsafe {
                archive: archive.to_path_buf(),
                entry: name,
                reason,
            });
        }
        let wanted = !entry.is_dir()
            && !entry.is_symlink()
            && name.to_ascii_lowercase().ends_with(format.suffix());
        if !wanted {
            continue;
        }
        let base = sanitize(&name);
        if base.is_empty() {
            return Err(ExtractError::Unsafe {
                archive: archive.to_path_buf(),
                entry: name,
                reason: "has no usable file name",
            });
        }
        let mut file_name = base.clone();
        let mut n = 1;
        // Compared without case: two names that differ only in case are one file on
        // case-insensitive file systems.
        while !taken.insert(file_name.to_lowercase()) {
            n += 1;
            file_name = numbered(&base, n);
        }
        out.push(Planned {
            index,
            entry: name,
            dest: to.join(file_name),
            declared: entry.size(),
            compressed: entry.compressed_size(),
        });
    }
    Ok(out)
}

/// A writer that hashes what it writes.
struct Hashing<W> {
    inner: W,
    sha256: Sha256,
    md5: md5::Md5,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha256.update(&buf[..n]);
        self.md5.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Streams entry `p` of `archive` to `p.dest` (0600, synced, then renamed into place),
/// within `limits`, `used` bytes having been extracted by the step before it.
pub fn extract_one(
    archive: &Path,
    p: &Planned,
    limits: &Limits,
    used: u64,
) -> Result<Extracted, ExtractError> {
    let mut zip = open(archive)?;
    let bad_zip = |e: String| ExtractError::Archive {
        archive: archive.to_path_buf(),
        message: format!("entry {:?}: {e}", p.entry),
    };
    let mut entry = zip.by_index(p.index).map_err(|e| bad_zip(e.to_string()))?;
    let dir = p.dest.parent().unwrap_or(Path::new("."));
    let io_err = |source: io::Error| ExtractError::Io {
        path: p.dest.clone(),
        source,
    };
    let tmp = crate::durable::private_temp_file(dir, ".extract-", ".part").map_err(io_err)?;
    let (bytes, sha256, md5) = {
        let mut w = Hashing {
            inner: io::BufWriter::new(tmp.as_file()),
            sha256: Sha256::new(),
            md5: md5::Md5::new(),
            bytes: 0,
        };
        // A CRC mismatch, a truncated stream or data past the declared size (what a zip bomb
        // that lies about its size would give) shows up as a read error here.
        let declared = entry.size();
        let (allowed, bound) = limits.allowance(p, used);
        copy(&mut entry, &mut w, allowed).map_err(|e| match e {
            Copy::Read(e) => bad_zip(e.to_string()),
            Copy::Write(e) => io_err(e),
            Copy::Over(size) => limits.exceeded(archive, p, size, used, bound),
        })?;
        if w.bytes != declared {
            return Err(ExtractError::ShortEntry {
                archive: archive.to_path_buf(),
                entry: p.entry.clone(),
                declared,
                found: w.bytes,
            });
        }
        w.flush().map_err(io_err)?;
        (
            w.bytes,
            w.sha256.clone().finalize(),
            w.md5.clone().finalize(),
        )
    };
    tmp.as_file().sync_all().map_err(io_err)?;
    tmp.persist(&p.dest).map_err(|e| io_err(e.error))?;
    crate::durable::sync_dir(dir);
    Ok(Extracted {
        path: p.dest.clone(),
        bytes,
        sha256: crate::durable::Sha256Digest::from_bytes(sha256.into()),
        md5: base64::engine::general_purpose::STANDARD.encode(md5),
    })
}

enum Copy {
    Read(io::Error),
    Write(io::Error),
    /// More than the allowance came: the bytes read so far.
    Over(u64),
}

/// Copies at most `allowed` bytes; one more is [`Copy::Over`].
fn copy(from: &mut impl Read, to: &mut impl Write, allowed: u64) -> Result<(), Copy> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut copied: u64 = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        copied += n as u64;
        if copied > allowed {
            return Err(Copy::Over(copied));
        }
        to.write_all(&buf[..n]).map_err(Copy::Write)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_with(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join("a.zip");
        let mut w = zip::ZipWriter::new(File::create(&path).unwrap());
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
        path
    }

    #[test]
    fn keeps_mbox_entries_under_safe_names() {
        let d = tempfile::tempdir().unwrap();
        let a = zip_with(
            d.path(),
            &[
                ("exp/alice@example.com.mbox", b"From a\n"),
                ("exp/metadata.xml", b"<x/>"),
                ("other/alice@example.com.MBOX", b"From b\n"),
                (".hidden.mbox", b"From c\n"),
            ],
        );
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let mut taken = HashSet::new();
        let p = plan(&a, &out, ExtractFormat::Mbox, &mut taken).unwrap();
        let names: Vec<String> = p
            .iter()
            .map(|x| x.dest.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "alice@example.com.mbox",
                "alice@example.com-2.MBOX",
                "hidden.mbox"
            ]
        );
        let e = extract_one(&a, &p[0], &Limits::default(), 0).unwrap();
        assert_eq!(std::fs::read(&e.path).unwrap(), b"From a\n");
        assert_eq!(e.sha256, crate::durable::Sha256Digest::of(b"From a\n"));
    }

    /// Sets every uncompressed-size field of `name` (local header and central directory) to
    /// `size`, as a hostile or damaged archive would declare it.
    fn declare_size(zip: &Path, name: &str, size: u32) {
        let mut bytes = std::fs::read(zip).unwrap();
        let mut patched = 0;
        for (sig, field) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
            let name_at = if sig == b"PK\x03\x04" { 30 } else { 46 };
            let mut i = 0;
            while let Some(at) = bytes[i..].windows(4).position(|w| w == sig).map(|p| p + i) {
                if bytes[at + name_at..].starts_with(name.as_bytes()) {
                    bytes[at + field..at + field + 4].copy_from_slice(&size.to_le_bytes());
                    patched += 1;
                }
                i = at + 4;
            }
        }
        assert_eq!(patched, 2, "both headers of {name} patched");
        std::fs::write(zip, bytes).unwrap();
    }

    #[test]
    fn an_entry_longer_or_shorter_than_declared_is_refused_and_not_kept() {
        let d = tempfile::tempdir().unwrap();
        let mail = vec![b'x'; 200_000];
        for (declared, says) in [
            (1_000, "larger than its declared uncompressed size"),
            (
                300_000,
                "ends after 200000 bytes while the archive declares 300000",
            ),
        ] {
            let a = zip_with(d.path(), &[("big.mbox", &mail)]);
            declare_size(&a, "big.mbox", declared);
            let out = d.path().join(format!("out-{declared}"));
            std::fs::create_dir(&out).unwrap();
            let p = plan(&a, &out, ExtractFormat::Mbox, &mut HashSet::new()).unwrap();
            let err = extract_one(&a, &p[0], &Limits::default(), 0).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(says), "{text}");
            assert_eq!(
                std::fs::read_dir(&out).unwrap().count(),
                0,
                "nothing kept: {text}"
            );
        }
    }

    #[test]
    fn a_bomb_is_refused_by_its_ratio_or_the_total_declared_or_streamed() {
        let d = tempfile::tempdir().unwrap();
        let zeros = vec![0u8; 4 << 20];
        let a = zip_with(d.path(), &[("bomb.mbox", &zeros)]);
        let p = plan(&a, d.path(), ExtractFormat::Mbox, &mut HashSet::new()).unwrap();
        let limits = Limits::default();
        let err = limits.check_declared(&a, &p, 0).unwrap_err();
        assert!(
            matches!(err, ExtractError::Ratio { size, .. } if size == 4 << 20),
            "{err}"
        );
        // Past the declared check (an archive understating its size), the stream is stopped.
        let err = extract_one(&a, &p[0], &limits, 0).unwrap_err();
        assert!(matches!(err, ExtractError::Ratio { .. }), "{err}");
        let small = Limits {
            max_ratio: 10_000,
            max_total: 5 << 20,
        };
        let err = small.check_declared(&a, &p, 2 << 20).unwrap_err();
        assert!(
            matches!(err, ExtractError::Total { total, .. } if total == 6 << 20),
            "{err}"
        );
        assert!(matches!(
            extract_one(&a, &p[0], &small, 2 << 20).unwrap_err(),
            ExtractError::Total { .. }
        ));
        let kept: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(kept, [std::ffi::OsString::from("a.zip")], "nothing left");
    }

    #[test]
    fn refuses_entries_that_leave_the_directory() {
        for bad in [
            "../evil.mbox",
            "a/../../evil.mbox",
            "/etc/evil.mbox",
            "C:\\evil.mbox",
            "x\\..\\..\\e.mbox",
        ] {
            let d = tempfile::tempdir().unwrap();
            let a = zip_with(d.path(), &[("ok.mbox", b"x"), (bad, b"y")]);
            let err = plan(&a, d.path(), ExtractFormat::Mbox, &mut HashSet::new()).unwrap_err();
            assert!(matches!(err, ExtractError::Unsafe { .. }), "{bad}: {err}");
        }
        assert_eq!(sanitize("a/b:c?.mbox"), "b_c_.mbox");
    }
}
