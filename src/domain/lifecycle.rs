//! The job state machine, written down once: the allowed moves as data ([`MOVES`]: from,
//! event, to), the vocabulary of an attempt's end ([`Finish`]), and the one pure function that
//! decides it ([`after_attempt`]) from the job, how the attempt ended, the queue's caps and the
//! time.
//!
//! Store backends carry out these moves, each as one update guarded by the states the event
//! may leave ([`Event::sources`]) and, for a running job, by its lease; they decide nothing.
//! The diagram in `ARCHITECTURE.md` is checked against [`MOVES`] by a test.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Job, JobId, JobState, Limits, Reason, Timestamp};

/// What moves a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A submit (or a schedule's fire) stores a job that may run now.
    Submit,
    /// A submit stores a job to be released by hand.
    SubmitHeld,
    /// A submit stores a job that runs at a later time.
    SubmitDelayed,
    /// An operator releases a held job.
    Release,
    /// A scheduled job's `run_at` came (a delayed job, a retry after its backoff).
    Due,
    /// A worker claims a queued job under a new lease.
    Claim,
    /// The attempt completed.
    Complete,
    /// The attempt failed and the policy retries it after a backoff (or the requeue delay,
    /// when its lease expired).
    BackOff,
    /// The attempt failed and the policy gives up.
    Fail,
    /// A waiting job is cancelled at once; a running one when its interrupted attempt ends.
    Cancel,
    /// The worker shut down during the attempt: back to `queued`, the attempt not spent.
    Interrupt,
    /// An operator runs a failed or cancelled job again, with a fresh attempt budget.
    Retry,
    /// An operator deletes a job that is not running.
    Delete,
    /// Retention removes an ended job.
    Clean,
}

impl Event {
    pub const ALL: [Event; 14] = [
        Event::Submit,
        Event::SubmitHeld,
        Event::SubmitDelayed,
        Event::Release,
        Event::Due,
        Event::Claim,
        Event::Complete,
        Event::BackOff,
        Event::Fail,
        Event::Cancel,
        Event::Interrupt,
        Event::Retry,
        Event::Delete,
        Event::Clean,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Submit => "submit",
            Event::SubmitHeld => "submit_held",
            Event::SubmitDelayed => "submit_delayed",
            Event::Release => "release",
            Event::Due => "due",
            Event::Claim => "claim",
            Event::Complete => "complete",
            Event::BackOff => "back_off",
            Event::Fail => "fail",
            Event::Cancel => "cancel",
            Event::Interrupt => "interrupt",
            Event::Retry => "retry",
            Event::Delete => "delete",
            Event::Clean => "clean",
        }
    }

    /// The states this event moves a job out of, in [`JobState::ALL`] order: the guard of
    /// the store's update.
    pub fn sources(self) -> impl Iterator<Item = JobState> {
        JobState::ALL
            .into_iter()
            .filter(move |s| MOVES.iter().any(|m| m.event == self && m.from == Some(*s)))
    }

    /// The state a job in `from` is in after this event (`None`: the job is gone), or why
    /// the move is refused.
    pub fn apply(self, from: Option<JobState>) -> Result<Option<JobState>, Refused> {
        MOVES
            .iter()
            .find(|m| m.event == self && m.from == from)
            .map(|m| m.to)
            .ok_or(Refused { from, event: self })
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One allowed move: a job in `from` (`None`: not stored yet) goes to `to` (`None`: removed)
/// on `event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub from: Option<JobState>,
    pub event: Event,
    pub to: Option<JobState>,
}

const fn mv(from: Option<JobState>, event: Event, to: Option<JobState>) -> Move {
    Move { from, event, to }
}

use JobState::{Cancelled, Completed, Failed, Held, Queued, Running, Scheduled};

/// Every allowed move; every other (state, event) pair is refused.
pub const MOVES: &[Move] = &[
    mv(None, Event::Submit, Some(Queued)),
    mv(None, Event::SubmitHeld, Some(Held)),
    mv(None, Event::SubmitDelayed, Some(Scheduled)),
    mv(Some(Held), Event::Release, Some(Queued)),
    mv(Some(Scheduled), Event::Due, Some(Queued)),
    mv(Some(Queued), Event::Claim, Some(Running)),
    mv(Some(Running), Event::Complete, Some(Completed)),
    mv(Some(Running), Event::BackOff, Some(Scheduled)),
    mv(Some(Running), Event::Fail, Some(Failed)),
    mv(Some(Running), Event::Interrupt, Some(Queued)),
    mv(Some(Held), Event::Cancel, Some(Cancelled)),
    mv(Some(Scheduled), Event::Cancel, Some(Cancelled)),
    mv(Some(Queued), Event::Cancel, Some(Cancelled)),
    mv(Some(Running), Event::Cancel, Some(Cancelled)),
    mv(Some(Failed), Event::Retry, Some(Queued)),
    mv(Some(Cancelled), Event::Retry, Some(Queued)),
    mv(Some(Held), Event::Delete, None),
    mv(Some(Scheduled), Event::Delete, None),
    mv(Some(Queued), Event::Delete, None),
    mv(Some(Completed), Event::Delete, None),
    mv(Some(Failed), Event::Delete, None),
    mv(Some(Cancelled), Event::Delete, None),
    mv(Some(Completed), Event::Clean, None),
    mv(Some(Failed), Event::Clean, None),
    mv(Some(Cancelled), Event::Clean, None),
];

/// A move the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{event} is not allowed for a job that is {}", from.map_or("not stored", JobState::as_str))]
pub struct Refused {
    pub from: Option<JobState>,
    pub event: Event,
}

/// The error a failed (or cancelled) job ended with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    pub reason: Reason,
    pub message: String,
}

/// The fencing token of one claim: every update of the running job must present it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub token: i64,
    pub expires_at: Timestamp,
}

/// How a running job's attempt ends, as [`after_attempt`] decides it: the event, and what the
/// store writes with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    Completed {
        output: Vec<u8>,
    },
    /// Back to `scheduled` at `run_at`, with the limits of the next attempt.
    Retry {
        run_at: Timestamp,
        limits: Limits,
        error: JobError,
    },
    Failed {
        error: JobError,
    },
    Cancelled {
        error: JobError,
    },
    /// Back to `queued` without spending the attempt (graceful shutdown).
    Interrupted,
}

impl Finish {
    /// The event this end is.
    pub fn event(&self) -> Event {
        match self {
            Finish::Completed { .. } => Event::Complete,
            Finish::Retry { .. } => Event::BackOff,
            Finish::Failed { .. } => Event::Fail,
            Finish::Cancelled { .. } => Event::Cancel,
            Finish::Interrupted => Event::Interrupt,
        }
    }

    /// The state the job is in after this end.
    pub fn state(&self) -> JobState {
        match self.event().apply(Some(Running)) {
            Ok(Some(state)) => state,
            // Every event of a `Finish` moves a running job to a state (a test checks it).
            _ => Running,
        }
    }
}

/// How an attempt ended, as far as the job's next state goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// Stopped by its worker's shutdown, not by a cancel: the attempt does not count.
    Interrupted,
    /// Ended with `reason` (the guest's, or `lease_lost` when its worker went silent).
    Ran {
        reason: Reason,
        message: Option<String>,
        output: Vec<u8>,
    },
}

/// What besides the job's own policy decides its next state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndRules {
    /// The queue's caps: escalated limits never go above them.
    pub caps: Limits,
    /// The delay before a job whose lease expired runs again (the seed's 5 s), instead of
    /// the policy's backoff.
    pub lease_lost_delay: Duration,
}

/// The next state of `job`, whose attempt number `job.attempts` ended as `ending`: the job's
/// retry policy decides from the reason and the attempts since its last retry (if any), with
/// a jitter draw fixed by the job and attempt.
pub fn after_attempt(job: &Job, ending: Ending, rules: &EndRules, now: Timestamp) -> Finish {
    let Ending::Ran {
        reason,
        message,
        output,
    } = ending
    else {
        return Finish::Interrupted;
    };
    let error = JobError {
        reason,
        message: message.unwrap_or_else(|| reason.to_string()),
    };
    let draw = jitter_draw(job.id, job.attempts);
    // A retried job's policy counts the attempts since the retry.
    let attempt = job.attempts.saturating_sub(job.attempt_base);
    match job
        .retry
        .decide(attempt, reason, &job.limits, &rules.caps, draw)
    {
        super::Decision::Complete => Finish::Completed { output },
        super::Decision::Retry { delay, limits } => {
            let delay = if reason == Reason::LeaseLost {
                rules.lease_lost_delay
            } else {
                delay
            };
            Finish::Retry {
                run_at: now.plus(delay),
                limits,
                error,
            }
        }
        super::Decision::GiveUp if reason == Reason::Cancelled => Finish::Cancelled { error },
        super::Decision::GiveUp => Finish::Failed { error },
    }
}

/// A number in [0, 1) that is the same for the same job and attempt (the jitter draw).
fn jitter_draw(id: JobId, attempt: u32) -> f64 {
    let mut input = id.as_u128().to_le_bytes().to_vec();
    input.extend_from_slice(&attempt.to_le_bytes());
    let hash = blake3::hash(&input);
    let bits = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was not running and is now `cancelled`.
    Cancelled,
    /// The job is running; it is marked, and its worker must interrupt it.
    Running,
    /// Nothing to cancel: the job had already ended in this state.
    AlreadyEnded(JobState),
    NotFound,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ModuleDigest, RetryPolicy};

    /// Every allowed move, written out by hand apart from the table it checks.
    const ALLOWED: &[(Option<JobState>, &str, Option<JobState>)] = &[
        (None, "submit", Some(Queued)),
        (None, "submit_held", Some(Held)),
        (None, "submit_delayed", Some(Scheduled)),
        (Some(Held), "release", Some(Queued)),
        (Some(Held), "cancel", Some(Cancelled)),
        (Some(Held), "delete", None),
        (Some(Scheduled), "due", Some(Queued)),
        (Some(Scheduled), "cancel", Some(Cancelled)),
        (Some(Scheduled), "delete", None),
        (Some(Queued), "claim", Some(Running)),
        (Some(Queued), "cancel", Some(Cancelled)),
        (Some(Queued), "delete", None),
        (Some(Running), "complete", Some(Completed)),
        (Some(Running), "back_off", Some(Scheduled)),
        (Some(Running), "fail", Some(Failed)),
        (Some(Running), "cancel", Some(Cancelled)),
        (Some(Running), "interrupt", Some(Queued)),
        (Some(Completed), "delete", None),
        (Some(Completed), "clean", None),
        (Some(Failed), "retry", Some(Queued)),
        (Some(Failed), "delete", None),
        (Some(Failed), "clean", None),
        (Some(Cancelled), "retry", Some(Queued)),
        (Some(Cancelled), "delete", None),
        (Some(Cancelled), "clean", None),
    ];

    #[test]
    fn every_allowed_move_is_in_the_table_and_every_other_is_refused() {
        let froms = std::iter::once(None).chain(JobState::ALL.into_iter().map(Some));
        let mut allowed = 0;
        for from in froms {
            for event in Event::ALL {
                let expected = ALLOWED
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event.as_str())
                    .map(|(_, _, to)| *to);
                match (event.apply(from), expected) {
                    (Ok(to), Some(want)) => {
                        assert_eq!(to, want, "{event} from {from:?}");
                        allowed += 1;
                    }
                    (Err(refused), None) => {
                        assert_eq!(refused, Refused { from, event });
                    }
                    (got, want) => panic!("{event} from {from:?}: {got:?}, expected {want:?}"),
                }
            }
        }
        assert_eq!(allowed, ALLOWED.len());
        assert_eq!(MOVES.len(), ALLOWED.len(), "no move is listed twice");
    }

    #[test]
    fn guards_name_the_states_an_event_leaves() {
        let sources = |e: Event| e.sources().collect::<Vec<_>>();
        assert_eq!(sources(Event::Release), [Held]);
        assert_eq!(sources(Event::Claim), [Queued]);
        assert_eq!(sources(Event::Retry), [Failed, Cancelled]);
        assert_eq!(sources(Event::Cancel), [Held, Scheduled, Queued, Running]);
        assert_eq!(sources(Event::Clean), [Completed, Failed, Cancelled]);
        assert!(
            sources(Event::Submit).is_empty(),
            "only new jobs are submitted"
        );
        assert!(!sources(Event::Delete).contains(&Running));
        assert_eq!(
            Refused {
                from: Some(Running),
                event: Event::Delete
            }
            .to_string(),
            "delete is not allowed for a job that is running"
        );
    }

    fn running_job(attempts: u32, retry: RetryPolicy) -> Job {
        let new = super::super::NewJob {
            id: JobId::from_u128(42),
            task: "t".parse().unwrap(),
            digest: ModuleDigest::of(b"m"),
            queue: super::super::QueueName::default_queue(),
            input: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            priority: 0,
            start: super::super::Start::Now,
            unique_key: None,
            context: None,
            concurrency_key: None,
            limits: Limits::default(),
            retry,
            submitter: None,
            created_at: Timestamp(0),
        };
        Job {
            state: Running,
            attempts,
            ..new.into_job()
        }
    }

    fn ran(reason: Reason) -> Ending {
        Ending::Ran {
            reason,
            message: None,
            output: b"out".to_vec(),
        }
    }

    #[test]
    fn an_attempt_end_is_decided_by_the_policy_and_the_rules() {
        let now = Timestamp(1_000_000);
        let rules = EndRules {
            caps: Limits::default(),
            lease_lost_delay: Duration::from_secs(5),
        };
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let job = running_job(1, policy.clone());
        let decide = |ending| after_attempt(&job, ending, &rules, now);
        assert_eq!(
            decide(ran(Reason::Completed)),
            Finish::Completed {
                output: b"out".to_vec()
            }
        );
        let Finish::Retry { run_at, error, .. } = decide(ran(Reason::RetryableError)) else {
            panic!("retried");
        };
        assert_eq!(run_at, now.plus(Duration::from_secs(5)), "the backoff");
        assert_eq!(
            error.message, "retryable_error",
            "the reason when no message"
        );
        let Finish::Retry { run_at, .. } = decide(Ending::Ran {
            reason: Reason::LeaseLost,
            message: Some("lease expired (w)".into()),
            output: Vec::new(),
        }) else {
            panic!("retried");
        };
        assert_eq!(run_at, now.plus(rules.lease_lost_delay));
        assert!(matches!(decide(ran(Reason::Trap)), Finish::Failed { .. }));
        assert!(matches!(
            decide(ran(Reason::Cancelled)),
            Finish::Cancelled { .. }
        ));
        assert_eq!(decide(Ending::Interrupted), Finish::Interrupted);
        let spent = running_job(4, policy);
        let end = after_attempt(&spent, ran(Reason::LeaseLost), &rules, now);
        assert_eq!(
            end,
            Finish::Failed {
                error: JobError {
                    reason: Reason::LeaseLost,
                    message: "lease_lost".into()
                }
            },
            "retries spent"
        );
    }

    #[test]
    fn a_retried_job_counts_its_attempts_from_the_retry() {
        let rules = EndRules {
            caps: Limits::default(),
            lease_lost_delay: Duration::from_secs(5),
        };
        let policy = RetryPolicy {
            retries: 1,
            backoff_seconds: 5.0,
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        // Four attempts before the retry; the policy allows one retry after it.
        let after_retry = |attempts| Job {
            attempt_base: 4,
            ..running_job(attempts, policy.clone())
        };
        let end = |job: &Job| after_attempt(job, ran(Reason::RetryableError), &rules, Timestamp(0));
        let Finish::Retry { run_at, .. } = end(&after_retry(5)) else {
            panic!("the first attempt after the retry is retried");
        };
        assert_eq!(run_at, Timestamp(5_000), "the first backoff, not the fifth");
        assert!(matches!(end(&after_retry(6)), Finish::Failed { .. }));
    }

    #[test]
    fn every_finish_moves_a_running_job() {
        let error = JobError {
            reason: Reason::Trap,
            message: String::new(),
        };
        let finishes = [
            Finish::Completed { output: Vec::new() },
            Finish::Retry {
                run_at: Timestamp(0),
                limits: Limits::default(),
                error: error.clone(),
            },
            Finish::Failed {
                error: error.clone(),
            },
            Finish::Cancelled { error },
            Finish::Interrupted,
        ];
        let states: Vec<JobState> = finishes.iter().map(Finish::state).collect();
        assert_eq!(states, [Completed, Scheduled, Failed, Cancelled, Queued]);
    }
}
