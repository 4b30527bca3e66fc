//! The PostgreSQL backend of [`Store`]: several server nodes on one database.
//!
//! - **Two pools of connections**: writes that must survive a crash once acknowledged
//!   (submits, operator actions, schedules, tokens) and reads use the database's own
//!   `synchronous_commit`; claims, lease extensions, progress and attempt results use
//!   connections with `synchronous_commit = off`: after a crash of the database such a write
//!   may be gone, and the job is where an earlier write left it (queued, or running under a
//!   lease the rescuer expires), as with the SQLite backend. Nothing acknowledged to a
//!   submitter is lost.
//! - **Claims** are one call of `remotask_claim` (made in `migrations/02_functions.sql`, last
//!   redefined in `08_attempt_base.sql`): the queue's row is locked, so the claims of one
//!   queue from every node take turns and its concurrency holds across nodes; jobs are taken
//!   `FOR UPDATE SKIP LOCKED` in priority, run-at, id order. Fencing tokens come from a
//!   sequence: they only grow, on every node.
//! - **Batches are statements**: a submit of many jobs and the ends of many attempts are one
//!   statement each, their rows passed as arrays.
//! - **Running jobs are the ones with a lease**, and a lease's expiry, which a claim sets and
//!   every end clears with the state. The index of running jobs is partial on
//!   `state = 'running' AND lease_expires IS NOT NULL` (migration 11): the state makes
//!   PostgreSQL take it to be small even before the table has statistics, and the expiry,
//!   which the end statement does not name, keeps that statement on lookups by id. The
//!   rescuer (`lease_expires < now`) and listings of running jobs
//!   (`lease_expires IS NOT NULL`) name it.
//! - **A job's task and context are looked up in `job_lookup`** (migration 10), one row a
//!   job, written by the statement that stores it and deleted with it by the trigger that
//!   deletes its attempts. An update that moves a job to another state is not HOT and adds
//!   an entry to every index of `jobs`; an index there on a column that never changes would
//!   take one entry per move of every job, for nothing.
//! - **Counts** per queue and state are kept in `job_counts` by every write that moves jobs,
//!   in its transaction, their rows updated in one order so writes do not deadlock.
//! - **Nodes hear each other** through `LISTEN`/`NOTIFY` (`bus.rs`), and one node at a time
//!   leads maintenance, holding an advisory lock on a connection of its own (`leader.rs`).
//! - **Migrations** are embedded and applied at connect under an advisory lock; a database
//!   whose schema is newer than the binary's is refused.

mod bus;
mod catalog;
mod import;
mod jobs;
mod leader;
mod leases;
mod migrations;
mod rows;
mod store;

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::{Signal, StoreError, StoreResult};

/// Connections per pool.
const POOL_SIZE: usize = 8;

/// The PostgreSQL job store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the database is, with the password left out (for messages).
    shown: String,
    config: tokio_postgres::Config,
    /// Writes that must be durable when acknowledged, and reads.
    durable: Pool,
    /// Writes a crash may lose without losing anything acknowledged: claims, leases,
    /// progress, attempt results.
    volatile: Pool,
    /// This node, in the signals it sends (it skips its own).
    node: u64,
    /// Signals from other nodes.
    signals: tokio::sync::broadcast::Sender<Signal>,
    leader: leader::Leadership,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.inner.shown)
            .finish_non_exhaustive()
    }
}

/// A database failure, keeping the driver's error as its source.
fn db(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::database(e)
}

fn corrupt(table: &'static str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        message: message.to_string(),
    }
}

fn pool(config: &tokio_postgres::Config) -> StoreResult<Pool> {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .build()
        .map_err(|e| StoreError::io("cannot make a pool of database connections", e))
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`), applies pending
    /// migrations under an advisory lock, and starts listening for the other nodes.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::io(format!("{url:?} is not a PostgreSQL URL"), e))?;
        let shown = shown(&config);
        let mut volatile_config = config.clone();
        volatile_config.options("-c synchronous_commit=off");
        let durable = pool(&config)?;
        let volatile = pool(&volatile_config)?;
        {
            let mut client = durable.get().await.map_err(|e| {
                StoreError::io(format!("cannot connect to the database at {shown}"), e)
            })?;
            migrations::migrate(&mut client, &shown).await?;
        }
        let node = std::hash::BuildHasher::hash_one(
            &std::hash::RandomState::new(),
            (std::process::id(), std::time::SystemTime::now()),
        );
        let (signals, _) = tokio::sync::broadcast::channel(4096);
        let store = Self {
            inner: Arc::new(Inner {
                leader: leader::Leadership::new(config.clone()),
                shown,
                config,
                durable,
                volatile,
                node,
                signals,
            }),
        };
        bus::listen(&store);
        Ok(store)
    }

    async fn durable(&self) -> StoreResult<deadpool_postgres::Object> {
        self.inner.durable.get().await.map_err(db)
    }

    async fn volatile(&self) -> StoreResult<deadpool_postgres::Object> {
        self.inner.volatile.get().await.map_err(db)
    }
}

/// `host:port/db` of a config, for messages: no password.
fn shown(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

#[cfg(test)]
mod tests;
