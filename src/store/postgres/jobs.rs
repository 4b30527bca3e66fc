//! Jobs on PostgreSQL: a submit of many jobs in one statement (a unique key held by a live
//! job returns that job), reads, and the operator's moves, each guarded by the states the
//! state machine lets it leave. Running jobs are in `leases.rs`.

use deadpool_postgres::GenericClient;

use super::rows::{self, JOB_COLUMNS, id_bytes, job_id};
use super::{corrupt, db};
use crate::domain::{
    AttemptRecord, AttemptReplay, CancelOutcome, Event, Job, JobFilter, JobId, JobState,
    KeyPosition, NewJob, QueueConfig, QueueName, QueuePosition, Timestamp,
};
use crate::store::columns;
use crate::store::guards::{Sql, guard, target};
use crate::store::{Inserted, StoreResult};

/// A live job, as `jobs_unique_live` says it.
const LIVE: &str =
    "(state = 'held' OR state = 'scheduled' OR state = 'queued' OR state = 'running')";

/// Stores jobs, many rows in one statement, with their rows of `job_lookup`; the queues they
/// name are made if missing. Jobs without a unique key are inserted without `ON CONFLICT`: an
/// insert that names an arbiter index checks it and writes each row speculatively (one more
/// WAL record a row).
pub(super) const INSERT: &str = "WITH input AS ( \
    SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::text[], $5::text[], \
        $6::bytea[], $7::text[], $8::text[], $9::int4[], $10::int8[], $11::text[], \
        $12::text[], $13::text[], $14::text[], $15::text[], $16::int8[], $20::text[]) \
        WITH ORDINALITY \
        AS v(id, task, digest, queue, state, input, args, env, priority, run_at, \
            unique_key, context, limits, retry, submitter, created_at, concurrency_key, ord) \
), ensured AS ( \
    INSERT INTO queues (name, concurrency, default_limits, caps) \
    SELECT DISTINCT queue, $17::int4, $18::text, $19::text FROM input \
    ON CONFLICT (name) DO NOTHING \
), plain AS ( \
    INSERT INTO jobs (id, task, digest, queue, state, input, args, env, priority, run_at, \
        unique_key, context, limits, retry, submitter, created_at, concurrency_key) \
    SELECT id, task, digest, queue, state, input, args, env, priority, run_at, unique_key, \
        context, limits, retry, submitter, created_at, concurrency_key FROM input \
    WHERE unique_key IS NULL ORDER BY ord \
    RETURNING id, queue, state, task, context \
), keyed AS ( \
    INSERT INTO jobs (id, task, digest, queue, state, input, args, env, priority, run_at, \
        unique_key, context, limits, retry, submitter, created_at, concurrency_key) \
    SELECT id, task, digest, queue, state, input, args, env, priority, run_at, unique_key, \
        context, limits, retry, submitter, created_at, concurrency_key FROM input \
    WHERE unique_key IS NOT NULL ORDER BY ord \
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL \
        AND (state = 'held' OR state = 'scheduled' OR state = 'queued' OR state = 'running') \
        DO NOTHING \
    RETURNING id, queue, state, task, context \
), inserted AS ( \
    SELECT * FROM plain UNION ALL SELECT * FROM keyed \
), looked_up AS ( \
    INSERT INTO job_lookup (task, id, context) SELECT task, id, context FROM inserted \
), counted AS ( \
    INSERT INTO job_counts (queue, state, n) \
    SELECT queue, state, count(*) FROM inserted GROUP BY queue, state ORDER BY queue, state \
    ON CONFLICT (queue, state) DO UPDATE SET n = job_counts.n + excluded.n \
) \
SELECT id FROM inserted";

/// Stores `jobs` in the transaction of `client`; a job whose unique key a live job holds is
/// not stored, and that job is returned for it.
pub(super) async fn insert(
    client: &impl GenericClient,
    jobs: &[NewJob],
) -> StoreResult<Vec<Inserted>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Vec<u8>> = jobs.iter().map(|j| id_bytes(j.id)).collect();
    let text = |f: fn(&NewJob) -> String| jobs.iter().map(f).collect::<Vec<String>>();
    let tasks = text(|j| j.task.to_string());
    let digests = text(|j| j.digest.to_hex());
    let queues = text(|j| j.queue.to_string());
    let states = text(|j| j.state().as_str().to_owned());
    let inputs: Vec<&[u8]> = jobs.iter().map(|j| j.input.as_slice()).collect();
    let args = text(|j| rows::json(&j.args));
    let envs = text(|j| rows::json(&j.env));
    let priorities: Vec<i32> = jobs.iter().map(|j| j.priority).collect();
    let run_ats: Vec<i64> = jobs.iter().map(|j| j.run_at().0).collect();
    let keys: Vec<Option<&str>> = jobs.iter().map(|j| j.unique_key.as_deref()).collect();
    let contexts: Vec<Option<&str>> = jobs.iter().map(|j| j.context.as_deref()).collect();
    let limits = text(|j| columns::limits_text(&j.limits));
    let retries = text(|j| columns::retry_text(&j.retry));
    let submitters: Vec<Option<&str>> = jobs.iter().map(|j| j.submitter.as_deref()).collect();
    let created: Vec<i64> = jobs.iter().map(|j| j.created_at.0).collect();
    let guard_keys: Vec<Option<&str>> = jobs.iter().map(|j| j.concurrency_key.as_deref()).collect();
    let defaults = QueueConfig::with_defaults(QueueName::default_queue());
    let concurrency = defaults.concurrency as i32;
    let (default_limits, caps) = (
        rows::json(&defaults.default_limits),
        rows::json(&defaults.caps),
    );
    let statement = client.prepare_cached(INSERT).await.map_err(db)?;
    let stored = client
        .query(
            &statement,
            &[
                &ids,
                &tasks,
                &digests,
                &queues,
                &states,
                &inputs,
                &args,
                &envs,
                &priorities,
                &run_ats,
                &keys,
                &contexts,
                &limits,
                &retries,
                &submitters,
                &created,
                &concurrency,
                &default_limits,
                &caps,
                &guard_keys,
            ],
        )
        .await
        .map_err(db)?;
    let stored: std::collections::HashSet<Vec<u8>> =
        stored.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect();
    let held_keys: Vec<&str> = jobs
        .iter()
        .filter(|j| !stored.contains(&id_bytes(j.id)))
        .filter_map(|j| j.unique_key.as_deref())
        .collect();
    let mut live = std::collections::HashMap::new();
    if !held_keys.is_empty() {
        let sql = format!("SELECT unique_key, id FROM jobs WHERE unique_key = ANY($1) AND {LIVE}");
        for row in client.query(&sql, &[&held_keys]).await.map_err(db)? {
            let key: String = row.get(0);
            live.insert(key, job_id("jobs", row.get(1))?);
        }
    }
    jobs.iter()
        .map(|j| {
            if stored.contains(&id_bytes(j.id)) {
                return Ok(Inserted::New(j.id));
            }
            let key = j.unique_key.as_deref().unwrap_or_default();
            live.get(key)
                .map(|id| Inserted::Existing(*id))
                .ok_or_else(|| corrupt("jobs", format!("job {} was neither stored nor held", j.id)))
        })
        .collect()
}

/// A job by id.
pub(super) async fn get(client: &impl GenericClient, id: JobId) -> StoreResult<Option<Job>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
    let statement = client.prepare_cached(&sql).await.map_err(db)?;
    client
        .query_opt(&statement, &[&id_bytes(id)])
        .await
        .map_err(db)?
        .map(|r| rows::job(&r).map(|(j, _)| j))
        .transpose()
}

/// A job's columns as [`list`] selects them, beside `job_lookup`.
static LISTED_COLUMNS: Sql = Sql::new(|| {
    JOB_COLUMNS
        .split(", ")
        .map(|c| format!("jobs.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
});

/// Jobs matching `f`, in id order (or newest first), from `f.after` on. A task or context is
/// looked up in `job_lookup`.
pub(super) async fn list(client: &impl GenericClient, f: &JobFilter) -> StoreResult<Vec<Job>> {
    let from = if f.task.is_some() || f.context.is_some() {
        "jobs JOIN job_lookup l ON l.id = jobs.id"
    } else {
        "jobs"
    };
    let mut sql = format!("SELECT {} FROM {from} WHERE true", LISTED_COLUMNS.get());
    let mut values: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
    let mut bind =
        |sql: &mut String, clause: &str, v: Box<dyn tokio_postgres::types::ToSql + Sync + Send>| {
            values.push(v);
            sql.push_str(&clause.replace('?', &format!("${}", values.len())));
        };
    if !f.states.is_empty() {
        let states: Vec<String> = f.states.iter().map(|s| s.as_str().to_owned()).collect();
        if let [one] = states.as_slice() {
            // One state as `=`, so the partial index on that state can serve it; running
            // jobs' index names their lease's expiry as well (migration 11).
            sql.push_str(&format!(" AND jobs.state = '{one}'"));
            if one == JobState::Running.as_str() {
                sql.push_str(" AND jobs.lease_expires IS NOT NULL");
            }
        } else {
            bind(&mut sql, " AND jobs.state = ANY(?)", Box::new(states));
        }
    }
    if let Some(t) = &f.task {
        bind(&mut sql, " AND l.task = ?", Box::new(t.to_string()));
    }
    if let Some(q) = &f.queue {
        bind(&mut sql, " AND jobs.queue = ?", Box::new(q.to_string()));
    }
    if let Some(c) = &f.context {
        bind(&mut sql, " AND l.context = ?", Box::new(c.clone()));
    }
    if let Some(k) = &f.unique_key {
        bind(&mut sql, " AND jobs.unique_key = ?", Box::new(k.clone()));
    }
    if let Some(after) = f.after {
        let cmp = if f.newest_first { '<' } else { '>' };
        bind(
            &mut sql,
            &format!(" AND jobs.id {cmp} ?"),
            Box::new(id_bytes(after)),
        );
    }
    let limit = if f.limit == 0 {
        100
    } else {
        f.limit.min(10_000)
    };
    let order = if f.newest_first { "DESC" } else { "ASC" };
    sql.push_str(&format!(" ORDER BY jobs.id {order} LIMIT {limit}"));
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        values.iter().map(|v| v.as_ref() as _).collect();
    client
        .query(&sql, &params)
        .await
        .map_err(db)?
        .iter()
        .map(|r| rows::job(r).map(|(j, _)| j))
        .collect()
}

/// A job's attempts, oldest first.
pub(super) async fn attempts(
    client: &impl GenericClient,
    id: JobId,
) -> StoreResult<Vec<AttemptRecord>> {
    let statement = client
        .prepare_cached(
            "SELECT number, reason, trap_kind, exit_code, message, stderr, stderr_truncated, \
             receipt, worker, started_at, finished_at, replay FROM attempts WHERE job_id = $1 \
             ORDER BY number",
        )
        .await
        .map_err(db)?;
    let rows = client
        .query(&statement, &[&id_bytes(id)])
        .await
        .map_err(db)?;
    rows.iter()
        .map(|r| {
            let trap_kind: Option<String> = r.get(2);
            let replay: Option<&[u8]> = r.get(11);
            Ok(AttemptRecord {
                number: r.get::<_, i32>(0) as u32,
                reason: r
                    .get::<_, &str>(1)
                    .parse()
                    .map_err(|e| corrupt("attempts", e))?,
                trap_kind: trap_kind
                    .map(|k| rows::parse_json("attempts", &format!("\"{k}\"")))
                    .transpose()?,
                exit_code: r.get(3),
                message: r.get(4),
                stderr: r.get(5),
                stderr_truncated: r.get(6),
                receipt: rows::parse_json("attempts", r.get(7))?,
                worker: r.get(8),
                started_at: Timestamp(r.get(9)),
                finished_at: Timestamp(r.get(10)),
                replay: replay
                    .map(AttemptReplay::decode)
                    .transpose()
                    .map_err(|e| corrupt("attempts", e))?,
            })
        })
        .collect()
}

/// Moves counts of `queue` from one state to another, `n` jobs.
async fn moved(
    client: &impl GenericClient,
    queue: &str,
    from: JobState,
    to: Option<JobState>,
    n: i64,
) -> StoreResult<()> {
    let mut changes = vec![(from.as_str(), -n)];
    if let Some(to) = to {
        changes.push((to.as_str(), n));
    }
    changes.sort();
    let statement = client
        .prepare_cached(
            "INSERT INTO job_counts (queue, state, n) VALUES ($1, $2, $3) \
             ON CONFLICT (queue, state) DO UPDATE SET n = job_counts.n + excluded.n",
        )
        .await
        .map_err(db)?;
    for (state, n) in changes {
        client
            .execute(&statement, &[&queue, &state, &n])
            .await
            .map_err(db)?;
    }
    Ok(())
}

/// The `cancel` move, in `client`'s transaction: a waiting job at once; a running one is
/// marked for its worker, and moves when its interrupted attempt ends.
pub(super) async fn cancel(
    client: &impl GenericClient,
    id: JobId,
    now: Timestamp,
) -> StoreResult<CancelOutcome> {
    let key = id_bytes(id);
    let Some(row) = client
        .query_opt(
            "SELECT queue, state FROM jobs WHERE id = $1 FOR UPDATE",
            &[&key],
        )
        .await
        .map_err(db)?
    else {
        return Ok(CancelOutcome::NotFound);
    };
    let queue: String = row.get(0);
    let state: JobState = row
        .get::<_, &str>(1)
        .parse()
        .map_err(|e| corrupt("jobs", e))?;
    if state == JobState::Running {
        client
            .execute(
                "UPDATE jobs SET cancel_requested = true WHERE id = $1 AND state = 'running'",
                &[&key],
            )
            .await
            .map_err(db)?;
        return Ok(CancelOutcome::Running);
    }
    if Event::Cancel.apply(Some(state)).is_err() {
        return Ok(CancelOutcome::AlreadyEnded(state));
    }
    let sql = format!(
        "UPDATE jobs SET state = '{}', guarded = false, finished_at = $2, \
         error_reason = 'cancelled', \
         error_message = 'cancelled before it ran' WHERE id = $1 AND {} AND state = $3",
        target(Event::Cancel),
        guard(Event::Cancel)
    );
    client
        .execute(&sql, &[&key, &now.0, &state.as_str()])
        .await
        .map_err(db)?;
    moved(client, &queue, state, Some(JobState::Cancelled), 1).await?;
    Ok(CancelOutcome::Cancelled)
}

/// One job's `event`, `id = $1`, as one statement: the job is locked if it is in a state the
/// event leaves, moved to the event's target with `set` (which may use `$2`...), and the
/// counts moved with it. Its one row: how many jobs moved (0 or 1).
fn move_sql(event: Event, set: &str) -> String {
    let to = target(event);
    let moved = match to {
        "" => "DELETE FROM jobs USING old WHERE jobs.id = $1 RETURNING old.q, old.s".to_owned(),
        to => format!(
            "UPDATE jobs SET state = '{to}'{set} FROM old WHERE jobs.id = $1 \
             RETURNING old.q, old.s"
        ),
    };
    format!(
        "WITH old AS (SELECT queue AS q, state AS s FROM jobs WHERE id = $1 AND {} FOR UPDATE), \
         moved AS ({moved}), \
         counted AS (INSERT INTO job_counts (queue, state, n) \
             SELECT c.q, c.s, sum(c.n) FROM ( \
                 SELECT q, s, -1 AS n FROM moved \
                 UNION ALL SELECT q, '{to}', 1 FROM moved WHERE '{to}' <> '') c \
             GROUP BY c.q, c.s ORDER BY c.q, c.s \
             ON CONFLICT (queue, state) DO UPDATE SET n = job_counts.n + excluded.n) \
         SELECT count(*) FROM moved",
        guard(event)
    )
}

/// Runs [`move_sql`]'s statement; whether the job moved.
async fn move_one(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> StoreResult<bool> {
    let statement = client.prepare_cached(sql).await.map_err(db)?;
    match client.query_one(&statement, params).await {
        Ok(row) => Ok(row.get::<_, i64>(0) > 0),
        // Another live job holds the same unique key: this one stays as it is.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => Ok(false),
        Err(e) => Err(db(e)),
    }
}

/// The `release` move; false if the job is not held.
pub(super) async fn release(
    client: &impl GenericClient,
    id: JobId,
    now: Timestamp,
) -> StoreResult<bool> {
    static SQL: Sql = Sql::new(|| move_sql(Event::Release, ", run_at = $2"));
    move_one(client, SQL.get(), &[&id_bytes(id), &now.0]).await
}

/// The `retry` move, with a fresh attempt budget (the attempts so far become its base; their
/// numbers, and records, stay); false if the job is not failed or
/// cancelled, or another live job holds its unique key.
pub(super) async fn retry(
    client: &impl GenericClient,
    id: JobId,
    now: Timestamp,
) -> StoreResult<bool> {
    static SQL: Sql = Sql::new(|| {
        move_sql(
            Event::Retry,
            ", run_at = $2, attempt_base = attempts, output = NULL, error_reason = NULL, \
             error_message = NULL, finished_at = NULL, progress_done = NULL, \
             progress_total = NULL",
        )
    });
    move_one(client, SQL.get(), &[&id_bytes(id), &now.0]).await
}

/// The `delete` move; false if the job is running or unknown.
pub(super) async fn delete(client: &impl GenericClient, id: JobId) -> StoreResult<bool> {
    static SQL: Sql = Sql::new(|| move_sql(Event::Delete, ""));
    move_one(client, SQL.get(), &[&id_bytes(id)]).await
}

/// The `clean` move of ended jobs finished before `before` (all of them if `None`).
pub(super) async fn clean(
    client: &impl GenericClient,
    before: Option<Timestamp>,
) -> StoreResult<u64> {
    let ended = guard(Event::Clean);
    let sql = format!(
        "WITH gone AS (DELETE FROM jobs WHERE {ended} AND ($1::int8 IS NULL OR finished_at < $1) \
             RETURNING queue, state), \
         counted AS (INSERT INTO job_counts (queue, state, n) \
             SELECT queue, state, -count(*) FROM gone GROUP BY queue, state \
             ORDER BY queue, state \
             ON CONFLICT (queue, state) DO UPDATE SET n = job_counts.n + excluded.n), \
         minutes AS (DELETE FROM ended_minutes \
             WHERE $1::int8 IS NOT NULL AND minute < $1::int8 / 60000) \
         SELECT count(*) FROM gone"
    );
    let row = client
        .query_one(&sql, &[&before.map(|t| t.0)])
        .await
        .map_err(db)?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// The contexts of live jobs after `after`, in order, with their live jobs: through
/// `jobs_live_context`, so the ended jobs kept are never read.
pub(super) async fn live_contexts(
    client: &impl GenericClient,
    after: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<(String, u64)>> {
    let sql = format!(
        "SELECT context, count(*) FROM jobs WHERE context IS NOT NULL AND {LIVE} \
         AND ($1::text IS NULL OR context > $1) GROUP BY context ORDER BY context LIMIT $2"
    );
    let rows = client
        .query(&sql, &[&after, &i64::from(limit)])
        .await
        .map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64))
        .collect())
}

/// Completed and failed jobs per minute since `since`, from `ended_minutes`.
pub(super) async fn ended_per_minute(
    client: &impl GenericClient,
    since: Timestamp,
) -> StoreResult<Vec<(i64, u64, u64)>> {
    let rows = client
        .query(
            "SELECT minute, completed, failed FROM ended_minutes WHERE minute >= $1 \
             AND (completed > 0 OR failed > 0) ORDER BY minute",
            &[&since.0.div_euclid(60_000)],
        )
        .await
        .map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| {
            let n = |i: usize| r.get::<_, i64>(i).max(0) as u64;
            (r.get::<_, i64>(0), n(1), n(2))
        })
        .collect())
}

/// Where a job stands in its queue.
pub(super) async fn position(
    client: &impl GenericClient,
    id: JobId,
) -> StoreResult<Option<QueuePosition>> {
    let key = id_bytes(id);
    let Some(row) = client
        .query_opt(
            "SELECT queue, priority, run_at, concurrency_key, guarded FROM jobs WHERE id = $1",
            &[&key],
        )
        .await
        .map_err(db)?
    else {
        return Ok(None);
    };
    let (queue, priority, run_at): (String, i32, i64) = (row.get(0), row.get(1), row.get(2));
    let (guard_key, guarded): (Option<String>, bool) = (row.get(3), row.get(4));
    let settings = client
        .query_opt(
            "SELECT concurrency, paused, key_concurrency FROM queues WHERE name = $1",
            &[&queue],
        )
        .await
        .map_err(db)?;
    let (concurrency, paused, limit) = settings.map_or((0, false, 1), |r| {
        (r.get::<_, i32>(0), r.get(1), r.get::<_, i32>(2))
    });
    let running: i64 = client
        .query_one(
            "SELECT coalesce(sum(n), 0)::int8 FROM job_counts WHERE queue = $1 AND state = 'running'",
            &[&queue],
        )
        .await
        .map_err(db)?
        .get(0);
    let ahead: i64 = client
        .query_one(
            "SELECT count(*) FROM jobs WHERE queue = $1 AND state = 'queued' AND NOT guarded \
             AND (priority > $2 OR (priority = $2 AND (run_at < $3 OR (run_at = $3 AND id < $4))))",
            &[&queue, &priority, &run_at, &key],
        )
        .await
        .map_err(db)?
        .get(0);
    let key = match guard_key {
        Some(guard_key) => {
            let running: i64 = client
                .query_one(
                    "SELECT count(*) FROM jobs WHERE queue = $1 AND concurrency_key = $2 \
                     AND state = 'running'",
                    &[&queue, &guard_key],
                )
                .await
                .map_err(db)?
                .get(0);
            Some(KeyPosition {
                key: guard_key,
                running: running.max(0) as u64,
                limit: limit.max(1) as u32,
                guarded,
            })
        }
        None => None,
    };
    Ok(Some(QueuePosition {
        paused,
        running: running.max(0) as u64,
        concurrency: concurrency.max(0) as u32,
        ahead: ahead as u64,
        key,
    }))
}
