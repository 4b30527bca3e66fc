//! Running jobs on PostgreSQL: a claim in one call of `remotask_claim`, the ends of many
//! attempts in one statement, lease extensions and progress, each under the attempt's lease,
//! and the running jobs whose lease expired.

use deadpool_postgres::GenericClient;

use super::rows::{self, AttemptColumns, JOB_COLUMNS, id_bytes, job_id};
use super::{corrupt, db};
use crate::domain::{AttemptRecord, Finish, Job, JobId, JobState, Lease, QueueName, Timestamp};
use crate::store::columns;
use crate::store::{AttemptEnd, Claimed, Claims, Promoted, StoreResult};

/// A claim through `remotask_claim`: its rows decoded.
pub(super) async fn claim(
    client: &impl GenericClient,
    queue: &QueueName,
    worker: &str,
    max: u32,
    lease_ttl_ms: i64,
    now: Timestamp,
) -> StoreResult<Claims> {
    let statement = client
        .prepare_cached("SELECT * FROM remotask_claim($1, $2, $3, $4, $5)")
        .await
        .map_err(db)?;
    let max = i32::try_from(max).unwrap_or(i32::MAX);
    let rows = client
        .query(
            &statement,
            &[&queue.as_str(), &worker, &max, &lease_ttl_ms, &now.0],
        )
        .await
        .map_err(db)?;
    let mut claims = Claims::default();
    for row in &rows {
        match row.get::<_, &str>(0) {
            "promoted" => claims.promoted.push(Promoted {
                id: job_id("jobs", row.get(1))?,
                task: row
                    .get::<_, &str>(2)
                    .parse()
                    .map_err(|e| corrupt("jobs", e))?,
                queue: row
                    .get::<_, &str>(4)
                    .parse()
                    .map_err(|e| corrupt("jobs", e))?,
            }),
            "claimed" => claims
                .jobs
                .push(claimed(row, queue, worker, lease_ttl_ms, now)?),
            "status" => claims.at_concurrency = row.get::<_, Option<bool>>(22).unwrap_or(false),
            other => return Err(corrupt("jobs", format!("a claim row of kind {other:?}"))),
        }
    }
    claims.jobs.sort_by(|a, b| {
        b.job
            .priority
            .cmp(&a.job.priority)
            .then(a.job.run_at.cmp(&b.job.run_at))
            .then(a.job.id.cmp(&b.job.id))
    });
    Ok(claims)
}

/// A `claimed` row of `remotask_claim`: the job as the claim left it.
fn claimed(
    row: &tokio_postgres::Row,
    queue: &QueueName,
    worker: &str,
    lease_ttl_ms: i64,
    now: Timestamp,
) -> StoreResult<Claimed> {
    let text = |i: usize| -> &str { row.get(i) };
    let parse = |i: usize| -> StoreResult<String> { Ok(text(i).to_owned()) };
    let error = match (
        row.get::<_, Option<String>>(16),
        row.get::<_, Option<String>>(17),
    ) {
        (Some(reason), message) => Some(crate::domain::JobError {
            reason: reason.parse().map_err(|e| corrupt("jobs", e))?,
            message: message.unwrap_or_default(),
        }),
        (None, _) => None,
    };
    let job = Job {
        id: job_id("jobs", row.get(1))?,
        task: text(2).parse().map_err(|e| corrupt("jobs", e))?,
        digest: text(3).parse().map_err(|e| corrupt("jobs", e))?,
        queue: queue.clone(),
        state: JobState::Running,
        input: row.get(5),
        args: rows::parse_json("jobs", &parse(6)?)?,
        env: rows::parse_json("jobs", &parse(7)?)?,
        priority: row.get(8),
        run_at: Timestamp(row.get(9)),
        unique_key: row.get(10),
        context: row.get(11),
        concurrency_key: row.get(23),
        limits: columns::parse_limits(text(12)).map_err(|e| corrupt("jobs", e))?,
        retry: columns::parse_retry(text(13)).map_err(|e| corrupt("jobs", e))?,
        attempts: row.get::<_, i32>(14) as u32,
        attempt_base: row.get::<_, i32>(24) as u32,
        progress: None,
        output: row.get(15),
        error,
        submitter: row.get(18),
        worker: Some(worker.to_owned()),
        created_at: Timestamp(row.get(19)),
        started_at: Some(now),
        finished_at: row.get::<_, Option<i64>>(20).map(Timestamp),
    };
    let lease = Lease {
        token: row.get(21),
        expires_at: Timestamp(now.0 + lease_ttl_ms),
    };
    Ok(Claimed { job, lease })
}

/// The statement that ends attempts, with `$conflict` after the insert of their records.
macro_rules! finish_sql {
    ($conflict:literal) => {
        concat!("WITH v AS ( \
    SELECT * FROM unnest($1::bytea[], $2::int8[], $3::text[], $4::bytea[], $5::int8[], \
        $6::text[], $7::text[], $8::text[]) \
        AS v(id, token, state, output, run_at, limits, error_reason, error_message) \
), ended AS ( \
    UPDATE jobs j SET state = v.state, \
        output = CASE WHEN v.state = 'completed' THEN v.output ELSE j.output END, \
        run_at = coalesce(v.run_at, j.run_at), \
        limits = coalesce(v.limits, j.limits), \
        error_reason = CASE WHEN v.state = 'completed' THEN NULL \
            ELSE coalesce(v.error_reason, j.error_reason) END, \
        error_message = CASE WHEN v.state = 'completed' THEN NULL \
            ELSE coalesce(v.error_message, j.error_message) END, \
        finished_at = CASE WHEN v.state = 'completed' OR v.state = 'failed' \
            OR v.state = 'cancelled' THEN $9 ELSE j.finished_at END, \
        attempts = CASE WHEN v.state = 'queued' THEN greatest(j.attempts - 1, 0) \
            ELSE j.attempts END, \
        progress_done = CASE WHEN v.state = 'queued' THEN NULL ELSE j.progress_done END, \
        progress_total = CASE WHEN v.state = 'queued' THEN NULL ELSE j.progress_total END, \
        lease = NULL, lease_expires = NULL, cancel_requested = false \
    FROM v WHERE j.id = v.id AND j.state = 'running' AND j.lease = v.token \
    RETURNING j.id, j.queue, v.state, v.token \
), recorded AS ( \
    INSERT INTO attempts (job_id, number, reason, trap_kind, exit_code, message, stderr, \
        stderr_truncated, receipt, worker, started_at, finished_at, replay) \
    SELECT a.job_id, a.number, a.reason, a.trap_kind, a.exit_code, a.message, a.stderr, \
        a.stderr_truncated, a.receipt, a.worker, a.started_at, a.finished_at, a.replay \
    FROM unnest($10::bytea[], $11::int4[], $12::text[], $13::text[], \
        $14::int4[], $15::text[], $16::bytea[], $17::bool[], $18::text[], $19::text[], \
        $20::int8[], $21::int8[], $22::bytea[], $23::int8[]) AS a(job_id, number, reason, \
            trap_kind, exit_code, message, stderr, stderr_truncated, receipt, worker, \
            started_at, finished_at, replay, token) \
    WHERE (a.job_id, a.token) IN (SELECT id, token FROM ended) \
    ", $conflict, " \
), counted AS ( \
    INSERT INTO job_counts (queue, state, n) \
    SELECT c.q, c.s, sum(c.n) FROM ( \
        SELECT queue AS q, state AS s, 1 AS n FROM ended \
        UNION ALL SELECT queue, 'running', -1 FROM ended) c \
    GROUP BY c.q, c.s ORDER BY c.q, c.s \
    ON CONFLICT (queue, state) DO UPDATE SET n = job_counts.n + excluded.n \
), per_minute AS ( \
    INSERT INTO ended_minutes (minute, completed, failed) \
    SELECT $9::int8 / 60000, count(*) FILTER (WHERE state = 'completed'), \
        count(*) FILTER (WHERE state = 'failed') FROM ended \
    HAVING count(*) FILTER (WHERE state = 'completed' OR state = 'failed') > 0 \
    ON CONFLICT (minute) DO UPDATE SET completed = ended_minutes.completed + excluded.completed, \
        failed = ended_minutes.failed + excluded.failed \
) \
SELECT id, token FROM ended")
    };
}

/// Ends attempts, many in one statement: each job's next state under its attempt's lease,
/// the attempts of those written recorded, the counts moved. Applied ids.
///
/// An attempt's number is its job's count of attempts, which only grows, so its record is a
/// new row. A retry before migration 8 started a job's count again; a batch that meets the
/// record of such an earlier attempt fails whole and is written again as
/// [`FINISH_REPLACING`], whose records replace those of the same number, as they used to.
/// Inserted without `ON CONFLICT`, a record costs 15% less of the statement.
pub(super) const FINISH: &str = finish_sql!("");

/// [`FINISH`] whose records replace any stored under the same job and number.
const FINISH_REPLACING: &str = finish_sql!(
    "ON CONFLICT (job_id, number) DO UPDATE SET reason = excluded.reason, \
    trap_kind = excluded.trap_kind, exit_code = excluded.exit_code, \
    message = excluded.message, stderr = excluded.stderr, \
    stderr_truncated = excluded.stderr_truncated, receipt = excluded.receipt, \
    worker = excluded.worker, started_at = excluded.started_at, \
    finished_at = excluded.finished_at, replay = excluded.replay"
);

/// The columns of one end: its next state and what that state writes.
struct EndColumns {
    output: Option<Vec<u8>>,
    run_at: Option<i64>,
    limits: Option<String>,
    error: Option<(String, String)>,
}

fn end_columns(finish: &Finish) -> EndColumns {
    let none = EndColumns {
        output: None,
        run_at: None,
        limits: None,
        error: None,
    };
    let error =
        |e: &crate::domain::JobError| Some((e.reason.as_str().to_owned(), e.message.clone()));
    match finish {
        Finish::Completed { output } => EndColumns {
            output: Some(output.clone()),
            ..none
        },
        Finish::Retry {
            run_at,
            limits,
            error: e,
        } => EndColumns {
            run_at: Some(run_at.0),
            limits: Some(columns::limits_text(limits)),
            error: error(e),
            ..none
        },
        Finish::Failed { error: e } | Finish::Cancelled { error: e } => EndColumns {
            error: error(e),
            ..none
        },
        Finish::Interrupted => none,
    }
}

/// Writes attempt ends; says for each whether it was written (false: its lease is stale).
/// An end repeated in one batch (same job, same lease) is written once, the first time.
pub(super) async fn finish(
    client: &impl GenericClient,
    ends: &[AttemptEnd],
    now: Timestamp,
) -> StoreResult<Vec<bool>> {
    let mut seen = std::collections::HashSet::new();
    let first: Vec<bool> = ends
        .iter()
        .map(|e| seen.insert((e.id, e.lease.token)))
        .collect();
    let sent: Vec<&AttemptEnd> = ends
        .iter()
        .zip(&first)
        .filter(|(_, f)| **f)
        .map(|(e, _)| e)
        .collect();
    let ids: Vec<Vec<u8>> = sent.iter().map(|e| id_bytes(e.id)).collect();
    let tokens: Vec<i64> = sent.iter().map(|e| e.lease.token).collect();
    let states: Vec<&str> = sent.iter().map(|e| e.finish.state().as_str()).collect();
    let cols: Vec<EndColumns> = sent.iter().map(|e| end_columns(&e.finish)).collect();
    let outputs: Vec<Option<&[u8]>> = cols.iter().map(|c| c.output.as_deref()).collect();
    let run_ats: Vec<Option<i64>> = cols.iter().map(|c| c.run_at).collect();
    let limits: Vec<Option<&str>> = cols.iter().map(|c| c.limits.as_deref()).collect();
    let reasons: Vec<Option<&str>> = cols
        .iter()
        .map(|c| c.error.as_ref().map(|e| e.0.as_str()))
        .collect();
    let messages: Vec<Option<&str>> = cols
        .iter()
        .map(|c| c.error.as_ref().map(|e| e.1.as_str()))
        .collect();
    let recorded: Vec<(&AttemptEnd, &AttemptRecord)> = sent
        .iter()
        .filter_map(|e| e.attempt.as_ref().map(|a| (*e, a)))
        .collect();
    let a_tokens: Vec<i64> = recorded.iter().map(|(e, _)| e.lease.token).collect();
    let attempts: Vec<(JobId, &AttemptRecord)> = recorded.iter().map(|(e, a)| (e.id, *a)).collect();
    let attempts = AttemptColumns::new(&attempts);
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &ids, &tokens, &states, &outputs, &run_ats, &limits, &reasons, &messages, &now.0,
    ];
    params.extend(attempts.params());
    params.push(&a_tokens);
    let statement = client.prepare_cached(FINISH).await.map_err(db)?;
    let written = match client.query(&statement, &params).await {
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            let statement = client.prepare_cached(FINISH_REPLACING).await.map_err(db)?;
            client.query(&statement, &params).await
        }
        written => written,
    }
    .map_err(db)?;
    let written: std::collections::HashSet<(Vec<u8>, i64)> = written
        .iter()
        .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, i64>(1)))
        .collect();
    Ok(ends
        .iter()
        .zip(first)
        .map(|(e, first)| first && written.contains(&(id_bytes(e.id), e.lease.token)))
        .collect())
}

/// Running jobs whose lease expired before `now`, with their lease, in id order.
pub(super) async fn expired_leases(
    client: &impl GenericClient,
    now: Timestamp,
) -> StoreResult<Vec<Claimed>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs \
         WHERE state = 'running' AND lease_expires < $1 AND lease IS NOT NULL ORDER BY id"
    );
    let statement = client.prepare_cached(&sql).await.map_err(db)?;
    let mut out = Vec::new();
    for row in client.query(&statement, &[&now.0]).await.map_err(db)? {
        let (job, lease) = rows::job(&row)?;
        if let Some(lease) = lease {
            out.push(Claimed { job, lease });
        }
    }
    Ok(out)
}

/// Extends a running job's lease; false if `token` is not its lease.
pub(super) async fn heartbeat(
    client: &impl GenericClient,
    id: JobId,
    token: i64,
    expires_at: Timestamp,
) -> StoreResult<bool> {
    let statement = client
        .prepare_cached(
            "UPDATE jobs SET lease_expires = $3 WHERE id = $1 AND state = 'running' AND lease = $2",
        )
        .await
        .map_err(db)?;
    Ok(client
        .execute(&statement, &[&id_bytes(id), &token, &expires_at.0])
        .await
        .map_err(db)?
        > 0)
}

/// Stores a running job's progress; false if `token` is not its lease.
pub(super) async fn set_progress(
    client: &impl GenericClient,
    id: JobId,
    token: i64,
    done: i64,
    total: i64,
) -> StoreResult<bool> {
    let statement = client
        .prepare_cached(
            "UPDATE jobs SET progress_done = $3, progress_total = $4 \
             WHERE id = $1 AND state = 'running' AND lease = $2",
        )
        .await
        .map_err(db)?;
    Ok(client
        .execute(&statement, &[&id_bytes(id), &token, &done, &total])
        .await
        .map_err(db)?
        > 0)
}
