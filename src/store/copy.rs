//! Moving an installation from one store to another (`remotask store copy`): the SQLite
//! store reads everything in one read transaction and hands it over in batches; the
//! PostgreSQL store writes them all in one transaction, so a copy that fails leaves the
//! target as it was.
//!
//! Records are copied as they are stored, not replayed through the state machine: a job keeps
//! its id, state, attempts, output, lease and times, a token its hash and revocation, a
//! schedule its history. A job that was running keeps its lease, so when a node runs on the
//! target its rescuer ends that attempt as `lease_lost` once the lease expires, as it would
//! have on the source.

use std::collections::BTreeMap;
use std::fmt;

use crate::domain::{
    AttemptRecord, Job, JobState, Lease, ModuleDigest, QueueConfig, ScheduleRecord, TaskRecord,
    TokenRecord,
};

use super::{PgStore, SqliteStore, StoreResult};

/// Jobs per batch handed from the source to the target.
pub const BATCH: u32 = 500;

/// Everything but the jobs: the first batch of a copy.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub tasks: Vec<TaskRecord>,
    /// `(queue settings, paused)`.
    pub queues: Vec<(QueueConfig, bool)>,
    pub schedules: Vec<ScheduleRecord>,
    pub tokens: Vec<TokenRecord>,
}

/// A job as stored, with what `Job` does not carry.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCopy {
    pub job: Job,
    /// The lease of a running job.
    pub lease: Option<Lease>,
    pub cancel_requested: bool,
    /// Oldest first.
    pub attempts: Vec<AttemptRecord>,
}

/// One batch of a copy, in the order a source sends them: the catalog, then modules and jobs
/// (every module a job names comes before that job), then `Done`. A target commits only
/// after `Done`: a source that stops before it, or sends an error, leaves the target as it
/// was.
#[derive(Debug, Clone)]
pub enum Batch {
    Catalog(Catalog),
    /// Module bytes by digest; `None` for a digest the source does not have.
    Modules(Vec<(ModuleDigest, Option<Vec<u8>>)>),
    Jobs(Vec<JobCopy>),
    Done,
}

/// Where a source sends its batches.
pub type Batches = tokio::sync::mpsc::Sender<StoreResult<Batch>>;

/// What a copy wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    pub tasks: u64,
    pub task_versions: u64,
    pub modules: u64,
    pub module_bytes: u64,
    pub queues: u64,
    pub schedules: u64,
    pub tokens: u64,
    pub jobs: BTreeMap<JobState, u64>,
    pub attempts: u64,
    /// Digests that jobs or task versions name but whose module the source does not have.
    pub missing_modules: Vec<ModuleDigest>,
}

impl CopyReport {
    pub fn job_total(&self) -> u64 {
        self.jobs.values().sum()
    }
}

impl fmt::Display for CopyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "tasks      {} ({} versions)",
            self.tasks, self.task_versions
        )?;
        writeln!(
            f,
            "modules    {} ({} bytes)",
            self.modules, self.module_bytes
        )?;
        writeln!(f, "queues     {}", self.queues)?;
        writeln!(f, "schedules  {}", self.schedules)?;
        writeln!(f, "tokens     {}", self.tokens)?;
        let states: Vec<String> = self
            .jobs
            .iter()
            .map(|(state, n)| format!("{n} {state}"))
            .collect();
        if states.is_empty() {
            writeln!(f, "jobs       0")?;
        } else {
            writeln!(f, "jobs       {} ({})", self.job_total(), states.join(", "))?;
        }
        write!(f, "attempts   {}", self.attempts)?;
        for digest in &self.missing_modules {
            write!(
                f,
                "\nmissing    module {digest}: the source does not have it"
            )?;
        }
        Ok(())
    }
}

/// Copies everything in `from` to `to`. `to` must be empty unless `replace`, which deletes
/// what it holds first, in the same transaction.
pub async fn copy(from: &SqliteStore, to: &PgStore, replace: bool) -> StoreResult<CopyReport> {
    let (batches, received) = tokio::sync::mpsc::channel(2);
    let source = from.clone();
    let reading = tokio::task::spawn_blocking(move || source.export(&batches));
    let written = to.import(replace, received).await;
    // The reader stops when the writer drops its end; its own failure comes first, as the
    // writer then only saw the batches end early.
    let read = reading
        .await
        .map_err(|e| super::StoreError::io("the reading thread failed", e))?;
    read?;
    written
}
