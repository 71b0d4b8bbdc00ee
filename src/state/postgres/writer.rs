//! The journal writer of a run kept in PostgreSQL: one task per run, on the connection that
//! holds the run's advisory lock.
//!
//! Records sent while a transaction commits are batched into the next (group commit), so a
//! loop of many items recording at once costs one round trip, not one per record. A batch is
//! inserted with its sequence numbers and `ON CONFLICT DO NOTHING`: retried after a dropped
//! connection whose commit may or may not have happened, it is stored once. On reconnecting,
//! the run's lock is taken again first: when another runner took it meanwhile, this runner
//! stops rather than write beside it.
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::Client;

use super::{retry_budget, upsert_cursor, Failure, PgStore};
use crate::state::cursors::StoredCursor;
use crate::state::journal::{Ack, Cmd, Journal};

/// What one transaction stores.
#[derive(Default)]
struct Batch {
    lines: Vec<String>,
    cursors: Vec<StoredCursor>,
    acks: Vec<Ack>,
}

/// The run's lock connection, kept by its writer.
pub(super) struct Holder {
    pub client: Client,
    pub lock: i64,
    /// The run key the lock is for.
    pub key: String,
    /// The server process of `client` (its `holders.backend`).
    pub backend: i32,
}

/// Starts the writer of run `run_id`, whose next record is number `next_seq`.
pub(super) fn start(store: PgStore, holder: Holder, run_id: String, next_seq: i64) -> Journal {
    let (tx, rx) = mpsc::unbounded_channel::<Cmd>();
    let place = store.place(&run_id);
    tokio::spawn(write_loop(store, holder, run_id, next_seq, rx));
    Journal::with_writer(place, tx)
}

async fn write_loop(
    store: PgStore,
    mut holder: Holder,
    run_id: String,
    mut next_seq: i64,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) {
    // Once a batch is lost, nothing after it is acknowledged: a journal with a gap must not
    // be trusted for what follows.
    let mut broken: Option<String> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = Batch::default();
        take(&mut batch, first);
        while let Ok(more) = rx.try_recv() {
            take(&mut batch, more);
        }
        if broken.is_none() && !(batch.lines.is_empty() && batch.cursors.is_empty()) {
            match commit_retrying(&store, &mut holder, &run_id, next_seq, &batch).await {
                Ok(()) => next_seq += i64::try_from(batch.lines.len()).unwrap_or(0),
                Err(m) => broken = Some(m),
            }
        }
        for a in batch.acks {
            let _ = a.send(match &broken {
                None => Ok(()),
                Some(m) => Err(m.clone()),
            });
        }
    }
    // Every sender is gone: the run is over. Dropping the connection releases the lock.
}

fn take(batch: &mut Batch, cmd: Cmd) {
    match cmd {
        Cmd::Append(mut line, ack) => {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            batch
                .lines
                .push(String::from_utf8_lossy(&line).into_owned());
            batch.acks.extend(ack);
        }
        Cmd::Flush(ack) => batch.acks.push(ack),
        Cmd::Cursor(c, ack) => {
            batch.cursors.push(*c);
            batch.acks.push(ack);
        }
    }
}

/// Commits `batch`, reconnecting (and taking the run's lock again) after a transient
/// failure until the retry budget is spent.
async fn commit_retrying(
    store: &PgStore,
    holder: &mut Holder,
    run_id: &str,
    first_seq: i64,
    batch: &Batch,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + retry_budget();
    let mut pause = Duration::from_millis(100);
    loop {
        let failure = match commit(&mut holder.client, run_id, first_seq, batch).await {
            Ok(()) => return Ok(()),
            Err(f) => f,
        };
        let Failure::Transient(m) = &failure else {
            return Err(store.error("recording the run", &failure).to_string());
        };
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(store.error("recording the run", &failure).to_string());
        }
        tracing::warn!(
            "state store {}: recording run {run_id}: {m}; trying again in {pause:?}",
            store.describe()
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
        if holder.client.is_closed() {
            relock(store, holder, run_id).await?;
        }
    }
}

/// A new connection for the writer, holding the run's lock again; refused when another
/// runner took the run meanwhile.
async fn relock(store: &PgStore, holder: &mut Holder, run_id: &str) -> Result<(), String> {
    let Ok(client) = store.target().connect().await else {
        // Still unreachable: the caller's loop tries again until its budget is spent.
        return Ok(());
    };
    let err = |e: tokio_postgres::Error| {
        store
            .error("taking the run lock again", &e.into())
            .to_string()
    };
    // The old session may still be ending (a terminated backend releases its locks as it
    // exits): its lock is waited for; a lock another runner's session holds is not.
    for _ in 0..50 {
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&holder.lock])
            .await
            .map_err(err)?
            .get(0);
        if got {
            let backend: i32 = client
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .map_err(err)?
                .get(0);
            client
                .execute(
                    "UPDATE holders SET backend = $2 WHERE key = $1",
                    &[&holder.key, &backend],
                )
                .await
                .map_err(err)?;
            holder.client = client;
            holder.backend = backend;
            return Ok(());
        }
        let by: Option<i32> = client
            .query_opt(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
                   AND ((classid::bigint << 32) | objid::bigint) = $1",
                &[&holder.lock],
            )
            .await
            .map_err(err)?
            .map(|r| r.get(0));
        if by.is_some_and(|pid| pid != holder.backend) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "state store {}: while the connection was lost, another runner took run {run_id}; this runner stops here so that the two do not both act on it",
        store.describe()
    ))
}

/// One transaction: the batch's records, the run's last activity, its cursors.
async fn commit(
    client: &mut Client,
    run_id: &str,
    first_seq: i64,
    batch: &Batch,
) -> Result<(), Failure> {
    let tx = client.transaction().await?;
    if !batch.lines.is_empty() {
        let seqs: Vec<i64> = (0..batch.lines.len())
            .map(|i| first_seq + i64::try_from(i).unwrap_or(0))
            .collect();
        tx.execute(
            "INSERT INTO journal (run_id, seq, line)
             SELECT $1, s, l FROM unnest($2::bigint[], $3::text[]) AS t(s, l)
             ON CONFLICT (run_id, seq) DO NOTHING",
            &[&run_id, &seqs, &batch.lines],
        )
        .await?;
        tx.execute(
            "UPDATE runs SET last_at = now() WHERE run_id = $1",
            &[&run_id],
        )
        .await?;
    }
    for c in &batch.cursors {
        upsert_cursor(&tx, c).await?;
    }
    tx.commit().await?;
    Ok(())
}
