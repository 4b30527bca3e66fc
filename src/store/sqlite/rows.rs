//! Row codecs: job rows copied out of SQLite and decoded on the caller's thread
//! ([`JobRow`]), and jobs and attempt ends encoded before they go to the writer
//! ([`EncodedJob`], [`EncodedEnd`]). The writer thread is the store's bottleneck, so it only
//! binds and steps; ids, names and text columns are made and parsed here, off its thread.

use rusqlite::{Connection, Row};

use super::claims::ClaimOf;
use super::{corrupt, db};
use crate::domain::{
    AttemptReplay, Finish, Job, JobError, JobState, Lease, Limits, NewJob, RetryPolicy, Timestamp,
};
use crate::store::columns;
use crate::store::{AttemptEnd, StoreResult};

pub(super) const JOB_COLUMNS: &str = "id, task, digest, queue, state, input, args, env, priority, run_at, unique_key, \
    context, limits, retry, attempts, progress_done, progress_total, output, error_reason, error_message, \
    submitter, worker, created_at, started_at, finished_at, lease, lease_expires, concurrency_key, \
    attempt_base";

/// What a claim returns of each job: `JOB_COLUMNS` but those the claim sets itself (state,
/// queue, worker, start, lease, progress), which [`JobRow::claimed`] fills in. Copying the
/// returned columns out was a quarter of a claim's time in the writer.
pub(super) const CLAIMED_COLUMNS: &str = "id, task, digest, input, args, env, priority, run_at, unique_key, \
    context, limits, retry, attempts, output, error_reason, error_message, submitter, created_at, \
    finished_at, concurrency_key, attempt_base";

pub(super) use crate::store::columns::{json, parse_json};

/// A job row as stored, copied out of SQLite but not decoded: the writer thread returns these
/// and the caller decodes them (ids, names, JSON columns) on its own thread.
pub(super) struct JobRow {
    text: [String; 5],
    input: Vec<u8>,
    json: [String; 4],
    priority: i32,
    run_at: i64,
    unique_key: Option<String>,
    context: Option<String>,
    concurrency_key: Option<String>,
    attempts: u32,
    attempt_base: u32,
    progress: (Option<i64>, Option<i64>),
    output: Option<Vec<u8>>,
    error: (Option<String>, Option<String>),
    submitter: Option<String>,
    worker: Option<String>,
    times: (i64, Option<i64>, Option<i64>),
    lease: (Option<i64>, Option<i64>),
}

impl JobRow {
    /// Reads a row of `JOB_COLUMNS`.
    pub(super) fn read(row: &Row<'_>) -> StoreResult<Self> {
        let s = |i: usize| -> StoreResult<String> { row.get::<_, String>(i).map_err(db) };
        Ok(Self {
            text: [s(0)?, s(1)?, s(2)?, s(3)?, s(4)?],
            input: row.get(5).map_err(db)?,
            json: [s(6)?, s(7)?, s(12)?, s(13)?],
            priority: row.get(8).map_err(db)?,
            run_at: row.get(9).map_err(db)?,
            unique_key: row.get(10).map_err(db)?,
            context: row.get(11).map_err(db)?,
            attempts: row.get(14).map_err(db)?,
            progress: (row.get(15).map_err(db)?, row.get(16).map_err(db)?),
            output: row.get(17).map_err(db)?,
            error: (row.get(18).map_err(db)?, row.get(19).map_err(db)?),
            submitter: row.get(20).map_err(db)?,
            worker: row.get(21).map_err(db)?,
            times: (
                row.get(22).map_err(db)?,
                row.get(23).map_err(db)?,
                row.get(24).map_err(db)?,
            ),
            lease: (row.get(25).map_err(db)?, row.get(26).map_err(db)?),
            concurrency_key: row.get(27).map_err(db)?,
            attempt_base: row.get(28).map_err(db)?,
        })
    }

    /// Reads a row of `CLAIMED_COLUMNS` of a job that `claim` just took, `expires` its lease's
    /// end.
    pub(super) fn claimed(
        row: &Row<'_>,
        claim: &ClaimOf<'_>,
        token: i64,
        expires: i64,
    ) -> StoreResult<Self> {
        let s = |i: usize| -> StoreResult<String> { row.get::<_, String>(i).map_err(db) };
        Ok(Self {
            text: [
                s(0)?,
                s(1)?,
                s(2)?,
                claim.queue.to_string(),
                JobState::Running.as_str().to_owned(),
            ],
            input: row.get(3).map_err(db)?,
            json: [s(4)?, s(5)?, s(10)?, s(11)?],
            priority: row.get(6).map_err(db)?,
            run_at: row.get(7).map_err(db)?,
            unique_key: row.get(8).map_err(db)?,
            context: row.get(9).map_err(db)?,
            attempts: row.get(12).map_err(db)?,
            progress: (None, None),
            output: row.get(13).map_err(db)?,
            error: (row.get(14).map_err(db)?, row.get(15).map_err(db)?),
            submitter: row.get(16).map_err(db)?,
            worker: Some(claim.worker.to_owned()),
            times: (
                row.get(17).map_err(db)?,
                Some(claim.now.0),
                row.get(18).map_err(db)?,
            ),
            lease: (Some(token), Some(expires)),
            concurrency_key: row.get(19).map_err(db)?,
            attempt_base: row.get(20).map_err(db)?,
        })
    }

    /// The job and its lease, reusing `parsed` for JSON columns equal to the previous row's.
    pub(super) fn decode_with(self, parsed: &mut Parsed) -> StoreResult<(Job, Option<Lease>)> {
        let [id, task, digest, queue, state] = self.text;
        let [args, env, limits, retry] = self.json;
        let error = match self.error {
            (Some(reason), message) => Some(JobError {
                reason: reason.parse().map_err(|e| corrupt("jobs", e))?,
                message: message.unwrap_or_default(),
            }),
            (None, _) => None,
        };
        let progress = match self.progress {
            (Some(d), Some(t)) => Some((d, t)),
            _ => None,
        };
        let lease = match self.lease {
            (Some(token), Some(exp)) => Some(Lease {
                token,
                expires_at: Timestamp(exp),
            }),
            _ => None,
        };
        let job = Job {
            id: id.parse().map_err(|e| corrupt("jobs", e))?,
            task: task.parse().map_err(|e| corrupt("jobs", e))?,
            digest: digest.parse().map_err(|e| corrupt("jobs", e))?,
            queue: queue.parse().map_err(|e| corrupt("jobs", e))?,
            state: state.parse().map_err(|e| corrupt("jobs", e))?,
            input: self.input,
            args: parse_json("jobs", &args)?,
            env: parse_json("jobs", &env)?,
            priority: self.priority,
            run_at: Timestamp(self.run_at),
            unique_key: self.unique_key,
            context: self.context,
            concurrency_key: self.concurrency_key,
            limits: parsed_again(&mut parsed.limits, limits, columns::parse_limits)?,
            retry: parsed_again(&mut parsed.retry, retry, columns::parse_retry)?,
            attempts: self.attempts,
            attempt_base: self.attempt_base,
            progress,
            output: self.output,
            error,
            submitter: self.submitter,
            worker: self.worker,
            created_at: Timestamp(self.times.0),
            started_at: self.times.1.map(Timestamp),
            finished_at: self.times.2.map(Timestamp),
        };
        Ok((job, lease))
    }
}

/// The limits and retry policy of the last row decoded, as text and parsed: the jobs of one
/// claim mostly share them, and parsing them (as JSON, then) was most of a claimed row's
/// decoding.
#[derive(Default)]
pub(super) struct Parsed {
    pub(super) limits: Option<(String, Limits)>,
    pub(super) retry: Option<(String, RetryPolicy)>,
}

/// `text` parsed, or the value kept in `last` if it was parsed from the same text.
pub(super) fn parsed_again<T: Clone>(
    last: &mut Option<(String, T)>,
    text: String,
    parse: fn(&str) -> Result<T, String>,
) -> StoreResult<T> {
    if let Some((seen, value)) = last
        && *seen == text
    {
        return Ok(value.clone());
    }
    let value = parse(&text).map_err(|e| corrupt("jobs", format!("{e}: {text}")))?;
    *last = Some((text, value.clone()));
    Ok(value)
}

pub(super) fn query_jobs(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<(Job, Option<Lease>)>> {
    let mut parsed = Parsed::default();
    query_job_rows(conn, sql, params)?
        .into_iter()
        .map(|row| row.decode_with(&mut parsed))
        .collect()
}

/// The rows of a statement selecting `JOB_COLUMNS`, not decoded yet (see `JobRow`).
pub(super) fn query_job_rows(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<JobRow>> {
    query_rows(conn, sql, params, JobRow::read)
}

/// The rows of a (cached) statement, each copied out by `read`.
pub(super) fn query_rows(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    mut read: impl FnMut(&Row<'_>) -> StoreResult<JobRow>,
) -> StoreResult<Vec<JobRow>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        out.push(read(row)?);
    }
    Ok(out)
}

/// A new job with its text columns encoded, so a submit's writer transaction only binds them.
pub(super) struct EncodedJob {
    pub(super) job: NewJob,
    pub(super) id: String,
    pub(super) task: String,
    pub(super) queue: String,
    pub(super) state: JobState,
    pub(super) state_text: &'static str,
    pub(super) run_at: i64,
    pub(super) digest: String,
    pub(super) args: String,
    pub(super) env: String,
    pub(super) limits: String,
    pub(super) retry: String,
}

impl EncodedJob {
    pub(super) fn new(job: NewJob) -> Self {
        Self {
            id: job.id.to_string(),
            task: job.task.to_string(),
            queue: job.queue.to_string(),
            state: job.state(),
            state_text: job.state().as_str(),
            run_at: job.run_at().0,
            digest: job.digest.to_hex(),
            args: json(&job.args),
            env: json(&job.env),
            limits: columns::limits_text(&job.limits),
            retry: columns::retry_text(&job.retry),
            job,
        }
    }
}

/// An attempt's end with its text columns encoded before it goes to the writer thread, which
/// is the store's bottleneck.
pub(super) struct EncodedEnd {
    pub(super) end: AttemptEnd,
    pub(super) key: String,
    pub(super) limits: Option<String>,
    pub(super) attempt: Option<EncodedAttempt>,
}

/// The encoded columns of an attempt record.
pub(super) struct EncodedAttempt {
    pub(super) receipt: String,
    pub(super) reason: &'static str,
    pub(super) trap_kind: Option<&'static str>,
    /// What replays the attempt, in its compact form.
    pub(super) replay: Option<Vec<u8>>,
}

impl EncodedEnd {
    pub(super) fn new(end: AttemptEnd) -> Self {
        let limits = match &end.finish {
            Finish::Retry { limits, .. } => Some(columns::limits_text(limits)),
            _ => None,
        };
        Self {
            key: end.id.to_string(),
            limits,
            attempt: end.attempt.as_ref().map(|a| EncodedAttempt {
                receipt: a.receipt.to_string(),
                reason: a.reason.as_str(),
                trap_kind: a.trap_kind.map(|k| k.as_str()),
                replay: a.replay.as_ref().map(AttemptReplay::encode),
            }),
            end,
        }
    }
}
