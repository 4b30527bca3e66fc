//! The in-process job source: the worker pool's [`Source`] on this process's store. It
//! claims across the queues in turn (a parked claim rides on the next submit while it
//! waits), publishes each job's `queued` (if not yet) and `running`, passes cancels to the
//! pool as they are asked for, and turns each ended attempt into the job's next state with
//! the state machine's one decision ([`after_attempt`]), written under the attempt's lease.
//!
//! What it does not do: run guests, pace claims or keep attempts in flight; the pool does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Service, ServiceError};
use crate::domain::{
    AttemptRecord, AttemptReplay, EndRules, Ending, Finish, Job, JobId, JobState, Lease,
    ModuleDigest, QueueConfig, QueueName, after_attempt, output_digest,
};
use crate::store::{AttemptEnd, Claims, ParkedAnswer, StandingClaim, StoreError};
use crate::worker::{
    Cancel, ClaimAsk, Cursor, Ended, Granted, LeaseState, Outcome, Progress, Source, SourceError,
    SourceResult, Stop, Work,
};

/// The pool's source in this process. Cheap to share.
#[derive(Debug)]
pub struct LocalSource {
    service: Service,
    /// What deciding an ended attempt needs of its job (the job without its input), from
    /// the claim to the report.
    claimed: Mutex<HashMap<JobId, Job>>,
    /// Where the next claim starts in the list of queues, so each gets its turn.
    rotation: AtomicUsize,
    /// The delay before a job whose lease was lost runs again.
    requeue_delay: Duration,
}

/// What one pass over the queues took.
#[derive(Default)]
struct Pass {
    work: Vec<Work>,
    /// Some queue gave all that was asked of it, so it may have more.
    filled: bool,
    /// Queues whose concurrency stopped the claim.
    full: Vec<QueueName>,
}

impl LocalSource {
    /// The delay before a job whose lease was lost runs again, unless configured (the seed's
    /// 5 s).
    pub const REQUEUE_DELAY: Duration = Duration::from_secs(5);

    /// A source on `service`'s store; `requeue_delay` is how long a job whose lease was lost
    /// waits before it runs again.
    pub fn new(service: Service, requeue_delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            service,
            claimed: Mutex::default(),
            rotation: AtomicUsize::new(0),
            requeue_delay,
        })
    }

    fn claimed(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Job>> {
        self.claimed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The unpaused queues `ask` may claim from.
    async fn active(&self, ask: &ClaimAsk) -> Result<Vec<QueueConfig>, StoreError> {
        let queues = self.service.shared.queue_settings().await?;
        Ok(queues
            .iter()
            .filter(|(config, paused)| {
                !paused && (ask.queues.is_empty() || ask.queues.contains(&config.name))
            })
            .map(|(config, _)| config.clone())
            .collect())
    }

    /// Claims from the queues in turn, up to `ask.max`, stopping at the first that gives.
    async fn pass(&self, queues: &[QueueConfig], ask: &ClaimAsk) -> Result<Pass, StoreError> {
        let shared = &self.service.shared;
        let mut pass = Pass::default();
        let start = self.rotation.load(Ordering::Relaxed);
        let lease_ms = ask.lease_ttl.as_millis() as i64;
        for k in 0..queues.len() {
            let queue = &queues[(start + k) % queues.len()];
            let now = shared.clock.now();
            let claims = shared
                .store
                .claim(&queue.name, &ask.worker, ask.max, lease_ms, now)
                .await?;
            pass.filled |= claims.jobs.len() == ask.max as usize;
            if claims.at_concurrency {
                pass.full.push(queue.name.clone());
            }
            let gave = !claims.jobs.is_empty();
            pass.work.extend(self.hand(claims));
            if gave {
                self.rotation
                    .store((start + k + 1) % queues.len(), Ordering::Relaxed);
                break;
            }
        }
        Ok(pass)
    }

    /// Publishes what a claim did and keeps its jobs for their reports: due jobs it made
    /// `queued`, then each job it took, `queued` (once, if its submit has not yet) and
    /// `running`.
    fn hand(&self, claims: Claims) -> Vec<Work> {
        let service = &self.service;
        for p in claims.promoted {
            service.publish_parts(p.id, p.task, p.queue, JobState::Queued);
        }
        if claims.jobs.is_empty() {
            return Vec::new();
        }
        let mut kept = self.claimed();
        let mut work = Vec::with_capacity(claims.jobs.len());
        for c in claims.jobs {
            let mut job = c.job;
            service.announce_queued(&job);
            service.publish(&job, JobState::Running);
            work.push(Work {
                id: job.id,
                task: job.task.clone(),
                digest: job.digest,
                queue: job.queue.clone(),
                input: std::mem::take(&mut job.input),
                args: std::mem::take(&mut job.args),
                env: std::mem::take(&mut job.env),
                limits: job.limits,
                attempt: job.attempts,
                lease: c.lease,
            });
            kept.insert(job.id, job);
        }
        work
    }

    /// The jobs a parked claim took, handed out.
    fn hand_parked(&self, taken: Vec<(QueueName, Claims)>) -> Vec<Work> {
        taken
            .into_iter()
            .flat_map(|(_, claims)| self.hand(claims))
            .collect()
    }

    /// Parks a claim for up to `max` jobs of `queues` with the store; `None` if there are no
    /// queues or the store does not park claims.
    fn park(&self, queues: Vec<QueueName>, ask: &ClaimAsk) -> Option<(u64, ParkedAnswer)> {
        if queues.is_empty() || ask.max == 0 {
            return None;
        }
        let shared = &self.service.shared;
        shared.store.park_claim(StandingClaim {
            queues,
            worker: ask.worker.clone(),
            max: ask.max,
            lease_ttl_ms: ask.lease_ttl.as_millis() as i64,
            clock: shared.clock.clone(),
        })
    }

    /// Takes a parked claim back; if it already ran with a submit, its jobs are handed out.
    async fn unpark(&self, parked: Option<(u64, ParkedAnswer)>) -> Result<Vec<Work>, StoreError> {
        let Some((ticket, answer)) = parked else {
            return Ok(Vec::new());
        };
        if self.service.shared.store.unpark_claim(ticket) {
            return Ok(Vec::new());
        }
        Ok(self.hand_parked(answer.await?))
    }

    /// How long to wait for work before claiming again: until the next scheduled job is due,
    /// at most until `deadline` and at most a second.
    async fn until_next(&self, deadline: tokio::time::Instant) -> Duration {
        let shared = &self.service.shared;
        let now = shared.clock.now();
        let next = match shared.store.next_scheduled().await {
            Ok(Some(t)) => now.until(t).min(Duration::from_secs(1)),
            _ => Duration::from_secs(1),
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        next.min(left).max(Duration::from_millis(1))
    }

    /// The end to write for one reported attempt, and the job it ends.
    fn end_of(&self, job: &Job, ended: Ended, caps: QueueConfig) -> AttemptEnd {
        let now = self.service.now();
        let rules = EndRules {
            caps: caps.caps,
            lease_lost_delay: self.requeue_delay,
        };
        let (attempt, finish) = match ended.outcome {
            Outcome::Interrupted => (None, Finish::Interrupted),
            Outcome::Ran {
                report,
                started_at,
                finished_at,
            } => {
                let report = *report;
                let replay = report.recording.map(|recording| AttemptReplay {
                    limits: job.limits,
                    output_digest: output_digest(&report.output),
                    recording,
                });
                let record = AttemptRecord {
                    number: job.attempts,
                    reason: report.reason,
                    trap_kind: report.trap_kind,
                    exit_code: report.exit_code,
                    message: report.message.clone(),
                    stderr: report.stderr,
                    stderr_truncated: report.stderr_truncated,
                    receipt: serde_json::to_value(&report.receipt)
                        .unwrap_or(serde_json::Value::Null),
                    worker: job.worker.clone().unwrap_or_default(),
                    started_at,
                    finished_at,
                    replay,
                };
                let ending = Ending::Ran {
                    reason: report.reason,
                    message: report.message,
                    output: report.output,
                };
                (Some(record), after_attempt(job, ending, &rules, now))
            }
        };
        AttemptEnd {
            id: job.id,
            queue: job.queue.clone(),
            lease: ended.lease,
            attempt,
            finish,
        }
    }

    /// The job of a reported attempt: kept since its claim, else read from the store (a
    /// claim made through another source of this store).
    async fn job_of(&self, id: JobId) -> SourceResult<Option<Job>> {
        if let Some(job) = self.claimed().remove(&id) {
            return Ok(Some(job));
        }
        self.service.shared.store.get_job(id).await.map_err(failed)
    }
}

fn failed(e: impl std::error::Error + Send + Sync + 'static) -> SourceError {
    SourceError::Failed(Box::new(e))
}

#[async_trait::async_trait]
impl Source for LocalSource {
    async fn claim(&self, ask: ClaimAsk, stop: &Stop) -> SourceResult<Granted> {
        let shared = self.service.shared.clone();
        let deadline = tokio::time::Instant::now() + ask.wait;
        let mut after = ask.after.clone();
        loop {
            // Enabled before anything is read, so a change during the claim is not missed.
            let work = shared.work.notified();
            tokio::pin!(work);
            work.as_mut().enable();
            let room = shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let (work_seen, room_seen) = shared.signals();
            let queues = self.active(&ask).await.map_err(failed)?;
            let full = match after.take() {
                // Nothing happened since the last claim came back short: wait first.
                Some(c) if c.work == work_seen && (c.full.is_empty() || c.room == room_seen) => {
                    c.full
                }
                _ => {
                    let pass = self.pass(&queues, &ask).await.map_err(failed)?;
                    if !pass.work.is_empty() {
                        let cursor = (!pass.filled).then_some(Cursor {
                            work: work_seen,
                            room: room_seen,
                            full: pass.full,
                        });
                        return Ok(Granted {
                            work: pass.work,
                            cursor,
                        });
                    }
                    pass.full
                }
            };
            if tokio::time::Instant::now() >= deadline {
                let cursor = Cursor {
                    work: work_seen,
                    room: room_seen,
                    full,
                };
                return Ok(Granted {
                    work: Vec::new(),
                    cursor: Some(cursor),
                });
            }
            // Every queue is empty or at its concurrency: wait for work, or for room in a
            // full queue, or for the next scheduled job. Meanwhile a claim for the room asked
            // waits in the store and runs in the transaction of the next submit to an open
            // queue: that job is running when its submit commits.
            let sleep = self.until_next(deadline).await;
            let open = queues
                .iter()
                .filter(|q| !full.contains(&q.name))
                .map(|q| q.name.clone())
                .collect();
            let mut parked = self.park(open, &ask);
            tokio::select! {
                biased;
                answer = async {
                    match parked.as_mut() {
                        Some((_, answer)) => answer.await,
                        None => std::future::pending().await,
                    }
                } => {
                    let work = self.hand_parked(answer.map_err(failed)?);
                    return Ok(Granted { work, cursor: None });
                }
                () = stop.raised() => {
                    let work = self.unpark(parked).await.map_err(failed)?;
                    return Ok(Granted { work, cursor: None });
                }
                () = &mut work => {}
                () = &mut room, if !full.is_empty() => {}
                () = tokio::time::sleep(sleep) => {}
            }
            let work = self.unpark(parked).await.map_err(failed)?;
            if !work.is_empty() {
                // It ran with a submit meanwhile.
                return Ok(Granted { work, cursor: None });
            }
        }
    }

    async fn heartbeat(
        &self,
        leases: Vec<(JobId, Lease)>,
        ttl: Duration,
    ) -> SourceResult<Vec<LeaseState>> {
        let store = &self.service.shared.store;
        let mut states = Vec::with_capacity(leases.len());
        for (id, lease) in leases {
            let expires_at = self.service.now().plus(ttl);
            let state = if !store
                .heartbeat(id, &lease, expires_at)
                .await
                .map_err(failed)?
            {
                LeaseState::Lost
            } else if store.cancel_requested(id).await.map_err(failed)? {
                LeaseState::Cancelled { expires_at }
            } else {
                LeaseState::Held { expires_at }
            };
            states.push(state);
        }
        Ok(states)
    }

    async fn progress(&self, updates: Vec<Progress>) -> SourceResult<()> {
        let store = &self.service.shared.store;
        for p in updates {
            store
                .set_progress(p.id, &p.lease, p.done, p.total)
                .await
                .map_err(failed)?;
        }
        Ok(())
    }

    async fn report(&self, ended: Vec<Ended>) -> SourceResult<Vec<bool>> {
        let shared = self.service.shared.clone();
        let queues = shared.queue_settings().await.map_err(failed)?;
        let mut jobs = Vec::with_capacity(ended.len());
        let mut ends = Vec::with_capacity(ended.len());
        let mut answered = Vec::with_capacity(ended.len());
        let mut costs = Vec::with_capacity(ended.len());
        for e in ended {
            let Some(job) = self.job_of(e.id).await? else {
                answered.push(None);
                continue;
            };
            let caps = super::config_of(&queues, &job.queue);
            costs.push(match &e.outcome {
                Outcome::Ran { report, .. } => {
                    let r = &report.receipt;
                    Some((report.reason, r.wall_us, r.fuel_consumed))
                }
                Outcome::Interrupted => None,
            });
            answered.push(Some(ends.len()));
            ends.push(self.end_of(&job, e, caps));
            jobs.push(job);
        }
        let states: Vec<JobState> = ends.iter().map(|end| end.finish.state()).collect();
        let retried = states.contains(&JobState::Scheduled);
        let ended = shared.store.finish_many(ends, self.service.now()).await;
        let written = match self.service.noted(ended) {
            Ok(written) => written,
            Err(e) => {
                // Kept for the report's retry.
                let mut kept = self.claimed();
                for job in jobs {
                    kept.insert(job.id, job);
                }
                return Err(failed(e));
            }
        };
        for (((job, state), applied), cost) in jobs.iter().zip(states).zip(&written).zip(costs) {
            if !*applied {
                continue;
            }
            self.service.publish(job, state);
            if let Some((reason, wall_us, fuel)) = cost {
                shared.metrics.record_attempt(reason, wall_us, fuel);
            }
        }
        shared.wake_room();
        // A retry is a new `scheduled` job: a waiting claim's next wake-up may be earlier.
        if retried {
            shared.wake_work();
        }
        // An attempt whose job is gone (deleted meanwhile) was not applied.
        Ok(answered
            .into_iter()
            .map(|i| i.is_some_and(|i| written.get(i) == Some(&true)))
            .collect())
    }

    async fn module(&self, digest: ModuleDigest) -> SourceResult<Vec<u8>> {
        match self.service.module(digest).await {
            Ok(bytes) => Ok(bytes),
            Err(ServiceError::ModuleNotFound(_)) => Err(SourceError::ModuleNotFound(digest)),
            Err(e) => Err(failed(e)),
        }
    }

    fn cancels(&self) -> Option<tokio::sync::broadcast::Receiver<Cancel>> {
        Some(self.service.shared.cancels.subscribe())
    }
}
