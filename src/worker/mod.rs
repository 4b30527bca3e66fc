//! The worker pool: threads reserved for guests (never the threads serving requests), fed by
//! a dispatcher that claims jobs from the store, and a reporter that turns each attempt's
//! report into the job's next state through the retry policy. Also here: lease heartbeats,
//! progress writes, the rescuer that requeues jobs whose lease expired, and graceful shutdown.
//!
//! ```text
//! dispatcher (async) --claim--> store          guest threads (sync, one attempt at a time)
//!      | Claimed + slot permit ----------------> sandbox.run_blocking
//!      |                                             | AttemptReport (+ reporting permit;
//! reporter (async) <---------------------------------+  the slot permit is released here)
//!      | RetryPolicy::decide -> store.finish (guarded by the lease) -> job event
//! ```
//!
//! A slot permit is held from the claim until the attempt ends, not until its result is
//! written: the next claim does not wait for the previous finish to commit, so a few slots
//! per guest thread keep the threads busy. Results being written hold a reporting permit, and
//! shutdown waits for those too.

mod attempt;
mod rescue;
mod scheduler;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::domain::{Finish, Lease};
use crate::domain::{JobId, Limits, QueueName};
use crate::sandbox::CancelToken;
use crate::service::{InFlight, Service};
use crate::store::{AttemptEnd, Claimed, Claims, ParkedAnswer, StandingClaim};

pub use rescue::rescue_expired;

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Threads that run guests; at most this many attempts run at once in this process.
    pub threads: usize,
    /// At most this many jobs per guest thread are claimed and not yet ended (running or
    /// waiting for the thread), so one claim serves several short attempts. How many are
    /// actually claimed ahead follows the attempts' mean duration (see [`Pace`]): short ones
    /// are batched, long ones are claimed about one at a time, so a later high-priority job
    /// does not wait behind a node's backlog. Queue concurrency still bounds what is claimed;
    /// claimed jobs count as running.
    pub prefetch: usize,
    /// A claimed job's lease; heartbeats extend it every third of it.
    pub lease_ttl: Duration,
    /// Delay before a job whose lease expired runs again (the seed's 5 s).
    pub requeue_delay: Duration,
    /// How often the rescuer looks for expired leases.
    pub rescue_interval: Duration,
    /// How long shutdown lets running attempts finish before interrupting them.
    pub shutdown_grace: Duration,
    /// This worker's name in leases, receipts and `explain`.
    pub worker_id: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            threads: thread::available_parallelism().map_or(2, |n| n.get()),
            prefetch: 512,
            lease_ttl: Duration::from_secs(30),
            requeue_delay: Duration::from_secs(5),
            rescue_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            worker_id: format!("local-{}", std::process::id()),
        }
    }
}

/// Work handed to a guest thread.
pub(crate) struct Assignment {
    pub(crate) claimed: Claimed,
    pub(crate) caps: Limits,
    /// Released by the guest thread when the attempt ends.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    pub(crate) interrupted: Arc<AtomicBool>,
    pub(crate) cancel: CancelToken,
}

/// A running pool. Dropping it without [`WorkerPool::shutdown`] stops claiming but leaves
/// attempts to be rescued after their leases expire.
#[derive(Debug)]
pub struct WorkerPool {
    service: Service,
    config: WorkerConfig,
    stopping: Arc<AtomicBool>,
    stop_notify: Arc<tokio::sync::Notify>,
    tasks: Vec<JoinHandle<()>>,
    threads: Vec<thread::JoinHandle<()>>,
    slots: Arc<Semaphore>,
    reporting: Arc<Semaphore>,
}

/// How the dispatcher paces claims: it keeps about `WINDOW` of work per guest thread claimed
/// ahead, by the mean time a guest thread spent on each recent job (the attempt, and the
/// module lookup and hand-over around it).
#[derive(Debug)]
pub(crate) struct Pace {
    mean_us: std::sync::atomic::AtomicU64,
    /// A slot was given back (an attempt ended).
    pub(crate) freed: tokio::sync::Notify,
}

impl Pace {
    /// The work kept claimed ahead per thread, in µs: long enough that the guest threads do
    /// not run dry while a claim waits for the writer (a claim and a finish share its
    /// transactions: a few ms under load), short enough that a later high-priority job
    /// waits behind at most this much claimed work per thread.
    const WINDOW_US: u64 = 8_000;
    /// Claimed per thread at the least: the running attempt and the next one.
    const MIN_PER_THREAD: usize = 2;

    fn new() -> Self {
        Self {
            // Until attempts are seen, assume they are not short.
            mean_us: std::sync::atomic::AtomicU64::new(10_000),
            freed: tokio::sync::Notify::new(),
        }
    }

    /// Folds one job's time on its guest thread into the mean (weight 1/8).
    pub(crate) fn record(&self, thread_us: u64) {
        let old = self.mean_us.load(Ordering::Relaxed);
        let new = old - old / 8 + thread_us / 8;
        self.mean_us.store(new, Ordering::Relaxed);
    }

    /// Jobs to have claimed and not ended, over all `threads`.
    fn target(&self, threads: usize, prefetch: usize) -> usize {
        let cost = self.mean_us.load(Ordering::Relaxed).max(1);
        let per_thread = (Self::WINDOW_US / cost) as usize;
        threads * per_thread.clamp(Self::MIN_PER_THREAD.min(prefetch), prefetch)
    }
}

/// Attempt results being written at most (far more than a pool produces between commits).
const REPORTING_MAX: usize = 1 << 16;

impl WorkerPool {
    /// Starts the guest threads, the dispatcher, the reporter, heartbeats and the rescuer on
    /// the current tokio runtime.
    pub fn start(service: Service, config: WorkerConfig) -> Self {
        let threads = config.threads.max(1);
        let slots = Arc::new(Semaphore::new(threads * config.prefetch.max(1)));
        let reporting = Arc::new(Semaphore::new(REPORTING_MAX));
        let pace = Arc::new(Pace::new());
        let stopping = Arc::new(AtomicBool::new(false));
        let stop_notify = Arc::new(tokio::sync::Notify::new());
        let (assign_tx, assign_rx) = mpsc::channel::<Assignment>();
        let assign_rx = Arc::new(Mutex::new(assign_rx));
        let (report_tx, report_rx) = tokio::sync::mpsc::unbounded_channel();
        let (progress_tx, progress_rx) = tokio::sync::mpsc::unbounded_channel();
        let runtime = tokio::runtime::Handle::current();

        let mut guest_threads = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx = assign_rx.clone();
            let (service, report_tx, progress_tx, reporting, pace) = (
                service.clone(),
                report_tx.clone(),
                progress_tx.clone(),
                reporting.clone(),
                pace.clone(),
            );
            let handle = thread::Builder::new()
                .name(format!("remotask-guest-{i}"))
                .spawn(move || {
                    attempt::guest_thread(service, rx, report_tx, progress_tx, reporting, &pace)
                })
                .expect("spawning a guest thread");
            guest_threads.push(handle);
        }
        drop(report_tx);
        drop(progress_tx);

        let tasks = vec![
            runtime.spawn(dispatcher(
                service.clone(),
                config.clone(),
                pace,
                slots.clone(),
                assign_tx,
                stopping.clone(),
                stop_notify.clone(),
            )),
            runtime.spawn(attempt::reporter(service.clone(), report_rx)),
            runtime.spawn(attempt::progress_writer(service.clone(), progress_rx)),
            runtime.spawn(heartbeats(
                service.clone(),
                config.clone(),
                stopping.clone(),
            )),
            runtime.spawn(rescue::rescuer(
                service.clone(),
                config.clone(),
                stopping.clone(),
            )),
            runtime.spawn(scheduler::scheduler(service.clone(), stopping.clone())),
        ];
        Self {
            service,
            config,
            stopping,
            stop_notify,
            tasks,
            threads: guest_threads,
            slots,
            reporting,
        }
    }

    /// Stops claiming, lets running attempts finish within the grace period, interrupts the
    /// rest and requeues them without spending an attempt, then stops every thread.
    pub async fn shutdown(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop_notify.notify_waiters();
        let threads = (self.config.threads.max(1) * self.config.prefetch.max(1)) as u32;
        let all = self.slots.clone().acquire_many_owned(threads);
        let all = match tokio::time::timeout(self.config.shutdown_grace, all).await {
            Ok(permits) => permits.ok(),
            Err(_) => {
                for flight in self.service.shared_running().values() {
                    flight.interrupted.store(true, Ordering::SeqCst);
                    flight.cancel.cancel();
                }
                self.slots.clone().acquire_many_owned(threads).await.ok()
            }
        };
        drop(all);
        // Every attempt has ended; wait until their results are written.
        let written = self
            .reporting
            .clone()
            .acquire_many_owned(REPORTING_MAX as u32);
        let _ = tokio::time::timeout(self.config.shutdown_grace, written).await;
        for task in self.tasks.drain(..) {
            task.abort();
        }
        for t in self.threads.drain(..) {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Service {
    /// A snapshot of the attempts in flight (cancel tokens and leases).
    pub(crate) fn shared_running(&self) -> HashMap<JobId, InFlightView> {
        self.shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, f)| {
                (
                    *id,
                    InFlightView {
                        cancel: f.cancel.clone(),
                        lease: f.lease,
                        interrupted: f.interrupted.clone(),
                    },
                )
            })
            .collect()
    }
}

/// A copy of an [`InFlight`] entry.
pub(crate) struct InFlightView {
    pub(crate) cancel: CancelToken,
    pub(crate) lease: Lease,
    pub(crate) interrupted: Arc<AtomicBool>,
}

/// Claims jobs whenever a guest thread is free and hands them out. Waits on the work signal
/// (submit, release, retry, a finished attempt) with no polling delay, and otherwise wakes for
/// the next scheduled job or once a second.
async fn dispatcher(
    service: Service,
    config: WorkerConfig,
    pace: Arc<Pace>,
    slots: Arc<Semaphore>,
    assign: mpsc::Sender<Assignment>,
    stopping: Arc<AtomicBool>,
    stop_notify: Arc<tokio::sync::Notify>,
) {
    let shared = service.shared.clone();
    let mut next_queue = 0usize;
    let lease_ms = config.lease_ttl.as_millis() as i64;
    let (threads, prefetch) = (config.threads.max(1), config.prefetch.max(1));
    loop {
        let acquired = tokio::select! {
            p = slots.clone().acquire_owned() => p,
            () = stop_notify.notified() => return,
        };
        let Ok(first) = acquired else { return };
        // Enabled before the flag is read, so a stop that comes later is not missed.
        let stop = stop_notify.notified();
        tokio::pin!(stop);
        stop.as_mut().enable();
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let work = shared.work.notified();
        tokio::pin!(work);
        work.as_mut().enable();
        let room = shared.room.notified();
        tokio::pin!(room);
        room.as_mut().enable();
        // Slots taken, `first` included.
        let in_flight = threads * prefetch - slots.available_permits();
        let target = pace.target(threads, prefetch);
        if in_flight > target {
            drop(first);
            let freed = pace.freed.notified();
            tokio::select! {
                () = freed => {}
                () = &mut work => {}
                () = &mut stop => return,
            }
            continue;
        }

        let mut permit = Some(first);
        let active: Vec<_> = match shared.queue_settings().await {
            Ok(queues) => queues
                .iter()
                .filter(|(_, paused)| !paused)
                .map(|(config, _)| config.clone())
                .collect(),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Some queue gave all that was asked of it, so it may have more.
        let mut filled = false;
        // Queues that had more room asked of them than their concurrency left.
        let mut full: Vec<&QueueName> = Vec::new();
        // Jobs to claim now: up to the target, `first`'s slot included. A slot is held for
        // each before claiming: a job is running in the store from the claim's commit, and
        // shutdown counts running attempts by their slots.
        let wanted = (target + 1).saturating_sub(in_flight);
        let extra = wanted.saturating_sub(1).min(slots.available_permits());
        if extra > 0
            && let Ok(more) = slots.clone().try_acquire_many_owned(extra as u32)
            && let Some(p) = permit.as_mut()
        {
            p.merge(more);
        }
        let mut budget = permit.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        for k in 0..active.len() {
            let queue = &active[(next_queue + k) % active.len()];
            if budget == 0 {
                break;
            }
            let want = budget as u32;
            let claims = match shared
                .store
                .claim(
                    &queue.name,
                    &config.worker_id,
                    want,
                    lease_ms,
                    shared.clock.now(),
                )
                .await
            {
                Ok(c) => c,
                Err(_) => continue,
            };
            filled |= claims.jobs.len() == want as usize;
            if claims.at_concurrency {
                full.push(&queue.name);
            }
            budget = budget.saturating_sub(claims.jobs.len());
            let gave = !claims.jobs.is_empty();
            if !hand_out(&service, &slots, &assign, claims, queue.caps, &mut permit).await {
                return;
            }
            if gave {
                next_queue = (next_queue + k + 1) % active.len().max(1);
                break;
            }
        }
        drop(permit);
        if filled {
            continue;
        }
        // Every queue tried is empty or at its concurrency: wait for work (a submit, a
        // release, a retry), or for room if a queue was at its concurrency, instead of asking
        // again at once. Meanwhile a claim for the room left waits in the store and runs in
        // the transaction of the next submit to a queue with room: that job is running when
        // its submit commits.
        let now = shared.clock.now();
        let until_next = match shared.store.next_scheduled().await {
            Ok(Some(t)) => now.until(t).min(Duration::from_secs(1)),
            _ => Duration::from_secs(1),
        };
        let open: Vec<QueueName> = active
            .iter()
            .filter(|q| !full.contains(&&q.name))
            .map(|q| q.name.clone())
            .collect();
        // The parked claim holds a slot for each job it may take, as claimed jobs do: a job
        // is running in the store from the submit's commit, and shutdown waits for the slots.
        let room_left = budget.min(slots.available_permits());
        let mut held = match (room_left, open.is_empty()) {
            (0, _) | (_, true) => None,
            (n, false) => slots.clone().try_acquire_many_owned(n as u32).ok(),
        };
        let mut parked = held.as_ref().and_then(|held| {
            shared.store.park_claim(StandingClaim {
                queues: open,
                worker: config.worker_id.clone(),
                max: held.num_permits() as u32,
                lease_ttl_ms: lease_ms,
                clock: shared.clock.clone(),
            })
        });
        let answered = tokio::select! {
            // A claim that ran is handed out even if the pool is stopping: its jobs are
            // running in the store, and like every running attempt they get the grace.
            biased;
            answer = async {
                match parked.as_mut() {
                    Some((_, answer)) => answer.await,
                    None => std::future::pending().await,
                }
            } => Some(answer),
            () = &mut stop => {
                take_back(&service, parked).await;
                return;
            }
            () = &mut work => None,
            () = &mut room, if !full.is_empty() => None,
            () = tokio::time::sleep(until_next.max(Duration::from_millis(1))) => None,
        };
        let answer = match (answered, parked) {
            (Some(answer), _) => answer,
            (None, None) => continue,
            (None, Some((ticket, answer))) => {
                if shared.store.unpark_claim(ticket) {
                    continue;
                }
                // It ran with a submit meanwhile: its jobs are ours.
                answer.await
            }
        };
        let Ok(taken) = answer else { continue };
        for (name, claims) in taken {
            let caps = active
                .iter()
                .find(|q| q.name == name)
                .map_or_else(Limits::default, |q| q.caps);
            if !hand_out(&service, &slots, &assign, claims, caps, &mut held).await {
                return;
            }
        }
    }
}

/// Hands claimed jobs to the guest threads, each with a slot: one of those `held` first, then
/// new ones. False if the guest threads are gone.
async fn hand_out(
    service: &Service,
    slots: &Arc<Semaphore>,
    assign: &mpsc::Sender<Assignment>,
    claims: Claims,
    caps: Limits,
    held: &mut Option<OwnedSemaphorePermit>,
) -> bool {
    // Due delayed jobs and retries went `scheduled` -> `queued` in the claim; some may be
    // among the jobs it took, whose `running` follows.
    for p in claims.promoted {
        service.publish_parts(p.id, p.task, p.queue, crate::domain::JobState::Queued);
    }
    for c in claims.jobs {
        let one = match held {
            Some(h) if h.num_permits() > 1 => h.split(1),
            _ => held.take(),
        };
        let p = match one {
            Some(p) => p,
            None => match slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => slots.clone().acquire_owned().await.expect("semaphore open"),
            },
        };
        // A job can be claimed before the write that queued it is acknowledged (a claim rides
        // in a submit's transaction, or comes between its commit and its fsync): its `queued`
        // goes out first, once.
        service.announce_queued(&c.job);
        service.publish(&c.job, crate::domain::JobState::Running);
        let (cancel, interrupted) = register_attempt(service, &c);
        let assignment = Assignment {
            claimed: c,
            caps,
            permit: Some(p),
            interrupted,
            cancel,
        };
        if assign.send(assignment).is_err() {
            return false;
        }
    }
    true
}

/// At shutdown, takes back a parked claim; if it already ran with a submit, its jobs go back
/// to `queued` without spending an attempt, as interrupted attempts do.
async fn take_back(service: &Service, parked: Option<(u64, ParkedAnswer)>) {
    let Some((ticket, answer)) = parked else {
        return;
    };
    let store = &service.shared.store;
    if store.unpark_claim(ticket) {
        return;
    }
    let Ok(taken) = answer.await else { return };
    let ends: Vec<AttemptEnd> = taken
        .into_iter()
        .flat_map(|(_, claims)| claims.jobs)
        .map(|c| AttemptEnd {
            id: c.job.id,
            queue: c.job.queue,
            lease: c.lease,
            attempt: None,
            finish: Finish::Interrupted,
        })
        .collect();
    if !ends.is_empty() {
        let now = service.shared.clock.now();
        // If this fails, the leases expire and the rescuer requeues the jobs.
        let _ = store.finish_many(ends, now).await;
    }
}

/// Registers a claimed job's attempt as in flight (its cancel token and lease), applying a
/// cancel that came between the claim's commit and now. Returns the attempt's cancel token and
/// its shutdown flag.
fn register_attempt(service: &Service, c: &Claimed) -> (CancelToken, Arc<AtomicBool>) {
    let shared = &service.shared;
    let cancel = CancelToken::new();
    let interrupted = Arc::new(AtomicBool::new(false));
    let mut running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
    running.insert(
        c.job.id,
        InFlight {
            cancel: cancel.clone(),
            lease: c.lease,
            interrupted: interrupted.clone(),
        },
    );
    // Taken under the `running` lock, which `Service::cancel` holds while it decides between
    // cancelling a registered attempt and keeping the cancel here.
    let mut ahead = shared
        .cancels_ahead
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if !ahead.is_empty() && ahead.remove(&c.job.id).is_some() {
        cancel.cancel();
    }
    (cancel, interrupted)
}

/// Extends the leases of attempts in flight every third of the lease TTL, and passes on
/// cancels asked for through the store (by another process).
async fn heartbeats(service: Service, config: WorkerConfig, stopping: Arc<AtomicBool>) {
    let period = (config.lease_ttl / 3).max(Duration::from_millis(50));
    let shared = service.shared.clone();
    while !stopping.load(Ordering::SeqCst) {
        tokio::time::sleep(period).await;
        for (id, flight) in service.shared_running() {
            let expires = shared.clock.now().plus(config.lease_ttl);
            match shared.store.heartbeat(id, &flight.lease, expires).await {
                Ok(true) => {
                    if let Some(entry) = shared
                        .running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(&id)
                    {
                        entry.lease.expires_at = expires;
                    }
                    if shared.store.cancel_requested(id).await.unwrap_or(false) {
                        flight.cancel.cancel();
                    }
                }
                // The lease is gone (rescued elsewhere): stop the attempt, its report is stale.
                Ok(false) => flight.cancel.cancel(),
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod register_tests {
    use std::sync::Arc;

    use super::register_attempt;
    use crate::domain::CancelOutcome;
    use crate::domain::{
        JobId, Limits, ModuleDigest, NewJob, QueueName, RetryPolicy, Start, SystemClock, Timestamp,
    };
    use crate::sandbox::{Sandbox, SandboxConfig};
    use crate::service::Service;
    use crate::store::{BlobStore, Claimed, SqliteStore, Store};

    fn job() -> NewJob {
        NewJob {
            id: JobId::generate(),
            task: "echo".parse().unwrap(),
            digest: ModuleDigest::of(b"echo"),
            queue: QueueName::default_queue(),
            input: Vec::new(),
            args: vec![],
            env: vec![],
            priority: 0,
            start: Start::Now,
            unique_key: None,
            context: None,
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            submitter: None,
            created_at: Timestamp(0),
        }
    }

    /// Two jobs claimed, as the dispatcher has them before it registers their attempts.
    async fn claimed_pair(dir: &std::path::Path) -> (Service, Vec<Claimed>) {
        let store = SqliteStore::open(dir.join("remotask.db")).expect("store");
        store.insert_jobs(vec![job(), job()]).await.expect("insert");
        let claimed = store
            .claim(
                &QueueName::default_queue(),
                "w",
                2,
                30_000,
                Timestamp::now(),
            )
            .await
            .expect("claim")
            .jobs;
        assert_eq!(claimed.len(), 2);
        let blobs = BlobStore::open(dir.join("modules")).expect("blobs");
        let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
        let service = Service::new(Arc::new(store), blobs, sandbox, Arc::new(SystemClock));
        (service, claimed)
    }

    /// No cancel is kept for an attempt not registered yet.
    fn nothing_kept(service: &Service) -> bool {
        service
            .shared
            .cancels_ahead
            .lock()
            .expect("lock")
            .is_empty()
    }

    #[tokio::test]
    async fn a_cancel_between_the_claim_and_the_registration_stops_the_attempt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, claimed) = claimed_pair(dir.path()).await;
        let (cancelled, other) = (&claimed[0], &claimed[1]);
        assert_eq!(
            service.cancel(cancelled.job.id).await.expect("cancel"),
            CancelOutcome::Running
        );
        let (token, interrupted) = register_attempt(&service, cancelled);
        assert!(token.is_cancelled(), "the cancel kept for it is applied");
        assert!(!interrupted.load(std::sync::atomic::Ordering::SeqCst));
        let (token, _) = register_attempt(&service, other);
        assert!(
            !token.is_cancelled(),
            "another job's attempt is not cancelled"
        );
        assert!(nothing_kept(&service), "the kept cancel is used once");
    }

    #[tokio::test]
    async fn a_cancel_after_the_registration_reaches_the_attempt_directly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, claimed) = claimed_pair(dir.path()).await;
        let (token, _) = register_attempt(&service, &claimed[0]);
        assert!(!token.is_cancelled());
        assert_eq!(
            service.cancel(claimed[0].job.id).await.expect("cancel"),
            CancelOutcome::Running
        );
        assert!(token.is_cancelled());
        assert!(nothing_kept(&service));
    }
}

#[cfg(test)]
mod pace_tests {
    use super::Pace;

    #[test]
    fn short_attempts_are_claimed_in_batches_and_long_ones_about_one_at_a_time() {
        let pace = Pace::new();
        // Before any attempt: cautious.
        assert_eq!(pace.target(2, 32), 4);
        for _ in 0..100 {
            pace.record(30);
        }
        // ~30 µs per job on its thread: 8 ms of work is ~266 per thread.
        assert!(
            (500..=540).contains(&pace.target(2, 512)),
            "{}",
            pace.target(2, 512)
        );
        assert_eq!(pace.target(2, 8), 16, "never above the prefetch cap");
        for _ in 0..100 {
            pace.record(2_000_000);
        }
        assert_eq!(
            pace.target(2, 32),
            4,
            "a running attempt and the next one per thread"
        );
        assert_eq!(pace.target(3, 1), 3, "a cap of one is kept");
    }
}
