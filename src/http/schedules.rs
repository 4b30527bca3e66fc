//! Schedule routes: create, list, read (with the last job), update in place, pause, resume,
//! delete, and preview the next fire times.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use super::body::{Query, parse_json, read_body};
use super::dto::{FireTimesDto, ScheduleDto, ScheduleInput, time};
use super::error::{ApiError, ApiResult};
use super::{AppState, Caller, HttpCaps};
use crate::domain::{CatchUp, Overlap, Role, ScheduleName, SpecDef};
use crate::service::ScheduleRequest;

fn schedule_name(raw: &str) -> ApiResult<ScheduleName> {
    raw.parse()
        .map_err(|e: crate::domain::NameError| ApiError::bad_request("invalid_name", e.to_string()))
}

fn policy<T: serde::de::DeserializeOwned + Default>(
    field: &str,
    value: Option<&str>,
    words: &str,
) -> ApiResult<T> {
    match value {
        None => Ok(T::default()),
        Some(v) => serde_json::from_value(serde_json::Value::String(v.to_owned())).map_err(|_| {
            ApiError::unprocessable(
                "invalid",
                format!("{field} must be one of {words}, got {v:?}"),
            )
        }),
    }
}

fn to_request(input: ScheduleInput, caps: &HttpCaps) -> ApiResult<ScheduleRequest> {
    let schedule = input.schedule;
    let spec = SpecDef {
        cron: schedule.cron,
        tz: schedule.tz,
        minute: schedule.minute,
        hour: schedule.hour,
        day_of_month: schedule.day_of_month,
        month: schedule.month,
        day_of_week: schedule.day_of_week,
        delay_seconds: schedule.delay_seconds,
    };
    let overlap: Overlap = policy("overlap", schedule.overlap.as_deref(), "skip, allow")?;
    let catch_up: CatchUp = policy("catch_up", schedule.catch_up.as_deref(), "none, one, all")?;
    Ok(ScheduleRequest {
        spec,
        job: super::jobs::job_template(input.job, caps)?,
        overlap,
        catch_up,
        paused: schedule.paused,
    })
}

/// Creates a schedule; it fires first at its spec's first time after now.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules",
    request_body = ScheduleInput,
    responses((status = 201, body = ScheduleDto), (status = 400, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody, description = "unknown task"),
        (status = 409, body = super::ErrorBody, description = "the name is taken"),
        (status = 422, body = super::ErrorBody, description = "invalid spec or job")))]
pub(super) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    body: Body,
) -> ApiResult<(StatusCode, Json<ScheduleDto>)> {
    caller.require(Role::Admin)?;
    let bytes = read_body(body, s.caps.body_bytes, "the request body").await?;
    let input: ScheduleInput = parse_json(&bytes)?;
    let name = schedule_name(
        input
            .schedule
            .name
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("invalid_json", "missing field `name`"))?,
    )?;
    let request = to_request(input, &s.caps)?;
    let r = s.service.create_schedule(&name, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(ScheduleDto::from_record(&r, None)),
    ))
}

/// Every schedule.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules",
    responses((status = 200, body = Vec<ScheduleDto>)))]
pub(super) async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ScheduleDto>>> {
    caller.require(Role::Read)?;
    let all = s.service.schedules().await?;
    Ok(Json(
        all.iter()
            .map(|r| ScheduleDto::from_record(r, None))
            .collect(),
    ))
}

/// One schedule with its next fire time and its last job (the last result).
#[utoipa::path(get, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path)),
    responses((status = 200, body = ScheduleDto), (status = 404, body = super::ErrorBody)))]
pub(super) async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleDto>> {
    caller.require(Role::Read)?;
    let v = s.service.schedule(&schedule_name(&name)?).await?;
    Ok(Json(ScheduleDto::from_record(
        &v.schedule,
        v.last_job.as_ref(),
    )))
}

/// Replaces a schedule in place (a reschedule): the old fire times stop, the new ones start
/// from now; its history is kept.
#[utoipa::path(put, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path)),
    request_body = ScheduleInput,
    responses((status = 200, body = ScheduleDto), (status = 404, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)))]
pub(super) async fn update(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Json<ScheduleDto>> {
    caller.require(Role::Admin)?;
    let name = schedule_name(&name)?;
    let bytes = read_body(body, s.caps.body_bytes, "the request body").await?;
    let input: ScheduleInput = parse_json(&bytes)?;
    if input
        .schedule
        .name
        .as_deref()
        .is_some_and(|n| n != name.as_str())
    {
        return Err(ApiError::unprocessable(
            "invalid",
            "`name` must match the schedule in the path (rename by delete and create)",
        ));
    }
    let request = to_request(input, &s.caps)?;
    let r = s.service.update_schedule(&name, request).await?;
    Ok(Json(ScheduleDto::from_record(&r, None)))
}

/// Deletes a schedule; the jobs it submitted stay.
#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody)))]
pub(super) async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    s.service.delete_schedule(&schedule_name(&name)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pauses a schedule: it does not fire until resumed.
#[utoipa::path(post, path = "/v1/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path)),
    responses((status = 200, body = ScheduleDto), (status = 404, body = super::ErrorBody)))]
pub(super) async fn pause(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleDto>> {
    caller.require(Role::Admin)?;
    let r = s
        .service
        .set_schedule_paused(&schedule_name(&name)?, true)
        .await?;
    Ok(Json(ScheduleDto::from_record(&r, None)))
}

/// Resumes a schedule from now on (what it would have fired while paused is not caught up).
#[utoipa::path(post, path = "/v1/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path)),
    responses((status = 200, body = ScheduleDto), (status = 404, body = super::ErrorBody)))]
pub(super) async fn resume(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleDto>> {
    caller.require(Role::Admin)?;
    let r = s
        .service
        .set_schedule_paused(&schedule_name(&name)?, false)
        .await?;
    Ok(Json(ScheduleDto::from_record(&r, None)))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct NextQuery {
    /// How many fire times (1 to 100, default 5).
    #[param(minimum = 1, maximum = 100)]
    n: Option<usize>,
}

/// The schedule's next fire times.
#[utoipa::path(get, path = "/v1/schedules/{name}/next", tag = "schedules",
    params(("name" = String, Path), NextQuery),
    responses((status = 200, body = FireTimesDto), (status = 404, body = super::ErrorBody)))]
pub(super) async fn next(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<NextQuery>,
) -> ApiResult<Json<FireTimesDto>> {
    caller.require(Role::Read)?;
    let n = q.n.unwrap_or(5);
    if !(1..=100).contains(&n) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("n must be 1 to 100, got {n}"),
        ));
    }
    let times = s
        .service
        .preview_schedule(&schedule_name(&name)?, n)
        .await?;
    Ok(Json(FireTimesDto {
        times: times.into_iter().map(time).collect(),
    }))
}
