//! `remotask store`: commands that work on a store directly, not through a server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::store::{PgStore, SqliteStore, copy};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy an installation's SQLite store (tasks and their modules, queues, schedules,
    /// tokens, jobs with their attempts) into a PostgreSQL database, in one transaction.
    /// Stop the server of the data directory first.
    Copy {
        /// The data directory of the installation to copy (it holds remotask.db).
        #[arg(long, value_name = "DATA_DIR")]
        from: PathBuf,
        /// The PostgreSQL database to fill: postgres://user@host:port/db.
        #[arg(long, value_name = "URL", env = "REMOTASK_STORE")]
        to: String,
        /// Delete whatever the database holds before copying (by default a database that
        /// holds anything is refused).
        #[arg(long)]
        replace: bool,
    },
}

pub(super) fn store(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Copy { from, to, replace } => copy_store(&from, &to, replace),
    }
}

fn copy_store(from: &std::path::Path, to: &str, replace: bool) -> anyhow::Result<ExitCode> {
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        bail!("--to must be a postgres:// URL, got {to:?}");
    }
    let file = from.join("remotask.db");
    if !file.is_file() {
        bail!(
            "{} holds no remotask store (no {})",
            from.display(),
            file.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = runtime.block_on(async {
        let source = SqliteStore::open(&file)
            .with_context(|| format!("cannot open the store in {}", from.display()))?;
        let target = PgStore::connect(to).await?;
        copy::copy(&source, &target, replace)
            .await
            .context("nothing was copied")
    })?;
    println!("copied {} to {}", from.display(), target_shown(to));
    println!("{report}");
    if let Some(running) = report.jobs.get(&crate::domain::JobState::Running) {
        println!(
            "note: {running} jobs were running; their attempts end as lease_lost when their \
             leases expire on the new store, and the retry policy decides what follows"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The URL without its password, for the report.
fn target_shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or_default();
            format!("{}{user}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::target_shown;

    #[test]
    fn the_report_never_shows_a_password() {
        assert_eq!(
            target_shown("postgres://app:secret@db:5432/jobs"),
            "postgres://app@db:5432/jobs"
        );
        assert_eq!(
            target_shown("postgres://app@db/jobs"),
            "postgres://app@db/jobs"
        );
        assert_eq!(target_shown("postgres://db/jobs"), "postgres://db/jobs");
    }
}
