//! `remotask queue ...`: list a server's queues with their job counts, pause and resume one.
//! Every subcommand prints the same table (of the queue it changed, for pause and resume).

use std::process::ExitCode;

use clap::Subcommand;
use reqwest::Method;

use super::{Client, Connection, block_on, path_part, print_json, table};
use crate::http::dto::QueueDto;

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queues with their job counts.
    List,
    /// Pause a queue: running jobs finish, no new job starts (admin).
    Pause { name: String },
    /// Resume a paused queue (admin).
    Resume { name: String },
}

pub(in crate::cli) fn queue(command: QueueCommand, conn: &Connection) -> anyhow::Result<ExitCode> {
    block_on(conn, |client| async move {
        let queues = match &command {
            QueueCommand::List => client.get("/v1/queues").await?,
            QueueCommand::Pause { name } => vec![set_paused(&client, name, "pause").await?],
            QueueCommand::Resume { name } => vec![set_paused(&client, name, "resume").await?],
        };
        if conn.json {
            return print_json(&queues);
        }
        print!("{}", queue_rows(&queues));
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `pause` or `resume` one queue.
async fn set_paused(client: &Client, name: &str, action: &str) -> anyhow::Result<QueueDto> {
    client
        .json(client.request(
            Method::POST,
            &format!("/v1/queues/{}/{action}", path_part(name)),
        ))
        .await
}

fn queue_rows(queues: &[QueueDto]) -> String {
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
            "FAILED",
        ],
        &rows,
    )
}
