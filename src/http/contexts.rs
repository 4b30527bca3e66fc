//! The contexts that live jobs carry (the older queue's `get_uids`): which objects have work
//! waiting or running, a page at a time. The jobs of one are `GET /v1/jobs?context=`.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::body::Query;
use super::dto::{ContextDto, ContextList};
use super::error::{ApiError, ApiResult};
use super::{AppState, Caller};
use crate::domain::Role;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ContextQuery {
    /// The `next` of the previous page.
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The contexts of live (held, scheduled, queued or running) jobs, in order, each with how
/// many live jobs carry it.
#[utoipa::path(get, path = "/v1/contexts", tag = "jobs", params(ContextQuery),
    responses((status = 200, body = ContextList), (status = 400, body = super::ErrorBody)))]
pub(super) async fn list_contexts(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<ContextQuery>,
) -> ApiResult<Json<ContextList>> {
    caller.require(Role::Read)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1 to 1000, got {limit}"),
        ));
    }
    let contexts = s.service.live_contexts(q.after, limit).await?;
    let next = (contexts.len() == limit as usize)
        .then(|| contexts.last().map(|(c, _)| c.clone()))
        .flatten();
    Ok(Json(ContextList {
        contexts: contexts
            .into_iter()
            .map(|(context, live)| ContextDto { context, live })
            .collect(),
        next,
    }))
}
