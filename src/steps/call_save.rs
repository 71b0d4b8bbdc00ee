//! Writing a call's `save_to` file: a whole answer as pretty JSON, or a paginated result page
//! by page as it arrives (the same bytes as the merged answer, never held in memory whole),
//! always through a private temporary file renamed when complete.
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::StepError;
use crate::vendors::ItemSlot;

/// Stands for the saved items in the merged answer's envelope until they are copied in.
const MARKER: &str = "\u{0}auditflow:page-items\u{0}";

/// Writes `body` as pretty JSON to `path`, streamed through a private temporary file beside
/// it (fsync'd, then renamed): no second in-memory copy of a large answer. Returns the bytes
/// written and their SHA-256.
pub(super) fn save_json(
    path: &Path,
    body: &Value,
) -> Result<(u64, crate::durable::Sha256Digest), StepError> {
    save_through_temp(path, |w| {
        serde_json::to_writer_pretty(w, body).map_err(|source| StepError::Serialize {
            what: "response",
            source,
        })
    })
}

/// The directory `save_to` is in (created private when missing).
fn save_dir(path: &Path) -> Result<PathBuf, StepError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    crate::durable::create_private_dir(&dir).map_err(|source| StepError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(dir)
}

/// Runs `write` into a private temporary file beside `path`, then fsyncs and renames it to
/// `path`. Returns the bytes written and their SHA-256.
fn save_through_temp(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), StepError>,
) -> Result<(u64, crate::durable::Sha256Digest), StepError> {
    let io = |source: std::io::Error| StepError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = save_dir(path)?;
    let tmp = crate::durable::private_temp_file(&dir, ".auditflow-", ".tmp").map_err(io)?;
    let mut w = HashingWriter::new(BufWriter::new(tmp));
    write(&mut w)?;
    let (bytes, sha256, buffered) = w.finish();
    let tmp = buffered.into_inner().map_err(|e| io(e.into_error()))?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    crate::durable::sync_dir(&dir);
    Ok((bytes, sha256))
}

/// A paginated result being saved: each page's items are appended, pretty-printed at the
/// depth they have in the merged answer, to an anonymous private temporary file; [`finish`]
/// writes the merged answer's envelope (built from the last page) around them.
///
/// [`finish`]: PagedFile::finish
pub(super) struct PagedFile {
    /// `save_to`.
    path: PathBuf,
    /// The items so far, `,\n`-separated.
    items: BufWriter<std::fs::File>,
    /// Items written.
    count: u64,
    /// Where the merged body holds the items (set by the first page).
    slot: Option<ItemSlot>,
}

impl PagedFile {
    /// Opens the items' temporary file in `path`'s directory (created when missing).
    pub(super) fn create(path: &Path) -> Result<PagedFile, StepError> {
        let dir = save_dir(path)?;
        let file = tempfile::tempfile_in(&dir).map_err(|source| StepError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(PagedFile {
            path: path.to_path_buf(),
            items: BufWriter::new(file),
            count: 0,
            slot: None,
        })
    }

    fn io(&self, source: std::io::Error) -> StepError {
        StepError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends one page's items (they are in slot `slot` of the merged body).
    pub(super) fn append(&mut self, slot: ItemSlot, items: &[Value]) -> Result<(), StepError> {
        self.slot = Some(slot);
        let pad = item_indent(slot);
        for item in items {
            let sep: &[u8] = if self.count == 0 { b"" } else { b",\n" };
            let written = self
                .items
                .write_all(sep)
                .and_then(|()| self.items.write_all(&pad));
            written.map_err(|e| self.io(e))?;
            let mut w = Reindent {
                inner: &mut self.items,
                pad: &pad,
            };
            serde_json::to_writer_pretty(&mut w, item).map_err(|source| StepError::Serialize {
                what: "response page",
                source,
            })?;
            self.count += 1;
        }
        Ok(())
    }

    /// Writes `envelope` (the merged body without its items) with the items saved so far in
    /// their slot to `save_to`, through a temporary file renamed when complete. Returns the
    /// bytes written and their SHA-256.
    pub(super) fn finish(
        self,
        envelope: Value,
    ) -> Result<(u64, crate::durable::Sha256Digest), StepError> {
        let slot = self.slot.unwrap_or(ItemSlot::Root);
        let path = self.path.clone();
        let io = |source: std::io::Error| StepError::Io {
            path: path.clone(),
            source,
        };
        let mut items = self.items.into_inner().map_err(|e| io(e.into_error()))?;
        items.rewind().map_err(io)?;
        let text = envelope_text(envelope, slot).map_err(|source| StepError::Serialize {
            what: "response",
            source,
        })?;
        let marker = serde_json::to_string(MARKER).map_err(|source| StepError::Serialize {
            what: "response",
            source,
        })?;
        let Some((before, after)) = text
            .split_once(&marker)
            .filter(|(_, a)| !a.contains(&marker))
        else {
            return Err(io(std::io::Error::other(
                "the answer's last page holds auditflow's own item marker; it cannot be saved",
            )));
        };
        let count = self.count;
        let close = " ".repeat(item_indent(slot).len() - 2);
        save_through_temp(&path, |w| {
            w.write_all(before.as_bytes()).map_err(io)?;
            if count == 0 {
                w.write_all(b"[]").map_err(io)?;
            } else {
                w.write_all(b"[\n").map_err(io)?;
                std::io::copy(&mut items, w).map_err(io)?;
                write!(w, "\n{close}]").map_err(io)?;
            }
            w.write_all(after.as_bytes()).map_err(io)
        })
    }
}

/// The pretty text of `envelope` with [`MARKER`] where its items go.
fn envelope_text(mut envelope: Value, slot: ItemSlot) -> Result<String, serde_json::Error> {
    let marker = Value::String(MARKER.into());
    match slot {
        ItemSlot::Root => envelope = marker,
        ItemSlot::Field(f) => {
            if let Some(o) = envelope.as_object_mut() {
                o.insert(f.to_string(), marker);
            }
        }
    }
    serde_json::to_string_pretty(&envelope)
}

/// The indentation of an item line in the pretty-printed merged answer (two spaces a level):
/// the root array's items are one level deep, a top-level field's two.
fn item_indent(slot: ItemSlot) -> Vec<u8> {
    let levels = match slot {
        ItemSlot::Root => 1,
        ItemSlot::Field(_) => 2,
    };
    vec![b' '; 2 * levels]
}

/// Indents every line after the first by `pad`: a value pretty-printed alone becomes the
/// same value pretty-printed nested (JSON text has no raw newline inside a string).
struct Reindent<'a, W> {
    inner: &'a mut W,
    pad: &'a [u8],
}

impl<W: Write> Write for Reindent<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.inner.write_all(&rest[..=i])?;
            self.inner.write_all(self.pad)?;
            rest = &rest[i + 1..];
        }
        self.inner.write_all(rest)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Counts and hashes what passes through to the inner writer.
struct HashingWriter<W> {
    inner: W,
    bytes: u64,
    hash: sha2::Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        use sha2::Digest;
        HashingWriter {
            inner,
            bytes: 0,
            hash: sha2::Sha256::new(),
        }
    }

    /// Bytes written, their SHA-256 (hex) and the inner writer.
    fn finish(self) -> (u64, crate::durable::Sha256Digest, W) {
        use sha2::Digest;
        let digest = crate::durable::Sha256Digest::from_bytes(self.hash.finalize().into());
        (self.bytes, digest, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Bytes of `v` as compact JSON (what holding it costs, roughly), without writing it out.
pub(super) fn json_len(v: &Value) -> u64 {
    struct Count(u64);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Saves `pages` (each: its items) page by page in `slot` around `envelope` and compares
    /// with the merged body pretty-printed whole.
    fn paged_equals_whole(slot: ItemSlot, envelope: Value, pages: Vec<Vec<Value>>) {
        let dir = tempfile::tempdir().unwrap();
        let paged = dir.path().join("paged.json");
        let mut f = PagedFile::create(&paged).unwrap();
        let all: Vec<Value> = pages.iter().flatten().cloned().collect();
        for p in &pages {
            f.append(slot, p).unwrap();
        }
        let mut merged = envelope.clone();
        match slot {
            ItemSlot::Root => merged = Value::Array(all),
            ItemSlot::Field(name) => merged[name] = Value::Array(all),
        }
        let (bytes, sha) = f.finish(envelope).unwrap();
        let want = serde_json::to_string_pretty(&merged).unwrap();
        let got = std::fs::read_to_string(&paged).unwrap();
        assert_eq!(got, want);
        assert_eq!(bytes, want.len() as u64);
        assert_eq!(sha, crate::durable::Sha256Digest::of(want.as_bytes()));
    }

    #[test]
    fn paged_saving_writes_the_merged_answer_byte_for_byte() {
        let item = |i: u64| {
            json!({"id": i, "to": {"emailAddress": format!("u{i}@x"), "tags": ["a", {"b": [i]}]},
                   "subject": "line\nbreak \"quoted\"", "empty": {}, "none": []})
        };
        let envelope = json!({"meta": {"status": 200, "pagination": {"totalCount": 5}},
                              "data": [], "fail": []});
        paged_equals_whole(
            ItemSlot::Field("data"),
            envelope.clone(),
            vec![
                vec![item(1), item(2)],
                vec![],
                vec![item(3), json!({"messages": [item(4)]})],
            ],
        );
        paged_equals_whole(ItemSlot::Field("data"), envelope, vec![vec![], vec![]]);
        paged_equals_whole(
            ItemSlot::Root,
            json!([]),
            vec![vec![item(1)], vec![json!(7), json!(null), json!("s")]],
        );
        paged_equals_whole(ItemSlot::Root, json!([]), vec![]);
    }
}
