//! Storage: the job store (`trait Store`, with its SQLite backend) and content-addressed
//! module blobs on disk. The store applies every job transition as one guarded, conditional
//! update; it decides nothing (retry decisions come from `domain::RetryPolicy`, passed in)
//! and reads no clock (every method that needs time takes `now`).

mod blobs;
pub(crate) mod columns;
pub mod copy;
pub(crate) mod guards;
mod postgres;
mod sqlite;

pub use blobs::{BlobError, BlobStore};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::domain::{
    AttemptRecord, CancelOutcome, Finish, Job, JobFilter, JobId, JobState, Lease, ModuleDigest,
    NewJob, QueueConfig, QueueName, QueuePosition, QueueStats, ScheduleName, ScheduleRecord,
    SessionRecord, TaskDefaults, TaskName, TaskRecord, Timestamp, TokenRecord,
};

/// A fault of the store; bad requests are answered with values, not errors. Cloneable, with
/// its source shared: one failed transaction or log sync answers every write that was in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database failed a statement, a transaction or a commit.
    #[error("database error")]
    Database(#[source] ErrorSource),
    /// The store could not do its own IO: open a file, start a thread, sync the log.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: ErrorSource,
    },
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
    /// The write reached no transaction (the store logs why).
    #[error("the write was not applied: no transaction could be started")]
    NotApplied,
    #[error("the store is shut down")]
    Closed,
    /// A copy's target holds records and was not told to replace them.
    #[error("the target store is not empty: it holds {holds}")]
    NotEmpty { holds: String },
}

/// The error a [`StoreError`] comes from.
pub type ErrorSource = std::sync::Arc<dyn std::error::Error + Send + Sync>;

impl StoreError {
    /// A database failure, keeping `source`.
    pub fn database(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Database(std::sync::Arc::new(source))
    }

    /// An IO failure of the store's own, saying `what` failed and keeping `source`.
    pub fn io(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Io {
            what: what.into(),
            source: std::sync::Arc::new(source),
        }
    }
}

impl StoreError {
    /// Whether the store could not write because its disk is full: SQLite's `SQLITE_FULL`,
    /// PostgreSQL's `disk_full`, or `ENOSPC` from a file of the store's own (a module blob,
    /// the log), anywhere in the error's chain.
    pub fn is_disk_full(&self) -> bool {
        // Start inside the shared source: an `Arc` as an error hides the type it holds.
        let mut next: Option<&(dyn std::error::Error + 'static)> = match self {
            StoreError::Database(source) | StoreError::Io { source, .. } => Some(&**source),
            _ => None,
        };
        while let Some(e) = next {
            if let Some(rusqlite::Error::SqliteFailure(f, _)) = e.downcast_ref::<rusqlite::Error>()
                && f.code == rusqlite::ErrorCode::DiskFull
            {
                return true;
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && (io.kind() == std::io::ErrorKind::StorageFull
                    || io.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()))
            {
                return true;
            }
            if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>()
                && pg.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL)
            {
                return true;
            }
            next = e.source();
        }
        false
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

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

/// What a token's revocation did. The store refuses to revoke the last live admin token,
/// deciding under the same lock as the write, so two revocations at once cannot leave none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Revoked,
    /// No live token has that id.
    NotFound,
    /// It is the last live admin token.
    LastAdmin,
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

/// What a node of a store tells the other nodes on it (a store several server processes
/// share); a store that only one process uses has nobody to tell.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// There may be work: jobs were submitted, released, retried or scheduled.
    Work,
    /// Attempts ended: queues at their concurrency may have room.
    Room,
    /// A job entered `state`.
    Job {
        id: JobId,
        task: TaskName,
        queue: QueueName,
        state: JobState,
        at: Timestamp,
    },
    /// A cancel of a running job: the worker that holds it stops it.
    Cancel { id: JobId, worker: Option<String> },
    /// A queue's settings or pause state changed.
    QueuesChanged,
    /// A schedule was created, changed or resumed.
    SchedulesChanged,
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

    /// Stores a module's bytes under their digest; storing the same bytes again changes
    /// nothing. Every node and worker of the store can read them back.
    async fn put_module(&self, bytes: Vec<u8>) -> StoreResult<ModuleDigest>;
    /// A module's bytes, checked against their digest; `None` if not stored.
    async fn get_module(&self, digest: ModuleDigest) -> StoreResult<Option<Vec<u8>>>;

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
    /// The contexts that live jobs (held, scheduled, queued, running) carry, in order, with
    /// how many live jobs carry each: up to `limit` after `after`.
    async fn live_contexts(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> StoreResult<Vec<(String, u64)>>;
    /// How many jobs completed and how many failed in each minute (ms since the epoch / 60,000)
    /// from `since` on, minutes in order; minutes without either are left out.
    async fn ended_per_minute(&self, since: Timestamp) -> StoreResult<Vec<(i64, u64, u64)>>;
    /// The earliest `run_at` of a scheduled job, to sleep until.
    async fn next_scheduled(&self) -> StoreResult<Option<Timestamp>>;

    /// Creates a schedule, or updates its definition, pause state and next fire; an update
    /// keeps the history stored (last fire and job, counters, last error, creation time), so a
    /// fire committed since the caller read the schedule is not undone.
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
    async fn revoke_token(&self, id: &str, now: Timestamp) -> StoreResult<Revoked>;
    /// The unrevoked token whose secret hashes to `hash`.
    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>>;

    /// Keeps a console session, and forgets the sessions expired by `now`.
    async fn start_session(&self, session: &SessionRecord, now: Timestamp) -> StoreResult<()>;
    /// The session whose secret hashes to `hash`, unless it expired by `now`.
    async fn session(&self, hash: &str, now: Timestamp) -> StoreResult<Option<SessionRecord>>;
    /// Forgets a session (signing out); false if there was none.
    async fn end_session(&self, hash: &str) -> StoreResult<bool>;

    /// What the other nodes on this store signal, as it comes; `None` for a store that only
    /// this process uses.
    fn signals(&self) -> Option<tokio::sync::broadcast::Receiver<Signal>> {
        None
    }
    /// Tells the other nodes on this store; nothing to do for a store only this process uses.
    async fn signal(&self, signals: Vec<Signal>) -> StoreResult<()> {
        let _ = signals;
        Ok(())
    }
    /// Whether this process runs the store's maintenance now (the rescuer, the scheduler's
    /// fires, the retention cleaner): one node at a time, another when it dies. Asked again
    /// before each round. A store only one process uses always says yes.
    async fn lead(&self) -> StoreResult<bool> {
        Ok(true)
    }

    /// Bytes free on the disk that holds the store, where this process can see it (SQLite's
    /// file system; not a database server's).
    fn free_bytes(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn a_full_disk_is_told_from_other_failures_whatever_reports_it() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        assert!(StoreError::database(full).is_disk_full());
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(!StoreError::database(busy).is_disk_full());
        let nospc = std::io::Error::from_raw_os_error(28);
        assert!(StoreError::io("cannot store the module", nospc).is_disk_full());
        let blob = super::BlobError::Io {
            path: "m.wasm".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        assert!(StoreError::io("cannot store the module", blob).is_disk_full());
        let other = std::io::Error::from_raw_os_error(13);
        assert!(!StoreError::io("cannot store the module", other).is_disk_full());
    }
}
