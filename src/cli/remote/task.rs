//! `remotask task ...`: upload modules as task versions, list and show tasks (and one
//! version's admission report), replace a task's defaults, download a module, remove a name.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;

use super::{BudgetArgs, Client, Connection, block_on, path_part, print_json, table};
use crate::cli::guest::env_pairs;
use crate::http::dto::{TaskDefaultsDto, TaskDto, UploadDto, VersionDetailDto};

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
            env: env_pairs(&self.env)?.into_iter().collect(),
        })
    }
}

pub(in crate::cli) fn task(command: TaskCommand, conn: &Connection) -> anyhow::Result<ExitCode> {
    block_on(conn, |client| async move {
        let c = &client;
        match command {
            TaskCommand::Upload {
                name,
                file,
                defaults,
            } => upload(c, conn, &name, &file, &defaults).await,
            TaskCommand::List => list(c, conn).await,
            TaskCommand::Show {
                name,
                version: Some(digest),
            } => show_version(c, conn, &name, &digest).await,
            TaskCommand::Show {
                name,
                version: None,
            } => show(c, conn, &name).await,
            TaskCommand::Defaults { name, defaults } => {
                set_defaults(c, conn, &name, &defaults).await
            }
            TaskCommand::Module { digest, output } => module(c, conn, &digest, &output).await,
            TaskCommand::Rm { name } => rm(c, conn, &name).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn upload(
    client: &Client,
    conn: &Connection,
    name: &str,
    file: &Path,
    defaults: &DefaultsArgs,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut request = client
        .request(Method::PUT, &format!("/v1/tasks/{}", path_part(name)))
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

async fn list(client: &Client, conn: &Connection) -> anyhow::Result<()> {
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

async fn show(client: &Client, conn: &Connection, name: &str) -> anyhow::Result<()> {
    let t: TaskDto = client
        .get(&format!("/v1/tasks/{}", path_part(name)))
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

async fn show_version(
    client: &Client,
    conn: &Connection,
    name: &str,
    digest: &str,
) -> anyhow::Result<()> {
    let v: VersionDetailDto = client
        .get(&format!(
            "/v1/tasks/{}/versions/{}",
            path_part(name),
            path_part(digest)
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

async fn set_defaults(
    client: &Client,
    conn: &Connection,
    name: &str,
    defaults: &DefaultsArgs,
) -> anyhow::Result<()> {
    let t: TaskDto = client
        .json(
            client
                .request(Method::PATCH, &format!("/v1/tasks/{}", path_part(name)))
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

async fn module(
    client: &Client,
    conn: &Connection,
    digest: &str,
    output: &Path,
) -> anyhow::Result<()> {
    let bytes = client
        .send(client.request(Method::GET, &format!("/v1/modules/{}", path_part(digest))))
        .await?
        .bytes()
        .await?;
    std::fs::write(output, &bytes).with_context(|| format!("cannot write {}", output.display()))?;
    if !conn.json {
        println!("wrote {} ({} bytes)", output.display(), bytes.len());
    }
    Ok(())
}

async fn rm(client: &Client, conn: &Connection, name: &str) -> anyhow::Result<()> {
    client
        .send(client.request(Method::DELETE, &format!("/v1/tasks/{}", path_part(name))))
        .await?;
    if !conn.json {
        println!("removed task {name}");
    }
    Ok(())
}
