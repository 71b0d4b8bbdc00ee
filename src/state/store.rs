//! The one state store interface the engine and the commands use, with the two stores behind
//! it: a state directory (the default, for one machine) and PostgreSQL (shared by a fleet of
//! runners; see [`super::postgres`]). Each operation keeps the same guarantees in both.
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::cursors::{CursorId, StoredCursor};
use super::postgres::PgStore;
use super::snapshot::CopyCounts;
use super::{
    budget, Listed, Replay, RunHeader, RunSummary, StartRequest, Started, StateDir, StateError,
};

/// Where state is kept, as the user named it (`--state`, `--state-dir`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StoreSpec {
    Dir(PathBuf),
    /// A `postgres://` URL (it may hold a password: never shown as given).
    Postgres(String),
}

impl StoreSpec {
    /// `--state VALUE`: a `postgres://` (or `postgresql://`) URL, else a directory.
    pub(crate) fn parse(value: &str) -> StoreSpec {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            StoreSpec::Postgres(value.to_string())
        } else {
            StoreSpec::Dir(PathBuf::from(value))
        }
    }

    /// How messages name it (a URL without its password).
    pub(crate) fn describe(&self) -> String {
        match self {
            StoreSpec::Dir(p) => p.display().to_string(),
            StoreSpec::Postgres(url) => super::postgres::connect::strip_password(url),
        }
    }
}

/// An opened state store.
#[derive(Clone)]
pub(crate) enum Store {
    Dir(StateDir),
    Postgres(PgStore),
}

impl Store {
    /// Opens (and prepares) the store `spec` names.
    pub(crate) async fn open(spec: &StoreSpec) -> Result<Store, StateError> {
        match spec {
            StoreSpec::Dir(p) => StateDir::open(p).map(Store::Dir),
            StoreSpec::Postgres(url) => PgStore::open(url).await.map(Store::Postgres),
        }
    }

    /// How messages name the store.
    pub(crate) fn describe(&self) -> String {
        match self {
            Store::Dir(d) => d.root().display().to_string(),
            Store::Postgres(p) => p.describe(),
        }
    }

    /// A warning when the directory was open to other users (see [`StateDir::open`]).
    pub(crate) fn permission_note(&self) -> Option<&str> {
        match self {
            Store::Dir(d) => d.permission_note(),
            Store::Postgres(_) => None,
        }
    }

    /// Begins (or resumes) a run: see [`StateDir::begin`].
    pub(crate) async fn begin(&self, req: StartRequest) -> Result<Started, StateError> {
        match self {
            Store::Dir(d) => d.begin(req).await,
            Store::Postgres(p) => p.begin(req).await,
        }
    }

    /// The other unfinished runs of `header`'s workflow and shard.
    pub(crate) async fn unfinished_like(
        &self,
        header: &RunHeader,
        run_id: &str,
    ) -> Result<Vec<RunHeader>, StateError> {
        match self {
            Store::Dir(d) => Ok(d.unfinished_like(header, run_id)),
            Store::Postgres(p) => p.unfinished_like(header, run_id).await,
        }
    }

    /// The quota budgets of run `run_id`.
    pub(crate) async fn budgets(&self, run_id: &str) -> Result<budget::Budgets, StateError> {
        match self {
            Store::Dir(d) => Ok(d.budgets(run_id)),
            Store::Postgres(p) => Ok(budget::Budgets::shared(
                p.clone(),
                run_id,
                p.active_ids().await?,
            )),
        }
    }

    /// The stored cursor `id`.
    pub(crate) async fn read_cursor(
        &self,
        id: CursorId<'_>,
    ) -> Result<Option<StoredCursor>, StateError> {
        match self {
            Store::Dir(d) => d.read_cursor(id),
            Store::Postgres(p) => p.read_cursor(id).await,
        }
    }

    /// Writes a cursor outside a run (`cursors set`).
    pub(crate) async fn write_cursor(&self, stored: &StoredCursor) -> Result<(), StateError> {
        match self {
            Store::Dir(d) => d.store_cursor(stored),
            Store::Postgres(p) => p.write_cursor(stored).await,
        }
    }

    /// Writes a run's cursor once everything `journal` recorded before it is durable: in a
    /// state directory a file written after the journal's flush, in the shared store in the
    /// same transaction as those records.
    pub(crate) async fn write_cursor_after(
        &self,
        journal: Option<&super::Journal>,
        stored: StoredCursor,
    ) -> Result<(), StateError> {
        match (self, journal) {
            (Store::Postgres(_), Some(j)) => j.commit_cursor(stored).await,
            (Store::Postgres(p), None) => p.write_cursor(&stored).await,
            (Store::Dir(d), j) => {
                if let Some(j) = j {
                    j.flush().await?;
                }
                crate::failpoint::hit("cursor-unwritten");
                d.store_cursor(&stored)
            }
        }
    }

    /// Every stored cursor.
    pub(crate) async fn list_cursors(&self) -> Result<Vec<StoredCursor>, StateError> {
        match self {
            Store::Dir(d) => Ok(d.list_cursors()),
            Store::Postgres(p) => p.list_cursors().await,
        }
    }

    /// Every run, newest first.
    pub(crate) async fn list(&self) -> Result<Vec<Listed>, StateError> {
        match self {
            Store::Dir(d) => d.list(),
            Store::Postgres(p) => p.list().await,
        }
    }

    /// The run whose id starts with `prefix`, and whether it is unfinished.
    pub(crate) async fn show(&self, prefix: &str) -> Result<(Replay, bool), StateError> {
        match self {
            Store::Dir(d) => d.show(prefix),
            Store::Postgres(p) => p.show(prefix).await,
        }
    }

    /// Who holds run `run_id` (of key `key`) now or ran it last, when known: the shared
    /// store records it per run; a directory's lock file names the key's last holder, which
    /// is this run's while it is unfinished.
    pub(crate) async fn runner(&self, run_id: &str, key: &str, active: bool) -> Option<String> {
        match self {
            Store::Dir(d) => active.then(|| d.last_holder(key)).flatten(),
            Store::Postgres(p) => p.runner(run_id).await,
        }
    }

    /// Gives up an unfinished run (`runs abandon`).
    pub(crate) async fn abandon_run(&self, prefix: &str) -> Result<String, StateError> {
        match self {
            Store::Dir(d) => d.abandon_run(prefix).await,
            Store::Postgres(p) => p.abandon_run(prefix).await,
        }
    }

    /// The unfinished runs idle since before `cutoff` (`runs prune`).
    pub(crate) async fn unfinished_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<RunSummary>, StateError> {
        match self {
            Store::Dir(d) => d.unfinished_before(cutoff),
            Store::Postgres(p) => p.unfinished_before(cutoff).await,
        }
    }

    /// Copies everything in `self` into `to` (`auditflow state copy`).
    pub(crate) async fn copy_to(&self, to: &Store) -> Result<CopyCounts, StateError> {
        let snap = match self {
            Store::Dir(d) => d.snapshot()?,
            Store::Postgres(p) => p.snapshot().await?,
        };
        match to {
            Store::Dir(d) => d.absorb(snap),
            Store::Postgres(p) => p.absorb(snap).await,
        }
    }
}

impl StateDir {
    /// The directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }
}
