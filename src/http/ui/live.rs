//! What makes the console's pages live, for browsers that run its one small script
//! (`console.js`): the job events of the API's stream for the job table's rows, and a job's
//! state and progress for its page. The pages read the same without them.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Serialize;

use super::session::Viewer;
use crate::domain::JobId;
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
    let Ok(id) = id.parse::<JobId>() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match s.service.job(id).await {
        Ok(job) => Json(Live {
            state: job.state.to_string(),
            done: job.progress.map(|p| p.0),
            total: job.progress.map(|p| p.1),
            terminal: job.state.is_terminal(),
        })
        .into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
