//! The shared state store: everything a state directory holds, in PostgreSQL, so that any
//! number of runners (a CI matrix, a Kubernetes Indexed Job, runners whose disks vanish)
//! share runs, locks, quota budgets and cursors.
//!
//! The guarantees are the directory's, kept by the database instead of the file system:
//! - a journal record is committed before the step's effect is acted on (one writer task per
//!   run batches records into one transaction: group commit, as the directory's fsync);
//! - a run is held by a session advisory lock on the writer's own connection: a second
//!   runner is refused naming the holder, and a runner that dies (even by `kill -9`) loses
//!   the lock when its connection drops, so another resumes the run;
//! - spending a unit of a quota is one transaction on the ledger's row (`SELECT ... FOR
//!   UPDATE`): eight shards against 100 a day send 100 in all;
//! - a cursor is written in the same transaction as the journal records before it.
//!
//! Why `tokio-postgres` (with `deadpool-postgres` for the pool): it is the maintained async
//! client the rest of the Rust ecosystem builds on, runs on the tokio runtime the tool already
//! has, speaks TLS through rustls (as every other connection here does), and adds no C
//! library. An ORM or query builder would add much and give nothing for a dozen statements.
//!
//! When the server cannot be reached, state writes are retried with backoff for a bounded
//! time (`AUDITFLOW_STATE_RETRY`, default 60s), then the run stops with a message naming
//! the server: an effect is never left unrecorded behind an exit 0.
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::Value;

pub(crate) mod connect;
mod copy;
pub(crate) mod runs;
mod schema;
#[cfg(test)]
pub(crate) mod testing;
mod writer;

pub(crate) use connect::Target;

use super::StateError;

/// A failure talking to the server, sorted by whether trying again can help.
#[derive(Debug)]
pub(super) enum Failure {
    /// The connection dropped, the server is restarting, or a transaction conflicted.
    Transient(String),
    /// Anything else (a refused password, a missing permission, a constraint).
    Permanent(String),
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Failure::Transient(m) | Failure::Permanent(m) => m,
        }
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        let text = error_text(&e);
        let transient = match e.code() {
            None => true,
            Some(code) => {
                let c = code.code();
                c.starts_with("08") || c.starts_with("57P") || c == "40001" || c == "40P01"
            }
        };
        if transient {
            Failure::Transient(text)
        } else {
            Failure::Permanent(text)
        }
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => Failure::Transient(other.to_string()),
        }
    }
}

/// `e` with its causes (tokio-postgres shows only the outermost), never a password: the
/// client does not put one in its errors.
fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// How long state operations are retried while the server cannot be reached.
pub(super) fn retry_budget() -> Duration {
    std::env::var("AUDITFLOW_STATE_RETRY")
        .ok()
        .and_then(|t| crate::workflow::duration::parse_duration(t.trim()).ok())
        .unwrap_or(Duration::from_secs(60))
}

/// An opened PostgreSQL store (cheap to clone: a pool and the settings).
#[derive(Clone)]
pub(crate) struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    pool: Pool,
}

impl PgStore {
    /// Connects to `url` and brings its schema to this release's version (creating it on
    /// first use). Fails (after the bounded retries) when the server cannot be reached:
    /// before anything is sent to a vendor.
    pub(crate) async fn open(url: &str) -> Result<PgStore, StateError> {
        let target = Target::parse(url).map_err(|e| StateError::Settings(e.to_string()))?;
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool =
            Pool::builder(manager)
                .max_size(8)
                .build()
                .map_err(|e| StateError::Database {
                    server: target.describe(),
                    message: e.to_string(),
                })?;
        let store = PgStore {
            inner: Arc::new(Inner { target, pool }),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The server as messages show it (no password).
    pub(crate) fn describe(&self) -> String {
        self.inner.target.describe()
    }

    pub(super) fn target(&self) -> &Target {
        &self.inner.target
    }

    /// The error for `failure` of `what`.
    pub(super) fn error(&self, what: &str, failure: &Failure) -> StateError {
        StateError::Database {
            server: self.describe(),
            message: format!("{what}: {}", failure.message()),
        }
    }

    /// Runs `op` with a pooled connection, again on a transient failure until the retry
    /// budget is spent.
    pub(super) async fn with_client<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StateError>
    where
        F: Fn(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.retrying(what, || async {
            let client = self.inner.pool.get().await.map_err(Failure::from)?;
            op(client).await
        })
        .await
    }

    /// `attempt` until it succeeds, fails for good, or the retry budget is spent, with
    /// backoff between attempts (each transient failure is logged, naming the server).
    pub(super) async fn retrying<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T, StateError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let deadline = tokio::time::Instant::now() + retry_budget();
        let mut pause = Duration::from_millis(100);
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(Failure::Transient(m)) if tokio::time::Instant::now() + pause < deadline => {
                    tracing::warn!(
                        "state store {}: {what}: {m}; trying again in {pause:?}",
                        self.describe()
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(f) => return Err(self.error(what, &f)),
            }
        }
    }

    /// Creates the schema or applies the migrations it lacks; refuses a newer one.
    async fn migrate(&self) -> Result<(), StateError> {
        let schema = self.inner.target.schema.clone();
        let found = self
            .with_client("preparing the schema", |mut c| {
                let schema = schema.clone();
                async move {
                    let tx = c.transaction().await?;
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                        .await?;
                    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                        .await?;
                    let exists: bool = tx
                        .query_one("SELECT to_regclass('meta') IS NOT NULL", &[])
                        .await?
                        .get(0);
                    let version: i32 = if exists {
                        tx.query_one("SELECT version FROM meta", &[]).await?.get(0)
                    } else {
                        0
                    };
                    if version > schema::current() {
                        return Ok(version);
                    }
                    let from = usize::try_from(version).unwrap_or(0);
                    for m in &schema::MIGRATIONS[from..] {
                        tx.batch_execute(m).await?;
                    }
                    tx.execute("UPDATE meta SET version = $1", &[&schema::current()])
                        .await?;
                    tx.commit().await?;
                    Ok(version)
                }
            })
            .await?;
        if found > schema::current() {
            return Err(StateError::Newer {
                path: PathBuf::from(self.describe()),
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: u32::try_from(schema::current()).unwrap_or(0),
            });
        }
        Ok(())
    }

    /// The advisory lock id of run key `key` (within this store's schema).
    pub(super) fn lock_id(&self, key: &str) -> i64 {
        let digest =
            crate::durable::sha256_hex(format!("{}\0{key}", self.inner.target.schema).as_bytes());
        u64::from_str_radix(&digest[..16], 16).map_or(0, |v| v as i64)
    }

    /// The name a run's journal goes by in messages.
    pub(super) fn place(&self, run_id: &str) -> PathBuf {
        PathBuf::from(format!("{} run {run_id}", self.describe()))
    }

    /// The stored cursor `id`, if a run wrote one.
    pub(crate) async fn read_cursor(
        &self,
        id: super::cursors::CursorId<'_>,
    ) -> Result<Option<super::cursors::StoredCursor>, StateError> {
        let (w, n, k) = cursor_key(id);
        let body: Option<Value> = self
            .with_client("reading a cursor", |c| {
                let (w, n, k) = (w.clone(), n.clone(), k.clone());
                async move {
                    let row = c
                        .query_opt(
                            "SELECT body FROM cursors WHERE workflow = $1 AND name = $2 AND key = $3",
                            &[&w, &n, &k],
                        )
                        .await?;
                    Ok(row.map(|r| r.get(0)))
                }
            })
            .await?;
        body.map(|b| {
            serde_json::from_value(b).map_err(|e| StateError::Corrupt {
                path: PathBuf::from(format!("{} cursor {w}/{n}/{k}", self.describe())),
                line: 1,
                message: e.to_string(),
            })
        })
        .transpose()
    }

    /// Writes cursor `stored` (outside a run: `auditflow cursors set`, `state copy`).
    pub(crate) async fn write_cursor(
        &self,
        stored: &super::cursors::StoredCursor,
    ) -> Result<(), StateError> {
        self.with_client("writing a cursor", |c| async move {
            let client: &tokio_postgres::Client = &c;
            upsert_cursor(client, stored).await?;
            Ok(())
        })
        .await
    }

    /// Every stored cursor, sorted by workflow, name and key.
    pub(crate) async fn list_cursors(
        &self,
    ) -> Result<Vec<super::cursors::StoredCursor>, StateError> {
        let bodies: Vec<Value> = self
            .with_client("listing cursors", |c| async move {
                let rows = c
                    .query("SELECT body FROM cursors ORDER BY workflow, name, key", &[])
                    .await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
            .await?;
        Ok(bodies
            .into_iter()
            .filter_map(|b| serde_json::from_value(b).ok())
            .collect())
    }
}

/// The advisory lock taken while migrating (any constant distinct from run locks' hashes).
const MIGRATION_LOCK: i64 = 0x6175_6469_7466_6c77; // "auditflw"

/// A cursor's primary key: workflow, name, key (`default` for none, as in the directory).
fn cursor_key(id: super::cursors::CursorId<'_>) -> (String, String, String) {
    let key = if id.key.is_empty() { "default" } else { id.key };
    (
        id.workflow.to_string(),
        id.name.to_string(),
        key.to_string(),
    )
}

/// Inserts or replaces `stored` on `c` (inside the caller's transaction, if any).
pub(super) async fn upsert_cursor(
    c: &impl tokio_postgres::GenericClient,
    stored: &super::cursors::StoredCursor,
) -> Result<(), tokio_postgres::Error> {
    let key = if stored.key.is_empty() {
        "default"
    } else {
        &stored.key
    };
    let body = serde_json::to_value(stored).unwrap_or(Value::Null);
    c.execute(
        "INSERT INTO cursors (workflow, name, key, body) VALUES ($1, $2, $3, $4)
         ON CONFLICT (workflow, name, key) DO UPDATE SET body = EXCLUDED.body",
        &[&stored.workflow, &stored.name, &key, &body],
    )
    .await?;
    Ok(())
}
