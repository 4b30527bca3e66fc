//! The catalog: tasks and their versions, queues and their settings, API tokens and console
//! sessions. Small tables written by operators, read on every submit (tasks), claim (queues)
//! and request (tokens, sessions).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::rows::{json, parse_json};
use super::{corrupt, db};
use crate::domain::{
    JobState, ModuleDigest, QueueConfig, QueueName, QueueStats, Role, SessionRecord, TaskDefaults,
    TaskName, TaskRecord, TaskVersion, Timestamp, TokenRecord,
};
use crate::store::{Revoked, StoreResult};

pub(super) fn load_task(conn: &Connection, name: &str) -> StoreResult<Option<TaskRecord>> {
    let row = conn
        .prepare_cached("SELECT name, digest, defaults, updated_at FROM tasks WHERE name = ?1")
        .map_err(db)?
        .query_row([name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()
        .map_err(db)?;
    let Some((name, digest, defaults, updated_at)) = row else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare_cached("SELECT digest, size_bytes, created_at FROM task_versions WHERE name = ?1 ORDER BY created_at DESC, digest")
        .map_err(db)?;
    let versions = stmt
        .query_map([&name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(db)?
        .map(|v| {
            let (d, size, at) = v.map_err(db)?;
            Ok(TaskVersion {
                digest: d.parse().map_err(|e| corrupt("task_versions", e))?,
                size_bytes: size as u64,
                created_at: Timestamp(at),
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Some(TaskRecord {
        name: name.parse().map_err(|e| corrupt("tasks", e))?,
        digest: digest.parse().map_err(|e| corrupt("tasks", e))?,
        defaults: parse_json::<TaskDefaults>("tasks", &defaults)?,
        versions,
        updated_at: Timestamp(updated_at),
    }))
}

pub(super) fn ensure_queue(conn: &Connection, name: &QueueName) -> StoreResult<()> {
    let config = QueueConfig::with_defaults(name.clone());
    conn.prepare_cached(
        "INSERT OR IGNORE INTO queues (name, concurrency, default_limits, caps, paused) VALUES (?1, ?2, ?3, ?4, 0)",
    )
    .map_err(db)?
    .execute(params![name.as_str(), config.concurrency, json(&config.default_limits), json(&config.caps)])
    .map_err(db)?;
    Ok(())
}

/// A queue's columns, in the order [`queue_row`] reads them.
const QUEUE_COLUMNS: &str = "name, concurrency, default_limits, caps, paused, key_concurrency";

/// A queue's settings and pause state as stored, not decoded yet.
type QueueRow = (String, u32, String, String, bool, u32);

fn queue_row(r: &Row<'_>) -> rusqlite::Result<QueueRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn decode_queue(row: QueueRow) -> StoreResult<(QueueConfig, bool)> {
    let (name, concurrency, default_limits, caps, paused, key_concurrency) = row;
    let config = QueueConfig {
        name: name.parse().map_err(|e| corrupt("queues", e))?,
        concurrency,
        key_concurrency,
        default_limits: parse_json("queues", &default_limits)?,
        caps: parse_json("queues", &caps)?,
    };
    Ok((config, paused))
}

/// A queue's settings, pause state and job counts per state.
pub(super) fn load_queue(conn: &Connection, name: &str) -> StoreResult<Option<QueueStats>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {QUEUE_COLUMNS} FROM queues WHERE name = ?1"
        ))
        .map_err(db)?
        .query_row([name], queue_row)
        .optional()
        .map_err(db)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let (config, paused) = decode_queue(row)?;
    let mut counts: BTreeMap<JobState, u64> = JobState::ALL.into_iter().map(|s| (s, 0)).collect();
    let mut stmt = conn
        .prepare_cached("SELECT state, n FROM job_counts WHERE queue = ?1")
        .map_err(db)?;
    let rows = stmt
        .query_map([config.name.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(db)?;
    for row in rows {
        let (state, n) = row.map_err(db)?;
        let state: JobState = state.parse().map_err(|e| corrupt("job_counts", e))?;
        counts.insert(state, n.max(0) as u64);
    }
    Ok(Some(QueueStats {
        config,
        paused,
        counts,
    }))
}

type TokenRow = StoreResult<TokenRecord>;

pub(super) fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    let role: String = r.get(2)?;
    Ok(role
        .parse()
        .map_err(|e| corrupt("tokens", e))
        .map(|role| TokenRecord {
            id: r.get(0).unwrap_or_default(),
            name: r.get(1).unwrap_or_default(),
            role,
            hash: r.get(3).unwrap_or_default(),
            created_at: Timestamp(r.get(4).unwrap_or_default()),
            revoked_at: r
                .get::<_, Option<i64>>(5)
                .unwrap_or_default()
                .map(Timestamp),
        }))
}

/// Registers a task version; the name now points at it.
pub(super) fn put_task(
    conn: &Connection,
    name: &TaskName,
    digest: ModuleDigest,
    size_bytes: u64,
    defaults: Option<TaskDefaults>,
    now: Timestamp,
) -> StoreResult<TaskRecord> {
    let existing: Option<String> = conn
        .query_row(
            "SELECT defaults FROM tasks WHERE name = ?1",
            [name.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    let defaults = match (defaults, existing) {
        (Some(d), _) => json(&d),
        (None, Some(old)) => old,
        (None, None) => json(&TaskDefaults::default()),
    };
    conn.execute(
        "INSERT INTO tasks (name, digest, defaults, updated_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, \
         defaults = excluded.defaults, updated_at = excluded.updated_at",
        params![name.as_str(), digest.to_hex(), defaults, now.0],
    )
    .map_err(db)?;
    conn.execute(
        "INSERT INTO task_versions (name, digest, size_bytes, created_at) \
         VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name, digest) DO UPDATE SET created_at = excluded.created_at",
        params![name.as_str(), digest.to_hex(), size_bytes as i64, now.0],
    )
    .map_err(db)?;
    load_task(conn, name.as_str())?.ok_or_else(|| corrupt("tasks", "task vanished after insert"))
}

/// Every task, by name.
pub(super) fn list_tasks(conn: &Connection) -> StoreResult<Vec<TaskRecord>> {
    let mut out = Vec::new();
    for n in names(conn, "SELECT name FROM tasks ORDER BY name")? {
        out.extend(load_task(conn, &n)?);
    }
    Ok(out)
}

/// The names a one-column query returns.
fn names(conn: &Connection, sql: &str) -> StoreResult<Vec<String>> {
    conn.prepare(sql)
        .map_err(db)?
        .query_map([], |r| r.get(0))
        .map_err(db)?
        .collect::<Result<_, _>>()
        .map_err(db)
}

/// Replaces a task's defaults; `None` if the task is unknown.
pub(super) fn set_task_defaults(
    conn: &Connection,
    name: &TaskName,
    defaults: &TaskDefaults,
    now: Timestamp,
) -> StoreResult<Option<TaskRecord>> {
    let n = conn
        .execute(
            "UPDATE tasks SET defaults = ?2, updated_at = ?3 WHERE name = ?1",
            params![name.as_str(), json(defaults), now.0],
        )
        .map_err(db)?;
    if n == 0 {
        return Ok(None);
    }
    load_task(conn, name.as_str())
}

/// Removes a task's name and versions; false if unknown.
pub(super) fn delete_task(conn: &Connection, name: &TaskName) -> StoreResult<bool> {
    conn.execute("DELETE FROM task_versions WHERE name = ?1", [name.as_str()])
        .map_err(db)?;
    Ok(conn
        .execute("DELETE FROM tasks WHERE name = ?1", [name.as_str()])
        .map_err(db)?
        > 0)
}

/// Creates or updates a queue's settings, keeping its pause state.
pub(super) fn put_queue(conn: &Connection, c: &QueueConfig) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO queues (name, concurrency, default_limits, caps, paused, key_concurrency) \
         VALUES (?1, ?2, ?3, ?4, 0, ?5) \
         ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, \
         default_limits = excluded.default_limits, caps = excluded.caps, \
         key_concurrency = excluded.key_concurrency",
        params![
            c.name.as_str(),
            c.concurrency,
            json(&c.default_limits),
            json(&c.caps),
            c.key_concurrency
        ],
    )
    .map_err(db)?;
    Ok(())
}

/// Every queue with its counts, by name.
pub(super) fn list_queues(conn: &Connection) -> StoreResult<Vec<QueueStats>> {
    let mut out = Vec::new();
    for n in names(conn, "SELECT name FROM queues ORDER BY name")? {
        out.extend(load_queue(conn, &n)?);
    }
    Ok(out)
}

/// Every queue's settings and pause state, without counts.
pub(super) fn queue_configs(conn: &Connection) -> StoreResult<Vec<(QueueConfig, bool)>> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {QUEUE_COLUMNS} FROM queues ORDER BY name"))
        .map_err(db)?;
    let rows = stmt.query_map([], queue_row).map_err(db)?;
    rows.map(|row| decode_queue(row.map_err(db)?)).collect()
}

/// Pauses or resumes a queue; false if unknown.
pub(super) fn set_paused(conn: &Connection, name: &QueueName, paused: bool) -> StoreResult<bool> {
    Ok(conn
        .execute(
            "UPDATE queues SET paused = ?2 WHERE name = ?1",
            params![name.as_str(), paused],
        )
        .map_err(db)?
        > 0)
}

pub(super) fn create_token(conn: &Connection, t: &TokenRecord) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO tokens (id, name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![t.id, t.name, t.role.as_str(), t.hash, t.created_at.0],
    )
    .map_err(db)?;
    Ok(())
}

pub(super) fn list_tokens(conn: &Connection) -> StoreResult<Vec<TokenRecord>> {
    let mut stmt = conn
        .prepare(
            "SELECT id, name, role, hash, created_at, revoked_at FROM tokens \
             ORDER BY created_at, id",
        )
        .map_err(db)?;
    let rows = stmt.query_map([], token_row).map_err(db)?;
    rows.map(|r| r.map_err(db)?).collect()
}

/// Revokes a token; false if unknown or already revoked.
/// Revokes a live token, unless it is the last live admin token (in the writer's
/// transaction: no other write comes between the count and the update).
pub(super) fn revoke_token(conn: &Connection, id: &str, now: Timestamp) -> StoreResult<Revoked> {
    let role: Option<String> = conn
        .query_row(
            "SELECT role FROM tokens WHERE id = ?1 AND revoked_at IS NULL",
            [id],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    let Some(role) = role else {
        return Ok(Revoked::NotFound);
    };
    if role == Role::Admin.as_str() {
        let admins: i64 = conn
            .query_row(
                "SELECT count(*) FROM tokens WHERE role = 'admin' AND revoked_at IS NULL",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        if admins <= 1 {
            return Ok(Revoked::LastAdmin);
        }
    }
    conn.execute(
        "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, now.0],
    )
    .map_err(db)?;
    conn.execute(
        "DELETE FROM sessions WHERE token_hash = (SELECT hash FROM tokens WHERE id = ?1)",
        [id],
    )
    .map_err(db)?;
    Ok(Revoked::Revoked)
}

/// The unrevoked token whose secret hashes to `hash`.
pub(super) fn token_by_hash(conn: &Connection, hash: &str) -> StoreResult<Option<TokenRecord>> {
    let row = conn
        .prepare_cached(
            "SELECT id, name, role, hash, created_at, revoked_at FROM tokens \
             WHERE hash = ?1 AND revoked_at IS NULL",
        )
        .map_err(db)?
        .query_row([hash], token_row)
        .optional()
        .map_err(db)?;
    row.transpose()
}

/// Keeps a console session and forgets the expired ones.
pub(super) fn start_session(
    conn: &Connection,
    s: &SessionRecord,
    now: Timestamp,
) -> StoreResult<()> {
    conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now.0])
        .map_err(db)?;
    conn.execute(
        "INSERT INTO sessions (hash, token_hash, expires_at) VALUES (?1, ?2, ?3)",
        params![s.hash, s.token_hash, s.expires_at.0],
    )
    .map_err(db)?;
    Ok(())
}

/// The unexpired session whose secret hashes to `hash`.
pub(super) fn session(
    conn: &Connection,
    hash: &str,
    now: Timestamp,
) -> StoreResult<Option<SessionRecord>> {
    conn.prepare_cached(
        "SELECT hash, token_hash, expires_at FROM sessions WHERE hash = ?1 AND expires_at > ?2",
    )
    .map_err(db)?
    .query_row(params![hash, now.0], |r| {
        Ok(SessionRecord {
            hash: r.get(0)?,
            token_hash: r.get(1)?,
            expires_at: Timestamp(r.get(2)?),
        })
    })
    .optional()
    .map_err(db)
}

/// Forgets a session; false if there was none.
pub(super) fn end_session(conn: &Connection, hash: &str) -> StoreResult<bool> {
    Ok(conn
        .execute("DELETE FROM sessions WHERE hash = ?1", [hash])
        .map_err(db)?
        > 0)
}
