//! The JSON wire shapes: what clients send and receive. Domain types are converted here and
//! nowhere else; times are RFC 3339 strings; bytes are JSON when they parse, else text, else
//! base64, with the encoding named.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::ApiError;
use crate::domain::{AttemptRecord, Job, Limits, LimitsOverride, RetryPolicy, Timestamp};
use crate::domain::{QueueStats, TaskDefaults, TaskRecord, TokenRecord};
use crate::sandbox::AdmissionReport;
use crate::service::{Explanation, JobEvent};

pub fn time(t: Timestamp) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t.0.max(0) as u64))
        .to_string()
}

pub fn parse_time(s: &str) -> Result<Timestamp, ApiError> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        ApiError::bad_request(
            "invalid_time",
            format!("run_at {s:?} is not an RFC 3339 time: {e}"),
        )
    })?;
    Ok(Timestamp(
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    ))
}

/// Bytes as JSON when they parse, else as text, else base64; with the encoding named.
pub fn encode_bytes(bytes: &[u8]) -> (Value, &'static str) {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return (v, "json");
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => (Value::String(s.to_owned()), "text"),
        Err(_) => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            "base64",
        ),
    }
}

/// Limits on the wire; on input every field is optional and filled from the defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsDto {
    pub fuel: Option<u64>,
    pub max_seconds: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub stdout_bytes: Option<u64>,
    pub stderr_bytes: Option<u64>,
}

impl LimitsDto {
    pub fn from_limits(l: &Limits) -> Self {
        Self {
            fuel: Some(l.fuel),
            max_seconds: Some(l.max_seconds()),
            memory_bytes: Some(l.memory_bytes),
            stdout_bytes: Some(l.stdout_bytes),
            stderr_bytes: Some(l.stderr_bytes),
        }
    }

    pub fn to_override(&self) -> LimitsOverride {
        LimitsOverride {
            fuel: self.fuel,
            max_seconds: self.max_seconds,
            memory_bytes: self.memory_bytes,
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
        }
    }
}

/// A job to submit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// The task name.
    pub task: String,
    /// The input as a JSON value (the guest's stdin is its JSON text).
    #[schema(value_type = Object)]
    pub input: Option<Value>,
    /// The input as text, passed as it is.
    pub input_text: Option<String>,
    /// The input as base64 bytes.
    pub input_base64: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub queue: Option<String>,
    #[serde(default)]
    pub priority: i32,
    /// Run no earlier than this many seconds from now.
    pub delay_seconds: Option<f64>,
    /// Run no earlier than this RFC 3339 time.
    pub run_at: Option<String>,
    /// Keep the job held until released.
    #[serde(default)]
    pub hold: bool,
    pub unique_key: Option<String>,
    pub context: Option<String>,
    pub limits: Option<LimitsDto>,
    #[schema(value_type = Object)]
    pub retry: Option<RetryPolicy>,
}

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
    pub done: i64,
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
    /// Attempts started so far.
    pub attempts: u32,
    pub max_attempts: u32,
    pub progress: Option<ProgressDto>,
    #[schema(value_type = Object)]
    pub output: Option<Value>,
    /// json, text or base64.
    pub output_encoding: Option<String>,
    pub error: Option<JobErrorDto>,
    pub unique_key: Option<String>,
    pub context: Option<String>,
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
            max_attempts: j.retry.retries + 1,
            progress: j.progress.map(|(done, total)| ProgressDto { done, total }),
            output,
            output_encoding,
            error: j.error.as_ref().map(|e| JobErrorDto {
                reason: e.reason.to_string(),
                message: e.message.clone(),
            }),
            unique_key: j.unique_key.clone(),
            context: j.context.clone(),
            limits: LimitsDto::from_limits(&j.limits),
            worker: j.worker.clone(),
            submitter: j.submitter.clone(),
            attempt_history: None,
        }
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
    #[schema(value_type = Object)]
    pub receipt: Value,
    pub worker: String,
    pub started_at: String,
    pub finished_at: String,
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
            receipt: a.receipt.clone(),
            worker: a.worker.clone(),
            started_at: time(a.started_at),
            finished_at: time(a.finished_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobDto>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next: Option<String>,
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

/// Task defaults: limits, retry policy, env and queue for its jobs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskDefaultsDto {
    pub queue: Option<String>,
    pub limits: Option<LimitsDto>,
    #[schema(value_type = Object)]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl TaskDefaultsDto {
    pub fn from_defaults(d: &TaskDefaults) -> Self {
        Self {
            queue: d.queue.as_ref().map(|q| q.to_string()),
            limits: d.limits.as_ref().map(LimitsDto::from_limits),
            retry: d.retry.clone(),
            env: d.env.iter().cloned().collect(),
        }
    }

    pub fn to_defaults(&self) -> Result<TaskDefaults, ApiError> {
        let queue = match &self.queue {
            Some(q) => Some(q.parse().map_err(|e: crate::domain::NameError| {
                ApiError::unprocessable("invalid", e.to_string())
            })?),
            None => None,
        };
        let limits = match &self.limits {
            Some(l) => Some(
                l.to_override()
                    .over(Limits::default())
                    .map_err(|e| ApiError::unprocessable("invalid_limits", e.to_string()))?,
            ),
            None => None,
        };
        Ok(TaskDefaults {
            queue,
            limits,
            retry: self.retry.clone(),
            env: self.env.clone().into_iter().collect(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionDto {
    pub digest: String,
    pub size_bytes: u64,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskDto {
    pub name: String,
    /// The newest version's digest.
    pub digest: String,
    pub defaults: TaskDefaultsDto,
    pub versions: Vec<VersionDto>,
    pub updated_at: String,
}

impl TaskDto {
    pub fn from_record(t: &TaskRecord) -> Self {
        Self {
            name: t.name.to_string(),
            digest: t.digest.to_hex(),
            defaults: TaskDefaultsDto::from_defaults(&t.defaults),
            versions: t
                .versions
                .iter()
                .map(|v| VersionDto {
                    digest: v.digest.to_hex(),
                    size_bytes: v.size_bytes,
                    created_at: time(v.created_at),
                })
                .collect(),
            updated_at: time(t.updated_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UploadDto {
    pub task: TaskDto,
    #[schema(value_type = Object)]
    pub admission: Value,
}

impl UploadDto {
    pub fn new(task: &TaskRecord, report: &AdmissionReport) -> Self {
        Self {
            task: TaskDto::from_record(task),
            admission: serde_json::to_value(report).unwrap_or(Value::Null),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueDto {
    pub name: String,
    pub concurrency: u32,
    pub paused: bool,
    pub default_limits: LimitsDto,
    pub caps: LimitsDto,
    /// Jobs by state.
    pub counts: BTreeMap<String, u64>,
}

impl QueueDto {
    pub fn from_stats(q: &QueueStats) -> Self {
        Self {
            name: q.config.name.to_string(),
            concurrency: q.config.concurrency,
            paused: q.paused,
            default_limits: LimitsDto::from_limits(&q.config.default_limits),
            caps: LimitsDto::from_limits(&q.config.caps),
            counts: q.counts.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        }
    }
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

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// admin, submit, worker or read.
    pub role: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenDto {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// The secret; shown once, when the token is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl TokenDto {
    pub fn from_record(t: &TokenRecord, secret: Option<String>) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            role: t.role.to_string(),
            created_at: time(t.created_at),
            revoked_at: t.revoked_at.map(time),
            token: secret,
        }
    }
}

/// Which jobs to cancel at once. At least one filter, or `all: true`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelFilter {
    /// Only jobs in these states (of held, scheduled, queued, running).
    #[serde(default)]
    pub state: Vec<String>,
    pub task: Option<String>,
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
    pub older_than_seconds: Option<f64>,
}

/// One version of a task, with its admission report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionDetailDto {
    pub task: String,
    pub version: VersionDto,
    #[schema(value_type = Object)]
    pub admission: serde_json::Value,
    /// Whether the task's name points at this version.
    pub current: bool,
    pub defaults: TaskDefaultsDto,
}

/// A schedule to create or update: the spec (exactly one of `cron` (+ `tz`), the field sets,
/// `delay_seconds`), the job each fire submits, and the policies.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    /// The schedule's name (on create; on update it must match the path or be absent).
    pub name: Option<String>,
    /// A cron expression: 5 fields, or 6 with seconds first.
    pub cron: Option<String>,
    /// An IANA time zone for `cron` or the field sets (UTC when absent).
    pub tz: Option<String>,
    pub minute: Option<Vec<u32>>,
    pub hour: Option<Vec<u32>>,
    pub day_of_month: Option<Vec<u32>>,
    pub month: Option<Vec<u32>>,
    /// Monday = 0 ... Sunday = 6.
    pub day_of_week: Option<Vec<u32>>,
    /// Fire once, this long after the schedule is created.
    pub delay_seconds: Option<f64>,
    /// skip (default) or allow: what a fire does while the previous job is live.
    pub overlap: Option<String>,
    /// none, one (default) or all: what happens to fire times missed while down.
    pub catch_up: Option<String>,
    #[serde(default)]
    pub paused: bool,
    /// The task each fire runs.
    pub task: String,
    #[schema(value_type = Object)]
    pub input: Option<Value>,
    pub input_text: Option<String>,
    pub input_base64: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub queue: Option<String>,
    #[serde(default)]
    pub priority: i32,
    pub limits: Option<LimitsDto>,
    #[schema(value_type = Object)]
    pub retry: Option<RetryPolicy>,
    pub context: Option<String>,
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleDto {
    pub name: String,
    /// The spec as given: `cron` + `tz`, the field sets, or `delay_seconds`.
    #[schema(value_type = Object)]
    pub spec: Value,
    pub task: String,
    pub queue: Option<String>,
    pub priority: i32,
    pub context: Option<String>,
    #[schema(value_type = Object)]
    pub input: Value,
    pub input_encoding: String,
    pub overlap: String,
    pub catch_up: String,
    pub paused: bool,
    /// Absent when it will not fire again.
    pub next_fire: Option<String>,
    pub last_fire: Option<String>,
    /// Jobs submitted by fires so far.
    pub fires: u64,
    /// Fire times passed over (catch-up policy, overlap, or an error).
    pub skipped: u64,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The newest job a fire submitted; its output is the schedule's last result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_job: Option<JobDto>,
}

impl ScheduleDto {
    pub fn from_record(r: &crate::domain::ScheduleRecord, last_job: Option<&Job>) -> Self {
        let (input, encoding) = encode_bytes(&r.job.input);
        Self {
            name: r.name.to_string(),
            spec: serde_json::to_value(&r.spec).unwrap_or(Value::Null),
            task: r.job.task.to_string(),
            queue: r.job.queue.as_ref().map(ToString::to_string),
            priority: r.job.priority,
            context: r.job.context.clone(),
            input,
            input_encoding: encoding.into(),
            overlap: word(&r.overlap),
            catch_up: word(&r.catch_up),
            paused: r.paused,
            next_fire: r.next_fire.map(time),
            last_fire: r.last_fire.map(time),
            fires: r.fires,
            skipped: r.skipped,
            last_error: r.last_error.clone(),
            created_at: time(r.created_at),
            updated_at: time(r.updated_at),
            last_job: last_job.map(JobDto::from_job),
        }
    }
}

/// The wire word of a unit enum that serializes as a string (`skip`, `one`, ...).
fn word<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Fire times.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FireTimesDto {
    pub times: Vec<String>,
}
