//! The client commands: `task`, `job`, `queue`, `schedule`, `server` and `token`, each a thin
//! layer over the HTTP API, one file per resource. Tables for people by default; `--json`
//! prints the API's answers for scripts. This file holds what they share: the runtime each
//! command runs its requests on, the table and JSON printers, and the flags that say what a
//! job runs with (`job submit`, `schedule add|update`, and a task's defaults). Nothing here
//! runs a guest: `remotask run` is `super::run`.

mod job;
mod queue;
mod schedule;
mod server;
mod submit;
mod task;
mod token;

use std::future::Future;

use anyhow::Context;
use base64::Engine as _;
use clap::Args;
use serde::Serialize;

use super::client::{Client, Connection};
use super::guest::{GuestArgs, Input};
use crate::http::dto::{JobSpec, LimitsDto};

pub use job::JobCommand;
pub use queue::QueueCommand;
pub use schedule::ScheduleCommand;
pub use server::ServerCommand;
pub use task::TaskCommand;
pub use token::TokenCommand;

pub(super) use job::job;
pub(super) use queue::queue;
pub(super) use schedule::schedule;
pub(super) use server::server;
pub(super) use task::task;
pub(super) use token::token;

/// What a job runs with: what its guest is given (the same flags as `remotask run`), queue,
/// priority, limits, retries. Shared by `job submit` and `schedule add|update`.
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    #[command(flatten)]
    pub guest: GuestArgs,
    #[arg(long)]
    pub queue: Option<String>,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    /// A free string to find the jobs about one object.
    #[arg(long)]
    pub context: Option<String>,
    /// Jobs of one queue with the same key run no more at once than its key_concurrency.
    #[arg(long)]
    pub concurrency_key: Option<String>,
    #[command(flatten)]
    pub budget: BudgetArgs,
}

/// Limits and retries, for a job or as a task's defaults.
#[derive(Debug, Clone, Args)]
pub struct BudgetArgs {
    /// Fuel budget, roughly one unit per wasm instruction (with `--metering fuel`).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// CPU-time budget in milliseconds, in either metering.
    #[arg(long)]
    pub cpu_ms: Option<u64>,
    /// How computation is counted: `fuel` (deterministic) or `cpu` (no fuel, faster).
    #[arg(long, value_parser = parse_metering)]
    pub metering: Option<crate::domain::Metering>,
    /// Wall-clock budget in seconds.
    #[arg(long)]
    pub max_seconds: Option<f64>,
    /// Memory limit in MiB.
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// Extra attempts after the first.
    #[arg(long)]
    pub retries: Option<u32>,
}

impl JobArgs {
    /// The wire job for `task` with these settings.
    fn to_spec(&self, task: &str) -> anyhow::Result<JobSpec> {
        let mut job = JobSpec {
            task: task.to_owned(),
            args: self.guest.args.clone(),
            env: self.guest.env_pairs()?.into_iter().collect(),
            queue: self.queue.clone(),
            priority: self.priority,
            context: self.context.clone(),
            concurrency_key: self.concurrency_key.clone(),
            ..JobSpec::default()
        };
        match self.guest.input()? {
            Input::None => {}
            Input::Json { value, .. } => job.input = Some(value),
            Input::Bytes(bytes) => match String::from_utf8(bytes) {
                Ok(text) => job.input_text = Some(text),
                Err(e) => {
                    job.input_base64 =
                        Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()));
                }
            },
        }
        job.limits = self.budget.limits()?;
        job.retry = self.budget.retry();
        Ok(job)
    }
}

/// `--metering`: `fuel` or `cpu`.
pub(crate) fn parse_metering(s: &str) -> Result<crate::domain::Metering, String> {
    s.parse()
}

impl BudgetArgs {
    fn limits(&self) -> anyhow::Result<Option<LimitsDto>> {
        if self.fuel.is_none()
            && self.cpu_ms.is_none()
            && self.metering.is_none()
            && self.max_seconds.is_none()
            && self.memory_mib.is_none()
        {
            return Ok(None);
        }
        Ok(Some(LimitsDto {
            fuel: self.fuel,
            cpu_ms: self.cpu_ms,
            metering: self.metering.map(Into::into),
            max_seconds: self.max_seconds,
            memory_bytes: mib(self.memory_mib)?,
            ..LimitsDto::default()
        }))
    }

    fn retry(&self) -> Option<crate::domain::RetryPolicy> {
        self.retries.map(|retries| crate::domain::RetryPolicy {
            retries,
            ..Default::default()
        })
    }
}

/// Runs a command's requests with a client for `conn`, on a runtime of its own.
fn block_on<T, F>(conn: &Connection, requests: impl FnOnce(Client) -> F) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let client = conn.client()?;
    runtime()?.block_on(requests(client))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Columns padded to their widest cell.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn mib(m: Option<u64>) -> anyhow::Result<Option<u64>> {
    m.map(|m| m.checked_mul(1 << 20).context("--memory-mib is too large"))
        .transpose()
}

/// A name or id as one URL path segment.
fn path_part(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c.to_string(),
            _ => format!("%{:02X}", c as u32),
        })
        .collect()
}
