//! One job, start to end, on the worker's side: a guest thread runs the attempt in the
//! sandbox; the reporter hands the ended attempts to the source, many in one call; progress
//! from guests is coalesced and passed on by its own task. What an ended attempt means for
//! its job is the source's to decide.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::dispatch::Pace;
use super::flight::{Flight, Flights};
use super::source::{Ended, Outcome, Progress, Source, Work};
use crate::domain::{JobId, Reason, Timestamp};
use crate::sandbox::{AttemptReport, AttemptRequest, CacheStatus, Sandbox};
use crate::telemetry::{Chain, Component, background_error};

/// Work handed to a guest thread.
pub(crate) struct Assignment {
    pub(crate) work: Work,
    /// Given back by the guest thread when the attempt ends.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    pub(crate) flight: Flight,
}

/// What a guest thread hands the reporter.
pub(crate) struct Ran {
    id: JobId,
    lease: crate::domain::Lease,
    outcome: Outcome,
    /// Held until the result is handed to the source.
    _reporting: Option<OwnedSemaphorePermit>,
}

/// What a guest thread works with.
pub(crate) struct GuestThread {
    pub(crate) source: Arc<dyn Source>,
    pub(crate) sandbox: Sandbox,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) reports: UnboundedSender<Ran>,
    pub(crate) progress: UnboundedSender<Progress>,
    pub(crate) reporting: Arc<Semaphore>,
    pub(crate) pace: Arc<Pace>,
}

impl GuestThread {
    /// Runs assignments until the pool stops handing them out.
    pub(crate) fn run(self, assignments: &Mutex<mpsc::Receiver<Assignment>>) {
        loop {
            let next = assignments.lock().unwrap_or_else(|p| p.into_inner()).recv();
            let Ok(mut assignment) = next else { return };
            // The thread's whole time on this job, module lookup and hand-over included, is
            // what the pace counts (an echo attempt's own wall time is about half of it).
            let taken = Instant::now();
            let started_at = Timestamp::now();
            let report = self.attempt(&assignment);
            let finished_at = Timestamp::now();
            // Shutdown's interruption is not an attempt: the job goes back unspent.
            let interrupted = assignment.flight.interrupted.load(Ordering::SeqCst)
                && report.reason == Reason::Cancelled;
            let outcome = if interrupted {
                Outcome::Interrupted
            } else {
                Outcome::Ran {
                    report: Box::new(report),
                    started_at,
                    finished_at,
                }
            };
            // The result is owed before the slot is given back, so shutdown cannot miss it.
            let slot = assignment.permit.take();
            let ran = Ran {
                id: assignment.work.id,
                lease: assignment.work.lease,
                outcome,
                _reporting: self.reporting.clone().try_acquire_owned().ok(),
            };
            let sent = self.reports.send(ran).is_ok();
            self.pace.record(taken.elapsed().as_micros() as u64);
            drop(slot);
            self.pace.freed.notify_one();
            if !sent {
                return;
            }
        }
    }

    /// Runs one attempt: the module from the sandbox's caches, or from the source.
    fn attempt(&self, assignment: &Assignment) -> AttemptReport {
        let work = &assignment.work;
        let digest = work.digest;
        let load = || {
            self.runtime
                .block_on(self.source.module(digest))
                .map_err(|e| std::io::Error::other(Chain(&e).to_string()))
        };
        let module = match self.sandbox.module(digest, load) {
            Ok(module) => module,
            Err(e) => {
                let message = format!("cannot load module {digest}: {e}");
                return AttemptReport::host_error(message, CacheStatus::Miss);
            }
        };
        let (id, lease, sink) = (work.id, work.lease, self.progress.clone());
        let request = AttemptRequest {
            task_name: work.task.to_string(),
            input: work.input.clone(),
            args: work.args.clone(),
            env: work.env.clone(),
            limits: work.limits,
            cancel: assignment.flight.cancel.clone(),
            progress: Some(Arc::new(move |done, total| {
                let _ = sink.send(Progress {
                    id,
                    lease,
                    done,
                    total,
                });
            })),
            replay: None,
        };
        self.sandbox.run_blocking(&module, request)
    }
}

/// Reports handed to the source in one call at most.
const REPORT_BATCH_MAX: usize = 256;

/// Hands ended attempts to the source, all that are waiting at the time in one call. One call
/// is in flight at a time: attempts that end while it is answered form the next batch, so a
/// busy pool reports in a few large batches rather than many small ones.
pub(crate) async fn reporter(
    source: Arc<dyn Source>,
    flights: Arc<Flights>,
    mut reports: UnboundedReceiver<Ran>,
) {
    while let Some(first) = reports.recv().await {
        let mut batch = vec![first];
        while batch.len() < REPORT_BATCH_MAX {
            match reports.try_recv() {
                Ok(ran) => batch.push(ran),
                Err(_) => break,
            }
        }
        let ids: Vec<JobId> = batch.iter().map(|ran| ran.id).collect();
        report_batch(source.as_ref(), &batch).await;
        flights.remove(ids);
        // The reporting permits go with the batch: shutdown waits for them.
        drop(batch);
    }
}

/// Reports one batch, trying again with growing waits (up to 5 s) until the source answers:
/// the attempts' results are kept while the source is away (a remote server restarting, a
/// store refusing writes). A source that answers may refuse some (their leases expired and
/// their jobs were taken again); that is final.
async fn report_batch(source: &dyn Source, batch: &[Ran]) {
    let ended = |batch: &[Ran]| -> Vec<Ended> {
        batch
            .iter()
            .map(|ran| Ended {
                id: ran.id,
                lease: ran.lease,
                outcome: ran.outcome.clone(),
            })
            .collect()
    };
    let mut wait = Duration::from_millis(50);
    for tries in 1u32.. {
        match source.report(ended(batch)).await {
            Ok(_) => return,
            Err(e) => {
                if tries >= 3 {
                    let doing = "reporting ended attempts (tried again until it answers)";
                    background_error(Component::Reporter, doing, &e);
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Passes guest progress to the source, keeping only the newest value per job between
/// calls, at most every 50 ms.
pub(crate) async fn progress_writer(
    source: Arc<dyn Source>,
    mut updates: UnboundedReceiver<Progress>,
) {
    while let Some(first) = updates.recv().await {
        let mut latest: HashMap<JobId, Progress> = HashMap::new();
        latest.insert(first.id, first);
        while let Ok(p) = updates.try_recv() {
            latest.insert(p.id, p);
        }
        let batch: Vec<Progress> = latest.into_values().collect();
        if let Err(e) = source.progress(batch).await {
            background_error(Component::Progress, "writing guest progress", &e);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
