//! `GET /v1/events`: server-sent events of job state changes, filterable by task, queue or
//! job. Each event is `event: job` with a JSON `EventDto`; a listener too slow to keep up gets
//! `event: lagged` with how many events it missed, and goes on.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::body::Query;
use super::dto::EventDto;
use super::error::{ApiError, ApiResult};
use super::{AppState, Caller};
use crate::domain::{JobId, QueueName, Role, TaskName};
use crate::service::JobEvent;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// Only jobs of this task.
    #[param(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", max_length = 64)]
    task: Option<String>,
    /// Only jobs of this queue.
    #[param(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", max_length = 64)]
    queue: Option<String>,
    /// Only this job.
    #[param(
        pattern = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$",
        max_length = 26
    )]
    job: Option<String>,
}

struct Filter {
    task: Option<TaskName>,
    queue: Option<QueueName>,
    job: Option<JobId>,
}

impl Filter {
    fn matches(&self, e: &JobEvent) -> bool {
        self.task.as_ref().is_none_or(|t| *t == e.task)
            && self.queue.as_ref().is_none_or(|q| *q == e.queue)
            && self.job.is_none_or(|j| j == e.id)
    }
}

/// Job state changes as they happen (`text/event-stream`).
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, content_type = "text/event-stream", body = EventDto,
        description = "a stream of `job` events (JSON EventDto) and `lagged` events")))]
pub(super) async fn events(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    caller.require(Role::Read)?;
    let bad = |e: String| ApiError::bad_request("invalid_query", e);
    let filter = Filter {
        task: q
            .task
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: crate::domain::NameError| bad(e.to_string()))?,
        queue: q
            .queue
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: crate::domain::NameError| bad(e.to_string()))?,
        job: q
            .job
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: crate::domain::JobIdError| bad(e.to_string()))?,
    };
    Ok(stream(&s, filter))
}

/// The events `filter` lets through, as a stream that never ends (kept alive every 15 s).
fn stream(
    s: &AppState,
    filter: Filter,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let receiver = s.service.subscribe();
    let stream = futures_util::stream::unfold((receiver, filter), |(mut rx, filter)| async move {
        loop {
            let event = match rx.recv().await {
                Ok(e) if filter.matches(&e) => {
                    let data = serde_json::to_string(&EventDto::from_event(&e)).unwrap_or_default();
                    Event::default()
                        .event("job")
                        .id(e.id.to_string())
                        .data(data)
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok(event), (rx, filter)));
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Every job event, for the web console (which has checked its session).
pub(super) fn all_jobs(s: &AppState) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    stream(
        s,
        Filter {
            task: None,
            queue: None,
            job: None,
        },
    )
}
