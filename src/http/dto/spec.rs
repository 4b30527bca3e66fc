//! What a job runs, as the wire says it: the fields a submit and a schedule share, declared
//! once and flattened into both bodies ([`SubmitJob`](super::SubmitJob),
//! [`ScheduleInput`](super::ScheduleInput)), at their top level beside their own fields.
//! Checking it and turning it into the service's `JobTemplate` is one function of the job
//! handlers (`http/jobs.rs`, `job_template`), for submits and schedules alike.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::MapAccess;
use serde_json::Value;
use utoipa::ToSchema;

use super::LimitsDto;
use super::flat::FieldGroup;
use crate::domain::RetryPolicy;
use crate::domain::whole::Whole;

/// A job's task, input (one of `input`, `input_text`, `input_base64`, or none), arguments,
/// environment, queue, priority, limits, retry policy, context and concurrency key.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct JobSpec {
    /// The task name.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", max_length = 64)]
    pub task: String,
    /// The input as a JSON value (the guest's stdin is its JSON text).
    #[schema(value_type = Option<Value>)]
    pub input: Option<Value>,
    /// The input as text, passed as it is.
    pub input_text: Option<String>,
    /// The input as base64 bytes.
    pub input_base64: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", max_length = 64)]
    pub queue: Option<String>,
    #[serde(default)]
    pub priority: i32,
    pub limits: Option<LimitsDto>,
    #[schema(value_type = Option<Object>)]
    pub retry: Option<RetryPolicy>,
    pub context: Option<String>,
    /// Jobs of one queue with this key run no more at once than the queue's
    /// `key_concurrency` (default 1), across every worker and node.
    #[schema(min_length = 1, max_length = 512)]
    pub concurrency_key: Option<String>,
}

impl FieldGroup for JobSpec {
    const REQUIRED: &'static [&'static str] = &["task"];

    fn read_field<'de, M: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut M,
    ) -> Result<bool, M::Error> {
        match key {
            "task" => self.task = map.next_value()?,
            "input" => self.input = map.next_value()?,
            "input_text" => self.input_text = map.next_value()?,
            "input_base64" => self.input_base64 = map.next_value()?,
            "args" => self.args = map.next_value()?,
            "env" => self.env = map.next_value()?,
            "queue" => self.queue = map.next_value()?,
            "priority" => self.priority = map.next_value::<Whole<i32>>()?.0,
            "limits" => self.limits = map.next_value()?,
            "retry" => self.retry = map.next_value()?,
            "context" => self.context = map.next_value()?,
            "concurrency_key" => self.concurrency_key = map.next_value()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}
