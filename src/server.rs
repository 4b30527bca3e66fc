//! The engine of `remotask serve`: opens the store (a PostgreSQL database given by URL, or the
//! SQLite file and module blobs in the data directory), the compiled-module cache, applies the
//! configured queues, starts the worker pool on the in-process source and the maintenance
//! tasks (rescuer, scheduler, retention cleaner). The HTTP router mounts on
//! [`Server::service`]. Needs a tokio runtime.

use std::path::Path;
use std::sync::Arc;

use crate::config::ServerConfig;
use crate::domain::{SystemClock, TaskName};
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::service::{LocalSource, Maintenance, Service, ServiceError};
use crate::store::{PgStore, SqliteStore, Store};
use crate::worker::WorkerPool;

/// A running engine.
#[derive(Debug)]
pub struct Server {
    pub service: Service,
    /// The in-process source: this server's pool and the lease API hand jobs out of it.
    pub source: Arc<LocalSource>,
    /// `None` with `worker_threads = 0`: remote workers run every job.
    pool: Option<WorkerPool>,
    maintenance: Maintenance,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl Server {
    /// Opens (creating on first run) the data directory and starts the engine.
    pub async fn start(config: &ServerConfig) -> Result<Self, ServerError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| ServerError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        let store: Arc<dyn Store> = match &config.store_url {
            Some(url) => Arc::new(PgStore::connect(url).await?),
            None => Arc::new(SqliteStore::open(dir.join("remotask.db"))?),
        };
        let sandbox = Sandbox::new(SandboxConfig {
            cache_dir: Some(dir.join("cache")),
            pool_slots: (config.workers.threads as u32 * 2).max(8),
            ..SandboxConfig::default()
        })?;
        let service = Service::new(store, sandbox.clone(), Arc::new(SystemClock));
        configure_queues(&service, config).await?;
        service.set_max_workers(config.max_workers);
        service.set_local_threads(config.workers.threads);
        let source = LocalSource::new(service.clone(), config.maintenance.requeue_delay);
        let pool = (config.workers.threads > 0)
            .then(|| WorkerPool::start(source.clone(), sandbox, config.workers.clone()));
        let maintenance = Maintenance::start(service.clone(), config.maintenance);
        Ok(Self {
            service,
            source,
            pool,
            maintenance,
        })
    }

    /// Registers every `*.wasm` file in `dir` as a task named after the file (`word-count.wasm`
    /// -> `word-count`). Returns the names registered.
    pub async fn register_dir(&self, dir: &Path) -> Result<Vec<TaskName>, ServerError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ServerError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        paths.sort();
        let mut names = Vec::new();
        for path in paths {
            let Some(name) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<TaskName>().ok())
            else {
                continue;
            };
            let bytes = std::fs::read(&path).map_err(|source| ServerError::DataDir {
                path: path.display().to_string(),
                source,
            })?;
            self.service.register_task(&name, bytes, None).await?;
            names.push(name);
        }
        Ok(names)
    }

    /// Graceful shutdown: stop claiming, let attempts finish within the grace period,
    /// requeue the rest unspent.
    pub async fn shutdown(self) {
        self.maintenance.stop();
        if let Some(pool) = self.pool {
            pool.shutdown().await;
        }
    }
}

/// Stores the configured queues (warning about tasks whose defaults their caps now refuse),
/// then pauses the queues `autostart` does not name (warning about patterns that name none).
async fn configure_queues(service: &Service, config: &ServerConfig) -> Result<(), ServerError> {
    for queue in &config.queues {
        let over = service.put_queue(queue.clone()).await?;
        if !over.is_empty() {
            let tasks: Vec<String> = over.iter().map(ToString::to_string).collect();
            tracing::warn!(
                queue = %queue.name,
                tasks = %tasks.join(", "),
                "the queue's caps are below these tasks' default limits: their jobs are \
                 refused unless they give limits within the caps"
            );
        }
    }
    let Some(autostart) = &config.autostart else {
        return Ok(());
    };
    let queues: Vec<_> = service
        .queues()
        .await?
        .into_iter()
        .map(|q| q.config.name)
        .collect();
    let names: Vec<String> = queues.iter().map(ToString::to_string).collect();
    for pattern in autostart.unmatched(&names) {
        tracing::warn!(pattern, "the autostart pattern matches no queue");
    }
    for queue in queues.iter().filter(|q| !autostart.matches(q.as_str())) {
        service.set_paused(queue, true).await?;
        tracing::info!(queue = %queue, "paused at start: autostart does not name it");
    }
    Ok(())
}
