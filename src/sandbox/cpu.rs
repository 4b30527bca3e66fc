//! The CPU time of one attempt, from the CPU clock of the thread that runs it, which does not
//! advance while the thread waits: time the attempt spends suspended (a WASI sleep) is not
//! charged. An attempt that has a thread to itself (`Sandbox::run_blocking`, what guest
//! threads use) is charged the thread's clock from start to end: two reads an attempt. One
//! run on a shared runtime is charged per poll, read when each poll starts and ends, so what
//! other tasks do on its threads is not charged to it. The epoch callback reads
//! [`CpuMeter::spent`] every tick to enforce `cpu_ms`, in either metering.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};

/// Nanoseconds of CPU the calling thread has used.
fn thread_cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// CPU time charged to one attempt so far.
#[derive(Debug, Default)]
pub(super) struct CpuMeter {
    /// The thread's clock when the attempt began, for an attempt with a thread to itself; 0
    /// for one charged per poll.
    thread_began_ns: u64,
    /// Nanoseconds of the polls that ended.
    spent_ns: AtomicU64,
    /// The thread CPU clock when the poll running now began; 0 between polls.
    poll_began_ns: AtomicU64,
}

impl CpuMeter {
    /// A meter for an attempt that runs on this thread, alone, from now to its end.
    pub(super) fn whole_thread() -> Self {
        Self {
            thread_began_ns: thread_cpu_ns().max(1),
            ..Self::default()
        }
    }

    /// A meter charged per poll (see [`Metered`]).
    pub(super) fn per_poll() -> Self {
        Self::default()
    }

    /// CPU time charged so far, the poll running now included. Exact when called on the
    /// polling thread (as the epoch callback is); elsewhere, the polls that ended.
    pub(super) fn spent(&self) -> Duration {
        if self.thread_began_ns != 0 {
            return Duration::from_nanos(thread_cpu_ns().saturating_sub(self.thread_began_ns));
        }
        let mut ns = self.spent_ns.load(Ordering::Relaxed);
        let began = self.poll_began_ns.load(Ordering::Relaxed);
        if began != 0 {
            ns += thread_cpu_ns().saturating_sub(began);
        }
        Duration::from_nanos(ns)
    }
}

/// `future`, its polls charged to `meter` (unless the meter reads the whole thread).
pub(super) struct Metered<'a, T> {
    future: Pin<Box<dyn Future<Output = T> + 'a>>,
    meter: Arc<CpuMeter>,
}

impl<'a, T> Metered<'a, T> {
    pub(super) fn new(future: impl Future<Output = T> + 'a, meter: Arc<CpuMeter>) -> Self {
        Self {
            future: Box::pin(future),
            meter,
        }
    }
}

impl<T> Future for Metered<'_, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if self.meter.thread_began_ns != 0 {
            return self.future.as_mut().poll(cx);
        }
        // 0 means "not polling"; a thread that has used no CPU at all reads 1.
        let began = thread_cpu_ns().max(1);
        self.meter.poll_began_ns.store(began, Ordering::Relaxed);
        let result = self.future.as_mut().poll(cx);
        let ended = thread_cpu_ns();
        self.meter
            .spent_ns
            .fetch_add(ended.saturating_sub(began), Ordering::Relaxed);
        self.meter.poll_began_ns.store(0, Ordering::Relaxed);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(for_: Duration) {
        let start = thread_cpu_ns();
        while thread_cpu_ns() - start < for_.as_nanos() as u64 {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn compute_is_charged_and_time_suspended_is_not_on_a_thread_or_per_poll() {
        for meter in [CpuMeter::whole_thread(), CpuMeter::per_poll()] {
            let meter = Arc::new(meter);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let work = async {
                spin(Duration::from_millis(30));
                tokio::time::sleep(Duration::from_millis(200)).await;
                spin(Duration::from_millis(30));
            };
            runtime.block_on(Metered::new(work, meter.clone()));
            let spent = meter.spent();
            assert!(
                spent >= Duration::from_millis(60) && spent < Duration::from_millis(150),
                "two 30 ms spins around a 200 ms sleep, charged {spent:?}"
            );
        }
    }

    #[test]
    fn per_poll_what_other_tasks_do_on_the_thread_is_not_charged() {
        let meter = Arc::new(CpuMeter::per_poll());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let other = tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                spin(Duration::from_millis(100));
            });
            let work = async {
                tokio::time::sleep(Duration::from_millis(300)).await;
            };
            Metered::new(work, meter.clone()).await;
            other.await.unwrap();
        });
        assert!(
            meter.spent() < Duration::from_millis(50),
            "{:?}",
            meter.spent()
        );
    }
}
