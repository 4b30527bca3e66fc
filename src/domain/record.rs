//! The records a job is made of: what a submit asks for ([`NewJob`], with how it [`Start`]s),
//! what the store keeps ([`Job`], [`AttemptRecord`]), how jobs are looked for ([`JobFilter`])
//! and time as milliseconds since the Unix epoch ([`Timestamp`]). Plain data; the rules live
//! in `lifecycle.rs` (states and moves) and `retry.rs`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{
    AttemptReplay, Event, JobError, JobId, JobState, Limits, ModuleDigest, QueueName, Reason,
    RetryPolicy, TaskName, TrapKind,
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
    /// How the job starts; its first state follows from it.
    pub start: Start,
    pub unique_key: Option<String>,
    pub context: Option<String>,
    /// Jobs of one queue with the same key run at most the queue's `key_concurrency` at a
    /// time (a context guard).
    pub concurrency_key: Option<String>,
    pub limits: Limits,
    pub retry: RetryPolicy,
    pub submitter: Option<String>,
    pub created_at: Timestamp,
}

/// How a submitted job starts. A submit says this, not which state the job is in: the state
/// machine decides that ([`NewJob::event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Runs as soon as a worker is free.
    Now,
    /// Runs no earlier than this time (at once if it is not after the job's creation; an
    /// earlier time also orders it before jobs of the same priority).
    At(Timestamp),
    /// Waits until it is released by hand.
    Held,
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
    pub concurrency_key: Option<String>,
    /// The limits of the next attempt (escalated after `deadline` / `out_of_fuel`).
    pub limits: Limits,
    pub retry: RetryPolicy,
    /// Attempts started so far; also the number of the latest. Attempt numbers only grow,
    /// so every attempt's record is kept, also across a retry of the ended job.
    pub attempts: u32,
    /// The attempts that came before the job's latest retry (`retry` of a failed or
    /// cancelled job): its retry policy counts only the attempts after them.
    pub attempt_base: u32,
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
    /// The submit event that stores this job: `submit_held`, `submit_delayed` for a start
    /// after its creation, else `submit`.
    pub fn event(&self) -> Event {
        match self.start {
            Start::Held => Event::SubmitHeld,
            Start::At(t) if t > self.created_at => Event::SubmitDelayed,
            Start::Now | Start::At(_) => Event::Submit,
        }
    }

    /// The state the job is stored in.
    pub fn state(&self) -> JobState {
        match self.event() {
            Event::SubmitHeld => JobState::Held,
            Event::SubmitDelayed => JobState::Scheduled,
            _ => JobState::Queued,
        }
    }

    /// When the job may run: its start time, else its creation.
    pub fn run_at(&self) -> Timestamp {
        match self.start {
            Start::At(t) => t,
            Start::Now | Start::Held => self.created_at,
        }
    }

    /// The job as stored when it was accepted: no attempt yet.
    pub fn into_job(self) -> Job {
        Job {
            state: self.state(),
            run_at: self.run_at(),
            id: self.id,
            task: self.task,
            digest: self.digest,
            queue: self.queue,
            input: self.input,
            args: self.args,
            env: self.env,
            priority: self.priority,
            unique_key: self.unique_key,
            context: self.context,
            concurrency_key: self.concurrency_key,
            limits: self.limits,
            retry: self.retry,
            attempts: 0,
            attempt_base: 0,
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
    /// What replays the attempt; `None` for an attempt the sandbox did not run to a report
    /// (`lease_lost`, or recorded before replays existed).
    pub replay: Option<AttemptReplay>,
}

/// Filters for listing jobs; `after` is the cursor (the last id of the previous page).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub states: Vec<JobState>,
    pub task: Option<TaskName>,
    pub queue: Option<QueueName>,
    pub context: Option<String>,
    pub unique_key: Option<String>,
    pub after: Option<JobId>,
    pub limit: u32,
    /// Newest first (ids descending; `after` then pages towards older jobs).
    pub newest_first: bool,
}
