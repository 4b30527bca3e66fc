//! Use-cases: submit jobs, read them, wait for them, cancel, release, retry, delete, clean,
//! explain; tasks and queues are in `catalog.rs`. The HTTP layer and the CLI call this; it calls
//! the store, the blob store and (for admission) the sandbox. No axum and no SQL here.

mod bundle;
mod catalog;
mod events;
mod explain;
mod health;
mod maintenance;
mod schedules;
mod signals;
mod source;
mod submit;
mod tokens;
mod workers;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

pub use events::{DURATION_BUCKETS, JobEvent, Metrics, MetricsSnapshot};
pub use explain::Explanation;
pub use health::StoreHealth;
pub use maintenance::{Maintenance, MaintenanceConfig};
pub use schedules::{ScheduleRequest, ScheduleView};
pub use source::LocalSource;
pub use submit::SubmitRequest;
pub use tokens::{NewToken, SESSION_LIFETIME, hash_secret, new_token};
pub use workers::{WorkerHello, WorkerView};

use crate::domain::{
    AttemptRecord, CancelOutcome, Clock, Job, JobFilter, JobId, JobState, NewJob, QueueConfig,
    QueueName, TaskName, TaskRecord, Timestamp,
};
use crate::sandbox::{AdmissionError, Sandbox};
use crate::store::{Inserted, Signal, Store, StoreError};
use crate::worker::Cancel;

/// Why a use-case could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("task {0:?} is not registered")]
    TaskNotFound(String),
    #[error("job {0} not found")]
    JobNotFound(JobId),
    #[error("job {job} has no attempt {number}")]
    AttemptNotFound { job: JobId, number: u32 },
    #[error("queue {0:?} not found")]
    QueueNotFound(String),
    #[error("task {task:?} has no version {digest}")]
    VersionNotFound { task: String, digest: String },
    #[error("module {0} not found")]
    ModuleNotFound(String),
    #[error("schedule {0:?} not found")]
    ScheduleNotFound(String),
    #[error("token {0:?} not found or already revoked")]
    TokenNotFound(String),
    #[error("module refused: {0}")]
    Refused(#[from] AdmissionError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// Limits over the caps of the queue they would run in.
    #[error("{0}")]
    OverCap(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// A submitted job and whether it was already there (unique key).
#[derive(Debug, Clone)]
pub struct Submitted {
    pub job: Job,
    /// True when a live job with the same unique key was returned instead of a new one.
    pub existing: bool,
}

/// The engine's use-cases. Cheap to clone; one per process.
#[derive(Clone, Debug)]
pub struct Service {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) sandbox: Sandbox,
    pub(crate) clock: Arc<dyn Clock>,
    /// Wakes waiting claims: something was submitted, released or retried, or a queue
    /// changed. Raised through [`Shared::wake_work`], which counts it in `work_seq`.
    pub(crate) work: Notify,
    /// Wakes claims waiting for room in a queue at its concurrency: a running job ended.
    /// Raised through [`Shared::wake_room`], which counts it in `room_seq`.
    pub(crate) room: Notify,
    /// How often `work` and `room` were raised: a claim that came back short remembers them
    /// (its cursor), and the next claim waits only if neither moved since.
    work_seq: AtomicU64,
    room_seq: AtomicU64,
    /// Wakes the scheduler: a schedule was created, changed or resumed.
    pub(crate) schedules: Notify,
    /// Cancels of running jobs, for the worker pools of this process (which keep the
    /// attempts in flight); pools elsewhere learn of them at their next heartbeat.
    pub(crate) cancels: tokio::sync::broadcast::Sender<Cancel>,
    /// The remote workers that called this process.
    workers: workers::Workers,
    /// What the other nodes on the store must hear of; `None` when nobody else is on it.
    outbox: Option<tokio::sync::mpsc::UnboundedSender<crate::store::Signal>>,
    /// Jobs that a write of this process is making `queued` (a submit, a release, a retry)
    /// and that have not been announced `queued` yet. A worker can claim such a job before
    /// the write is acknowledged (a parked claim rides in the submit's own transaction, and
    /// any claim can come between a commit and its fsync); whoever comes first, the write's
    /// caller or the worker, announces it, under this lock, so `queued` goes out once and
    /// before `running` (`Service::announce_queued`).
    pub(crate) unannounced: Mutex<HashSet<JobId>>,
    /// Job state changes, for whoever listens.
    pub(crate) events: tokio::sync::broadcast::Sender<JobEvent>,
    pub(crate) metrics: Metrics,
    /// Bumped when this process changes a queue's settings, so cached settings are read again.
    pub(crate) queues_changed: std::sync::atomic::AtomicU64,
    /// The queues' settings as last read (see `Shared::queue_settings`).
    queue_settings: Mutex<Option<CachedQueues>>,
    /// Whether the store's writes fail for want of space.
    pub(crate) store_writes: health::StoreWrites,
}

/// Jobs marked as not announced `queued` yet ([`Service::expect_queued`]); unmarks what is
/// left of them when dropped.
pub(crate) struct Expected<'a> {
    service: &'a Service,
    ids: Vec<JobId>,
}

impl Drop for Expected<'_> {
    fn drop(&mut self) {
        let mut unannounced = self.service.unannounced();
        if unannounced.is_empty() {
            return;
        }
        for id in &self.ids {
            unannounced.remove(id);
        }
    }
}

/// Every configured queue's settings and whether it is paused.
pub(crate) type QueueSettings = Arc<[(QueueConfig, bool)]>;

struct CachedQueues {
    generation: u64,
    read_at: std::time::Instant,
    queues: QueueSettings,
}

impl Shared {
    /// Wakes waiting claims, here and on the other nodes: there may be work.
    pub(crate) fn wake_work(&self) {
        self.woken_for_work();
        self.tell(Signal::Work);
    }

    /// Wakes claims waiting for room, here and on the other nodes: attempts ended.
    pub(crate) fn wake_room(&self) {
        self.woken_for_room();
        self.tell(Signal::Room);
    }

    /// Wakes this node's waiting claims.
    pub(crate) fn woken_for_work(&self) {
        self.work_seq.fetch_add(1, Ordering::SeqCst);
        self.work.notify_waiters();
    }

    /// Wakes this node's claims waiting for room.
    pub(crate) fn woken_for_room(&self) {
        self.room_seq.fetch_add(1, Ordering::SeqCst);
        self.room.notify_waiters();
    }

    /// Wakes the scheduler, here and on the other nodes: a schedule changed.
    pub(crate) fn schedules_changed(&self) {
        self.schedules.notify_waiters();
        self.tell(Signal::SchedulesChanged);
    }

    /// Tells the other nodes on the store, if there are any.
    pub(crate) fn tell(&self, signal: Signal) {
        if let Some(outbox) = &self.outbox {
            let _ = outbox.send(signal);
        }
    }

    /// How often work and room were signalled so far.
    pub(crate) fn signals(&self) -> (u64, u64) {
        (
            self.work_seq.load(Ordering::SeqCst),
            self.room_seq.load(Ordering::SeqCst),
        )
    }

    /// How long cached queue settings are trusted when this process changed nothing (another
    /// process sharing the store may have).
    const QUEUE_SETTINGS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

    /// Every configured queue's settings, read again when this process changed a queue and
    /// at least every second. Submits read defaults and caps from here, and the dispatcher the
    /// queues to claim from; a claim checks pause and concurrency in the store itself.
    pub(crate) async fn queue_settings(&self) -> crate::store::StoreResult<QueueSettings> {
        use std::sync::atomic::Ordering;
        // Read before the store, so a change committed during the read makes the next call
        // read again.
        let generation = self.queues_changed.load(Ordering::SeqCst);
        if let Some(cached) = self
            .queue_settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|c| {
                c.generation == generation && c.read_at.elapsed() < Self::QUEUE_SETTINGS_MAX_AGE
            })
        {
            return Ok(cached.queues.clone());
        }
        let queues: QueueSettings = self.store.queue_configs().await?.into();
        *self
            .queue_settings
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(CachedQueues {
            generation,
            read_at: std::time::Instant::now(),
            queues: queues.clone(),
        });
        Ok(queues)
    }

    /// `name`'s settings from the cached ones, or the defaults of a queue not configured.
    pub(crate) async fn queue_config(
        &self,
        name: &QueueName,
    ) -> crate::store::StoreResult<QueueConfig> {
        Ok(config_of(&self.queue_settings().await?, name))
    }
}

/// `name`'s settings among `queues`, or the defaults of a queue not configured.
fn config_of(queues: &QueueSettings, name: &QueueName) -> QueueConfig {
    queues
        .iter()
        .map(|(config, _)| config)
        .find(|config| &config.name == name)
        .cloned()
        .unwrap_or_else(|| QueueConfig::with_defaults(name.clone()))
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Service {
    pub fn new(store: Arc<dyn Store>, sandbox: Sandbox, clock: Arc<dyn Clock>) -> Self {
        let shared = Arc::new_cyclic(|weak| Shared {
            outbox: signals::start(&store, weak.clone()),
            store,
            sandbox,
            clock,
            work: Notify::new(),
            room: Notify::new(),
            work_seq: AtomicU64::new(0),
            room_seq: AtomicU64::new(0),
            schedules: Notify::new(),
            cancels: tokio::sync::broadcast::channel(1024).0,
            workers: workers::Workers::default(),
            unannounced: Mutex::default(),
            events: tokio::sync::broadcast::channel(4096).0,
            metrics: Metrics::default(),
            queues_changed: std::sync::atomic::AtomicU64::new(0),
            queue_settings: Mutex::default(),
            store_writes: health::StoreWrites::default(),
        });
        Self { shared }
    }

    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// Wakes idle workers and the scheduler, as a submit does; for when an injected clock
    /// moved, so what became due is seen at once.
    pub fn wake(&self) {
        self.shared.wake_work();
        self.shared.schedules.notify_waiters();
    }

    /// Job state changes from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<JobEvent> {
        self.shared.events.subscribe()
    }

    /// Attempt counters since start.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// Tells listeners that `job` is now in `state`.
    pub(crate) fn publish(&self, job: &Job, state: JobState) {
        self.publish_parts(job.id, job.task.clone(), job.queue.clone(), state);
    }

    /// [`Service::publish`] for a job known by its id, task and queue only.
    pub(crate) fn publish_parts(
        &self,
        id: JobId,
        task: TaskName,
        queue: QueueName,
        state: JobState,
    ) {
        tracing::debug!(job = %id, task = %task, queue = %queue, state = %state, "job {state}");
        let at = self.now();
        if self.shared.outbox.is_some() {
            self.shared.tell(Signal::Job {
                id,
                task: task.clone(),
                queue: queue.clone(),
                state,
                at,
            });
        }
        let event = JobEvent {
            id,
            task,
            queue,
            state,
            at,
        };
        let _ = self.shared.events.send(event);
    }

    /// Turns requests into jobs: the task's digest pinned, defaults filled in, caps checked.
    pub(crate) async fn resolve_all(
        &self,
        requests: Vec<SubmitRequest>,
        now: Timestamp,
    ) -> ServiceResult<Vec<NewJob>> {
        let mut jobs = Vec::with_capacity(requests.len());
        // Each task read once per batch; queue settings from the shared cache, once.
        let mut tasks: HashMap<TaskName, TaskRecord> = HashMap::new();
        let queues = self.shared.queue_settings().await?;
        for request in requests {
            if !tasks.contains_key(&request.task) {
                let t = self.task(&request.task).await?;
                tasks.insert(request.task.clone(), t);
            }
            let task = &tasks[&request.task];
            let queue_name = request
                .queue
                .clone()
                .or_else(|| task.defaults.queue.clone())
                .unwrap_or_else(QueueName::default_queue);
            let queue = config_of(&queues, &queue_name);
            jobs.push(request.resolve(task, &queue, now)?);
        }
        Ok(jobs)
    }

    /// Submits one job. Durable when this returns.
    pub async fn submit(&self, request: SubmitRequest) -> ServiceResult<Submitted> {
        Ok(self.submit_batch(vec![request]).await?.remove(0))
    }

    /// Submits many jobs in one transaction: all are stored, or none.
    pub async fn submit_batch(
        &self,
        requests: Vec<SubmitRequest>,
    ) -> ServiceResult<Vec<Submitted>> {
        let jobs = self.resolve_all(requests, self.now()).await?;
        let accepted: Vec<Job> = jobs.iter().cloned().map(NewJob::into_job).collect();
        let _expected = self.expect_new(&accepted);
        let inserted = self.noted(self.shared.store.insert_jobs(jobs).await)?;
        let mut out = Vec::with_capacity(inserted.len());
        for (i, job) in inserted.into_iter().zip(accepted) {
            match i {
                Inserted::New(_) => {
                    self.announce_new(&job);
                    out.push(Submitted {
                        job,
                        existing: false,
                    });
                }
                Inserted::Existing(id) => out.push(Submitted {
                    job: self.job(id).await?,
                    existing: true,
                }),
            }
        }
        self.shared.wake_work();
        Ok(out)
    }

    /// Marks jobs that a write of this process is about to make `queued` as not announced
    /// yet (see [`Shared::unannounced`]). Called before the write is sent; the marks that
    /// are left when the guard drops (a failed write, a job not stored, a caller gone
    /// mid-write) are taken away then.
    pub(crate) fn expect_queued(&self, ids: impl Iterator<Item = JobId>) -> Expected<'_> {
        let ids: Vec<JobId> = ids.collect();
        self.unannounced().extend(ids.iter().copied());
        Expected { service: self, ids }
    }

    /// [`Service::expect_queued`] for the queued ones of jobs about to be stored.
    pub(crate) fn expect_new(&self, jobs: &[Job]) -> Expected<'_> {
        let queued = jobs.iter().filter(|j| j.state == JobState::Queued);
        self.expect_queued(queued.map(|j| j.id))
    }

    /// Publishes a newly stored job's state: `queued` through [`Service::announce_queued`].
    pub(crate) fn announce_new(&self, job: &Job) {
        if job.state == JobState::Queued {
            self.announce_queued(job);
        } else {
            self.publish(job, job.state);
        }
    }

    /// Publishes `queued` for `job` if it is still marked as not announced, and unmarks it.
    pub(crate) fn announce_queued(&self, job: &Job) {
        let mut unannounced = self.unannounced();
        if !unannounced.is_empty() && unannounced.remove(&job.id) {
            // Under the lock: a worker that claimed the job waits here before its `running`.
            self.publish(job, JobState::Queued);
        }
    }

    fn unannounced(&self) -> std::sync::MutexGuard<'_, HashSet<JobId>> {
        self.shared
            .unannounced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub async fn job(&self, id: JobId) -> ServiceResult<Job> {
        self.shared
            .store
            .get_job(id)
            .await?
            .ok_or(ServiceError::JobNotFound(id))
    }

    pub async fn attempts(&self, id: JobId) -> ServiceResult<Vec<AttemptRecord>> {
        self.job(id).await?;
        Ok(self.shared.store.attempts(id).await?)
    }

    pub async fn jobs(&self, filter: &JobFilter) -> ServiceResult<Vec<Job>> {
        Ok(self.shared.store.list_jobs(filter).await?)
    }

    /// Completed and failed jobs per minute from `since` on (minutes since the epoch).
    pub async fn ended_per_minute(&self, since: Timestamp) -> ServiceResult<Vec<(i64, u64, u64)>> {
        Ok(self.shared.store.ended_per_minute(since).await?)
    }

    /// The contexts live jobs carry, in order, with how many live jobs carry each: a page of
    /// up to `limit` after `after`.
    pub async fn live_contexts(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> ServiceResult<Vec<(String, u64)>> {
        Ok(self.shared.store.live_contexts(after, limit).await?)
    }

    /// Waits until the job is in a terminal state or `timeout` passes; returns it either way.
    /// Listens to job events, so it reads the job again only when something happened to it
    /// (or every 250 ms: another process on the same store may finish it).
    pub async fn wait(&self, id: JobId, timeout: Duration) -> ServiceResult<Job> {
        use tokio::sync::broadcast::error::RecvError;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = self.subscribe();
        loop {
            let job = self.job(id).await?;
            if job.state.is_terminal() || tokio::time::Instant::now() >= deadline {
                return Ok(job);
            }
            let tick = (tokio::time::Instant::now() + Duration::from_millis(250)).min(deadline);
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(e) if e.id == id && e.state.is_terminal() => break,
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => {
                            tokio::time::sleep_until(tick).await;
                            break;
                        }
                    },
                    () = tokio::time::sleep_until(tick) => break,
                }
            }
        }
    }

    /// Cancels a job: a waiting one at once, a running one through its sandbox.
    pub async fn cancel(&self, id: JobId) -> ServiceResult<CancelOutcome> {
        let outcome = self.shared.store.cancel(id, self.now()).await?;
        match outcome {
            CancelOutcome::NotFound => return Err(ServiceError::JobNotFound(id)),
            CancelOutcome::Running => {
                // To the pools and workers attached to this process; others see it at their
                // next heartbeat.
                let worker = self.job(id).await.ok().and_then(|j| j.worker);
                let _ = self.shared.cancels.send(Cancel {
                    id,
                    worker: worker.clone(),
                });
                self.shared.tell(Signal::Cancel { id, worker });
            }
            CancelOutcome::Cancelled => {
                if let Ok(job) = self.job(id).await {
                    self.publish(&job, JobState::Cancelled);
                }
            }
            CancelOutcome::AlreadyEnded(_) => {}
        }
        Ok(outcome)
    }

    /// Cancels every job that matches `filter` and is not over (held, scheduled, queued or
    /// running; the filter's states narrow that). Returns how many were cancelled or are
    /// being interrupted.
    pub async fn cancel_matching(&self, filter: &JobFilter) -> ServiceResult<u64> {
        let live = [
            JobState::Held,
            JobState::Scheduled,
            JobState::Queued,
            JobState::Running,
        ];
        let mut filter = JobFilter {
            states: if filter.states.is_empty() {
                live.to_vec()
            } else {
                filter
                    .states
                    .iter()
                    .copied()
                    .filter(|s| live.contains(s))
                    .collect()
            },
            after: None,
            limit: 500,
            ..filter.clone()
        };
        if filter.states.is_empty() {
            return Ok(0);
        }
        let mut count = 0;
        loop {
            let page = self.jobs(&filter).await?;
            for job in &page {
                match self.cancel(job.id).await {
                    Ok(CancelOutcome::Cancelled | CancelOutcome::Running) => count += 1,
                    Ok(_) | Err(ServiceError::JobNotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            match page.last() {
                Some(last) if page.len() == filter.limit as usize => filter.after = Some(last.id),
                _ => return Ok(count),
            }
        }
    }

    /// Releases a held job into its queue.
    pub async fn release(&self, id: JobId) -> ServiceResult<Job> {
        let before = self.job(id).await?;
        let released = self.shared.store.release(id, self.now());
        if !self.requeue(&before, released).await? {
            let job = self.job(id).await?;
            return Err(ServiceError::Conflict(format!(
                "job {id} is {}, not held",
                job.state
            )));
        }
        self.shared.wake_work();
        self.job(id).await
    }

    /// Requeues a failed or cancelled job with a fresh attempt budget.
    pub async fn retry(&self, id: JobId) -> ServiceResult<Job> {
        let before = self.job(id).await?;
        let retried = self.shared.store.retry(id, self.now());
        if !self.requeue(&before, retried).await? {
            let job = self.job(id).await?;
            return Err(ServiceError::Conflict(format!(
                "job {id} is {}: only failed or cancelled jobs can be retried (and only while no live job holds its unique key)",
                job.state
            )));
        }
        self.shared.wake_work();
        self.job(id).await
    }

    /// Runs `write`, a store write that makes the job `before` queued (release, retry), and
    /// announces it `queued` once, before any `running` of it (see [`Shared::unannounced`]).
    /// False if the write did not apply.
    async fn requeue(
        &self,
        before: &Job,
        write: impl std::future::Future<Output = crate::store::StoreResult<bool>>,
    ) -> ServiceResult<bool> {
        let _expected = self.expect_queued(std::iter::once(before.id));
        let applied = write.await?;
        if applied {
            self.announce_queued(before);
        }
        Ok(applied)
    }

    /// Deletes a job that is not running.
    pub async fn delete(&self, id: JobId) -> ServiceResult<()> {
        if self.shared.store.delete_job(id).await? {
            return Ok(());
        }
        let job = self.job(id).await?;
        Err(ServiceError::Conflict(format!(
            "job {id} is {}; cancel it before deleting it",
            job.state
        )))
    }

    /// Removes terminal jobs: all of them, or those finished longer than `older_than` ago.
    pub async fn clean(&self, older_than: Option<Duration>) -> ServiceResult<u64> {
        let before = older_than.map(|d| self.now().minus(d));
        Ok(self.shared.store.clean(before).await?)
    }

    pub async fn explain(&self, id: JobId) -> ServiceResult<Explanation> {
        let job = self.job(id).await?;
        let position = if job.state == JobState::Queued {
            self.shared.store.position(id).await?
        } else {
            None
        };
        let settings = self.shared.queue_settings().await?;
        let circumstances = explain::Circumstances {
            queue_paused: settings
                .iter()
                .any(|(config, paused)| config.name == job.queue && *paused),
            task_registered: self.shared.store.get_task(&job.task).await?.is_some(),
            // On a store other nodes share, their threads may serve the queue: unknown here.
            served: self
                .shared
                .outbox
                .is_none()
                .then(|| self.serves(&job.queue))
                .flatten(),
        };
        Ok(Explanation::of(
            &job,
            position.as_ref(),
            &circumstances,
            self.now(),
        ))
    }

    fn queues_changed(&self) {
        self.shared.queues_changed.fetch_add(1, Ordering::SeqCst);
        self.shared.tell(Signal::QueuesChanged);
        self.shared.wake_work();
    }
}
