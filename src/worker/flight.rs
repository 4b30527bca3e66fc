//! The attempts in flight in this pool: how to stop each and the lease it runs under. Cancels
//! reach an attempt here, pushed by the source or passed in a heartbeat's answer; heartbeats
//! extend the leases listed here; shutdown interrupts what is left.
//!
//! A job is running in the source from its claim, a moment before the pool registers its
//! attempt: a cancel for a job not registered is kept for a minute, and applied when (if)
//! the job is registered. Both happen under one lock, so a cancel and a registration cannot
//! pass each other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::source::{Cancel, LeaseState, Source, Stop};
use crate::domain::{JobId, Lease};
use crate::sandbox::CancelToken;
use crate::telemetry::{Component, background_error};

/// How long a cancel for an attempt not registered yet is kept.
const CANCEL_KEPT: Duration = Duration::from_secs(60);

/// The attempts in flight, by job.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    running: HashMap<JobId, Flight>,
    /// Cancels of jobs not registered (yet), with when they came.
    ahead: HashMap<JobId, Instant>,
}

/// One attempt in flight.
#[derive(Debug, Clone)]
pub(crate) struct Flight {
    pub(crate) cancel: CancelToken,
    pub(crate) lease: Lease,
    /// Set by shutdown: the attempt is interrupted, not cancelled, and does not count.
    pub(crate) interrupted: Arc<AtomicBool>,
}

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a claimed job's attempt, applying a cancel that came before it.
    pub(crate) fn register(&self, id: JobId, lease: Lease) -> Flight {
        let flight = Flight {
            cancel: CancelToken::new(),
            lease,
            interrupted: Arc::new(AtomicBool::new(false)),
        };
        let mut inner = self.lock();
        if !inner.ahead.is_empty() && inner.ahead.remove(&id).is_some() {
            flight.cancel.cancel();
        }
        inner.running.insert(id, flight.clone());
        flight
    }

    /// Cancels `id`'s attempt, or keeps the cancel until it is registered.
    pub(crate) fn cancel(&self, id: JobId) {
        let mut inner = self.lock();
        match inner.running.get(&id) {
            Some(flight) => flight.cancel.cancel(),
            None => {
                inner.ahead.retain(|_, at| at.elapsed() < CANCEL_KEPT);
                inner.ahead.insert(id, Instant::now());
            }
        }
    }

    /// Forgets ended attempts.
    pub(crate) fn remove(&self, ids: impl IntoIterator<Item = JobId>) {
        let mut inner = self.lock();
        for id in ids {
            inner.running.remove(&id);
        }
    }

    /// The attempts in flight now.
    pub(crate) fn snapshot(&self) -> Vec<(JobId, Flight)> {
        self.lock()
            .running
            .iter()
            .map(|(id, f)| (*id, f.clone()))
            .collect()
    }

    /// Interrupts every attempt in flight (shutdown): they end without counting.
    pub(crate) fn interrupt_all(&self) {
        for flight in self.lock().running.values() {
            flight.interrupted.store(true, Ordering::SeqCst);
            flight.cancel.cancel();
        }
    }

    /// Applies a heartbeat's answer for `id`.
    fn renewed(&self, id: JobId, state: LeaseState) {
        let mut inner = self.lock();
        let Some(flight) = inner.running.get_mut(&id) else {
            return;
        };
        match state {
            LeaseState::Held { expires_at } => flight.lease.expires_at = expires_at,
            LeaseState::Cancelled { expires_at } => {
                flight.lease.expires_at = expires_at;
                flight.cancel.cancel();
            }
            // The lease is gone (rescued elsewhere): stop the attempt, its report is stale.
            LeaseState::Lost => flight.cancel.cancel(),
        }
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.lock().ahead.len()
    }
}

/// Extends the leases of attempts in flight every third of the lease, and applies what the
/// answers say (cancelled, lost).
pub(crate) async fn heartbeats(
    source: Arc<dyn Source>,
    flights: Arc<Flights>,
    ttl: Duration,
    stop: Stop,
) {
    let period = (ttl / 3).max(Duration::from_millis(50));
    while !stop.is_raised() {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = stop.raised() => return,
        }
        let leases: Vec<(JobId, Lease)> = flights
            .snapshot()
            .into_iter()
            .map(|(id, f)| (id, f.lease))
            .collect();
        if leases.is_empty() {
            continue;
        }
        let ids: Vec<JobId> = leases.iter().map(|(id, _)| *id).collect();
        match source.heartbeat(leases, ttl).await {
            Ok(states) => {
                for (id, state) in ids.into_iter().zip(states) {
                    flights.renewed(id, state);
                }
            }
            Err(e) => background_error(Component::Heartbeats, "extending leases", &e),
        }
    }
}

/// Applies the cancels a source pushes for jobs `worker` may hold, until it stops pushing.
/// A listener that falls behind misses some; heartbeats pass those on.
pub(crate) async fn cancels(
    mut pushed: tokio::sync::broadcast::Receiver<Cancel>,
    flights: Arc<Flights>,
    worker: String,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match pushed.recv().await {
            Ok(c) if c.worker.as_ref().is_none_or(|w| *w == worker) => flights.cancel(c.id),
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;

    fn lease() -> Lease {
        Lease {
            token: 1,
            expires_at: Timestamp(0),
        }
    }

    #[test]
    fn a_cancel_between_the_claim_and_the_registration_stops_the_attempt() {
        let flights = Flights::default();
        let (cancelled, other) = (JobId::from_u128(1), JobId::from_u128(2));
        flights.cancel(cancelled);
        let flight = flights.register(cancelled, lease());
        assert!(
            flight.cancel.is_cancelled(),
            "the cancel kept for it is applied"
        );
        assert!(!flight.interrupted.load(Ordering::SeqCst));
        let flight = flights.register(other, lease());
        assert!(
            !flight.cancel.is_cancelled(),
            "another job's attempt is not cancelled"
        );
        assert_eq!(flights.kept(), 0, "the kept cancel is used once");
    }

    #[test]
    fn a_cancel_after_the_registration_reaches_the_attempt_directly() {
        let flights = Flights::default();
        let id = JobId::from_u128(1);
        let flight = flights.register(id, lease());
        assert!(!flight.cancel.is_cancelled());
        flights.cancel(id);
        assert!(flight.cancel.is_cancelled());
        assert_eq!(flights.kept(), 0);
    }

    #[test]
    fn a_heartbeat_answer_extends_cancels_or_stops_an_attempt() {
        let flights = Flights::default();
        let (held, cancelled, lost) = (
            JobId::from_u128(1),
            JobId::from_u128(2),
            JobId::from_u128(3),
        );
        let held_flight = flights.register(held, lease());
        let cancelled_flight = flights.register(cancelled, lease());
        let lost_flight = flights.register(lost, lease());
        let later = Timestamp(5_000);
        flights.renewed(held, LeaseState::Held { expires_at: later });
        flights.renewed(cancelled, LeaseState::Cancelled { expires_at: later });
        flights.renewed(lost, LeaseState::Lost);
        let leases: HashMap<JobId, Lease> = flights
            .snapshot()
            .into_iter()
            .map(|(id, f)| (id, f.lease))
            .collect();
        assert_eq!(leases[&held].expires_at, later);
        assert!(!held_flight.cancel.is_cancelled());
        assert!(cancelled_flight.cancel.is_cancelled());
        assert!(lost_flight.cancel.is_cancelled());
        flights.interrupt_all();
        assert!(held_flight.interrupted.load(Ordering::SeqCst));
    }
}
