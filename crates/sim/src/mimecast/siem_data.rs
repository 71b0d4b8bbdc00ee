//! The SIEM log files the simulated Mimecast produces over its simulated clock: which files
//! exist when, their deterministic content, and the opaque tokens that point into them.
//!
//! One schedule slot every `interval`: a slot's files become available when it ends and are kept
//! for `retention` (the get-siem-logs page: "Log data is stored by Mimecast for 7 days only").
//! API 1.0 (`get-siem-logs`) serves one MTA file per stage and slot ("Each file you download will
//! contain either receipt, delivery, or process lines", Understanding SIEM Logs); API 2.0
//! (`/siem/v1/batch/events/cg`) one gzip NDJSON file per type and slot.
use std::io::Write;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::data::{fmt_date, mix};

/// When files appear: slot `k` covers `[anchor + k*interval, anchor + (k+1)*interval)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    anchor: DateTime<Utc>,
    interval: i64,
    retention: i64,
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Schedule {
    /// Slots aligned to `interval` since the epoch, the first one `history` before `start`.
    pub(super) fn new(
        start: DateTime<Utc>,
        history: Duration,
        interval: Duration,
        retention: Duration,
    ) -> Self {
        let interval = secs(interval).max(1);
        let from = start.timestamp().saturating_sub(secs(history));
        let aligned = from.div_euclid(interval) * interval;
        Schedule {
            anchor: DateTime::from_timestamp(aligned, 0).unwrap_or(start),
            interval,
            retention: secs(retention),
        }
    }

    /// Start of slot `k` (far future when out of range).
    pub(super) fn slot_start(&self, k: u64) -> DateTime<Utc> {
        i64::try_from(k)
            .ok()
            .and_then(|k| k.checked_mul(self.interval))
            .and_then(TimeDelta::try_seconds)
            .and_then(|d| self.anchor.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// When the files of slot `k` become available: the end of the slot.
    pub(super) fn available_at(&self, k: u64) -> DateTime<Utc> {
        self.slot_start(k.saturating_add(1))
    }

    /// Whole intervals from the anchor to `t`, rounded up (0 before the anchor).
    fn slots_until(&self, t: DateTime<Utc>) -> u64 {
        let d = u64::try_from(t.timestamp() - self.anchor.timestamp()).unwrap_or(0);
        d.div_ceil(self.interval.unsigned_abs())
    }

    /// Slots whose files are available at `now`: `0..n`.
    pub(super) fn available(&self, now: DateTime<Utc>) -> u64 {
        let d = now.timestamp() - self.anchor.timestamp();
        u64::try_from(d.max(0) / self.interval).unwrap_or(0)
    }

    /// The oldest slot still kept at `now` (retention counts from a file's availability).
    pub(super) fn first_kept(&self, now: DateTime<Utc>) -> u64 {
        let cutoff = now.timestamp().saturating_sub(self.retention);
        let cutoff = DateTime::from_timestamp(cutoff, 0).unwrap_or(now);
        self.slots_until(cutoff).saturating_sub(1)
    }

    /// The oldest UTC day still within retention at `now`.
    pub(super) fn oldest_day(&self, now: DateTime<Utc>) -> NaiveDate {
        let t = now.timestamp().saturating_sub(self.retention);
        DateTime::from_timestamp(t, 0).unwrap_or(now).date_naive()
    }

    /// The first slot that starts on or after `day` (UTC).
    pub(super) fn first_on(&self, day: NaiveDate) -> u64 {
        self.slots_until(day.and_time(chrono::NaiveTime::MIN).and_utc())
    }

    /// Slots that start before the end of `day` (UTC): `0..n`.
    pub(super) fn through(&self, day: NaiveDate) -> u64 {
        day.succ_opt()
            .map(|next| self.first_on(next))
            .unwrap_or(u64::MAX)
    }
}

/// The stage of the MTA a 1.0 log file reports (one stage per file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MtaStage {
    Receipt,
    Process,
    Delivery,
}

const STAGES: [MtaStage; 3] = [MtaStage::Receipt, MtaStage::Process, MtaStage::Delivery];

impl MtaStage {
    fn as_str(self) -> &'static str {
        match self {
            MtaStage::Receipt => "receipt",
            MtaStage::Process => "process",
            MtaStage::Delivery => "delivery",
        }
    }
}

/// The 1.0 file formats (`fileFormat`): pipe-delimited key=value lines, or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileFormat {
    KeyValue,
    Json,
}

/// One API 1.0 MTA log file: file `seq` is stage `seq % 3` of slot `seq / 3`.
#[derive(Debug, Clone, Copy)]
pub(super) struct MtaFile {
    pub(super) seq: u64,
    stage: MtaStage,
    start: DateTime<Utc>,
}

/// Files per slot on the 1.0 feed.
pub(super) const MTA_FILES_PER_SLOT: u64 = 3;

impl MtaFile {
    pub(super) fn new(sched: &Schedule, seq: u64) -> Self {
        MtaFile {
            seq,
            stage: STAGES[(seq % MTA_FILES_PER_SLOT) as usize],
            start: sched.slot_start(seq / MTA_FILES_PER_SLOT),
        }
    }

    /// The name without extension: `receipt_20261201T1000_000012`.
    pub(super) fn base_name(&self) -> String {
        format!(
            "{}_{}_{:06}",
            self.stage.as_str(),
            self.start.format("%Y%m%dT%H%M"),
            self.seq
        )
    }

    /// The file name as served for a format (`.json` or `.log`), `.zip` when compressed.
    pub(super) fn file_name(&self, format: FileFormat, compress: bool) -> String {
        let ext = match format {
            FileFormat::Json => "json",
            FileFormat::KeyValue => "log",
        };
        let zip = if compress { ".zip" } else { "" };
        format!("{}.{ext}{zip}", self.base_name())
    }

    fn events(&self) -> Vec<Map<String, Value>> {
        let n = 2 + mix(self.seq ^ 0x51E4) % 3;
        (0..n).map(|i| self.event(i)).collect()
    }

    fn event(&self, i: u64) -> Map<String, Value> {
        let h = mix(self.seq.wrapping_mul(31).wrapping_add(i));
        let at = self.start + TimeDelta::seconds((h % 600) as i64);
        let msg = format!("<{:016x}@mail.example.net>", mix(h));
        let mut e = Map::new();
        e.insert("datetime".into(), json!(fmt_date(at)));
        e.insert("aCode".into(), json!(format!("{:x}", mix(h ^ 7) >> 16)));
        e.insert("acc".into(), json!("C0A0"));
        e.insert("MsgId".into(), json!(msg));
        let sender = format!("sender{}@example.org", h % 17);
        let rcpt = format!("user{}@example.com", (h >> 8) % 23);
        match self.stage {
            MtaStage::Receipt => {
                e.insert("IP".into(), json!(format!("203.0.113.{}", h % 250 + 1)));
                e.insert("Sender".into(), json!(sender));
                e.insert("Rcpt".into(), json!(rcpt));
                e.insert("Subject".into(), json!(format!("Report {}", h % 1000)));
                e.insert("Act".into(), json!("Acc"));
                e.insert("Dir".into(), json!("Inbound"));
            }
            MtaStage::Process => {
                e.insert("Act".into(), json!("Acc"));
                e.insert("AttCnt".into(), json!((h % 3).to_string()));
                e.insert("MsgSize".into(), json!((2048 + h % 50_000).to_string()));
                e.insert("Hld".into(), json!(""));
            }
            MtaStage::Delivery => {
                e.insert("Delivered".into(), json!("true"));
                e.insert("Rcpt".into(), json!(rcpt));
                e.insert("Latency".into(), json!((h % 5000).to_string()));
                e.insert("Dir".into(), json!("Inbound"));
            }
        }
        e
    }

    /// The file's content: `{"type":"MTA","data":[…]}` or key=value lines joined by `|`.
    pub(super) fn content(&self, format: FileFormat) -> Vec<u8> {
        let events = self.events();
        match format {
            FileFormat::Json => json!({ "type": "MTA", "data": events })
                .to_string()
                .into_bytes(),
            FileFormat::KeyValue => key_value_lines(&events).into_bytes(),
        }
    }

    /// Events in this file.
    pub(super) fn event_count(&self) -> usize {
        self.events().len()
    }
}

fn key_value_lines(events: &[Map<String, Value>]) -> String {
    let mut out = String::new();
    for e in events {
        let fields: Vec<String> = e
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        out.push_str(&fields.join("|"));
        out.push('\n');
    }
    out
}

/// Why a SIEM file could not be packed (zip or gzip, in memory).
#[derive(Debug, thiserror::Error)]
pub(super) enum PackError {
    /// The ZIP writer refused an entry.
    #[error("cannot write {name}: {source}")]
    Zip {
        name: String,
        source: zip::result::ZipError,
    },
    /// Compressing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A ZIP holding one deflated entry with a fixed timestamp, so that the bytes never change.
pub(super) fn zip_one(name: &str, content: &[u8]) -> Result<Vec<u8>, PackError> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default());
    let zerr = |source| PackError::Zip {
        name: name.to_string(),
        source,
    };
    w.start_file(name, opts).map_err(zerr)?;
    w.write_all(content)?;
    Ok(w.finish().map_err(zerr)?.into_inner())
}

/// gzip of `content` (a fixed header: no name, no mtime, so the bytes never change).
pub(super) fn gzip(content: &[u8]) -> Result<Vec<u8>, PackError> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(content)?;
    Ok(enc.finish()?)
}

/// The API 2.0 Cloud Gateway SIEM log types (`type` of `/siem/v1/batch/events/cg`), as the
/// Elastic and Sekoia collectors list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SiemBatchType {
    /// `av`
    Av,
    /// `delivery`
    Delivery,
    /// `internal email protect`
    InternalEmailProtect,
    /// `impersonation protect`
    ImpersonationProtect,
    /// `journal`
    Journal,
    /// `process`
    Process,
    /// `receipt`
    Receipt,
    /// `attachment protect`
    AttachmentProtect,
    /// `spam`
    Spam,
    /// `url protect`
    UrlProtect,
}

impl SiemBatchType {
    /// Every type, in a fixed order.
    pub const ALL: [SiemBatchType; 10] = [
        SiemBatchType::Av,
        SiemBatchType::Delivery,
        SiemBatchType::InternalEmailProtect,
        SiemBatchType::ImpersonationProtect,
        SiemBatchType::Journal,
        SiemBatchType::Process,
        SiemBatchType::Receipt,
        SiemBatchType::AttachmentProtect,
        SiemBatchType::Spam,
        SiemBatchType::UrlProtect,
    ];

    /// The `type` value on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SiemBatchType::Av => "av",
            SiemBatchType::Delivery => "delivery",
            SiemBatchType::InternalEmailProtect => "internal email protect",
            SiemBatchType::ImpersonationProtect => "impersonation protect",
            SiemBatchType::Journal => "journal",
            SiemBatchType::Process => "process",
            SiemBatchType::Receipt => "receipt",
            SiemBatchType::AttachmentProtect => "attachment protect",
            SiemBatchType::Spam => "spam",
            SiemBatchType::UrlProtect => "url protect",
        }
    }

    /// The type named by a wire value (exact, lower case).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The type in a URL path segment: spaces become `-`.
    pub(super) fn slug(self) -> String {
        self.as_str().replace(' ', "-")
    }

    fn index(self) -> u64 {
        Self::ALL.iter().position(|t| *t == self).unwrap_or(0) as u64
    }
}

/// One API 2.0 batch file: type `kind`, slot `slot`.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchFile {
    pub(super) kind: SiemBatchType,
    pub(super) slot: u64,
    start: DateTime<Utc>,
}

impl BatchFile {
    pub(super) fn new(sched: &Schedule, kind: SiemBatchType, slot: u64) -> Self {
        BatchFile {
            kind,
            slot,
            start: sched.slot_start(slot),
        }
    }

    /// The UTC day the file belongs to (its slot's start).
    pub(super) fn day(&self) -> NaiveDate {
        self.start.date_naive()
    }

    /// The object name: `url-protect/2026-12-01/000012.json.gz`.
    pub(super) fn object_name(&self) -> String {
        format!(
            "{}/{}/{:06}.json.gz",
            self.kind.slug(),
            self.day().format("%Y-%m-%d"),
            self.slot
        )
    }

    fn events(&self) -> Vec<Value> {
        let seed = self.slot.wrapping_mul(16).wrapping_add(self.kind.index());
        let n = 2 + mix(seed ^ 0xBA7C) % 3;
        (0..n)
            .map(|i| {
                let h = mix(seed.wrapping_mul(131).wrapping_add(i));
                let at = self.start + TimeDelta::seconds((h % 600) as i64);
                json!({
                    "processingId": format!("{:016x}{:08x}_{}", mix(h), h >> 32, at.timestamp()),
                    "aggregateId": format!("{:012x}_{}", mix(h ^ 3) >> 16, at.timestamp()),
                    "accountId": "C0A0",
                    "timestamp": at.timestamp_millis(),
                    "type": self.kind.as_str(),
                    "subtype": if h.is_multiple_of(2) { "Acc" } else { "Hld" },
                    "senderEnvelope": format!("sender{}@example.org", h % 17),
                    "messageId": format!("<{:016x}@mail.example.net>", mix(h ^ 5)),
                })
            })
            .collect()
    }

    /// Newline-delimited JSON, one event per line.
    pub(super) fn ndjson(&self) -> Vec<u8> {
        let mut out = String::new();
        for e in self.events() {
            out.push_str(&e.to_string());
            out.push('\n');
        }
        out.into_bytes()
    }

    pub(super) fn event_count(&self) -> usize {
        self.events().len()
    }
}

/// A file the simulator has produced, for tests that check what a client collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiemFile {
    /// Position in its feed (1.0: file number; 2.0: slot), from 0.
    pub seq: u64,
    /// 1.0: the `Content-Disposition` name for `fileFormat: json, compress: true`
    /// (`receipt_20261201T1000_000012.json.zip`); 2.0: the object name
    /// (`receipt/2026-12-01/000012.json.gz`).
    pub name: String,
    /// Lower-case hex SHA-256 of the uncompressed content (1.0: the JSON file inside the ZIP;
    /// 2.0: the NDJSON inside the gzip).
    pub content_sha256: String,
    /// Events in the file.
    pub events: usize,
    /// When it became available (simulated clock).
    pub available_at: DateTime<Utc>,
    /// Still within retention (false: the API no longer serves it).
    pub kept: bool,
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Signs and checks the opaque tokens (`mc-siem-token`, `@nextPage`, file URLs).
pub(super) struct TokenKey([u8; 32]);

impl TokenKey {
    pub(super) fn random() -> Self {
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut k);
        TokenKey(k)
    }

    /// Hex HMAC-SHA256 of `text`, first 16 bytes.
    pub(super) fn tag(&self, text: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(text.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// `base64url(text "." tag)`.
    pub(super) fn seal(&self, text: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("{text}.{}", self.tag(text)))
    }

    /// The text of a token this key sealed; None for anything else.
    pub(super) fn open(&self, token: &str) -> Option<String> {
        let raw = URL_SAFE_NO_PAD
            .decode(token.trim().trim_end_matches('='))
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (text, tag) = s.rsplit_once('.')?;
        (self.tag(text) == tag).then(|| text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn schedule_slots_availability_and_retention() {
        let min = Duration::from_secs(60);
        let s = Schedule::new(
            at("2026-12-01T10:07:00Z"),
            60 * min,
            15 * min,
            Duration::from_secs(7 * 86_400),
        );
        assert_eq!(s.slot_start(0), at("2026-12-01T09:00:00Z"));
        assert_eq!(s.available(at("2026-12-01T10:07:00Z")), 4);
        assert_eq!(s.available(at("2026-12-01T10:15:00Z")), 5);
        assert_eq!(s.first_kept(at("2026-12-01T10:15:00Z")), 0);
        // Slot 0 is available at 09:15; kept until 7 days later.
        assert_eq!(s.first_kept(at("2026-12-08T09:15:00Z")), 0);
        assert_eq!(s.first_kept(at("2026-12-08T09:15:01Z")), 1);
        assert_eq!(
            s.first_on(NaiveDate::from_ymd_opt(2026, 12, 2).unwrap()),
            60
        );
        assert_eq!(s.through(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()), 60);
    }

    #[test]
    fn tokens_round_trip_and_reject_forgeries() {
        let k = TokenKey::random();
        let t = k.seal("mta:5");
        assert_eq!(k.open(&t).as_deref(), Some("mta:5"));
        let forged = URL_SAFE_NO_PAD.encode("mta:6.00");
        assert_eq!(k.open(&forged), None);
        assert_eq!(k.open("not base64 !"), None);
        assert_eq!(TokenKey::random().open(&t), None);
    }

    #[test]
    fn content_is_deterministic() {
        let s = Schedule::new(
            at("2026-12-01T10:07:00Z"),
            Duration::from_secs(3600),
            Duration::from_secs(900),
            Duration::from_secs(86_400),
        );
        let a = MtaFile::new(&s, 4).content(FileFormat::Json);
        assert_eq!(a, MtaFile::new(&s, 4).content(FileFormat::Json));
        assert_ne!(a, MtaFile::new(&s, 5).content(FileFormat::Json));
        assert_eq!(
            zip_one("x.json", &a).unwrap(),
            zip_one("x.json", &a).unwrap()
        );
        let b = BatchFile::new(&s, SiemBatchType::UrlProtect, 2);
        assert_eq!(b.object_name(), "url-protect/2026-12-01/000002.json.gz");
        assert_eq!(gzip(&b.ndjson()).unwrap(), gzip(&b.ndjson()).unwrap());
    }
}
