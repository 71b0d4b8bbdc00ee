//! Durable private file writes, directory sync and hashing, shared by steps, run state and reports.
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A failed write, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct WriteError {
    /// The file being written.
    pub path: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}

/// Writes bytes to `path` through a temporary file beside it, fsync'd and renamed when
/// complete: a crash never leaves a partial file under the final name. The file is created
/// with mode 0600 and keeps it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir)?;
    let mut tmp = private_temp_file(&dir, ".auditflow-", ".tmp")?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// [`write_atomic`], with an error that names the file.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic(path, bytes).map_err(|source| WriteError {
        path: path.to_path_buf(),
        source,
    })
}

/// A temporary file in `dir`, readable by its owner only (mode 0600), removed on drop
/// unless persisted.
pub fn private_temp_file(
    dir: &Path,
    prefix: &str,
    suffix: &str,
) -> std::io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    builder.tempfile_in(dir)
}

/// Open options whose newly created files are readable by their owner only (mode 0600).
pub fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

/// [`private_options`] that never follow a symbolic link in the last component of the path
/// (`O_NOFOLLOW`): opening a link fails instead. For files in directories the tool owns (the
/// state directory), where a link could only have been planted to redirect a write.
pub fn private_options_nofollow() -> OpenOptions {
    let mut o = private_options();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    o
}

/// Reads a whole file without following a symbolic link in the last component.
pub fn read_nofollow(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = private_options_nofollow().read(true).open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The first symbolic link at or under `dir` (which itself may be one: only what is inside
/// is looked at), walking at most `depth` directories down without following any link.
pub fn first_symlink_under(dir: &Path, depth: usize) -> std::io::Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(it) => it,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            return Ok(Some(entry.path()));
        }
        if kind.is_dir() && depth > 0 {
            if let Some(found) = first_symlink_under(&entry.path(), depth - 1)? {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}

/// The user id owning `path` when it is not the user running this process (the effective
/// user id), else None. Elsewhere than Unix, always None.
pub fn foreign_owner(path: &Path) -> std::io::Result<Option<(u32, u32)>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(path)?.uid();
        let me = rustix::process::geteuid().as_raw();
        Ok((owner != me).then_some((owner, me)))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

/// Creates a directory and its parents, new ones readable by their owner only (mode 0700).
pub fn create_private_dir(p: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(p)
}

/// Takes away the permission bits of `path` beyond `most` (0o600 for a file, 0o700 for a
/// directory): for files and directories the tool owns that an earlier version or the user
/// made with looser modes. Returns the mode found when it was changed. Elsewhere than Unix,
/// nothing.
pub fn restrict_mode(path: &Path, most: u32) -> std::io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
        if mode & !most == 0 {
            return Ok(None);
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & most))?;
        Ok(Some(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, most);
        Ok(None)
    }
}

/// Makes a rename or a new file's directory entry durable; best effort (not every platform or
/// file system can sync a directory), a failure is only logged at debug level.
pub fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "could not sync the directory");
    }
}

/// Streams a file through SHA-256 (lower-case hex).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Lower-case hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A SHA-256 digest, shown and serialized as 64 lower-case hex digits (the form events,
/// journals and manifests have always carried, so older files read back unchanged).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest([u8; 32]);

/// Text that is not a SHA-256 digest in hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a SHA-256 digest (64 hex digits)")]
pub struct NotADigest {
    /// The text as given.
    pub text: String,
}

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Sha256Digest(sha2::Sha256::digest(bytes).into())
    }

    /// A digest computed elsewhere.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Sha256Digest(bytes)
    }

    /// Reads 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Result<Self, NotADigest> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| NotADigest {
            text: text.to_string(),
        })?;
        Ok(Sha256Digest(bytes))
    }

    /// The 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl std::str::FromStr for Sha256Digest {
    type Err = NotADigest;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sha256Digest::from_hex(s)
    }
}

impl PartialEq<str> for Sha256Digest {
    fn eq(&self, hex_text: &str) -> bool {
        Sha256Digest::from_hex(hex_text).is_ok_and(|d| d == *self)
    }
}

impl PartialEq<String> for Sha256Digest {
    fn eq(&self, hex_text: &String) -> bool {
        *self == **hex_text
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Sha256Digest::from_hex(&text).map_err(serde::de::Error::custom)
    }
}
