//! Secret values known to a run, and masking them as `***` in everything the run prints or writes.
use std::sync::{Arc, RwLock};

/// The mask written in place of a secret.
pub const MASK: &str = "***";

/// Secrets shorter than this are not masked inside other text (too many false hits),
/// but a value equal to one is still masked as a whole.
const MIN_SUBSTRING_LEN: usize = 4;

/// Plain words up to this long (letters only: `wrong`, `secret`, `password`) are masked only
/// where a value is exactly the secret: inside other text they are the vendor's own words
/// ("unknown client or wrong secret") far more often than the credential. A real credential
/// is longer or mixes in digits and signs; [`is_plain_word`] finds these so that the run can
/// warn about them.
const PLAIN_WORD_MAX_LEN: usize = 8;

/// Whether a secret value is a short plain word (letters only, at most
/// [`PLAIN_WORD_MAX_LEN`]): masked only as a whole value, never inside other text, so a run
/// should warn that it is too weak to be masked safely.
pub fn is_plain_word(value: &str) -> bool {
    let v = value.trim();
    !v.is_empty() && v.len() <= PLAIN_WORD_MAX_LEN && v.bytes().all(|b| b.is_ascii_alphabetic())
}

/// The warning for a secret that is a short plain word, naming where it came from (an input
/// or an environment variable), never the value.
pub fn plain_word_note(source: &str) -> String {
    format!(
        "the secret in {source} is a short plain word: it is masked only where a value is \
         exactly that word, not inside other text (where it would hide the vendor's own \
         words); a real credential is longer, so set a real one or a longer test value"
    )
}

/// A shared, growable set of secret values. Cheap to clone; all clones see additions.
///
/// Values derived from a secret (an OAuth token, an `Authorization` header, its base64 form)
/// are added by whoever derives them, so they are masked too.
#[derive(Clone, Default, Debug)]
pub struct Secrets {
    inner: Arc<RwLock<Set>>,
}

/// Per-request values (a request signature) remembered at most: the newest this many are
/// masked. Without a bound a 100,000-request sweep would mask every line against millions of
/// old signatures (quadratic time, growing memory).
const EPHEMERAL_KEPT: usize = 1024;

/// The registered values, longest first, so that a secret containing another is masked
/// whole; per-request values carry their sequence number and the oldest are dropped.
#[derive(Default, Debug)]
struct Set {
    values: Vec<(String, Option<u64>)>,
    ephemeral: usize,
    next: u64,
}

impl Set {
    fn iter(&self) -> impl Iterator<Item = &String> {
        self.values.iter().map(|(v, _)| v)
    }

    /// The values masked inside other text too (not only as a whole value).
    fn inside_text(&self) -> impl Iterator<Item = &String> {
        self.iter().filter(|s| masked_inside_text(s))
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    fn insert(&mut self, value: &str, ephemeral: bool) {
        // Values of the same length sit together: look for a duplicate among them only.
        let start = self.values.partition_point(|(v, _)| v.len() > value.len());
        let end = self.values.partition_point(|(v, _)| v.len() >= value.len());
        if self.values[start..end].iter().any(|(v, _)| v == value) {
            return;
        }
        let seq = ephemeral.then(|| {
            self.next += 1;
            self.ephemeral += 1;
            self.next
        });
        self.values.insert(end, (value.to_string(), seq));
        if self.ephemeral > EPHEMERAL_KEPT * 2 {
            // Drop the older half in one pass (amortized O(1) per insert).
            let keep_from = self.next - EPHEMERAL_KEPT as u64;
            self.values.retain(|(_, s)| s.is_none_or(|s| s > keep_from));
            self.ephemeral = EPHEMERAL_KEPT;
        }
    }
}

impl Secrets {
    /// An empty set; values are added as inputs and credentials are resolved.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a secret value with its common encodings (base64, URL-safe base64,
    /// percent-encoded, upper and lower case), which vendor code or a server may show it in.
    /// Empty values are ignored.
    pub fn add(&self, value: impl AsRef<str>) {
        let value = value.as_ref();
        self.insert(value);
        if value.len() >= MIN_SUBSTRING_LEN {
            for encoded in encodings(value) {
                self.insert(&encoded);
            }
        }
    }

    /// Registers a value derived from a secret that is used for one request only (a request
    /// signature, the header carrying it), with its encodings: the newest
    /// [`EPHEMERAL_KEPT`] such values are masked, older ones forgotten.
    pub fn add_per_request(&self, value: &str) {
        if value.len() < MIN_SUBSTRING_LEN {
            return self.add(value);
        }
        let mut guard = self.write();
        guard.insert(value, true);
        for encoded in encodings(value) {
            guard.insert(&encoded, true);
        }
    }

    /// Registers a value derived from a secret (an encoding, a header built from one). Values
    /// too short to mask inside other text are left out: a derived `3` or `true` would mask
    /// every other `3` or `true`.
    pub fn add_derived(&self, value: &str) {
        if value.len() >= MIN_SUBSTRING_LEN {
            self.insert(value);
        }
    }

    fn insert(&self, value: &str) {
        if value.is_empty() {
            return;
        }
        self.write().insert(value, false);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Set> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True when `text` is, or contains, a registered secret (as [`Secrets::mask`] would
    /// replace it), without building the masked copy.
    pub fn contains_secret(&self, text: &str) -> bool {
        let guard = self.read();
        guard.iter().any(|s| text == s) || guard.inside_text().any(|s| text.contains(s.as_str()))
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.read().len() == 0
    }

    /// Whether `other` is a clone of this set (they share additions).
    pub fn same_set(&self, other: &Secrets) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Set> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces every registered secret inside `text` by `***`.
    pub fn mask(&self, text: &str) -> String {
        let guard = self.read();
        let mut out = text.to_string();
        for secret in guard.iter() {
            if out == *secret {
                return MASK.to_string();
            }
            if masked_inside_text(secret) && out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }

    /// Masks the first `max_bytes` of `text` (the rest is dropped). When the text is longer,
    /// a secret the bound cuts through is masked too: what is left of it at the end of the
    /// window is replaced by `***`, so a cut never shows part of a secret.
    pub fn mask_window(&self, text: &str, max_bytes: usize) -> String {
        if text.len() <= max_bytes {
            return self.mask(text);
        }
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.mask_cut_tail(self.mask(&text[..end]))
    }

    /// Replaces the longest end of `text` that is the start of a registered secret (what a
    /// cut leaves of it) by `***`.
    fn mask_cut_tail(&self, mut text: String) -> String {
        let guard = self.read();
        let start = guard
            .inside_text()
            .filter_map(|secret| {
                let from = text.len().saturating_sub(secret.len() - 1);
                (from..text.len())
                    .filter(|&i| text.is_char_boundary(i))
                    .find(|&i| secret.starts_with(&text[i..]))
            })
            .min();
        if let Some(start) = start {
            text.truncate(start);
            text.push_str(MASK);
        }
        text
    }

    /// Masks every string inside a JSON value (keys are left alone).
    pub fn mask_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(self.mask(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.mask_json(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.mask_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// The forms a secret commonly travels in, other than itself.
fn encodings(value: &str) -> Vec<String> {
    use base64::Engine as _;
    let b = value.as_bytes();
    let forms = [
        base64::engine::general_purpose::STANDARD.encode(b),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
        url::form_urlencoded::byte_serialize(b).collect(),
        value.to_uppercase(),
        value.to_lowercase(),
    ];
    forms.into_iter().filter(|f| f != value).collect()
}

/// Whether a registered value is masked inside other text: long enough, and not a short
/// plain word (see [`PLAIN_WORD_MAX_LEN`]).
fn masked_inside_text(secret: &str) -> bool {
    secret.len() >= MIN_SUBSTRING_LEN && !is_plain_word(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_inside_text_and_whole_values() {
        let s = Secrets::new();
        s.add("hunter22");
        s.add("abc");
        assert_eq!(s.mask("password=hunter22&x=1"), "password=***&x=1");
        assert_eq!(s.mask("abc"), "***");
        // short secrets are not masked inside unrelated words
        assert_eq!(s.mask("abcdef"), "abcdef");
    }

    #[test]
    fn common_encodings_of_a_secret_are_masked_too() {
        let s = Secrets::new();
        s.add("p@ss word+1");
        for shown in [
            "cEBzcyB3b3JkKzE=",
            "cEBzcyB3b3JkKzE",
            "p%40ss%20word%2B1",
            "P@SS WORD+1",
        ] {
            assert_eq!(s.mask(&format!("got {shown}")), "got ***", "{shown}");
        }
        s.add_derived("abc");
        assert_eq!(s.mask("abc"), "abc");
    }

    #[test]
    fn per_request_values_are_masked_and_the_oldest_forgotten() {
        let s = Secrets::new();
        s.add("long-lived-key");
        for i in 0..EPHEMERAL_KEPT * 5 {
            s.add_per_request(&format!("signature-{i:06}"));
        }
        let newest = format!("signature-{:06}", EPHEMERAL_KEPT * 5 - 1);
        assert_eq!(s.mask(&format!("a {newest} b")), "a *** b");
        assert_eq!(s.mask("x long-lived-key y"), "x *** y");
        assert_eq!(s.mask("signature-000000"), "signature-000000");
        // Seven forms per value, the newest EPHEMERAL_KEPT..2x of them kept.
        assert!(
            s.read().len() <= 2 * EPHEMERAL_KEPT + 8,
            "{}",
            s.read().len()
        );
    }

    #[test]
    fn a_window_masks_the_secret_its_bound_cuts() {
        let s = Secrets::new();
        s.add("abcdefghijklmnopqrstuvwxyz");
        let text = format!("{}abcdefghijklmnopqrstuvwxyz", "x".repeat(10));
        assert_eq!(s.mask_window(&text, 35), format!("{}***", "x".repeat(10)));
        assert_eq!(s.mask_window(&text, 100), format!("{}***", "x".repeat(10)));
        // a cut that leaves no part of it changes nothing
        assert_eq!(s.mask_window(&text, 10), "x".repeat(10));
    }

    #[test]
    fn a_short_plain_word_is_masked_only_as_a_whole_value() {
        let s = Secrets::new();
        s.add("wrong");
        s.add("Password");
        assert!(is_plain_word("wrong") && is_plain_word("Password"));
        assert!(!is_plain_word("hunter22") && !is_plain_word("correcthorse"));
        assert_eq!(
            s.mask("unknown client or wrong secret; bad password"),
            "unknown client or wrong secret; bad password"
        );
        assert_eq!(s.mask("wrong"), "***");
        assert_eq!(s.mask("PASSWORD"), "***");
        assert!(s.contains_secret("wrong") && !s.contains_secret("the wrong one"));
        assert_eq!(
            s.mask_json(&serde_json::json!({"p": "Password", "m": "a wrong turn"})),
            serde_json::json!({"p": "***", "m": "a wrong turn"})
        );
        // its base64 form is no word: masked wherever it appears
        assert_eq!(s.mask("Basic d3Jvbmc="), "Basic ***");
        assert!(plain_word_note("`env.X`").contains("`env.X`"));
    }

    #[test]
    fn longer_secret_wins_over_its_prefix() {
        let s = Secrets::new();
        s.add("token");
        s.add("token-with-suffix");
        assert_eq!(s.mask("Bearer token-with-suffix"), "Bearer ***");
    }

    #[test]
    fn clones_share_additions_and_json_is_masked_deeply() {
        let s = Secrets::new();
        let c = s.clone();
        c.add("s3cr3t-value");
        let v = serde_json::json!({"a": ["x s3cr3t-value y"], "b": 1});
        assert_eq!(
            s.mask_json(&v),
            serde_json::json!({"a": ["x *** y"], "b": 1})
        );
    }
}
