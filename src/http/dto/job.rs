//! Job shapes: a submit (one or a batch; what the job runs is `spec.rs`), a job as the API
//! shows it with its attempts, a page of jobs, an explanation, the answers of cancel and
//! clean, and job events.

use serde::de::MapAccess;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::flat::{self, FieldGroup};
use super::{JobSpec, LimitsDto, encode_bytes, time};
use crate::domain::{AttemptRecord, Job, whole};
use crate::service::{Explanation, JobEvent};

/// A job to submit: what it runs ([`JobSpec`]) and when it may start, all at the top level
/// of the body.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubmitJob {
    #[serde(flatten)]
    pub job: JobSpec,
    #[serde(flatten)]
    pub submit: SubmitOptions,
}

/// What only a submit says: when the job may start, and the key that keeps it unique.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct SubmitOptions {
    /// Run no earlier than this many seconds from now (at most 366 days).
    #[schema(minimum = 0, maximum = 31_622_400)]
    pub delay_seconds: Option<f64>,
    /// Run no earlier than this RFC 3339 time.
    #[schema(format = DateTime)]
    pub run_at: Option<String>,
    /// Keep the job held until released.
    #[serde(default)]
    pub hold: bool,
    /// While a live job has this key, submitting another returns that job.
    #[schema(min_length = 1, max_length = 512)]
    pub unique_key: Option<String>,
}

/// Every field of a submit, in the order an unknown field's error lists them (the order of
/// the wire before the job's fields were a `JobSpec`); a test checks it against both groups.
pub(super) const SUBMIT_FIELDS: &[&str] = &[
    "task",
    "input",
    "input_text",
    "input_base64",
    "args",
    "env",
    "queue",
    "priority",
    "delay_seconds",
    "run_at",
    "hold",
    "unique_key",
    "context",
    "concurrency_key",
    "limits",
    "retry",
];

impl FieldGroup for SubmitOptions {
    fn read_field<'de, M: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut M,
    ) -> Result<bool, M::Error> {
        match key {
            "delay_seconds" => self.delay_seconds = map.next_value()?,
            "run_at" => self.run_at = map.next_value()?,
            "hold" => self.hold = map.next_value()?,
            "unique_key" => self.unique_key = map.next_value()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

flat::flat_body!(
    SubmitJob {
        job: JobSpec,
        submit: SubmitOptions
    },
    SUBMIT_FIELDS,
    "A job to submit."
);

/// Many jobs at once, stored in one transaction.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBatch {
    pub jobs: Vec<SubmitJob>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchResult {
    pub jobs: Vec<JobDto>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProgressDto {
    #[serde(deserialize_with = "crate::domain::whole::int")]
    pub done: i64,
    #[serde(deserialize_with = "crate::domain::whole::int")]
    pub total: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobErrorDto {
    pub reason: String,
    pub message: String,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobDto {
    pub id: String,
    pub task: String,
    pub digest: String,
    pub queue: String,
    /// held, scheduled, queued, running, completed, failed or cancelled.
    pub state: String,
    pub priority: i32,
    pub run_at: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Attempts started so far, over every retry of the job; also the latest's number.
    pub attempts: u32,
    /// The attempts the job may have in all: those before its latest retry, if any, and its
    /// retry policy's budget after it.
    pub max_attempts: u32,
    pub progress: Option<ProgressDto>,
    #[schema(value_type = Option<Value>)]
    pub output: Option<Value>,
    /// json, text or base64.
    pub output_encoding: Option<String>,
    pub error: Option<JobErrorDto>,
    pub unique_key: Option<String>,
    pub context: Option<String>,
    pub concurrency_key: Option<String>,
    pub limits: LimitsDto,
    pub worker: Option<String>,
    pub submitter: Option<String>,
    /// Every attempt with its receipt (on single-job reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_history: Option<Vec<AttemptDto>>,
}

impl JobDto {
    pub fn from_job(j: &Job) -> Self {
        let (output, output_encoding) = match &j.output {
            Some(bytes) => {
                let (v, e) = encode_bytes(bytes);
                (Some(v), Some(e.to_owned()))
            }
            None => (None, None),
        };
        Self {
            id: j.id.to_string(),
            task: j.task.to_string(),
            digest: j.digest.to_hex(),
            queue: j.queue.to_string(),
            state: j.state.to_string(),
            priority: j.priority,
            run_at: time(j.run_at),
            created_at: time(j.created_at),
            started_at: j.started_at.map(time),
            finished_at: j.finished_at.map(time),
            attempts: j.attempts,
            max_attempts: j.attempt_base + j.retry.retries + 1,
            progress: j.progress.map(|(done, total)| ProgressDto { done, total }),
            output,
            output_encoding,
            error: j.error.as_ref().map(|e| JobErrorDto {
                reason: e.reason.to_string(),
                message: e.message.clone(),
            }),
            unique_key: j.unique_key.clone(),
            context: j.context.clone(),
            concurrency_key: j.concurrency_key.clone(),
            limits: LimitsDto::from_limits(&j.limits),
            worker: j.worker.clone(),
            submitter: j.submitter.clone(),
            attempt_history: None,
        }
    }
}

/// What an attempt cost, as the sandbox measured it: in a job's attempts, and in a remote
/// worker's report (where a count left out is 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReceiptDto {
    /// Fuel consumed; absent when the attempt ran under CPU-time metering.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::option"
    )]
    pub fuel_consumed: Option<u64>,
    /// CPU time the guest's thread spent, in microseconds (time asleep not counted).
    #[serde(default, deserialize_with = "whole::int64")]
    pub cpu_us: u64,
    /// The largest the guest's linear memory grew to, in bytes.
    #[serde(default, deserialize_with = "whole::int64")]
    pub peak_memory_bytes: u64,
    /// From the start of the attempt to its end, in microseconds.
    #[serde(default, deserialize_with = "whole::int64")]
    pub wall_us: u64,
    /// Creating the store and instantiating, in microseconds.
    #[serde(default, deserialize_with = "whole::int64")]
    pub instantiate_us: u64,
    /// Where the compiled code came from: `memory`, `disk` or `miss`.
    #[schema(pattern = "^(memory|disk|miss)$")]
    pub compile_cache: String,
    #[serde(default, deserialize_with = "whole::int64")]
    pub stdout_bytes: u64,
    #[serde(default, deserialize_with = "whole::int64")]
    pub stderr_bytes: u64,
}

impl ReceiptDto {
    /// The receipt as stored with the attempt (JSON the sandbox wrote); fields an older
    /// version did not write are 0.
    pub fn from_stored(stored: &Value) -> Self {
        serde_json::from_value(stored.clone()).unwrap_or_default()
    }
}

/// One attempt and its receipt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptDto {
    pub number: u32,
    pub reason: String,
    pub trap_kind: Option<String>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub stderr_bytes: usize,
    pub stderr_truncated: bool,
    pub receipt: ReceiptDto,
    pub worker: String,
    pub started_at: String,
    pub finished_at: String,
    /// Whether the attempt's bundle (`GET /v1/jobs/{id}/attempts/{n}/bundle`) replays it.
    #[serde(default)]
    pub replayable: bool,
    /// Why it does not, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_replayable: Option<String>,
}

impl AttemptDto {
    pub fn from_record(a: &AttemptRecord) -> Self {
        Self {
            number: a.number,
            reason: a.reason.to_string(),
            trap_kind: a.trap_kind.map(|k| k.to_string()),
            exit_code: a.exit_code,
            message: a.message.clone(),
            stderr_bytes: a.stderr.len(),
            stderr_truncated: a.stderr_truncated,
            receipt: ReceiptDto::from_stored(&a.receipt),
            worker: a.worker.clone(),
            started_at: time(a.started_at),
            finished_at: time(a.finished_at),
            replayable: a
                .replay
                .as_ref()
                .is_some_and(|r| r.recording.not_replayable.is_none()),
            not_replayable: match &a.replay {
                Some(r) => r.recording.not_replayable.clone(),
                None => Some("the attempt was not recorded".to_owned()),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobDto>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next: Option<String>,
}

/// A page of the contexts live jobs carry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ContextList {
    pub contexts: Vec<ContextDto>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next: Option<String>,
}

/// A context and how many live (held, scheduled, queued or running) jobs carry it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ContextDto {
    pub context: String,
    pub live: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExplainDto {
    pub state: String,
    pub causes: Vec<String>,
    pub message: String,
}

impl ExplainDto {
    pub fn from(e: &Explanation) -> Self {
        Self {
            state: e.state.to_string(),
            causes: e.causes.iter().map(|c| c.to_string()).collect(),
            message: e.message.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CancelDto {
    /// cancelled, cancelling (it was running and is being interrupted), or already_ended.
    pub outcome: String,
    pub job: JobDto,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CountDto {
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventDto {
    pub id: String,
    pub task: String,
    pub queue: String,
    pub state: String,
    pub at: String,
}

impl EventDto {
    pub fn from_event(e: &JobEvent) -> Self {
        Self {
            id: e.id.to_string(),
            task: e.task.to_string(),
            queue: e.queue.to_string(),
            state: e.state.to_string(),
            at: time(e.at),
        }
    }
}

/// Which jobs to cancel at once. At least one filter, or `all: true`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelFilter {
    /// Only jobs in these states (of held, scheduled, queued, running).
    #[serde(default)]
    #[schema(inline, value_type = Vec<String>, pattern = "^(held|scheduled|queued|running|delayed|processing)$")]
    pub state: Vec<String>,
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", max_length = 64)]
    pub task: Option<String>,
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", max_length = 64)]
    pub queue: Option<String>,
    pub context: Option<String>,
    pub unique_key: Option<String>,
    /// Cancel every job that has not ended.
    #[serde(default)]
    pub all: bool,
}

/// Which ended jobs to remove.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CleanRequest {
    /// Only jobs that ended longer ago than this; all ended jobs when absent.
    #[schema(minimum = 0)]
    pub older_than_seconds: Option<f64>,
}
