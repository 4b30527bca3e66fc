//! The retry policy: a pure function of (policy, the attempt that just ended, now, a jitter
//! draw) that says what happens next. `retries` counts extra attempts after the first
//! (default 3, so 4 attempts), backoff grows from 5 s by a factor of 2 up to a cap with
//! jitter, and a `deadline`, `out_of_fuel` or `cpu_limit` doubles that budget for the next
//! attempt, never above the queue's cap. No clock and no randomness inside: callers pass both.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Limits, Reason};

/// How a job is retried. Set per task, overridable per job within the queue's caps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    #[serde(deserialize_with = "super::whole::int")]
    pub retries: u32,
    /// Delay before the first retry, in seconds.
    pub backoff_seconds: f64,
    /// Each further retry waits this many times longer.
    pub backoff_factor: f64,
    /// No retry waits longer than this, in seconds.
    pub backoff_max_seconds: f64,
    /// Up to this fraction of the delay is added at random, so retries do not stampede.
    pub jitter: f64,
    /// The reasons that are retried.
    pub retry_on: Vec<Reason>,
    /// Double `max_seconds` after a `deadline`, fuel after `out_of_fuel` and `cpu_ms` after
    /// `cpu_limit`.
    pub escalate: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 3,
            backoff_seconds: 5.0,
            backoff_factor: 2.0,
            backoff_max_seconds: 3600.0,
            jitter: 0.1,
            retry_on: vec![
                Reason::RetryableError,
                Reason::Deadline,
                Reason::OutOfFuel,
                Reason::CpuLimit,
                Reason::LeaseLost,
                Reason::HostError,
            ],
            escalate: true,
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The job is done: `completed`.
    Complete,
    /// Run again after `delay` with `limits` (escalated where the reason asks for it).
    Retry { delay: Duration, limits: Limits },
    /// Give up: `failed` (or `cancelled` when the attempt was cancelled).
    GiveUp,
}

impl RetryPolicy {
    /// Refuses a policy that cannot be applied.
    pub fn validate(&self) -> Result<(), String> {
        let finite_non_negative = |v: f64| v.is_finite() && v >= 0.0;
        if !finite_non_negative(self.backoff_seconds)
            || !finite_non_negative(self.backoff_max_seconds)
        {
            return Err(format!(
                "backoff_seconds and backoff_max_seconds must be non-negative numbers, got {} and {}",
                self.backoff_seconds, self.backoff_max_seconds
            ));
        }
        if !(self.backoff_factor.is_finite() && self.backoff_factor >= 1.0) {
            return Err(format!(
                "backoff_factor must be at least 1, got {}",
                self.backoff_factor
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!(
                "jitter must be between 0 and 1, got {}",
                self.jitter
            ));
        }
        if self.retries > 1000 {
            return Err(format!(
                "retries must be at most 1000, got {}",
                self.retries
            ));
        }
        Ok(())
    }

    /// Decides after attempt number `attempt` (1 for the first) ended with `reason` under
    /// `limits`. `caps` bounds escalation; `jitter_draw` is a number in [0, 1).
    pub fn decide(
        &self,
        attempt: u32,
        reason: Reason,
        limits: &Limits,
        caps: &Limits,
        jitter_draw: f64,
    ) -> Decision {
        if reason == Reason::Completed {
            return Decision::Complete;
        }
        if reason == Reason::Cancelled || !self.retry_on.contains(&reason) || attempt > self.retries
        {
            return Decision::GiveUp;
        }
        Decision::Retry {
            delay: self.backoff(attempt, jitter_draw),
            limits: self.escalated(reason, limits, caps),
        }
    }

    /// The delay before the retry that follows attempt number `attempt`.
    pub fn backoff(&self, attempt: u32, jitter_draw: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = (self.backoff_seconds * self.backoff_factor.powi(exponent))
            .min(self.backoff_max_seconds);
        let jittered = base * (1.0 + self.jitter * jitter_draw.clamp(0.0, 1.0));
        Duration::from_secs_f64(jittered.min(self.backoff_max_seconds * (1.0 + self.jitter)))
    }

    fn escalated(&self, reason: Reason, limits: &Limits, caps: &Limits) -> Limits {
        let mut next = *limits;
        if !self.escalate {
            return next;
        }
        match reason {
            Reason::Deadline => {
                next.max_time = (limits.max_time * 2)
                    .min(caps.max_time)
                    .max(limits.max_time)
            }
            Reason::OutOfFuel => {
                next.fuel = limits
                    .fuel
                    .saturating_mul(2)
                    .min(caps.fuel)
                    .max(limits.fuel)
            }
            Reason::CpuLimit => {
                next.cpu_time = limits.cpu_time.map(|t| {
                    let doubled = t.saturating_mul(2);
                    caps.cpu_time.map_or(doubled, |cap| doubled.min(cap)).max(t)
                })
            }
            _ => {}
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(fuel: u64, secs: u64) -> Limits {
        Limits {
            fuel,
            max_time: Duration::from_secs(secs),
            ..Limits::default()
        }
    }

    #[test]
    fn each_reason_is_retried_or_not_by_default() {
        let p = RetryPolicy::default();
        let l = Limits::default();
        let table = [
            (Reason::Completed, "complete"),
            (Reason::GuestError, "give up"),
            (Reason::RetryableError, "retry"),
            (Reason::Trap, "give up"),
            (Reason::OutOfFuel, "retry"),
            (Reason::CpuLimit, "retry"),
            (Reason::Deadline, "retry"),
            (Reason::MemoryLimit, "give up"),
            (Reason::OutputLimit, "give up"),
            (Reason::Cancelled, "give up"),
            (Reason::LeaseLost, "retry"),
            (Reason::HostError, "retry"),
        ];
        for (reason, expected) in table {
            let got = match p.decide(1, reason, &l, &l, 0.0) {
                Decision::Complete => "complete",
                Decision::Retry { .. } => "retry",
                Decision::GiveUp => "give up",
            };
            assert_eq!(got, expected, "{reason}");
        }
    }

    #[test]
    fn three_retries_mean_four_attempts() {
        let p = RetryPolicy::default();
        let l = Limits::default();
        let decisions: Vec<bool> = (1..=5)
            .map(|attempt| {
                matches!(
                    p.decide(attempt, Reason::RetryableError, &l, &l, 0.0),
                    Decision::Retry { .. }
                )
            })
            .collect();
        assert_eq!(decisions, [true, true, true, false, false]);
    }

    #[test]
    fn backoff_doubles_from_five_seconds_with_jitter_and_a_cap() {
        let p = RetryPolicy {
            backoff_max_seconds: 30.0,
            ..RetryPolicy::default()
        };
        let secs: Vec<f64> = (1..=5).map(|a| p.backoff(a, 0.0).as_secs_f64()).collect();
        assert_eq!(secs, [5.0, 10.0, 20.0, 30.0, 30.0]);
        assert_eq!(p.backoff(1, 0.5).as_secs_f64(), 5.25);
        assert!(p.backoff(9, 0.999).as_secs_f64() <= 33.0);
    }

    #[test]
    fn deadline_doubles_max_seconds_and_fuel_doubles_fuel_within_caps() {
        let p = RetryPolicy::default();
        let caps = limits(1_000, 50);
        let Decision::Retry { limits: next, .. } =
            p.decide(1, Reason::Deadline, &limits(100, 20), &caps, 0.0)
        else {
            panic!("deadline is retried")
        };
        assert_eq!((next.max_time.as_secs(), next.fuel), (40, 100));
        let Decision::Retry { limits: next, .. } = p.decide(2, Reason::Deadline, &next, &caps, 0.0)
        else {
            panic!("deadline is retried")
        };
        assert_eq!(next.max_time.as_secs(), 50, "capped by the queue");
        let Decision::Retry { limits: next, .. } =
            p.decide(1, Reason::OutOfFuel, &limits(600, 20), &caps, 0.0)
        else {
            panic!("out_of_fuel is retried")
        };
        assert_eq!((next.fuel, next.max_time.as_secs()), (1_000, 20));
    }

    #[test]
    fn cpu_limit_doubles_the_cpu_budget_within_caps_and_leaves_an_unbudgeted_job_alone() {
        let p = RetryPolicy::default();
        let with_cpu = |ms| limits(100, 20).with_cpu_ms(ms).unwrap();
        let caps = with_cpu(Some(300));
        let next = |l: &Limits, caps: &Limits| match p.decide(1, Reason::CpuLimit, l, caps, 0.0) {
            Decision::Retry { limits, .. } => limits,
            other => panic!("cpu_limit is retried, got {other:?}"),
        };
        let once = next(&with_cpu(Some(100)), &caps);
        assert_eq!(
            (once.cpu_ms(), once.fuel, once.max_seconds()),
            (Some(200), 100, 20.0)
        );
        assert_eq!(
            next(&once, &caps).cpu_ms(),
            Some(300),
            "capped by the queue"
        );
        let uncapped = next(&with_cpu(Some(100)), &limits(100, 20));
        assert_eq!(uncapped.cpu_ms(), Some(200), "a queue without a CPU cap");
        assert_eq!(next(&with_cpu(None), &caps).cpu_ms(), None);
    }

    #[test]
    fn invalid_policies_are_refused() {
        assert!(
            RetryPolicy {
                jitter: 2.0,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            RetryPolicy {
                backoff_factor: 0.5,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            RetryPolicy {
                backoff_seconds: f64::NAN,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(RetryPolicy::default().validate().is_ok());
    }
}
