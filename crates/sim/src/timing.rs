//! Simulated time: a clock that runs `time_scale` times faster than the real one, and the
//! timing presets (`fast` for tests and the demo, `realistic` for rehearsing budgets).
//!
//! Real vendors are slow: a Google mailbox export "can take several days" and its files are kept
//! three weeks; a MARKED_DELETE request is removed by Google's cleanup job within 24 hours; a
//! MailStore long-running process "may take several minutes or even hours" (vendor pages in
//! `shared/vendor-docs/`). The simulator states those durations in simulated time and lets the
//! clock run fast, so that one real second can stand for an hour (`time_scale` 3600).
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use super::SimConfig;

/// A clock that starts at the real time and runs `scale` times faster, plus explicit jumps.
#[derive(Debug)]
pub struct SimClock {
    start_utc: DateTime<Utc>,
    start: Instant,
    scale: f64,
    offset: Mutex<TimeDelta>,
}

impl SimClock {
    /// A clock starting now; `scale` below a tiny positive value is taken as 1.
    pub fn new(scale: f64) -> Self {
        SimClock {
            start_utc: Utc::now(),
            start: Instant::now(),
            scale: valid_scale(scale),
            offset: Mutex::new(TimeDelta::zero()),
        }
    }

    /// The simulated now: start + real elapsed x scale + every `advance`.
    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = self.start.elapsed().mul_f64(self.scale);
        let elapsed = TimeDelta::from_std(elapsed).unwrap_or(TimeDelta::MAX);
        let off = *self
            .offset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.start_utc
            .checked_add_signed(elapsed)
            .and_then(|t| t.checked_add_signed(off))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Jumps the clock forward by `by` (simulated time).
    pub fn advance(&self, by: Duration) {
        let by = TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
        let mut off = self
            .offset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *off = off.checked_add(&by).unwrap_or(TimeDelta::MAX);
    }

    /// The real time a simulated duration takes.
    pub fn real(&self, simulated: Duration) -> Duration {
        real_duration(simulated, self.scale)
    }
}

/// A usable scale: finite and positive, else 1.
fn valid_scale(scale: f64) -> f64 {
    if scale.is_finite() && scale > 0.0 {
        scale
    } else {
        1.0
    }
}

/// `simulated / scale`, for sleeps in real time.
pub(crate) fn real_duration(simulated: Duration, scale: f64) -> Duration {
    simulated.div_f64(valid_scale(scale))
}

/// The timing presets of `auditflow sim --timing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timing {
    /// Today's quick simulator: exports complete after a few polls, MailStore processes in
    /// well under a second, the clock runs at real speed. Tests and the demo use it.
    #[default]
    Fast,
    /// Vendor-like durations in simulated time: exports take [`REALISTIC_EXPORT`], MailStore
    /// processes [`REALISTIC_MAILSTORE_STEPS`] x [`REALISTIC_MAILSTORE_STEP`]; with
    /// [`REALISTIC_TIME_SCALE`] unless a scale is given.
    Realistic,
}

/// Realistic: simulated time a Google export stays PENDING (the page: hours to days).
pub const REALISTIC_EXPORT: Duration = Duration::from_secs(6 * 3600);
/// Realistic: simulated time a Vault mail export stays IN_PROGRESS (small exports: hours).
pub const REALISTIC_VAULT_EXPORT: Duration = Duration::from_secs(2 * 3600);
/// Realistic: status updates of a MailStore long-running process (VerifyStore).
pub const REALISTIC_MAILSTORE_STEPS: u32 = 40;
/// Realistic: simulated time between two of them (40 minutes in all).
pub const REALISTIC_MAILSTORE_STEP: Duration = Duration::from_secs(60);
/// Realistic: default scale, 10 simulated minutes per real second (an export: 36 s).
pub const REALISTIC_TIME_SCALE: f64 = 600.0;

impl Timing {
    /// Sets the durations of this preset on `cfg` (not the time scale: see [`Timing::scale`]).
    pub fn apply(self, cfg: &mut SimConfig) {
        match self {
            Timing::Fast => {}
            Timing::Realistic => {
                cfg.google_pending_polls = 0;
                cfg.google_export_duration = REALISTIC_EXPORT;
                cfg.vault_pending_polls = 0;
                cfg.vault_export_duration = REALISTIC_VAULT_EXPORT;
                cfg.mailstore_steps = REALISTIC_MAILSTORE_STEPS;
                cfg.mailstore_step_interval = REALISTIC_MAILSTORE_STEP;
            }
        }
    }

    /// The time scale: `given`, else the preset's (1 for fast, [`REALISTIC_TIME_SCALE`]).
    pub fn scale(self, given: Option<f64>) -> f64 {
        given.unwrap_or(match self {
            Timing::Fast => 1.0,
            Timing::Realistic => REALISTIC_TIME_SCALE,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_runs_scale_times_faster_and_jumps() {
        let c = SimClock::new(3600.0);
        let t0 = c.now();
        std::thread::sleep(Duration::from_millis(50));
        let ran = c.now() - t0;
        // 50 ms real at 3600x: at least 180 s simulated.
        assert!(ran >= TimeDelta::seconds(180), "{ran}");
        assert!(ran < TimeDelta::hours(2), "{ran}");
        c.advance(Duration::from_secs(86_400));
        assert!(c.now() - t0 >= TimeDelta::days(1));
        assert_eq!(c.real(Duration::from_secs(3600)), Duration::from_secs(1));
    }

    #[test]
    fn a_bad_scale_is_real_time() {
        for s in [0.0, -2.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                real_duration(Duration::from_secs(5), s),
                Duration::from_secs(5)
            );
        }
    }

    #[test]
    fn presets() {
        let mut cfg = SimConfig::default();
        Timing::Fast.apply(&mut cfg);
        assert_eq!(cfg.google_export_duration, Duration::ZERO);
        assert_eq!(Timing::Fast.scale(None), 1.0);
        Timing::Realistic.apply(&mut cfg);
        assert_eq!(cfg.google_export_duration, REALISTIC_EXPORT);
        assert_eq!(cfg.google_pending_polls, 0);
        assert_eq!(Timing::Realistic.scale(None), REALISTIC_TIME_SCALE);
        assert_eq!(Timing::Realistic.scale(Some(3600.0)), 3600.0);
    }
}
