//! What a submit asks for, and how it becomes a [`NewJob`]: the task's digest is pinned, the
//! queue, limits and retry policy come from the request, else the task's defaults, else the
//! queue's; limits must fit the queue's caps; how it starts follows from hold / delay / run_at.

use std::time::Duration;

use crate::domain::{
    JobId, Limits, LimitsOverride, NewJob, QueueName, RetryPolicy, Start, TaskName, Timestamp,
};
use crate::domain::{QueueConfig, TaskRecord};

use super::ServiceError;

/// A job as an application asks for it.
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    pub task: TaskName,
    pub input: Vec<u8>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub queue: Option<QueueName>,
    /// Higher runs first.
    pub priority: i32,
    /// Run no earlier than this long from now.
    pub delay: Option<Duration>,
    /// Run no earlier than this time.
    pub run_at: Option<Timestamp>,
    /// Keep the job `held` until released.
    pub hold: bool,
    /// While a live job has this key, submitting another returns that job.
    pub unique_key: Option<String>,
    /// A free string to find all jobs about one object.
    pub context: Option<String>,
    /// Jobs of one queue with this key run no more at once than the queue's
    /// `key_concurrency`.
    pub concurrency_key: Option<String>,
    /// Fields laid over the task's default limits (else the queue's).
    pub limits: LimitsOverride,
    pub retry: Option<RetryPolicy>,
    pub submitter: Option<String>,
}

impl SubmitRequest {
    /// A request to run `task` with `input` and everything else defaulted.
    pub fn new(task: TaskName, input: impl Into<Vec<u8>>) -> Self {
        Self {
            task,
            input: input.into(),
            args: Vec::new(),
            env: Vec::new(),
            queue: None,
            priority: 0,
            delay: None,
            run_at: None,
            hold: false,
            unique_key: None,
            context: None,
            concurrency_key: None,
            limits: LimitsOverride::default(),
            retry: None,
            submitter: None,
        }
    }

    pub(super) fn resolve(
        self,
        task: &TaskRecord,
        queue: &QueueConfig,
        now: Timestamp,
    ) -> Result<NewJob, ServiceError> {
        let invalid = ServiceError::Invalid;
        if self.delay.is_some() && self.run_at.is_some() {
            return Err(invalid("give delay or run_at, not both".into()));
        }
        let limits = self
            .limits
            .over(task.defaults.limits.unwrap_or(queue.default_limits))
            .map_err(|e| invalid(e.to_string()))?;
        check_caps(&limits, &queue.caps, &queue.name)?;
        let retry = self
            .retry
            .or_else(|| task.defaults.retry.clone())
            .unwrap_or_default();
        retry.validate().map_err(invalid)?;
        for (field, key) in [
            ("unique_key", &self.unique_key),
            ("concurrency_key", &self.concurrency_key),
        ] {
            // Characters, as the API's schema counts a string's length.
            if let Some(key) = key
                && !(1..=512).contains(&key.chars().count())
            {
                return Err(invalid(format!(
                    "{field} must be 1 to 512 characters, got {}",
                    key.chars().count()
                )));
            }
        }
        let start = match (self.hold, self.delay, self.run_at) {
            (true, _, _) => Start::Held,
            (false, Some(d), _) => Start::At(now.plus(d)),
            (false, None, Some(t)) => Start::At(t),
            (false, None, None) => Start::Now,
        };
        let mut env = task.defaults.env.clone();
        for (k, v) in self.env {
            env.retain(|(existing, _)| *existing != k);
            env.push((k, v));
        }
        Ok(NewJob {
            id: JobId::generate(),
            task: task.name.clone(),
            digest: task.digest,
            queue: queue.name.clone(),
            input: self.input,
            args: self.args,
            env,
            priority: self.priority,
            start,
            unique_key: self.unique_key,
            context: self.context,
            concurrency_key: self.concurrency_key,
            limits,
            retry,
            submitter: self.submitter,
            created_at: now,
        })
    }
}

/// `limits` within `caps` of `queue`, or `OverCap` naming the first limit over its cap.
pub(super) fn check_caps(
    limits: &Limits,
    caps: &Limits,
    queue: &QueueName,
) -> Result<(), ServiceError> {
    let over = |what: &str, asked: String, cap: String| {
        Err(ServiceError::OverCap(format!(
            "{what} {asked} is over queue {queue}'s cap of {cap}"
        )))
    };
    if limits.fuel > caps.fuel {
        return over("fuel", limits.fuel.to_string(), caps.fuel.to_string());
    }
    if let Some(cap) = caps.cpu_ms()
        && limits.cpu_ms().is_none_or(|ms| ms > cap)
    {
        let asked = limits
            .cpu_ms()
            .map_or("none".to_owned(), |ms| ms.to_string());
        return over("cpu_ms", asked, cap.to_string());
    }
    if limits.max_time > caps.max_time {
        return over(
            "max_seconds",
            limits.max_seconds().to_string(),
            caps.max_seconds().to_string(),
        );
    }
    if limits.memory_bytes > caps.memory_bytes {
        return over(
            "memory_bytes",
            limits.memory_bytes.to_string(),
            caps.memory_bytes.to_string(),
        );
    }
    if limits.stdout_bytes > caps.stdout_bytes {
        return over(
            "stdout_bytes",
            limits.stdout_bytes.to_string(),
            caps.stdout_bytes.to_string(),
        );
    }
    if limits.stderr_bytes > caps.stderr_bytes {
        return over(
            "stderr_bytes",
            limits.stderr_bytes.to_string(),
            caps.stderr_bytes.to_string(),
        );
    }
    Ok(())
}
