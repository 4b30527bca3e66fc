//! Storage: the job store (`trait Store`, with its SQLite backend) and content-addressed
//! module blobs on disk. The store applies every job transition as one guarded, conditional
//! update; it decides nothing (retry decisions come from `domain::RetryPolicy`, passed in)
//! and reads no clock (every method that needs time takes `now`).

mod blobs;
mod columns;
mod sqlite;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use blobs::{BlobError, BlobStore};
pub use sqlite::SqliteStore;

use crate::domain::{CatchUp, JobTemplate, Overlap, Role, ScheduleName, SpecDef};

use crate::domain::{
    AttemptRecord, Job, JobError, JobId, JobState, Limits, ModuleDigest, NewJob, QueueName,
    RetryPolicy, TaskName, Timestamp,
};

/// A fault of the store; bad requests are answered with values, not errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error(
        "the database at {path} has schema version {found}, newer than this binary's {supported}; upgrade remotask"
    )]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        table: &'static str,
        message: String,
    },
    #[error("the store is shut down")]
    Closed,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Defaults a task gives its jobs (each overridable per job within the queue's caps).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskDefaults {
    pub queue: Option<QueueName>,
    pub limits: Option<Limits>,
    pub retry: Option<RetryPolicy>,
    pub env: Vec<(String, String)>,
}

/// A registered task: its name points at the newest version.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub name: TaskName,
    pub digest: ModuleDigest,
    pub defaults: TaskDefaults,
    /// Every version ever registered, newest first.
    pub versions: Vec<TaskVersion>,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskVersion {
    pub digest: ModuleDigest,
    pub size_bytes: u64,
    pub created_at: Timestamp,
}

/// A queue's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueConfig {
    pub name: QueueName,
    /// Jobs run at once; 1 runs them strictly one at a time in claim order.
    pub concurrency: u32,
    /// Limits of jobs that give none.
    pub default_limits: Limits,
    /// The most any job (or escalation) may ask for.
    pub caps: Limits,
}

impl QueueConfig {
    /// A queue nobody configured: concurrency 5, default limits, generous caps.
    pub fn with_defaults(name: QueueName) -> Self {
        Self {
            name,
            concurrency: 5,
            default_limits: Limits::default(),
            caps: Limits {
                fuel: 1_000_000_000_000,
                max_time: std::time::Duration::from_secs(3600),
                memory_bytes: Limits::MAX_MEMORY_BYTES,
                stdout_bytes: 64 << 20,
                stderr_bytes: 64 << 20,
            },
        }
    }
}

/// A queue's settings, pause state and job counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStats {
    pub config: QueueConfig,
    pub paused: bool,
    pub counts: BTreeMap<JobState, u64>,
}

/// What a submit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A new job was stored.
    New(JobId),
    /// A live job with the same unique key exists; it is returned instead.
    Existing(JobId),
}

impl Inserted {
    pub fn id(self) -> JobId {
        match self {
            Inserted::New(id) | Inserted::Existing(id) => id,
        }
    }
}

/// The fencing token of one claim: every update of the running job must present it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub token: i64,
    pub expires_at: Timestamp,
}

/// A job handed to a worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: Job,
    pub lease: Lease,
}

/// What one claim took from a queue.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    pub jobs: Vec<Claimed>,
    /// The queue's concurrency stopped the claim (it took all the room there was, and that
    /// was less than asked): a running job of the queue ending makes room for more.
    pub at_concurrency: bool,
    /// Scheduled jobs of any queue that this claim found due and made `queued` (delayed jobs,
    /// retries after their backoff), so their move can be told to subscribers.
    pub promoted: Vec<Promoted>,
}

/// A job a claim moved from `scheduled` to `queued`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    pub id: JobId,
    pub task: TaskName,
    pub queue: QueueName,
}

/// A claim left with the store while its worker has nothing to run
/// ([`Store::park_claim`]): the store runs it inside the transaction of the next submit that
/// queues a job in one of its queues, so that job is claimed when its submit commits, without a
/// claim and a commit of its own.
#[derive(Debug, Clone)]
pub struct StandingClaim {
    /// Tried in this order, sharing `max`.
    pub queues: Vec<QueueName>,
    pub worker: String,
    pub max: u32,
    pub lease_ttl_ms: i64,
    /// Read when the claim runs: its lease and `started_at` count from then.
    pub clock: std::sync::Arc<dyn crate::domain::Clock>,
}

/// What a parked claim took, by queue: empty if it was taken back or never ran. Dropping it
/// takes the claim back if it has not run.
pub type ParkedAnswer =
    futures_util::future::BoxFuture<'static, StoreResult<Vec<(QueueName, Claims)>>>;

/// How a running job's attempt ends, decided by the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    Completed {
        output: Vec<u8>,
    },
    /// Back to `scheduled` at `run_at`, with the limits of the next attempt.
    Retry {
        run_at: Timestamp,
        limits: Limits,
        error: JobError,
    },
    Failed {
        error: JobError,
    },
    Cancelled {
        error: JobError,
    },
    /// Back to `queued` without spending the attempt (graceful shutdown).
    Interrupted,
}

impl Finish {
    /// The state the job is in after this finish.
    pub fn state(&self) -> JobState {
        match self {
            Finish::Completed { .. } => JobState::Completed,
            Finish::Retry { .. } => JobState::Scheduled,
            Finish::Failed { .. } => JobState::Failed,
            Finish::Cancelled { .. } => JobState::Cancelled,
            Finish::Interrupted => JobState::Queued,
        }
    }
}

/// One attempt's end, for [`Store::finish_many`].
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptEnd {
    pub id: JobId,
    /// The job's queue (a job never changes queue); ended jobs are counted per queue.
    pub queue: QueueName,
    /// The lease the attempt ran under; a stale one writes nothing.
    pub lease: Lease,
    /// `None` only for [`Finish::Interrupted`].
    pub attempt: Option<AttemptRecord>,
    pub finish: Finish,
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was not running and is now `cancelled`.
    Cancelled,
    /// The job is running; it is marked, and its worker must interrupt it.
    Running,
    /// Nothing to cancel: the job had already ended in this state.
    AlreadyEnded(JobState),
    NotFound,
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
}

/// Why a job is where it is, as far as the store can tell.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuePosition {
    pub paused: bool,
    pub running: u64,
    pub concurrency: u32,
    /// Queued jobs of the same queue that are claimed before this one.
    pub ahead: u64,
}

/// An API token as stored: only the blake3 hash of its secret is kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(skip)]
    pub hash: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A schedule as stored. `next_fire` is `None` when it will not fire again (a delay that
/// fired, a spec with no more times).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    pub name: ScheduleName,
    pub spec: SpecDef,
    pub job: JobTemplate,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub paused: bool,
    pub next_fire: Option<Timestamp>,
    pub last_fire: Option<Timestamp>,
    pub last_job: Option<JobId>,
    /// Jobs submitted by fires so far.
    pub fires: u64,
    /// Fire times passed over: by the catch-up policy, by overlap `skip`, or because the
    /// job could not be submitted (see `last_error`).
    pub skipped: u64,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What one fire (or one skipped fire) does to a schedule, applied in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    /// The `next_fire` the caller read; nothing happens if another node moved it since.
    pub expected: Timestamp,
    pub next: Option<Timestamp>,
    /// The fire time of the newest job below; `None` when nothing is submitted.
    pub fired_at: Option<Timestamp>,
    /// Jobs to submit, one per fire; each carries the fire's unique key.
    pub jobs: Vec<NewJob>,
    pub skipped: u64,
    pub error: Option<String>,
}

/// The job store. One conformance suite (tests/all/store_conformance.rs) runs against every
/// backend.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Registers a task version (the name now points at it) and returns the task.
    async fn put_task(
        &self,
        name: &TaskName,
        digest: ModuleDigest,
        size_bytes: u64,
        defaults: Option<TaskDefaults>,
        now: Timestamp,
    ) -> StoreResult<TaskRecord>;
    async fn get_task(&self, name: &TaskName) -> StoreResult<Option<TaskRecord>>;
    async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>>;
    /// Replaces a task's defaults; `None` if the task is unknown.
    async fn set_task_defaults(
        &self,
        name: &TaskName,
        defaults: TaskDefaults,
        now: Timestamp,
    ) -> StoreResult<Option<TaskRecord>>;
    /// Removes the name (its versions' jobs keep their pinned digests). False if unknown.
    async fn delete_task(&self, name: &TaskName) -> StoreResult<bool>;

    /// Creates or updates a queue's settings; the pause state is kept.
    async fn put_queue(&self, config: &QueueConfig) -> StoreResult<()>;
    async fn get_queue(&self, name: &QueueName) -> StoreResult<Option<QueueStats>>;
    async fn list_queues(&self) -> StoreResult<Vec<QueueStats>>;
    /// Every queue's settings and whether it is paused, without counting jobs (cheap).
    async fn queue_configs(&self) -> StoreResult<Vec<(QueueConfig, bool)>>;
    /// Pauses or resumes a queue (persisted). False if the queue is unknown.
    async fn set_paused(&self, name: &QueueName, paused: bool) -> StoreResult<bool>;

    /// Stores jobs in one transaction, durable when this returns. A job whose unique key is
    /// held by a live job is not stored; the live job's id is returned for it.
    async fn insert_jobs(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>>;
    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>>;
    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>>;
    async fn attempts(&self, id: JobId) -> StoreResult<Vec<AttemptRecord>>;

    /// Moves due `scheduled` jobs to `queued`, then claims up to `max` queued jobs of `queue`
    /// (fewer if the queue is paused or at its concurrency), in order priority desc, run_at
    /// asc, id asc, each under a new lease; says whether the queue's concurrency stopped it.
    async fn claim(
        &self,
        queue: &QueueName,
        worker: &str,
        max: u32,
        lease_ttl_ms: i64,
        now: Timestamp,
    ) -> StoreResult<Claims>;
    /// Leaves a claim with the store until a submit queues a job in one of its queues; the
    /// claim then runs in that submit's transaction and the answer resolves once it commits.
    /// `None` if this backend does not hold claims; the caller claims on its own when told of
    /// work. A claim that has not run can be taken back with [`Store::unpark_claim`].
    fn park_claim(&self, claim: StandingClaim) -> Option<(u64, ParkedAnswer)> {
        let _ = claim;
        None
    }
    /// Takes back the parked claim `ticket`. True: it has not run and never will (its answer
    /// is empty). False: it ran, or is running, with a submit: its answer holds what it took,
    /// and the caller owns those jobs.
    fn unpark_claim(&self, ticket: u64) -> bool {
        let _ = ticket;
        true
    }
    /// Extends a lease; false if the lease is no longer the job's (stale worker).
    async fn heartbeat(&self, id: JobId, lease: &Lease, expires_at: Timestamp)
    -> StoreResult<bool>;
    /// Stores progress of a running job; false if the lease is stale.
    async fn set_progress(
        &self,
        id: JobId,
        lease: &Lease,
        done: i64,
        total: i64,
    ) -> StoreResult<bool>;
    /// Ends a claimed job's attempt, recording it; false (and nothing written) if the lease is
    /// stale. `attempt` is `None` only for [`Finish::Interrupted`].
    async fn finish(
        &self,
        claimed: &Claimed,
        attempt: Option<AttemptRecord>,
        finish: Finish,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let end = AttemptEnd {
            id: claimed.job.id,
            queue: claimed.job.queue.clone(),
            lease: claimed.lease,
            attempt,
            finish,
        };
        Ok(self.finish_many(vec![end], now).await?.first() == Some(&true))
    }
    /// Ends many attempts in one write, each as [`Store::finish`] would (under its own lease
    /// guard): one answer per end, in order. Either every end is applied or the call fails.
    async fn finish_many(&self, ends: Vec<AttemptEnd>, now: Timestamp) -> StoreResult<Vec<bool>>;
    /// Running jobs whose lease expired before `now`, with the lease they hold, so the rescuer
    /// can end them through [`Store::finish`] like any stale attempt.
    async fn expired_leases(&self, now: Timestamp) -> StoreResult<Vec<Claimed>>;

    async fn cancel(&self, id: JobId, now: Timestamp) -> StoreResult<CancelOutcome>;
    /// Whether a cancel was asked for this running job.
    async fn cancel_requested(&self, id: JobId) -> StoreResult<bool>;
    /// `held` -> `queued`; false if the job is not held.
    async fn release(&self, id: JobId, now: Timestamp) -> StoreResult<bool>;
    /// `failed` or `cancelled` -> `queued` with a fresh attempt budget; false otherwise.
    async fn retry(&self, id: JobId, now: Timestamp) -> StoreResult<bool>;
    /// Deletes a job that is not running; false otherwise.
    async fn delete_job(&self, id: JobId) -> StoreResult<bool>;
    /// Deletes terminal jobs finished before `before` (all terminal jobs if `None`).
    async fn clean(&self, before: Option<Timestamp>) -> StoreResult<u64>;

    /// Where a queued job stands in its queue.
    async fn position(&self, id: JobId) -> StoreResult<Option<QueuePosition>>;
    /// The earliest `run_at` of a scheduled job, to sleep until.
    async fn next_scheduled(&self) -> StoreResult<Option<Timestamp>>;

    /// Creates or replaces a schedule (the caller keeps its counters when updating).
    async fn put_schedule(&self, schedule: &ScheduleRecord) -> StoreResult<()>;
    async fn get_schedule(&self, name: &ScheduleName) -> StoreResult<Option<ScheduleRecord>>;
    async fn list_schedules(&self) -> StoreResult<Vec<ScheduleRecord>>;
    /// False if unknown. Jobs it submitted stay.
    async fn delete_schedule(&self, name: &ScheduleName) -> StoreResult<bool>;
    /// Unpaused schedules whose next fire is at or before `now`.
    async fn due_schedules(&self, now: Timestamp) -> StoreResult<Vec<ScheduleRecord>>;
    /// The earliest next fire of an unpaused schedule, to sleep until.
    async fn next_schedule_fire(&self) -> StoreResult<Option<Timestamp>>;
    /// Applies a fire if the schedule's `next_fire` is still `firing.expected`: moves it to
    /// `firing.next` and submits the jobs, in one transaction, so a fire time is handled once
    /// even by several server processes. `None` if another process got there first.
    async fn fire_schedule(
        &self,
        name: &ScheduleName,
        firing: Firing,
        now: Timestamp,
    ) -> StoreResult<Option<Vec<Inserted>>>;

    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()>;
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;
    /// Revokes a token; false if unknown or already revoked.
    async fn revoke_token(&self, id: &str, now: Timestamp) -> StoreResult<bool>;
    /// The unrevoked token whose secret hashes to `hash`.
    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>>;
}
