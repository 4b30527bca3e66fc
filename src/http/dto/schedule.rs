//! Schedule shapes: what creating or updating a schedule sends (its job is a `JobSpec`), a
//! schedule as the API shows it (with its last job), and a preview of fire times.

use serde::de::MapAccess;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::flat::{self, FieldGroup};
use super::{JobDto, JobSpec, encode_bytes, time};
use crate::domain::Job;
use crate::domain::whole::Whole;

/// A schedule to create or update: the spec (exactly one of `cron` (+ `tz`), the field sets,
/// `delay_seconds`), the job each fire submits ([`JobSpec`]), and the policies, all at the
/// top level of the body.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScheduleInput {
    #[serde(flatten)]
    pub schedule: ScheduleOptions,
    #[serde(flatten)]
    pub job: JobSpec,
}

/// What only a schedule says: its name, its spec, its policies, whether it starts paused.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ScheduleOptions {
    /// The schedule's name (on create; on update it must match the path or be absent).
    pub name: Option<String>,
    /// A cron expression: 5 fields, or 6 with seconds first.
    pub cron: Option<String>,
    /// An IANA time zone for `cron` or the field sets (UTC when absent).
    pub tz: Option<String>,
    #[schema(min_items = 1)]
    pub minute: Option<Vec<u32>>,
    #[schema(min_items = 1)]
    pub hour: Option<Vec<u32>>,
    #[schema(min_items = 1)]
    pub day_of_month: Option<Vec<u32>>,
    #[schema(min_items = 1)]
    pub month: Option<Vec<u32>>,
    /// Monday = 0 ... Sunday = 6.
    #[schema(min_items = 1)]
    pub day_of_week: Option<Vec<u32>>,
    /// Fire once, this long after the schedule is created.
    pub delay_seconds: Option<f64>,
    /// skip (default) or allow: what a fire does while the previous job is live.
    pub overlap: Option<String>,
    /// none, one (default) or all: what happens to fire times missed while down.
    pub catch_up: Option<String>,
    #[serde(default)]
    pub paused: bool,
}

/// Every field of a schedule, in the order an unknown field's error lists them; a test checks
/// it against both groups.
pub(super) const SCHEDULE_FIELDS: &[&str] = &[
    "name",
    "cron",
    "tz",
    "minute",
    "hour",
    "day_of_month",
    "month",
    "day_of_week",
    "delay_seconds",
    "overlap",
    "catch_up",
    "paused",
    "task",
    "input",
    "input_text",
    "input_base64",
    "args",
    "env",
    "queue",
    "priority",
    "limits",
    "retry",
    "context",
    "concurrency_key",
];

impl FieldGroup for ScheduleOptions {
    fn read_field<'de, M: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut M,
    ) -> Result<bool, M::Error> {
        match key {
            "name" => self.name = map.next_value()?,
            "cron" => self.cron = map.next_value()?,
            "tz" => self.tz = map.next_value()?,
            "minute" => self.minute = ints(map.next_value()?),
            "hour" => self.hour = ints(map.next_value()?),
            "day_of_month" => self.day_of_month = ints(map.next_value()?),
            "month" => self.month = ints(map.next_value()?),
            "day_of_week" => self.day_of_week = ints(map.next_value()?),
            "delay_seconds" => self.delay_seconds = map.next_value()?,
            "overlap" => self.overlap = map.next_value()?,
            "catch_up" => self.catch_up = map.next_value()?,
            "paused" => self.paused = map.next_value()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// A field set as read: whole numbers however they are written.
fn ints(set: Option<Vec<Whole<u32>>>) -> Option<Vec<u32>> {
    set.map(|s| s.into_iter().map(|w| w.0).collect())
}

flat::flat_body!(
    ScheduleInput {
        schedule: ScheduleOptions,
        job: JobSpec
    },
    SCHEDULE_FIELDS,
    "A schedule to create or update: the spec (exactly one of `cron` (+ `tz`), the \
             field sets,\n`delay_seconds`), the job each fire submits, and the policies."
);

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
    pub concurrency_key: Option<String>,
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
            concurrency_key: r.job.concurrency_key.clone(),
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
