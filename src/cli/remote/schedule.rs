//! `remotask schedule ...`: create, list, show, update in place, pause, resume and delete
//! schedules, and preview their next fire times. A schedule's job is given with the same
//! flags as `job submit` (`JobArgs`).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;

use super::{Client, Connection, JobArgs, block_on, path_part, print_json, table};
use crate::http::dto::{FireTimesDto, ScheduleDto, ScheduleInput, ScheduleOptions};

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
        Ok(ScheduleInput {
            schedule: ScheduleOptions {
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
            },
            job: self.job.to_spec(&self.task)?,
        })
    }
}

pub(in crate::cli) fn schedule(
    command: ScheduleCommand,
    conn: &Connection,
) -> anyhow::Result<ExitCode> {
    block_on(conn, |client| async move {
        let c = &client;
        let shown: ScheduleDto = match command {
            ScheduleCommand::List => return list(c, conn).await,
            ScheduleCommand::Next { name, n } => return next(c, conn, &name, n).await,
            ScheduleCommand::Rm { name } => return rm(c, conn, &name).await,
            ScheduleCommand::Add(a) => {
                c.json(
                    c.request(Method::POST, "/v1/schedules")
                        .json(&a.to_input()?),
                )
                .await?
            }
            ScheduleCommand::Update(a) => {
                c.json(c.request(Method::PUT, &one(&a.name)).json(&a.to_input()?))
                    .await?
            }
            ScheduleCommand::Show { name } => c.get(&one(&name)).await?,
            ScheduleCommand::Pause { name } => {
                c.json(c.request(Method::POST, &format!("{}/pause", one(&name))))
                    .await?
            }
            ScheduleCommand::Resume { name } => {
                c.json(c.request(Method::POST, &format!("{}/resume", one(&name))))
                    .await?
            }
        };
        if conn.json {
            return print_json(&shown);
        }
        print_schedule(&shown)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The path of one schedule.
fn one(name: &str) -> String {
    format!("/v1/schedules/{}", path_part(name))
}

async fn list(client: &Client, conn: &Connection) -> anyhow::Result<()> {
    let all: Vec<ScheduleDto> = client.get("/v1/schedules").await?;
    if conn.json {
        return print_json(&all);
    }
    print!("{}", schedule_rows(&all));
    Ok(())
}

async fn next(client: &Client, conn: &Connection, name: &str, n: usize) -> anyhow::Result<()> {
    let t: FireTimesDto = client
        .json(
            client
                .request(Method::GET, &format!("{}/next", one(name)))
                .query(&[("n", n)]),
        )
        .await?;
    if conn.json {
        return print_json(&t);
    }
    for time in t.times {
        println!("{time}");
    }
    Ok(())
}

async fn rm(client: &Client, conn: &Connection, name: &str) -> anyhow::Result<()> {
    client
        .send(client.request(Method::DELETE, &one(name)))
        .await?;
    if !conn.json {
        println!("removed schedule {name}");
    }
    Ok(())
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

fn print_schedule(shown: &ScheduleDto) -> anyhow::Result<()> {
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
    Ok(())
}
