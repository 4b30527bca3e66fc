//! The records a job is made of: what a submit asks for ([`NewJob`]), what the store keeps
//! ([`Job`], [`AttemptRecord`]) and time as milliseconds since the Unix epoch ([`Timestamp`]).
//! Plain data; the rules live in `job.rs` (states) and `retry.rs`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{
    JobId, JobState, Limits, ModuleDigest, QueueName, Reason, RetryPolicy, TaskName, TrapKind,
};

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The wall clock now. Code that decides things takes `now` as a parameter instead.
    pub fn now() -> Self {
        Timestamp(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        )
    }

    pub fn plus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    pub fn minus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_sub(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    /// How long from `self` until `later` (zero if `later` is not later).
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0).max(0) as u64)
    }
}

/// A job as submitted, validated, with the task's digest pinned.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub id: JobId,
    pub task: TaskName,
    pub digest: ModuleDigest,
    pub queue: QueueName,
    pub input: Vec<u8>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub priority: i32,
    /// `held` when submitted to start later, `scheduled` when `run_at` is in the future,
    /// else `queued`.
    pub state: JobState,
    pub run_at: Timestamp,
    pub unique_key: Option<String>,
    pub context: Option<String>,
    pub limits: Limits,
    pub retry: RetryPolicy,
    pub submitter: Option<String>,
    pub created_at: Timestamp,
}

/// The error a failed (or cancelled) job ended with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    pub reason: Reason,
    pub message: String,
}

/// A job as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub task: TaskName,
    pub digest: ModuleDigest,
    pub queue: QueueName,
    pub state: JobState,
    pub input: Vec<u8>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub priority: i32,
    pub run_at: Timestamp,
    pub unique_key: Option<String>,
    pub context: Option<String>,
    /// The limits of the next attempt (escalated after `deadline` / `out_of_fuel`).
    pub limits: Limits,
    pub retry: RetryPolicy,
    /// Attempts started so far.
    pub attempts: u32,
    pub progress: Option<(i64, i64)>,
    pub output: Option<Vec<u8>>,
    pub error: Option<JobError>,
    pub submitter: Option<String>,
    pub worker: Option<String>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

impl NewJob {
    /// The job as stored when it was accepted: no attempt yet.
    pub fn into_job(self) -> Job {
        Job {
            id: self.id,
            task: self.task,
            digest: self.digest,
            queue: self.queue,
            state: self.state,
            input: self.input,
            args: self.args,
            env: self.env,
            priority: self.priority,
            run_at: self.run_at,
            unique_key: self.unique_key,
            context: self.context,
            limits: self.limits,
            retry: self.retry,
            attempts: 0,
            progress: None,
            output: None,
            error: None,
            submitter: self.submitter,
            worker: None,
            created_at: self.created_at,
            started_at: None,
            finished_at: None,
        }
    }
}

/// One attempt of a job, as recorded when it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub number: u32,
    pub reason: Reason,
    pub trap_kind: Option<TrapKind>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub stderr: Vec<u8>,
    pub stderr_truncated: bool,
    /// The sandbox receipt, as JSON.
    pub receipt: serde_json::Value,
    pub worker: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}
