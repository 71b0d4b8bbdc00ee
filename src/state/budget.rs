//! Quota budgets kept in the state directory, so that a schedule of runs spends a vendor's
//! quota (Google: 100 export requests per domain per day; Vault: 20 exports in progress) the
//! way the vendor counts it, and items beyond it wait for the next run instead of failing.
//!
//! One small JSON ledger per budget name and key, `<state-dir>/budgets/<name>/<key hash>.json`,
//! changed under a lock (a process-wide mutex and an `flock` on `<state-dir>/budgets/.lock`),
//! written atomically before the request it pays for is sent: a crash after sending never
//! gives the unit back. Windows are fixed (they start at `resets_at`, UTC, and follow each
//! other), as vendors' daily quotas are, not sliding: a nightly run at 02:00 finds the whole
//! day's quota, not what is left of a window that began at 02:00:05 yesterday.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::workflow::duration::format_duration;

/// A budget as one call declares it, with its key rendered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Quota {
    /// The budget's name (safe as a directory name: validated).
    pub name: String,
    /// Whose quota (rendered `key`, masked); empty for one shared by all.
    pub key: String,
    /// Requests per window, with the window's length.
    pub window: Option<(u32, Duration)>,
    /// Seconds after UTC midnight at which windows start.
    pub resets_at: u32,
    /// At most this many held at once.
    pub in_flight: Option<u32>,
}

impl Quota {
    /// `name` (for `key`), as messages name it.
    fn label(&self) -> String {
        if self.key.is_empty() {
            format!("`{}` quota", self.name)
        } else {
            format!("`{}` quota for {}", self.name, self.key)
        }
    }

    /// The window holding `now`: its start and end.
    fn window_at(&self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let (_, per) = self.window?;
        let per = i64::try_from(per.as_secs()).ok()?.max(1);
        let offset = i64::from(self.resets_at);
        let t = now.timestamp() - offset;
        let start = t.div_euclid(per) * per + offset;
        let s = Utc.timestamp_opt(start, 0).single()?;
        let e = Utc.timestamp_opt(start + per, 0).single()?;
        Some((s, e))
    }
}

/// Why a call may not be sent now. The text says which budget, and until when.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Wait {
    /// E.g. "the `google-export-requests` quota for example.com is spent (100 per 1d); it
    /// renews at 2026-12-02 00:00 UTC".
    pub message: String,
}

/// One holder of an in-flight unit: a run and the step that took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Hold {
    run: String,
    step: String,
}

/// What a ledger file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Ledger {
    name: String,
    key: String,
    /// Start of the window `spent` counts in.
    window_start: Option<DateTime<Utc>>,
    spent: u32,
    /// The vendor said the quota is spent: nothing is sent before this instant.
    blocked_until: Option<DateTime<Utc>>,
    #[serde(default)]
    holds: Vec<Hold>,
}

/// The budgets of one run: where ledgers live and which runs may still hold units.
pub struct Budgets {
    /// `<state-dir>/budgets`; None without a state directory (then per process only, or in
    /// the shared store).
    dir: Option<PathBuf>,
    /// The shared store, whose `ledgers` table all runners spend from.
    shared: Option<crate::state::postgres::PgStore>,
    run_id: String,
    /// Runs unfinished when this one began (their holds are kept; others are released).
    live_runs: HashSet<String>,
    /// Serializes changes within the process; also the ledgers kept without a state dir.
    memory: Mutex<HashMap<PathBuf, Ledger>>,
}

/// A failure reading or writing a ledger; the text says which file or server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LedgerError {
    #[error("quota ledger {}: {source}; check the state directory (or delete the file to forget what was spent)", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("quota ledger: {0}")]
    Shared(Box<crate::state::StateError>),
}

impl Budgets {
    /// Budgets in `state_root` (None: kept in memory for this process), for run `run_id`,
    /// with `live_runs` the runs still unfinished.
    pub(crate) fn new(state_root: Option<&Path>, run_id: &str, live_runs: Vec<String>) -> Self {
        Budgets {
            dir: state_root.map(|r| r.join("budgets")),
            shared: None,
            run_id: run_id.to_string(),
            live_runs: live_runs.into_iter().collect(),
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// Budgets in the shared store `store`: one ledger for every runner and shard.
    pub(crate) fn shared(
        store: crate::state::postgres::PgStore,
        run_id: &str,
        live_runs: Vec<String>,
    ) -> Self {
        let mut b = Budgets::new(None, run_id, live_runs);
        b.shared = Some(store);
        b
    }

    /// Takes one unit of `q` for the step at `step` at `now`, or says why it must wait.
    /// A step that already holds a unit (a resumed run) keeps it without spending more.
    pub(crate) async fn acquire(
        &self,
        q: &Quota,
        step: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<(), Wait>, LedgerError> {
        self.change(q, |l| {
            let hold = Hold {
                run: self.run_id.clone(),
                step: step.to_string(),
            };
            if q.in_flight.is_some() && l.holds.contains(&hold) {
                return (false, Ok(()));
            }
            if let Some(until) = l.blocked_until.filter(|u| *u > now) {
                return (
                    false,
                    Err(Wait {
                        message: format!(
                            "the vendor said the {} is spent; it is not used again before {}",
                            q.label(),
                            when(until)
                        ),
                    }),
                );
            }
            if let (Some((limit, per)), Some((_, end))) = (q.window, q.window_at(now)) {
                if l.spent >= limit {
                    return (
                        false,
                        Err(Wait {
                            message: format!(
                                "the {} is spent ({limit} per {}); it renews at {}",
                                q.label(),
                                format_duration(per),
                                when(end)
                            ),
                        }),
                    );
                }
            }
            if let Some(max) = q.in_flight {
                if l.holds.len() >= max as usize {
                    return (
                        false,
                        Err(Wait {
                            message: format!(
                                "the {} has {max} of {max} in flight (held until the workflows that took them finish)",
                                q.label()
                            ),
                        }),
                    );
                }
                l.holds.push(hold.clone());
            }
            if q.window.is_some() {
                l.spent += 1;
            }
            (true, Ok(()))
        }, now).await
    }

    /// The wait, when the vendor said `q` is spent and its block still holds at `now`.
    pub(crate) async fn vendor_block(
        &self,
        q: &Quota,
        now: DateTime<Utc>,
    ) -> Result<Option<Wait>, LedgerError> {
        self.change(
            q,
            |l| {
                let wait = l.blocked_until.filter(|u| *u > now).map(|until| Wait {
                    message: format!(
                        "the vendor said the {} is spent; it is not used again before {}",
                        q.label(),
                        when(until)
                    ),
                });
                (false, wait)
            },
            now,
        )
        .await
    }

    /// The vendor answered that `q` is spent: nothing more is sent in this window (or, for a
    /// budget without one, for an hour). Returns the wait to report.
    pub(crate) async fn vendor_spent(
        &self,
        q: &Quota,
        now: DateTime<Utc>,
        words: &str,
    ) -> Result<Wait, LedgerError> {
        let until = q
            .window_at(now)
            .map_or(now + chrono::Duration::hours(1), |(_, end)| end);
        self.change(
            q,
            |l| {
                l.blocked_until = Some(until);
                if let Some((limit, _)) = q.window {
                    l.spent = l.spent.max(limit);
                }
                (true, ())
            },
            now,
        )
        .await?;
        Ok(Wait {
            message: format!(
                "the vendor says the {} is spent ({words}); it is not used again before {}",
                q.label(),
                when(until)
            ),
        })
    }

    /// Gives back the in-flight units this run's steps under `prefix` hold (their workflow
    /// file finished). Failures to write are reported to the caller to warn about.
    pub(crate) async fn release(&self, prefix: &str) -> Result<(), LedgerError> {
        if let Some(store) = &self.shared {
            return self.release_shared(store, prefix).await;
        }
        let Some(dir) = &self.dir else {
            let mut mem = lock(&self.memory);
            for l in mem.values_mut() {
                l.holds
                    .retain(|h| !(h.run == self.run_id && h.step.starts_with(prefix)));
            }
            return Ok(());
        };
        // No budget was ever used with this state directory: nothing is held.
        if !dir.is_dir() {
            return Ok(());
        }
        let _guard = lock(&self.memory);
        let _flock = file_lock(dir)?;
        for path in ledger_files(dir) {
            let mut l = read(&path)?;
            let before = l.holds.len();
            l.holds
                .retain(|h| !(h.run == self.run_id && h.step.starts_with(prefix)));
            if l.holds.len() != before {
                write(&path, &l)?;
            }
        }
        Ok(())
    }

    /// Reads the ledger of `q`, brings it to `now`'s window, lets `f` change it, and writes
    /// it back when `f` says it changed.
    async fn change<T>(
        &self,
        q: &Quota,
        f: impl Fn(&mut Ledger) -> (bool, T),
        now: DateTime<Utc>,
    ) -> Result<T, LedgerError> {
        if let Some(store) = &self.shared {
            return self.change_shared(store, q, &f, now).await;
        }
        let rel = PathBuf::from(&q.name).join(format!("{}.json", key_id(q)));
        let mut mem = lock(&self.memory);
        let _flock = match &self.dir {
            Some(dir) => Some(file_lock(dir)?),
            None => None,
        };
        let mut l = match &self.dir {
            Some(dir) => read(&dir.join(&rel))?,
            None => mem.get(&rel).cloned().unwrap_or_default(),
        };
        let mut dirty = self.refresh(&mut l, q, now);
        let (changed, out) = f(&mut l);
        dirty |= changed;
        if dirty {
            match &self.dir {
                Some(dir) => write(&dir.join(&rel), &l)?,
                None => {
                    mem.insert(rel, l);
                }
            }
        }
        Ok(out)
    }

    /// [`Budgets::change`] in the shared store: one transaction holding the ledger's row, so
    /// runners spending from the same quota at once are counted one after the other.
    async fn change_shared<T>(
        &self,
        store: &crate::state::postgres::PgStore,
        q: &Quota,
        f: &impl Fn(&mut Ledger) -> (bool, T),
        now: DateTime<Utc>,
    ) -> Result<T, LedgerError> {
        let id = key_id(q);
        let fresh = serde_json::to_value(Ledger::default()).unwrap_or_default();
        store
            .with_client("spending from a quota", |mut c| {
                let (id, fresh) = (id.clone(), fresh.clone());
                async move {
                    let tx = c.transaction().await?;
                    tx.execute(
                        "INSERT INTO ledgers (name, key_id, body) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        &[&q.name, &id, &fresh],
                    )
                    .await?;
                    let body: serde_json::Value = tx
                        .query_one(
                            "SELECT body FROM ledgers WHERE name = $1 AND key_id = $2 FOR UPDATE",
                            &[&q.name, &id],
                        )
                        .await?
                        .get(0);
                    let mut l: Ledger = serde_json::from_value(body).unwrap_or_default();
                    let dirty = self.refresh(&mut l, q, now);
                    let (changed, out) = f(&mut l);
                    if dirty || changed {
                        let body = serde_json::to_value(&l).unwrap_or_default();
                        tx.execute(
                            "UPDATE ledgers SET body = $3 WHERE name = $1 AND key_id = $2",
                            &[&q.name, &id, &body],
                        )
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(out)
                }
            })
            .await
            .map_err(|e| LedgerError::Shared(Box::new(e)))
    }

    /// [`Budgets::release`] in the shared store.
    async fn release_shared(
        &self,
        store: &crate::state::postgres::PgStore,
        prefix: &str,
    ) -> Result<(), LedgerError> {
        store
            .with_client("giving back quota units", |mut c| async move {
                let tx = c.transaction().await?;
                let rows = tx
                    .query(
                        "SELECT name, key_id, body FROM ledgers
                         WHERE body->'holds' @> jsonb_build_array(jsonb_build_object('run', $1::text))
                         FOR UPDATE",
                        &[&self.run_id],
                    )
                    .await?;
                for row in rows {
                    let (name, id): (String, String) = (row.get(0), row.get(1));
                    let mut l: Ledger = serde_json::from_value(row.get(2)).unwrap_or_default();
                    l.holds
                        .retain(|h| !(h.run == self.run_id && h.step.starts_with(prefix)));
                    let body = serde_json::to_value(&l).unwrap_or_default();
                    tx.execute(
                        "UPDATE ledgers SET body = $3 WHERE name = $1 AND key_id = $2",
                        &[&name, &id, &body],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            })
            .await
            .map_err(|e| LedgerError::Shared(Box::new(e)))
    }

    /// Starts a new window when `now` left the recorded one; drops holds of runs that ended.
    fn refresh(&self, l: &mut Ledger, q: &Quota, now: DateTime<Utc>) -> bool {
        let mut dirty = false;
        if l.name.is_empty() {
            l.name.clone_from(&q.name);
            l.key.clone_from(&q.key);
            dirty = true;
        }
        let start = q.window_at(now).map(|(s, _)| s);
        if l.window_start != start {
            l.window_start = start;
            l.spent = 0;
            dirty = true;
        }
        if l.blocked_until.is_some_and(|u| u <= now) {
            l.blocked_until = None;
            dirty = true;
        }
        let before = l.holds.len();
        l.holds
            .retain(|h| h.run == self.run_id || self.live_runs.contains(&h.run));
        dirty | (l.holds.len() != before)
    }
}

/// The ledger of `q`'s key: the first 16 hex digits of its SHA-256 (keys may be addresses).
fn key_id(q: &Quota) -> String {
    crate::durable::sha256_hex(q.key.as_bytes())[..16].to_string()
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Holds `<dir>/.lock` exclusively (other processes sharing the state directory wait).
fn file_lock(dir: &Path) -> Result<std::fs::File, LedgerError> {
    let io = |source| LedgerError::File {
        path: dir.to_path_buf(),
        source,
    };
    crate::durable::create_private_dir(dir).map_err(io)?;
    let path = dir.join(".lock");
    let f = crate::durable::private_options_nofollow()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    f.lock().map_err(io)?;
    Ok(f)
}

fn read(path: &Path) -> Result<Ledger, LedgerError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LedgerError::File {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledger::default()),
        Err(source) => Err(LedgerError::File {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write(path: &Path, l: &Ledger) -> Result<(), LedgerError> {
    let io = |source| LedgerError::File {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        crate::durable::create_private_dir(parent).map_err(io)?;
    }
    let bytes = serde_json::to_vec_pretty(l).unwrap_or_default();
    crate::durable::write_atomic(path, &bytes).map_err(io)
}

/// Every ledger file under `dir` (`<name>/<hash>.json`).
fn ledger_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for name in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !name.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(name.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.path().extension().is_some_and(|x| x == "json") {
                out.push(f.path());
            }
        }
    }
    out
}

/// The time quota windows are measured in: the clock, or `AUDITFLOW_NOW` (RFC 3339) plus the
/// time since the process started, to rehearse a schedule of runs against the simulator.
pub(crate) fn now() -> DateTime<Utc> {
    static START: OnceLock<(Instant, Option<DateTime<Utc>>)> = OnceLock::new();
    let (t0, fake) = START.get_or_init(|| (Instant::now(), rehearsal_clock()));
    match fake {
        Some(at) => *at + chrono::Duration::from_std(t0.elapsed()).unwrap_or_default(),
        None => Utc::now(),
    }
}

/// `AUDITFLOW_NOW` when set and valid.
pub(crate) fn rehearsal_clock() -> Option<DateTime<Utc>> {
    let v = std::env::var("AUDITFLOW_NOW").ok()?;
    DateTime::parse_from_rfc3339(v.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daily(limit: u32) -> Quota {
        Quota {
            name: "exports".into(),
            key: "example.com".into(),
            window: Some((limit, Duration::from_secs(86_400))),
            resets_at: 0,
            in_flight: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_daily_window_starts_at_resets_at() {
        let mut q = daily(1);
        let (s, e) = q.window_at(at("2026-12-01T10:00:00Z")).unwrap();
        assert_eq!(
            (s, e),
            (at("2026-12-01T00:00:00Z"), at("2026-12-02T00:00:00Z"))
        );
        q.resets_at = 8 * 3600;
        let (s, _) = q.window_at(at("2026-12-01T07:59:00Z")).unwrap();
        assert_eq!(s, at("2026-11-30T08:00:00Z"));
    }

    /// Budgets of run `run` (with `live` the unfinished runs) in one store.
    type Open<'a> = &'a dyn Fn(&str, Vec<String>) -> Budgets;

    async fn each_store(check: impl AsyncFn(Open<'_>)) {
        let dir = tempfile::tempdir().unwrap();
        check(&|run, live| Budgets::new(Some(dir.path()), run, live)).await;
        if let Some(pg) = crate::state::postgres::testing::schema().await {
            let store = pg.store.clone();
            check(&move |run, live| Budgets::shared(store.clone(), run, live)).await;
        }
    }

    #[tokio::test]
    async fn spent_units_wait_for_the_next_window_and_survive_a_new_process() {
        each_store(spent_units_wait).await;
    }

    async fn spent_units_wait(open: Open<'_>) {
        let q = daily(2);
        let day1 = at("2026-12-01T10:00:00Z");
        let b = open("r1", vec![]);
        assert_eq!(b.acquire(&q, "a", day1).await.unwrap(), Ok(()));
        assert_eq!(b.acquire(&q, "b", day1).await.unwrap(), Ok(()));
        let w = b.acquire(&q, "c", day1).await.unwrap().unwrap_err();
        assert!(
            w.message.contains("renews at 2026-12-02 00:00 UTC"),
            "{w:?}"
        );
        // Another process, same day: still spent. Next day: renewed.
        let b2 = open("r2", vec![]);
        assert!(b2.acquire(&q, "c", day1).await.unwrap().is_err());
        assert_eq!(
            b2.acquire(&q, "c", at("2026-12-02T00:00:01Z"))
                .await
                .unwrap(),
            Ok(())
        );
        // Keys are separate budgets.
        let other = Quota {
            key: "example.org".into(),
            ..daily(2)
        };
        assert_eq!(b2.acquire(&other, "x", day1).await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn in_flight_units_are_held_until_released_or_their_run_ends() {
        each_store(in_flight_units_are_held).await;
    }

    async fn in_flight_units_are_held(open: Open<'_>) {
        let q = Quota {
            window: None,
            in_flight: Some(1),
            ..daily(1)
        };
        let now = at("2026-12-01T10:00:00Z");
        let b = open("r1", vec![]);
        assert_eq!(b.acquire(&q, "x[0]/create", now).await.unwrap(), Ok(()));
        // The same step again (a resumed process) keeps its unit.
        assert_eq!(b.acquire(&q, "x[0]/create", now).await.unwrap(), Ok(()));
        assert!(b.acquire(&q, "x[1]/create", now).await.unwrap().is_err());
        b.release("x[0]/").await.unwrap();
        assert_eq!(b.acquire(&q, "x[1]/create", now).await.unwrap(), Ok(()));
        // A run that r1 is not among the live runs of: its holds are dropped.
        let b2 = open("r2", vec![]);
        assert_eq!(b2.acquire(&q, "y", now).await.unwrap(), Ok(()));
        // A live run's holds are kept.
        let b3 = open("r3", vec!["r2".into()]);
        assert!(b3.acquire(&q, "z", now).await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_vendor_answer_blocks_until_the_window_ends() {
        let b = Budgets::new(None, "r1", vec![]);
        a_vendor_answer_blocks(&b).await;
        each_store(async |open: Open<'_>| a_vendor_answer_blocks(&open("r1", vec![])).await).await;
    }

    async fn a_vendor_answer_blocks(b: &Budgets) {
        let q = daily(100);
        let now = at("2026-12-01T10:00:00Z");
        let w = b.vendor_spent(&q, now, "dailyLimitExceeded").await.unwrap();
        assert!(w.message.contains("dailyLimitExceeded"), "{w:?}");
        assert!(b.acquire(&q, "a", now).await.unwrap().is_err());
        assert_eq!(
            b.acquire(&q, "a", at("2026-12-02T00:00:00Z"))
                .await
                .unwrap(),
            Ok(())
        );
    }
}
