//! Crash points for the crash-and-resume tests: `AUDITFLOW_FAILPOINT=name[:n]` aborts the
//! process (like `kill -9`: no cleanup, no flush) the `n`th time (default 1st) the named point
//! is reached. Unset, a hit costs one atomic load.
//!
//! They exist in debug builds (the tests, `cargo run`) only: in a release build [`hit`] is an
//! empty inline function, so no environment variable can abort a shipped binary. A release
//! build with them (to rehearse a crash with the optimized binary) needs the `failpoints`
//! feature: `cargo build --release --features failpoints`.
#[cfg(any(debug_assertions, feature = "failpoints"))]
use std::sync::atomic::{AtomicU32, Ordering};
#[cfg(any(debug_assertions, feature = "failpoints"))]
use std::sync::OnceLock;

#[cfg(any(debug_assertions, feature = "failpoints"))]
struct Point {
    name: String,
    nth: u32,
    seen: AtomicU32,
}

#[cfg(any(debug_assertions, feature = "failpoints"))]
fn point() -> Option<&'static Point> {
    static P: OnceLock<Option<Point>> = OnceLock::new();
    P.get_or_init(|| {
        let v = std::env::var("AUDITFLOW_FAILPOINT").ok()?;
        let (name, nth) = match v.split_once(':') {
            Some((n, k)) => (n.to_string(), k.trim().parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some(Point {
            name,
            nth: nth.max(1),
            seen: AtomicU32::new(0),
        })
    })
    .as_ref()
}

/// Aborts the process when `name` is the configured point and this is its `n`th hit.
#[cfg(any(debug_assertions, feature = "failpoints"))]
pub fn hit(name: &str) {
    if let Some(p) = point() {
        if p.name == name && p.seen.fetch_add(1, Ordering::SeqCst) + 1 == p.nth {
            eprintln!("auditflow: failpoint `{name}` reached: aborting");
            std::process::abort();
        }
    }
}

/// Nothing: a release build without the `failpoints` feature has no crash points.
#[cfg(not(any(debug_assertions, feature = "failpoints")))]
#[inline]
pub fn hit(_name: &str) {}
