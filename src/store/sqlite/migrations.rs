//! The schema: versioned migrations in `migrations/*.sql`, embedded in the binary and applied
//! in order at open, each in its own transaction with `PRAGMA user_version` raised to its
//! number. A database whose version is newer than the binary's is refused, so an older binary
//! never writes rows it would misread.

use std::path::Path;

use rusqlite::Connection;

use super::db;
use crate::store::{StoreError, StoreResult};

/// The migrations, in order; the index + 1 is the schema version it brings the database to.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/01_initial.sql"),
    include_str!("migrations/02_tokens.sql"),
    include_str!("migrations/03_schedules.sql"),
    include_str!("migrations/04_ended_and_held_indexes.sql"),
    include_str!("migrations/05_indexes_without_in.sql"),
    include_str!("migrations/06_job_counts.sql"),
    include_str!("migrations/07_compact_columns.sql"),
    include_str!("migrations/08_attempts_without_foreign_key.sql"),
    include_str!("migrations/09_lease_counter.sql"),
    include_str!("migrations/10_context_guards.sql"),
    include_str!("migrations/11_attempt_replay.sql"),
    include_str!("migrations/12_ended_minutes.sql"),
    include_str!("migrations/13_console_sessions.sql"),
    include_str!("migrations/14_attempt_base.sql"),
];

/// Applies the migrations `conn`'s database does not have yet.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> StoreResult<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found: version,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction().map_err(db)?;
        tx.execute_batch(sql).map_err(db)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}
