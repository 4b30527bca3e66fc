//! The lease API, for `remotask worker` on other machines: the worker's seam
//! (`worker::Source`) on the wire. A worker leases jobs (long-polling when there are none),
//! heartbeats the leases it holds (with its guests' progress), reports ended attempts, and
//! keeps a stream open on which the server pushes cancels of the jobs it holds. The server
//! decides each job's next state, with the same decision as for its own pool.
//!
//! Fencing: every job is leased under a token from the store that only grows. A heartbeat or
//! report whose token is not the job's lease any more (it expired and the job was taken again,
//! or the job ended otherwise) changes nothing for that job; the answer says so for each one,
//! with status 409 when any was refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::serve::IncomingStream;
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::body::{Query, parse_json, read_body};
use super::dto::{
    CancelEventDto, HeartbeatAnswer, HeartbeatRequest, LeaseGrant, LeaseRequest, LeaseStateDto,
    LeasedJob, ReportAnswer, ReportRequest, ReportResult, WorkerDto, WorkerList,
};
use super::error::{ApiError, ApiResult};
use super::{AppState, Caller};
use crate::domain::{JobId, Lease, QueueName, Role, Timestamp, WorkerName};
use crate::service::WorkerHello;
use crate::worker::{ClaimAsk, LeaseState, Progress, Source};

/// The address a connection came from, over plain HTTP or TLS (`serve` records it).
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerAddr(SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, super::tls::TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, super::tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// The address a request came from, when the server knows it (not in tests that call the
/// router directly).
pub(super) struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<ConnectInfo<PeerAddr>>()
            .map(|c| c.0.0);
        Ok(Peer(addr))
    }
}

/// The most jobs one lease call takes.
const MAX_LEASE: u32 = 1000;
/// The longest a lease call waits for jobs.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// A lease when the worker asks for none.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);

fn unprocessable(message: String) -> ApiError {
    ApiError::unprocessable("invalid", message)
}

fn worker_name(name: &str) -> ApiResult<WorkerName> {
    name.parse().map_err(|e| unprocessable(format!("{e}")))
}

/// A lease of `seconds` (default 30), between a second and an hour.
fn lease_ttl(seconds: Option<f64>) -> ApiResult<Duration> {
    match seconds {
        None => Ok(DEFAULT_LEASE),
        Some(s) if s.is_finite() && (1.0..=3600.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(unprocessable(format!(
            "lease_seconds must be between 1 and 3600, got {s}"
        ))),
    }
}

fn job_id(text: &str) -> ApiResult<JobId> {
    text.parse()
        .map_err(|e| ApiError::bad_request("invalid_id", format!("{e}")))
}

/// Reads a lease API body (small: ids, tokens, reports under the input and output caps).
async fn body<T: serde::de::DeserializeOwned>(s: &AppState, body: Body) -> ApiResult<T> {
    let bytes = read_body(body, s.caps.body_bytes, "the request body").await?;
    parse_json(&bytes)
}

/// Leases up to `max` jobs to a worker; with none to give, waits up to `wait_seconds` for
/// some. Each job comes with everything its attempt needs and its lease.
#[utoipa::path(post, path = "/v1/leases", tag = "leases",
    request_body = LeaseRequest,
    responses(
        (status = 200, body = LeaseGrant, description = "the jobs leased (possibly none)"),
        (status = 400, body = super::ErrorBody), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody, description = "not a worker token"),
        (status = 409, body = super::ErrorBody, description = "more workers than max_workers"),
        (status = 413, body = super::ErrorBody), (status = 422, body = super::ErrorBody),
    ))]
pub(super) async fn lease(
    State(s): State<AppState>,
    caller: Caller,
    peer: Peer,
    raw: Body,
) -> ApiResult<Json<LeaseGrant>> {
    caller.require(Role::Worker)?;
    let r: LeaseRequest = body(&s, raw).await?;
    let worker = worker_name(&r.worker)?;
    if !(1..=MAX_LEASE).contains(&r.max) {
        return Err(unprocessable(format!(
            "max must be between 1 and {MAX_LEASE}, got {}",
            r.max
        )));
    }
    if r.threads.is_some_and(|t| !(1..=1024).contains(&t)) {
        return Err(unprocessable(format!(
            "threads must be between 1 and 1024, got {}",
            r.threads.unwrap_or_default()
        )));
    }
    if !(r.wait_seconds.is_finite() && (0.0..=MAX_WAIT.as_secs_f64()).contains(&r.wait_seconds)) {
        return Err(unprocessable(format!(
            "wait_seconds must be between 0 and 60, got {}",
            r.wait_seconds
        )));
    }
    let queues = r
        .queues
        .iter()
        .map(|q| q.parse::<QueueName>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unprocessable(format!("{e}")))?;
    let lease_ttl = lease_ttl(r.lease_seconds)?;
    s.service.worker_seen(WorkerHello {
        name: worker.to_string(),
        address: peer
            .0
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string()),
        version: r.version,
        queues: queues.clone(),
        threads: r.threads,
        lease_ttl,
    })?;
    let ask = ClaimAsk {
        worker: worker.to_string(),
        queues,
        max: r.max,
        lease_ttl,
        wait: Duration::from_secs_f64(r.wait_seconds),
        after: r.cursor.map(|c| c.to_cursor()),
    };
    let granted = s
        .leases
        .claim(ask, &s.stop)
        .await
        .map_err(ApiError::internal)?;
    s.service
        .worker_leased(worker.as_str(), granted.work.iter().map(|w| w.id));
    Ok(Json(LeaseGrant {
        jobs: granted.work.iter().map(LeasedJob::from_work).collect(),
        cursor: granted
            .cursor
            .as_ref()
            .map(super::dto::CursorDto::from_cursor),
    }))
}

/// Extends the leases a worker holds and stores its guests' progress; says for each lease
/// whether it is held, cancelled (stop the attempt) or lost (stop it: its report will be
/// refused). 409 when any was lost.
#[utoipa::path(post, path = "/v1/leases/heartbeat", tag = "leases",
    request_body = HeartbeatRequest,
    responses(
        (status = 200, body = HeartbeatAnswer, description = "every lease extended"),
        (status = 409, body = HeartbeatAnswer, description = "some leases are lost: see each"),
        (status = 400, body = super::ErrorBody), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 413, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody),
    ))]
pub(super) async fn heartbeat(
    State(s): State<AppState>,
    caller: Caller,
    raw: Body,
) -> ApiResult<(StatusCode, Json<HeartbeatAnswer>)> {
    caller.require(Role::Worker)?;
    let r: HeartbeatRequest = body(&s, raw).await?;
    let worker = worker_name(&r.worker)?;
    let ttl = lease_ttl(r.lease_seconds)?;
    let mut leases = Vec::with_capacity(r.leases.len());
    let mut progress = Vec::new();
    for held in &r.leases {
        let id = job_id(&held.id)?;
        let lease = Lease {
            token: held.token,
            expires_at: Timestamp(0),
        };
        if let Some(p) = &held.progress {
            progress.push(Progress {
                id,
                lease,
                done: p.done,
                total: p.total,
            });
        }
        leases.push((id, lease));
    }
    if !progress.is_empty() {
        s.leases
            .progress(progress)
            .await
            .map_err(ApiError::internal)?;
    }
    let ids: Vec<JobId> = leases.iter().map(|(id, _)| *id).collect();
    let states = s
        .leases
        .heartbeat(leases, ttl)
        .await
        .map_err(ApiError::internal)?;
    let held = ids
        .iter()
        .zip(&states)
        .filter(|(_, state)| **state != LeaseState::Lost)
        .map(|(id, _)| *id);
    s.service.worker_holds(worker.as_str(), held);
    let status = if states.contains(&LeaseState::Lost) {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    let leases = ids
        .into_iter()
        .zip(states)
        .map(|(id, state)| LeaseStateDto::from_state(id, state))
        .collect();
    Ok((status, Json(HeartbeatAnswer { leases })))
}

/// Ended attempts, many in one call: each is applied under its lease, and the server
/// decides its job's next state. 409 when any was refused (a stale lease: nothing changed
/// for that job).
#[utoipa::path(post, path = "/v1/leases/report", tag = "leases",
    request_body = ReportRequest,
    responses(
        (status = 200, body = ReportAnswer, description = "every attempt applied"),
        (status = 409, body = ReportAnswer, description = "some were refused: see each"),
        (status = 400, body = super::ErrorBody), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 413, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody),
    ))]
pub(super) async fn report(
    State(s): State<AppState>,
    caller: Caller,
    raw: Body,
) -> ApiResult<(StatusCode, Json<ReportAnswer>)> {
    caller.require(Role::Worker)?;
    let r: ReportRequest = body(&s, raw).await?;
    let worker = worker_name(&r.worker)?;
    let ended = r
        .ended
        .iter()
        .enumerate()
        .map(|(i, e)| {
            e.to_ended()
                .map_err(|m| ApiError::bad_request("invalid_report", format!("ended[{i}]: {m}")))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let ids: Vec<JobId> = ended.iter().map(|e| e.id).collect();
    let applied = s.leases.report(ended).await.map_err(ApiError::internal)?;
    s.service
        .worker_reported(worker.as_str(), ids.iter().copied());
    let status = if applied.contains(&false) {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    let results = ids
        .iter()
        .zip(applied)
        .map(|(id, applied)| ReportResult {
            id: id.to_string(),
            status: if applied { "applied" } else { "refused" }.to_owned(),
        })
        .collect();
    Ok((status, Json(ReportAnswer { results })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct CancelsQuery {
    /// The worker whose jobs' cancels to push.
    #[param(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", max_length = 64)]
    worker: String,
}

/// Cancels of the jobs a worker holds, pushed as they are asked for (`event: cancel`, JSON
/// `CancelEventDto`). A worker keeps this open; its heartbeats are the fallback.
#[utoipa::path(get, path = "/v1/leases/events", tag = "leases", params(CancelsQuery),
    responses((status = 200, content_type = "text/event-stream", body = CancelEventDto,
        description = "a stream of `cancel` events"),
        (status = 400, body = super::ErrorBody), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub(super) async fn cancels(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<CancelsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    caller.require(Role::Worker)?;
    let worker = worker_name(&q.worker)?.to_string();
    let pushed = s
        .leases
        .cancels()
        .ok_or_else(|| ApiError::internal("this server pushes no cancels"))?;
    let stream = futures_util::stream::unfold((pushed, worker), |(mut rx, worker)| async move {
        loop {
            match rx.recv().await {
                Ok(c) if c.worker.as_deref() == Some(worker.as_str()) => {
                    let dto = CancelEventDto {
                        id: c.id.to_string(),
                    };
                    let Ok(event) = Event::default().event("cancel").json_data(dto) else {
                        continue;
                    };
                    return Some((Ok(event), (rx, worker)));
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The workers that called this server, with the jobs they hold and when they were last
/// seen; one not seen for its lease period is `gone`.
#[utoipa::path(get, path = "/v1/workers", tag = "leases",
    responses((status = 200, body = WorkerList),
        (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody)))]
pub(super) async fn workers(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<WorkerList>> {
    caller.require(Role::Read)?;
    let workers = s
        .service
        .workers()
        .iter()
        .map(WorkerDto::from_view)
        .collect();
    Ok(Json(WorkerList { workers }))
}
