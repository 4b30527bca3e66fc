//! One claimed job, start to end: a guest thread runs the attempt in the sandbox, the
//! reporter decides the job's next state with the retry policy and writes it under the
//! attempt's lease. Progress from the guest is coalesced and written by its own task.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Assignment;
use crate::domain::{AttemptRecord, EndRules, Ending, JobId, Reason, Timestamp, after_attempt};
use crate::domain::{Finish, Lease};
use crate::sandbox::{AttemptReport, AttemptRequest, CacheStatus, Receipt};
use crate::service::Service;
use crate::store::AttemptEnd;

/// What a guest thread hands the reporter.
pub(crate) struct Ran {
    assignment: Assignment,
    report: AttemptReport,
    started_at: Timestamp,
    finished_at: Timestamp,
    /// Held until the result is written.
    _reporting: Option<OwnedSemaphorePermit>,
}

pub(crate) type Progress = (JobId, Lease, i64, i64);

pub(crate) fn guest_thread(
    service: Service,
    assignments: Arc<Mutex<mpsc::Receiver<Assignment>>>,
    reports: UnboundedSender<Ran>,
    progress: UnboundedSender<Progress>,
    reporting: Arc<Semaphore>,
    pace: &super::Pace,
) {
    let shared = service.shared.clone();
    loop {
        let next = assignments.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(mut assignment) = next else { return };
        // The thread's whole time on this job, module lookup and hand-over included, is what
        // the pace counts (an echo attempt's own wall time is about half of it).
        let taken = std::time::Instant::now();
        let job = &assignment.claimed.job;
        let started_at = shared.clock.now();
        let blobs = shared.blobs.clone();
        let digest = job.digest;
        let report = match shared
            .sandbox
            .module(digest, || blobs.get(&digest).map_err(std::io::Error::other))
        {
            Ok(module) => {
                let (id, lease, sink) = (job.id, assignment.claimed.lease, progress.clone());
                let request = AttemptRequest {
                    task_name: job.task.to_string(),
                    input: job.input.clone(),
                    args: job.args.clone(),
                    env: job.env.clone(),
                    limits: job.limits,
                    cancel: assignment.cancel.clone(),
                    progress: Some(Arc::new(move |done, total| {
                        let _ = sink.send((id, lease, done, total));
                    })),
                };
                shared.sandbox.run_blocking(&module, request)
            }
            Err(e) => host_error(format!("cannot load module {digest}: {e}")),
        };
        let finished_at = shared.clock.now();
        // The result is owed before the slot is given back, so shutdown cannot miss it.
        let slot = assignment.permit.take();
        let ran = Ran {
            assignment,
            report,
            started_at,
            finished_at,
            _reporting: reporting.clone().try_acquire_owned().ok(),
        };
        let sent = reports.send(ran).is_ok();
        pace.record(taken.elapsed().as_micros() as u64);
        drop(slot);
        pace.freed.notify_one();
        if !sent {
            return;
        }
    }
}

fn host_error(message: String) -> AttemptReport {
    AttemptReport {
        reason: Reason::HostError,
        trap_kind: None,
        exit_code: None,
        message: Some(message),
        output: Vec::new(),
        stderr: Vec::new(),
        stderr_truncated: false,
        receipt: Receipt {
            fuel_consumed: None,
            peak_memory_bytes: 0,
            wall_us: 0,
            instantiate_us: 0,
            compile_cache: CacheStatus::Miss,
            stdout_bytes: 0,
            stderr_bytes: 0,
        },
    }
}

/// Receives attempt reports and writes the jobs' next states, all reports waiting at the
/// time in one store write. One write is in flight at a time: reports that arrive while it
/// commits form the next batch, so a busy pool writes its results in a few large batches
/// rather than many small ones (each a savepoint on the writer and a task here).
pub(crate) async fn reporter(service: Service, mut reports: UnboundedReceiver<Ran>) {
    while let Some(first) = reports.recv().await {
        let mut batch = vec![first];
        while batch.len() < REPORT_BATCH_MAX {
            match reports.try_recv() {
                Ok(ran) => batch.push(ran),
                Err(_) => break,
            }
        }
        report_batch(service.clone(), batch).await;
    }
}

/// Reports written in one store call at most.
const REPORT_BATCH_MAX: usize = 256;

/// The job's next state and the attempt's record (none for an interrupted attempt, which is
/// not spent).
fn attempt_end(ran: &Ran, now: Timestamp) -> AttemptEnd {
    let Ran {
        assignment,
        report,
        started_at,
        finished_at,
        ..
    } = ran;
    let job = &assignment.claimed.job;
    let rules = EndRules {
        caps: assignment.caps,
        lease_lost_delay: Duration::ZERO,
    };
    let (finish, attempt) =
        if assignment.interrupted.load(Ordering::SeqCst) && report.reason == Reason::Cancelled {
            (after_attempt(job, Ending::Interrupted, &rules, now), None)
        } else {
            let record = AttemptRecord {
                number: job.attempts,
                reason: report.reason,
                trap_kind: report.trap_kind,
                exit_code: report.exit_code,
                message: report.message.clone(),
                stderr: report.stderr.clone(),
                stderr_truncated: report.stderr_truncated,
                receipt: serde_json::to_value(&report.receipt).unwrap_or(serde_json::Value::Null),
                worker: job.worker.clone().unwrap_or_default(),
                started_at: *started_at,
                finished_at: *finished_at,
            };
            let ending = Ending::Ran {
                reason: report.reason,
                message: report.message.clone(),
                output: report.output.clone(),
            };
            let finish = after_attempt(job, ending, &rules, now);
            (finish, Some(record))
        };
    AttemptEnd {
        id: job.id,
        queue: job.queue.clone(),
        lease: assignment.claimed.lease,
        attempt,
        finish,
    }
}

async fn report_batch(service: Service, batch: Vec<Ran>) {
    let shared = service.shared.clone();
    let now = shared.clock.now();
    let ends: Vec<AttemptEnd> = batch.iter().map(|ran| attempt_end(ran, now)).collect();
    for (ran, end) in batch.iter().zip(&ends) {
        if end.attempt.is_some() {
            let receipt = &ran.report.receipt;
            shared.metrics.record_attempt(
                ran.report.reason,
                receipt.wall_us,
                receipt.fuel_consumed,
            );
        }
    }
    // A stale lease (the job was rescued meanwhile) writes nothing: the newer attempt wins.
    // A failing store is retried a few times; after that the leases expire and the rescuer
    // takes over.
    let states: Vec<_> = ends.iter().map(|end| end.finish.state()).collect();
    let retried = ends
        .iter()
        .any(|end| matches!(end.finish, Finish::Retry { .. }));
    let mut first = Some(ends);
    for delay in [0u64, 50, 200, 1000] {
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        // A failed write took the ends with it; they are made again from the reports.
        let ends = first
            .take()
            .unwrap_or_else(|| batch.iter().map(|ran| attempt_end(ran, now)).collect());
        if let Ok(written) = shared.store.finish_many(ends, now).await {
            for ((ran, state), written) in batch.iter().zip(states).zip(written) {
                if written {
                    service.publish(&ran.assignment.claimed.job, state);
                }
            }
            break;
        }
    }
    {
        let mut running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
        for ran in &batch {
            running.remove(&ran.assignment.claimed.job.id);
        }
    }
    // The reporting permits go with the batch.
    drop(batch);
    shared.room.notify_waiters();
    // A retry is a new `scheduled` job: the dispatcher's next wake-up may have to be earlier.
    if retried {
        shared.work.notify_waiters();
    }
}

/// Writes guest progress, keeping only the newest value per job between writes.
pub(crate) async fn progress_writer(service: Service, mut updates: UnboundedReceiver<Progress>) {
    let shared = service.shared.clone();
    while let Some(first) = updates.recv().await {
        let mut latest: HashMap<JobId, (Lease, i64, i64)> = HashMap::new();
        latest.insert(first.0, (first.1, first.2, first.3));
        while let Ok((id, lease, done, total)) = updates.try_recv() {
            latest.insert(id, (lease, done, total));
        }
        for (id, (lease, done, total)) in latest {
            let _ = shared.store.set_progress(id, &lease, done, total).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
