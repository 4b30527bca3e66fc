//! The schema: versioned migrations in `migrations/*.sql`, embedded in the binary and applied
//! in order at connect, each in its own transaction with the version it brings the database
//! to. Nodes starting together take turns under an advisory lock. A database whose version
//! is newer than the binary's is refused, so an older node never writes rows it would
//! misread.

use deadpool_postgres::Object;

use super::db;
use crate::store::{StoreError, StoreResult};

/// The migrations, in order; the index + 1 is the schema version it brings the database to.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/01_schema.sql"),
    include_str!("migrations/02_functions.sql"),
    include_str!("migrations/03_context_guards.sql"),
    include_str!("migrations/04_attempt_replay.sql"),
    include_str!("migrations/05_ended_minutes.sql"),
    include_str!("migrations/06_console_sessions.sql"),
    include_str!("migrations/07_compact_replay.sql"),
    include_str!("migrations/08_attempt_base.sql"),
    include_str!("migrations/09_running_by_lease.sql"),
    include_str!("migrations/10_job_lookup.sql"),
    include_str!("migrations/11_running_by_expiry.sql"),
];

/// The advisory lock key of migrations ("remotask" in ASCII, cut to 63 bits).
const MIGRATION_LOCK: i64 = 0x7265_6d6f_7461_736b;

/// Applies the migrations the database does not have yet.
pub(super) async fn migrate(client: &mut Object, shown: &str) -> StoreResult<()> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    let result = apply(client, shown).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    result
}

async fn apply(client: &mut Object, shown: &str) -> StoreResult<()> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS remotask_schema (version integer NOT NULL); \
             INSERT INTO remotask_schema (version) \
             SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM remotask_schema)",
        )
        .await
        .map_err(db)?;
    let version: i32 = client
        .query_one("SELECT version FROM remotask_schema", &[])
        .await
        .map_err(db)?
        .get(0);
    let supported = MIGRATIONS.len() as i64;
    if i64::from(version) > supported {
        return Err(StoreError::TooNew {
            path: shown.to_owned(),
            found: i64::from(version),
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = client.transaction().await.map_err(db)?;
        tx.batch_execute(sql).await.map_err(db)?;
        tx.execute(
            "UPDATE remotask_schema SET version = $1",
            &[&(i as i32 + 1)],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
    }
    Ok(())
}
