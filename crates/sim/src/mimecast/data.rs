//! Deterministic data the simulated Mimecast serves: queue messages, audit events and tokens.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

/// The date form Mimecast uses in bodies: `2015-11-16T14:49:18+0000`.
const DATE_FMT: &str = "%Y-%m-%dT%H:%M:%S%z";

/// Formats a time the way Mimecast writes dates in JSON bodies.
pub(super) fn fmt_date(t: DateTime<Utc>) -> String {
    t.format(DATE_FMT).to_string()
}

/// Parses an ISO 8601 date as Mimecast documents it (`2015-11-16T14:49:18+0000`); an offset
/// with a colon and `Z` (RFC 3339) are ISO 8601 too and accepted.
pub(super) fn parse_iso(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_str(s, DATE_FMT) {
        return Some(t.with_timezone(&Utc));
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// splitmix64: a cheap, well-mixed deterministic hash of an index.
pub(super) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a over bytes; binds page tokens to the query they were issued for.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// A Mimecast-looking secure id (`eNo…`, URL-safe base64) derived from a label.
fn secure_id(label: &str) -> String {
    let a = Sha1::digest(label.as_bytes());
    let b = Sha1::digest(format!("{label}/2").as_bytes());
    let mut bytes = a.to_vec();
    bytes.extend_from_slice(&b);
    format!("eNo{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn pick<T: Copy>(items: &[T], h: u64) -> T {
    items[(h % items.len() as u64) as usize]
}

const USERS: &[(&str, &str)] = &[
    ("alice.martin", "Alice Martin"),
    ("bob.nguyen", "Bob Nguyen"),
    ("carol.schmidt", "Carol Schmidt"),
    ("dave.okafor", "Dave Okafor"),
    ("erin.kowalski", "Erin Kowalski"),
    ("frank.dubois", "Frank Dubois"),
    ("grace.lee", "Grace Lee"),
];
const INTERNAL_DOMAIN: &str = "example.com";
const EXTERNAL: &[(&str, &str)] = &[
    ("billing@vendor.example.org", "Vendor Billing"),
    ("noreply@partner.example.net", "Partner Notifications"),
    ("j.smith@customer.example.io", "John Smith"),
    ("support@saas.example.dev", "SaaS Support"),
];
const SUBJECTS: &[&str] = &[
    "Quarterly report",
    "Invoice",
    "Re: project update",
    "Meeting notes",
    "Contract draft for review",
    "Delivery status notification",
    "Fwd: onboarding checklist",
];
const INFOS: &[&str] = &[
    "Awaiting delivery",
    "Remote server busy (421), will retry",
    "Connection timed out, will retry",
    "Greylisted by remote server, will retry",
    "Scanning attachments",
];
pub(super) const ROUTES: &[&str] = &["inbound", "outbound", "internal", "external"];

/// An email address with its display name, as the API nests them.
#[derive(Debug, Clone)]
pub(super) struct Address {
    pub email: String,
    pub name: String,
}

impl Address {
    fn internal(h: u64) -> Self {
        let (local, name) = pick(USERS, h);
        Address {
            email: format!("{local}@{INTERNAL_DOMAIN}"),
            name: name.to_string(),
        }
    }
    fn external(h: u64) -> Self {
        let (email, name) = pick(EXTERNAL, h);
        Address {
            email: email.to_string(),
            name: name.to_string(),
        }
    }
    fn to_json(&self) -> Value {
        json!({"emailAddress": self.email, "displayableName": self.name})
    }
}

/// One message of the simulated processing queue.
#[derive(Debug, Clone)]
pub(super) struct QueueMessage {
    pub id: String,
    pub from_env: Address,
    pub from_header: Address,
    pub to: Address,
    pub subject: String,
    pub attachment: bool,
    pub routing: &'static str,
    pub size: u64,
    pub remote_ip: String,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
    pub created: DateTime<Utc>,
    pub info: &'static str,
    pub locked_until: DateTime<Utc>,
}

impl QueueMessage {
    pub(super) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "fromEnv": self.from_env.to_json(),
            "fromHeader": self.from_header.to_json(),
            "to": self.to.to_json(),
            "subject": self.subject,
            "attachment": self.attachment,
            "routing": self.routing,
            "size": self.size,
            "remoteIp": self.remote_ip,
            "attempts": self.attempts,
            "nextAttempt": fmt_date(self.next_attempt),
            "created": fmt_date(self.created),
            "info": self.info,
            "lockedUntil": fmt_date(self.locked_until),
        })
    }
}

/// `n` queue messages, newest first, created within the six days before `anchor` (so that the
/// documented default window, the last seven days, holds all of them).
pub(super) fn queue(n: usize, anchor: DateTime<Utc>) -> Vec<QueueMessage> {
    let span = 6 * 24 * 3600i64;
    let step = (span / (n as i64 + 1)).max(1);
    (0..n)
        .map(|i| {
            let h = mix(i as u64);
            let routing = pick(ROUTES, h);
            let (from, to) = match routing {
                "inbound" => (Address::external(h >> 8), Address::internal(h >> 16)),
                "outbound" => (Address::internal(h >> 8), Address::external(h >> 16)),
                "internal" => (Address::internal(h >> 8), Address::internal(h >> 20)),
                _ => (Address::external(h >> 8), Address::external(h >> 20)),
            };
            let from_header = if i % 7 == 3 {
                Address {
                    email: from.email.clone(),
                    name: format!("{} (via list)", from.name),
                }
            } else {
                from.clone()
            };
            let created = anchor - TimeDelta::seconds(step * (i as i64 + 1));
            let attempts = 1 + (h >> 24) % 5;
            let remote_ip = if routing == "inbound" || routing == "external" {
                format!("203.0.113.{}", 1 + (h >> 32) % 254)
            } else {
                format!("198.51.100.{}", 1 + (h >> 32) % 254)
            };
            QueueMessage {
                id: secure_id(&format!("sim-queue-{i}")),
                from_env: from,
                from_header,
                to,
                subject: format!("{} #{}", pick(SUBJECTS, h >> 40), i + 1),
                attachment: (h >> 3) & 1 == 1,
                routing,
                size: 2_000 + (h >> 12) % 4_000_000,
                remote_ip,
                attempts: attempts as u32,
                next_attempt: created + TimeDelta::minutes(5 * attempts as i64),
                created,
                info: pick(INFOS, h >> 44),
                locked_until: created + TimeDelta::minutes(90),
            }
        })
        .collect()
}

const AUDIT_KINDS: &[(&str, &str)] = &[
    ("Logon Authentication Failed", "authentication_logs"),
    ("Logon Successful", "authentication_logs"),
    ("Search Started", "archive_search_logs"),
    ("Message Released", "message_actions_logs"),
    ("Policy Updated", "policy_logs"),
    ("Export Started", "archive_export_logs"),
    ("User Role Changed", "user_logs"),
];

/// One administrative audit event.
#[derive(Debug, Clone)]
pub(super) struct AuditEvent {
    pub id: String,
    pub audit_type: &'static str,
    pub user: String,
    pub event_time: DateTime<Utc>,
    pub event_info: String,
    pub category: &'static str,
}

impl AuditEvent {
    pub(super) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "auditType": self.audit_type,
            "user": self.user,
            "eventTime": fmt_date(self.event_time),
            "eventInfo": self.event_info,
            "category": self.category,
        })
    }
}

/// `n` audit events, newest first, within the thirty days before `anchor`.
pub(super) fn audit_events(n: usize, anchor: DateTime<Utc>) -> Vec<AuditEvent> {
    let span = 30 * 24 * 3600i64;
    let step = (span / (n as i64 + 1)).max(1);
    (0..n)
        .map(|i| {
            let h = mix(0xA0D1_7000 + i as u64);
            let (audit_type, category) = pick(AUDIT_KINDS, h);
            let user = Address::internal(h >> 8).email;
            let event_time = anchor - TimeDelta::seconds(step * (i as i64 + 1));
            let ip = format!("198.51.100.{}", 1 + (h >> 32) % 254);
            let event_info = format!(
                "{audit_type}, Application: Mimecast Administration Console, IP: {ip}, Date: {}",
                event_time.format("%Y-%m-%d %H:%M:%S")
            );
            AuditEvent {
                id: secure_id(&format!("sim-audit-{i}")),
                audit_type,
                user,
                event_time,
                event_info,
                category,
            }
        })
        .collect()
}

/// The latest token of an event channel: 43 URL-safe characters, a function of the id.
pub(super) fn channel_token(channel_id: &str) -> String {
    let a = Sha1::digest(format!("ess-latest:{channel_id}").as_bytes());
    let b = Sha1::digest(format!("ess-latest/2:{channel_id}").as_bytes());
    let mut bytes = a.to_vec();
    bytes.extend_from_slice(&b[..12]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An opaque page token: which listing, where the page starts, and the query it belongs to.
pub(super) fn page_token(kind: &str, offset: usize, query: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{offset}:{query:016x}"))
}

/// The offset a page token stands for, if it is one this server issued for this query.
pub(super) fn parse_page_token(token: &str, kind: &str, query: u64, total: usize) -> Option<usize> {
    let raw = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let mut parts = text.split(':');
    let (k, off, q) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || k != kind || q != format!("{query:016x}") {
        return None;
    }
    let offset: usize = off.parse().ok()?;
    (offset < total || offset == 0).then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_in_mimecast_form() {
        let t = parse_iso("2015-11-16T14:49:18+0000").expect("documented form parses");
        assert_eq!(fmt_date(t), "2015-11-16T14:49:18+0000");
        assert_eq!(parse_iso("2015-11-16T16:49:18+02:00"), Some(t));
        assert_eq!(parse_iso("2015-11-16T14:49:18Z"), Some(t));
        assert_eq!(parse_iso("16/11/2015"), None);
    }

    #[test]
    fn generated_data_is_deterministic_and_ordered() {
        let anchor = Utc::now();
        let a = queue(30, anchor);
        let b = queue(30, anchor);
        assert_eq!(a.len(), 30);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.to_json(), y.to_json());
        }
        assert!(a.windows(2).all(|w| w[0].created > w[1].created));
        assert!(a.iter().all(|m| anchor - m.created < TimeDelta::days(7)));
        let ids: std::collections::HashSet<_> = a.iter().map(|m| m.id.clone()).collect();
        assert_eq!(ids.len(), 30);
    }

    #[test]
    fn page_tokens_are_bound_to_kind_and_query() {
        let t = page_token("audit", 50, 7);
        assert_eq!(parse_page_token(&t, "audit", 7, 100), Some(50));
        assert_eq!(parse_page_token(&t, "queue", 7, 100), None);
        assert_eq!(parse_page_token(&t, "audit", 8, 100), None);
        assert_eq!(parse_page_token(&t, "audit", 7, 50), None);
        assert_eq!(parse_page_token("not a token", "audit", 7, 100), None);
    }

    #[test]
    fn channel_tokens_are_stable_and_distinct() {
        let a = channel_token("B8Y43U-GYVS-WHAU6M");
        assert_eq!(a, channel_token("B8Y43U-GYVS-WHAU6M"));
        assert_ne!(a, channel_token("B8Y43U-GYVS-WHAU6N"));
        assert_eq!(a.len(), 43);
    }
}
