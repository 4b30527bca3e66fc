//! `remotask token ...`: create API tokens (the secret is printed once, on stdout), list
//! them, revoke one. All of it needs an admin token, but for `create` given a data directory
//! or a store URL and no server: that writes the token straight into the store, the way back
//! in for an operator who has no admin token left.

use std::process::ExitCode;

use clap::Subcommand;
use reqwest::Method;

use super::{Client, Connection, block_on, path_part, print_json, table};
use crate::domain::{Role, Timestamp};
use crate::http::dto::{CreateToken, TokenDto};
use crate::service::new_token;
use crate::store::{PgStore, SqliteStore, Store};

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
        /// Write the token straight into this PostgreSQL store (postgres://...), without the
        /// API; `--data-dir DIR` without `--server` does the same for a SQLite store.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
    },
    /// List tokens.
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

pub(in crate::cli) fn token(command: TokenCommand, conn: &Connection) -> anyhow::Result<ExitCode> {
    if let TokenCommand::Create { role, name, store } = &command
        && let Some(target) = direct_target(store.as_deref(), conn)?
    {
        return create_in_store(target, role, name, conn.json);
    }
    block_on(conn, |client| async move {
        match command {
            TokenCommand::Create { role, name, .. } => create(&client, conn, role, name).await,
            TokenCommand::List => list(&client, conn).await,
            TokenCommand::Revoke { id } => revoke(&client, conn, &id).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Where `token create` writes without the API.
enum DirectTarget {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

/// `--store URL`, or `--data-dir DIR` when no server is named; `None`: through the API.
fn direct_target(store: Option<&str>, conn: &Connection) -> anyhow::Result<Option<DirectTarget>> {
    if let Some(url) = store {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            anyhow::bail!("--store must be a postgres:// URL, got {url:?}");
        }
        return Ok(Some(DirectTarget::Postgres(url.to_owned())));
    }
    match (&conn.data_dir, &conn.server) {
        (Some(dir), None) => {
            let file = dir.join("remotask.db");
            if !file.is_file() {
                anyhow::bail!(
                    "{} holds no remotask store (no {})",
                    dir.display(),
                    file.display()
                );
            }
            Ok(Some(DirectTarget::Sqlite(file)))
        }
        _ => Ok(None),
    }
}

/// Makes a token and writes it into the store itself; a running server accepts it at once.
fn create_in_store(
    target: DirectTarget,
    role: &str,
    name: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let role: Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let token = new_token(role, name, Timestamp::now())?;
    super::runtime()?.block_on(async {
        let store: Box<dyn Store> = match &target {
            DirectTarget::Sqlite(file) => Box::new(SqliteStore::open(file)?),
            DirectTarget::Postgres(url) => Box::new(PgStore::connect(url).await?),
        };
        store.create_token(&token.record).await
    })?;
    if json {
        print_json(&TokenDto::from_record(&token.record, Some(token.secret)))?;
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "created {} token {} in the store (the secret is shown once):",
        token.record.role.as_str(),
        token.record.id
    );
    println!("{}", token.secret);
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
