//! `remotask job submit` and `job batch`: one job from flags, or many from a JSON file in one
//! transaction. With `--wait`, a submit draws the job's progress until it ends, prints its
//! output, and exits with the code `remotask run` would give the same end. The flags that
//! say what the job runs with are `JobArgs`, shared with schedules.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use reqwest::Method;

use super::{Client, Connection, JobArgs, print_json};
use crate::cli::run::exit_code_for;
use crate::domain::Reason;
use crate::http::dto::{BatchResult, JobDto, SubmitBatch, SubmitJob, SubmitOptions};

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

/// Submits one job; prints its id (or, with `--wait`, waits for it).
pub(super) async fn submit(
    client: &Client,
    conn: &Connection,
    a: &SubmitArgs,
) -> anyhow::Result<ExitCode> {
    let body = submit_body(a)?;
    let response = client
        .send(client.request(Method::POST, "/v1/jobs").json(&body))
        .await?;
    let existing = response.status() == reqwest::StatusCode::OK;
    let job: JobDto = response.json().await.context("unexpected answer")?;
    if a.wait {
        if existing && !conn.json {
            eprintln!("a live job with this unique key exists: {}", job.id);
        }
        return wait_for(client, conn, &job.id, a.timeout).await;
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
    Ok(ExitCode::SUCCESS)
}

fn submit_body(a: &SubmitArgs) -> anyhow::Result<SubmitJob> {
    Ok(SubmitJob {
        job: a.job.to_spec(&a.task)?,
        submit: SubmitOptions {
            delay_seconds: a.delay,
            run_at: None,
            hold: a.hold,
            unique_key: a.unique_key.clone(),
        },
    })
}

/// Submits the jobs of `file`: `{"jobs": [...]}`, or one job object per line.
pub(super) async fn batch(client: &Client, conn: &Connection, file: &Path) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
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
        .json(client.request(Method::POST, "/v1/jobs/batch").json(&batch))
        .await?;
    if conn.json {
        print_json(&r)?;
    } else {
        for j in &r.jobs {
            println!("{}", j.id);
        }
    }
    Ok(())
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
