//! What makes the console's pages live, for browsers that run its one small script
//! (`console.js`): the job events of the API's stream for the job table's rows, a new job's
//! row, and a job's state and progress for its page (the pages read the same without them);
//! and a job's output as a file to save.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Serialize;

use super::session::Viewer;
use crate::domain::{Job, JobId};
use crate::http::AppState;

/// The script, embedded in the binary.
const SCRIPT: &str = include_str!("console.js");

pub(super) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// Every job event (`event: job`, JSON like the API's), for a signed-in viewer.
pub(super) async fn events(
    State(s): State<AppState>,
    _viewer: Viewer,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    crate::http::events::all_jobs(&s)
}

/// The filters of a job table whose script asks for a new job's row.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct RowQuery {
    state: Option<String>,
    task: Option<String>,
    queue: Option<String>,
    context: Option<String>,
    select: Option<String>,
}

/// The job whose id is `id`; `None` (a 404 to the script) for an id that is not one, or a
/// job that is gone.
async fn found(s: &AppState, id: &str) -> Option<Job> {
    s.service.job(id.parse().ok()?).await.ok()
}

/// A new job's row for the job table, if the job matches the table's filters (else 204).
pub(super) async fn row(
    State(s): State<AppState>,
    _viewer: Viewer,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<RowQuery>,
) -> Response {
    let Some(job) = found(&s, &id).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let differs = |want: &Option<String>, have: &str| {
        want.as_deref().is_some_and(|w| !w.is_empty() && w != have)
    };
    if differs(&q.state, job.state.as_str())
        || differs(&q.task, job.task.as_str())
        || differs(&q.queue, job.queue.as_str())
        || differs(&q.context, job.context.as_deref().unwrap_or_default())
    {
        return StatusCode::NO_CONTENT.into_response();
    }
    let row = super::pages::job_row(&job, q.select.is_some());
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        row.into_string(),
    )
        .into_response()
}

/// `bytes` as a file to save, named `name`.
fn attachment(content_type: &'static str, name: &str, bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// A completed job's output as it is, to save (bytes that are not text included).
pub(super) async fn output(
    State(s): State<AppState>,
    _viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    match found(&s, &id).await.and_then(|job| job.output) {
        Some(bytes) => attachment("application/octet-stream", &format!("{id}.out"), bytes),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// An attempt's repro bundle (`remotask replay`), to save.
pub(super) async fn bundle(
    State(s): State<AppState>,
    viewer: Viewer,
    Path((id, n)): Path<(String, u32)>,
) -> Response {
    let Ok(id) = id.parse::<JobId>() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match s.service.bundle(id, n).await {
        Ok(bundle) => attachment(
            "application/vnd.remotask.bundle",
            &format!("{id}-{n}.bundle"),
            bundle.encode(),
        ),
        Err(e) => super::failure(StatusCode::NOT_FOUND, Some(&viewer), &e.to_string()),
    }
}

/// A job's state and progress, for its page's progress bar.
#[derive(Debug, Serialize)]
struct Live {
    state: String,
    done: Option<i64>,
    total: Option<i64>,
    terminal: bool,
}

pub(super) async fn job(
    State(s): State<AppState>,
    _viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    match found(&s, &id).await {
        Some(job) => Json(Live {
            state: job.state.to_string(),
            done: job.progress.map(|p| p.0),
            total: job.progress.map(|p| p.1),
            terminal: job.state.is_terminal(),
        })
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
