//! Job routes: submit (single and batch), read (with long-poll), output, log, an attempt's
//! repro bundle, explain, list, and the operator actions: cancel (one or by filter), release, retry, delete, clean.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use utoipa::IntoParams;

use super::body::{Query, parse_json, read_body};
use super::dto::{
    AttemptDto, BatchResult, CancelDto, CancelFilter, CleanRequest, CountDto, ExplainDto, JobDto,
    JobList, JobSpec, SubmitBatch, SubmitJob, parse_time,
};
use super::error::{ApiError, ApiResult};
use super::{AppState, Caller, HttpCaps};
use crate::domain::{CancelOutcome, JobFilter};
use crate::domain::{Job, JobId, JobState, JobTemplate, Role};
use crate::service::SubmitRequest;

/// The longest a client may ask `GET /v1/jobs/{id}?wait=` to wait, in seconds.
const MAX_WAIT_SECONDS: f64 = 300.0;
const MAX_PAGE: u32 = 1000;
const MAX_ENV: usize = 256;

fn job_id(raw: &str) -> ApiResult<JobId> {
    raw.parse()
        .map_err(|e: crate::domain::JobIdError| ApiError::bad_request("invalid_id", e.to_string()))
}

fn invalid(field: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::unprocessable("invalid", format!("{field}: {e}"))
}

/// Checks what the wire can get wrong in a job and turns it into the service's template: the
/// one conversion of a [`JobSpec`], for submits and schedules alike.
pub(super) fn job_template(job: JobSpec, caps: &HttpCaps) -> ApiResult<JobTemplate> {
    let given = [
        job.input.is_some(),
        job.input_text.is_some(),
        job.input_base64.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ApiError::bad_request(
            "invalid_input",
            "give one of input, input_text and input_base64",
        ));
    }
    let input = if let Some(v) = &job.input {
        serde_json::to_vec(v).map_err(|e| invalid("input", e))?
    } else if let Some(t) = job.input_text {
        t.into_bytes()
    } else if let Some(b) = &job.input_base64 {
        base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| ApiError::bad_request("invalid_input", format!("input_base64: {e}")))?
    } else {
        Vec::new()
    };
    if input.len() > caps.input_bytes {
        return Err(ApiError::too_large("the job input", caps.input_bytes));
    }
    let task = super::tasks::task_name(&job.task)?;
    if job.env.len() > MAX_ENV {
        return Err(invalid("env", format!("at most {MAX_ENV} variables")));
    }
    for key in job.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(invalid("env", format!("{key:?} is not a variable name")));
        }
    }
    let queue = match &job.queue {
        Some(q) => Some(q.parse().map_err(|e| invalid("queue", e))?),
        None => None,
    };
    Ok(JobTemplate {
        task,
        input,
        args: job.args,
        env: job.env.into_iter().collect(),
        queue,
        priority: job.priority,
        limits: job.limits.map(|l| l.to_override()).unwrap_or_default(),
        retry: job.retry,
        context: job.context,
        concurrency_key: job.concurrency_key,
    })
}

/// Turns a submitted job into a service request: its [`job_template`], when it may start,
/// its unique key and who submitted it.
fn to_request(body: SubmitJob, caps: &HttpCaps, submitter: &str) -> ApiResult<SubmitRequest> {
    let job = job_template(body.job, caps)?;
    let submit = body.submit;
    let delay = match submit.delay_seconds {
        Some(d) if d.is_finite() && (0.0..=366.0 * 86_400.0).contains(&d) => {
            Some(Duration::from_secs_f64(d))
        }
        Some(d) => {
            return Err(invalid(
                "delay_seconds",
                format!("{d} is not 0 to one year"),
            ));
        }
        None => None,
    };
    let run_at = submit.run_at.as_deref().map(parse_time).transpose()?;
    let mut request = SubmitRequest::new(job.task, job.input);
    request.args = job.args;
    request.env = job.env;
    request.queue = job.queue;
    request.priority = job.priority;
    request.delay = delay;
    request.run_at = run_at;
    request.hold = submit.hold;
    request.unique_key = submit.unique_key;
    request.context = job.context;
    request.concurrency_key = job.concurrency_key;
    request.limits = job.limits;
    request.retry = job.retry;
    request.submitter = Some(submitter.to_owned());
    Ok(request)
}

/// Submits a job: 202 with the new job, or 200 with the live job that holds its unique key.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    request_body = SubmitJob,
    responses(
        (status = 202, body = JobDto, description = "accepted (durable)"),
        (status = 200, body = JobDto, description = "a live job with this unique key already exists"),
        (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody, description = "unknown task"),
        (status = 413, body = super::ErrorBody), (status = 422, body = super::ErrorBody),
    ))]
pub(super) async fn submit(
    State(s): State<AppState>,
    caller: Caller,
    body: Body,
) -> ApiResult<(StatusCode, Json<JobDto>)> {
    caller.require(Role::Submit)?;
    let cap = s.caps.input_bytes.saturating_mul(4) + (64 << 10);
    let bytes = read_body(body, cap.min(s.caps.body_bytes), "the request body").await?;
    let job: SubmitJob = parse_json(&bytes)?;
    let submitted = s
        .service
        .submit(to_request(job, &s.caps, &caller.token_id)?)
        .await?;
    let status = if submitted.existing {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(JobDto::from_job(&submitted.job))))
}

/// Submits many jobs in one transaction: all are stored, or none.
#[utoipa::path(post, path = "/v1/jobs/batch", tag = "jobs",
    request_body = SubmitBatch,
    responses((status = 202, body = BatchResult), (status = 400, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody, description = "a job names an unknown task"),
        (status = 413, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub(super) async fn submit_batch(
    State(s): State<AppState>,
    caller: Caller,
    body: Body,
) -> ApiResult<(StatusCode, Json<BatchResult>)> {
    caller.require(Role::Submit)?;
    let bytes = read_body(body, s.caps.body_bytes, "the request body").await?;
    let batch: SubmitBatch = parse_json(&bytes)?;
    if batch.jobs.len() > s.caps.batch_jobs {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "a batch holds at most {} jobs, got {}",
                s.caps.batch_jobs,
                batch.jobs.len()
            ),
        ));
    }
    let mut requests = Vec::with_capacity(batch.jobs.len());
    for (i, job) in batch.jobs.into_iter().enumerate() {
        let request = to_request(job, &s.caps, &caller.token_id).map_err(|mut e| {
            e.message = format!("jobs[{i}]: {}", e.message);
            e
        })?;
        requests.push(request);
    }
    let submitted = s.service.submit_batch(requests).await?;
    let jobs = submitted.iter().map(|j| JobDto::from_job(&j.job)).collect();
    Ok((StatusCode::ACCEPTED, Json(BatchResult { jobs })))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Comma-separated states, e.g. `queued,running`.
    #[param(
        pattern = "^((held|scheduled|queued|running|completed|failed|cancelled|delayed|processing|error)(,(held|scheduled|queued|running|completed|failed|cancelled|delayed|processing|error))*)?$"
    )]
    state: Option<String>,
    #[param(pattern = "^([a-z0-9][a-z0-9._-]{0,63})?$")]
    task: Option<String>,
    #[param(pattern = "^([a-z0-9][a-z0-9._-]{0,63})?$")]
    queue: Option<String>,
    context: Option<String>,
    unique_key: Option<String>,
    /// The `next` of the previous page.
    #[param(pattern = "^([0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25})?$")]
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

fn states(raw: Option<&str>) -> ApiResult<Vec<JobState>> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|e: String| ApiError::bad_request("invalid_query", e))
        })
        .collect()
}

/// Jobs matching the filters, oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobList), (status = 400, body = super::ErrorBody)))]
pub(super) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<JobList>> {
    caller.require(Role::Read)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_PAGE}, got {limit}"),
        ));
    }
    let bad = |e: crate::domain::NameError| ApiError::bad_request("invalid_query", e.to_string());
    // An empty value is no filter, as a form with a field left blank sends it.
    let given = |v: Option<String>| v.filter(|v| !v.is_empty());
    let q = ListQuery {
        task: given(q.task),
        queue: given(q.queue),
        context: given(q.context),
        unique_key: given(q.unique_key),
        after: given(q.after),
        ..q
    };
    let filter = JobFilter {
        states: states(q.state.as_deref())?,
        task: q.task.as_deref().map(str::parse).transpose().map_err(bad)?,
        queue: q
            .queue
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(bad)?,
        context: q.context,
        unique_key: q.unique_key,
        after: q.after.as_deref().map(job_id).transpose()?,
        limit,
        newest_first: false,
    };
    let jobs = s.service.jobs(&filter).await?;
    let next = (jobs.len() == limit as usize)
        .then(|| jobs.last().map(|j| j.id.to_string()))
        .flatten();
    Ok(Json(JobList {
        jobs: jobs.iter().map(JobDto::from_job).collect(),
        next,
    }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct WaitQuery {
    /// Wait up to this many seconds (at most 300) for the job to end before answering.
    #[param(minimum = 0, maximum = 300)]
    wait: Option<f64>,
}

async fn job_with_attempts(s: &AppState, job: &Job) -> ApiResult<JobDto> {
    let attempts = s.service.attempts(job.id).await?;
    let mut dto = JobDto::from_job(job);
    dto.attempt_history = Some(attempts.iter().map(AttemptDto::from_record).collect());
    Ok(dto)
}

/// A job with its output, error, progress and every attempt with its receipt. With `wait`,
/// answers when the job has ended or the wait is over, whichever comes first.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path), WaitQuery),
    responses((status = 200, body = JobDto), (status = 404, body = super::ErrorBody)))]
pub(super) async fn get_job(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<JobDto>> {
    caller.require(Role::Read)?;
    let id = job_id(&id)?;
    let job = match q.wait {
        Some(w) if w.is_finite() && (0.0..=MAX_WAIT_SECONDS).contains(&w) => {
            s.service.wait(id, Duration::from_secs_f64(w)).await?
        }
        Some(w) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("wait must be 0 to {MAX_WAIT_SECONDS} seconds, got {w}"),
            ));
        }
        None => s.service.job(id).await?,
    };
    Ok(Json(job_with_attempts(&s, &job).await?))
}

/// The raw output (the guest's stdout) of a completed job.
#[utoipa::path(get, path = "/v1/jobs/{id}/output", tag = "jobs",
    params(("id" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody, description = "the job has not completed")))]
pub(super) async fn output(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require(Role::Read)?;
    let job = s.service.job(job_id(&id)?).await?;
    match job.output {
        Some(bytes) => {
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
        }
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_output",
            format!(
                "job {} is {}; only a completed job has output",
                job.id, job.state
            ),
        )),
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct LogQuery {
    /// Only this attempt's stderr, as the guest wrote it.
    attempt: Option<u32>,
}

/// The log (stderr) of a job's attempts, each under a header line; or one attempt's raw stderr.
#[utoipa::path(get, path = "/v1/jobs/{id}/log", tag = "jobs",
    params(("id" = String, Path), LogQuery),
    responses((status = 200, content_type = "text/plain", body = String),
        (status = 404, body = super::ErrorBody)))]
pub(super) async fn log(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    caller.require(Role::Read)?;
    let id = job_id(&id)?;
    let attempts = s.service.attempts(id).await?;
    if let Some(n) = q.attempt {
        let a = attempts
            .iter()
            .find(|a| a.number == n)
            .ok_or_else(|| ApiError::not_found(format!("job {id} has no attempt {n}")))?;
        return Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            a.stderr.clone(),
        )
            .into_response());
    }
    let mut text = String::new();
    for a in &attempts {
        let exit = a
            .exit_code
            .map(|c| format!(", exit {c}"))
            .unwrap_or_default();
        let truncated = if a.stderr_truncated {
            ", truncated"
        } else {
            ""
        };
        text.push_str(&format!(
            "== attempt {}: {}{exit}{truncated} ==\n",
            a.number, a.reason
        ));
        text.push_str(&String::from_utf8_lossy(&a.stderr));
        if !a.stderr.is_empty() && !a.stderr.ends_with(b"\n") {
            text.push('\n');
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// An attempt's repro bundle: one file with the module, input, args, env, limits, the
/// recorded seed and clock values and what the attempt produced, for `remotask replay`.
#[utoipa::path(get, path = "/v1/jobs/{id}/attempts/{n}/bundle", tag = "jobs",
    params(("id" = String, Path), ("n" = u32, Path, minimum = 1, description = "the attempt, 1 for the first")),
    responses((status = 200, content_type = "application/vnd.remotask.bundle", body = Vec<u8>,
            description = "the bundle (format in docs/bundle.md)"),
        (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody, description = "the attempt was not recorded (it ended `lease_lost`)")))]
pub(super) async fn bundle(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, n)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require(Role::Read)?;
    let id = job_id(&id)?;
    let n: u32 = n.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_attempt",
            format!("attempt {n:?}: an attempt is a number from 1"),
        )
    })?;
    let bundle = s.service.bundle(id, n).await?;
    let name = format!("attachment; filename=\"{id}-{n}.bundle\"");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.remotask.bundle".to_owned(),
            ),
            (header::CONTENT_DISPOSITION, name),
        ],
        bundle.encode(),
    )
        .into_response())
}

/// Why a job is where it is: held, delayed until T, queue paused, queue full, behind N jobs.
#[utoipa::path(get, path = "/v1/jobs/{id}/explain", tag = "jobs",
    params(("id" = String, Path)),
    responses((status = 200, body = ExplainDto), (status = 404, body = super::ErrorBody)))]
pub(super) async fn explain(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ExplainDto>> {
    caller.require(Role::Read)?;
    let e = s.service.explain(job_id(&id)?).await?;
    Ok(Json(ExplainDto::from(&e)))
}

/// Cancels a job: a waiting one at once (`cancelled`); a running one is interrupted in its
/// sandbox and ends `cancelled` within milliseconds (`cancelling`).
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path)),
    responses((status = 200, body = CancelDto), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody, description = "the job had already ended")))]
pub(super) async fn cancel(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<CancelDto>> {
    caller.require(Role::Submit)?;
    let id = job_id(&id)?;
    let outcome = match s.service.cancel(id).await? {
        CancelOutcome::Cancelled => "cancelled",
        CancelOutcome::Running => "cancelling",
        CancelOutcome::AlreadyEnded(state) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_ended",
                format!("job {id} is {state}; there is nothing to cancel"),
            ));
        }
        CancelOutcome::NotFound => return Err(ApiError::not_found(format!("job {id} not found"))),
    };
    let job = s.service.job(id).await?;
    Ok(Json(CancelDto {
        outcome: outcome.into(),
        job: JobDto::from_job(&job),
    }))
}

/// Cancels every job that matches the filter and has not ended.
#[utoipa::path(post, path = "/v1/jobs/cancel", tag = "jobs",
    request_body = CancelFilter,
    responses((status = 200, body = CountDto), (status = 400, body = super::ErrorBody)))]
pub(super) async fn cancel_matching(
    State(s): State<AppState>,
    caller: Caller,
    body: Body,
) -> ApiResult<Json<CountDto>> {
    caller.require(Role::Submit)?;
    let bytes = read_body(body, s.caps.body_bytes, "the request body").await?;
    let f: CancelFilter = parse_json(&bytes)?;
    let narrowed = !f.state.is_empty()
        || f.task.is_some()
        || f.queue.is_some()
        || f.context.is_some()
        || f.unique_key.is_some();
    if !narrowed && !f.all {
        return Err(ApiError::bad_request(
            "invalid_filter",
            "give at least one of state, task, queue, context, unique_key; or all: true",
        ));
    }
    let bad = |e: crate::domain::NameError| ApiError::bad_request("invalid_filter", e.to_string());
    let filter = JobFilter {
        // Each state on its own: an empty one is refused, not read as no filter.
        states: f
            .state
            .iter()
            .map(|s| match s.parse::<JobState>()? {
                st if st.is_terminal() => {
                    Err(format!("a {st} job has ended: it cannot be cancelled"))
                }
                st => Ok(st),
            })
            .collect::<Result<_, String>>()
            .map_err(|e| ApiError::bad_request("invalid_filter", e))?,
        task: f.task.as_deref().map(str::parse).transpose().map_err(bad)?,
        queue: f
            .queue
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(bad)?,
        context: f.context,
        unique_key: f.unique_key,
        after: None,
        limit: MAX_PAGE,
        newest_first: false,
    };
    let count = s.service.cancel_matching(&filter).await?;
    Ok(Json(CountDto { count }))
}

/// Releases a held job into its queue.
#[utoipa::path(post, path = "/v1/jobs/{id}/release", tag = "jobs",
    params(("id" = String, Path)),
    responses((status = 200, body = JobDto), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody, description = "the job is not held")))]
pub(super) async fn release(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<JobDto>> {
    caller.require(Role::Submit)?;
    let job = s.service.release(job_id(&id)?).await?;
    Ok(Json(JobDto::from_job(&job)))
}

/// Requeues a failed or cancelled job with a fresh attempt budget. Its attempts so far keep
/// their numbers and records; the next attempt takes the next number.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = String, Path)),
    responses((status = 200, body = JobDto), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody, description = "the job is not failed or cancelled")))]
pub(super) async fn retry(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<JobDto>> {
    caller.require(Role::Submit)?;
    let job = s.service.retry(job_id(&id)?).await?;
    Ok(Json(JobDto::from_job(&job)))
}

/// Deletes a job that is not running, with its attempts.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody, description = "the job is running")))]
pub(super) async fn delete_job(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Submit)?;
    s.service.delete(job_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes ended (completed, failed, cancelled) jobs; live jobs are kept.
#[utoipa::path(post, path = "/v1/jobs/clean", tag = "jobs",
    request_body(content = CleanRequest, description = "optional: without a body, every ended job", content_type = "application/json"),
    responses((status = 200, body = CountDto), (status = 403, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody, description = "older_than_seconds is not a number of seconds from 0")))]
pub(super) async fn clean(
    State(s): State<AppState>,
    caller: Caller,
    body: Body,
) -> ApiResult<Json<CountDto>> {
    caller.require(Role::Admin)?;
    let bytes = read_body(body, s.caps.body_bytes, "the request body").await?;
    let req: CleanRequest = if bytes.is_empty() {
        CleanRequest::default()
    } else if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body of a clean is a JSON object, or nothing",
        ));
    } else {
        parse_json(&bytes)?
    };
    // Beyond what a duration holds is older than anything stored: no job is that old.
    let older_than = match req.older_than_seconds {
        Some(v) if v.is_finite() && v >= 0.0 => {
            Some(Duration::try_from_secs_f64(v).unwrap_or(Duration::MAX))
        }
        Some(v) => {
            return Err(invalid(
                "older_than_seconds",
                format!("{v} is not a duration"),
            ));
        }
        None => None,
    };
    let count = s.service.clean(older_than).await?;
    Ok(Json(CountDto { count }))
}
