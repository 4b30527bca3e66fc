//! The remote workers this server knows: each one's name, address, version, queues, threads,
//! the jobs it holds and when it was last seen, from its lease calls. A worker not seen for
//! its lease period is gone. With `max_workers`, a worker that would be one more than that
//! is refused.
//!
//! What this does not do: lease anything. It is a register kept beside the lease API, in
//! this process's memory; a worker that calls again after a restart is known again.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{JobId, QueueName, Timestamp};

/// What a worker says of itself at each lease call.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerHello {
    pub name: String,
    /// Its address as the server sees it.
    pub address: String,
    pub version: Option<String>,
    pub queues: Vec<QueueName>,
    pub threads: Option<u32>,
    /// The lease it asks for: it is gone once this long passed without a call.
    pub lease_ttl: Duration,
}

/// A worker as the register knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    pub hello: WorkerHello,
    /// Jobs it holds: leased to it and not reported.
    pub running: usize,
    pub leased_total: u64,
    pub reported_total: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Not seen for its lease period.
    pub gone: bool,
}

#[derive(Debug)]
struct Entry {
    hello: WorkerHello,
    held: BTreeSet<JobId>,
    leased_total: u64,
    reported_total: u64,
    first_seen: Timestamp,
    last_seen: Timestamp,
}

impl Entry {
    fn gone(&self, now: Timestamp) -> bool {
        self.last_seen.plus(self.hello.lease_ttl) < now
    }
}

/// The register.
#[derive(Debug)]
pub(crate) struct Workers {
    entries: Mutex<HashMap<String, Entry>>,
    /// At most this many workers that are not gone; 0 for any number.
    max: AtomicUsize,
    /// Guest threads of this process, once the server said (`usize::MAX`: not said).
    local_threads: AtomicUsize,
}

impl Default for Workers {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
            max: AtomicUsize::new(0),
            local_threads: AtomicUsize::new(usize::MAX),
        }
    }
}

impl Workers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Service {
    /// Says how many guest threads this process runs for its own store (0: only remote
    /// workers run its jobs), so `explain` can tell when nothing here serves a queue.
    pub fn set_local_threads(&self, threads: usize) {
        self.shared
            .workers
            .local_threads
            .store(threads, Ordering::Relaxed);
    }

    /// Whether anything attached to this process serves `queue`: its guest threads, or a
    /// remote worker (not gone) that takes every queue or this one. `None` when this process
    /// was not told its guest threads.
    pub(crate) fn serves(&self, queue: &QueueName) -> Option<bool> {
        let local = self.shared.workers.local_threads.load(Ordering::Relaxed);
        if local == usize::MAX {
            return None;
        }
        if local > 0 {
            return Some(true);
        }
        let now = self.now();
        Some(
            self.shared.workers.lock().values().any(|w| {
                !w.gone(now) && (w.hello.queues.is_empty() || w.hello.queues.contains(queue))
            }),
        )
    }

    /// Limits how many workers (not gone) may call at once; `None` takes any number.
    pub fn set_max_workers(&self, max: Option<usize>) {
        self.shared
            .workers
            .max
            .store(max.unwrap_or(0), Ordering::Relaxed);
    }

    /// Records a worker's call. A worker not known (or gone) that would be one over
    /// `max_workers` is refused.
    pub fn worker_seen(&self, hello: WorkerHello) -> ServiceResult<()> {
        let now = self.now();
        let max = match self.shared.workers.max.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        };
        let mut entries = self.shared.workers.lock();
        let known = entries.get(&hello.name).is_some_and(|e| !e.gone(now));
        if let Some(max) = max
            && !known
        {
            let live: Vec<&str> = entries
                .iter()
                .filter(|(_, e)| !e.gone(now))
                .map(|(n, _)| n.as_str())
                .collect();
            if live.len() >= max {
                return Err(ServiceError::Conflict(format!(
                    "this server takes at most {max} workers, and {} are connected ({}); \
                     stop one or raise max_workers",
                    live.len(),
                    live.join(", ")
                )));
            }
        }
        let entry = entries.entry(hello.name.clone()).or_insert_with(|| Entry {
            hello: hello.clone(),
            held: BTreeSet::new(),
            leased_total: 0,
            reported_total: 0,
            first_seen: now,
            last_seen: now,
        });
        entry.hello = hello;
        entry.last_seen = now;
        Ok(())
    }

    /// Jobs leased to `worker`.
    pub fn worker_leased(&self, worker: &str, ids: impl IntoIterator<Item = JobId>) {
        self.with_worker(worker, |e| {
            for id in ids {
                e.held.insert(id);
                e.leased_total += 1;
            }
        });
    }

    /// Jobs `worker` reported (applied or not).
    pub fn worker_reported(&self, worker: &str, ids: impl IntoIterator<Item = JobId>) {
        self.with_worker(worker, |e| {
            for id in ids {
                e.held.remove(&id);
                e.reported_total += 1;
            }
        });
    }

    /// The jobs `worker` holds, as its heartbeat lists them.
    pub fn worker_holds(&self, worker: &str, ids: impl IntoIterator<Item = JobId>) {
        self.with_worker(worker, |e| e.held = ids.into_iter().collect());
    }

    fn with_worker(&self, worker: &str, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.shared.workers.lock().get_mut(worker) {
            f(e);
        }
    }

    /// Every worker known, by name.
    pub fn workers(&self) -> Vec<WorkerView> {
        let now = self.now();
        let mut views: Vec<WorkerView> = self
            .shared
            .workers
            .lock()
            .values()
            .map(|e| WorkerView {
                hello: e.hello.clone(),
                running: e.held.len(),
                leased_total: e.leased_total,
                reported_total: e.reported_total,
                first_seen: e.first_seen,
                last_seen: e.last_seen,
                gone: e.gone(now),
            })
            .collect();
        views.sort_by(|a, b| a.hello.name.cmp(&b.hello.name));
        views
    }
}
