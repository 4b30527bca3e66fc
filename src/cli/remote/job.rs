//! `remotask job ...`: read, list, cancel, retry, release, delete and clean jobs, print their
//! logs and output, download an attempt's repro bundle, and watch their state changes, one small function per subcommand.
//! Submitting (one job, a batch, waiting for the end) is `submit.rs`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;

use super::submit::{self, SubmitArgs};
use super::{Client, Connection, block_on, path_part, print_json, table};
use crate::http::dto::{
    CancelDto, CancelFilter, CleanRequest, ContextList, CountDto, EventDto, ExplainDto, JobDto,
    JobList,
};

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
    /// Download an attempt's repro bundle, for `remotask replay`.
    Bundle {
        id: String,
        /// The attempt (1 for the first); the last one by default.
        #[arg(long)]
        attempt: Option<u32>,
        /// Where to write it (`-` for stdout); `<id>-<attempt>.bundle` by default.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
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
    /// List the contexts that live jobs carry, with how many carry each.
    Contexts {
        /// Page size (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start after this context (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
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

pub(in crate::cli) fn job(command: JobCommand, conn: &Connection) -> anyhow::Result<ExitCode> {
    block_on(conn, |client| async move {
        let c = &client;
        let done = match command {
            JobCommand::Submit(a) => return submit::submit(c, conn, &a).await,
            JobCommand::Get { id } => get(c, conn, &id).await,
            JobCommand::List(l) => list(c, conn, &l).await,
            JobCommand::Cancel { id: Some(id), .. } => cancel(c, conn, &id).await,
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
                cancel_matching(c, conn, &filter).await
            }
            JobCommand::Retry { id } => act(c, conn, &id, "retry").await,
            JobCommand::Release { id } => act(c, conn, &id, "release").await,
            JobCommand::Logs { id, attempt } => logs(c, &id, attempt).await,
            JobCommand::Explain { id } => explain(c, conn, &id).await,
            JobCommand::Output { id } => output(c, &id).await,
            JobCommand::Bundle {
                id,
                attempt,
                output,
            } => bundle(c, &id, attempt, output).await,
            JobCommand::Batch { file } => submit::batch(c, conn, &file).await,
            JobCommand::Clean { older_than } => clean(c, conn, older_than).await,
            JobCommand::Watch { task, queue, job } => watch(c, conn, task, queue, job).await,
            JobCommand::Rm { id } => rm(c, conn, &id).await,
            JobCommand::Contexts { limit, after } => contexts(c, conn, limit, after).await,
        };
        done.map(|()| ExitCode::SUCCESS)
    })
}

async fn contexts(
    client: &Client,
    conn: &Connection,
    limit: u32,
    after: Option<String>,
) -> anyhow::Result<()> {
    let mut query = vec![("limit", limit.to_string())];
    query.extend(after.map(|a| ("after", a)));
    let list: ContextList = client
        .json(client.request(Method::GET, "/v1/contexts").query(&query))
        .await?;
    if conn.json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .contexts
        .iter()
        .map(|c| vec![c.context.clone(), c.live.to_string()])
        .collect();
    print!("{}", table(&["CONTEXT", "LIVE JOBS"], &rows));
    if let Some(next) = &list.next {
        println!("(more: --after {next})");
    }
    Ok(())
}

async fn get(client: &Client, conn: &Connection, id: &str) -> anyhow::Result<()> {
    let job: JobDto = client.get(&format!("/v1/jobs/{}", path_part(id))).await?;
    if conn.json {
        print_json(&job)?;
    } else {
        print_job(&job);
    }
    Ok(())
}

async fn list(client: &Client, conn: &Connection, l: &ListArgs) -> anyhow::Result<()> {
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
    Ok(())
}

async fn cancel(client: &Client, conn: &Connection, id: &str) -> anyhow::Result<()> {
    let c: CancelDto = client
        .json(client.request(Method::POST, &format!("/v1/jobs/{}/cancel", path_part(id))))
        .await?;
    if conn.json {
        print_json(&c)?;
    } else {
        println!("{} {}", c.job.id, c.outcome);
    }
    Ok(())
}

async fn cancel_matching(
    client: &Client,
    conn: &Connection,
    filter: &CancelFilter,
) -> anyhow::Result<()> {
    let c: CountDto = client
        .json(client.request(Method::POST, "/v1/jobs/cancel").json(filter))
        .await?;
    if conn.json {
        print_json(&c)?;
    } else {
        println!("cancelled {} jobs", c.count);
    }
    Ok(())
}

/// `retry` or `release`: an operator action answered with the job.
async fn act(client: &Client, conn: &Connection, id: &str, action: &str) -> anyhow::Result<()> {
    let job: JobDto = client
        .json(client.request(
            Method::POST,
            &format!("/v1/jobs/{}/{action}", path_part(id)),
        ))
        .await?;
    if conn.json {
        print_json(&job)?;
    } else {
        println!("{} {}", job.id, job.state);
    }
    Ok(())
}

async fn logs(client: &Client, id: &str, attempt: Option<u32>) -> anyhow::Result<()> {
    let mut request = client.request(Method::GET, &format!("/v1/jobs/{}/log", path_part(id)));
    if let Some(n) = attempt {
        request = request.query(&[("attempt", n)]);
    }
    let bytes = client.send(request).await?.bytes().await?;
    std::io::stdout().write_all(&bytes)?;
    Ok(())
}

async fn explain(client: &Client, conn: &Connection, id: &str) -> anyhow::Result<()> {
    let e: ExplainDto = client
        .get(&format!("/v1/jobs/{}/explain", path_part(id)))
        .await?;
    if conn.json {
        print_json(&e)?;
    } else {
        println!("{}", e.message);
    }
    Ok(())
}

async fn output(client: &Client, id: &str) -> anyhow::Result<()> {
    let response = client
        .send(client.request(Method::GET, &format!("/v1/jobs/{}/output", path_part(id))))
        .await?;
    std::io::stdout().write_all(&response.bytes().await?)?;
    Ok(())
}

async fn bundle(
    client: &Client,
    id: &str,
    attempt: Option<u32>,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let n = match attempt {
        Some(n) => n,
        None => {
            let job: JobDto = client.get(&format!("/v1/jobs/{}", path_part(id))).await?;
            anyhow::ensure!(job.attempts > 0, "job {id} has not run an attempt yet");
            job.attempts
        }
    };
    let path = format!("/v1/jobs/{}/attempts/{n}/bundle", path_part(id));
    let bytes = client
        .send(client.request(Method::GET, &path))
        .await?
        .bytes()
        .await?;
    match output {
        Some(file) if file.as_os_str() == "-" => std::io::stdout().write_all(&bytes)?,
        file => {
            let file = file.unwrap_or_else(|| PathBuf::from(format!("{id}-{n}.bundle")));
            std::fs::write(&file, &bytes)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
            eprintln!(
                "wrote {} ({} bytes): attempt {n} of job {id}; replay it with `remotask replay {}`",
                file.display(),
                bytes.len(),
                file.display()
            );
        }
    }
    Ok(())
}

async fn clean(client: &Client, conn: &Connection, older_than: Option<f64>) -> anyhow::Result<()> {
    let c: CountDto = client
        .json(
            client
                .request(Method::POST, "/v1/jobs/clean")
                .json(&CleanRequest {
                    older_than_seconds: older_than,
                }),
        )
        .await?;
    if conn.json {
        print_json(&c)?;
    } else {
        println!("removed {} ended jobs", c.count);
    }
    Ok(())
}

/// Reads the event stream until it ends, printing each job event as a line.
async fn watch(
    client: &Client,
    conn: &Connection,
    task: Option<String>,
    queue: Option<String>,
    job: Option<String>,
) -> anyhow::Result<()> {
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
            print_event(conn, &block)?;
        }
    }
    Ok(())
}

/// One server-sent event block: a job event as a line (or its JSON), a lag notice on stderr.
fn print_event(conn: &Connection, block: &str) -> anyhow::Result<()> {
    let kind = block.lines().find_map(|l| l.strip_prefix("event: "));
    let data = block.lines().find_map(|l| l.strip_prefix("data: "));
    match (kind, data) {
        (Some("job"), Some(data)) if conn.json => println!("{data}"),
        (Some("job"), Some(data)) => {
            let e: EventDto = serde_json::from_str(data)?;
            println!("{}  {}  {}  {}  {}", e.at, e.id, e.task, e.queue, e.state);
        }
        (Some("lagged"), Some(n)) => eprintln!("(missed {n} events)"),
        _ => {}
    }
    Ok(())
}

async fn rm(client: &Client, conn: &Connection, id: &str) -> anyhow::Result<()> {
    client
        .send(client.request(Method::DELETE, &format!("/v1/jobs/{}", path_part(id))))
        .await?;
    if !conn.json {
        println!("deleted {id}");
    }
    Ok(())
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
        let fuel = a.receipt.fuel_consumed;
        let ms = |us: u64| format!("{:.1}", us as f64 / 1e3);
        println!(
            "  attempt {}: {}{}  fuel {}  cpu {} ms  wall {} ms  on {}",
            a.number,
            a.reason,
            a.trap_kind
                .as_ref()
                .map(|k| format!(" ({k})"))
                .unwrap_or_default(),
            fuel.map_or_else(|| "-".into(), |f| f.to_string()),
            ms(a.receipt.cpu_us),
            ms(a.receipt.wall_us),
            a.worker
        );
        if let Some(why) = &a.not_replayable {
            println!("    not replayable: {why}");
        } else if a.replayable && a.reason != "completed" {
            println!(
                "    bundle: remotask job bundle {} --attempt {}  (then `remotask replay` it)",
                j.id, a.number
            );
        }
    }
}
