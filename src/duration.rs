//! Durations as users write them: `200ms`, `30s`, `5m`, `2h`, `7d`, `1w`, `1h30m`, `1h 30m`.
//!
//! One parser for every duration auditflow reads (workflow fields, duration inputs, CLI flags,
//! template helpers), so that `30M` or `30mins` is refused the same way everywhere. It is a
//! leaf module of its own so that both `template` (the date helpers) and `workflow` (fields
//! and inputs) read durations without `template` importing `workflow`.
use std::time::Duration;

/// The accepted forms, quoted by every duration error.
pub const ACCEPTED_FORMS: &str = "a whole number followed by ms, s, m, h, d or w \
(milliseconds, seconds, minutes, hours, days, weeks), e.g. 200ms, 30s, 5m, 2h, 7d, 1w; \
parts combine largest unit first, with or without spaces: 1h30m, 1d 12h";

/// The units, largest first, with their length in milliseconds.
const UNITS: &[(&str, u64)] = &[
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Why a text is not a duration; every message ends with the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was written.
    #[error("empty duration; write {ACCEPTED_FORMS}")]
    Empty,
    /// What was written (trimmed) and what is wrong with it.
    #[error("invalid duration `{text}`: {problem}; write {ACCEPTED_FORMS}")]
    Invalid {
        /// The text as written, trimmed.
        text: String,
        /// What is wrong with it.
        problem: DurationProblem,
    },
}

/// What is wrong with a duration's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationProblem {
    /// No digits where a part starts (the rest of the text).
    #[error("expected a number at `{0}`")]
    NoNumber(String),
    /// A number without a unit.
    #[error("`{0}` has no unit")]
    NoUnit(String),
    /// A unit that is not one of the accepted ones.
    #[error("unknown unit `{0}`")]
    UnknownUnit(String),
    /// A unit after a smaller or equal one.
    #[error("`{0}` comes after a smaller or equal unit; write the largest unit first")]
    UnitOrder(String),
    /// A number that does not fit 64 bits.
    #[error("number too large")]
    NumberTooLarge,
    /// A total that does not fit 64 bits.
    #[error("too large")]
    TooLarge,
}

/// Parses a duration: one or more parts `<whole number><unit>`, units `ms s m h d w` (lower
/// case), each at most once and largest first; spaces may separate parts. Nothing else (no bare
/// numbers, no `M`, no `mins`, no fractions).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    let bad = |problem: DurationProblem| DurationError::Invalid {
        text: t.to_string(),
        problem,
    };
    if t.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut rest = t;
    let mut total: u64 = 0;
    // index into UNITS of the previous part's unit
    let mut previous: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad(DurationProblem::NoNumber(rest.to_string())));
        }
        let (num, after) = rest.split_at(digits);
        let unit_len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic() || *b == b'.' || *b == b',')
            .count();
        let (unit, after) = after.split_at(unit_len);
        let Some(idx) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(bad(if unit.is_empty() {
                DurationProblem::NoUnit(num.to_string())
            } else {
                DurationProblem::UnknownUnit(unit.to_string())
            }));
        };
        if previous.is_some_and(|s| idx <= s) {
            return Err(bad(DurationProblem::UnitOrder(unit.to_string())));
        }
        previous = Some(idx);
        let n: u64 = num
            .parse()
            .map_err(|_| bad(DurationProblem::NumberTooLarge))?;
        let part = n
            .checked_mul(UNITS[idx].1)
            .ok_or_else(|| bad(DurationProblem::TooLarge))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| bad(DurationProblem::TooLarge))?;
        rest = after.trim_start();
    }
    Ok(Duration::from_millis(total))
}

/// Parses a duration with an optional leading sign (`-7d`, `+2h`, `30s`), for date arithmetic.
pub fn parse_signed_duration(text: &str) -> Result<(bool, Duration), DurationError> {
    let t = text.trim();
    match t.as_bytes().first() {
        Some(b'-') => parse_duration(&t[1..]).map(|d| (true, d)),
        Some(b'+') => parse_duration(&t[1..]).map(|d| (false, d)),
        _ => parse_duration(t).map(|d| (false, d)),
    }
}

/// Formats a duration compactly in the same syntax the parser reads (`250ms`, `1.5s`, `2m 3s`,
/// `7d`); below a minute, tenths of a second are kept.
pub fn format_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    if d < Duration::from_secs(60) {
        let s = d.as_secs_f64();
        return if (s - s.round()).abs() < 0.05 {
            format!("{}s", s.round() as u64)
        } else {
            format!("{s:.1}s")
        };
    }
    let mut secs = d.as_secs();
    let mut parts = Vec::new();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= len {
            parts.push(format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(ok("200ms"), Duration::from_millis(200));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("2h"), Duration::from_secs(7200));
        assert_eq!(ok("7d"), Duration::from_secs(7 * 86400));
        assert_eq!(ok("1w"), Duration::from_secs(7 * 86400));
        assert_eq!(ok("0s"), Duration::ZERO);
    }

    #[test]
    fn combines_parts_largest_first_with_or_without_spaces() {
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1h 30m"), Duration::from_secs(5400));
        assert_eq!(ok(" 1d 2h3m4s500ms "), Duration::from_millis(93_784_500));
        assert_eq!(ok("1w1d"), Duration::from_secs(8 * 86400));
    }

    #[test]
    fn refuses_everything_else_listing_the_accepted_forms() {
        for bad in [
            "30M",
            "30mins",
            "30",
            "30 mn",
            "30 s",
            "1.5h",
            "1H",
            "soon",
            "s",
            "-5s",
            "30m1h",
            "5m5m",
            "1y",
            "2 months",
            "30sec",
            "1h,30m",
            "99999999999999999999w",
        ] {
            let e = parse_duration(bad).expect_err(bad).to_string();
            assert!(e.contains("ms, s, m, h, d or w"), "{bad}: {e}");
            let forms = e.replace(bad, "");
            assert!(
                !forms.contains("month") && !forms.contains("year"),
                "{bad}: {e}"
            );
        }
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(parse_duration("")
            .unwrap_err()
            .to_string()
            .starts_with("empty duration"));
        assert_eq!(
            parse_duration("30M"),
            Err(DurationError::Invalid {
                text: "30M".into(),
                problem: DurationProblem::UnknownUnit("M".into())
            })
        );
        let e = parse_duration("30M").unwrap_err().to_string();
        assert!(
            e.starts_with("invalid duration `30M`: unknown unit `M`;"),
            "{e}"
        );
        let e = parse_duration("30").unwrap_err().to_string();
        assert!(e.contains("`30` has no unit"), "{e}");
    }

    #[test]
    fn signs_are_for_date_arithmetic_only() {
        assert_eq!(
            parse_signed_duration("-7d"),
            Ok((true, Duration::from_secs(7 * 86400)))
        );
        assert_eq!(
            parse_signed_duration("+2h"),
            Ok((false, Duration::from_secs(7200)))
        );
        assert_eq!(
            parse_signed_duration("30s"),
            Ok((false, Duration::from_secs(30)))
        );
        assert!(parse_signed_duration("-30M").is_err());
    }

    #[test]
    fn formats_in_the_syntax_it_parses() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(3)), "3s");
        assert_eq!(format_duration(Duration::from_secs(123)), "2m 3s");
        assert_eq!(format_duration(Duration::from_secs(7 * 86400)), "7d");
        for d in [123, 3600, 93_784, 7 * 86400] {
            let d = Duration::from_secs(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
