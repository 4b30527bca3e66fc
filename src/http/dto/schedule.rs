//! Schedule shapes: what creating or updating a schedule sends, a schedule as the API shows
//! it (with its last job), and a preview of fire times.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{JobDto, LimitsDto, encode_bytes, time};
use crate::domain::{Job, RetryPolicy};

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
