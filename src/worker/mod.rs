//! The worker pool: threads reserved for guests (never the threads serving requests), fed by
//! a dispatcher that claims jobs from a [`Source`], a reporter that hands each ended attempt
//! back to it, heartbeats that keep the leases of attempts in flight, the cancels it pushes,
//! and graceful shutdown. The pool knows nothing of stores or services: everything it needs
//! comes through [`Source`], so the same pool runs beside the store or on another machine.
//!
//! ```text
//! dispatcher (async) --claim--> source        guest threads (sync, one attempt at a time)
//!      | Work + slot permit + flight -------------> sandbox.run_blocking
//!      |                                              | AttemptReport (+ reporting permit;
//! reporter (async) <----------------------------------+  the slot permit is released here)
//!      | source.report (the source decides the job's next state)
//! heartbeats (async) --heartbeat--> source: extended, cancelled or lost -> flights
//! cancels pushed by the source -> flights -> the attempt's cancel token
//! ```
//!
//! A slot permit is held from before the claim until the attempt ends, not until its result
//! is reported: the next claim does not wait for the previous report, so a few slots per guest
//! thread keep the threads busy. Results being reported hold a reporting permit, and shutdown
//! waits for those too.

mod attempt;
mod dispatch;
mod flight;
mod source;

use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::domain::{QueueName, WorkerName};
use crate::sandbox::Sandbox;
use crate::telemetry::{Component, background_error};
use attempt::GuestThread;
use dispatch::{Dispatcher, Pace};
use flight::Flights;

pub use source::{
    Cancel, ClaimAsk, Cursor, Ended, Granted, LeaseState, Outcome, Progress, Source, SourceError,
    SourceResult, Stop, StopHandle, Work,
};

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Threads that run guests; at most this many attempts run at once in this process.
    pub threads: usize,
    /// At most this many jobs per guest thread are claimed and not yet ended (running or
    /// waiting for the thread), so one claim serves several short attempts. How many are
    /// actually claimed ahead follows the attempts' mean duration: short ones are batched,
    /// long ones are claimed about one at a time, so a later high-priority job does not wait
    /// behind a node's backlog. Queue concurrency still bounds what is claimed; claimed jobs
    /// count as running.
    pub prefetch: usize,
    /// A claimed job's lease; heartbeats extend it every third of it.
    pub lease_ttl: Duration,
    /// How long shutdown lets running attempts finish before interrupting them.
    pub shutdown_grace: Duration,
    /// This worker's name in leases, receipts and `explain`.
    pub worker_id: String,
    /// Only jobs of these queues; every queue if empty.
    pub queues: Vec<QueueName>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            threads: thread::available_parallelism().map_or(2, |n| n.get()),
            prefetch: 512,
            lease_ttl: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            worker_id: process_name("local-").to_string(),
            queues: Vec::new(),
        }
    }
}

/// `<prefix><host>-<pid>`, lowercased, with what a name may not hold made `-`: a worker name
/// no other process on this or another machine has at the same time.
pub fn process_name(prefix: &str) -> WorkerName {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let host: String = host
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '-',
        })
        .take(40)
        .collect();
    let host = host.trim_start_matches(['.', '_', '-']);
    let host = if host.is_empty() { "worker" } else { host };
    let pid = std::process::id();
    format!("{prefix}{host}-{pid}")
        .parse()
        .unwrap_or_else(|_| format!("worker-{pid}").parse().expect("a name"))
}

/// A running pool. Dropping it without [`WorkerPool::shutdown`] stops claiming but leaves
/// attempts to be rescued after their leases expire.
#[derive(Debug)]
pub struct WorkerPool {
    config: WorkerConfig,
    stop: StopHandle,
    flights: Arc<Flights>,
    tasks: Vec<JoinHandle<()>>,
    threads: Vec<thread::JoinHandle<()>>,
    slots: Arc<Semaphore>,
    reporting: Arc<Semaphore>,
}

/// Attempt results being reported at most (far more than a pool produces between reports).
const REPORTING_MAX: usize = 1 << 16;

impl WorkerPool {
    /// Starts the guest threads, the dispatcher, the reporter, the progress writer,
    /// heartbeats and the cancel listener on the current tokio runtime, all on `source`.
    pub fn start(source: Arc<dyn Source>, sandbox: Sandbox, config: WorkerConfig) -> Self {
        let threads = config.threads.max(1);
        let slots = Arc::new(Semaphore::new(threads * config.prefetch.max(1)));
        let reporting = Arc::new(Semaphore::new(REPORTING_MAX));
        let pace = Arc::new(Pace::new());
        let flights = Arc::new(Flights::default());
        let (stop_handle, stop) = Stop::new();
        let (assign_tx, assign_rx) = mpsc::channel();
        let assign_rx = Arc::new(Mutex::new(assign_rx));
        let (report_tx, report_rx) = tokio::sync::mpsc::unbounded_channel();
        let (progress_tx, progress_rx) = tokio::sync::mpsc::unbounded_channel();
        let runtime = tokio::runtime::Handle::current();

        let guest_threads = (0..threads)
            .map(|i| {
                let rx = assign_rx.clone();
                let guest = GuestThread {
                    source: source.clone(),
                    sandbox: sandbox.clone(),
                    runtime: runtime.clone(),
                    reports: report_tx.clone(),
                    progress: progress_tx.clone(),
                    reporting: reporting.clone(),
                    pace: pace.clone(),
                };
                thread::Builder::new()
                    .name(format!("remotask-guest-{i}"))
                    .spawn(move || guest.run(&rx))
                    .expect("spawning a guest thread")
            })
            .collect();
        drop((report_tx, progress_tx));

        let dispatcher = Dispatcher {
            source: source.clone(),
            config: config.clone(),
            pace,
            slots: slots.clone(),
            assign: assign_tx,
            flights: flights.clone(),
            stop: stop.clone(),
        };
        let mut tasks = vec![
            runtime.spawn(dispatcher.run()),
            runtime.spawn(attempt::reporter(
                source.clone(),
                flights.clone(),
                report_rx,
            )),
            runtime.spawn(attempt::progress_writer(source.clone(), progress_rx)),
            runtime.spawn(flight::heartbeats(
                source.clone(),
                flights.clone(),
                config.lease_ttl,
                stop,
            )),
        ];
        if let Some(pushed) = source.cancels() {
            let worker = config.worker_id.clone();
            tasks.push(runtime.spawn(flight::cancels(pushed, flights.clone(), worker)));
        }
        Self {
            config,
            stop: stop_handle,
            flights,
            tasks,
            threads: guest_threads,
            slots,
            reporting,
        }
    }

    /// Stops claiming, lets running attempts finish within the grace period, interrupts the
    /// rest (their jobs go back to their queues without spending an attempt), waits for every
    /// result to be reported, then stops every thread.
    pub async fn shutdown(mut self) {
        self.stop.raise();
        let all = (self.config.threads.max(1) * self.config.prefetch.max(1)) as u32;
        let ended = self.slots.clone().acquire_many_owned(all);
        let ended = match tokio::time::timeout(self.config.shutdown_grace, ended).await {
            Ok(permits) => permits.ok(),
            Err(_) => {
                self.flights.interrupt_all();
                self.slots.clone().acquire_many_owned(all).await.ok()
            }
        };
        drop(ended);
        // Every attempt has ended; wait until their results are reported.
        let reported = self
            .reporting
            .clone()
            .acquire_many_owned(REPORTING_MAX as u32);
        if tokio::time::timeout(self.config.shutdown_grace, reported)
            .await
            .is_err()
        {
            let stuck = std::io::Error::other("results still unreported after the grace");
            background_error(Component::Shutdown, "reporting the last results", &stuck);
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
        for t in self.threads.drain(..) {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}
