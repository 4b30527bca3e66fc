//! Task routes: upload a module under a name, read tasks and versions, set defaults, remove a
//! name, and fetch a module's bytes by digest (for remote workers).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::body::{Query, parse_json, read_body};
use super::dto::{TaskDefaultsDto, TaskDto, UploadDto, VersionDetailDto, VersionDto, time};
use super::error::{ApiError, ApiResult};
use super::{AppState, Caller};
use crate::domain::TaskDefaults;
use crate::domain::{ModuleDigest, Role, TaskName};

pub(super) fn task_name(raw: &str) -> ApiResult<TaskName> {
    raw.parse()
        .map_err(|e: crate::domain::NameError| ApiError::bad_request("invalid_name", e.to_string()))
}

pub(super) fn digest(raw: &str) -> ApiResult<ModuleDigest> {
    raw.parse().map_err(|e: crate::domain::DigestError| {
        ApiError::bad_request("invalid_digest", e.to_string())
    })
}

/// Task defaults given with an upload. `defaults` is a whole [`TaskDefaultsDto`] as JSON; the
/// other parameters set single fields over it. Without any, a new version keeps the task's
/// defaults.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct UploadQuery {
    /// All defaults as JSON (a `TaskDefaultsDto`).
    defaults: Option<String>,
    /// Queue for the task's jobs.
    #[param(pattern = "^([a-z0-9][a-z0-9._-]{0,63})?$")]
    queue: Option<String>,
    #[param(minimum = 1)]
    fuel: Option<u64>,
    /// CPU-time budget in milliseconds.
    #[param(minimum = 1, maximum = 86_400_000)]
    cpu_ms: Option<u64>,
    /// `fuel` or `cpu`.
    metering: Option<super::dto::MeteringDto>,
    #[param(minimum = 0.001, maximum = 86_400)]
    max_seconds: Option<f64>,
    #[param(minimum = 65_536, maximum = 4_294_967_296_u64)]
    memory_bytes: Option<u64>,
    /// Extra attempts after the first.
    retries: Option<u32>,
}

impl UploadQuery {
    fn defaults(&self) -> ApiResult<Option<TaskDefaults>> {
        let simple = self.queue.as_ref().is_some_and(|q| !q.is_empty())
            || self.fuel.is_some()
            || self.cpu_ms.is_some()
            || self.metering.is_some()
            || self.max_seconds.is_some()
            || self.memory_bytes.is_some()
            || self.retries.is_some();
        // An empty parameter is no parameter, as a form with a field left blank sends it.
        let defaults = self.defaults.as_deref().filter(|d| !d.is_empty());
        let mut dto: TaskDefaultsDto = match defaults {
            Some(json) => parse_json(json.as_bytes())?,
            None if simple => TaskDefaultsDto::default(),
            None => return Ok(None),
        };
        if let Some(queue) = self.queue.as_ref().filter(|q| !q.is_empty()) {
            dto.queue = Some(queue.clone());
        }
        if self.fuel.is_some()
            || self.cpu_ms.is_some()
            || self.metering.is_some()
            || self.max_seconds.is_some()
            || self.memory_bytes.is_some()
        {
            let mut limits = dto.limits.unwrap_or_default();
            limits.fuel = self.fuel.or(limits.fuel);
            limits.cpu_ms = self.cpu_ms.or(limits.cpu_ms);
            limits.metering = self.metering.or(limits.metering);
            limits.max_seconds = self.max_seconds.or(limits.max_seconds);
            limits.memory_bytes = self.memory_bytes.or(limits.memory_bytes);
            dto.limits = Some(limits);
        }
        if let Some(retries) = self.retries {
            let mut retry = dto.retry.unwrap_or_default();
            retry.retries = retries;
            dto.retry = Some(retry);
        }
        dto.to_defaults().map(Some)
    }
}

/// Uploads a module as the newest version of a task.
#[utoipa::path(put, path = "/v1/tasks/{name}", tag = "tasks",
    params(("name" = String, Path, description = "task name"), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "a WebAssembly core module (binary)"),
    responses(
        (status = 201, body = UploadDto, description = "admitted and registered"),
        (status = 403, body = super::ErrorBody), (status = 413, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody, description = "the module was refused; the message names why"),
    ))]
pub(super) async fn put_task(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> ApiResult<(StatusCode, Json<UploadDto>)> {
    caller.require(Role::Admin)?;
    let name = task_name(&name)?;
    let defaults = query.defaults()?;
    let bytes = read_body(body, s.caps.module_bytes, "the module").await?;
    let (task, report) = s
        .service
        .register_task(&name, bytes.to_vec(), defaults)
        .await?;
    Ok((StatusCode::CREATED, Json(UploadDto::new(&task, &report))))
}

/// Every task.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks",
    responses((status = 200, body = Vec<TaskDto>)))]
pub(super) async fn list_tasks(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<TaskDto>>> {
    caller.require(Role::Read)?;
    let tasks = s.service.tasks().await?;
    Ok(Json(tasks.iter().map(TaskDto::from_record).collect()))
}

/// One task with its versions and defaults.
#[utoipa::path(get, path = "/v1/tasks/{name}", tag = "tasks",
    params(("name" = String, Path)),
    responses((status = 200, body = TaskDto), (status = 404, body = super::ErrorBody)))]
pub(super) async fn get_task(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<TaskDto>> {
    caller.require(Role::Read)?;
    let task = s.service.task(&task_name(&name)?).await?;
    Ok(Json(TaskDto::from_record(&task)))
}

/// Replaces a task's defaults (queue, limits, retry policy, env) for jobs submitted later.
#[utoipa::path(patch, path = "/v1/tasks/{name}", tag = "tasks",
    params(("name" = String, Path)),
    request_body = TaskDefaultsDto,
    responses((status = 200, body = TaskDto), (status = 400, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub(super) async fn patch_task(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Json<TaskDto>> {
    caller.require(Role::Admin)?;
    let name = task_name(&name)?;
    let bytes = read_body(body, s.caps.body_bytes, "the request body").await?;
    let dto: TaskDefaultsDto = parse_json(&bytes)?;
    let task = s
        .service
        .set_task_defaults(&name, dto.to_defaults()?)
        .await?;
    Ok(Json(TaskDto::from_record(&task)))
}

/// Removes a task name. Jobs already submitted keep their pinned module and still run.
#[utoipa::path(delete, path = "/v1/tasks/{name}", tag = "tasks",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody)))]
pub(super) async fn delete_task(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    s.service.delete_task(&task_name(&name)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One version of a task by digest, with its admission report.
#[utoipa::path(get, path = "/v1/tasks/{name}/versions/{digest}", tag = "tasks",
    params(("name" = String, Path), ("digest" = String, Path, description = "blake3 hex digest")),
    responses((status = 200, body = VersionDetailDto), (status = 404, body = super::ErrorBody)))]
pub(super) async fn get_version(
    State(s): State<AppState>,
    caller: Caller,
    Path((name, digest_hex)): Path<(String, String)>,
) -> ApiResult<Json<VersionDetailDto>> {
    caller.require(Role::Read)?;
    let name = task_name(&name)?;
    let digest = digest(&digest_hex)?;
    let task = s.service.task(&name).await?;
    let (version, report) = s.service.task_version(&name, digest).await?;
    Ok(Json(VersionDetailDto {
        task: name.to_string(),
        version: VersionDto {
            digest: version.digest.to_hex(),
            size_bytes: version.size_bytes,
            created_at: time(version.created_at),
        },
        admission: super::dto::AdmissionDto::from_report(&report),
        current: task.digest == digest,
        defaults: TaskDefaultsDto::from_defaults(&task.defaults),
    }))
}

/// A registered module's bytes, by digest.
#[utoipa::path(get, path = "/v1/modules/{digest}", tag = "tasks",
    params(("digest" = String, Path, description = "blake3 hex digest")),
    responses((status = 200, content_type = "application/wasm", body = Vec<u8>),
        (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub(super) async fn get_module(
    State(s): State<AppState>,
    caller: Caller,
    Path(digest_hex): Path<String>,
) -> ApiResult<Response> {
    caller.require(Role::Worker)?;
    let bytes = s.service.module(digest(&digest_hex)?).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/wasm".to_owned()),
            (header::ETAG, format!("\"{digest_hex}\"")),
        ],
        bytes,
    )
        .into_response())
}
