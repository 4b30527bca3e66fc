//! The JSON wire shapes: what clients send and receive, one file per resource, used by the
//! server's handlers and by the CLI's client alike. Domain types are converted here and
//! nowhere else; times are RFC 3339 strings; bytes are JSON when they parse, else text, else
//! base64, with the encoding named. Nothing here reads a request or calls the service: the
//! handlers do, with these shapes.

mod flat;
mod job;
mod lease;
mod queue;
mod schedule;
mod spec;
mod task;
mod token;

#[cfg(test)]
mod tests;

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::ApiError;
use crate::domain::{Limits, LimitsOverride, Metering, Timestamp, whole};

pub use job::{
    AttemptDto, BatchResult, CancelDto, CancelFilter, CleanRequest, ContextDto, ContextList,
    CountDto, EventDto, ExplainDto, JobDto, JobErrorDto, JobList, ProgressDto, ReceiptDto,
    SubmitBatch, SubmitJob, SubmitOptions,
};
pub use lease::{
    CancelEventDto, CursorDto, EndedDto, HeartbeatAnswer, HeartbeatRequest, HeldLease, LeaseDto,
    LeaseGrant, LeaseRequest, LeaseStateDto, LeasedJob, ReportAnswer, ReportDto, ReportRequest,
    ReportResult, WorkerDto, WorkerList,
};
pub use queue::QueueDto;
pub use schedule::{FireTimesDto, ScheduleDto, ScheduleInput, ScheduleOptions};
pub use spec::JobSpec;
pub use task::{
    AdmissionDto, ExportDto, ImportDto, TaskDefaultsDto, TaskDto, UploadDto, VersionDetailDto,
    VersionDto,
};
pub use token::{CreateToken, TokenDto};

pub fn time(t: Timestamp) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t.0.max(0) as u64))
        .to_string()
}

/// An RFC 3339 time (any offset, any year; a time before 1970 is 1970).
pub fn parse_time(s: &str) -> Result<Timestamp, ApiError> {
    let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| {
        ApiError::bad_request(
            "invalid_time",
            format!("run_at {s:?} is not an RFC 3339 time: {e}"),
        )
    })?;
    Ok(Timestamp(t.timestamp_millis().max(0)))
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

/// How an attempt's computation is counted (`Metering`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MeteringDto {
    Fuel,
    Cpu,
}

impl From<Metering> for MeteringDto {
    fn from(m: Metering) -> Self {
        match m {
            Metering::Fuel => MeteringDto::Fuel,
            Metering::Cpu => MeteringDto::Cpu,
        }
    }
}

impl From<MeteringDto> for Metering {
    fn from(m: MeteringDto) -> Self {
        match m {
            MeteringDto::Fuel => Metering::Fuel,
            MeteringDto::Cpu => Metering::Cpu,
        }
    }
}

/// Limits on the wire; on input every field is optional and filled from the defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsDto {
    /// Fuel units, enforced when `metering` is `fuel`.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole::option")]
    pub fuel: Option<u64>,
    /// CPU time the guest may spend, in milliseconds, in either metering; spent: `cpu_limit`.
    /// Absent in an answer: no CPU-time budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86_400_000)]
    #[serde(deserialize_with = "whole::option")]
    pub cpu_ms: Option<u64>,
    /// `fuel` (deterministic, about half the engine's speed on compute) or `cpu` (no fuel:
    /// the engine's speed; `cpu_ms` and `max_seconds` bound the guest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metering: Option<MeteringDto>,
    /// Wall-clock budget in seconds, 0.001 to 86400.
    #[schema(minimum = 0.001, maximum = 86_400)]
    pub max_seconds: Option<f64>,
    /// 64 KiB to 4 GiB.
    #[schema(minimum = 65_536, maximum = 4_294_967_296_u64)]
    #[serde(default, deserialize_with = "whole::option")]
    pub memory_bytes: Option<u64>,
    #[schema(maximum = 268_435_456)]
    #[serde(default, deserialize_with = "whole::option")]
    pub stdout_bytes: Option<u64>,
    #[schema(maximum = 268_435_456)]
    #[serde(default, deserialize_with = "whole::option")]
    pub stderr_bytes: Option<u64>,
}

impl LimitsDto {
    pub fn from_limits(l: &Limits) -> Self {
        Self {
            fuel: Some(l.fuel),
            cpu_ms: l.cpu_ms(),
            metering: Some(l.metering.into()),
            max_seconds: Some(l.max_seconds()),
            memory_bytes: Some(l.memory_bytes),
            stdout_bytes: Some(l.stdout_bytes),
            stderr_bytes: Some(l.stderr_bytes),
        }
    }

    pub fn to_override(&self) -> LimitsOverride {
        LimitsOverride {
            fuel: self.fuel,
            cpu_ms: self.cpu_ms,
            metering: self.metering.map(Into::into),
            max_seconds: self.max_seconds,
            memory_bytes: self.memory_bytes,
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
        }
    }
}
