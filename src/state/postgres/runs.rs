//! Runs in the shared store: beginning, resuming, claiming (`--resume`), abandoning,
//! finishing, and listing them for the whole fleet.
//!
//! The steps mirror the state directory's ([`crate::state::StateDir::begin`]): the run key's
//! lock first, then everything read under it. The difference is where things are: the
//! pointer to a key's unfinished run is a row of `active`, a one-shot success a row of
//! `completions`, a terminal failure's note a row of `terminal_notes`, who holds a key a row
//! of `holders`, and the lock a session advisory lock on the writer's connection.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::writer::{self, Holder};
use super::{Failure, PgStore};
use crate::state::journal::{EndStatus, Record, Replay, RunHeader};
use crate::state::lifecycle::{holder_text, Completion};
use crate::state::{
    fresh_note, on_unfinished, resume, resumed_record, run_again_note, summary, Begin, Listed,
    RunState, RunSummary, StartRequest, Started, StateError, Unfinished,
};

/// A run as stored: its id, who holds or last ran it, its journal's lines.
pub(super) struct StoredRun {
    pub id: String,
    pub runner: Option<String>,
    /// The journal, one record per line, ending with a newline.
    pub text: String,
}

/// How a run in the shared store is kept while a process runs it.
pub(crate) struct PgHold {
    store: PgStore,
    key: String,
}

/// What one attempt at a run's lock found.
enum Locked {
    /// Taken, on this connection (whose backend the holder's row names).
    Held { client: Client, backend: i32 },
    /// Another session holds it; the connection asks who.
    Busy(Client),
}

impl PgStore {
    /// Takes run key `key`'s lock on a connection of its own, and records who holds it;
    /// [`StateError::Busy`] naming the holder when another runner has it. The connection,
    /// the lock and the holder's row are one attempt, retried as a whole: a connection lost
    /// between them (a server restart, an administrator's `pg_terminate_backend`) took its
    /// session lock with it, so the next attempt starts over on a new one.
    async fn lock_run(&self, key: &str) -> Result<Holder, StateError> {
        let lock = self.lock_id(key);
        let taken = self
            .retrying("taking the run lock", || self.try_lock(key, lock))
            .await?;
        match taken {
            Locked::Held { client, backend } => Ok(Holder {
                client,
                lock,
                key: key.to_string(),
                backend,
            }),
            Locked::Busy(client) => Err(self.busy(&client, key).await),
        }
    }

    /// One attempt at run key `key`'s lock (`lock`): a new connection, the advisory lock,
    /// and the holder's row naming this process and the connection's backend.
    async fn try_lock(&self, key: &str, lock: i64) -> Result<Locked, Failure> {
        let client = self.inner.target.connect().await.map_err(Failure::from)?;
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&lock])
            .await
            .map_err(Failure::from)?
            .get(0);
        if !got {
            return Ok(Locked::Busy(client));
        }
        let backend: i32 = client
            .query_one(
                "INSERT INTO holders (key, holder, backend) VALUES ($1, $2, pg_backend_pid())
                 ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, backend = EXCLUDED.backend
                 RETURNING backend",
                &[&key, &holder_text()],
            )
            .await
            .map_err(Failure::from)?
            .get(0);
        Ok(Locked::Held { client, backend })
    }

    /// [`StateError::Busy`] for key `key`, naming the process that holds its lock now (its
    /// `holders` row is written just after it takes the lock: waited for briefly).
    async fn busy(&self, client: &Client, key: &str) -> StateError {
        let lock = self.lock_id(key);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        let holder = loop {
            let row = client
                .query_opt(
                    "SELECT h.holder FROM holders h JOIN pg_locks l ON l.pid = h.backend
                     WHERE h.key = $1 AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                       AND ((l.classid::bigint << 32) | l.objid::bigint) = $2",
                    &[&key, &lock],
                )
                .await
                .ok()
                .flatten();
            match row {
                Some(r) => break r.get::<_, String>(0),
                None if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                None => break "a process that has not said who it is yet".into(),
            }
        };
        let run_id = client
            .query_opt("SELECT run_id FROM active WHERE key = $1", &[&key])
            .await
            .ok()
            .flatten()
            .map_or_else(|| "starting".into(), |r| r.get::<_, String>(0));
        StateError::Busy {
            run_id,
            holder,
            lock: format!("advisory lock in {}", self.describe()),
        }
    }

    /// Begins a run as [`crate::state::StateDir::begin`] does, in the shared store.
    pub(crate) async fn begin(&self, req: StartRequest) -> Result<Started, StateError> {
        let key = req.header.key.clone();
        let holder = self.lock_run(&key).await?;
        let mut notes = Vec::new();
        let mut existing = self.active_run(&key).await?;
        if let Some(id) = &req.resume {
            existing = Some(self.claim_for_resume(&holder, id, existing, &req).await?);
        }
        notes.extend(self.take_terminal_note(&key).await?);
        if existing.is_none() && req.one_shot {
            match (self.completion(&key).await?, req.fresh) {
                (Some(done), false) => return Ok(Started::AlreadyDone(done)),
                (Some(done), true) => {
                    self.delete_row("DELETE FROM completions WHERE key = $1", &key)
                        .await?;
                    notes.push(run_again_note(&done));
                }
                (None, _) => {}
            }
        }
        let header = req.header;
        if let Some(old_id) = existing {
            let replay = self.replay(&old_id).await;
            if req.fresh {
                if let Ok(r) = replay {
                    self.append_end(&r, EndStatus::Abandoned).await?;
                }
                notes.push(fresh_note(&old_id));
            } else {
                let replay = replay?;
                match on_unfinished(&replay, &header)? {
                    Unfinished::Resume => {
                        let state = self.reopen(holder, &replay, key, req.one_shot).await?;
                        state.journal.append(&resumed_record());
                        return Ok(Started::resumed(state, replay, notes));
                    }
                    Unfinished::Abandon(note) => {
                        self.append_end(&replay, EndStatus::Abandoned).await?;
                        notes.push(note);
                    }
                }
            }
        }
        let state = self.create(holder, header, key, req.one_shot).await?;
        Ok(Started::Run {
            state,
            begin: Begin::New,
            notes,
        })
    }

    /// The unfinished run of key `key`, if any.
    async fn active_run(&self, key: &str) -> Result<Option<String>, StateError> {
        let key = key.to_string();
        self.with_client("reading the unfinished run", |c| {
            let key = key.clone();
            async move {
                let row = c
                    .query_opt("SELECT run_id FROM active WHERE key = $1", &[&key])
                    .await?;
                Ok(row.map(|r| r.get(0)))
            }
        })
        .await
    }

    async fn delete_row(&self, sql: &'static str, key: &str) -> Result<(), StateError> {
        let key = key.to_string();
        self.with_client("updating the run state", |c| {
            let key = key.clone();
            async move {
                c.execute(sql, &[&key]).await?;
                Ok(())
            }
        })
        .await
    }

    async fn completion(&self, key: &str) -> Result<Option<Completion>, StateError> {
        let key = key.to_string();
        let body: Option<serde_json::Value> = self
            .with_client("reading the one-shot record", |c| {
                let key = key.clone();
                async move {
                    let row = c
                        .query_opt("SELECT body FROM completions WHERE key = $1", &[&key])
                        .await?;
                    Ok(row.map(|r| r.get(0)))
                }
            })
            .await?;
        Ok(body.and_then(|b| serde_json::from_value(b).ok()))
    }

    /// Takes the note of a terminal failure left for `key`, if any.
    async fn take_terminal_note(&self, key: &str) -> Result<Option<String>, StateError> {
        let key = key.to_string();
        let row: Option<(String, String)> = self
            .with_client("reading the last run's end", |c| {
                let key = key.clone();
                async move {
                    let row = c
                        .query_opt(
                            "DELETE FROM terminal_notes WHERE key = $1 RETURNING run_id, reason",
                            &[&key],
                        )
                        .await?;
                    Ok(row.map(|r| (r.get(0), r.get(1))))
                }
            })
            .await?;
        Ok(row.map(|(run_id, reason)| {
            format!(
                "the last run of this workflow with these inputs (run {run_id}) ended in a terminal vendor failure ({reason}); starting a new run"
            )
        }))
    }

    /// `--resume id`: the run moved under this key when it is unfinished and this workflow
    /// with these inputs; otherwise why not.
    async fn claim_for_resume(
        &self,
        holder: &Holder,
        id: &str,
        existing: Option<String>,
        req: &StartRequest,
    ) -> Result<String, StateError> {
        if let Some(decided) = resume::against_existing(id, existing) {
            return decided;
        }
        let their_key = self
            .active_keys()
            .await?
            .into_iter()
            .find(|(_, r)| r == id)
            .map(|(k, _)| k)
            .ok_or_else(|| resume::not_unfinished(id))?;
        let theirs = self.replay(id).await.ok().map(|r| r.header);
        resume::check_same_run(id, theirs, &req.header)?;
        let theirs = self.lock_id(&their_key);
        let got: bool = holder
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&theirs])
            .await
            .map_err(|e| self.error("taking the run lock", &e.into()))?
            .get(0);
        if !got {
            return Err(self.busy(&holder.client, &their_key).await);
        }
        let moved = holder
            .client
            .execute(
                "UPDATE active SET key = $1 WHERE key = $2 AND run_id = $3",
                &[&req.header.key, &their_key, &id],
            )
            .await;
        let _ = holder
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&theirs])
            .await;
        moved.map_err(|e| self.error("moving the run", &e.into()))?;
        Ok(id.to_string())
    }

    /// Every unfinished run's key and id.
    pub(super) async fn active_keys(&self) -> Result<Vec<(String, String)>, StateError> {
        self.with_client("reading the unfinished runs", |c| async move {
            let rows = c.query("SELECT key, run_id FROM active", &[]).await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
        .await
    }

    /// The ids of the unfinished runs.
    pub(crate) async fn active_ids(&self) -> Result<Vec<String>, StateError> {
        Ok(self
            .active_keys()
            .await?
            .into_iter()
            .map(|(_, id)| id)
            .collect())
    }

    /// Reads and folds run `id`'s journal.
    pub(crate) async fn replay(&self, id: &str) -> Result<Replay, StateError> {
        let run = id.to_string();
        let text: Option<String> = self
            .with_client("reading a journal", |c| {
                let run = run.clone();
                async move {
                    let row = c
                        .query_one(
                            "SELECT string_agg(line, E'\\n' ORDER BY seq) FROM journal WHERE run_id = $1",
                            &[&run],
                        )
                        .await?;
                    Ok(row.get(0))
                }
            })
            .await?;
        let Some(mut text) = text else {
            return Err(StateError::NoSuchRun(id.to_string()));
        };
        text.push('\n');
        Replay::parse(text.as_bytes(), &self.place(id))
    }

    /// Appends the end record `status` to `replay`'s run (not held by a writer).
    async fn append_end(&self, replay: &Replay, status: EndStatus) -> Result<(), StateError> {
        let line = serde_json::to_string(&Record::Finished {
            at: Utc::now(),
            status,
            error: None,
        })
        .unwrap_or_default();
        let run = replay.header.run_id.clone();
        self.with_client("recording the run's end", |mut c| {
            let (run, line) = (run.clone(), line.clone());
            async move {
                let tx = c.transaction().await?;
                tx.execute(
                    "INSERT INTO journal (run_id, seq, line)
                     SELECT $1, coalesce(max(seq), 0) + 1, $2 FROM journal WHERE run_id = $1",
                    &[&run, &line],
                )
                .await?;
                tx.execute("DELETE FROM active WHERE run_id = $1", &[&run])
                    .await?;
                tx.commit().await?;
                Ok(())
            }
        })
        .await
    }

    /// Continues run `replay` with its writer on `holder`'s connection.
    async fn reopen(
        &self,
        holder: Holder,
        replay: &Replay,
        key: String,
        one_shot: bool,
    ) -> Result<RunState, StateError> {
        let id = replay.header.run_id.clone();
        let run = id.clone();
        let next: i64 = self
            .with_client("reopening the run", |c| {
                let run = run.clone();
                async move {
                    c.execute(
                        "UPDATE runs SET runner = $2 WHERE run_id = $1",
                        &[&run, &holder_text()],
                    )
                    .await?;
                    let row = c
                        .query_one(
                            "SELECT coalesce(max(seq), 0) + 1 FROM journal WHERE run_id = $1",
                            &[&run],
                        )
                        .await?;
                    Ok(row.get(0))
                }
            })
            .await?;
        let journal = writer::start(self.clone(), holder, id.clone(), next);
        Ok(self.run_state(id, journal, key, one_shot))
    }

    fn run_state(
        &self,
        id: String,
        journal: crate::state::Journal,
        key: String,
        one_shot: bool,
    ) -> RunState {
        RunState::held_in_postgres(
            id,
            journal,
            PgHold {
                store: self.clone(),
                key,
            },
            one_shot,
        )
    }

    /// Records a new run (its header, and as the key's unfinished run) in one transaction.
    async fn create(
        &self,
        holder: Holder,
        header: RunHeader,
        key: String,
        one_shot: bool,
    ) -> Result<RunState, StateError> {
        let id = header.run_id.clone();
        let line = serde_json::to_string(&Record::Run(header.clone())).unwrap_or_default();
        let (run, k, started) = (id.clone(), key.clone(), header.started_at);
        self.with_client("recording the new run", |mut c| {
            let (run, k, line) = (run.clone(), k.clone(), line.clone());
            async move {
                let tx = c.transaction().await?;
                tx.execute(
                    "INSERT INTO runs (run_id, key, started_at, last_at, runner) VALUES ($1, $2, $3, $3, $4)
                     ON CONFLICT (run_id) DO NOTHING",
                    &[&run, &k, &started, &holder_text()],
                )
                .await?;
                tx.execute(
                    "INSERT INTO journal (run_id, seq, line) VALUES ($1, 1, $2) ON CONFLICT DO NOTHING",
                    &[&run, &line],
                )
                .await?;
                tx.execute(
                    "INSERT INTO active (key, run_id) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET run_id = EXCLUDED.run_id",
                    &[&k, &run],
                )
                .await?;
                tx.commit().await?;
                Ok(())
            }
        })
        .await?;
        let journal = writer::start(self.clone(), holder, id.clone(), 2);
        Ok(self.run_state(id, journal, key, one_shot))
    }

    /// The unfinished runs of the same workflow and shard as `header`, but `run_id`.
    pub(crate) async fn unfinished_like(
        &self,
        header: &RunHeader,
        run_id: &str,
    ) -> Result<Vec<RunHeader>, StateError> {
        let run = run_id.to_string();
        // Only their headers (each journal's first line), as the directory reads them.
        let lines: Vec<String> = self
            .with_client("reading the unfinished runs", |c| {
                let run = run.clone();
                async move {
                    let rows = c
                        .query(
                            "SELECT j.line FROM active a JOIN journal j ON j.run_id = a.run_id AND j.seq = 1
                             WHERE a.run_id <> $1",
                            &[&run],
                        )
                        .await?;
                    Ok(rows.iter().map(|r| r.get(0)).collect())
                }
            })
            .await?;
        let mut out: Vec<RunHeader> = lines
            .iter()
            .filter_map(|l| RunHeader::parse_line(l))
            .filter(|h| {
                crate::state::lifecycle::same_workflow(h, header) && h.shard == header.shard
            })
            .collect();
        out.sort_by_key(|h| h.started_at);
        Ok(out)
    }

    /// Every run recorded, newest first, with who holds or last ran it.
    pub(crate) async fn list(&self) -> Result<Vec<Listed>, StateError> {
        let rows = self.all_journals().await?;
        let keys = self.active_keys().await?;
        let held = self.held_runs(&keys).await?;
        let active: HashSet<String> = keys.into_iter().map(|(_, id)| id).collect();
        let mut out: Vec<Listed> = rows
            .into_iter()
            .map(|StoredRun { id, runner, text }| {
                match Replay::parse(text.as_bytes(), &self.place(&id)) {
                    Ok(r) => {
                        let mut s = summary(&r, active.contains(&id));
                        s.runner = runner;
                        s.held = held.contains(&id);
                        Ok(s)
                    }
                    Err(e) => Err((id, e)),
                }
            })
            .collect();
        crate::state::newest_first(&mut out);
        Ok(out)
    }

    /// Every run with its runner and journal text (one query for all).
    pub(super) async fn all_journals(&self) -> Result<Vec<StoredRun>, StateError> {
        self.with_client("listing runs", |c| async move {
            let rows = c
                .query(
                    "SELECT r.run_id, r.runner, coalesce(string_agg(j.line, E'\\n' ORDER BY j.seq), '')
                     FROM runs r LEFT JOIN journal j USING (run_id)
                     GROUP BY r.run_id, r.runner",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| StoredRun {
                    id: r.get(0),
                    runner: r.get(1),
                    text: r.get::<_, String>(2) + "\n",
                })
                .collect())
        })
        .await
    }

    /// Of the unfinished runs `keys` (key, run id), those whose lock a live connection holds.
    pub(super) async fn held_runs(
        &self,
        keys: &[(String, String)],
    ) -> Result<HashSet<String>, StateError> {
        let locks: HashMap<i64, &String> =
            keys.iter().map(|(k, id)| (self.lock_id(k), id)).collect();
        let held: Vec<i64> = self
            .with_client("reading the run locks", |c| async move {
                let rows = c
                    .query(
                        "SELECT ((classid::bigint << 32) | objid::bigint) FROM pg_locks
                         WHERE locktype = 'advisory' AND objsubid = 1 AND granted
                           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                        &[],
                    )
                    .await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
            .await?;
        Ok(held
            .into_iter()
            .filter_map(|l| locks.get(&l).map(|id| (*id).clone()))
            .collect())
    }

    /// The run whose id starts with `prefix`, and whether it is unfinished.
    pub(crate) async fn show(&self, prefix: &str) -> Result<(Replay, bool), StateError> {
        let pattern = format!("{}%", prefix.replace(['%', '_', '\\'], ""));
        let found: Vec<String> = self
            .with_client("finding the run", |c| {
                let pattern = pattern.clone();
                async move {
                    let rows = c
                        .query(
                            "SELECT run_id FROM runs WHERE run_id LIKE $1 ORDER BY run_id LIMIT 20",
                            &[&pattern],
                        )
                        .await?;
                    Ok(rows.iter().map(|r| r.get(0)).collect())
                }
            })
            .await?;
        match found.as_slice() {
            [] => Err(StateError::NoSuchRun(prefix.to_string())),
            [id] => {
                let r = self.replay(id).await?;
                let active = self.active_ids().await?.contains(id);
                Ok((r, active))
            }
            _ => Err(StateError::Ambiguous {
                prefix: prefix.to_string(),
                candidates: found,
            }),
        }
    }

    /// Gives up the unfinished run whose id starts with `prefix`; refused while held.
    pub(crate) async fn abandon_run(&self, prefix: &str) -> Result<String, StateError> {
        let (replay, active) = self.show(prefix).await?;
        let id = replay.header.run_id.clone();
        let key = self
            .active_keys()
            .await?
            .into_iter()
            .find(|(_, r)| *r == id)
            .map(|(k, _)| k)
            .filter(|_| active)
            .ok_or_else(|| StateError::NotUnfinished {
                run_id: id.clone(),
                status: replay.status().to_string(),
            })?;
        let _holder = self.lock_run(&key).await?;
        let replay = self.replay(&id).await?;
        self.append_end(&replay, EndStatus::Abandoned).await?;
        Ok(id)
    }

    /// Who holds run `id` now or ran it last.
    pub(crate) async fn runner(&self, id: &str) -> Option<String> {
        let run = id.to_string();
        self.with_client("reading the run's runner", |c| {
            let run = run.clone();
            async move {
                let row = c
                    .query_opt("SELECT runner FROM runs WHERE run_id = $1", &[&run])
                    .await?;
                Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// The unfinished runs whose last record is older than `cutoff`.
    pub(crate) async fn unfinished_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<RunSummary>, StateError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter_map(Result::ok)
            .filter(|s| s.active && s.last_at < cutoff)
            .collect())
    }
}

impl PgHold {
    /// See [`RunState::finish`]: the one-shot success first, the end record, then the run is
    /// no longer the key's unfinished one.
    pub(crate) async fn finish(
        &self,
        run: &RunState,
        status: crate::events::RunStatus,
        error: Option<String>,
        outputs: &serde_json::Value,
    ) -> Result<(), StateError> {
        use crate::events::RunStatus;
        if status == RunStatus::Succeeded && run.one_shot() {
            let done = Completion {
                run_id: run.run_id.clone(),
                finished_at: Utc::now(),
                outputs: outputs.clone(),
            };
            let body = serde_json::to_value(&done).unwrap_or_default();
            let key = self.key.clone();
            self.store
                .with_client("recording the one-shot success", |c| {
                    let (key, body) = (key.clone(), body.clone());
                    async move {
                        c.execute(
                            "INSERT INTO completions (key, body) VALUES ($1, $2)
                             ON CONFLICT (key) DO UPDATE SET body = EXCLUDED.body",
                            &[&key, &body],
                        )
                        .await?;
                        Ok(())
                    }
                })
                .await?;
        }
        run.journal
            .append_durable(&Record::Finished {
                at: Utc::now(),
                status: status.into(),
                error,
            })
            .await?;
        if status == RunStatus::Succeeded {
            self.leave_active(&run.run_id).await?;
        }
        Ok(())
    }

    /// The run is no longer its key's unfinished run.
    pub(crate) async fn leave_active(&self, run_id: &str) -> Result<(), StateError> {
        let (key, run) = (self.key.clone(), run_id.to_string());
        self.store
            .with_client("ending the run", |c| {
                let (key, run) = (key.clone(), run.clone());
                async move {
                    c.execute(
                        "DELETE FROM active WHERE key = $1 AND run_id = $2",
                        &[&key, &run],
                    )
                    .await?;
                    Ok::<(), Failure>(())
                }
            })
            .await
    }

    /// See [`RunState::end_terminal`].
    pub(crate) async fn end_terminal(&self, run_id: &str, reason: &str) -> Result<(), StateError> {
        let (key, run, reason) = (self.key.clone(), run_id.to_string(), reason.to_string());
        self.store
            .with_client("recording the terminal failure", |c| {
                let (key, run, reason) = (key.clone(), run.clone(), reason.clone());
                async move {
                    c.execute(
                        "INSERT INTO terminal_notes (key, run_id, reason) VALUES ($1, $2, $3)
                         ON CONFLICT (key) DO UPDATE SET run_id = EXCLUDED.run_id, reason = EXCLUDED.reason",
                        &[&key, &run, &reason],
                    )
                    .await?;
                    Ok(())
                }
            })
            .await?;
        self.leave_active(run_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::RunStatus;
    use crate::state::tests::{header, start};

    async fn begin(store: &PgStore, req: StartRequest) -> Result<Started, StateError> {
        store.begin(req).await
    }

    fn run_of(started: Started) -> (RunState, Begin) {
        match started {
            Started::Run { state, begin, .. } => (state, begin),
            Started::AlreadyDone(d) => panic!("unexpected completion of {}", d.run_id),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_run_resumes_until_it_succeeds_and_is_held_by_one_runner_at_a_time() {
        let Some(pg) = crate::state::postgres::testing::schema().await else {
            return;
        };
        let store = &pg.store;
        let (s, b) = run_of(
            begin(store, start(header("k1", "run-a"), false))
                .await
                .unwrap(),
        );
        assert!(matches!(b, Begin::New));
        s.journal.append(&Record::Done {
            step: "x".into(),
            at: Utc::now(),
            status: crate::state::DoneStatus::Succeeded,
            attempts: 1,
            outputs: serde_json::json!(1),
            replayable: true,
        });
        // While this process holds it, another runner is told who does.
        let other = PgStore::open(&pg.url).await.unwrap();
        let e = begin(&other, start(header("k1", "run-x"), false))
            .await
            .err()
            .expect("busy");
        assert!(
            matches!(e, StateError::Busy { ref run_id, .. } if run_id == "run-a"),
            "{e}"
        );
        assert!(e.to_string().contains("pid "), "{e}");
        s.finish(
            RunStatus::Pending,
            Some("waiting".into()),
            &serde_json::Value::Null,
        )
        .await
        .unwrap();
        drop(s);
        // The lock went with the writer's connection; the next runner resumes run-a.
        let mut resumed = None;
        for _ in 0..50 {
            match begin(&other, start(header("k1", "run-b"), false)).await {
                Ok(st) => {
                    resumed = Some(st);
                    break;
                }
                Err(StateError::Busy { .. }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
        let (s, b) = run_of(resumed.expect("the lock was released"));
        let Begin::Resumed(r) = b else {
            panic!("expected a resume")
        };
        assert_eq!(r.header.run_id, "run-a");
        assert!(
            r.done.contains_key("x"),
            "the record written before is there"
        );
        s.finish(RunStatus::Succeeded, None, &serde_json::Value::Null)
            .await
            .unwrap();
        drop(s);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (s, b) = run_of(
            begin(store, start(header("k1", "run-c"), false))
                .await
                .unwrap(),
        );
        assert!(matches!(b, Begin::New), "a succeeded run is not resumed");
        assert_eq!(s.run_id, "run-c");
        let listed = store.list().await.unwrap();
        assert_eq!(listed.len(), 2);
        let c = listed
            .iter()
            .flatten()
            .find(|l| l.run_id == "run-c")
            .unwrap();
        assert!(c.held && c.runner.as_deref().is_some_and(|r| r.contains("pid ")));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_one_shot_success_is_remembered_and_a_terminal_failure_starts_anew() {
        let Some(pg) = crate::state::postgres::testing::schema().await else {
            return;
        };
        let store = &pg.store;
        let mut req = start(header("once", "run-1"), false);
        req.one_shot = true;
        let (s, _) = run_of(begin(store, req).await.unwrap());
        s.finish(RunStatus::Succeeded, None, &serde_json::json!({"n": 1}))
            .await
            .unwrap();
        drop(s);
        let mut req = start(header("once", "run-2"), false);
        req.one_shot = true;
        let again = loop {
            match begin(store, req).await {
                Err(StateError::Busy { .. }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    req = start(header("once", "run-2"), false);
                    req.one_shot = true;
                }
                other => break other.unwrap(),
            }
        };
        let Started::AlreadyDone(done) = again else {
            panic!("a one-shot success is not run again")
        };
        assert_eq!(
            (done.run_id.as_str(), &done.outputs),
            ("run-1", &serde_json::json!({"n": 1}))
        );

        let (s, _) = run_of(
            begin(store, start(header("t", "run-t"), false))
                .await
                .unwrap(),
        );
        s.finish(
            RunStatus::Failed,
            Some("ERROR".into()),
            &serde_json::Value::Null,
        )
        .await
        .unwrap();
        s.end_terminal("export ended ERROR").await.unwrap();
        drop(s);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let Started::Run {
            begin: b, notes, ..
        } = begin(store, start(header("t", "run-u"), false))
            .await
            .unwrap()
        else {
            panic!("runs")
        };
        assert!(matches!(b, Begin::New));
        assert!(
            notes.iter().any(|n| n.contains("export ended ERROR")),
            "{notes:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_store_written_by_a_newer_release_is_refused() {
        let Some(pg) = crate::state::postgres::testing::schema().await else {
            return;
        };
        pg.store
            .with_client("test", |c| async move {
                c.execute("UPDATE meta SET version = 99", &[]).await?;
                Ok(())
            })
            .await
            .unwrap();
        let e = PgStore::open(&pg.url).await.err().expect("refused");
        assert!(matches!(e, StateError::Newer { found: 99, .. }), "{e}");
        assert!(e.to_string().contains("upgrade auditflow"), "{e}");
    }
}
