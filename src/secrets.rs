//! Secret values known to a run, and masking them as `***` in everything the run prints or writes.
use std::sync::{Arc, RwLock};

/// The mask written in place of a secret.
pub const MASK: &str = "***";

/// Secrets shorter than this are not masked inside other text (too many false hits),
/// but a value equal to one is still masked as a whole.
const MIN_SUBSTRING_LEN: usize = 4;

/// A shared, growable set of secret values. Cheap to clone; all clones see additions.
///
/// Values derived from a secret (an OAuth token, an `Authorization` header, its base64 form)
/// are added by whoever derives them, so they are masked too.
#[derive(Clone, Default, Debug)]
pub struct Secrets {
    inner: Arc<RwLock<Vec<String>>>,
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
        let mut guard = match self.inner.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !guard.iter().any(|v| v == value) {
            guard.push(value.to_string());
            // Longest first, so that a secret containing another is masked whole.
            guard.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    /// True when `text` is, or contains, a registered secret (as [`Secrets::mask`] would
    /// replace it), without building the masked copy.
    pub fn contains_secret(&self, text: &str) -> bool {
        self.read()
            .iter()
            .any(|s| text == s || (s.len() >= MIN_SUBSTRING_LEN && text.contains(s.as_str())))
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Whether `other` is a clone of this set (they share additions).
    pub fn same_set(&self, other: &Secrets) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<String>> {
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
            if secret.len() >= MIN_SUBSTRING_LEN && out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
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
