//! Health, Prometheus metrics, the OpenAPI document, and the answers for unknown routes.

use std::fmt::Write as _;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};
use super::{AppState, Caller};
use crate::domain::{JobState, QueueStats, Role};
use crate::service::{MetricsSnapshot, StoreHealth, WorkerView};

/// Liveness: the process answers and its store is readable.
#[utoipa::path(get, path = "/healthz", tag = "ops", security(()),
    responses((status = 200, description = "ok"),
        (status = 503, description = "the store cannot be read, or cannot write (its disk is full)")))]
pub(super) async fn healthz(State(s): State<AppState>) -> Response {
    let health = match s.service.queues().await {
        Ok(_) => s.service.store_health().await,
        Err(e) => Err(e),
    };
    match health {
        Ok(StoreHealth::Writable) => (StatusCode::OK, "ok\n").into_response(),
        Ok(StoreHealth::DiskFull { since }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "store cannot write: its disk is full (since {})\n",
                crate::http::dto::time(since)
            ),
        )
            .into_response(),
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
    let mut out = Metrics::default();
    queue_metrics(&mut out, &queues);
    attempt_metrics(&mut out, &s.service.metrics());
    worker_metrics(&mut out, &s.service.workers());
    out.family(
        "remotask_leader",
        "gauge",
        "1 if this node leads maintenance (rescuer, scheduler, cleaner) on its store.",
    );
    let leading = u8::from(s.service.metrics().leading);
    out.line(format_args!("remotask_leader {leading}"));
    out.family(
        "remotask_store_disk_full_total",
        "counter",
        "Writes the store refused because its disk was full.",
    );
    out.line(format_args!(
        "remotask_store_disk_full_total {}",
        s.service.disk_full_total()
    ));
    out.family(
        "remotask_background_errors_total",
        "counter",
        "Failures of background work in this process, by component.",
    );
    for (component, n) in crate::telemetry::background_errors() {
        out.line(format_args!(
            "remotask_background_errors_total{{component=\"{component}\"}} {n}"
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out.0).into_response())
}

/// The text of a metrics page.
#[derive(Default)]
struct Metrics(String);

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.line(format_args!("# HELP {name} {help}"));
        self.line(format_args!("# TYPE {name} {kind}"));
    }

    fn line(&mut self, line: std::fmt::Arguments<'_>) {
        let _ = self.0.write_fmt(line);
        self.0.push('\n');
    }
}

fn queue_metrics(out: &mut Metrics, queues: &[QueueStats]) {
    let count = |q: &QueueStats, state| q.counts.get(&state).copied().unwrap_or(0);
    out.family("remotask_jobs", "gauge", "Jobs by queue and state.");
    for q in queues {
        for state in JobState::ALL {
            let (name, n) = (&q.config.name, count(q, state));
            out.line(format_args!(
                "remotask_jobs{{queue=\"{name}\",state=\"{state}\"}} {n}"
            ));
        }
    }
    type Gauge = (&'static str, &'static str, fn(&QueueStats) -> u64);
    let gauges: [Gauge; 3] = [
        (
            "remotask_queue_depth",
            "Jobs waiting to run (queued) per queue.",
            |q| q.counts.get(&JobState::Queued).copied().unwrap_or(0),
        ),
        ("remotask_queue_running", "Jobs running per queue.", |q| {
            q.counts.get(&JobState::Running).copied().unwrap_or(0)
        }),
        ("remotask_queue_paused", "1 if the queue is paused.", |q| {
            u64::from(q.paused)
        }),
    ];
    for (family, help, value) in gauges {
        out.family(family, "gauge", help);
        for q in queues {
            let (name, v) = (&q.config.name, value(q));
            out.line(format_args!("{family}{{queue=\"{name}\"}} {v}"));
        }
    }
}

fn attempt_metrics(out: &mut Metrics, m: &MetricsSnapshot) {
    out.family(
        "remotask_attempts_total",
        "counter",
        "Attempts ended in this process, by reason.",
    );
    for (reason, n) in &m.attempts_by_reason {
        out.line(format_args!(
            "remotask_attempts_total{{reason=\"{reason}\"}} {n}"
        ));
    }
    let family = "remotask_attempt_duration_seconds";
    out.family(family, "histogram", "Wall time of attempts.");
    for (bound, n) in &m.duration_buckets {
        out.line(format_args!("{family}_bucket{{le=\"{bound}\"}} {n}"));
    }
    let count = m.duration_count;
    out.line(format_args!("{family}_bucket{{le=\"+Inf\"}} {count}"));
    out.line(format_args!("{family}_sum {}", m.duration_sum_seconds));
    out.line(format_args!("{family}_count {count}"));
    out.family(
        "remotask_fuel_consumed_total",
        "counter",
        "Fuel consumed by attempts in this process.",
    );
    out.line(format_args!(
        "remotask_fuel_consumed_total {}",
        m.fuel_consumed
    ));
}

fn worker_metrics(out: &mut Metrics, workers: &[WorkerView]) {
    type Value = fn(&WorkerView) -> String;
    let families: [(&str, &str, &str, Value); 5] = [
        (
            "remotask_worker_up",
            "gauge",
            "1 if the remote worker was seen within its lease period.",
            |w| u8::from(!w.gone).to_string(),
        ),
        (
            "remotask_worker_running",
            "gauge",
            "Jobs a remote worker holds.",
            |w| w.running.to_string(),
        ),
        (
            "remotask_worker_leased_total",
            "counter",
            "Jobs this process leased to a remote worker.",
            |w| w.leased_total.to_string(),
        ),
        (
            "remotask_worker_reported_total",
            "counter",
            "Ended attempts a remote worker reported to this process.",
            |w| w.reported_total.to_string(),
        ),
        (
            "remotask_worker_last_seen_seconds",
            "gauge",
            "When a remote worker last called, in seconds since the Unix epoch.",
            |w| (w.last_seen.0 as f64 / 1e3).to_string(),
        ),
    ];
    for (family, kind, help, value) in families {
        out.family(family, kind, help);
        for worker in workers {
            let (name, v) = (&worker.hello.name, value(worker));
            out.line(format_args!("{family}{{worker=\"{name}\"}} {v}"));
        }
    }
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
