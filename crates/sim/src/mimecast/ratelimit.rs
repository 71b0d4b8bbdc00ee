//! Mimecast's request quota: a fixed window whose state every `/api/` answer reports in
//! `X-RateLimit-Limit`, `-Remaining` and `-Reset` (milliseconds), 429 included.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};

use super::lock;

/// Requests allowed per window; the window starts with its first request.
pub(super) struct Limiter {
    limit: u32,
    window: Duration,
    state: Mutex<Option<(Instant, u32)>>,
}

/// What the limiter said about one request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Quota {
    pub(super) limit: u32,
    pub(super) remaining: u32,
    /// Until the window resets.
    pub(super) reset: Duration,
    /// False: the quota was already used up, answer 429.
    pub(super) allowed: bool,
}

impl Limiter {
    pub(super) fn new(limit: u32, window: Duration) -> Self {
        Limiter {
            limit: limit.max(1),
            window: window.max(Duration::from_millis(1)),
            state: Mutex::new(None),
        }
    }

    /// Counts one request against the current window.
    pub(super) fn take(&self) -> Quota {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let (start, used) = match *state {
            Some((start, used)) if now < start + self.window => (start, used),
            _ => (now, 0),
        };
        let allowed = used < self.limit;
        let used = if allowed { used + 1 } else { used };
        *state = Some((start, used));
        Quota {
            limit: self.limit,
            remaining: self.limit - used,
            reset: (start + self.window).saturating_duration_since(now),
            allowed,
        }
    }
}

impl Quota {
    /// Sets the three headers; `Remaining` and `Reset` only when the answer has none yet
    /// (an injected 429 carries its own).
    pub(super) fn apply(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        if !headers.contains_key("x-ratelimit-remaining") {
            headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        }
        if !headers.contains_key("x-ratelimit-reset") {
            let ms = u64::try_from(self.reset.as_millis()).unwrap_or(u64::MAX);
            headers.insert("x-ratelimit-reset", HeaderValue::from(ms));
        }
    }
}
