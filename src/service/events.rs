//! Job state changes as events, for `GET /v1/events` and anyone else who listens; and the
//! counters behind `/metrics`. Publishing never blocks: a slow listener misses events (and is
//! told so by the broadcast channel), it never slows a worker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

use crate::domain::{JobId, JobState, QueueName, Reason, TaskName, Timestamp};

/// A job entered `state`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobEvent {
    pub id: JobId,
    pub task: TaskName,
    pub queue: QueueName,
    pub state: JobState,
    pub at: Timestamp,
}

/// Upper bounds of the attempt-duration histogram, in seconds.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0,
];

/// Counters of attempts since the process started, and whether this node leads.
#[derive(Debug, Default)]
pub struct Metrics {
    by_reason: [AtomicU64; Reason::ALL.len()],
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_us: AtomicU64,
    fuel: AtomicU64,
    /// Whether this node led the store's maintenance when it last asked.
    pub(crate) leading: AtomicBool,
}

/// A copy of the counters.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    pub attempts_by_reason: Vec<(Reason, u64)>,
    /// Cumulative counts per bucket of [`DURATION_BUCKETS`].
    pub duration_buckets: Vec<(f64, u64)>,
    pub duration_count: u64,
    pub duration_sum_seconds: f64,
    pub fuel_consumed: u64,
    /// Whether this node leads maintenance (the rescuer, the scheduler, the cleaner).
    pub leading: bool,
}

impl Metrics {
    pub fn record_attempt(&self, reason: Reason, wall_us: u64, fuel: Option<u64>) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.by_reason[i].fetch_add(1, Ordering::Relaxed);
        }
        let secs = wall_us as f64 / 1e6;
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.duration_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_sum_us.fetch_add(wall_us, Ordering::Relaxed);
        self.fuel.fetch_add(fuel.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            attempts_by_reason: Reason::ALL
                .iter()
                .zip(&self.by_reason)
                .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
                .collect(),
            duration_buckets: DURATION_BUCKETS
                .iter()
                .zip(&self.duration_buckets)
                .map(|(b, n)| (*b, n.load(Ordering::Relaxed)))
                .collect(),
            duration_count: self.duration_count.load(Ordering::Relaxed),
            duration_sum_seconds: self.duration_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            fuel_consumed: self.fuel.load(Ordering::Relaxed),
            leading: self.leading.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_into_cumulative_buckets() {
        let m = Metrics::default();
        m.record_attempt(Reason::Completed, 300, Some(10));
        m.record_attempt(Reason::Trap, 2_000_000, Some(5));
        let s = m.snapshot();
        assert_eq!(s.attempts_by_reason[0], (Reason::Completed, 1));
        assert_eq!(s.duration_buckets[0], (0.0001, 0));
        assert_eq!(s.duration_buckets[1], (0.0005, 1));
        assert_eq!(s.duration_buckets[9], (5.0, 2));
        assert_eq!((s.duration_count, s.fuel_consumed), (2, 15));
    }
}
