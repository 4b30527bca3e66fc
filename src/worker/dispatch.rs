//! The dispatcher: takes slots for the jobs to claim now (as many as the pace wants), asks
//! the source for that many, and hands what it gets to the guest threads, each job with a
//! slot and registered as in flight. The pace keeps about 8 ms of work per guest thread
//! claimed, so short jobs are claimed in batches and long ones about one at a time.
//!
//! A slot is held from before a claim to the end of the attempt: shutdown counts attempts in
//! flight by their slots, so it sees every job that is running in the source.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::WorkerConfig;
use super::attempt::Assignment;
use super::flight::Flights;
use super::source::{ClaimAsk, Cursor, Ended, Outcome, Source, Stop, Work};
use crate::telemetry::{Component, background_error};

/// How the dispatcher paces claims: it keeps about `WINDOW` of work per guest thread claimed
/// ahead, by the mean time a guest thread spent on each recent job (the attempt, and the
/// module lookup and hand-over around it).
#[derive(Debug)]
pub(crate) struct Pace {
    mean_us: AtomicU64,
    /// A slot was given back (an attempt ended).
    pub(crate) freed: tokio::sync::Notify,
}

impl Pace {
    /// The work kept claimed ahead per thread, in µs: long enough that the guest threads do
    /// not run dry while a claim waits for the store (a claim and a finish share its
    /// transactions: a few ms under load), short enough that a later high-priority job
    /// waits behind at most this much claimed work per thread.
    const WINDOW_US: u64 = 8_000;
    /// Claimed per thread at the least: the running attempt and the next one.
    const MIN_PER_THREAD: usize = 2;

    pub(crate) fn new() -> Self {
        Self {
            // Until attempts are seen, assume they are not short.
            mean_us: AtomicU64::new(10_000),
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

/// What the dispatcher works with.
pub(crate) struct Dispatcher {
    pub(crate) source: Arc<dyn Source>,
    pub(crate) config: WorkerConfig,
    pub(crate) pace: Arc<Pace>,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) assign: mpsc::Sender<Assignment>,
    pub(crate) flights: Arc<Flights>,
    pub(crate) stop: Stop,
}

/// How long one claim waits for jobs at most before the dispatcher asks again.
const CLAIM_WAIT: Duration = Duration::from_secs(1);

/// The first wait after a failed claim; it doubles with each failure after it, up to 5 s.
const FAILED_CLAIM_WAIT: Duration = Duration::from_millis(200);

impl Dispatcher {
    /// Claims and hands out jobs until the pool stops.
    pub(crate) async fn run(self) {
        let mut cursor: Option<Cursor> = None;
        let mut backoff = FAILED_CLAIM_WAIT;
        while let Some(slots) = self.slots_for_claim().await {
            let ask = ClaimAsk {
                worker: self.config.worker_id.clone(),
                queues: self.config.queues.clone(),
                max: slots.num_permits() as u32,
                lease_ttl: self.config.lease_ttl,
                wait: CLAIM_WAIT,
                after: cursor.take(),
            };
            let granted = match self.source.claim(ask, &self.stop).await {
                Ok(granted) => granted,
                Err(e) => {
                    background_error(Component::Dispatcher, "claiming jobs", &e);
                    drop(slots);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.stop.raised() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = FAILED_CLAIM_WAIT;
            cursor = granted.cursor;
            if self.stop.is_raised() {
                // No attempt starts once the pool stops: what the claim took goes back.
                self.give_back(granted.work).await;
                return;
            }
            if !self.hand_out(granted.work, slots) {
                return;
            }
        }
    }

    /// Slots for the jobs to claim now: one, then as many more as the pace wants on top of
    /// what is claimed and not ended. `None` once the pool stops.
    async fn slots_for_claim(&self) -> Option<OwnedSemaphorePermit> {
        let threads = self.config.threads.max(1);
        let prefetch = self.config.prefetch.max(1);
        loop {
            let mut first = tokio::select! {
                p = self.slots.clone().acquire_owned() => p.ok()?,
                () = self.stop.raised() => return None,
            };
            // Slots taken, `first` included.
            let in_flight = threads * prefetch - self.slots.available_permits();
            let target = self.pace.target(threads, prefetch);
            if in_flight > target {
                drop(first);
                tokio::select! {
                    () = self.pace.freed.notified() => {}
                    () = self.stop.raised() => return None,
                }
                continue;
            }
            let wanted = (target + 1).saturating_sub(in_flight);
            let extra = wanted.saturating_sub(1).min(self.slots.available_permits());
            if extra > 0
                && let Ok(more) = self.slots.clone().try_acquire_many_owned(extra as u32)
            {
                first.merge(more);
            }
            return Some(first);
        }
    }

    /// Hands claimed jobs to the guest threads, each with one of `held`'s slots (a new one if
    /// the source gave more than asked) and registered in flight. False if the guest threads
    /// are gone.
    fn hand_out(&self, work: Vec<Work>, held: OwnedSemaphorePermit) -> bool {
        let mut held = Some(held);
        for w in work {
            let slot = match held.as_mut() {
                Some(h) if h.num_permits() > 1 => h.split(1),
                _ => held.take(),
            };
            let slot = slot.or_else(|| self.slots.clone().try_acquire_owned().ok());
            let flight = self.flights.register(w.id, w.lease);
            let assignment = Assignment {
                work: w,
                permit: slot,
                flight,
            };
            if self.assign.send(assignment).is_err() {
                return false;
            }
        }
        true
    }

    /// Gives jobs back to the source unstarted: they are queued again, no attempt spent. If
    /// that fails, their leases expire and the source's rescuer requeues them.
    async fn give_back(&self, work: Vec<Work>) {
        if work.is_empty() {
            return;
        }
        let ended = work
            .into_iter()
            .map(|w| Ended {
                id: w.id,
                lease: w.lease,
                outcome: Outcome::Interrupted,
            })
            .collect();
        if let Err(e) = self.source.report(ended).await {
            background_error(Component::Shutdown, "giving back claimed jobs", &e);
        }
    }
}

#[cfg(test)]
mod tests {
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
