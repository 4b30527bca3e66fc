//! The worker pool: threads reserved for guests (never the threads serving requests), fed by
//! a dispatcher that claims jobs from the store, and a reporter that turns each attempt's
//! report into the job's next state through the retry policy. Also here: lease heartbeats,
//! progress writes, the rescuer that requeues jobs whose lease expired, and graceful shutdown.
//!
//! ```text
//! dispatcher (async) --claim--> store          guest threads (sync, one attempt at a time)
//!      | Claimed + slot permit ----------------> sandbox.run_blocking
//!      |                                             | AttemptReport
//! reporter (async) <---------------------------------+
//!      | RetryPolicy::decide -> store.finish (guarded by the lease) -> notify waiters
//! ```

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

use crate::domain::{JobId, Limits};
use crate::sandbox::CancelToken;
use crate::service::{InFlight, Service};
use crate::store::{Claimed, Lease};

pub use rescue::rescue_expired;

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Threads that run guests; at most this many attempts run at once in this process.
    pub threads: usize,
    /// Jobs claimed ahead per guest thread, so a claim serves several attempts (queue
    /// concurrency still bounds what is claimed; claimed jobs count as running).
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
            prefetch: 4,
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
    pub(crate) permit: OwnedSemaphorePermit,
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
}

impl WorkerPool {
    /// Starts the guest threads, the dispatcher, the reporter, heartbeats and the rescuer on
    /// the current tokio runtime.
    pub fn start(service: Service, config: WorkerConfig) -> Self {
        let threads = config.threads.max(1);
        let slots = Arc::new(Semaphore::new(threads * config.prefetch.max(1)));
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
            let (service, report_tx, progress_tx, worker_id) = (
                service.clone(),
                report_tx.clone(),
                progress_tx.clone(),
                config.worker_id.clone(),
            );
            let handle = thread::Builder::new()
                .name(format!("remotask-guest-{i}"))
                .spawn(move || {
                    attempt::guest_thread(service, worker_id, rx, report_tx, progress_tx)
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
    slots: Arc<Semaphore>,
    assign: mpsc::Sender<Assignment>,
    stopping: Arc<AtomicBool>,
    stop_notify: Arc<tokio::sync::Notify>,
) {
    let shared = service.shared.clone();
    let mut next_queue = 0usize;
    let lease_ms = config.lease_ttl.as_millis() as i64;
    loop {
        let acquired = tokio::select! {
            p = slots.clone().acquire_owned() => p,
            () = stop_notify.notified() => return,
        };
        let Ok(first) = acquired else { return };
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let work = shared.work.notified();
        tokio::pin!(work);
        work.as_mut().enable();

        let mut permit = Some(first);
        let queues = match shared.store.queue_configs().await {
            Ok(q) => q,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let active: Vec<_> = queues
            .into_iter()
            .filter(|(_, paused)| !paused)
            .map(|(c, _)| c)
            .collect();
        let mut claimed_any = false;
        for k in 0..active.len() {
            let queue = &active[(next_queue + k) % active.len()];
            let want = slots.available_permits() as u32 + 1;
            let claimed = match shared
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
            for c in claimed {
                let p = match permit.take() {
                    Some(p) => p,
                    None => match slots.clone().try_acquire_owned() {
                        Ok(p) => p,
                        Err(_) => slots.clone().acquire_owned().await.expect("semaphore open"),
                    },
                };
                claimed_any = true;
                service.publish(&c.job, crate::domain::JobState::Running);
                let cancel = CancelToken::new();
                let interrupted = Arc::new(AtomicBool::new(false));
                shared
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(
                        c.job.id,
                        InFlight {
                            cancel: cancel.clone(),
                            lease: c.lease,
                            interrupted: interrupted.clone(),
                        },
                    );
                let assignment = Assignment {
                    claimed: c,
                    caps: queue.caps,
                    permit: p,
                    interrupted,
                    cancel,
                };
                if assign.send(assignment).is_err() {
                    return;
                }
            }
            if permit.is_none() {
                next_queue = (next_queue + k + 1) % active.len().max(1);
                break;
            }
        }
        drop(permit);
        if claimed_any {
            continue;
        }
        let now = shared.clock.now();
        let until_next = match shared.store.next_scheduled().await {
            Ok(Some(t)) => now.until(t).min(Duration::from_secs(1)),
            _ => Duration::from_secs(1),
        };
        tokio::select! {
            () = &mut work => {}
            () = tokio::time::sleep(until_next.max(Duration::from_millis(1))) => {}
            () = stop_notify.notified() => return,
        }
    }
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
