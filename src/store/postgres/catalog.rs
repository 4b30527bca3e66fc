//! The catalog on PostgreSQL: tasks and their versions, module bytes, queues, API tokens,
//! console sessions and schedules. Small tables written by operators; a schedule's fire is applied once across
//! nodes by moving its `next_fire` only from the value the caller read.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;

use super::rows::{self, SCHEDULE_COLUMNS, id_bytes};
use super::{corrupt, db};
use crate::domain::{
    JobState, ModuleDigest, QueueConfig, QueueName, QueueStats, Role, ScheduleName, ScheduleRecord,
    SessionRecord, TaskDefaults, TaskName, TaskRecord, TaskVersion, Timestamp, TokenRecord,
};
use crate::store::{Revoked, StoreResult};

/// A task and its versions, newest first.
pub(super) async fn task(
    client: &impl GenericClient,
    name: &str,
) -> StoreResult<Option<TaskRecord>> {
    let Some(row) = client
        .query_opt(
            "SELECT name, digest, defaults, updated_at FROM tasks WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(db)?
    else {
        return Ok(None);
    };
    let versions = client
        .query(
            "SELECT digest, size_bytes, created_at FROM task_versions WHERE name = $1 \
             ORDER BY created_at DESC, digest",
            &[&name],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|v| {
            Ok(TaskVersion {
                digest: v
                    .get::<_, &str>(0)
                    .parse()
                    .map_err(|e| corrupt("task_versions", e))?,
                size_bytes: v.get::<_, i64>(1) as u64,
                created_at: Timestamp(v.get(2)),
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Some(TaskRecord {
        name: row
            .get::<_, &str>(0)
            .parse()
            .map_err(|e| corrupt("tasks", e))?,
        digest: row
            .get::<_, &str>(1)
            .parse()
            .map_err(|e| corrupt("tasks", e))?,
        defaults: rows::parse_json::<TaskDefaults>("tasks", row.get(2))?,
        versions,
        updated_at: Timestamp(row.get(3)),
    }))
}

/// Registers a task version (in `client`'s transaction); the name now points at it.
pub(super) async fn put_task(
    client: &impl GenericClient,
    name: &TaskName,
    digest: ModuleDigest,
    size_bytes: u64,
    defaults: Option<&TaskDefaults>,
    now: Timestamp,
) -> StoreResult<()> {
    let fresh = rows::json(&TaskDefaults::default());
    let given = defaults.map(rows::json);
    client
        .execute(
            "INSERT INTO tasks (name, digest, defaults, updated_at) \
             VALUES ($1, $2, coalesce($3, $4), $5) \
             ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, \
             defaults = coalesce($3, tasks.defaults), updated_at = excluded.updated_at",
            &[&name.as_str(), &digest.to_hex(), &given, &fresh, &now.0],
        )
        .await
        .map_err(db)?;
    client
        .execute(
            "INSERT INTO task_versions (name, digest, size_bytes, created_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name, digest) DO UPDATE SET created_at = excluded.created_at",
            &[
                &name.as_str(),
                &digest.to_hex(),
                &(size_bytes as i64),
                &now.0,
            ],
        )
        .await
        .map_err(db)?;
    Ok(())
}

/// A queue's columns, in the order [`queue_config`] reads them.
const QUEUE_COLUMNS: &str = "name, concurrency, default_limits, caps, paused, key_concurrency";

/// One queue's settings and pause state, from a row of [`QUEUE_COLUMNS`].
fn queue_config(row: &tokio_postgres::Row) -> StoreResult<(QueueConfig, bool)> {
    let config = QueueConfig {
        name: row
            .get::<_, &str>(0)
            .parse()
            .map_err(|e| corrupt("queues", e))?,
        concurrency: row.get::<_, i32>(1).max(0) as u32,
        key_concurrency: row.get::<_, i32>(5).max(1) as u32,
        default_limits: rows::parse_json("queues", row.get(2))?,
        caps: rows::parse_json("queues", row.get(3))?,
    };
    Ok((config, row.get(4)))
}

/// Every queue's settings and pause state, by name.
pub(super) async fn queue_configs(
    client: &impl GenericClient,
) -> StoreResult<Vec<(QueueConfig, bool)>> {
    let statement = client
        .prepare_cached(&format!("SELECT {QUEUE_COLUMNS} FROM queues ORDER BY name"))
        .await
        .map_err(db)?;
    client
        .query(&statement, &[])
        .await
        .map_err(db)?
        .iter()
        .map(queue_config)
        .collect()
}

/// Queues with their counts per state: one, or all if `name` is `None`.
pub(super) async fn queue_stats(
    client: &impl GenericClient,
    name: Option<&QueueName>,
) -> StoreResult<Vec<QueueStats>> {
    let name = name.map(QueueName::as_str);
    let queues = client
        .query(
            &format!(
                "SELECT {QUEUE_COLUMNS} FROM queues \
                 WHERE $1::text IS NULL OR name = $1 ORDER BY name"
            ),
            &[&name],
        )
        .await
        .map_err(db)?;
    let counts = client
        .query(
            "SELECT queue, state, n FROM job_counts WHERE $1::text IS NULL OR queue = $1",
            &[&name],
        )
        .await
        .map_err(db)?;
    let mut out = Vec::with_capacity(queues.len());
    for row in &queues {
        let (config, paused) = queue_config(row)?;
        let mut by_state: BTreeMap<JobState, u64> =
            JobState::ALL.into_iter().map(|s| (s, 0)).collect();
        for c in counts
            .iter()
            .filter(|c| c.get::<_, &str>(0) == config.name.as_str())
        {
            let state: JobState = c
                .get::<_, &str>(1)
                .parse()
                .map_err(|e| corrupt("job_counts", e))?;
            by_state.insert(state, c.get::<_, i64>(2).max(0) as u64);
        }
        out.push(QueueStats {
            config,
            paused,
            counts: by_state,
        });
    }
    Ok(out)
}

pub(super) async fn put_queue(client: &impl GenericClient, c: &QueueConfig) -> StoreResult<()> {
    client
        .execute(
            "INSERT INTO queues (name, concurrency, default_limits, caps, key_concurrency) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, \
             default_limits = excluded.default_limits, caps = excluded.caps, \
             key_concurrency = excluded.key_concurrency",
            &[
                &c.name.as_str(),
                &(c.concurrency as i32),
                &rows::json(&c.default_limits),
                &rows::json(&c.caps),
                &(c.key_concurrency.min(i32::MAX as u32) as i32),
            ],
        )
        .await
        .map_err(db)?;
    Ok(())
}

fn token(r: &tokio_postgres::Row) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0),
        name: r.get(1),
        role: r
            .get::<_, &str>(2)
            .parse()
            .map_err(|e| corrupt("tokens", e))?,
        hash: r.get(3),
        created_at: Timestamp(r.get(4)),
        revoked_at: r.get::<_, Option<i64>>(5).map(Timestamp),
    })
}

pub(super) async fn tokens(client: &impl GenericClient) -> StoreResult<Vec<TokenRecord>> {
    client
        .query(
            "SELECT id, name, role, hash, created_at, revoked_at FROM tokens \
             ORDER BY created_at, id",
            &[],
        )
        .await
        .map_err(db)?
        .iter()
        .map(token)
        .collect()
}

/// Revokes a live token in `client`'s transaction, unless it is the last live admin token.
/// The live admin tokens are locked first, in id order: of two revocations at once, the
/// second sees what the first did.
pub(super) async fn revoke_token(
    client: &impl GenericClient,
    id: &str,
    now: Timestamp,
) -> StoreResult<Revoked> {
    let admins = client
        .query(
            "SELECT id FROM tokens WHERE role = 'admin' AND revoked_at IS NULL \
             ORDER BY id FOR UPDATE",
            &[],
        )
        .await
        .map_err(db)?
        .len();
    let role: Option<String> = client
        .query_opt(
            "SELECT role FROM tokens WHERE id = $1 AND revoked_at IS NULL",
            &[&id],
        )
        .await
        .map_err(db)?
        .map(|r| r.get(0));
    match role {
        None => return Ok(Revoked::NotFound),
        Some(role) if role == Role::Admin.as_str() && admins <= 1 => {
            return Ok(Revoked::LastAdmin);
        }
        Some(_) => {}
    }
    client
        .execute(
            "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &now.0],
        )
        .await
        .map_err(db)?;
    client
        .execute(
            "DELETE FROM sessions WHERE token_hash = (SELECT hash FROM tokens WHERE id = $1)",
            &[&id],
        )
        .await
        .map_err(db)?;
    Ok(Revoked::Revoked)
}

/// The unrevoked token whose secret hashes to `hash`.
pub(super) async fn token_by_hash(
    client: &impl GenericClient,
    hash: &str,
) -> StoreResult<Option<TokenRecord>> {
    let statement = client
        .prepare_cached(
            "SELECT id, name, role, hash, created_at, revoked_at FROM tokens \
             WHERE hash = $1 AND revoked_at IS NULL",
        )
        .await
        .map_err(db)?;
    client
        .query_opt(&statement, &[&hash])
        .await
        .map_err(db)?
        .as_ref()
        .map(token)
        .transpose()
}

/// Keeps a console session and forgets the expired ones.
pub(super) async fn start_session(
    client: &impl GenericClient,
    s: &SessionRecord,
    now: Timestamp,
) -> StoreResult<()> {
    client
        .execute("DELETE FROM sessions WHERE expires_at <= $1", &[&now.0])
        .await
        .map_err(db)?;
    client
        .execute(
            "INSERT INTO sessions (hash, token_hash, expires_at) VALUES ($1, $2, $3)",
            &[&s.hash, &s.token_hash, &s.expires_at.0],
        )
        .await
        .map_err(db)?;
    Ok(())
}

/// The unexpired session whose secret hashes to `hash`.
pub(super) async fn session(
    client: &impl GenericClient,
    hash: &str,
    now: Timestamp,
) -> StoreResult<Option<SessionRecord>> {
    let statement = client
        .prepare_cached(
            "SELECT hash, token_hash, expires_at FROM sessions \
             WHERE hash = $1 AND expires_at > $2",
        )
        .await
        .map_err(db)?;
    Ok(client
        .query_opt(&statement, &[&hash, &now.0])
        .await
        .map_err(db)?
        .map(|r| SessionRecord {
            hash: r.get(0),
            token_hash: r.get(1),
            expires_at: Timestamp(r.get(2)),
        }))
}

/// Forgets a session; false if there was none.
pub(super) async fn end_session(client: &impl GenericClient, hash: &str) -> StoreResult<bool> {
    Ok(client
        .execute("DELETE FROM sessions WHERE hash = $1", &[&hash])
        .await
        .map_err(db)?
        > 0)
}

/// The schedules a `WHERE`/`ORDER BY` clause (its values in `params`) selects.
pub(super) async fn schedules(
    client: &impl GenericClient,
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> StoreResult<Vec<ScheduleRecord>> {
    let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules {filter}");
    client
        .query(&sql, params)
        .await
        .map_err(db)?
        .iter()
        .map(rows::schedule)
        .collect()
}

/// Creates a schedule, or updates its definition, pause state and next fire, keeping the
/// history stored.
pub(super) async fn put_schedule(
    client: &impl GenericClient,
    r: &ScheduleRecord,
) -> StoreResult<()> {
    client
        .execute(
            "INSERT INTO schedules (name, spec, job, overlap, catch_up, paused, next_fire, \
             last_fire, last_job, fires, skipped, last_error, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, job = excluded.job, \
             overlap = excluded.overlap, catch_up = excluded.catch_up, \
             paused = excluded.paused, next_fire = excluded.next_fire, \
             updated_at = excluded.updated_at",
            &[
                &r.name.as_str(),
                &rows::json(&r.spec),
                &rows::json(&r.job),
                &rows::json(&r.overlap),
                &rows::json(&r.catch_up),
                &r.paused,
                &r.next_fire.map(|t| t.0),
                &r.last_fire.map(|t| t.0),
                &r.last_job.map(id_bytes),
                &(r.fires as i64),
                &(r.skipped as i64),
                &r.last_error,
                &r.created_at.0,
                &r.updated_at.0,
            ],
        )
        .await
        .map_err(db)?;
    Ok(())
}

/// Moves a schedule's next fire from `expected` (in `client`'s transaction); false if
/// another node moved it first.
#[expect(clippy::too_many_arguments, reason = "the columns of one fire")]
pub(super) async fn fire_schedule(
    client: &impl GenericClient,
    name: &ScheduleName,
    expected: Timestamp,
    next: Option<Timestamp>,
    fired_at: Option<Timestamp>,
    jobs: i64,
    skipped: u64,
    error: Option<&str>,
    now: Timestamp,
) -> StoreResult<bool> {
    let moved = client
        .execute(
            "UPDATE schedules SET next_fire = $3, last_fire = coalesce($4, last_fire), \
             fires = fires + $5, skipped = skipped + $6, last_error = $7, updated_at = $8 \
             WHERE name = $1 AND next_fire = $2 AND NOT paused",
            &[
                &name.as_str(),
                &expected.0,
                &next.map(|t| t.0),
                &fired_at.map(|t| t.0),
                &jobs,
                &(skipped as i64),
                &error,
                &now.0,
            ],
        )
        .await
        .map_err(db)?;
    Ok(moved > 0)
}
