//! Parsing of the headers a download relies on: `Content-Range` and SHA-256 digests.
use base64::Engine as _;
use reqwest::header::HeaderMap;

/// A parsed `Content-Range` header (RFC 9110 §14.4), bytes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ContentRange {
    /// `bytes start-end/total` (`total` is `None` for `*`).
    Bytes {
        start: u64,
        end: u64,
        total: Option<u64>,
    },
    /// `bytes */total`, sent with 416.
    Unsatisfied { total: u64 },
}

pub(super) fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?;
    let rest = rest.strip_prefix(' ')?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok()?),
    };
    if range.trim() == "*" {
        return total.map(|total| ContentRange::Unsatisfied { total });
    }
    let (start, end) = range.trim().split_once('-')?;
    let start = start.parse::<u64>().ok()?;
    let end = end.parse::<u64>().ok()?;
    if end < start || total.is_some_and(|t| end >= t) {
        return None;
    }
    Some(ContentRange::Bytes { start, end, total })
}

/// A SHA-256 the server announced for the whole file, and the header it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ServerDigest {
    pub header: &'static str,
    pub sha256: [u8; 32],
}

/// Every SHA-256 of the whole representation the response announces.
///
/// `Repr-Digest` (RFC 9530), `Digest` (RFC 3230) and the vendor headers `x-checksum-sha256`
/// and `x-goog-hash` describe the whole file whatever range was asked for; `Content-Digest`
/// describes the bytes of this response, so it counts only when `whole_body` is true.
/// Malformed values are ignored (logged at debug): they cannot be checked either way.
pub(super) fn server_digests(headers: &HeaderMap, whole_body: bool) -> Vec<ServerDigest> {
    let mut out = Vec::new();
    let mut push = |header: &'static str, sha256: Option<[u8; 32]>| match sha256 {
        Some(sha256) => {
            if !out.iter().any(|d: &ServerDigest| d.sha256 == sha256) {
                out.push(ServerDigest { header, sha256 });
            }
        }
        None => tracing::debug!(header, "ignoring a malformed SHA-256 digest header"),
    };
    for (header, sf) in [
        ("repr-digest", true),
        ("content-digest", true),
        ("digest", false),
        ("x-goog-hash", false),
    ] {
        if header == "content-digest" && !whole_body {
            continue;
        }
        for value in headers.get_all(header) {
            let Ok(value) = value.to_str() else {
                push(header, None);
                continue;
            };
            for member in value.split(',') {
                let Some((key, val)) = member.split_once('=') else {
                    continue;
                };
                let key = key.trim().to_ascii_lowercase();
                if key != "sha-256" && key != "sha256" {
                    continue;
                }
                // Structured fields put parameters after `;` and wrap byte sequences in colons.
                let val = val.split(';').next().unwrap_or("").trim();
                let val = if sf || val.starts_with(':') {
                    match val.strip_prefix(':').and_then(|v| v.strip_suffix(':')) {
                        Some(v) => v,
                        None => {
                            push(header, None);
                            continue;
                        }
                    }
                } else {
                    val
                };
                push(header, decode_base64_sha256(val));
            }
        }
    }
    for value in headers.get_all("x-checksum-sha256") {
        let parsed = value.to_str().ok().and_then(|v| {
            let v = v.trim();
            parse_hex_sha256(v).or_else(|| decode_base64_sha256(v))
        });
        push("x-checksum-sha256", parsed);
    }
    out
}

/// The caller's expected SHA-256: 64 hex digits, optionally prefixed `sha256:` or `sha-256:`.
pub(super) fn parse_expected_sha256(value: &str) -> Option<[u8; 32]> {
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    let v = if lower.starts_with("sha256:") {
        &v[7..]
    } else if lower.starts_with("sha-256:") {
        &v[8..]
    } else {
        v
    };
    parse_hex_sha256(v)
}

fn parse_hex_sha256(v: &str) -> Option<[u8; 32]> {
    hex::FromHex::from_hex(v).ok()
}

fn decode_base64_sha256(v: &str) -> Option<[u8; 32]> {
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(v.trim()).ok())
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use sha2::{Digest as _, Sha256};

    fn sha(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    fn b64(d: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(d)
    }

    #[test]
    fn content_range_forms() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some(ContentRange::Bytes {
                start: 100,
                end: 199,
                total: Some(1000)
            })
        );
        assert_eq!(
            parse_content_range("bytes 0-9/*"),
            Some(ContentRange::Bytes {
                start: 0,
                end: 9,
                total: None
            })
        );
        assert_eq!(
            parse_content_range("bytes */1000"),
            Some(ContentRange::Unsatisfied { total: 1000 })
        );
        for bad in [
            "",
            "bytes",
            "items 0-1/2",
            "bytes 5-1/10",
            "bytes 0-10/10",
            "bytes a-b/c",
            "bytes */*",
            "bytes 1-2",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn digests_from_each_header_form() {
        let d = sha(b"hello");
        let mut h = HeaderMap::new();
        let repr = format!("sha-512=:AAAA:, sha-256=:{}:", b64(&d));
        h.insert("repr-digest", HeaderValue::from_str(&repr).expect("hv"));
        assert_eq!(server_digests(&h, false)[0].sha256, d);

        let mut h = HeaderMap::new();
        let dig = format!("MD5=abc==, SHA-256={}", b64(&d));
        h.insert("digest", HeaderValue::from_str(&dig).expect("hv"));
        assert_eq!(server_digests(&h, false)[0].sha256, d);

        let mut h = HeaderMap::new();
        h.insert(
            "x-checksum-sha256",
            HeaderValue::from_str(&hex::encode(d)).expect("hv"),
        );
        assert_eq!(server_digests(&h, false)[0].sha256, d);

        let mut h = HeaderMap::new();
        h.append("x-goog-hash", HeaderValue::from_static("crc32c=n03x6A=="));
        let goog = format!("sha256={}", b64(&d));
        h.append("x-goog-hash", HeaderValue::from_str(&goog).expect("hv"));
        assert_eq!(server_digests(&h, false)[0].sha256, d);
    }

    #[test]
    fn content_digest_counts_only_for_whole_bodies_and_bad_values_are_ignored() {
        let d = sha(b"hello");
        let mut h = HeaderMap::new();
        let v = format!("sha-256=:{}:", b64(&d));
        h.insert("content-digest", HeaderValue::from_str(&v).expect("hv"));
        assert!(server_digests(&h, false).is_empty());
        assert_eq!(server_digests(&h, true).len(), 1);

        let mut h = HeaderMap::new();
        h.insert(
            "repr-digest",
            HeaderValue::from_static("sha-256=:bm90IDMyIGJ5dGVz:"),
        );
        h.insert("digest", HeaderValue::from_static("SHA-256=!!!"));
        assert!(server_digests(&h, true).is_empty());
    }

    #[test]
    fn expected_sha256_forms() {
        let d = sha(b"x");
        let hex = hex::encode(d);
        assert_eq!(parse_expected_sha256(&hex), Some(d));
        assert_eq!(parse_expected_sha256(&hex.to_uppercase()), Some(d));
        assert_eq!(parse_expected_sha256(&format!("sha256:{hex}")), Some(d));
        assert_eq!(parse_expected_sha256(&format!("SHA-256:{hex}")), Some(d));
        assert_eq!(parse_expected_sha256("abc"), None);
        assert_eq!(parse_expected_sha256(&"zz".repeat(32)), None);
        assert_eq!(parse_expected_sha256("é".repeat(32).as_str()), None);
    }
}
