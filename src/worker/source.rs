//! The worker's seam: where its jobs come from and where their results go. The pool, the
//! guest threads, the reporter, heartbeats and cancellation run against [`Source`] and
//! nothing else; a source decides what a worker runs and what an ended attempt means for
//! its job. The in-process source sits on the store (`service::LocalSource`); a source over
//! HTTP lets the same pool run on another machine.
//!
//! A worker reports what happened (an [`AttemptReport`] per attempt); it never decides a
//! job's next state.

use std::time::Duration;

use crate::domain::{JobId, Lease, Limits, ModuleDigest, QueueName, TaskName, Timestamp};
use crate::sandbox::AttemptReport;

/// Where a worker's jobs come from and where their results go.
#[async_trait::async_trait]
pub trait Source: Send + Sync + 'static {
    /// Up to `ask.max` jobs to run, each under a lease. With none to give, waits for some
    /// up to `ask.wait`; returns early (with what it has, possibly nothing) when `stop` is
    /// raised. Jobs it returns are the caller's: it runs them or gives them back
    /// ([`Outcome::Interrupted`]).
    async fn claim(&self, ask: ClaimAsk, stop: &Stop) -> SourceResult<Granted>;

    /// Extends the leases of attempts in flight by `ttl`; says for each what became of it,
    /// in order.
    async fn heartbeat(
        &self,
        leases: Vec<(JobId, Lease)>,
        ttl: Duration,
    ) -> SourceResult<Vec<LeaseState>>;

    /// The newest progress of running attempts.
    async fn progress(&self, updates: Vec<Progress>) -> SourceResult<()>;

    /// Ended attempts, in one call: says for each whether it was applied (false: its lease
    /// was stale, and the job's newer state stands).
    async fn report(&self, ended: Vec<Ended>) -> SourceResult<Vec<bool>>;

    /// A module's bytes by digest (the worker's sandbox verifies them against the digest).
    async fn module(&self, digest: ModuleDigest) -> SourceResult<Vec<u8>>;

    /// Cancels of running jobs as they are asked for, if this source can push them; other
    /// sources pass cancels in heartbeat answers only.
    fn cancels(&self) -> Option<tokio::sync::broadcast::Receiver<Cancel>>;
}

/// Why a source could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("module {0} not found")]
    ModuleNotFound(ModuleDigest),
    /// The source failed (its store, its server); the worker retries later.
    #[error("the job source failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type SourceResult<T> = Result<T, SourceError>;

/// What a worker asks for.
#[derive(Debug, Clone)]
pub struct ClaimAsk {
    /// The worker's name, kept in leases, attempt records and `explain`.
    pub worker: String,
    /// Only jobs of these queues; every queue if empty.
    pub queues: Vec<QueueName>,
    pub max: u32,
    /// The lease each job is claimed under; heartbeats extend it.
    pub lease_ttl: Duration,
    /// How long to wait for jobs when there are none.
    pub wait: Duration,
    /// Where the previous answer left off: when nothing happened since (no submit, release
    /// or retry, no room in a queue that was full), the source waits before claiming again.
    pub after: Option<Cursor>,
}

/// A source's answer to a claim.
#[derive(Debug, Default)]
pub struct Granted {
    pub work: Vec<Work>,
    /// Set when the source had no more to give: pass it as [`ClaimAsk::after`] next time.
    /// `None` when it gave all that was asked and may have more.
    pub cursor: Option<Cursor>,
}

/// Where a source's answer left off, opaque to the worker: counts of the source's work and
/// room signals when it claimed, and the queues that were at their concurrency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub work: u64,
    pub room: u64,
    pub full: Vec<QueueName>,
}

/// A job handed to a worker: everything one attempt needs, and its lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    pub id: JobId,
    pub task: TaskName,
    pub digest: ModuleDigest,
    pub queue: QueueName,
    pub input: Vec<u8>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub lease: Lease,
}

/// What became of an attempt's lease at a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Extended to this time.
    Held { expires_at: Timestamp },
    /// Extended, and a cancel was asked for: the attempt stops and ends `cancelled`.
    Cancelled { expires_at: Timestamp },
    /// No longer this worker's (it expired and the job was rescued, or it ended): the
    /// attempt stops; its report will be refused.
    Lost,
}

/// A running attempt's progress, as its guest reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub id: JobId,
    pub lease: Lease,
    pub done: i64,
    pub total: i64,
}

/// One ended attempt, as the worker saw it.
#[derive(Debug, Clone)]
pub struct Ended {
    pub id: JobId,
    pub lease: Lease,
    pub outcome: Outcome,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Stopped by the worker's shutdown, or never started: not an attempt; the job goes back
    /// to its queue without spending one.
    Interrupted,
    /// The sandbox's report, and when the attempt started and ended.
    Ran {
        report: Box<AttemptReport>,
        started_at: Timestamp,
        finished_at: Timestamp,
    },
}

/// A cancel of a running job, pushed to the workers that may hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancel {
    pub id: JobId,
    /// The worker that holds the job, if known: other workers ignore it.
    pub worker: Option<String>,
}

/// Raised once, when the worker stops: a source waiting in [`Source::claim`] returns.
#[derive(Debug, Clone)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

/// The side of a [`Stop`] that raises it.
#[derive(Debug)]
pub struct StopHandle(tokio::sync::watch::Sender<bool>);

impl Stop {
    /// A stop signal and its handle.
    pub fn new() -> (StopHandle, Stop) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (StopHandle(tx), Stop(rx))
    }

    pub fn is_raised(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the stop is raised (or its handle is gone).
    pub async fn raised(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|raised| *raised).await;
    }
}

impl StopHandle {
    pub fn raise(&self) {
        self.0.send_replace(true);
    }
}
