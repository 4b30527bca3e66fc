//! `remotask serve`: the engine on an embedded SQLite file in a data directory, until SIGINT
//! or SIGTERM, then a graceful shutdown. Flags and `REMOTASK_*` environment variables are read
//! here (by clap) and nowhere else; they win over the config file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::config::{Overrides, ServerConfig};
use crate::server::Server;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML config file (see `remotask::config` for the keys).
    #[arg(long, env = "REMOTASK_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data directory: SQLite file, module blobs, compiled cache. Created on first run.
    #[arg(long, env = "REMOTASK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Threads that run guests.
    #[arg(long, env = "REMOTASK_WORKERS")]
    pub workers: Option<usize>,
    /// Lease of a claimed job, in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub lease_ttl: Option<f64>,
    /// Delay before a job whose lease expired runs again, in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub requeue_delay: Option<f64>,
    /// Register every .wasm file in DIR as a task named after the file (repeatable), e.g.
    /// the built examples: `--register-dir target/wasm32-wasip1/release`.
    #[arg(long, value_name = "DIR")]
    pub register_dir: Vec<PathBuf>,
}

pub(super) fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        data_dir: args.data_dir,
        worker_threads: args.workers,
        lease_ttl_seconds: args.lease_ttl,
        requeue_delay_seconds: args.requeue_delay,
    };
    let config =
        ServerConfig::load(args.config.as_deref(), overrides).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let server = Server::start(&config).await?;
        for dir in &args.register_dir {
            let names = server.register_dir(dir).await?;
            let names: Vec<String> = names.iter().map(ToString::to_string).collect();
            eprintln!(
                "remotask: registered {} from {}",
                names.join(", "),
                dir.display()
            );
        }
        eprintln!(
            "remotask: serving {} with {} worker threads",
            config.data_dir.display(),
            config.workers.threads
        );
        eprintln!("remotask: ready");
        wait_for_signal().await?;
        eprintln!("remotask: shutting down");
        server.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
