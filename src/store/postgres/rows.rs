//! Row codecs of the PostgreSQL backend: a job id is its 16 bytes (they sort as ids do), a
//! job's limits and retry policy the compact text of `store/columns.rs`, its args and env
//! JSON; rows are decoded into domain records here and nowhere else.

use tokio_postgres::Row;

use super::corrupt;
use crate::domain::{
    AttemptReplay, Job, JobError, JobId, JobState, Lease, ModuleDigest, QueueName, ScheduleRecord,
    TaskName, Timestamp,
};
use crate::store::StoreResult;
use crate::store::columns;

/// A job's columns, in the order [`job`] reads them.
pub(super) const JOB_COLUMNS: &str = "id, task, digest, queue, state, input, args, env, \
    priority, run_at, unique_key, context, limits, retry, attempts, progress_done, \
    progress_total, output, error_reason, error_message, submitter, worker, created_at, \
    started_at, finished_at, lease, lease_expires, concurrency_key, attempt_base";

/// A schedule's columns, in the order [`schedule`] reads them.
pub(super) const SCHEDULE_COLUMNS: &str = "name, spec, job, overlap, catch_up, paused, \
    next_fire, last_fire, last_job, fires, skipped, last_error, created_at, updated_at";

pub(super) fn id_bytes(id: JobId) -> Vec<u8> {
    id.as_u128().to_be_bytes().to_vec()
}

pub(super) fn job_id(table: &'static str, bytes: &[u8]) -> StoreResult<JobId> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| corrupt(table, format!("a job id of {} bytes", bytes.len())))?;
    Ok(JobId::from_u128(u128::from_be_bytes(bytes)))
}

pub(super) use crate::store::columns::{json, parse_json};

fn parsed<T: std::str::FromStr>(table: &'static str, s: &str) -> StoreResult<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| corrupt(table, e))
}

/// A row of [`JOB_COLUMNS`]: the job, and its lease if it has one.
pub(super) fn job(row: &Row) -> StoreResult<(Job, Option<Lease>)> {
    let text = |i: usize| -> String { row.get(i) };
    let error = match (
        row.get::<_, Option<String>>(18),
        row.get::<_, Option<String>>(19),
    ) {
        (Some(reason), message) => Some(JobError {
            reason: parsed("jobs", &reason)?,
            message: message.unwrap_or_default(),
        }),
        (None, _) => None,
    };
    let progress = match (row.get::<_, Option<i64>>(15), row.get::<_, Option<i64>>(16)) {
        (Some(d), Some(t)) => Some((d, t)),
        _ => None,
    };
    let lease = match (row.get::<_, Option<i64>>(25), row.get::<_, Option<i64>>(26)) {
        (Some(token), Some(exp)) => Some(Lease {
            token,
            expires_at: Timestamp(exp),
        }),
        _ => None,
    };
    let job = Job {
        id: job_id("jobs", row.get(0))?,
        task: parsed::<TaskName>("jobs", &text(1))?,
        digest: parsed::<ModuleDigest>("jobs", &text(2))?,
        queue: parsed::<QueueName>("jobs", &text(3))?,
        state: parsed::<JobState>("jobs", &text(4))?,
        input: row.get(5),
        args: parse_json("jobs", &text(6))?,
        env: parse_json("jobs", &text(7))?,
        priority: row.get(8),
        run_at: Timestamp(row.get(9)),
        unique_key: row.get(10),
        context: row.get(11),
        concurrency_key: row.get(27),
        limits: columns::parse_limits(&text(12)).map_err(|e| corrupt("jobs", e))?,
        retry: columns::parse_retry(&text(13)).map_err(|e| corrupt("jobs", e))?,
        attempts: row.get::<_, i32>(14) as u32,
        attempt_base: row.get::<_, i32>(28) as u32,
        progress,
        output: row.get(17),
        error,
        submitter: row.get(20),
        worker: row.get(21),
        created_at: Timestamp(row.get(22)),
        started_at: row.get::<_, Option<i64>>(23).map(Timestamp),
        finished_at: row.get::<_, Option<i64>>(24).map(Timestamp),
    };
    Ok((job, lease))
}

/// A row of [`SCHEDULE_COLUMNS`].
pub(super) fn schedule(r: &Row) -> StoreResult<ScheduleRecord> {
    let text = |i: usize| -> String { r.get(i) };
    let ts = |i: usize| r.get::<_, Option<i64>>(i).map(Timestamp);
    Ok(ScheduleRecord {
        name: parsed("schedules", &text(0))?,
        spec: parse_json("schedules", &text(1))?,
        job: parse_json("schedules", &text(2))?,
        overlap: parse_json("schedules", &text(3))?,
        catch_up: parse_json("schedules", &text(4))?,
        paused: r.get(5),
        next_fire: ts(6),
        last_fire: ts(7),
        last_job: r
            .get::<_, Option<Vec<u8>>>(8)
            .map(|b| job_id("schedules", &b))
            .transpose()?,
        fires: r.get::<_, i64>(9) as u64,
        skipped: r.get::<_, i64>(10) as u64,
        last_error: r.get(11),
        created_at: Timestamp(r.get(12)),
        updated_at: Timestamp(r.get(13)),
    })
}

/// Attempts as the columns of a multi-row insert, one array each, in the order of
/// [`AttemptColumns::params`]: `job_id, number, reason, trap_kind, exit_code, message,
/// stderr, stderr_truncated, receipt, worker, started_at, finished_at, replay`.
pub(super) struct AttemptColumns<'a> {
    ids: Vec<Vec<u8>>,
    numbers: Vec<i32>,
    reasons: Vec<&'a str>,
    traps: Vec<Option<&'a str>>,
    exits: Vec<Option<i32>>,
    messages: Vec<Option<&'a str>>,
    stderr: Vec<&'a [u8]>,
    truncated: Vec<bool>,
    receipts: Vec<String>,
    workers: Vec<&'a str>,
    started: Vec<i64>,
    finished: Vec<i64>,
    replays: Vec<Option<Vec<u8>>>,
}

impl<'a> AttemptColumns<'a> {
    pub(super) fn new(attempts: &[(JobId, &'a crate::domain::AttemptRecord)]) -> Self {
        Self {
            ids: attempts.iter().map(|(id, _)| id_bytes(*id)).collect(),
            numbers: attempts.iter().map(|(_, a)| a.number as i32).collect(),
            reasons: attempts.iter().map(|(_, a)| a.reason.as_str()).collect(),
            traps: attempts
                .iter()
                .map(|(_, a)| a.trap_kind.map(|k| k.as_str()))
                .collect(),
            exits: attempts.iter().map(|(_, a)| a.exit_code).collect(),
            messages: attempts.iter().map(|(_, a)| a.message.as_deref()).collect(),
            stderr: attempts.iter().map(|(_, a)| a.stderr.as_slice()).collect(),
            truncated: attempts.iter().map(|(_, a)| a.stderr_truncated).collect(),
            receipts: attempts
                .iter()
                .map(|(_, a)| a.receipt.to_string())
                .collect(),
            workers: attempts.iter().map(|(_, a)| a.worker.as_str()).collect(),
            started: attempts.iter().map(|(_, a)| a.started_at.0).collect(),
            finished: attempts.iter().map(|(_, a)| a.finished_at.0).collect(),
            replays: attempts
                .iter()
                .map(|(_, a)| a.replay.as_ref().map(AttemptReplay::encode))
                .collect(),
        }
    }

    /// The arrays, as statement parameters.
    pub(super) fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 13] {
        [
            &self.ids,
            &self.numbers,
            &self.reasons,
            &self.traps,
            &self.exits,
            &self.messages,
            &self.stderr,
            &self.truncated,
            &self.receipts,
            &self.workers,
            &self.started,
            &self.finished,
            &self.replays,
        ]
    }
}
