//! `remotask token ...`: create API tokens (the secret is printed once, on stdout), list
//! them, revoke one. All of it needs an admin token.

use std::process::ExitCode;

use clap::Subcommand;
use reqwest::Method;

use super::{Client, Connection, block_on, path_part, print_json, table};
use crate::http::dto::{CreateToken, TokenDto};

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

pub(in crate::cli) fn token(command: TokenCommand, conn: &Connection) -> anyhow::Result<ExitCode> {
    block_on(conn, |client| async move {
        match command {
            TokenCommand::Create { role, name } => create(&client, conn, role, name).await,
            TokenCommand::List => list(&client, conn).await,
            TokenCommand::Revoke { id } => revoke(&client, conn, &id).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn create(
    client: &Client,
    conn: &Connection,
    role: String,
    name: String,
) -> anyhow::Result<()> {
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
    Ok(())
}

async fn list(client: &Client, conn: &Connection) -> anyhow::Result<()> {
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
    Ok(())
}

async fn revoke(client: &Client, conn: &Connection, id: &str) -> anyhow::Result<()> {
    client
        .send(client.request(Method::DELETE, &format!("/v1/tokens/{}", path_part(id))))
        .await?;
    if !conn.json {
        println!("revoked {id}");
    }
    Ok(())
}
