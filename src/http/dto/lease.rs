//! The lease API's shapes: a worker's claim and what it is granted (each job with everything
//! one attempt needs, and its lease), heartbeats and their answers, and reports of ended
//! attempts. Bytes travel as base64. Each shape converts to and from the worker's seam
//! (`crate::worker`), so the server and `remotask worker` cannot disagree about a field.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{LimitsDto, ProgressDto, ReceiptDto, time};
use crate::domain::whole;
use crate::domain::{JobId, Lease, QueueName, Reason, Timestamp, TrapKind};
use crate::sandbox::{AttemptReport, Receipt};
use crate::worker::{Cursor, Ended, LeaseState, Outcome, Work};

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn unbase64(what: &str, text: &str) -> Result<Vec<u8>, String> {
    b64()
        .decode(text)
        .map_err(|e| format!("{what} is not base64: {e}"))
}

/// A time on the wire, read back: RFC 3339, any offset (a time before 1970 is 1970).
fn timestamp(what: &str, text: &str) -> Result<Timestamp, String> {
    let t = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("{what} {text:?} is not an RFC 3339 time: {e}"))?;
    Ok(Timestamp(t.timestamp_millis().max(0)))
}

/// A worker asks for jobs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The worker's name: 1 to 64 of a-z 0-9 - _ . starting with a letter or digit.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub worker: String,
    /// Only jobs of these queues; every queue if empty.
    #[serde(default)]
    pub queues: Vec<String>,
    /// At most this many jobs.
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(deserialize_with = "whole::int")]
    pub max: u32,
    /// With no job to give, wait at most this long for one, in seconds.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 60)]
    pub wait_seconds: f64,
    /// Each job's lease, in seconds (default 30); heartbeats extend it.
    #[schema(minimum = 1, maximum = 3600)]
    pub lease_seconds: Option<f64>,
    /// Guest threads of the worker, shown in the list of workers.
    #[schema(minimum = 1, maximum = 1024)]
    #[serde(default, deserialize_with = "whole::option")]
    pub threads: Option<u32>,
    /// The worker's version, shown in the list of workers.
    pub version: Option<String>,
    /// The `cursor` of the previous answer, if it had one.
    pub cursor: Option<CursorDto>,
}

/// Where an answer left off: pass it back with the next request so the server waits for new
/// work instead of claiming again at once. Opaque to workers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CursorDto {
    #[serde(deserialize_with = "whole::int64")]
    pub work: u64,
    #[serde(deserialize_with = "whole::int64")]
    pub room: u64,
    #[serde(default)]
    pub full: Vec<String>,
}

impl CursorDto {
    pub fn from_cursor(c: &Cursor) -> Self {
        Self {
            work: c.work,
            room: c.room,
            full: c.full.iter().map(ToString::to_string).collect(),
        }
    }

    /// The cursor; a queue name that does not parse is left out.
    pub fn to_cursor(&self) -> Cursor {
        Cursor {
            work: self.work,
            room: self.room,
            full: self.full.iter().filter_map(|q| q.parse().ok()).collect(),
        }
    }
}

/// The jobs granted to a worker.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseGrant {
    pub jobs: Vec<LeasedJob>,
    /// Set when the server had no more to give; absent when it may have more at once.
    pub cursor: Option<CursorDto>,
}

/// A job leased to a worker: what its attempt runs, and the lease it runs under.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeasedJob {
    pub id: String,
    pub task: String,
    /// The blake3 digest of the module to run (`GET /v1/modules/{digest}`).
    pub digest: String,
    pub queue: String,
    /// The guest's stdin.
    pub input_base64: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub limits: LimitsDto,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub lease: LeaseDto,
}

/// A lease: its fencing token (it only grows), and when it expires unless extended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeaseDto {
    pub token: i64,
    /// Milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
}

impl LeaseDto {
    pub fn from_lease(l: &Lease) -> Self {
        Self {
            token: l.token,
            expires_at_ms: l.expires_at.0,
        }
    }

    pub fn to_lease(self) -> Lease {
        Lease {
            token: self.token,
            expires_at: Timestamp(self.expires_at_ms),
        }
    }
}

impl LeasedJob {
    pub fn from_work(w: &Work) -> Self {
        Self {
            id: w.id.to_string(),
            task: w.task.to_string(),
            digest: w.digest.to_hex(),
            queue: w.queue.to_string(),
            input_base64: b64().encode(&w.input),
            args: w.args.clone(),
            env: w.env.iter().cloned().collect(),
            limits: LimitsDto::from_limits(&w.limits),
            attempt: w.attempt,
            lease: LeaseDto::from_lease(&w.lease),
        }
    }

    /// The work, or what in it does not parse.
    pub fn into_work(self) -> Result<Work, String> {
        let limits = self
            .limits
            .to_override()
            .over(crate::domain::Limits::default())
            .map_err(|e| format!("job {}: {e}", self.id))?;
        Ok(Work {
            id: self.id.parse().map_err(|e| format!("{e}"))?,
            task: self.task.parse().map_err(|e| format!("{e}"))?,
            digest: self.digest.parse().map_err(|e| format!("{e}"))?,
            queue: self.queue.parse().map_err(|e| format!("{e}"))?,
            input: unbase64("input_base64", &self.input_base64)?,
            args: self.args,
            env: self.env.into_iter().collect(),
            limits,
            attempt: self.attempt,
            lease: self.lease.to_lease(),
        })
    }
}

/// A worker's heartbeat: the leases it holds, with its guests' progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub worker: String,
    /// How far to extend each lease, in seconds (default 30).
    #[schema(minimum = 1, maximum = 3600)]
    pub lease_seconds: Option<f64>,
    pub leases: Vec<HeldLease>,
}

/// A lease a worker holds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeldLease {
    #[schema(
        pattern = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$",
        max_length = 26
    )]
    pub id: String,
    #[serde(deserialize_with = "whole::int")]
    pub token: i64,
    /// The attempt's progress, as its guest last reported it.
    pub progress: Option<ProgressDto>,
}

/// What became of each lease of a heartbeat, in order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAnswer {
    pub leases: Vec<LeaseStateDto>,
}

/// `held` (extended), `cancelled` (extended, and a cancel was asked for: stop the attempt) or
/// `lost` (no longer this worker's: stop the attempt, its report will be refused).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseStateDto {
    pub id: String,
    #[schema(pattern = "^(held|cancelled|lost)$")]
    pub state: String,
    /// The lease's new expiry, in milliseconds since the Unix epoch (not for `lost`).
    pub expires_at_ms: Option<i64>,
}

impl LeaseStateDto {
    pub fn from_state(id: JobId, state: LeaseState) -> Self {
        let (name, expires) = match state {
            LeaseState::Held { expires_at } => ("held", Some(expires_at.0)),
            LeaseState::Cancelled { expires_at } => ("cancelled", Some(expires_at.0)),
            LeaseState::Lost => ("lost", None),
        };
        Self {
            id: id.to_string(),
            state: name.to_owned(),
            expires_at_ms: expires,
        }
    }

    pub fn to_state(&self) -> Result<LeaseState, String> {
        let expires = || {
            self.expires_at_ms
                .map(Timestamp)
                .ok_or_else(|| format!("lease {} {} without expires_at_ms", self.id, self.state))
        };
        match self.state.as_str() {
            "held" => Ok(LeaseState::Held {
                expires_at: expires()?,
            }),
            "cancelled" => Ok(LeaseState::Cancelled {
                expires_at: expires()?,
            }),
            "lost" => Ok(LeaseState::Lost),
            other => Err(format!("unknown lease state {other:?}")),
        }
    }
}

/// Ended attempts, reported together.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub worker: String,
    pub ended: Vec<EndedDto>,
}

/// One ended attempt: its job and lease, and the sandbox's report; or `interrupted` (the
/// worker stopped before or during it: the job goes back to its queue, no attempt spent).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndedDto {
    #[schema(
        pattern = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$",
        max_length = 26
    )]
    pub id: String,
    #[serde(deserialize_with = "whole::int")]
    pub token: i64,
    #[serde(default)]
    pub interrupted: bool,
    /// Required unless `interrupted`.
    pub report: Option<ReportDto>,
}

/// What an attempt produced, as the sandbox reported it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportDto {
    /// One of the termination reasons (`completed`, `guest_error`, `trap`, ...).
    pub reason: String,
    pub trap_kind: Option<String>,
    #[serde(default, deserialize_with = "whole::option")]
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub output_base64: String,
    pub stderr_base64: String,
    #[serde(default)]
    pub stderr_truncated: bool,
    /// The attempt's receipt (fuel, peak memory, wall and instantiate time, cache, sizes).
    pub receipt: ReceiptDto,
    pub started_at: String,
    pub finished_at: String,
    /// The seed and the clock values the guest was given, kept so the attempt can be
    /// replayed; absent from a worker that does not record them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub recording: Option<crate::domain::Recording>,
}

impl EndedDto {
    pub fn from_ended(e: &Ended) -> Self {
        let report = match &e.outcome {
            Outcome::Interrupted => None,
            Outcome::Ran {
                report,
                started_at,
                finished_at,
            } => Some(ReportDto {
                reason: report.reason.to_string(),
                trap_kind: report.trap_kind.map(|k| k.as_str().to_owned()),
                exit_code: report.exit_code,
                message: report.message.clone(),
                output_base64: b64().encode(&report.output),
                stderr_base64: b64().encode(&report.stderr),
                stderr_truncated: report.stderr_truncated,
                receipt: receipt_dto(&report.receipt),
                started_at: time(*started_at),
                finished_at: time(*finished_at),
                recording: report.recording.clone(),
            }),
        };
        Self {
            id: e.id.to_string(),
            token: e.lease.token,
            interrupted: report.is_none(),
            report,
        }
    }

    /// The ended attempt, or what in it does not parse.
    pub fn to_ended(&self) -> Result<Ended, String> {
        let id: JobId = self.id.parse().map_err(|e| format!("{e}"))?;
        let lease = Lease {
            token: self.token,
            expires_at: Timestamp(0),
        };
        let outcome = match (&self.report, self.interrupted) {
            (_, true) => Outcome::Interrupted,
            (None, false) => {
                return Err(format!("job {id}: a report is required unless interrupted"));
            }
            (Some(r), false) => Outcome::Ran {
                report: Box::new(r.to_report()?),
                started_at: timestamp("started_at", &r.started_at)?,
                finished_at: timestamp("finished_at", &r.finished_at)?,
            },
        };
        Ok(Ended { id, lease, outcome })
    }
}

impl ReportDto {
    fn to_report(&self) -> Result<AttemptReport, String> {
        let reason: Reason = self.reason.parse()?;
        let trap_kind = match &self.trap_kind {
            Some(k) => Some(
                serde_json::from_value::<TrapKind>(serde_json::Value::String(k.clone()))
                    .map_err(|_| format!("unknown trap kind {k:?}"))?,
            ),
            None => None,
        };
        Ok(AttemptReport {
            reason,
            trap_kind,
            exit_code: self.exit_code,
            message: self.message.clone(),
            output: unbase64("output_base64", &self.output_base64)?,
            stderr: unbase64("stderr_base64", &self.stderr_base64)?,
            stderr_truncated: self.stderr_truncated,
            receipt: receipt(&self.receipt)?,
            recording: self.recording.clone(),
        })
    }
}

/// A receipt as the wire carries it.
fn receipt_dto(receipt: &Receipt) -> ReceiptDto {
    ReceiptDto::from_stored(&serde_json::to_value(receipt).unwrap_or_default())
}

/// A receipt from the wire, as the sandbox's type: what is left out counts 0; the cache
/// status must be one the sandbox names.
fn receipt(dto: &ReceiptDto) -> Result<Receipt, String> {
    let value = serde_json::to_value(dto).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| format!("receipt: {e}"))
}

/// Whether each reported attempt was applied, in order. `refused`: its lease was stale (the
/// job was taken again, or ended otherwise), and nothing changed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReportAnswer {
    pub results: Vec<ReportResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReportResult {
    pub id: String,
    #[schema(pattern = "^(applied|refused)$")]
    pub status: String,
}

/// A cancel pushed to the worker that holds the job (`event: cancel` on
/// `GET /v1/leases/events`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CancelEventDto {
    pub id: String,
}

/// A worker as the server knows it (`GET /v1/workers`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerDto {
    pub name: String,
    pub address: String,
    pub version: Option<String>,
    pub queues: Vec<String>,
    pub threads: Option<u32>,
    /// Jobs it holds now.
    pub running: usize,
    pub leased_total: u64,
    pub reported_total: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// Not seen for its lease period.
    pub gone: bool,
}

impl WorkerDto {
    pub fn from_view(w: &crate::service::WorkerView) -> Self {
        Self {
            name: w.hello.name.clone(),
            address: w.hello.address.clone(),
            version: w.hello.version.clone(),
            queues: w.hello.queues.iter().map(QueueName::to_string).collect(),
            threads: w.hello.threads,
            running: w.running,
            leased_total: w.leased_total,
            reported_total: w.reported_total,
            first_seen: time(w.first_seen),
            last_seen: time(w.last_seen),
            gone: w.gone,
        }
    }
}

/// Every worker known.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerDto>,
}
