//! Queue routes: list with stats, one queue, pause, resume (persisted).

use axum::Json;
use axum::extract::{Path, State};

use super::dto::QueueDto;
use super::error::{ApiError, ApiResult};
use super::{AppState, Caller};
use crate::domain::{QueueName, Role};

fn queue_name(raw: &str) -> ApiResult<QueueName> {
    raw.parse()
        .map_err(|e: crate::domain::NameError| ApiError::bad_request("invalid_name", e.to_string()))
}

/// Every queue with its settings and job counts by state.
#[utoipa::path(get, path = "/v1/queues", tag = "queues",
    responses((status = 200, body = Vec<QueueDto>)))]
pub(super) async fn list_queues(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<QueueDto>>> {
    caller.require(Role::Read)?;
    let queues = s.service.queues().await?;
    Ok(Json(queues.iter().map(QueueDto::from_stats).collect()))
}

/// One queue with its settings and job counts by state.
#[utoipa::path(get, path = "/v1/queues/{name}", tag = "queues",
    params(("name" = String, Path)),
    responses((status = 200, body = QueueDto), (status = 404, body = super::ErrorBody)))]
pub(super) async fn get_queue(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<QueueDto>> {
    caller.require(Role::Read)?;
    let q = s.service.queue(&queue_name(&name)?).await?;
    Ok(Json(QueueDto::from_stats(&q)))
}

async fn set_paused(s: &AppState, name: &str, paused: bool) -> ApiResult<Json<QueueDto>> {
    let name = queue_name(name)?;
    s.service.set_paused(&name, paused).await?;
    Ok(Json(QueueDto::from_stats(&s.service.queue(&name).await?)))
}

/// Pauses a queue: running jobs finish, no new job of it starts. Survives restarts.
#[utoipa::path(post, path = "/v1/queues/{name}/pause", tag = "queues",
    params(("name" = String, Path)),
    responses((status = 200, body = QueueDto), (status = 403, body = super::ErrorBody)))]
pub(super) async fn pause(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<QueueDto>> {
    caller.require(Role::Admin)?;
    set_paused(&s, &name, true).await
}

/// Resumes a paused queue.
#[utoipa::path(post, path = "/v1/queues/{name}/resume", tag = "queues",
    params(("name" = String, Path)),
    responses((status = 200, body = QueueDto), (status = 403, body = super::ErrorBody)))]
pub(super) async fn resume(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<QueueDto>> {
    caller.require(Role::Admin)?;
    set_paused(&s, &name, false).await
}
