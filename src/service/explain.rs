//! Why a job is where it is, in words an operator can act on: held, runs at T, queue paused
//! (also for a job waiting to be queued in it), queue full n/n, its concurrency key busy,
//! behind N jobs, nothing here serves its queue, its task deleted, running attempt k, or how
//! it ended.

use std::fmt;

use serde::Serialize;

use crate::domain::QueuePosition;
use crate::domain::{Job, JobState, Timestamp};

/// What the service knows around a job besides the job and its place in the queue.
#[derive(Debug, Clone, Default)]
pub(super) struct Circumstances {
    pub(super) queue_paused: bool,
    pub(super) task_registered: bool,
    /// Whether a guest thread of this process or a remote worker attached to it serves the
    /// job's queue; `None` when unknown (another node may serve it).
    pub(super) served: Option<bool>,
}

/// The answer to "why is this job not running (or done)?".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub state: JobState,
    /// One short code per cause: `held`, `scheduled`, `paused`, `queue_full`, `key_busy`,
    /// `behind`, `next`, `no_worker`, `task_deleted`, `running`, `completed`, `failed`,
    /// `cancelled`.
    pub causes: Vec<&'static str>,
    pub message: String,
}

impl Explanation {
    pub(super) fn of(
        job: &Job,
        position: Option<&QueuePosition>,
        around: &Circumstances,
        now: Timestamp,
    ) -> Self {
        let mut causes = Vec::new();
        let mut parts: Vec<String> = Vec::new();
        match job.state {
            JobState::Held => {
                causes.push("held");
                parts.push("held: it runs only after it is released".into());
            }
            JobState::Scheduled => {
                causes.push("scheduled");
                let wait = now.until(job.run_at);
                let why = if job.attempts > 0 {
                    "retry after backoff"
                } else {
                    "delayed"
                };
                parts.push(format!(
                    "{why}: runs at {} ms since the epoch (in {:.1} s)",
                    job.run_at.0,
                    wait.as_secs_f64()
                ));
                if around.queue_paused {
                    causes.push("paused");
                    parts.push(format!(
                        "queue {} is paused: once due it waits there until resumed",
                        job.queue
                    ));
                }
            }
            JobState::Queued => {
                if let Some(p) = position {
                    if p.paused {
                        causes.push("paused");
                        parts.push(format!("queue {} is paused", job.queue));
                    }
                    if p.running >= u64::from(p.concurrency) {
                        causes.push("queue_full");
                        parts.push(format!(
                            "queue {} is full: {}/{} running",
                            job.queue, p.running, p.concurrency
                        ));
                    }
                    if let Some(k) = p.key.as_ref().filter(|k| k.running >= u64::from(k.limit)) {
                        causes.push("key_busy");
                        parts.push(format!(
                            "concurrency key {:?} is busy: {}/{} jobs with it running in \
                             queue {}; it runs when one of them ends",
                            k.key, k.running, k.limit, job.queue
                        ));
                    }
                    if p.ahead > 0 {
                        causes.push("behind");
                        parts.push(format!(
                            "behind {} job{} in queue {}",
                            p.ahead,
                            if p.ahead == 1 { "" } else { "s" },
                            job.queue
                        ));
                    } else if causes.is_empty() {
                        causes.push("next");
                        parts.push(format!(
                            "next in line in queue {}; a worker should claim it now",
                            job.queue
                        ));
                    }
                }
            }
            JobState::Running => {
                causes.push("running");
                parts.push(format!(
                    "running attempt {} of {} on {}",
                    job.attempts,
                    job.retry.retries + 1,
                    job.worker.as_deref().unwrap_or("a worker")
                ));
            }
            JobState::Completed => {
                causes.push("completed");
                parts.push("completed".into());
            }
            JobState::Failed | JobState::Cancelled => {
                causes.push(if job.state == JobState::Failed {
                    "failed"
                } else {
                    "cancelled"
                });
                let detail = job
                    .error
                    .as_ref()
                    .map(|e| format!(": {}: {}", e.reason, e.message))
                    .unwrap_or_default();
                parts.push(format!(
                    "{} after {} attempt(s){detail}",
                    job.state, job.attempts
                ));
            }
        }
        let waiting = matches!(
            job.state,
            JobState::Held | JobState::Scheduled | JobState::Queued
        );
        if waiting && around.served == Some(false) {
            causes.push("no_worker");
            parts.push(format!(
                "nothing here serves queue {}: no guest threads in this server and no remote \
                 worker attached for it",
                job.queue
            ));
        }
        if waiting && !around.task_registered {
            causes.push("task_deleted");
            parts.push(format!(
                "task {} is no longer registered; the job runs the module version it was \
                 submitted with",
                job.task
            ));
        }
        Explanation {
            state: job.state,
            causes,
            message: parts.join("; "),
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
