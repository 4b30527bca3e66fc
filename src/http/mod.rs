//! The HTTP API: the only code that knows axum and the JSON wire shapes. Everything is under
//! `/v1` except `/healthz` and `/metrics`. Handlers check the caller's role, turn wire shapes
//! into service requests (`dto/`), call [`Service`] and turn the answer back. The OpenAPI
//! document is generated from the handlers' annotations, so it cannot drift from the routes.
//!
//! Roles: `read` reads everything but tokens; `submit` also submits and manages jobs;
//! `worker` also leases jobs, reports them and fetches modules; `admin` does everything
//! (tasks, queues, tokens, schedules).

mod auth;
mod body;
mod contexts;
mod contract;
pub mod dto;
mod error;
mod events;
mod jobs;
mod leases;
mod ops;
mod queues;
mod schedules;
mod tasks;
mod tls;
mod tokens;
mod ui;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use std::path::{Path, PathBuf};
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Auth, Caller};
pub use error::{ApiError, ApiResult, ErrorBody, ErrorDetail};
pub use tls::{ServerTls, TlsError, TlsFiles, crypto_provider, read_certificates};

use std::sync::Arc;

use crate::domain::Role;
use crate::service::{LocalSource, Service, ServiceError};
use crate::worker::{Stop, StopHandle};

/// Size caps of what clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpCaps {
    /// A task module upload.
    pub module_bytes: usize,
    /// One job's input, after decoding.
    pub input_bytes: usize,
    /// Jobs in one batch submit.
    pub batch_jobs: usize,
    /// Any JSON request body (a batch included).
    pub body_bytes: usize,
}

impl Default for HttpCaps {
    fn default() -> Self {
        Self {
            module_bytes: 32 << 20,
            input_bytes: 1 << 20,
            batch_jobs: 10_000,
            body_bytes: 64 << 20,
        }
    }
}

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct AppState {
    pub service: Service,
    pub auth: Auth,
    /// Whether the server speaks HTTPS: the console's cookie is then `Secure`.
    pub secure_cookies: bool,
    pub caps: HttpCaps,
    /// The source that the lease API hands remote workers' jobs out of.
    pub leases: Arc<LocalSource>,
    /// Raised at shutdown: lease calls waiting for jobs return.
    stop: Stop,
    _stop: Arc<StopHandle>,
}

impl AppState {
    /// The API of `service`, with a lease source of its own.
    pub fn new(service: Service, caps: HttpCaps) -> Self {
        let leases = LocalSource::new(service.clone(), LocalSource::REQUEUE_DELAY);
        let (handle, stop) = Stop::new();
        Self {
            service,
            auth: Auth::default(),
            secure_cookies: false,
            caps,
            leases,
            stop,
            _stop: Arc::new(handle),
        }
    }

    /// The lease API on `leases` (the source the server's own pool uses), its long polls
    /// ended when `stop` is raised.
    pub fn with_leases(self, leases: Arc<LocalSource>, stop: Stop) -> Self {
        Self {
            leases,
            stop,
            ..self
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "remotask",
        description = "Run untrusted WebAssembly task modules as durable background jobs."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "tasks", description = "Task modules and their versions"),
        (name = "jobs", description = "Submitting, reading and managing jobs"),
        (name = "queues", description = "Queues: stats, pause, resume"),
        (name = "schedules", description = "Cron and delayed schedules that submit jobs"),
        (name = "events", description = "Server-sent events of job state changes"),
        (name = "tokens", description = "API tokens (admin)"),
        (name = "leases", description = "Remote workers: leases, heartbeats, reports, pushed cancels"),
        (name = "ops", description = "Health and metrics")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_json))
        .routes(routes!(tasks::list_tasks))
        .routes(routes!(
            tasks::put_task,
            tasks::get_task,
            tasks::patch_task,
            tasks::delete_task
        ))
        .routes(routes!(tasks::get_version))
        .routes(routes!(tasks::get_module))
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::submit_batch))
        .routes(routes!(jobs::cancel_matching))
        .routes(routes!(jobs::clean))
        .routes(routes!(jobs::get_job, jobs::delete_job))
        .routes(routes!(jobs::output))
        .routes(routes!(jobs::log))
        .routes(routes!(jobs::bundle))
        .routes(routes!(jobs::explain))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::release))
        .routes(routes!(jobs::retry))
        .routes(routes!(contexts::list_contexts))
        .routes(routes!(queues::list_queues))
        .routes(routes!(queues::get_queue))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(schedules::create, schedules::list))
        .routes(routes!(
            schedules::get,
            schedules::update,
            schedules::delete
        ))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(schedules::next))
        .routes(routes!(events::events))
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(leases::lease))
        .routes(routes!(leases::heartbeat))
        .routes(routes!(leases::report))
        .routes(routes!(leases::cancels))
        .routes(routes!(leases::workers))
}

/// The OpenAPI document of every route, completed (`contract.rs`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api().into_openapi();
    contract::complete(&mut doc);
    doc
}

/// The whole API as an axum router; tests call it with `oneshot`, `serve` binds it.
pub fn router(state: AppState) -> Router {
    let (router, _) = api().split_for_parts();
    router
        .merge(ui::router())
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        // Bodies are read by the handlers with their own caps and error shape.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Serves [`router`] on `listener`, over HTTPS when `tls` is given, until `shutdown`
/// resolves, then lets open requests end.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<ServerTls>,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState {
        secure_cookies: tls.is_some(),
        ..state
    };
    let app = router(state).into_make_service_with_connect_info::<leases::PeerAddr>();
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            axum::serve(tls::TlsListener::new(listener, tls), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// Where the first admin token is written in a data directory.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// On a store without tokens, creates an admin token and writes it (mode 0600) to
/// `<data_dir>/admin.token`; returns the path when it did.
pub async fn ensure_admin_token(
    service: &Service,
    data_dir: &Path,
) -> Result<Option<PathBuf>, ServiceError> {
    if !service.tokens().await?.is_empty() {
        return Ok(None);
    }
    let token = service.create_token(Role::Admin, "first admin").await?;
    let path = admin_token_path(data_dir);
    write_private(&path, format!("{}\n", token.secret).as_bytes())
        .map_err(|e| ServiceError::Invalid(format!("cannot write {}: {e}", path.display())))?;
    Ok(Some(path))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
