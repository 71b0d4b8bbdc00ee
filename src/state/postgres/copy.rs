//! The shared store's side of `auditflow state copy`: reading everything into a
//! [`Snapshot`] and adding one (the merge rules are the snapshot module's).
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Failure, PgStore};
use crate::state::snapshot::{larger_ledger, CopyCounts, RunCopy, Snapshot};
use crate::state::{Replay, StateError};

impl PgStore {
    /// Everything in the store. Refused while a runner holds one of its runs.
    pub(crate) async fn snapshot(&self) -> Result<Snapshot, StateError> {
        let runs = self.all_journals().await?;
        let held = self.held_runs(&self.active_keys().await?).await?;
        if let Some(run) = runs.iter().find(|r| held.contains(&r.id)) {
            return Err(StateError::Busy {
                run_id: run.id.clone(),
                holder: run.runner.clone().unwrap_or_default(),
                lock: format!("advisory lock in {}", self.describe()),
            });
        }
        let mut snap = Snapshot::default();
        for run in &runs {
            let replay = Replay::parse(run.text.as_bytes(), &self.place(&run.id))?;
            snap.runs.push(RunCopy::of(&replay, &run.text));
        }
        let tables: Tables = self
            .with_client("reading the store", |c| async move {
                let pairs = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, String)> {
                    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
                };
                Ok(Tables {
                    active: pairs(c.query("SELECT key, run_id FROM active", &[]).await?),
                    completions: c
                        .query("SELECT key, body FROM completions", &[])
                        .await?
                        .iter()
                        .map(|r| (r.get(0), r.get(1)))
                        .collect(),
                    terminal: c
                        .query("SELECT key, run_id, reason FROM terminal_notes", &[])
                        .await?
                        .iter()
                        .map(|r| (r.get(0), r.get(1), r.get(2)))
                        .collect(),
                    ledgers: c
                        .query("SELECT name, key_id, body FROM ledgers", &[])
                        .await?
                        .iter()
                        .map(|r| (r.get(0), r.get(1), r.get(2)))
                        .collect(),
                })
            })
            .await?;
        snap.active = tables.active;
        snap.completions = tables
            .completions
            .into_iter()
            .filter_map(|(k, v)| serde_json::from_value(v).ok().map(|c| (k, c)))
            .collect();
        snap.terminal = tables.terminal;
        snap.ledgers = tables.ledgers;
        snap.cursors = self.list_cursors().await?;
        Ok(snap)
    }

    /// Adds `snap` to the store in one transaction (see the snapshot module's merge rules).
    pub(crate) async fn absorb(&self, snap: Snapshot) -> Result<CopyCounts, StateError> {
        let snap = &snap;
        self.with_client("copying into the store", |mut c| async move {
            let tx = c.transaction().await?;
            let mut counts = CopyCounts::default();
            for run in &snap.runs {
                absorb_run(&tx, run, &mut counts).await?;
            }
            for (key, id) in &snap.active {
                let theirs: Option<String> = tx
                    .query_opt("SELECT run_id FROM active WHERE key = $1", &[key])
                    .await?
                    .map(|r| r.get(0));
                match theirs {
                    Some(t) if t != *id => counts.conflicts.push(key.clone()),
                    Some(_) => {}
                    None => {
                        tx.execute(
                            "INSERT INTO active (key, run_id) VALUES ($1, $2)",
                            &[key, id],
                        )
                        .await?;
                        counts.unfinished += 1;
                    }
                }
            }
            for (key, done) in &snap.completions {
                let body = serde_json::to_value(done).unwrap_or(Value::Null);
                tx.execute(
                    "INSERT INTO completions (key, body) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[key, &body],
                )
                .await?;
            }
            for (key, run, reason) in &snap.terminal {
                tx.execute(
                    "INSERT INTO terminal_notes (key, run_id, reason) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[key, run, reason],
                )
                .await?;
            }
            for (name, key_id, body) in &snap.ledgers {
                absorb_ledger(&tx, name, key_id, body).await?;
                counts.ledgers += 1;
            }
            for cursor in &snap.cursors {
                if absorb_cursor(&tx, cursor).await? {
                    counts.cursors += 1;
                }
            }
            tx.commit().await?;
            Ok(counts)
        })
        .await
    }
}

/// The store's tables other than runs, as read for a snapshot.
struct Tables {
    active: Vec<(String, String)>,
    completions: Vec<(String, Value)>,
    terminal: Vec<(String, String, String)>,
    ledgers: Vec<(String, String, Value)>,
}

async fn absorb_run(
    tx: &tokio_postgres::Transaction<'_>,
    run: &RunCopy,
    counts: &mut CopyCounts,
) -> Result<(), Failure> {
    let inserted = tx
        .execute(
            "INSERT INTO runs (run_id, key, started_at, last_at, runner) VALUES ($1, $2, $3, $4, 'copied by auditflow state copy')
             ON CONFLICT (run_id) DO NOTHING",
            &[&run.run_id, &run.key, &run.started_at, &run.last_at],
        )
        .await?;
    if inserted == 0 {
        counts.runs_present += 1;
        return Ok(());
    }
    let seqs: Vec<i64> = (1..=run.lines.len())
        .map(|i| i64::try_from(i).unwrap_or(i64::MAX))
        .collect();
    tx.execute(
        "INSERT INTO journal (run_id, seq, line) SELECT $1, s, l FROM unnest($2::bigint[], $3::text[]) AS t(s, l)",
        &[&run.run_id, &seqs, &run.lines],
    )
    .await?;
    counts.runs += 1;
    Ok(())
}

async fn absorb_ledger(
    tx: &tokio_postgres::Transaction<'_>,
    name: &str,
    key_id: &str,
    body: &Value,
) -> Result<(), Failure> {
    let mine: Option<Value> = tx
        .query_opt(
            "SELECT body FROM ledgers WHERE name = $1 AND key_id = $2 FOR UPDATE",
            &[&name, &key_id],
        )
        .await?
        .map(|r| r.get(0));
    let merged = match mine {
        Some(m) => larger_ledger(&m, body),
        None => body.clone(),
    };
    tx.execute(
        "INSERT INTO ledgers (name, key_id, body) VALUES ($1, $2, $3)
         ON CONFLICT (name, key_id) DO UPDATE SET body = EXCLUDED.body",
        &[&name, &key_id, &merged],
    )
    .await?;
    Ok(())
}

/// Stores `cursor` unless the store's is newer; whether it was stored.
async fn absorb_cursor(
    tx: &tokio_postgres::Transaction<'_>,
    cursor: &crate::state::cursors::StoredCursor,
) -> Result<bool, Failure> {
    let key = if cursor.key.is_empty() {
        "default"
    } else {
        &cursor.key
    };
    let mine: Option<Value> = tx
        .query_opt(
            "SELECT body FROM cursors WHERE workflow = $1 AND name = $2 AND key = $3",
            &[&cursor.workflow, &cursor.name, &key],
        )
        .await?
        .map(|r| r.get(0));
    let written = |v: &Value| {
        v.get("written_at")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
    };
    if mine.as_ref().and_then(written) >= Some(cursor.written_at) {
        return Ok(false);
    }
    super::upsert_cursor(tx, cursor).await?;
    Ok(true)
}
