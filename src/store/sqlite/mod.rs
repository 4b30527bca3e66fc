//! The SQLite backend of [`Store`]: one file in WAL mode, versioned migrations applied at
//! open (a database newer than the binary is refused), one writer thread that batches the
//! writes of many callers into few transactions (group commit: a caller's write is durable when
//! its future resolves, yet throughput is not one fsync per job), a syncer thread that fsyncs
//! the log for the writes that need it while the writer goes on, a checkpointer thread, and a
//! small pool of read connections. Every state change is one guarded `UPDATE` whose guard
//! comes from the state machine's table (`guards.rs`).
//!
//! Durability: submits and every operator action are fsynced before they are acknowledged.
//! Claims, heartbeats, progress and attempt results are not (they ride on the next fsync); a
//! crash of the process loses none of them (WAL), and after a power loss the job is simply
//! where an earlier write left it: queued, or running with a lease the rescuer expires, so it
//! runs again. A write is visible from its commit, before its fsync: a job can start while
//! its submit is being synced, and after a power loss a submit never acknowledged may be gone
//! with what its job did (a guest's effects stay in the store). Nothing accepted is lost.
//!
//! # How it is tuned (each note says why; `BENCHMARKS.md` has the measurements)
//!
//! - **One writer, one log syncer, one checkpointer** (`writer.rs`, `syncer.rs`,
//!   `checkpoint.rs`). The writer commits with `synchronous = NORMAL` (no fsync) and answers
//!   at once the writes that need none (claims, leases, progress, results); durable ones
//!   (submits, operator actions) go to the syncer, which fsyncs the log and then answers them.
//!   The syncer's descriptor is for the same file as SQLite's log (the writer's connection
//!   keeps the log from being removed; the syncer checks the inode before each fsync). A write
//!   whose log could not be synced gets an error, though it is committed.
//! - **Checkpoints are shared** (`checkpoint.rs`): PASSIVE checkpoints run on their own thread,
//!   woken after 256 uncopied pages or 64 commits; SQLite's automatic checkpoint is off on the
//!   writer. From 16 MiB the writer copies the rest itself, only when at most 256 pages are
//!   left (at 64 MiB whatever is left), so its next commit starts the log over.
//! - **A failed write changes nothing, and spares the others in its transaction**: beside
//!   other writes each runs in a savepoint; alone, without one (a savepoint copies every page
//!   it changes into a statement journal). Submits of one transaction are inserted together,
//!   and each again on its own if that fails.
//! - **Parked claims** (`parking.rs`): an idle dispatcher leaves a claim that runs in the
//!   transaction of the next submit to one of its queues.
//! - **Rows are small** (`columns.rs`, `rows.rs`): limits and retry policies are `;`-separated
//!   fields, not JSON (schema 7); an attempt's job is not a foreign key, a trigger deletes a
//!   job's attempts (schema 8); a claim returns only the columns it does not set itself.
//! - **Partial index conditions are comparisons, never `IN` lists**: SQLite evaluates them for
//!   every row written and tests `IN` of more than two constants against a table it builds each
//!   time; queries spell an index's condition exactly (`LIVE_STATES`, `TERMINAL_STATES`).
//! - **What runs every second reads only what is live**: the rescuer's query goes through
//!   `jobs_running`, claims through `jobs_claim`, the next wake-up through `jobs_due`; queue
//!   stats read `job_counts` (`counts.rs`), never the jobs. Per-request statements are cached.
//! - **Hot inserts are multi-row** (`batch.rs`): up to 64 rows per `INSERT`, in power-of-two
//!   chunks whose SQL is built once.
//! - **The writer thread only binds and steps**: text columns are encoded before a write is
//!   sent and returned rows decoded after it, on the caller's thread (`rows.rs`).
//! - **Point reads run on the caller's thread**; scans go to the blocking pool. Readers do not
//!   map the file (a mapped reader unmaps it at the first read after each commit) and keep
//!   2 MiB of cache; the writer's cache is 2 MiB too (SQLite walks all of it at commits after
//!   a page split).

mod batch;
mod catalog;
mod checkpoint;
mod claims;
mod counts;
mod ends;
mod export;
mod jobs;
mod migrations;
mod moves;
mod parking;
mod rows;
mod schedules;
mod store;
mod syncer;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::{BlobStore, Inserted, StoreError, StoreResult};
use checkpoint::{Checkpointing, Checkpoints, checkpointer};
use parking::Parking;
use rows::EncodedJob;
use writer::{Completion, Isolation, WriteOp, in_savepoint, writer_loop};

/// Read connections kept open.
const READERS: usize = 4;

/// A reader's page cache, in KiB. It is dropped at the first read after each commit, so under
/// load it holds one read's pages; when nothing is written it keeps the pages of repeated
/// reads.
const READER_CACHE_KIB: u32 = 2_048;

/// The SQLite job store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Module bytes: `modules/` beside the database file.
    blobs: BlobStore,
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    readers: Mutex<Vec<Connection>>,
    parking: Arc<Parking>,
}

impl Inner {
    /// Runs `f` on a pooled read connection (a new one if all are taken).
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_reader(&self.path)?,
        };
        let result = f(&conn);
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        result
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// A database failure, keeping the SQLite error as its source.
fn db(e: rusqlite::Error) -> StoreError {
    StoreError::database(e)
}

fn corrupt(table: &'static str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        message: message.to_string(),
    }
}

/// A read connection. It reads pages with `pread` into a small cache, and does not map the
/// file: in WAL mode a read transaction that begins after any commit drops the connection's
/// cache, and a mapped reader also unmaps the whole file then (`pagerBeginReadTransaction`),
/// which costs a TLB shootdown on every CPU. With the writer committing all the time, that was
/// every point read (a job, a task, the next scheduled time).
fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = open_connection(path)?;
    conn.execute_batch(&format!(
        "PRAGMA mmap_size = 0; PRAGMA cache_size = -{READER_CACHE_KIB};"
    ))
    .map_err(db)?;
    Ok(conn)
}

fn open_connection(path: &Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(db)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA busy_timeout = 10000; PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY;",
    )
    .map_err(db)?;
    // Plans do not depend on bound values: otherwise a cached statement whose LIMIT or range is
    // a parameter is re-prepared whenever the value changes (the claim's LIMIT changes often).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(db)?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// Starts a named thread of the store.
fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> StoreResult<()> {
    thread::Builder::new()
        .name(format!("remotask-sqlite-{name}"))
        .spawn(f)
        .map(|_| ())
        .map_err(|e| StoreError::io(format!("cannot start the {name} thread"), e))
}

impl SqliteStore {
    /// Opens (creating) the database file and applies pending migrations; module bytes are
    /// kept in `modules/` beside it.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let mut writer_conn = open_connection(&path)?;
        migrations::migrate(&mut writer_conn, &path)?;
        let readers = (0..READERS)
            .map(|_| open_reader(&path))
            .collect::<StoreResult<Vec<_>>>()?;
        let log = Arc::new(Checkpoints::default());
        writer::prepare(&mut writer_conn, log.clone())?;
        let checkpoint_conn = open_connection(&path)?;
        let (wake_checkpointer, asks) = mpsc::sync_channel::<()>(1);
        let passes = log.clone();
        spawn("checkpoint", move || {
            checkpointer(checkpoint_conn, asks, &passes)
        })?;
        let (to_sync, syncs) = mpsc::channel::<Vec<Completion>>();
        let wal = syncer::wal_path(&path)?;
        spawn("sync", move || syncer::log_syncer(&wal, &syncs))?;
        let (tx, rx) = mpsc::channel::<WriteOp>();
        let parking = Arc::new(Parking::default());
        let riders = parking.clone();
        spawn("writer", move || {
            let checkpoints = Checkpointing::new(&log, wake_checkpointer);
            writer_loop(writer_conn, rx, checkpoints, &riders, to_sync)
        })?;
        let modules = path.parent().unwrap_or(Path::new(".")).join("modules");
        let blobs = BlobStore::open(&modules)
            .map_err(|e| StoreError::io(format!("cannot open {}", modules.display()), e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                blobs,
                path,
                writer: Mutex::new(Some(tx)),
                readers: Mutex::new(readers),
                parking,
            }),
        })
    }

    /// Runs `f` in the writer's current transaction (inside its own savepoint, so its failure
    /// undoes only its own changes); resolves after the transaction committed and its log was
    /// synced.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.write_with(true, f).await
    }

    /// A write that need not survive a power loss (it is fsynced with the next durable one).
    async fn write_volatile<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.write_with(false, f).await
    }

    async fn write_with<T: Send + 'static>(
        &self,
        durable: bool,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let run = Box::new(move |conn: &Connection, isolation| -> (bool, Completion) {
            let result = match isolation {
                Isolation::Alone => f(conn),
                Isolation::Savepoint => in_savepoint(conn, f),
            };
            let ok = result.is_ok();
            let done: Completion = Box::new(move |committed: StoreResult<()>| {
                let _ = tx.send(committed.and(result));
            });
            (ok, done)
        });
        self.send(WriteOp::Run { durable, run }, rx).await
    }

    /// Inserts submitted jobs, together with the other submits of the writer's transaction.
    async fn insert(&self, jobs: Vec<EncodedJob>) -> StoreResult<Vec<Inserted>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(WriteOp::Insert { jobs, reply }, rx).await
    }

    async fn send<T>(
        &self,
        op: WriteOp,
        answer: tokio::sync::oneshot::Receiver<StoreResult<T>>,
    ) -> StoreResult<T> {
        let sender = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(StoreError::Closed)?;
        sender.send(op).map_err(|_| StoreError::Closed)?;
        // A dropped answer: the writer could not start a transaction (and logged why).
        answer.await.map_err(|_| StoreError::NotApplied)?
    }

    /// Runs `f` on a read connection, on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_reader(f))
            .await
            .map_err(|e| StoreError::io("a read did not finish", e))?
    }

    /// A read of a few rows by key, run on the calling thread: handing it to a blocking
    /// thread and back costs more than the read itself (its pages are mostly cached).
    fn read_point<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        self.inner.with_reader(f)
    }
}

#[cfg(test)]
mod tests;
