//! `remotask serve`: the engine on an embedded SQLite file in a data directory and the HTTP
//! API on a loopback port (or where `--bind` says, over HTTPS with `--tls-cert` and
//! `--tls-key`), until SIGINT or SIGTERM, then a graceful shutdown. Flags and
//! `REMOTASK_*` environment variables are read here (by clap) and nowhere else; they win over
//! the config file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::config::{Overrides, ServerConfig};
use crate::http::{self, AppState, TlsFiles};
use crate::server::Server;
use crate::telemetry::{self, notice};
use crate::worker::Stop;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML config file (see `remotask::config` for the keys).
    #[arg(long, env = "REMOTASK_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data directory: SQLite file, module blobs, compiled cache. Created on first run.
    #[arg(long, env = "REMOTASK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep jobs in this PostgreSQL database (`postgres://user@host:port/db`), which other
    /// server nodes may share; without it, SQLite in the data directory.
    #[arg(long, env = "REMOTASK_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Threads that run guests; 0 runs none here (remote workers run every job).
    #[arg(long, env = "REMOTASK_WORKERS")]
    pub workers: Option<usize>,
    /// Lease of a claimed job, in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub lease_ttl: Option<f64>,
    /// Delay before a job whose lease expired runs again, in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub requeue_delay: Option<f64>,
    /// Address of the HTTP API (default 127.0.0.1:7070; port 0 picks a free port).
    #[arg(long, env = "REMOTASK_BIND", value_name = "ADDR")]
    pub bind: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "REMOTASK_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "REMOTASK_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Register every .wasm file in DIR as a task named after the file (repeatable), e.g.
    /// the built examples: `--register-dir target/wasm32-wasip1/release`.
    #[arg(long, value_name = "DIR")]
    pub register_dir: Vec<PathBuf>,
    /// How log lines are written: `human` (default) or `json` (one object per line).
    #[arg(long, env = "REMOTASK_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Which log lines are written: a filter such as `info` or `remotask=debug` (default
    /// info). `RUST_LOG` wins when set.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

pub(super) fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        data_dir: args.data_dir,
        store_url: args.store,
        worker_threads: args.workers,
        lease_ttl_seconds: args.lease_ttl,
        requeue_delay_seconds: args.requeue_delay,
        bind: args.bind,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        log_format: args.log_format,
        log_level: args.log_level,
    };
    let config =
        ServerConfig::load(args.config.as_deref(), overrides).map_err(anyhow::Error::msg)?;
    let tls = config.tls.as_ref().map(TlsFiles::load).transpose()?;
    telemetry::init(config.log_format, config.log_level.as_deref()).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let server = Server::start(&config).await?;
        for dir in &args.register_dir {
            let names = server.register_dir(dir).await?;
            let names: Vec<String> = names.iter().map(ToString::to_string).collect();
            notice(format_args!(
                "registered {} from {}",
                names.join(", "),
                dir.display()
            ));
        }
        if let Some(path) = http::ensure_admin_token(&server.service, &config.data_dir).await? {
            notice(format_args!("created an admin token in {}", path.display()));
        }
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.bind))?;
        let addr = listener.local_addr().context("no local address")?;
        if tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                "the API is served in plain HTTP on {addr}, not only to this machine: tokens \
                 and jobs cross the network unencrypted; give --tls-cert and --tls-key \
                 (tls_cert and tls_key in the config) to serve HTTPS"
            );
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (stop_leases, leases_stopped) = Stop::new();
        let state = AppState::new(server.service.clone(), config.http)
            .with_leases(server.source.clone(), leases_stopped);
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        let mut api = tokio::spawn(http::serve(listener, tls, state, async move {
            stopped.notified().await
        }));
        notice(format_args!(
            "serving {} with {} worker threads",
            config.data_dir.display(),
            config.workers.threads
        ));
        notice(format_args!("listening on {scheme}://{addr}"));
        notice(format_args!("ready"));
        tokio::select! {
            r = wait_for_signal() => r?,
            r = &mut api => {
                r.context("the HTTP server stopped")?.context("the HTTP server failed")?;
            }
        }
        notice(format_args!("shutting down"));
        // Stop taking requests, then let the workers finish; open long-polls and event
        // streams get a moment to end before they are dropped.
        stop.notify_one();
        stop_leases.raise();
        server.shutdown().await;
        if tokio::time::timeout(Duration::from_secs(2), &mut api)
            .await
            .is_err()
        {
            api.abort();
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves at SIGINT or SIGTERM.
pub(super) async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
