//! Slows Mimecast requests down before the quota runs out, from the `X-RateLimit-*` headers
//! Mimecast sends on every answer (not only on 429), so a long paging run spreads its last
//! requests over the window instead of hitting 429 and waiting for the whole reset.
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::VENDOR;
use crate::vendors::http::RawResponse;
use crate::vendors::{Observer, VendorError};

/// Pacing starts when `Remaining` is at most this share of `Limit`.
const LOW_SHARE: u64 = 10;
/// Without an `X-RateLimit-Limit`, pacing starts at this `Remaining`.
const LOW_ABSOLUTE: u64 = 10;
/// Longest wait before one request; a spent window is left to the 429 and its reset.
pub(super) const MAX_PACE_WAIT: Duration = Duration::from_secs(10);

/// What the last answers said: no request before `not_before`, and `spacing` between two.
#[derive(Debug, Default)]
struct Pace {
    not_before: Option<Instant>,
    spacing: Duration,
}

/// The pace of one connection, shared by its concurrent requests.
#[derive(Debug, Default)]
pub(super) struct Pacer {
    state: Mutex<Pace>,
}

/// The gap to keep between requests: none while `remaining` is above the low mark, else the
/// time to the reset spread over the requests left (plus one), capped at [`MAX_PACE_WAIT`].
pub(super) fn spacing(limit: Option<u64>, remaining: u64, reset: Duration) -> Duration {
    let low = limit.map_or(LOW_ABSOLUTE, |l| (l / LOW_SHARE).max(1));
    if remaining > low {
        return Duration::ZERO;
    }
    let parts = u32::try_from(remaining.saturating_add(1)).unwrap_or(u32::MAX);
    (reset / parts).min(MAX_PACE_WAIT)
}

/// `Limit`, `Remaining` and `Reset` (milliseconds) of an answer; None without the last two.
fn quota(raw: &RawResponse) -> Option<(Option<u64>, u64, Duration)> {
    let number = |name: &str| raw.header(name)?.trim().parse::<u64>().ok();
    let remaining = number("x-ratelimit-remaining")?;
    let reset: f64 = raw.header("x-ratelimit-reset")?.trim().parse().ok()?;
    if !reset.is_finite() {
        return None;
    }
    let reset = Duration::from_secs_f64(
        (reset.max(0.0) / 1000.0).min(crate::retry::MAX_SERVER_WAIT.as_secs_f64()),
    );
    Some((number("x-ratelimit-limit"), remaining, reset))
}

impl Pacer {
    fn lock(&self) -> MutexGuard<'_, Pace> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the next send time (and books the one after it); waits until then.
    pub(super) async fn wait_turn(
        &self,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<(), VendorError> {
        let now = Instant::now();
        let slot = {
            let mut pace = self.lock();
            let slot = pace.not_before.map_or(now, |t| t.max(now));
            if !pace.spacing.is_zero() {
                pace.not_before = Some(slot + pace.spacing);
            }
            slot
        };
        let wait = slot.saturating_duration_since(now);
        if wait.is_zero() {
            return Ok(());
        }
        let line = format!(
            "mimecast: X-RateLimit-Remaining is low, waiting {} ms before the next request",
            wait.as_millis()
        );
        tracing::debug!("{line}");
        observer.log(&line);
        tokio::select! {
            () = tokio::time::sleep(wait) => Ok(()),
            () = cancel.cancelled() => Err(VendorError::Cancelled { vendor: VENDOR }),
        }
    }

    /// Reads an answer's rate-limit headers: a low `Remaining` sets the spacing, a high one
    /// (or a new window) clears it. Answers without the headers change nothing.
    pub(super) fn record(&self, raw: &RawResponse) {
        let Some((limit, remaining, reset)) = quota(raw) else {
            return;
        };
        let gap = spacing(limit, remaining, reset);
        let mut pace = self.lock();
        if gap.is_zero() {
            *pace = Pace::default();
            return;
        }
        let next = Instant::now() + gap;
        pace.not_before = Some(pace.not_before.map_or(next, |t| t.max(next)));
        pace.spacing = gap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendors::NoObserver;

    #[tokio::test]
    async fn a_cancelled_wait_ends_at_once() {
        let p = Pacer::default();
        p.lock().not_before = Some(Instant::now() + Duration::from_secs(30));
        let cancel = CancellationToken::new();
        cancel.cancel();
        let t = Instant::now();
        let r = p.wait_turn(&NoObserver, &cancel).await;
        assert!(matches!(r, Err(VendorError::Cancelled { .. })), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn concurrent_requests_take_successive_slots() {
        let p = Pacer::default();
        {
            let mut pace = p.lock();
            pace.not_before = Some(Instant::now());
            pace.spacing = Duration::from_millis(150);
        }
        let cancel = CancellationToken::new();
        let t = Instant::now();
        let (a, b, c) = tokio::join!(
            p.wait_turn(&NoObserver, &cancel),
            p.wait_turn(&NoObserver, &cancel),
            p.wait_turn(&NoObserver, &cancel)
        );
        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        assert!(
            t.elapsed() >= Duration::from_millis(290),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn spacing_starts_at_the_low_mark_and_is_capped() {
        let reset = Duration::from_secs(4);
        assert_eq!(spacing(Some(100), 11, reset), Duration::ZERO);
        assert_eq!(spacing(Some(100), 10, reset), reset / 11);
        assert_eq!(spacing(Some(100), 1, reset), Duration::from_secs(2));
        assert_eq!(spacing(Some(100), 0, reset), reset);
        assert_eq!(spacing(Some(5), 1, reset), Duration::from_secs(2));
        assert_eq!(spacing(Some(5), 2, reset), Duration::ZERO);
        assert_eq!(spacing(None, 10, reset), reset / 11);
        assert_eq!(spacing(None, 11, reset), Duration::ZERO);
        assert_eq!(
            spacing(Some(100), 0, Duration::from_secs(3600)),
            MAX_PACE_WAIT
        );
    }
}
