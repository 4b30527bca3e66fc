//! The client commands: `task`, `job`, `queue` and `token`, each a thin layer over the HTTP
//! API. Tables for people by default; `--json` prints the API's answers for scripts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde::Serialize;

use super::client::{Client, Connection};
use super::run::exit_code_for;
use crate::domain::Reason;
use crate::http::dto::{
    BatchResult, CancelDto, CancelFilter, CleanRequest, CountDto, CreateToken, EventDto,
    ExplainDto, FireTimesDto, JobDto, JobList, LimitsDto, QueueDto, ScheduleDto, ScheduleInput,
    SubmitBatch, SubmitJob, TaskDefaultsDto, TaskDto, TokenDto, UploadDto, VersionDetailDto,
};

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Upload a module as the newest version of a task (admin).
    Upload {
        name: String,
        /// The module (.wasm binary).
        file: PathBuf,
        #[command(flatten)]
        defaults: DefaultsArgs,
    },
    /// List tasks.
    List,
    /// Show a task: versions and defaults; with --version, one version's admission report.
    Show {
        name: String,
        /// A version's digest.
        #[arg(long, value_name = "DIGEST")]
        version: Option<String>,
    },
    /// Replace a task's defaults for jobs submitted later (admin).
    Defaults {
        name: String,
        #[command(flatten)]
        defaults: DefaultsArgs,
    },
    /// Download a module by digest (worker or admin).
    Module {
        digest: String,
        /// Where to write it.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Remove a task name (submitted jobs keep their module).
    Rm { name: String },
}

/// Task defaults set with an upload.
#[derive(Debug, Clone, Args)]
pub struct DefaultsArgs {
    /// Queue for the task's jobs.
    #[arg(long)]
    pub queue: Option<String>,
    #[command(flatten)]
    pub budget: BudgetArgs,
    /// An environment variable K=V for the task's jobs; repeat for more.
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a job; with --wait, show its progress and print its output.
    Submit(Box<SubmitArgs>),
    /// Show a job with its attempts.
    Get { id: String },
    /// List jobs.
    List(ListArgs),
    /// Cancel a job, or every job matching --task/--queue/--context/--state (or --all).
    Cancel {
        id: Option<String>,
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        context: Option<String>,
        /// Only jobs in these states (comma-separated).
        #[arg(long)]
        state: Option<String>,
        /// Every job that has not ended.
        #[arg(long)]
        all: bool,
    },
    /// Requeue a failed or cancelled job.
    Retry { id: String },
    /// Release a held job.
    Release { id: String },
    /// Print a job's log (stderr of every attempt, or of one).
    Logs {
        id: String,
        #[arg(long)]
        attempt: Option<u32>,
    },
    /// Explain why a job is not running.
    Explain { id: String },
    /// Print a completed job's output as it is.
    Output { id: String },
    /// Delete a job that is not running.
    Rm { id: String },
    /// Submit many jobs in one transaction from a JSON file: `{"jobs": [...]}`, or one job
    /// object per line ("-" for stdin).
    Batch { file: PathBuf },
    /// Remove ended jobs (admin): all, or those ended longer ago than --older-than.
    Clean {
        #[arg(long, value_name = "SECONDS")]
        older_than: Option<f64>,
    },
    /// Print job state changes as they happen, until interrupted.
    Watch {
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        job: Option<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    pub task: String,
    #[command(flatten)]
    pub job: JobArgs,
    /// Run no earlier than this many seconds from now.
    #[arg(long, value_name = "SECONDS")]
    pub delay: Option<f64>,
    /// Keep the job held until released.
    #[arg(long)]
    pub hold: bool,
    /// While a live job has this key, return it instead of a new one.
    #[arg(long)]
    pub unique_key: Option<String>,
    /// Wait for the job to end, showing its progress, then print its output.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (the job goes on).
    #[arg(long, value_name = "SECONDS", requires = "wait")]
    pub timeout: Option<f64>,
}

/// What a job runs with: input, arguments, environment, queue, priority, limits, retries.
/// Shared by `job submit` and `schedule add|update`.
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// The input: a JSON value.
    #[arg(long, conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Read the input bytes from a file ("-" for stdin), passed as they are.
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
    /// An argument for the guest; repeat for more.
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// An environment variable K=V; repeat for more.
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    #[arg(long)]
    pub queue: Option<String>,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    /// A free string to find the jobs about one object.
    #[arg(long)]
    pub context: Option<String>,
    #[command(flatten)]
    pub budget: BudgetArgs,
}

/// Limits and retries, for a job or as a task's defaults.
#[derive(Debug, Clone, Args)]
pub struct BudgetArgs {
    /// Fuel budget (CPU), roughly one unit per wasm instruction.
    #[arg(long)]
    pub fuel: Option<u64>,
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

impl BudgetArgs {
    fn limits(&self) -> anyhow::Result<Option<LimitsDto>> {
        if self.fuel.is_none() && self.max_seconds.is_none() && self.memory_mib.is_none() {
            return Ok(None);
        }
        Ok(Some(LimitsDto {
            fuel: self.fuel,
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

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Comma-separated states, e.g. queued,running.
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub task: Option<String>,
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long)]
    pub context: Option<String>,
    /// Page size (1 to 1000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Start after this job id (the `next` of the previous page).
    #[arg(long)]
    pub after: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queues with their job counts.
    List,
    /// Pause a queue: running jobs finish, no new job starts (admin).
    Pause { name: String },
    /// Resume a paused queue (admin).
    Resume { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule (admin).
    Add(Box<ScheduleArgs>),
    /// List schedules with their next fire times.
    List,
    /// Show a schedule with its last job (its last result).
    Show { name: String },
    /// Replace a schedule in place: the old fire times stop, the new ones start (admin).
    Update(Box<ScheduleArgs>),
    /// Pause a schedule (admin).
    Pause { name: String },
    /// Resume a schedule from now on (admin).
    Resume { name: String },
    /// Delete a schedule; the jobs it submitted stay (admin).
    Rm { name: String },
    /// Print a schedule's next fire times.
    Next {
        name: String,
        #[arg(short, default_value_t = 5)]
        n: usize,
    },
}

/// A schedule: its spec (one of --cron, the field flags, --delay), its job and policies.
#[derive(Debug, Clone, Args)]
pub struct ScheduleArgs {
    pub name: String,
    /// The task each fire runs.
    pub task: String,
    /// A cron expression (5 fields, or 6 with seconds first), e.g. "*/15 * * * *".
    #[arg(long)]
    pub cron: Option<String>,
    /// IANA time zone of --cron or the field flags (UTC by default).
    #[arg(long)]
    pub tz: Option<String>,
    /// Minutes (comma-separated), the older field-set form.
    #[arg(long, value_delimiter = ',')]
    pub minute: Option<Vec<u32>>,
    #[arg(long, value_delimiter = ',')]
    pub hour: Option<Vec<u32>>,
    #[arg(long, value_delimiter = ',')]
    pub day_of_month: Option<Vec<u32>>,
    #[arg(long, value_delimiter = ',')]
    pub month: Option<Vec<u32>>,
    /// Days of the week, Monday = 0.
    #[arg(long, value_delimiter = ',')]
    pub day_of_week: Option<Vec<u32>>,
    /// Fire once, this many seconds from now.
    #[arg(long, value_name = "SECONDS")]
    pub delay: Option<f64>,
    /// skip (default) or allow.
    #[arg(long)]
    pub overlap: Option<String>,
    /// none, one (default) or all.
    #[arg(long)]
    pub catch_up: Option<String>,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
    #[command(flatten)]
    pub job: JobArgs,
}

impl ScheduleArgs {
    fn to_input(&self) -> anyhow::Result<ScheduleInput> {
        let job = self.job.to_submit(&self.task)?;
        Ok(ScheduleInput {
            name: Some(self.name.clone()),
            cron: self.cron.clone(),
            tz: self.tz.clone(),
            minute: self.minute.clone(),
            hour: self.hour.clone(),
            day_of_month: self.day_of_month.clone(),
            month: self.month.clone(),
            day_of_week: self.day_of_week.clone(),
            delay_seconds: self.delay,
            overlap: self.overlap.clone(),
            catch_up: self.catch_up.clone(),
            paused: self.paused,
            task: job.task,
            input: job.input,
            input_text: job.input_text,
            input_base64: job.input_base64,
            args: job.args,
            env: job.env,
            queue: job.queue,
            priority: job.priority,
            limits: job.limits,
            retry: job.retry,
            context: job.context,
        })
    }
}

fn schedule_rows(all: &[ScheduleDto]) -> String {
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.task.clone(),
                serde_json::to_string(&s.spec).unwrap_or_default(),
                if s.paused { "paused" } else { "active" }.into(),
                s.next_fire.clone().unwrap_or_else(|| "-".into()),
                s.fires.to_string(),
                s.skipped.to_string(),
            ]
        })
        .collect();
    table(
        &["NAME", "TASK", "SPEC", "STATE", "NEXT", "FIRES", "SKIPPED"],
        &rows,
    )
}

pub(super) fn schedule(command: ScheduleCommand, conn: &Connection) -> anyhow::Result<ExitCode> {
    let client = conn.client()?;
    runtime()?.block_on(async {
        let one = |name: &str| format!("/v1/schedules/{}", path_part(name));
        let shown: ScheduleDto = match command {
            ScheduleCommand::List => {
                let all: Vec<ScheduleDto> = client.get("/v1/schedules").await?;
                if conn.json {
                    return print_json(&all);
                }
                print!("{}", schedule_rows(&all));
                return Ok(());
            }
            ScheduleCommand::Next { name, n } => {
                let t: FireTimesDto = client
                    .json(
                        client
                            .request(Method::GET, &format!("{}/next", one(&name)))
                            .query(&[("n", n)]),
                    )
                    .await?;
                if conn.json {
                    return print_json(&t);
                }
                for time in t.times {
                    println!("{time}");
                }
                return Ok(());
            }
            ScheduleCommand::Rm { name } => {
                client
                    .send(client.request(Method::DELETE, &one(&name)))
                    .await?;
                if !conn.json {
                    println!("removed schedule {name}");
                }
                return Ok(());
            }
            ScheduleCommand::Add(a) => {
                client
                    .json(
                        client
                            .request(Method::POST, "/v1/schedules")
                            .json(&a.to_input()?),
                    )
                    .await?
            }
            ScheduleCommand::Update(a) => {
                client
                    .json(
                        client
                            .request(Method::PUT, &one(&a.name))
                            .json(&a.to_input()?),
                    )
                    .await?
            }
            ScheduleCommand::Show { name } => client.get(&one(&name)).await?,
            ScheduleCommand::Pause { name } => {
                client
                    .json(client.request(Method::POST, &format!("{}/pause", one(&name))))
                    .await?
            }
            ScheduleCommand::Resume { name } => {
                client
                    .json(client.request(Method::POST, &format!("{}/resume", one(&name))))
                    .await?
            }
        };
        if conn.json {
            return print_json(&shown);
        }
        println!("schedule  {}", shown.name);
        println!("spec      {}", serde_json::to_string(&shown.spec)?);
        println!("task      {}", shown.task);
        println!(
            "state     {}",
            if shown.paused { "paused" } else { "active" }
        );
        println!("next      {}", shown.next_fire.as_deref().unwrap_or("-"));
        println!("last      {}", shown.last_fire.as_deref().unwrap_or("-"));
        println!("fires     {}  skipped {}", shown.fires, shown.skipped);
        println!(
            "policies  overlap {}, catch-up {}",
            shown.overlap, shown.catch_up
        );
        if let Some(e) = &shown.last_error {
            println!("error     {e}");
        }
        if let Some(j) = &shown.last_job {
            println!("last job  {} {}", j.id, j.state);
            if let Some(out) = &j.output {
                println!("result    {out}");
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Whether the server answers and its store is readable.
    Health,
    /// The server's metrics, in the Prometheus text format.
    Metrics,
    /// The server's OpenAPI document.
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        /// admin, submit, worker or read.
        #[arg(long)]
        role: String,
        /// A name to tell it by.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List tokens.
    List,
    /// Revoke a token by id.
    Revoke { id: String },
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
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
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

fn env_pairs(env: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    env.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("--env {kv:?} must be K=V"),
        })
        .collect()
}

fn mib(m: Option<u64>) -> anyhow::Result<Option<u64>> {
    m.map(|m| m.checked_mul(1 << 20).context("--memory-mib is too large"))
        .transpose()
}

fn path_part(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c.to_string(),
            _ => format!("%{:02X}", c as u32),
        })
        .collect()
}

impl DefaultsArgs {
    fn is_empty(&self) -> bool {
        self.queue.is_none()
            && self.budget.limits().ok().flatten().is_none()
            && self.budget.retries.is_none()
            && self.env.is_empty()
    }

    fn to_dto(&self) -> anyhow::Result<TaskDefaultsDto> {
        Ok(TaskDefaultsDto {
            queue: self.queue.clone(),
            limits: self.budget.limits()?,
            retry: self.budget.retry(),
            env: env_pairs(&self.env)?,
        })
    }
}

pub(super) fn task(command: TaskCommand, conn: &Connection) -> anyhow::Result<ExitCode> {
    let client = conn.client()?;
    runtime()?.block_on(async {
        match command {
            TaskCommand::Upload {
                name,
                file,
                defaults,
            } => {
                let bytes = std::fs::read(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let mut request = client
                    .request(Method::PUT, &format!("/v1/tasks/{}", path_part(&name)))
                    .header("content-type", "application/wasm")
                    .body(bytes);
                if !defaults.is_empty() {
                    let dto = defaults.to_dto()?;
                    request = request.query(&[("defaults", serde_json::to_string(&dto)?)]);
                }
                let up: UploadDto = client.json(request).await?;
                if conn.json {
                    return print_json(&up);
                }
                println!(
                    "uploaded {} version {} ({} bytes)",
                    up.task.name,
                    up.task.digest,
                    up.task.versions.first().map_or(0, |v| v.size_bytes)
                );
                Ok(())
            }
            TaskCommand::List => {
                let tasks: Vec<TaskDto> = client.get("/v1/tasks").await?;
                if conn.json {
                    return print_json(&tasks);
                }
                let rows: Vec<Vec<String>> = tasks
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.digest[..16].to_owned(),
                            t.versions.len().to_string(),
                            t.defaults.queue.clone().unwrap_or_else(|| "-".into()),
                            t.updated_at.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["NAME", "DIGEST", "VERSIONS", "QUEUE", "UPDATED"], &rows)
                );
                Ok(())
            }
            TaskCommand::Show {
                name,
                version: Some(digest),
            } => {
                let v: VersionDetailDto = client
                    .get(&format!(
                        "/v1/tasks/{}/versions/{}",
                        path_part(&name),
                        path_part(&digest)
                    ))
                    .await?;
                if conn.json {
                    return print_json(&v);
                }
                println!("task      {}", v.task);
                println!(
                    "version   {}{}",
                    v.version.digest,
                    if v.current { " (current)" } else { "" }
                );
                println!("size      {} bytes", v.version.size_bytes);
                println!("created   {}", v.version.created_at);
                println!("admission {}", serde_json::to_string_pretty(&v.admission)?);
                Ok(())
            }
            TaskCommand::Defaults { name, defaults } => {
                let t: TaskDto = client
                    .json(
                        client
                            .request(Method::PATCH, &format!("/v1/tasks/{}", path_part(&name)))
                            .json(&defaults.to_dto()?),
                    )
                    .await?;
                if conn.json {
                    return print_json(&t);
                }
                println!(
                    "{} defaults {}",
                    t.name,
                    serde_json::to_string(&t.defaults)?
                );
                Ok(())
            }
            TaskCommand::Module { digest, output } => {
                let bytes = client
                    .send(
                        client.request(Method::GET, &format!("/v1/modules/{}", path_part(&digest))),
                    )
                    .await?
                    .bytes()
                    .await?;
                std::fs::write(&output, &bytes)
                    .with_context(|| format!("cannot write {}", output.display()))?;
                if !conn.json {
                    println!("wrote {} ({} bytes)", output.display(), bytes.len());
                }
                Ok(())
            }
            TaskCommand::Show {
                name,
                version: None,
            } => {
                let t: TaskDto = client
                    .get(&format!("/v1/tasks/{}", path_part(&name)))
                    .await?;
                if conn.json {
                    return print_json(&t);
                }
                println!("task      {}", t.name);
                println!("digest    {}", t.digest);
                println!("updated   {}", t.updated_at);
                println!("defaults  {}", serde_json::to_string(&t.defaults)?);
                println!("versions");
                let rows: Vec<Vec<String>> = t
                    .versions
                    .iter()
                    .map(|v| {
                        vec![
                            v.digest.clone(),
                            v.size_bytes.to_string(),
                            v.created_at.clone(),
                        ]
                    })
                    .collect();
                print!("{}", table(&["DIGEST", "BYTES", "CREATED"], &rows));
                Ok(())
            }
            TaskCommand::Rm { name } => {
                client
                    .send(
                        client.request(Method::DELETE, &format!("/v1/tasks/{}", path_part(&name))),
                    )
                    .await?;
                if !conn.json {
                    println!("removed task {name}");
                }
                Ok(())
            }
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A state as people read it: a `scheduled` job is shown as delayed (JSON keeps the state).
fn shown_state(state: &str) -> &str {
    if state == "scheduled" {
        "delayed"
    } else {
        state
    }
}

fn job_rows(jobs: &[JobDto]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.task.clone(),
                j.queue.clone(),
                shown_state(&j.state).to_owned(),
                format!("{}/{}", j.attempts, j.max_attempts),
                j.error
                    .as_ref()
                    .map_or_else(|| "-".into(), |e| e.reason.clone()),
                j.created_at.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "TASK", "QUEUE", "STATE", "ATTEMPTS", "ERROR", "CREATED",
        ],
        &rows,
    )
}

fn print_job(j: &JobDto) {
    println!("id        {}", j.id);
    println!("task      {} ({})", j.task, j.digest);
    println!("queue     {}  priority {}", j.queue, j.priority);
    println!("state     {}", shown_state(&j.state));
    if let Some(p) = &j.progress {
        println!("progress  {}/{}", p.done, p.total);
    }
    println!("attempts  {}/{}", j.attempts, j.max_attempts);
    if let Some(e) = &j.error {
        println!("error     {}: {}", e.reason, e.message);
    }
    if let Some(out) = &j.output {
        let text = match out {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        println!(
            "output    ({}) {}",
            j.output_encoding.as_deref().unwrap_or("json"),
            text.trim_end()
        );
    }
    for a in j.attempt_history.iter().flatten() {
        let fuel = a.receipt.get("fuel_consumed").and_then(|v| v.as_u64());
        let wall = a.receipt.get("wall_ms").and_then(|v| v.as_f64());
        println!(
            "  attempt {}: {}{}  fuel {}  wall {} ms  on {}",
            a.number,
            a.reason,
            a.trap_kind
                .as_ref()
                .map(|k| format!(" ({k})"))
                .unwrap_or_default(),
            fuel.map_or_else(|| "-".into(), |f| f.to_string()),
            wall.map_or_else(|| "-".into(), |w| format!("{w:.1}")),
            a.worker
        );
    }
}

impl JobArgs {
    /// The wire job for `task` with these settings.
    fn to_submit(&self, task: &str) -> anyhow::Result<SubmitJob> {
        let a = self;
        let mut job = SubmitJob {
            task: task.to_owned(),
            args: a.args.clone(),
            env: env_pairs(&a.env)?,
            queue: a.queue.clone(),
            priority: a.priority,
            context: a.context.clone(),
            ..SubmitJob::default()
        };
        if let Some(text) = &a.input {
            job.input = Some(
                serde_json::from_str(text)
                    .context("--input must be a JSON value (quote strings)")?,
            );
        } else if let Some(path) = &a.input_file {
            let bytes = if path.as_os_str() == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
                buf
            } else {
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
            };
            match String::from_utf8(bytes) {
                Ok(text) => job.input_text = Some(text),
                Err(e) => {
                    use base64::Engine as _;
                    job.input_base64 =
                        Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()));
                }
            }
        }
        job.limits = a.budget.limits()?;
        job.retry = a.budget.retry();
        Ok(job)
    }
}

fn submit_body(a: &SubmitArgs) -> anyhow::Result<SubmitJob> {
    Ok(SubmitJob {
        delay_seconds: a.delay,
        hold: a.hold,
        unique_key: a.unique_key.clone(),
        ..a.job.to_submit(&a.task)?
    })
}

/// Polls the job until it ends, drawing its progress; prints the output; the exit code tells
/// how it ended (as `remotask run`'s).
async fn wait_for(
    client: &Client,
    conn: &Connection,
    id: &str,
    timeout: Option<f64>,
) -> anyhow::Result<ExitCode> {
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let job = loop {
        let job: JobDto = client.get(&format!("/v1/jobs/{id}?wait=1")).await?;
        bar.set_message(format!("{} {}", job.id, job.state));
        if let Some(p) = &job.progress {
            bar.set_length(p.total.max(0) as u64);
            bar.set_position(p.done.max(0) as u64);
        }
        bar.tick();
        if matches!(job.state.as_str(), "completed" | "failed" | "cancelled") {
            break job;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bar.finish_and_clear();
            bail!(
                "job {id} is still {} after the timeout; it goes on",
                job.state
            );
        }
    };
    bar.finish_and_clear();
    if conn.json {
        print_json(&job)?;
    } else if job.state == "completed" {
        let response = client
            .send(client.request(Method::GET, &format!("/v1/jobs/{id}/output")))
            .await?;
        let bytes = response.bytes().await?;
        std::io::stdout().write_all(&bytes)?;
    }
    let reason = match (&job.state[..], &job.error) {
        ("completed", _) => Reason::Completed,
        ("cancelled", _) => Reason::Cancelled,
        (_, Some(e)) => e.reason.parse().unwrap_or(Reason::HostError),
        _ => Reason::HostError,
    };
    if reason != Reason::Completed && !conn.json {
        let message = job.error.as_ref().map_or("", |e| e.message.as_str());
        eprintln!("job {id} {}: {} {message}", job.state, reason);
    }
    Ok(ExitCode::from(exit_code_for(reason)))
}

pub(super) fn job(command: JobCommand, conn: &Connection) -> anyhow::Result<ExitCode> {
    let client = conn.client()?;
    runtime()?.block_on(async {
        let post = |path: String| client.request(Method::POST, &path);
        let action = match &command {
            JobCommand::Retry { .. } => "retry",
            _ => "release",
        };
        match command {
            JobCommand::Submit(a) => {
                let body = submit_body(&a)?;
                let response = client.send(post("/v1/jobs".into()).json(&body)).await?;
                let existing = response.status() == reqwest::StatusCode::OK;
                let job: JobDto = response.json().await.context("unexpected answer")?;
                if a.wait {
                    if existing && !conn.json {
                        eprintln!("a live job with this unique key exists: {}", job.id);
                    }
                    return wait_for(&client, conn, &job.id, a.timeout).await;
                }
                if conn.json {
                    print_json(&job)?;
                } else if existing {
                    println!(
                        "{} (existing job with this unique key, {})",
                        job.id, job.state
                    );
                } else {
                    println!("{}", job.id);
                }
            }
            JobCommand::Get { id } => {
                let job: JobDto = client.get(&format!("/v1/jobs/{}", path_part(&id))).await?;
                if conn.json {
                    print_json(&job)?;
                } else {
                    print_job(&job);
                }
            }
            JobCommand::List(l) => {
                let mut query = vec![("limit", l.limit.to_string())];
                for (k, v) in [
                    ("state", &l.state),
                    ("task", &l.task),
                    ("queue", &l.queue),
                    ("context", &l.context),
                    ("after", &l.after),
                ] {
                    if let Some(v) = v {
                        query.push((k, v.clone()));
                    }
                }
                let list: JobList = client
                    .json(client.request(Method::GET, "/v1/jobs").query(&query))
                    .await?;
                if conn.json {
                    print_json(&list)?;
                } else {
                    print!("{}", job_rows(&list.jobs));
                    if let Some(next) = &list.next {
                        println!("(more: --after {next})");
                    }
                }
            }
            JobCommand::Cancel { id: Some(id), .. } => {
                let c: CancelDto = client
                    .json(post(format!("/v1/jobs/{}/cancel", path_part(&id))))
                    .await?;
                if conn.json {
                    print_json(&c)?;
                } else {
                    println!("{} {}", c.job.id, c.outcome);
                }
            }
            JobCommand::Cancel {
                id: None,
                task,
                queue,
                context,
                state,
                all,
            } => {
                let filter = CancelFilter {
                    state: state
                        .map(|s| s.split(',').map(str::to_owned).collect())
                        .unwrap_or_default(),
                    task,
                    queue,
                    context,
                    unique_key: None,
                    all,
                };
                let c: CountDto = client
                    .json(post("/v1/jobs/cancel".into()).json(&filter))
                    .await?;
                if conn.json {
                    print_json(&c)?;
                } else {
                    println!("cancelled {} jobs", c.count);
                }
            }
            JobCommand::Retry { id } | JobCommand::Release { id } => {
                let job: JobDto = client
                    .json(post(format!("/v1/jobs/{}/{action}", path_part(&id))))
                    .await?;
                if conn.json {
                    print_json(&job)?;
                } else {
                    println!("{} {}", job.id, job.state);
                }
            }
            JobCommand::Logs { id, attempt } => {
                let mut request =
                    client.request(Method::GET, &format!("/v1/jobs/{}/log", path_part(&id)));
                if let Some(n) = attempt {
                    request = request.query(&[("attempt", n)]);
                }
                let bytes = client.send(request).await?.bytes().await?;
                std::io::stdout().write_all(&bytes)?;
            }
            JobCommand::Explain { id } => {
                let e: ExplainDto = client
                    .get(&format!("/v1/jobs/{}/explain", path_part(&id)))
                    .await?;
                if conn.json {
                    print_json(&e)?;
                } else {
                    println!("{}", e.message);
                }
            }
            JobCommand::Output { id } => {
                let response = client
                    .send(
                        client.request(Method::GET, &format!("/v1/jobs/{}/output", path_part(&id))),
                    )
                    .await?;
                std::io::stdout().write_all(&response.bytes().await?)?;
            }
            JobCommand::Batch { file } => {
                let text = if file.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?
                };
                let batch: SubmitBatch = match serde_json::from_str(&text) {
                    Ok(b) => b,
                    Err(_) => SubmitBatch {
                        jobs: text
                            .lines()
                            .enumerate()
                            .filter(|(_, l)| !l.trim().is_empty())
                            .map(|(i, l)| {
                                serde_json::from_str(l)
                                    .with_context(|| format!("{} line {}", file.display(), i + 1))
                            })
                            .collect::<anyhow::Result<_>>()?,
                    },
                };
                let r: BatchResult = client
                    .json(post("/v1/jobs/batch".into()).json(&batch))
                    .await?;
                if conn.json {
                    print_json(&r)?;
                } else {
                    for j in &r.jobs {
                        println!("{}", j.id);
                    }
                }
            }
            JobCommand::Clean { older_than } => {
                let c: CountDto = client
                    .json(post("/v1/jobs/clean".into()).json(&CleanRequest {
                        older_than_seconds: older_than,
                    }))
                    .await?;
                if conn.json {
                    print_json(&c)?;
                } else {
                    println!("removed {} ended jobs", c.count);
                }
            }
            JobCommand::Watch { task, queue, job } => {
                let mut query = Vec::new();
                for (k, v) in [("task", task), ("queue", queue), ("job", job)] {
                    if let Some(v) = v {
                        query.push((k, v));
                    }
                }
                let mut response = client
                    .send(client.request(Method::GET, "/v1/events").query(&query))
                    .await?;
                let mut buffer = String::new();
                loop {
                    let chunk = match response.chunk().await {
                        Ok(Some(chunk)) => chunk,
                        Ok(None) => break,
                        Err(e) => {
                            eprintln!("the event stream ended: {e}");
                            break;
                        }
                    };
                    buffer.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = buffer.find("\n\n") {
                        let block: String = buffer.drain(..end + 2).collect();
                        let kind = block.lines().find_map(|l| l.strip_prefix("event: "));
                        let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                        match (kind, data) {
                            (Some("job"), Some(data)) if conn.json => println!("{data}"),
                            (Some("job"), Some(data)) => {
                                let e: EventDto = serde_json::from_str(data)?;
                                println!(
                                    "{}  {}  {}  {}  {}",
                                    e.at, e.id, e.task, e.queue, e.state
                                );
                            }
                            (Some("lagged"), Some(n)) => eprintln!("(missed {n} events)"),
                            _ => {}
                        }
                    }
                }
            }
            JobCommand::Rm { id } => {
                client
                    .send(client.request(Method::DELETE, &format!("/v1/jobs/{}", path_part(&id))))
                    .await?;
                if !conn.json {
                    println!("deleted {id}");
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub(super) fn queue(command: QueueCommand, conn: &Connection) -> anyhow::Result<ExitCode> {
    let client = conn.client()?;
    runtime()?.block_on(async {
        let queues: Vec<QueueDto> = match &command {
            QueueCommand::List => client.get("/v1/queues").await?,
            QueueCommand::Pause { name } | QueueCommand::Resume { name } => {
                let action = if matches!(command, QueueCommand::Pause { .. }) {
                    "pause"
                } else {
                    "resume"
                };
                let q: QueueDto = client
                    .json(client.request(
                        Method::POST,
                        &format!("/v1/queues/{}/{action}", path_part(name)),
                    ))
                    .await?;
                vec![q]
            }
        };
        if conn.json {
            return print_json(&queues);
        }
        let count = |q: &QueueDto, s: &str| q.counts.get(s).copied().unwrap_or(0).to_string();
        let rows: Vec<Vec<String>> = queues
            .iter()
            .map(|q| {
                vec![
                    q.name.clone(),
                    q.concurrency.to_string(),
                    if q.paused { "paused" } else { "active" }.into(),
                    count(q, "queued"),
                    count(q, "running"),
                    count(q, "scheduled"),
                    count(q, "held"),
                    count(q, "completed"),
                    count(q, "failed"),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "QUEUE",
                    "CONCURRENCY",
                    "STATE",
                    "QUEUED",
                    "RUNNING",
                    "DELAYED",
                    "HELD",
                    "COMPLETED",
                    "FAILED"
                ],
                &rows
            )
        );
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn token(command: TokenCommand, conn: &Connection) -> anyhow::Result<ExitCode> {
    let client = conn.client()?;
    runtime()?.block_on(async {
        match command {
            TokenCommand::Create { role, name } => {
                let t: TokenDto = client
                    .json(
                        client
                            .request(Method::POST, "/v1/tokens")
                            .json(&CreateToken { role, name }),
                    )
                    .await?;
                if conn.json {
                    return print_json(&t);
                }
                eprintln!(
                    "created {} token {} (the secret is shown once):",
                    t.role, t.id
                );
                println!("{}", t.token.unwrap_or_default());
            }
            TokenCommand::List => {
                let tokens: Vec<TokenDto> = client.get("/v1/tokens").await?;
                if conn.json {
                    return print_json(&tokens);
                }
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.role.clone(),
                            t.name.clone(),
                            t.created_at.clone(),
                            t.revoked_at.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["ID", "ROLE", "NAME", "CREATED", "REVOKED"], &rows)
                );
            }
            TokenCommand::Revoke { id } => {
                client
                    .send(client.request(Method::DELETE, &format!("/v1/tokens/{}", path_part(&id))))
                    .await?;
                if !conn.json {
                    println!("revoked {id}");
                }
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn server(command: ServerCommand, conn: &Connection) -> anyhow::Result<ExitCode> {
    let client = conn.client()?;
    runtime()?.block_on(async {
        let path = match command {
            ServerCommand::Health => "/healthz",
            ServerCommand::Metrics => "/metrics",
            ServerCommand::Openapi => "/v1/openapi.json",
        };
        let bytes = client
            .send(client.request(Method::GET, path))
            .await?
            .bytes()
            .await?;
        std::io::stdout().write_all(&bytes)?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
