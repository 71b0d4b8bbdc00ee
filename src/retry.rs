//! Retry policy as plain data, backoff as an iterator, and which failures are retryable.
use std::time::Duration;

use rand::Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How random the wait between attempts is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// Wait a uniformly random time between zero and the computed interval (AWS "full jitter").
    #[default]
    Full,
    /// Wait half the interval plus a random time up to the other half.
    Equal,
    /// Wait exactly the computed interval.
    None,
}

/// A fully resolved retry policy (defaults merged with step overrides).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Total attempts including the first one; 1 means "no retry".
    pub max_attempts: u32,
    /// Backoff before the first retry (default 500ms), before jitter.
    pub initial_interval: Duration,
    /// Each backoff is the previous one times this (default 2.0).
    pub factor: f64,
    /// Cap on one backoff (default 30s).
    pub max_interval: Duration,
    /// Stop retrying once this much time has passed since the first attempt.
    pub max_elapsed: Option<Duration>,
    /// How backoffs are randomized (default full jitter).
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_interval: Duration::from_millis(500),
            factor: 2.0,
            max_interval: Duration::from_secs(30),
            max_elapsed: Some(Duration::from_secs(300)),
            jitter: Jitter::Full,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The un-jittered interval before retry number `n` (n = 1 is the wait after the first attempt).
    pub fn base_interval(&self, n: u32) -> Duration {
        let exp = self
            .factor
            .max(1.0)
            .powi(n.saturating_sub(1).min(1000) as i32);
        let secs = self.initial_interval.as_secs_f64() * exp;
        let capped = secs.min(self.max_interval.as_secs_f64());
        if capped.is_finite() && capped >= 0.0 {
            Duration::from_secs_f64(capped)
        } else {
            self.max_interval
        }
    }

    /// The backoff schedule: one jittered wait per retry, `max_attempts - 1` items at most.
    pub fn backoff(&self) -> Backoff<rand::rngs::StdRng> {
        use rand::SeedableRng;
        Backoff {
            policy: self.clone(),
            retry: 0,
            rng: rand::rngs::StdRng::from_entropy(),
        }
    }

    /// The same schedule with a caller-supplied random source (deterministic tests).
    pub fn backoff_with<R: Rng>(&self, rng: R) -> Backoff<R> {
        Backoff {
            policy: self.clone(),
            retry: 0,
            rng,
        }
    }
}

/// Iterator over the waits between attempts.
pub struct Backoff<R> {
    policy: RetryPolicy,
    retry: u32,
    rng: R,
}

impl<R: Rng> Iterator for Backoff<R> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.retry + 1 >= self.policy.max_attempts {
            return None;
        }
        self.retry += 1;
        let base = self.policy.base_interval(self.retry);
        Some(apply_jitter(self.policy.jitter, base, &mut self.rng))
    }
}

/// Applies a jitter mode to one interval.
pub fn apply_jitter<R: Rng>(jitter: Jitter, base: Duration, rng: &mut R) -> Duration {
    let nanos = base.as_nanos().min(u64::MAX as u128) as u64;
    match jitter {
        Jitter::None => base,
        Jitter::Full if nanos == 0 => base,
        Jitter::Full => Duration::from_nanos(rng.gen_range(0..=nanos)),
        Jitter::Equal => {
            let half = nanos / 2;
            Duration::from_nanos(half + rng.gen_range(0..=nanos - half))
        }
    }
}

/// HTTP statuses that are retried: 408, 425, 429, 500, 502, 503, 504.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429 | 500 | 502 | 503 | 504)
}

/// Longest wait taken from a server header (`Retry-After`, a vendor's rate-limit reset).
pub const MAX_SERVER_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Parses a `Retry-After` header: delta seconds or an HTTP date in any of the three forms
/// RFC 9110 says a recipient must accept (IMF-fixdate, RFC 850, asctime), relative to `now`,
/// capped at [`MAX_SERVER_WAIT`]. Negative, NaN or unparsable values give `None`; huge
/// numbers are capped, never overflow.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        return Some(Duration::from_secs_f64(
            secs.min(MAX_SERVER_WAIT.as_secs_f64()),
        ));
    }
    let when = chrono::DateTime::<chrono::Utc>::from(httpdate::parse_http_date(value).ok()?);
    let delta = when - now;
    Some(
        delta
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_SERVER_WAIT),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            initial_interval: Duration::from_millis(100),
            factor: 2.0,
            max_interval: Duration::from_millis(500),
            max_elapsed: None,
            jitter,
        }
    }

    #[test]
    fn exponential_schedule_is_capped_and_bounded_by_attempts() {
        let waits: Vec<_> = policy(Jitter::None).backoff().collect();
        let ms: Vec<u128> = waits.iter().map(std::time::Duration::as_millis).collect();
        assert_eq!(ms, vec![100, 200, 400, 500, 500]);
    }

    #[test]
    fn single_attempt_never_waits() {
        assert_eq!(RetryPolicy::none().backoff().count(), 0);
    }

    #[test]
    fn full_jitter_stays_within_base_interval() {
        let rng = rand::rngs::StdRng::seed_from_u64(7);
        let p = policy(Jitter::Full);
        let waits: Vec<_> = p.backoff_with(rng).collect();
        assert_eq!(waits.len(), 5);
        for (i, w) in waits.iter().enumerate() {
            assert!(*w <= p.base_interval(i as u32 + 1), "{w:?}");
        }
        // Not all equal to the base: jitter really is applied.
        assert!(waits
            .iter()
            .enumerate()
            .any(|(i, w)| *w != p.base_interval(i as u32 + 1)));
    }

    #[test]
    fn equal_jitter_is_at_least_half() {
        let rng = rand::rngs::StdRng::seed_from_u64(1);
        let p = policy(Jitter::Equal);
        for (i, w) in p.backoff_with(rng).enumerate() {
            let base = p.base_interval(i as u32 + 1);
            assert!(w >= base / 2 && w <= base, "{w:?} vs {base:?}");
        }
    }

    #[test]
    fn huge_factor_does_not_overflow() {
        let p = RetryPolicy {
            factor: 1e300,
            max_attempts: 50,
            jitter: Jitter::None,
            ..policy(Jitter::None)
        };
        assert!(p.backoff().all(|d| d <= Duration::from_millis(500)));
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert!(is_retryable_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 422, 501] {
            assert!(!is_retryable_status(s), "{s}");
        }
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        // The obsolete forms a recipient must still accept: RFC 850 and asctime.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:30 2015", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn retry_after_is_capped_and_never_overflows() {
        let now = chrono::Utc::now();
        assert_eq!(parse_retry_after("1e300", now), Some(MAX_SERVER_WAIT));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_SERVER_WAIT)
        );
        assert_eq!(parse_retry_after("NaN", now), None);
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_SERVER_WAIT)
        );
        let later = (now + chrono::Duration::seconds(30))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let d = parse_retry_after(&later, now).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(29),
            "{d:?}"
        );
    }
}
