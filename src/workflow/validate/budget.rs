//! Checks of a call's `budget`: a quota needs a window or an in-flight limit, and literal
//! numbers that make sense, so a typo never silently means "no quota".
use super::{Scope, Validator};
use crate::workflow::model::{BudgetSpec, Count};

/// Parses `resets_at` (`HH:MM`, UTC) into seconds after midnight.
pub fn parse_resets_at(text: &str) -> Result<u32, String> {
    let bad = || format!("`{text}` is not a UTC time of day; write HH:MM, e.g. 08:00");
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60)
}

impl Validator<'_> {
    pub(super) fn budget(&mut self, p: &str, b: &BudgetSpec, scope: &Scope) {
        let ok_name = !b.name.is_empty()
            && b.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok_name {
            self.err(
                &format!("{p}.name"),
                format!(
                    "`{}` is not a budget name; use letters, digits, `-`, `_` and `.`, e.g. google-export-requests",
                    b.name
                ),
            );
        }
        match (&b.limit, b.per) {
            (Some(_), None) => self.err(
                p,
                "`limit` needs `per`, the window it applies to (e.g. `per: 1d`)".into(),
            ),
            (None, Some(_)) => self.err(
                p,
                "`per` needs `limit`, the requests allowed in each window".into(),
            ),
            (None, None) if b.in_flight.is_none() => self.err(
                p,
                "a budget needs `limit` with `per` (requests per window), `in_flight`, or both"
                    .into(),
            ),
            _ => {}
        }
        if let Some(per) = b.per {
            if per.get() < std::time::Duration::from_secs(1) {
                self.err(&format!("{p}.per"), "`per` must be at least 1s".into());
            }
        }
        for (field, c) in [("limit", &b.limit), ("in_flight", &b.in_flight)] {
            if let Some(c) = c {
                self.budget_count(&format!("{p}.{field}"), field, c, scope);
            }
        }
        if let Some(r) = &b.resets_at {
            if let Err(e) = parse_resets_at(r) {
                self.err(&format!("{p}.resets_at"), e);
            }
        }
        if let Some(k) = &b.key {
            self.template(&format!("{p}.key"), k, scope);
        }
        if let Some(s) = b.spent_status.iter().find(|s| !(400..=599).contains(*s)) {
            self.err(
                &format!("{p}.spent_status"),
                format!("{s} is not an error status; list the 4xx/5xx statuses the vendor documents as its quota answer, e.g. [503]"),
            );
        }
    }

    /// A budget's number: at least 1, or a template (checked when the call starts).
    fn budget_count(&mut self, p: &str, field: &str, c: &Count, scope: &Scope) {
        match c {
            Count::Number(0) => self.err(p, format!("`{field}` must be at least 1")),
            Count::Number(_) => {}
            Count::Template(t) if !t.contains("{{") => self.err(
                p,
                format!("`{t}` is not a whole number; write one (e.g. 100) or a template rendering to one"),
            ),
            Count::Template(t) => self.template(p, t, scope),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_resets_at;

    #[test]
    fn resets_at_is_hh_mm() {
        assert_eq!(parse_resets_at("00:00"), Ok(0));
        assert_eq!(parse_resets_at("08:30"), Ok(8 * 3600 + 1800));
        for bad in ["8", "24:00", "07:60", "x:y", ""] {
            assert!(parse_resets_at(bad).is_err(), "{bad}");
        }
    }
}
