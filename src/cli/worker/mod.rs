//! `remotask worker`: the worker pool of `remotask serve` on another machine, leasing jobs
//! from a server over HTTP (`source.rs`). Same sandbox, same guest threads, reporter and
//! heartbeats; modules and compiled artifacts are kept in a local cache directory. SIGINT or
//! SIGTERM stops leasing, lets running attempts finish within the grace period, hands the
//! rest back, and exits 0. `remotask worker list` shows the workers a server knows.

mod source;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::client::Connection;
use crate::domain::{QueueName, WorkerName};
use crate::http::dto::WorkerList;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::store::BlobStore;
use crate::telemetry::{self, notice};
use crate::worker::{WorkerConfig, WorkerPool};
use source::HttpSource;

/// Flags of `remotask worker`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WorkerArgs {
    #[command(subcommand)]
    pub command: Option<WorkerCommand>,
    #[command(flatten)]
    pub run: RunWorker,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// The workers the server knows: jobs they hold, when last seen, which are gone.
    List,
}

/// How a worker runs.
#[derive(Debug, Args)]
pub struct RunWorker {
    /// Threads that run guests [default: the machine's cores].
    #[arg(long, env = "REMOTASK_WORKER_THREADS")]
    pub threads: Option<usize>,
    /// Only jobs of these queues (comma-separated) [default: every queue].
    #[arg(long, value_delimiter = ',')]
    pub queues: Vec<String>,
    /// This worker's name in leases and the list of workers [default: <host>-<pid>].
    #[arg(long, env = "REMOTASK_WORKER_NAME")]
    pub name: Option<String>,
    /// Where modules and their compiled code are kept [default:
    /// $XDG_CACHE_HOME/remotask/worker].
    #[arg(long, env = "REMOTASK_WORKER_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// Each job's lease, in seconds; heartbeats extend it every third of it.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub lease_ttl: f64,
    /// How long a stop lets running attempts finish before handing them back, in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub shutdown_grace: f64,
    /// How log lines are written: `human` (default) or `json`.
    #[arg(long, env = "REMOTASK_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Which log lines are written (default info); `RUST_LOG` wins when set.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

pub(super) fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(WorkerCommand::List) => list(&args.connection),
        None => run(args.run, &args.connection),
    }
}

fn list(connection: &Connection) -> anyhow::Result<ExitCode> {
    let client = connection.client()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let list: WorkerList = runtime.block_on(client.get("/v1/workers"))?;
    if connection.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .workers
        .iter()
        .map(|w| {
            vec![
                w.name.clone(),
                w.address.clone(),
                w.version.clone().unwrap_or_else(|| "-".to_owned()),
                if w.queues.is_empty() {
                    "*".to_owned()
                } else {
                    w.queues.join(",")
                },
                w.threads.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                w.running.to_string(),
                w.last_seen.clone(),
                if w.gone { "gone" } else { "up" }.to_owned(),
            ]
        })
        .collect();
    let headers = [
        "NAME",
        "ADDRESS",
        "VERSION",
        "QUEUES",
        "THREADS",
        "RUNNING",
        "LAST SEEN",
        "STATE",
    ];
    print!("{}", super::remote::table(&headers, &rows));
    Ok(ExitCode::SUCCESS)
}

/// The validated settings of a running worker.
struct Settings {
    name: WorkerName,
    threads: usize,
    queues: Vec<QueueName>,
    cache_dir: PathBuf,
    lease_ttl: Duration,
    shutdown_grace: Duration,
}

fn seconds(flag: &str, v: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        v.is_finite() && (1.0..=3600.0).contains(&v),
        "{flag} must be between 1 and 3600 seconds, got {v}"
    );
    Ok(Duration::from_secs_f64(v))
}

impl Settings {
    fn from_args(args: &RunWorker) -> anyhow::Result<Self> {
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        anyhow::ensure!(
            (1..=1024).contains(&threads),
            "--threads must be between 1 and 1024, got {threads}"
        );
        let queues = args
            .queues
            .iter()
            .map(|q| q.parse::<QueueName>())
            .collect::<Result<Vec<_>, _>>()?;
        let name = match &args.name {
            Some(n) => n.parse()?,
            None => crate::worker::process_name(""),
        };
        Ok(Self {
            name,
            threads,
            queues,
            cache_dir: args.cache_dir.clone().unwrap_or_else(default_cache_dir),
            lease_ttl: seconds("--lease-ttl", args.lease_ttl)?,
            shutdown_grace: seconds("--shutdown-grace", args.shutdown_grace)?,
        })
    }
}

fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match base {
        Some(b) => b.join("remotask/worker"),
        None => PathBuf::from("remotask-worker-cache"),
    }
}

fn run(args: RunWorker, connection: &Connection) -> anyhow::Result<ExitCode> {
    let format = match &args.log_format {
        Some(f) => f.parse().map_err(anyhow::Error::msg)?,
        None => telemetry::LogFormat::default(),
    };
    telemetry::init(format, args.log_level.as_deref()).map_err(anyhow::Error::msg)?;
    let settings = Settings::from_args(&args)?;
    let client = connection.client()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let modules = BlobStore::open(settings.cache_dir.join("modules"))?;
        let sandbox = Sandbox::new(SandboxConfig {
            cache_dir: Some(settings.cache_dir.join("compiled")),
            pool_slots: (settings.threads as u32 * 2).max(8),
            ..SandboxConfig::default()
        })?;
        let source = Arc::new(HttpSource::new(
            client.clone(),
            settings.name.to_string(),
            settings.threads as u32,
            modules,
        ));
        let config = WorkerConfig {
            threads: settings.threads,
            lease_ttl: settings.lease_ttl,
            shutdown_grace: settings.shutdown_grace,
            worker_id: settings.name.to_string(),
            queues: settings.queues.clone(),
            ..WorkerConfig::default()
        };
        let pool = WorkerPool::start(source.clone(), sandbox, config);
        let listener = source.clone();
        let cancels = tokio::spawn(async move { listener.listen_for_cancels().await });
        notice(format_args!(
            "worker {} leasing from {} with {} threads",
            settings.name,
            client.base_url(),
            settings.threads
        ));
        notice(format_args!("ready"));
        super::serve::wait_for_signal().await?;
        notice(format_args!("stopping"));
        pool.shutdown().await;
        cancels.abort();
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
