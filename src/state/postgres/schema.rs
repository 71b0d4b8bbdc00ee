//! The store's tables, as numbered migrations applied in order on first use.
//!
//! Each migration runs once, in one transaction, under an advisory lock, so runners that
//! start together against a new database do not race; `meta.version` records the last one
//! applied. A database migrated by a newer release (a version this one does not know) is
//! refused, as a state directory written by a newer release is.
//!
//! A run's journal is kept as the very lines the directory store writes (`journal.line`):
//! the same masking and size bounds, read back by the same replay.

/// `MIGRATIONS[i]` brings the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[r"
CREATE TABLE meta (
    id integer PRIMARY KEY CHECK (id = 1),
    format text NOT NULL,
    version integer NOT NULL
);
INSERT INTO meta (id, format, version) VALUES (1, 'auditflow-state', 0);
CREATE TABLE runs (
    run_id text PRIMARY KEY,
    key text NOT NULL,
    started_at timestamptz NOT NULL,
    last_at timestamptz NOT NULL,
    runner text
);
CREATE TABLE journal (
    run_id text NOT NULL REFERENCES runs ON DELETE CASCADE,
    seq bigint NOT NULL,
    line text NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE active (
    key text PRIMARY KEY,
    run_id text NOT NULL REFERENCES runs
);
CREATE TABLE completions (
    key text PRIMARY KEY,
    body jsonb NOT NULL
);
CREATE TABLE terminal_notes (
    key text PRIMARY KEY,
    run_id text NOT NULL,
    reason text NOT NULL
);
CREATE TABLE holders (
    key text PRIMARY KEY,
    holder text NOT NULL,
    backend integer NOT NULL
);
CREATE TABLE ledgers (
    name text NOT NULL,
    key_id text NOT NULL,
    body jsonb NOT NULL,
    PRIMARY KEY (name, key_id)
);
CREATE TABLE cursors (
    workflow text NOT NULL,
    name text NOT NULL,
    key text NOT NULL,
    body jsonb NOT NULL,
    PRIMARY KEY (workflow, name, key)
);
"];

/// The schema version this release writes.
pub(super) fn current() -> i32 {
    i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX)
}
