//! `remotask server ...`: a server's health, metrics and OpenAPI document, printed as the
//! server answers them (no table, no `--json` difference).

use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;
use reqwest::Method;

use super::{Connection, block_on};

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Whether the server answers and its store is readable.
    Health,
    /// The server's metrics, in the Prometheus text format.
    Metrics,
    /// The server's OpenAPI document.
    Openapi,
}

pub(in crate::cli) fn server(
    command: ServerCommand,
    conn: &Connection,
) -> anyhow::Result<ExitCode> {
    block_on(conn, |client| async move {
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
