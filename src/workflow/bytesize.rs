//! Byte sizes as users write them: `512KiB`, `64MiB`, `1GiB`, `10MB`, `4096B`.
//!
//! One parser for every size auditflow reads (today `call.max_response_size`), strict like
//! durations: a whole number and a unit, nothing else, so `64M` or `64 megs` is refused with
//! the accepted forms instead of being guessed at.
use super::unit_text::{unit_text_impls, UnitText};

/// The accepted forms, quoted by every size error.
pub const ACCEPTED_FORMS: &str = "a whole number followed by B, KB, MB, GB (powers of 1000) \
or KiB, MiB, GiB (powers of 1024), e.g. 512KiB, 64MiB, 1GiB";

/// The units with their size in bytes.
const UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
];

/// A size in bytes in a workflow file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Why a text is not a size; every message ends with the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    /// Nothing was written.
    #[error("empty size; write {ACCEPTED_FORMS}")]
    Empty,
    /// What was written (trimmed) and what is wrong with it.
    #[error("invalid size `{text}`: {problem}; write {ACCEPTED_FORMS}")]
    Invalid {
        /// The text as written, trimmed.
        text: String,
        /// What is wrong with it.
        problem: ByteSizeProblem,
    },
}

/// What is wrong with a size's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeProblem {
    /// No digits first.
    #[error("expected a number first")]
    NoNumber,
    /// A number without a unit.
    #[error("`{0}` has no unit")]
    NoUnit(String),
    /// A unit that is not one of the accepted ones.
    #[error("unknown unit `{0}`")]
    UnknownUnit(String),
    /// A number that does not fit 64 bits.
    #[error("number too large")]
    NumberTooLarge,
    /// Zero.
    #[error("a size must be more than 0")]
    Zero,
    /// A total that does not fit 64 bits.
    #[error("too large")]
    TooLarge,
}

/// Parses a size: `<whole number><unit>`, optionally one space between; units as in
/// [`ACCEPTED_FORMS`] (case as written there). No bare numbers, no fractions, no zero.
pub fn parse_byte_size(text: &str) -> Result<u64, ByteSizeError> {
    let t = text.trim();
    let bad = |problem: ByteSizeProblem| ByteSizeError::Invalid {
        text: t.to_string(),
        problem,
    };
    if t.is_empty() {
        return Err(ByteSizeError::Empty);
    }
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad(ByteSizeProblem::NoNumber));
    }
    let (num, unit) = t.split_at(digits);
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let Some((_, scale)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(bad(if unit.is_empty() {
            ByteSizeProblem::NoUnit(num.to_string())
        } else {
            ByteSizeProblem::UnknownUnit(unit.to_string())
        }));
    };
    let n: u64 = num
        .parse()
        .map_err(|_| bad(ByteSizeProblem::NumberTooLarge))?;
    if n == 0 {
        return Err(bad(ByteSizeProblem::Zero));
    }
    n.checked_mul(*scale)
        .ok_or_else(|| bad(ByteSizeProblem::TooLarge))
}

/// Formats a size compactly in a syntax the parser reads (`64MiB`, `1500B`).
pub fn format_byte_size(bytes: u64) -> String {
    for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    format!("{bytes}B")
}

impl UnitText for ByteSize {
    const WHAT: &'static str = "size";
    const EXPECTING: &'static str = "a size such as 512KiB, 64MiB or 1GiB";
    const ACCEPTED_FORMS: &'static str = ACCEPTED_FORMS;
    const SCHEMA_NAME: &'static str = "ByteSize";
    const SCHEMA_DESCRIPTION: &'static str = "A size: a whole number with a unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. 512KiB, 64MiB, 1GiB.";
    const SCHEMA_PATTERN: &'static str = "^\\s*[0-9]+ ?(B|KB|MB|GB|KiB|MiB|GiB)\\s*$";
    type Error = ByteSizeError;
    fn parse(text: &str) -> Result<Self, ByteSizeError> {
        parse_byte_size(text).map(ByteSize)
    }
    fn format(&self) -> String {
        format_byte_size(self.0)
    }
}

unit_text_impls!(ByteSize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_byte_size("4096B"), Ok(4096));
        assert_eq!(parse_byte_size("2KB"), Ok(2000));
        assert_eq!(parse_byte_size("3MB"), Ok(3_000_000));
        assert_eq!(parse_byte_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_byte_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_byte_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_byte_size(" 2 GiB "), Ok(2 << 30));
    }

    #[test]
    fn refuses_everything_else_listing_the_accepted_forms() {
        for bad in [
            "64",
            "64M",
            "64mb",
            "64 megs",
            "1.5GiB",
            "0MiB",
            "MiB",
            "-1KiB",
            "64  MiB",
            "1e3B",
            "99999999999999999999B",
            "20000000000GiB",
        ] {
            let e = parse_byte_size(bad).expect_err(bad).to_string();
            assert!(e.contains("KiB, MiB, GiB"), "{bad}: {e}");
        }
        assert!(parse_byte_size("64M")
            .unwrap_err()
            .to_string()
            .starts_with("invalid size `64M`: unknown unit `M`;"));
    }

    #[test]
    fn formats_in_the_syntax_it_parses() {
        for n in [1, 1000, 1024, 64 << 20, 3 << 30, 1_500_000] {
            assert_eq!(parse_byte_size(&format_byte_size(n)), Ok(n));
        }
        assert_eq!(format_byte_size(64 << 20), "64MiB");
    }

    #[test]
    fn yaml_numbers_are_refused() {
        let e = serde_yaml_ng::from_str::<ByteSize>("1024")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a number needs a unit"), "{e}");
        assert_eq!(
            serde_yaml_ng::from_str::<ByteSize>("8KiB").ok(),
            Some(ByteSize(8192))
        );
    }
}
