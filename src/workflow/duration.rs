//! The `Dur` type of workflow fields: a duration as users write it, with its serde and JSON
//! Schema forms. The text itself is read and written by [`crate::duration`].
use std::time::Duration;

pub use crate::duration::{
    format_duration, parse_duration, parse_signed_duration, DurationError, ACCEPTED_FORMS,
};

use super::unit_text::{unit_text_impls, UnitText};

/// A duration in a workflow file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// The duration as a std `Duration`.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl UnitText for Dur {
    const WHAT: &'static str = "duration";
    const EXPECTING: &'static str = "a duration such as 200ms, 30s, 5m, 2h or 7d";
    const ACCEPTED_FORMS: &'static str = ACCEPTED_FORMS;
    const SCHEMA_NAME: &'static str = "Duration";
    const SCHEMA_DESCRIPTION: &'static str = "A duration: a whole number with a unit (ms, s, m, h, d, w), e.g. 200ms, 30s, 5m, 2h, 7d; parts combine largest first: 1h30m or 1h 30m.";
    const SCHEMA_PATTERN: &'static str = "^\\s*([0-9]+(ms|s|m|h|d|w)\\s*)+$";
    type Error = DurationError;
    fn parse(text: &str) -> Result<Self, DurationError> {
        parse_duration(text).map(Dur)
    }
    fn format(&self) -> String {
        format_duration(self.0)
    }
}

unit_text_impls!(Dur);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_numbers_are_refused() {
        let e = serde_yaml_ng::from_str::<Dur>("30")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a number needs a unit"), "{e}");
        assert_eq!(
            serde_yaml_ng::from_str::<Dur>("1h30m").ok(),
            Some(Dur(Duration::from_secs(5400)))
        );
    }
}
