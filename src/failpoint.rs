//! Crash points for the crash-and-resume tests: `AUDITFLOW_FAILPOINT=name[:n]` aborts the
//! process (like `kill -9`: no cleanup, no flush) the `n`th time (default 1st) the named point
//! is reached. Unset, a hit costs one atomic load.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

struct Point {
    name: String,
    nth: u32,
    seen: AtomicU32,
}

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
pub fn hit(name: &str) {
    if let Some(p) = point() {
        if p.name == name && p.seen.fetch_add(1, Ordering::SeqCst) + 1 == p.nth {
            eprintln!("auditflow: failpoint `{name}` reached: aborting");
            std::process::abort();
        }
    }
}
