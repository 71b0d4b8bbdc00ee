//! Deterministic mbox (mboxrd) plaintext of simulated export files, produced as a byte stream.
use std::io::Read;

use sha2::{Digest, Sha256};

/// What one export file holds; the same spec always yields the same bytes.
#[derive(Debug, Clone)]
pub(crate) struct MboxSpec {
    pub request_id: u64,
    pub user_email: String,
    pub file_no: u32,
    /// Messages are added until at least this many bytes were produced (at least one message).
    pub target_size: usize,
    /// `HEADER_ONLY` exports: messages without bodies.
    pub headers_only: bool,
    /// Message dates are spread over `[begin, end]`, Unix seconds.
    pub begin: i64,
    pub end: i64,
}

/// Streams the mbox text of a [`MboxSpec`] one message at a time.
pub(crate) struct MboxReader {
    spec: MboxSpec,
    rng: u64,
    msg_no: u32,
    produced: usize,
    buf: Vec<u8>,
    pos: usize,
}

const WORDS: &[&str] = &[
    "audit",
    "quarterly",
    "ledger",
    "invoice",
    "meeting",
    "retention",
    "policy",
    "contract",
    "review",
    "approval",
    "budget",
    "forecast",
    "supplier",
    "shipment",
    "deadline",
    "draft",
    "summary",
    "customer",
    "escalation",
    "renewal",
    "compliance",
    "report",
    "schedule",
    "notes",
    "agenda",
    "follow-up",
    "attached",
    "figures",
    "regional",
    "office",
    "transfer",
    "account",
    "statement",
    "the",
    "a",
    "of",
    "and",
    "to",
    "for",
    "with",
    "on",
    "please",
    "see",
    "below",
    "thanks",
    "regards",
    "update",
    "team",
    "project",
    "phase",
    "risk",
    "legal",
    "hold",
    "archive",
];
const NAMES: &[(&str, &str)] = &[
    ("Avery Cohen", "avery.cohen@partner.example.net"),
    ("Noa Levi", "noa.levi@supplier.example.org"),
    ("Sam Okafor", "sam.okafor@example.com"),
    ("Priya Raman", "priya.raman@consulting.example.net"),
    ("Jonas Berg", "jonas.berg@logistics.example.org"),
    ("Mei Tanaka", "mei.tanaka@example.com"),
];
const LABELS: &[&str] = &[
    "Inbox",
    "Sent",
    "Inbox,Important",
    "Archived",
    "Inbox,Category Updates",
];

impl MboxReader {
    pub(crate) fn new(spec: MboxSpec) -> Self {
        let mut h = Sha256::new();
        h.update(spec.request_id.to_be_bytes());
        h.update(spec.user_email.as_bytes());
        h.update([0]);
        h.update(spec.file_no.to_be_bytes());
        let d = h.finalize();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&d[..8]);
        MboxReader {
            spec,
            rng: u64::from_be_bytes(seed),
            msg_no: 0,
            produced: 0,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// splitmix64: small, fast and stable across crate versions.
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn sentence_line(&mut self) -> String {
        let words = 6 + self.below(8);
        let mut line = String::new();
        for i in 0..words {
            if i > 0 {
                line.push(' ');
            }
            line.push_str(self.pick(WORDS));
        }
        line
    }

    fn next_message(&mut self) {
        self.msg_no += 1;
        let n = self.msg_no;
        let (name, addr) = self.pick(NAMES);
        let span = (self.spec.end - self.spec.begin).max(0) as u64;
        let t = self.spec.begin + self.below(span + 1) as i64;
        let date = chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
        let thread = self.next() >> 1;
        let label = self.pick(LABELS);
        let topic = format!("{} {}", self.pick(WORDS), self.pick(WORDS));
        let mut m = String::new();
        m.push_str(&format!(
            "From {addr} {}\n",
            date.format("%a %b %e %H:%M:%S %Y")
        ));
        m.push_str(&format!("X-GM-THRID: {thread}\n"));
        m.push_str(&format!("X-Gmail-Labels: {label}\n"));
        m.push_str(&format!("Delivered-To: {}\n", self.spec.user_email));
        m.push_str(&format!("Return-Path: <{addr}>\n"));
        m.push_str(&format!("From: {name} <{addr}>\n"));
        m.push_str(&format!("To: {}\n", self.spec.user_email));
        m.push_str(&format!(
            "Subject: Re: {topic} (export {} file {} message {n})\n",
            self.spec.request_id, self.spec.file_no
        ));
        m.push_str(&format!(
            "Date: {}\n",
            date.format("%a, %d %b %Y %H:%M:%S +0000")
        ));
        let tag = self.next() & 0xffff_ffff;
        m.push_str(&format!(
            "Message-ID: <{}.{}.{n}.{tag:x}@mail.sim.example>\n",
            self.spec.request_id, self.spec.file_no
        ));
        m.push_str("MIME-Version: 1.0\n");
        m.push_str("Content-Type: text/plain; charset=UTF-8\n");
        m.push_str("Content-Transfer-Encoding: 7bit\n\n");
        if !self.spec.headers_only {
            let paragraphs = 2 + self.below(8);
            for p in 0..paragraphs {
                let lines = 1 + self.below(5);
                for l in 0..lines {
                    // Now and then a line that an mbox reader would take for a separator.
                    let line = match self.below(12) {
                        0 if l == 0 => format!("From {}", self.sentence_line()),
                        1 if l == 0 && p > 0 => format!(">From {}", self.sentence_line()),
                        _ => self.sentence_line(),
                    };
                    m.push_str(&escape_from_line(&line));
                    m.push('\n');
                }
                m.push('\n');
            }
        }
        m.push('\n');
        self.buf = m.into_bytes();
        self.pos = 0;
    }
}

/// mboxrd escaping: a body line matching `^>*From ` gets one more `>`.
pub(super) fn escape_from_line(line: &str) -> String {
    if line.trim_start_matches('>').starts_with("From ") {
        format!(">{line}")
    } else {
        line.to_string()
    }
}

impl Read for MboxReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.buf.len() {
            if self.msg_no > 0 && self.produced >= self.spec.target_size {
                return Ok(0);
            }
            self.next_message();
            self.produced += self.buf.len();
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Passes bytes through while hashing them and counting them.
pub(super) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> HashingReader<R> {
    pub(super) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Lowercase hex SHA-256 of what was read, and its length.
    pub(super) fn finish(self) -> (String, u64) {
        let digest = self.hasher.finalize();
        (hex::encode(digest), self.len)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.hasher.update(&out[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(file_no: u32, size: usize) -> MboxSpec {
        MboxSpec {
            request_id: 53156,
            user_email: "quinn@example.com".into(),
            file_no,
            target_size: size,
            headers_only: false,
            begin: 1_656_649_800,
            end: 1_661_889_600,
        }
    }

    fn read_all(s: MboxSpec) -> Vec<u8> {
        let mut v = Vec::new();
        MboxReader::new(s).read_to_end(&mut v).expect("read");
        v
    }

    #[test]
    fn deterministic_sized_and_escaped() {
        let a = read_all(spec(0, 50_000));
        assert_eq!(a, read_all(spec(0, 50_000)));
        assert_ne!(a, read_all(spec(1, 50_000)));
        assert!(a.len() >= 50_000 && a.len() < 60_000, "len {}", a.len());
        let text = String::from_utf8(a).expect("ascii");
        assert!(text.starts_with("From "));
        let mut separators = 0;
        let mut after_blank = true;
        for line in text.lines() {
            if line.starts_with("From ") {
                // Every unescaped `From ` line is a real separator, preceded by a blank line,
                // followed by the headers.
                assert!(after_blank, "unescaped From line in a body: {line}");
                separators += 1;
            }
            after_blank = line.is_empty();
        }
        assert!(separators > 5);
        assert!(text.contains("\n>From "), "escaped body lines expected");
        assert_eq!(escape_from_line(">From x"), ">>From x");
        assert_eq!(escape_from_line("Fromage"), "Fromage");
    }

    #[test]
    fn headers_only_has_no_bodies_and_tiny_size_has_one_message() {
        let mut s = spec(0, 1);
        s.headers_only = true;
        let text = String::from_utf8(read_all(s)).expect("ascii");
        assert_eq!(text.matches("\nMessage-ID: ").count(), 1);
        assert!(text.ends_with("Content-Transfer-Encoding: 7bit\n\n\n"));
    }
}
