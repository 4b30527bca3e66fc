//! Health, Prometheus metrics, the OpenAPI document, and the answers for unknown routes.

use std::fmt::Write as _;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};
use super::{AppState, Caller};
use crate::domain::{JobState, Role};

/// Liveness: the process answers and its store is readable.
#[utoipa::path(get, path = "/healthz", tag = "ops", security(()),
    responses((status = 200, description = "ok"), (status = 503, description = "the store cannot be read")))]
pub(super) async fn healthz(State(s): State<AppState>) -> Response {
    match s.service.queues().await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %crate::telemetry::Chain(&e), "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
    }
}

/// Metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(super) async fn metrics(State(s): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.require(Role::Read)?;
    let queues = s.service.queues().await?;
    let m = s.service.metrics();
    let mut out = String::new();
    let mut w = |line: String| {
        out.push_str(&line);
        out.push('\n');
    };
    w("# HELP remotask_jobs Jobs by queue and state.".into());
    w("# TYPE remotask_jobs gauge".into());
    for q in &queues {
        for state in JobState::ALL {
            let n = q.counts.get(&state).copied().unwrap_or(0);
            w(format!(
                "remotask_jobs{{queue=\"{}\",state=\"{state}\"}} {n}",
                q.config.name
            ));
        }
    }
    w("# HELP remotask_queue_depth Jobs waiting to run (queued) per queue.".into());
    w("# TYPE remotask_queue_depth gauge".into());
    for q in &queues {
        let n = q.counts.get(&JobState::Queued).copied().unwrap_or(0);
        w(format!(
            "remotask_queue_depth{{queue=\"{}\"}} {n}",
            q.config.name
        ));
    }
    w("# HELP remotask_queue_running Jobs running per queue.".into());
    w("# TYPE remotask_queue_running gauge".into());
    for q in &queues {
        let n = q.counts.get(&JobState::Running).copied().unwrap_or(0);
        w(format!(
            "remotask_queue_running{{queue=\"{}\"}} {n}",
            q.config.name
        ));
    }
    w("# HELP remotask_queue_paused 1 if the queue is paused.".into());
    w("# TYPE remotask_queue_paused gauge".into());
    for q in &queues {
        w(format!(
            "remotask_queue_paused{{queue=\"{}\"}} {}",
            q.config.name,
            u8::from(q.paused)
        ));
    }
    w("# HELP remotask_attempts_total Attempts ended in this process, by reason.".into());
    w("# TYPE remotask_attempts_total counter".into());
    for (reason, n) in &m.attempts_by_reason {
        w(format!(
            "remotask_attempts_total{{reason=\"{reason}\"}} {n}"
        ));
    }
    w("# HELP remotask_attempt_duration_seconds Wall time of attempts.".into());
    w("# TYPE remotask_attempt_duration_seconds histogram".into());
    for (bound, n) in &m.duration_buckets {
        w(format!(
            "remotask_attempt_duration_seconds_bucket{{le=\"{bound}\"}} {n}"
        ));
    }
    w(format!(
        "remotask_attempt_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        m.duration_count
    ));
    w(format!(
        "remotask_attempt_duration_seconds_sum {}",
        m.duration_sum_seconds
    ));
    w(format!(
        "remotask_attempt_duration_seconds_count {}",
        m.duration_count
    ));
    w("# HELP remotask_background_errors_total Failures of background work in this process, by component.".into());
    w("# TYPE remotask_background_errors_total counter".into());
    for (component, n) in crate::telemetry::background_errors() {
        w(format!(
            "remotask_background_errors_total{{component=\"{component}\"}} {n}"
        ));
    }
    w("# HELP remotask_fuel_consumed_total Fuel consumed by attempts in this process.".into());
    w("# TYPE remotask_fuel_consumed_total counter".into());
    let mut last = String::new();
    let _ = write!(last, "remotask_fuel_consumed_total {}", m.fuel_consumed);
    w(last);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "ops", security(()),
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json")))]
pub(super) async fn openapi_json() -> Response {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let json = DOCUMENT.get_or_init(|| {
        super::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    });
    ([(header::CONTENT_TYPE, "application/json")], json.clone()).into_response()
}

pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /v1/openapi.json")
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /v1/openapi.json",
    )
}
