//! Jobs: submits (many rows per statement; a unique key held by a live job returns that job),
//! reads and lists, and the operator's moves (cancel, release, retry, delete, clean) and a
//! running job's lease and progress, each one update guarded by the states the state
//! machine lets it leave.

use rusqlite::{Connection, OptionalExtension, params};

use super::batch::{BatchSql, statement_chunks, values_rows};
use super::catalog::ensure_queue;
use super::counts::StateCounts;
use super::moves::update;
use super::rows::{EncodedJob, JOB_COLUMNS, query_jobs};
use super::{corrupt, db};
use crate::domain::{
    CancelOutcome, Event, Job, JobFilter, JobId, JobState, KeyPosition, QueueName, QueuePosition,
    Timestamp,
};
use crate::store::guards::{Sql, guard};
use crate::store::{Claimed, Inserted, StoreResult};

/// A live job, as `jobs_unique_live` says it (comparisons, not `IN`: see migration 5).
pub(super) const LIVE_STATES: &str =
    "(state = 'held' OR state = 'scheduled' OR state = 'queued' OR state = 'running')";

/// Running jobs whose lease expired before `?1`. Read through `jobs_running`, a scan of the
/// running jobs only: the rescuer asks every second, and an `ORDER BY id` here made SQLite
/// scan the whole table in id order instead (sorted by the caller).
pub(super) const EXPIRED_LEASES: &str = "state = 'running' AND lease_expires < ?1";

pub(super) fn insert_all(conn: &Connection, jobs: &[EncodedJob]) -> StoreResult<Vec<Inserted>> {
    let mut out = Vec::with_capacity(jobs.len());
    let mut queues_seen: Vec<QueueName> = Vec::new();
    for job in jobs {
        if !queues_seen.contains(&job.job.queue) {
            ensure_queue(conn, &job.job.queue)?;
            queues_seen.push(job.job.queue.clone());
        }
    }
    // A job with a unique key may meet an earlier one (of this batch too), so it is looked up
    // and written on its own; runs of jobs between them are written many rows per statement.
    let mut counts = StateCounts::default();
    let mut rest = jobs;
    while !rest.is_empty() {
        let plain = rest
            .iter()
            .take_while(|j| j.job.unique_key.is_none())
            .count();
        if plain == 0 {
            let inserted = insert_unique(conn, &rest[0])?;
            if let Inserted::New(_) = inserted {
                counts.add(rest[0].job.queue.as_str(), rest[0].state, 1);
            }
            out.push(inserted);
            rest = &rest[1..];
            continue;
        }
        let (run, after) = rest.split_at(plain);
        for chunk in statement_chunks(run) {
            insert_rows(conn, chunk)?;
        }
        for j in run {
            counts.add(j.job.queue.as_str(), j.state, 1);
            out.push(Inserted::New(j.job.id));
        }
        rest = after;
    }
    counts.write(conn)?;
    Ok(out)
}

const INSERT_JOB: &str = "INSERT INTO jobs (id, task, digest, queue, state, input, args, env, priority, \
     run_at, unique_key, context, limits, retry, submitter, created_at, concurrency_key) VALUES ";

const INSERT_JOB_WIDTH: usize = 17;

/// Inserts `jobs` in one statement.
fn insert_rows(conn: &Connection, jobs: &[EncodedJob]) -> StoreResult<()> {
    static SQL: BatchSql =
        BatchSql::new(|rows| format!("{INSERT_JOB}{}", values_rows(rows, INSERT_JOB_WIDTH, 1)));
    let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(jobs.len() * INSERT_JOB_WIDTH);
    for encoded in jobs {
        params.extend(job_params(encoded));
    }
    conn.prepare_cached(SQL.get(jobs.len()))
        .map_err(db)?
        .execute(params.as_slice())
        .map_err(db)?;
    Ok(())
}

/// The values of one job row, in `INSERT_JOB`'s column order.
fn job_params(encoded: &EncodedJob) -> [&dyn rusqlite::ToSql; INSERT_JOB_WIDTH] {
    let job = &encoded.job;
    [
        &encoded.id,
        &encoded.task,
        &encoded.digest,
        &encoded.queue,
        &encoded.state_text,
        &job.input,
        &encoded.args,
        &encoded.env,
        &job.priority,
        &encoded.run_at,
        &job.unique_key,
        &job.context,
        &encoded.limits,
        &encoded.retry,
        &job.submitter,
        &job.created_at.0,
        &job.concurrency_key,
    ]
}

/// Stores a job with a unique key, or returns the live job that holds the key.
fn insert_unique(conn: &Connection, encoded: &EncodedJob) -> StoreResult<Inserted> {
    if let Some(key) = &encoded.job.unique_key {
        let existing: Option<String> = conn
            .prepare_cached(&format!(
                "SELECT id FROM jobs WHERE unique_key = ?1 AND {LIVE_STATES}"
            ))
            .map_err(db)?
            .query_row([key], |r| r.get(0))
            .optional()
            .map_err(db)?;
        if let Some(id) = existing {
            return Ok(Inserted::Existing(
                id.parse().map_err(|e| corrupt("jobs", e))?,
            ));
        }
    }
    insert_rows(conn, std::slice::from_ref(encoded))?;
    Ok(Inserted::New(encoded.job.id))
}

/// A job's queue and state.
pub(super) fn job_queue_and_state(
    conn: &Connection,
    key: &str,
) -> StoreResult<Option<(String, JobState)>> {
    let row: Option<(String, String)> = conn
        .prepare_cached("SELECT queue, state FROM jobs WHERE id = ?1")
        .map_err(db)?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db)?;
    row.map(|(queue, state)| Ok((queue, state.parse().map_err(|e| corrupt("jobs", e))?)))
        .transpose()
}

/// A job by id.
pub(super) fn get(conn: &Connection, id: JobId) -> StoreResult<Option<Job>> {
    static SQL: Sql = Sql::new(|| format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"));
    Ok(query_jobs(conn, SQL.get(), &[&id.to_string()])?
        .into_iter()
        .next()
        .map(|(j, _)| j))
}

/// Up to this many jobs in a state are picked through the state's index before ordering.
const FEW: i64 = 20_000;

/// The condition of the partial index that holds the jobs in `state` in another order than
/// their ids (`jobs_running`, `jobs_due`), spelled as the index spells it. Held, failed and
/// cancelled jobs have indexes on their ids, which a listing walks as they are.
fn state_index(state: JobState) -> Option<&'static str> {
    match state {
        JobState::Scheduled => Some("state = 'scheduled'"),
        JobState::Running => Some("state = 'running'"),
        _ => None,
    }
}

/// How many jobs are in `state`, in every queue, from the kept counts.
fn state_count(conn: &Connection, state: JobState) -> StoreResult<i64> {
    conn.prepare_cached("SELECT coalesce(sum(n), 0) FROM job_counts WHERE state = ?1")
        .map_err(db)?
        .query_row([state.as_str()], |r| r.get(0))
        .map_err(db)
}

/// Jobs matching `f`, in id order (or newest first), from `f.after` on.
pub(super) fn list(conn: &Connection, f: &JobFilter) -> StoreResult<Vec<Job>> {
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1");
    let mut values: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    if !f.states.is_empty() {
        let list: Vec<String> = f
            .states
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        // One state as `=`, so a partial index on that state can serve it. Running and
        // scheduled jobs, when few (the kept counts say), are found through their index
        // first, then ordered: walking the table in id order for them read every job when
        // none was running.
        if let [state] = f.states.as_slice()
            && let Some(indexed) = state_index(*state)
            && state_count(conn, *state)? <= FEW
        {
            sql.push_str(&format!(" AND id IN (SELECT id FROM jobs WHERE {indexed})"));
        } else if let [one] = list.as_slice() {
            sql.push_str(&format!(" AND state = {one}"));
        } else {
            sql.push_str(&format!(" AND state IN ({})", list.join(", ")));
        }
    }
    let mut bind = |sql: &mut String, clause: &str, v: Box<dyn rusqlite::ToSql>| {
        values.push(v);
        sql.push_str(&clause.replace('?', &format!("?{}", values.len())));
    };
    if let Some(t) = &f.task {
        bind(&mut sql, " AND task = ?", Box::new(t.as_str().to_owned()));
    }
    if let Some(q) = &f.queue {
        bind(&mut sql, " AND queue = ?", Box::new(q.as_str().to_owned()));
    }
    if let Some(c) = &f.context {
        bind(&mut sql, " AND context = ?", Box::new(c.clone()));
    }
    if let Some(k) = &f.unique_key {
        bind(&mut sql, " AND unique_key = ?", Box::new(k.clone()));
    }
    if let Some(after) = f.after {
        let cmp = if f.newest_first { '<' } else { '>' };
        bind(
            &mut sql,
            &format!(" AND id {cmp} ?"),
            Box::new(after.to_string()),
        );
    }
    let limit = if f.limit == 0 {
        100
    } else {
        f.limit.min(10_000)
    };
    let order = if f.newest_first { "DESC" } else { "ASC" };
    sql.push_str(&format!(" ORDER BY id {order} LIMIT {limit}"));
    let params: Vec<&dyn rusqlite::ToSql> = values.iter().map(|v| v.as_ref()).collect();
    Ok(query_jobs(conn, &sql, &params)?
        .into_iter()
        .map(|(j, _)| j)
        .collect())
}

/// Extends a running job's lease; false if `token` is not its lease.
pub(super) fn heartbeat(
    conn: &Connection,
    id: JobId,
    token: i64,
    expires_at: Timestamp,
) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE jobs SET lease_expires = ?3 WHERE id = ?1 AND state = 'running' AND lease = ?2",
        )
        .map_err(db)?
        .execute(params![id.to_string(), token, expires_at.0])
        .map_err(db)?
        > 0)
}

/// Stores a running job's progress; false if `token` is not its lease.
pub(super) fn set_progress(
    conn: &Connection,
    id: JobId,
    token: i64,
    done: i64,
    total: i64,
) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE jobs SET progress_done = ?3, progress_total = ?4 \
             WHERE id = ?1 AND state = 'running' AND lease = ?2",
        )
        .map_err(db)?
        .execute(params![id.to_string(), token, done, total])
        .map_err(db)?
        > 0)
}

/// Running jobs whose lease expired before `now`, with their lease, in id order.
pub(super) fn expired_leases(conn: &Connection, now: Timestamp) -> StoreResult<Vec<Claimed>> {
    static SQL: Sql = Sql::new(|| format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {EXPIRED_LEASES}"));
    let mut expired: Vec<Claimed> = query_jobs(conn, SQL.get(), &[&now.0])?
        .into_iter()
        .filter_map(|(job, lease)| lease.map(|lease| Claimed { job, lease }))
        .collect();
    expired.sort_by_key(|c| c.job.id);
    Ok(expired)
}

/// The `cancel` move: a waiting job at once; a running one is marked for its worker, and
/// moves when its interrupted attempt ends.
pub(super) fn cancel(conn: &Connection, id: JobId, now: Timestamp) -> StoreResult<CancelOutcome> {
    static CANCEL: Sql = Sql::new(|| {
        update(
            Event::Cancel,
            ", guarded = 0, finished_at = ?2, error_reason = 'cancelled', \
             error_message = 'cancelled before it ran'",
            " AND state = ?3",
        )
    });
    let key = id.to_string();
    let Some((queue, state)) = job_queue_and_state(conn, &key)? else {
        return Ok(CancelOutcome::NotFound);
    };
    if state == JobState::Running {
        conn.prepare_cached(
            "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'",
        )
        .map_err(db)?
        .execute([&key])
        .map_err(db)?;
        return Ok(CancelOutcome::Running);
    }
    if Event::Cancel.apply(Some(state)).is_err() {
        return Ok(CancelOutcome::AlreadyEnded(state));
    }
    // Guarded like every move, though the state was read in this transaction.
    conn.prepare_cached(CANCEL.get())
        .map_err(db)?
        .execute(params![key, now.0, state.as_str()])
        .map_err(db)?;
    let mut counts = StateCounts::default();
    counts.moved(&queue, state, JobState::Cancelled, 1);
    counts.write(conn)?;
    Ok(CancelOutcome::Cancelled)
}

/// Whether a cancel was asked for this running job.
pub(super) fn cancel_requested(conn: &Connection, id: JobId) -> StoreResult<bool> {
    let v: Option<bool> = conn
        .prepare_cached("SELECT cancel_requested FROM jobs WHERE id = ?1 AND state = 'running'")
        .map_err(db)?
        .query_row([id.to_string()], |r| r.get(0))
        .optional()
        .map_err(db)?;
    Ok(v.unwrap_or(false))
}

/// The `release` move; false if the job is not held.
pub(super) fn release(conn: &Connection, id: JobId, now: Timestamp) -> StoreResult<bool> {
    static RELEASE: Sql = Sql::new(|| update(Event::Release, ", run_at = ?2", " RETURNING queue"));
    let released: Option<String> = conn
        .prepare_cached(RELEASE.get())
        .map_err(db)?
        .query_row(params![id.to_string(), now.0], |r| r.get(0))
        .optional()
        .map_err(db)?;
    let Some(queue) = released else {
        return Ok(false);
    };
    let mut counts = StateCounts::default();
    counts.moved(&queue, JobState::Held, JobState::Queued, 1);
    counts.write(conn)?;
    Ok(true)
}

/// The `retry` move, with a fresh attempt budget (the attempts so far become its base; their
/// numbers, and records, stay); false if the job is not failed or
/// cancelled, or another live job holds its unique key.
pub(super) fn retry(conn: &Connection, id: JobId, now: Timestamp) -> StoreResult<bool> {
    static RETRY: Sql = Sql::new(|| {
        update(
            Event::Retry,
            ", run_at = ?2, attempt_base = attempts, output = NULL, error_reason = NULL, \
             error_message = NULL, finished_at = NULL, progress_done = NULL, \
             progress_total = NULL",
            "",
        )
    });
    let key = id.to_string();
    let Some((queue, state)) = job_queue_and_state(conn, &key)? else {
        return Ok(false);
    };
    match conn.execute(RETRY.get(), params![key, now.0]) {
        Ok(0) => Ok(false),
        Ok(_) => {
            let mut counts = StateCounts::default();
            counts.moved(&queue, state, JobState::Queued, 1);
            counts.write(conn)?;
            Ok(true)
        }
        // Another live job holds the same unique key: this one stays as it is.
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Ok(false)
        }
        Err(e) => Err(db(e)),
    }
}

/// The `delete` move; false if the job is running or unknown.
pub(super) fn delete(conn: &Connection, id: JobId) -> StoreResult<bool> {
    static DELETE: Sql = Sql::new(|| {
        format!(
            "DELETE FROM jobs WHERE id = ?1 AND {} RETURNING queue, state",
            guard(Event::Delete)
        )
    });
    let deleted: Option<(String, String)> = conn
        .prepare_cached(DELETE.get())
        .map_err(db)?
        .query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db)?;
    let Some((queue, state)) = deleted else {
        return Ok(false);
    };
    let state: JobState = state.parse().map_err(|e| corrupt("jobs", e))?;
    let mut counts = StateCounts::default();
    counts.add(queue, state, -1);
    counts.write(conn)?;
    Ok(true)
}

/// The `clean` move of ended jobs finished before `before` (all of them if `None`).
pub(super) fn clean(conn: &Connection, before: Option<Timestamp>) -> StoreResult<u64> {
    let ended = guard(Event::Clean);
    let n = match before {
        Some(t) => {
            let mut counts = StateCounts::default();
            let sql = format!(
                "SELECT queue, state, count(*) FROM jobs WHERE {ended} AND finished_at < ?1 \
                 GROUP BY queue, state"
            );
            let mut stmt = conn.prepare(&sql).map_err(db)?;
            let rows = stmt
                .query_map([t.0], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(db)?;
            for row in rows {
                let (queue, state, n) = row.map_err(db)?;
                let state: JobState = state.parse().map_err(|e| corrupt("jobs", e))?;
                counts.add(queue, state, -n);
            }
            counts.write(conn)?;
            // The minutes of the console's chart go with the jobs.
            conn.execute(
                "DELETE FROM ended_minutes WHERE minute < ?1",
                [t.0.div_euclid(60_000)],
            )
            .map_err(db)?;
            conn.execute(
                &format!("DELETE FROM jobs WHERE {ended} AND finished_at < ?1"),
                [t.0],
            )
        }
        None => {
            conn.execute(&format!("DELETE FROM job_counts WHERE {ended}"), [])
                .map_err(db)?;
            conn.execute(&format!("DELETE FROM jobs WHERE {ended}"), [])
        }
    }
    .map_err(db)?;
    Ok(n as u64)
}

/// Where a job stands in its queue: the queue's pause, concurrency and running jobs, the
/// queued jobs claimed before it, and its context guard.
pub(super) fn position(conn: &Connection, id: JobId) -> StoreResult<Option<QueuePosition>> {
    type Row = (String, i32, i64, Option<String>, bool);
    let row: Option<Row> = conn
        .query_row(
            "SELECT queue, priority, run_at, concurrency_key, guarded FROM jobs WHERE id = ?1",
            [id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()
        .map_err(db)?;
    let Some((queue, priority, run_at, key, guarded)) = row else {
        return Ok(None);
    };
    let (concurrency, paused, limit): (u32, bool, u32) = conn
        .query_row(
            "SELECT concurrency, paused, key_concurrency FROM queues WHERE name = ?1",
            [&queue],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(db)?
        .unwrap_or((0, false, 1));
    let running: i64 = conn
        .query_row(
            "SELECT coalesce(sum(n), 0) FROM job_counts WHERE queue = ?1 AND state = 'running'",
            [&queue],
            |r| r.get(0),
        )
        .map_err(db)?;
    let ahead: i64 = conn
        .query_row(
            "SELECT count(*) FROM jobs WHERE queue = ?1 AND state = 'queued' AND guarded = 0 \
             AND (priority > ?2 OR (priority = ?2 AND (run_at < ?3 OR (run_at = ?3 AND id < ?4))))",
            params![queue, priority, run_at, id.to_string()],
            |r| r.get(0),
        )
        .map_err(db)?;
    let key = match key {
        Some(key) => Some(KeyPosition {
            running: super::claims::key_running(conn, &queue, &key)? as u64,
            key,
            limit,
            guarded,
        }),
        None => None,
    };
    Ok(Some(QueuePosition {
        paused,
        running: running as u64,
        concurrency,
        ahead: ahead as u64,
        key,
    }))
}

/// The contexts of live jobs after `after`, in order, with their live jobs: through
/// `jobs_live_context`, so the ended jobs kept are never read.
pub(super) fn live_contexts(
    conn: &Connection,
    after: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<(String, u64)>> {
    static SQL: Sql = Sql::new(|| {
        format!(
            "SELECT context, count(*) FROM jobs WHERE context IS NOT NULL AND {LIVE_STATES} \
             AND (?1 IS NULL OR context > ?1) GROUP BY context ORDER BY context LIMIT ?2"
        )
    });
    let mut stmt = conn.prepare_cached(SQL.get()).map_err(db)?;
    let rows = stmt
        .query_map(params![after, limit], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(db)?;
    rows.map(|r| r.map(|(c, n)| (c, n.max(0) as u64)).map_err(db))
        .collect()
}

/// Completed and failed jobs per minute since `since`, from `ended_minutes`.
pub(super) fn ended_per_minute(
    conn: &Connection,
    since: Timestamp,
) -> StoreResult<Vec<(i64, u64, u64)>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT minute, completed, failed FROM ended_minutes WHERE minute >= ?1 \
             AND (completed > 0 OR failed > 0) ORDER BY minute",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map([since.0.div_euclid(60_000)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(db)?;
    rows.map(|r| {
        r.map(|(m, c, f)| (m, c.max(0) as u64, f.max(0) as u64))
            .map_err(db)
    })
    .collect()
}

/// The earliest `run_at` of a scheduled job.
pub(super) fn next_scheduled(conn: &Connection) -> StoreResult<Option<Timestamp>> {
    let t: Option<i64> = conn
        .prepare_cached("SELECT min(run_at) FROM jobs WHERE state = 'scheduled'")
        .map_err(db)?
        .query_row([], |r| r.get(0))
        .map_err(db)?;
    Ok(t.map(Timestamp))
}
