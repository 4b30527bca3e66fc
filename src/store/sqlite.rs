//! The SQLite backend of [`Store`]: one file in WAL mode, versioned migrations applied at
//! open (a database newer than the binary is refused), one writer thread that batches the
//! writes of many callers into few transactions (group commit: a caller's write is durable when
//! its future resolves, yet throughput is not one fsync per job), a syncer thread that fsyncs
//! the log for the writes that need it while the writer goes on, and a small pool of read
//! connections. Every state change is one guarded `UPDATE`.
//!
//! Durability: submits and every operator action are fsynced before they are acknowledged.
//! Claims, heartbeats, progress and attempt results are not (they ride on the next fsync); a
//! crash of the process loses none of them (WAL), and after a power loss the job is simply
//! where an earlier write left it: queued, or running with a lease the rescuer expires, so it
//! runs again. A write is visible from its commit, before its fsync: a job can start while
//! its submit is being synced, and after a power loss a submit never acknowledged may be gone
//! with what its job did (a guest's effects stay in the store). Nothing accepted is lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use super::columns;

use super::{
    AttemptEnd, Claimed, Claims, Firing, Inserted, ParkedAnswer, Promoted, StandingClaim, Store,
    StoreError, StoreResult,
};
use crate::domain::{
    AttemptRecord, CancelOutcome, Finish, Job, JobError, JobFilter, JobId, JobState, Lease, Limits,
    ModuleDigest, NewJob, QueueConfig, QueueName, QueuePosition, QueueStats, RetryPolicy,
    ScheduleName, ScheduleRecord, TaskDefaults, TaskName, TaskRecord, TaskVersion, Timestamp,
    TokenRecord,
};

/// Schema migrations, applied in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tasks (
    name        TEXT PRIMARY KEY,
    digest      TEXT NOT NULL,
    defaults    TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE task_versions (
    name        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (name, digest)
);
CREATE TABLE queues (
    name            TEXT PRIMARY KEY,
    concurrency     INTEGER NOT NULL,
    default_limits  TEXT NOT NULL,
    caps            TEXT NOT NULL,
    paused          INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    task            TEXT NOT NULL,
    digest          TEXT NOT NULL,
    queue           TEXT NOT NULL,
    state           TEXT NOT NULL,
    input           BLOB NOT NULL,
    args            TEXT NOT NULL,
    env             TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    run_at          INTEGER NOT NULL,
    unique_key      TEXT,
    context         TEXT,
    limits          TEXT NOT NULL,
    retry           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease           INTEGER,
    lease_expires   INTEGER,
    worker          TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress_done   INTEGER,
    progress_total  INTEGER,
    output          BLOB,
    error_reason    TEXT,
    error_message   TEXT,
    submitter       TEXT,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER
) WITHOUT ROWID;
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_due ON jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_running ON jobs (queue, lease_expires) WHERE state = 'running';
CREATE INDEX jobs_state ON jobs (state, finished_at);
CREATE INDEX jobs_task ON jobs (task, id);
CREATE INDEX jobs_context ON jobs (context, id) WHERE context IS NOT NULL;
CREATE UNIQUE INDEX jobs_unique_live ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('held', 'scheduled', 'queued', 'running');
CREATE TABLE attempts (
    job_id          TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    number          INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    trap_kind       TEXT,
    exit_code       INTEGER,
    message         TEXT,
    stderr          BLOB NOT NULL,
    stderr_truncated INTEGER NOT NULL,
    receipt         TEXT NOT NULL,
    worker          TEXT NOT NULL,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER NOT NULL,
    PRIMARY KEY (job_id, number)
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
"#,
    r#"
CREATE TABLE schedules (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    job         TEXT NOT NULL,
    overlap     TEXT NOT NULL,
    catch_up    TEXT NOT NULL,
    paused      INTEGER NOT NULL,
    next_fire   INTEGER,
    last_fire   INTEGER,
    last_job    TEXT,
    fires       INTEGER NOT NULL,
    skipped     INTEGER NOT NULL,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX schedules_due ON schedules (next_fire) WHERE paused = 0 AND next_fire IS NOT NULL;
"#,
    // Live jobs change state several times each (claim, finish, retry); an index over every
    // state was rewritten at each of them. Live states have their partial indexes already
    // (claim, due, running), so only ended jobs (for `clean`) and held ones need one.
    r#"
DROP INDEX jobs_state;
CREATE INDEX jobs_ended ON jobs (finished_at) WHERE state IN ('completed', 'failed', 'cancelled');
CREATE INDEX jobs_held ON jobs (id) WHERE state = 'held';
"#,
    // SQLite tests `x IN (a, b, c)` (more than two constants) against an ephemeral table it
    // builds and drops at every evaluation, and a partial index's condition is evaluated for
    // every row written: three such tables per job (its insert, and both sides of its finish).
    // The same conditions as comparisons cost nothing. Queries that use these indexes spell
    // the condition exactly alike (`LIVE_STATES`, `TERMINAL_STATES`), so the planner sees it.
    r#"
DROP INDEX jobs_ended;
CREATE INDEX jobs_ended ON jobs (finished_at)
    WHERE (state = 'completed' OR state = 'failed' OR state = 'cancelled');
DROP INDEX jobs_unique_live;
CREATE UNIQUE INDEX jobs_unique_live ON jobs (unique_key)
    WHERE unique_key IS NOT NULL
      AND (state = 'held' OR state = 'scheduled' OR state = 'queued' OR state = 'running');
"#,
    // Counting a queue's jobs by state scanned the whole table (ended jobs pile up until
    // `clean`, queued ones can be millions) at every queue stats call, health check and
    // metrics scrape. The counts are kept here instead, changed by every write that adds,
    // moves or removes jobs (see `StateCounts`), a row per queue and state per write.
    r#"
CREATE TABLE job_counts (
    queue   TEXT NOT NULL,
    state   TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;
INSERT INTO job_counts (queue, state, n)
    SELECT queue, state, count(*) FROM jobs GROUP BY queue, state;
"#,
    // Jobs written from here on keep their limits and retry policy in a compact text form
    // (see `columns`); rows written before keep their JSON, which is still read. The version
    // is raised so that an older binary, which reads JSON only, refuses the database.
    "SELECT 1;",
    // An attempt's job was a foreign key: every attempt recorded cost a lookup of its job,
    // about 4% of the writer's work per job, though the writer records an attempt only with
    // the guarded update of that very job. A trigger keeps what the key's cascade did:
    // deleting a job deletes its attempts.
    r#"
CREATE TABLE attempts_8 (
    job_id          TEXT NOT NULL,
    number          INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    trap_kind       TEXT,
    exit_code       INTEGER,
    message         TEXT,
    stderr          BLOB NOT NULL,
    stderr_truncated INTEGER NOT NULL,
    receipt         TEXT NOT NULL,
    worker          TEXT NOT NULL,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER NOT NULL,
    PRIMARY KEY (job_id, number)
) WITHOUT ROWID;
INSERT INTO attempts_8 SELECT * FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_8 RENAME TO attempts;
CREATE TRIGGER jobs_delete_attempts AFTER DELETE ON jobs
BEGIN
    DELETE FROM attempts WHERE job_id = old.id;
END;
"#,
];

const JOB_COLUMNS: &str = "id, task, digest, queue, state, input, args, env, priority, run_at, unique_key, \
    context, limits, retry, attempts, progress_done, progress_total, output, error_reason, error_message, \
    submitter, worker, created_at, started_at, finished_at, lease, lease_expires";
/// What a claim returns of each job: `JOB_COLUMNS` but those the claim sets itself (state,
/// queue, worker, start, lease, progress), which [`JobRow::claimed`] fills in. Copying the
/// returned columns out was a quarter of a claim's time in the writer.
const CLAIMED_COLUMNS: &str = "id, task, digest, input, args, env, priority, run_at, unique_key, \
    context, limits, retry, attempts, output, error_reason, error_message, submitter, created_at, \
    finished_at";

/// A live job, as `jobs_unique_live` says it (comparisons, not `IN`: see migration 5).
const LIVE_STATES: &str =
    "(state = 'held' OR state = 'scheduled' OR state = 'queued' OR state = 'running')";
/// Running jobs whose lease expired before `?1`. Read through `jobs_running`, a scan of the
/// running jobs only: the rescuer asks every second, and an `ORDER BY id` here made SQLite
/// scan the whole table in id order instead (sorted by the caller).
const EXPIRED_LEASES: &str = "state = 'running' AND lease_expires < ?1";
/// An ended job, as `jobs_ended` says it.
const TERMINAL_STATES: &str = "(state = 'completed' OR state = 'failed' OR state = 'cancelled')";
const MAX_BATCH: usize = 1024;
const READERS: usize = 4;
/// Rows one multi-row `INSERT` writes at most. A statement costs about as much to start and
/// end (a cursor on every index, a statement journal) as to write a few rows, so submitted
/// jobs and attempt records are inserted many rows per statement. Batches are cut into chunks
/// of power-of-two sizes, so only a few statement shapes are ever prepared and cached.
/// (An `UPDATE ... FROM (VALUES ...)` for many finished jobs measured no cheaper than one
/// guarded `UPDATE` each: SQLite stages such an update's rows in a temporary table.)
const ROWS_PER_STATEMENT: usize = 64;

/// The chunk sizes for `n` rows: powers of two, largest first, none above
/// `ROWS_PER_STATEMENT` (100 -> 64, 32, 4).
fn chunk_sizes(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = if n >= ROWS_PER_STATEMENT {
            ROWS_PER_STATEMENT
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        n -= size;
        Some(size)
    })
}

/// `items` cut as `chunk_sizes` says, one slice per statement.
fn statement_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    chunk_sizes(items.len()).map(move |size| {
        let (chunk, after) = rest.split_at(size);
        rest = after;
        chunk
    })
}

/// The SQL of one kind of multi-row statement for each chunk size, made once.
struct BatchSql {
    sizes: std::sync::OnceLock<Vec<String>>,
    make: fn(usize) -> String,
}

impl BatchSql {
    const fn new(make: fn(usize) -> String) -> Self {
        Self {
            sizes: std::sync::OnceLock::new(),
            make,
        }
    }

    /// The statement for `rows` rows, one of `chunk_sizes`.
    fn get(&self, rows: usize) -> &str {
        assert!(rows.is_power_of_two() && rows <= ROWS_PER_STATEMENT);
        let all = self.sizes.get_or_init(|| {
            (0..=ROWS_PER_STATEMENT.trailing_zeros())
                .map(|k| (self.make)(1 << k))
                .collect()
        });
        &all[rows.trailing_zeros() as usize]
    }
}

/// `(?2, ?3), (?4, ?5)` for `rows` rows of `width` placeholders, numbered from `first`.
fn values_rows(rows: usize, width: usize, first: usize) -> String {
    let mut sql = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("?{}", first + r * width + c));
        }
        sql.push(')');
    }
    sql
}

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

/// How a write runs inside the writer's transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// In a savepoint of its own, so its failure undoes only its own changes.
    Savepoint,
    /// Alone in the transaction: its failure rolls back the transaction instead. A savepoint
    /// copies every page it changes into a statement journal first; most transactions under
    /// load hold one or two writes, so this spares that copy for the lone ones.
    Alone,
}

/// One caller's write, run inside the writer's batch transaction.
enum WriteOp {
    /// Any write.
    Run {
        /// Must survive a power loss once acknowledged (fsync before answering). Claims,
        /// leases, progress and results need not: after a power loss the rescuer repairs what
        /// they left.
        durable: bool,
        run: RunWrite,
    },
    /// A submit (durable). The submits that meet in one transaction are inserted together,
    /// a few multi-row statements for all of them, instead of a write each: concurrent single
    /// submits are a server's usual load.
    Insert {
        jobs: Vec<EncodedJob>,
        reply: tokio::sync::oneshot::Sender<StoreResult<Vec<Inserted>>>,
    },
}

/// Runs a write; says whether it succeeded, and how to answer its caller once the transaction
/// has ended.
type RunWrite = Box<dyn FnOnce(&Connection, Isolation) -> (bool, Completion) + Send>;

/// The SQLite job store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    readers: Mutex<Vec<Connection>>,
    lease_seq: AtomicI64,
    parking: Arc<Parking>,
}

/// Claims left with the writer ([`Store::park_claim`]) until a submit queues a job in one of
/// their queues. The lock decides who owns a parked claim: the writer takes it out to run it
/// (and then always answers), or its caller takes it back before that.
#[derive(Default)]
struct Parking {
    next_ticket: AtomicU64,
    claims: Mutex<Vec<Parked>>,
}

struct Parked {
    ticket: u64,
    claim: StandingClaim,
    token: i64,
    reply: tokio::sync::oneshot::Sender<StoreResult<Vec<(QueueName, RawClaim)>>>,
}

impl Parking {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Parked>> {
        self.claims.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any claim is parked.
    fn any(&self) -> bool {
        !self.lock().is_empty()
    }

    /// Takes out the claims on any of `queues`, dropping those whose caller is gone.
    fn take_for(&self, queues: &[&str]) -> Vec<Parked> {
        let mut claims = self.lock();
        if claims.is_empty() {
            return Vec::new();
        }
        let (taken, kept): (Vec<_>, Vec<_>) = claims
            .drain(..)
            .filter(|p| !p.reply.is_closed())
            .partition(|p| p.claim.queues.iter().any(|q| queues.contains(&q.as_str())));
        *claims = kept;
        taken
    }

    /// Takes back a claim that has not run; false if the writer has it.
    fn remove(&self, ticket: u64) -> bool {
        let mut claims = self.lock();
        match claims.iter().position(|p| p.ticket == ticket) {
            Some(i) => {
                claims.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

/// Takes a parked claim back when its answer is dropped unanswered.
struct Unpark {
    parking: Arc<Parking>,
    ticket: u64,
}

impl Drop for Unpark {
    fn drop(&mut self) {
        self.parking.remove(self.ticket);
    }
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

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
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

/// A reader's page cache, in KiB. It is dropped at the first read after each commit, so under
/// load it holds one read's pages; when nothing is written it keeps the pages of repeated
/// reads.
const READER_CACHE_KIB: u32 = 2_048;

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

fn migrate(conn: &mut Connection, path: &Path) -> StoreResult<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found: version,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction().map_err(db)?;
        tx.execute_batch(sql).map_err(db)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating) the database file and applies pending migrations.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let mut writer_conn = open_connection(&path)?;

        migrate(&mut writer_conn, &path)?;
        let readers = (0..READERS)
            .map(|_| open_reader(&path))
            .collect::<StoreResult<Vec<_>>>()?;
        // The writer leaves checkpointing (copying the log into the database file) to a
        // thread of its own, so commits do not wait for it, and finishes only the last short
        // stretch itself (see `Checkpoints`). Its commits do not fsync the log: the syncer
        // does, for the writes that need it (see `log_syncer`).
        writer_conn
            .execute_batch(&format!(
                "PRAGMA wal_autocheckpoint = 0; \
                 PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA synchronous = NORMAL;"
            ))
            .map_err(db)?;
        let progress = Arc::new(Checkpoints::default());
        let frames = progress.clone();
        writer_conn
            .wal_hook(Some(
                move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
                    frames.committed(pages);
                    Ok(())
                },
            ))
            .map_err(db)?;
        let checkpoint_conn = open_connection(&path)?;
        let (wake_checkpointer, checkpoints) = mpsc::sync_channel::<()>(1);
        let passes = progress.clone();
        thread::Builder::new()
            .name("remotask-sqlite-checkpoint".into())
            .spawn(move || checkpointer(checkpoint_conn, checkpoints, &passes))
            .map_err(|e| {
                StoreError::Database(format!("cannot start the checkpoint thread: {e}"))
            })?;
        let (tx, rx) = mpsc::channel::<WriteOp>();
        let parking = Arc::new(Parking::default());
        let riders = parking.clone();
        let (to_sync, syncs) = mpsc::channel::<Vec<Completion>>();
        let log = wal_path(&path)?;
        thread::Builder::new()
            .name("remotask-sqlite-sync".into())
            .spawn(move || log_syncer(&log, &syncs))
            .map_err(|e| StoreError::Database(format!("cannot start the sync thread: {e}")))?;
        thread::Builder::new()
            .name("remotask-sqlite-writer".into())
            .spawn(move || {
                let checkpoints = Checkpointing {
                    log: &progress,
                    wake: wake_checkpointer,
                };
                writer_loop(writer_conn, rx, checkpoints, &riders, to_sync)
            })
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        let seed =
            std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), std::process::id())
                as i64;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(Some(tx)),
                readers: Mutex::new(readers),
                lease_seq: AtomicI64::new(seed & 0x3fff_ffff_0000_0000),
                parking,
            }),
        })
    }

    /// Runs `f` in the writer's current transaction (inside its own savepoint, so its failure
    /// undoes only its own changes); resolves after the transaction committed.
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
            let done: Completion = Box::new(move |committed: Result<(), String>| {
                let _ = tx.send(committed.map_err(StoreError::Database).and(result));
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
        answer.await.map_err(|_| {
            StoreError::Database(
                "the write was not applied: no transaction could be started".into(),
            )
        })?
    }

    /// Runs `f` on a read connection, on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_reader(f))
            .await
            .map_err(|e| StoreError::Database(format!("read task failed: {e}")))?
    }

    /// A read of a few rows by key, run on the calling thread: handing it to a blocking
    /// thread and back costs more than the read itself (the pages are mapped and hot).
    fn read_point<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        self.inner.with_reader(f)
    }

    fn next_lease_token(&self) -> i64 {
        self.inner.lease_seq.fetch_add(1, Ordering::Relaxed)
    }
}

/// Runs one statement without parameters from the statement cache: transaction control runs
/// several times per batch, and parsing it each time shows in profiles.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs `f` in a savepoint: if it fails, its changes are undone and the transaction goes on.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    exec(conn, "SAVEPOINT op").map_err(db)?;
    let r = f(conn);
    let end = if r.is_ok() {
        exec(conn, "RELEASE op")
    } else {
        exec(conn, "ROLLBACK TO op").and_then(|()| exec(conn, "RELEASE op"))
    };
    end.map_err(db)?;
    r
}

/// The writer's page cache, in KiB: small on purpose. When a b-tree page splits, SQLite
/// renumbers the new pages through a spare page number far past the end of the file (the
/// lock page), and at the end of that transaction its page cache then walks its whole hash
/// table to drop pages past the end. With 32 MiB of cache that walk was 7% of the writer's
/// time; the writer's working set (the right edges and upper levels of its b-trees) fits in
/// far less, and pages it misses are read back from the operating system's cache.
const WRITER_CACHE_KIB: u32 = 2_048;

/// Commits between two checkpoints at most (a commit writes a few dozen pages to the log).
const CHECKPOINT_EVERY_COMMITS: u32 = 64;
/// Pages written to the log and not yet copied that wake the checkpointer early.
const CHECKPOINT_EVERY_PAGES: u32 = 256;
/// From this many pages (16 MiB), the log is started over: the writer copies what the
/// checkpointer has not yet, and its next commit writes the log from the start. A log that
/// kept growing would make every durable commit extend the file, and an fsync that changes
/// a file's size costs about twice one that does not.
const LOG_RESTART_PAGES: u32 = 4_096;
/// The writer's share of a restart: it waits for the checkpointer to have copied all but this
/// many pages of the log, so its own copy and fsync stay short...
const WRITER_COPIES_PAGES: u32 = 256;
/// ...unless the log reaches this size (64 MiB), when it copies everything left itself.
const LOG_MAX_PAGES: u32 = 16_384;

/// What the writer and the checkpointer know of the log, to share the checkpointing.
///
/// Only a checkpoint that copied the whole log lets the next commit start it over, and under
/// steady writes the checkpointer's passes never catch up with the last commit. Left to
/// SQLite's automatic checkpoint, the writer copied everything the checkpointer had not at
/// 16 MiB and fsynced the database file, 25-40 ms in which no write was made. Now the writer
/// checkpoints only right after a pass, when the checkpointer's copy is nearly complete.
#[derive(Default)]
struct Checkpoints {
    /// Pages in the log after the writer's last commit (SQLite's WAL hook).
    log: std::sync::atomic::AtomicU32,
    /// The checkpointer's last pass: the log's pages when it began (high half) and how many
    /// of them are copied into the database file (low half).
    pass: AtomicU64,
}

impl Checkpoints {
    fn committed(&self, pages: std::ffi::c_int) {
        self.log
            .store(u32::try_from(pages).unwrap_or(0), Ordering::Relaxed);
    }

    fn passed(&self, log: i64, copied: i64) {
        let (Ok(log), Ok(copied)) = (u32::try_from(log), u32::try_from(copied)) else {
            return; // -1 and -1: the pass did not run
        };
        self.pass
            .store(u64::from(log) << 32 | u64::from(copied), Ordering::Relaxed);
    }

    /// The log's pages, and how many of them the checkpointer has copied.
    fn state(&self) -> (u32, u32) {
        let log = self.log.load(Ordering::Relaxed);
        let pass = self.pass.load(Ordering::Relaxed);
        let (pass_log, copied) = ((pass >> 32) as u32, pass as u32);
        // A pass over a longer log was over the log before it started over.
        (log, if pass_log <= log { copied } else { 0 })
    }
}

/// What the writer does about the log after a commit.
#[derive(Debug, PartialEq)]
enum LogStep {
    Nothing,
    /// Wake the checkpointer.
    Ask,
    /// Copy the rest of the log itself, so the next commit starts it over.
    Restart,
}

/// Decides [`LogStep`] from the log's pages, how many of them are copied, the log's pages at
/// the writer's own last checkpoint and the commits since the checkpointer was last woken.
fn log_step(log: u32, copied: u32, own_at: u32, commits: u32) -> LogStep {
    let left = log.saturating_sub(copied);
    // Started over since: the writer's last checkpoint was of the log before.
    let since_own = if own_at <= log { log - own_at } else { log };
    let restart = log >= LOG_RESTART_PAGES
        && (left <= WRITER_COPIES_PAGES || log >= LOG_MAX_PAGES)
        && since_own >= WRITER_COPIES_PAGES;
    if restart {
        LogStep::Restart
    } else if left >= CHECKPOINT_EVERY_PAGES || (left > 0 && commits >= CHECKPOINT_EVERY_COMMITS) {
        LogStep::Ask
    } else {
        LogStep::Nothing
    }
}

/// The writer's side of [`Checkpoints`].
struct Checkpointing<'a> {
    log: &'a Checkpoints,
    wake: mpsc::SyncSender<()>,
}

/// The write-ahead log of the database at `path`, as SQLite names it.
fn wal_path(path: &Path) -> StoreResult<PathBuf> {
    let full = std::fs::canonicalize(path)
        .map_err(|e| StoreError::Database(format!("cannot resolve {}: {e}", path.display())))?;
    let mut name = full.into_os_string();
    name.push("-wal");
    Ok(PathBuf::from(name))
}

/// Makes committed transactions durable: fsyncs the log, then answers the durable writes
/// that were waiting for it. One fsync answers every write committed before it began, so
/// the writes that queue up meanwhile share the next one. The writer commits with
/// `synchronous = NORMAL` and never waits here.
///
/// The log file is the one SQLite writes: the writer's connection stays open, and SQLite
/// removes the log only when its last connection closes. A log not seen before also gets its
/// directory entry synced, as SQLite does for a new log.
fn log_syncer(log: &Path, waiting: &mpsc::Receiver<Vec<Completion>>) {
    let mut file: Option<(std::fs::File, u64)> = None;
    while let Ok(mut done) = waiting.recv() {
        while let Ok(more) = waiting.try_recv() {
            done.extend(more);
        }
        let synced = sync_log(log, &mut file).map_err(|e| {
            file = None;
            format!(
                "the write is committed, but the log {} could not be synced, so it may not \
                 survive a power loss: {e}",
                log.display()
            )
        });
        for d in done {
            d(synced.clone());
        }
    }
}

fn sync_log(log: &Path, file: &mut Option<(std::fs::File, u64)>) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let current = std::fs::metadata(log)?.ino();
    if let Some((f, ino)) = file
        && *ino == current
    {
        return f.sync_data();
    }
    let f = std::fs::File::open(log)?;
    let ino = f.metadata()?.ino();
    f.sync_data()?;
    if let Some(dir) = log.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    *file = Some((f, ino));
    Ok(())
}

/// Copies the log into the database file when the writer asks, without blocking it (a
/// passive checkpoint takes no write lock), and tells it how far it got. Ends when the
/// writer does.
fn checkpointer(conn: Connection, asks: mpsc::Receiver<()>, log: &Checkpoints) {
    while asks.recv().is_ok() {
        match passive_checkpoint(&conn) {
            Ok((pages, copied)) => log.passed(pages, copied),
            Err(e) => {
                eprintln!("remotask: checkpoint failed, retried after the next commits: {e}");
            }
        }
    }
}

/// Copies what it can of the log into the database file: the log's pages and how many of
/// them are copied (-1 and -1 if another checkpoint was running).
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<WriteOp>,
    checkpoints: Checkpointing<'_>,
    parking: &Parking,
    syncer: mpsc::Sender<Vec<Completion>>,
) {
    let mut commits = 0u32;
    let mut own_at = 0u32;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if exec(&conn, "BEGIN IMMEDIATE").is_err() {
            // Nothing ran; dropping the ops tells their callers the write was not applied.
            drop(batch);
            continue;
        }
        let mut runs = Vec::with_capacity(batch.len());
        let mut inserts = Vec::new();
        // Queues that this transaction's submits give queued jobs, for parked claims (looked
        // for only if a claim is parked: a claim parked later waits for the submit's wake-up).
        let mut queued_in: Vec<String> = Vec::new();
        let riding = parking.any();
        for op in batch {
            match op {
                WriteOp::Run { durable, run } => runs.push((durable, run)),
                WriteOp::Insert { jobs, reply } => {
                    if riding {
                        let queued = jobs.iter().filter(|j| j.state == JobState::Queued);
                        for job in queued {
                            if !queued_in.contains(&job.queue) {
                                queued_in.push(job.queue.clone());
                            }
                        }
                    }
                    inserts.push((jobs, reply));
                }
            }
        }
        let writes = runs.len() + usize::from(!inserts.is_empty());
        let isolation = if writes == 1 {
            Isolation::Alone
        } else {
            Isolation::Savepoint
        };
        let mut failed_alone = false;
        // Each with whether it must wait for the log's fsync.
        let mut completions: Vec<(bool, Completion)> = Vec::with_capacity(writes);
        if !inserts.is_empty() {
            let (ok, done) = insert_together(&conn, inserts, isolation);
            failed_alone |= !ok;
            completions.push((true, done));
        }
        for (durable, run) in runs {
            let (ok, done) = run(&conn, isolation);
            failed_alone |= !ok && isolation == Isolation::Alone;
            completions.push((durable, done));
        }
        let mut riders: Vec<Completion> = Vec::new();
        if !failed_alone && !queued_in.is_empty() {
            let queues: Vec<&str> = queued_in.iter().map(String::as_str).collect();
            riders = parking
                .take_for(&queues)
                .into_iter()
                .map(|parked| ride(&conn, parked, &queues))
                .collect();
        }
        let committed = if failed_alone {
            // Its caller gets its own error; nothing else was in the transaction.
            let _ = exec(&conn, "ROLLBACK");
            Ok(())
        } else {
            commit(&conn)
        };
        // The commit wrote the log without an fsync. The durable writes are answered after
        // the syncer's fsync of the log, the others at once; this thread goes on with the
        // next transaction meanwhile. The syncer is told first: its fsync is the longest wait.
        // Then parked claims that ran: a worker waits for their jobs.
        let (durable, volatile): (Vec<_>, Vec<_>) = completions
            .into_iter()
            .partition(|(needs_sync, _)| *needs_sync && !failed_alone && committed.is_ok());
        if !durable.is_empty() {
            let durable = durable.into_iter().map(|(_, done)| done).collect();
            if let Err(mpsc::SendError(unsynced)) = syncer.send(durable) {
                for done in unsynced {
                    done(Err(
                        "the log cannot be synced: its thread stopped".to_owned()
                    ));
                }
            }
        }
        for done in riders {
            done(committed.clone());
        }
        for (_, done) in volatile {
            done(committed.clone());
        }
        commits += 1;
        let (log, copied) = checkpoints.log.state();
        match log_step(log, copied, own_at, commits) {
            LogStep::Nothing => {}
            LogStep::Ask => {
                // A full channel means a checkpoint is asked for already.
                let _ = checkpoints.wake.try_send(());
                commits = 0;
            }
            LogStep::Restart => match passive_checkpoint(&conn) {
                // Busy: the checkpointer is copying; after its pass, little is left.
                Ok((-1, _)) => {}
                Ok((pages, copied)) => {
                    checkpoints.log.passed(pages, copied);
                    own_at = log;
                }
                Err(e) => {
                    eprintln!("remotask: checkpoint failed, retried after the next commits: {e}");
                    own_at = log;
                }
            },
        }
    }
}

/// The submits of one transaction, inserted together. If that fails, each is tried on its
/// own, so only a failing submit gets an error and leaves nothing. Says whether the
/// transaction may commit (false only when a lone submit failed and nothing else is in it).
fn insert_together(
    conn: &Connection,
    mut submits: Vec<InsertOp>,
    isolation: Isolation,
) -> (bool, Completion) {
    let (results, replies, ok): (Vec<StoreResult<Vec<Inserted>>>, Vec<_>, bool) =
        if submits.len() == 1 {
            let (jobs, reply) = submits.pop().expect("one submit");
            let result = match isolation {
                Isolation::Alone => insert_all(conn, &jobs),
                Isolation::Savepoint => in_savepoint(conn, |c| insert_all(c, &jobs)),
            };
            let ok = result.is_ok() || isolation == Isolation::Savepoint;
            (vec![result], vec![reply], ok)
        } else {
            let (jobs, replies): (Vec<Vec<EncodedJob>>, Vec<_>) = submits.into_iter().unzip();
            let lens: Vec<usize> = jobs.iter().map(Vec::len).collect();
            let all: Vec<EncodedJob> = jobs.into_iter().flatten().collect();
            let results = match in_savepoint(conn, |c| insert_all(c, &all)) {
                Ok(mut inserted) => lens
                    .iter()
                    .map(|&n| Ok(inserted.drain(..n).collect()))
                    .collect(),
                Err(_) => {
                    let mut rest = all.as_slice();
                    lens.iter()
                        .map(|&n| {
                            let (own, after) = rest.split_at(n);
                            rest = after;
                            in_savepoint(conn, |c| insert_all(c, own))
                        })
                        .collect()
                }
            };
            (results, replies, true)
        };
    let done: Completion = Box::new(move |committed: Result<(), String>| {
        for (reply, result) in replies.into_iter().zip(results) {
            let answer = committed.clone().map_err(StoreError::Database).and(result);
            let _ = reply.send(answer);
        }
    });
    (ok, done)
}

/// A submit's jobs and where to answer it.
type InsertOp = (
    Vec<EncodedJob>,
    tokio::sync::oneshot::Sender<StoreResult<Vec<Inserted>>>,
);

/// Commits the writer's transaction, rolling it back if the commit fails.
fn commit(conn: &Connection) -> Result<(), String> {
    let committed = exec(conn, "COMMIT").map_err(|e| e.to_string());
    if committed.is_err() {
        let _ = exec(conn, "ROLLBACK");
    }
    committed
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

fn parse_json<T: serde::de::DeserializeOwned>(table: &'static str, s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| corrupt(table, format!("{e}: {s}")))
}

/// A job row as stored, copied out of SQLite but not decoded: the writer thread returns these
/// and the caller decodes them (ids, names, JSON columns) on its own thread.
struct JobRow {
    text: [String; 5],
    input: Vec<u8>,
    json: [String; 4],
    priority: i32,
    run_at: i64,
    unique_key: Option<String>,
    context: Option<String>,
    attempts: u32,
    progress: (Option<i64>, Option<i64>),
    output: Option<Vec<u8>>,
    error: (Option<String>, Option<String>),
    submitter: Option<String>,
    worker: Option<String>,
    times: (i64, Option<i64>, Option<i64>),
    lease: (Option<i64>, Option<i64>),
}

impl JobRow {
    /// Reads a row of `JOB_COLUMNS`.
    fn read(row: &Row<'_>) -> StoreResult<Self> {
        let s = |i: usize| -> StoreResult<String> { row.get::<_, String>(i).map_err(db) };
        Ok(Self {
            text: [s(0)?, s(1)?, s(2)?, s(3)?, s(4)?],
            input: row.get(5).map_err(db)?,
            json: [s(6)?, s(7)?, s(12)?, s(13)?],
            priority: row.get(8).map_err(db)?,
            run_at: row.get(9).map_err(db)?,
            unique_key: row.get(10).map_err(db)?,
            context: row.get(11).map_err(db)?,
            attempts: row.get(14).map_err(db)?,
            progress: (row.get(15).map_err(db)?, row.get(16).map_err(db)?),
            output: row.get(17).map_err(db)?,
            error: (row.get(18).map_err(db)?, row.get(19).map_err(db)?),
            submitter: row.get(20).map_err(db)?,
            worker: row.get(21).map_err(db)?,
            times: (
                row.get(22).map_err(db)?,
                row.get(23).map_err(db)?,
                row.get(24).map_err(db)?,
            ),
            lease: (row.get(25).map_err(db)?, row.get(26).map_err(db)?),
        })
    }

    /// Reads a row of `CLAIMED_COLUMNS` of a job that `claim` just took, `expires` its lease's
    /// end.
    fn claimed(row: &Row<'_>, claim: &ClaimOf<'_>, expires: i64) -> StoreResult<Self> {
        let s = |i: usize| -> StoreResult<String> { row.get::<_, String>(i).map_err(db) };
        Ok(Self {
            text: [
                s(0)?,
                s(1)?,
                s(2)?,
                claim.queue.to_string(),
                JobState::Running.as_str().to_owned(),
            ],
            input: row.get(3).map_err(db)?,
            json: [s(4)?, s(5)?, s(10)?, s(11)?],
            priority: row.get(6).map_err(db)?,
            run_at: row.get(7).map_err(db)?,
            unique_key: row.get(8).map_err(db)?,
            context: row.get(9).map_err(db)?,
            attempts: row.get(12).map_err(db)?,
            progress: (None, None),
            output: row.get(13).map_err(db)?,
            error: (row.get(14).map_err(db)?, row.get(15).map_err(db)?),
            submitter: row.get(16).map_err(db)?,
            worker: Some(claim.worker.to_owned()),
            times: (
                row.get(17).map_err(db)?,
                Some(claim.now.0),
                row.get(18).map_err(db)?,
            ),
            lease: (Some(claim.token), Some(expires)),
        })
    }

    /// The job and its lease, reusing `parsed` for JSON columns equal to the previous row's.
    fn decode_with(self, parsed: &mut Parsed) -> StoreResult<(Job, Option<Lease>)> {
        let [id, task, digest, queue, state] = self.text;
        let [args, env, limits, retry] = self.json;
        let error = match self.error {
            (Some(reason), message) => Some(JobError {
                reason: reason.parse().map_err(|e| corrupt("jobs", e))?,
                message: message.unwrap_or_default(),
            }),
            (None, _) => None,
        };
        let progress = match self.progress {
            (Some(d), Some(t)) => Some((d, t)),
            _ => None,
        };
        let lease = match self.lease {
            (Some(token), Some(exp)) => Some(Lease {
                token,
                expires_at: Timestamp(exp),
            }),
            _ => None,
        };
        let job = Job {
            id: id.parse().map_err(|e| corrupt("jobs", e))?,
            task: task.parse().map_err(|e| corrupt("jobs", e))?,
            digest: digest.parse().map_err(|e| corrupt("jobs", e))?,
            queue: queue.parse().map_err(|e| corrupt("jobs", e))?,
            state: state.parse().map_err(|e| corrupt("jobs", e))?,
            input: self.input,
            args: parse_json("jobs", &args)?,
            env: parse_json("jobs", &env)?,
            priority: self.priority,
            run_at: Timestamp(self.run_at),
            unique_key: self.unique_key,
            context: self.context,
            limits: parsed_again(&mut parsed.limits, limits, columns::parse_limits)?,
            retry: parsed_again(&mut parsed.retry, retry, columns::parse_retry)?,
            attempts: self.attempts,
            progress,
            output: self.output,
            error,
            submitter: self.submitter,
            worker: self.worker,
            created_at: Timestamp(self.times.0),
            started_at: self.times.1.map(Timestamp),
            finished_at: self.times.2.map(Timestamp),
        };
        Ok((job, lease))
    }
}

/// The limits and retry policy of the last row decoded, as text and parsed: the jobs of one
/// claim mostly share them, and parsing them (as JSON, then) was most of a claimed row's
/// decoding.
#[derive(Default)]
struct Parsed {
    limits: Option<(String, Limits)>,
    retry: Option<(String, RetryPolicy)>,
}

/// `text` parsed, or the value kept in `last` if it was parsed from the same text.
fn parsed_again<T: Clone>(
    last: &mut Option<(String, T)>,
    text: String,
    parse: fn(&str) -> Result<T, String>,
) -> StoreResult<T> {
    if let Some((seen, value)) = last
        && *seen == text
    {
        return Ok(value.clone());
    }
    let value = parse(&text).map_err(|e| corrupt("jobs", format!("{e}: {text}")))?;
    *last = Some((text, value.clone()));
    Ok(value)
}

fn query_jobs(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<(Job, Option<Lease>)>> {
    let mut parsed = Parsed::default();
    query_job_rows(conn, sql, params)?
        .into_iter()
        .map(|row| row.decode_with(&mut parsed))
        .collect()
}

/// The rows of a statement selecting `JOB_COLUMNS`, not decoded yet (see `JobRow`).
fn query_job_rows(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<JobRow>> {
    query_rows(conn, sql, params, JobRow::read)
}

/// The rows of a (cached) statement, each copied out by `read`.
fn query_rows(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    mut read: impl FnMut(&Row<'_>) -> StoreResult<JobRow>,
) -> StoreResult<Vec<JobRow>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        out.push(read(row)?);
    }
    Ok(out)
}

fn load_task(conn: &Connection, name: &str) -> StoreResult<Option<TaskRecord>> {
    let row = conn
        .prepare_cached("SELECT name, digest, defaults, updated_at FROM tasks WHERE name = ?1")
        .map_err(db)?
        .query_row([name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()
        .map_err(db)?;
    let Some((name, digest, defaults, updated_at)) = row else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare_cached("SELECT digest, size_bytes, created_at FROM task_versions WHERE name = ?1 ORDER BY created_at DESC, digest")
        .map_err(db)?;
    let versions = stmt
        .query_map([&name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(db)?
        .map(|v| {
            let (d, size, at) = v.map_err(db)?;
            Ok(TaskVersion {
                digest: d.parse().map_err(|e| corrupt("task_versions", e))?,
                size_bytes: size as u64,
                created_at: Timestamp(at),
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Some(TaskRecord {
        name: name.parse().map_err(|e| corrupt("tasks", e))?,
        digest: digest.parse().map_err(|e| corrupt("tasks", e))?,
        defaults: parse_json::<TaskDefaults>("tasks", &defaults)?,
        versions,
        updated_at: Timestamp(updated_at),
    }))
}

/// Stores jobs, returning the live job instead for a unique key already held.
/// A new job with its text columns encoded, so a submit's writer transaction only binds them.
struct EncodedJob {
    job: NewJob,
    id: String,
    task: String,
    queue: String,
    state: JobState,
    state_text: &'static str,
    run_at: i64,
    digest: String,
    args: String,
    env: String,
    limits: String,
    retry: String,
}

impl EncodedJob {
    fn new(job: NewJob) -> Self {
        Self {
            id: job.id.to_string(),
            task: job.task.to_string(),
            queue: job.queue.to_string(),
            state: job.state(),
            state_text: job.state().as_str(),
            run_at: job.run_at().0,
            digest: job.digest.to_hex(),
            args: json(&job.args),
            env: json(&job.env),
            limits: columns::limits_text(&job.limits),
            retry: columns::retry_text(&job.retry),
            job,
        }
    }
}

fn insert_all(conn: &Connection, jobs: &[EncodedJob]) -> StoreResult<Vec<Inserted>> {
    let mut out = Vec::with_capacity(jobs.len());
    let mut queues_seen: Vec<QueueName> = Vec::new();
    for job in jobs {
        if !queues_seen.contains(&job.job.queue) {
            ensure_queue(conn, &job.job.queue)?;
            queues_seen.push(job.job.queue.clone());
        }
    }
    // A job with a unique key may meet an earlier one (of this batch too), so it is looked up
    // and written on its own; runs of jobs between them are written many rows per statement.
    let mut counts = StateCounts::default();
    let mut rest = jobs;
    while !rest.is_empty() {
        let plain = rest
            .iter()
            .take_while(|j| j.job.unique_key.is_none())
            .count();
        if plain == 0 {
            let inserted = insert_unique(conn, &rest[0])?;
            if let Inserted::New(_) = inserted {
                counts.add(rest[0].job.queue.as_str(), rest[0].state, 1);
            }
            out.push(inserted);
            rest = &rest[1..];
            continue;
        }
        let (run, after) = rest.split_at(plain);
        for chunk in statement_chunks(run) {
            insert_rows(conn, chunk)?;
        }
        for j in run {
            counts.add(j.job.queue.as_str(), j.state, 1);
            out.push(Inserted::New(j.job.id));
        }
        rest = after;
    }
    counts.write(conn)?;
    Ok(out)
}

const INSERT_JOB: &str = "INSERT INTO jobs (id, task, digest, queue, state, input, args, env, priority, \
     run_at, unique_key, context, limits, retry, submitter, created_at) VALUES ";
const INSERT_JOB_WIDTH: usize = 16;

/// Inserts `jobs` in one statement.
fn insert_rows(conn: &Connection, jobs: &[EncodedJob]) -> StoreResult<()> {
    static SQL: BatchSql =
        BatchSql::new(|rows| format!("{INSERT_JOB}{}", values_rows(rows, INSERT_JOB_WIDTH, 1)));
    let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(jobs.len() * INSERT_JOB_WIDTH);
    for encoded in jobs {
        params.extend(job_params(encoded));
    }
    conn.prepare_cached(SQL.get(jobs.len()))
        .map_err(db)?
        .execute(params.as_slice())
        .map_err(db)?;
    Ok(())
}

/// The values of one job row, in `INSERT_JOB`'s column order.
fn job_params(encoded: &EncodedJob) -> [&dyn rusqlite::ToSql; INSERT_JOB_WIDTH] {
    let job = &encoded.job;
    [
        &encoded.id,
        &encoded.task,
        &encoded.digest,
        &encoded.queue,
        &encoded.state_text,
        &job.input,
        &encoded.args,
        &encoded.env,
        &job.priority,
        &encoded.run_at,
        &job.unique_key,
        &job.context,
        &encoded.limits,
        &encoded.retry,
        &job.submitter,
        &job.created_at.0,
    ]
}

/// Stores a job with a unique key, or returns the live job that holds the key.
fn insert_unique(conn: &Connection, encoded: &EncodedJob) -> StoreResult<Inserted> {
    if let Some(key) = &encoded.job.unique_key {
        let existing: Option<String> = conn
            .prepare_cached(&format!(
                "SELECT id FROM jobs WHERE unique_key = ?1 AND {LIVE_STATES}"
            ))
            .map_err(db)?
            .query_row([key], |r| r.get(0))
            .optional()
            .map_err(db)?;
        if let Some(id) = existing {
            return Ok(Inserted::Existing(
                id.parse().map_err(|e| corrupt("jobs", e))?,
            ));
        }
    }
    insert_rows(conn, std::slice::from_ref(encoded))?;
    Ok(Inserted::New(encoded.job.id))
}

const SCHEDULE_COLUMNS: &str = "name, spec, job, overlap, catch_up, paused, next_fire, last_fire, \
     last_job, fires, skipped, last_error, created_at, updated_at";

fn query_schedules(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<ScheduleRecord>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(db)? {
        let text = |i: usize| -> StoreResult<String> { r.get(i).map_err(db) };
        let opt_ts = |i: usize| -> StoreResult<Option<Timestamp>> {
            Ok(r.get::<_, Option<i64>>(i).map_err(db)?.map(Timestamp))
        };
        let last_job: Option<String> = r.get(8).map_err(db)?;
        out.push(ScheduleRecord {
            name: text(0)?.parse().map_err(|e| corrupt("schedules", e))?,
            spec: parse_json("schedules", &text(1)?)?,
            job: parse_json("schedules", &text(2)?)?,
            overlap: parse_json("schedules", &text(3)?)?,
            catch_up: parse_json("schedules", &text(4)?)?,
            paused: r.get(5).map_err(db)?,
            next_fire: opt_ts(6)?,
            last_fire: opt_ts(7)?,
            last_job: last_job
                .map(|j| j.parse().map_err(|e| corrupt("schedules", e)))
                .transpose()?,
            fires: r.get::<_, i64>(9).map_err(db)? as u64,
            skipped: r.get::<_, i64>(10).map_err(db)? as u64,
            last_error: r.get(11).map_err(db)?,
            created_at: Timestamp(r.get(12).map_err(db)?),
            updated_at: Timestamp(r.get(13).map_err(db)?),
        });
    }
    Ok(out)
}

fn ensure_queue(conn: &Connection, name: &QueueName) -> StoreResult<()> {
    let config = QueueConfig::with_defaults(name.clone());
    conn.prepare_cached(
        "INSERT OR IGNORE INTO queues (name, concurrency, default_limits, caps, paused) VALUES (?1, ?2, ?3, ?4, 0)",
    )
    .map_err(db)?
    .execute(params![name.as_str(), config.concurrency, json(&config.default_limits), json(&config.caps)])
    .map_err(db)?;
    Ok(())
}

fn load_queue(conn: &Connection, name: &str) -> StoreResult<Option<QueueStats>> {
    let row = conn
        .prepare_cached(
            "SELECT name, concurrency, default_limits, caps, paused FROM queues WHERE name = ?1",
        )
        .map_err(db)?
        .query_row([name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, bool>(4)?,
            ))
        })
        .optional()
        .map_err(db)?;
    let Some((name, concurrency, default_limits, caps, paused)) = row else {
        return Ok(None);
    };
    let mut counts: BTreeMap<JobState, u64> = JobState::ALL.into_iter().map(|s| (s, 0)).collect();
    let mut stmt = conn
        .prepare_cached("SELECT state, n FROM job_counts WHERE queue = ?1")
        .map_err(db)?;
    let rows = stmt
        .query_map([&name], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(db)?;
    for row in rows {
        let (state, n) = row.map_err(db)?;
        let state: JobState = state.parse().map_err(|e| corrupt("job_counts", e))?;
        counts.insert(state, n.max(0) as u64);
    }
    Ok(Some(QueueStats {
        config: QueueConfig {
            name: name.parse().map_err(|e| corrupt("queues", e))?,
            concurrency,
            default_limits: parse_json("queues", &default_limits)?,
            caps: parse_json("queues", &caps)?,
        },
        paused,
        counts,
    }))
}

/// An attempt's end with its text columns encoded before it goes to the writer thread, which
/// is the store's bottleneck.
struct EncodedEnd {
    end: AttemptEnd,
    key: String,
    limits: Option<String>,
    attempt: Option<EncodedAttempt>,
}

/// The encoded columns of an attempt record.
struct EncodedAttempt {
    receipt: String,
    reason: &'static str,
    trap_kind: Option<&'static str>,
}

impl EncodedEnd {
    fn new(end: AttemptEnd) -> Self {
        let limits = match &end.finish {
            Finish::Retry { limits, .. } => Some(columns::limits_text(limits)),
            _ => None,
        };
        Self {
            key: end.id.to_string(),
            limits,
            attempt: end.attempt.as_ref().map(|a| EncodedAttempt {
                receipt: a.receipt.to_string(),
                reason: a.reason.as_str(),
                trap_kind: a.trap_kind.map(|k| k.as_str()),
            }),
            end,
        }
    }
}

/// A job's queue and state.
fn job_queue_and_state(conn: &Connection, key: &str) -> StoreResult<Option<(String, JobState)>> {
    let row: Option<(String, String)> = conn
        .prepare_cached("SELECT queue, state FROM jobs WHERE id = ?1")
        .map_err(db)?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db)?;
    row.map(|(queue, state)| Ok((queue, state.parse().map_err(|e| corrupt("jobs", e))?)))
        .transpose()
}

/// Makes due `scheduled` jobs (of every queue) `queued`; returns their id, task and queue.
fn promote_due(conn: &Connection, now: Timestamp) -> StoreResult<Vec<(String, String, String)>> {
    conn.prepare_cached(
        "UPDATE jobs SET state = 'queued' WHERE state = 'scheduled' AND run_at <= ?1 \
         RETURNING id, task, queue",
    )
    .map_err(db)?
    .query_map([now.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    .map_err(db)?
    .collect::<Result<Vec<_>, _>>()
    .map_err(db)
}

/// A claim as the writer took it, decoded by its caller off the writer thread.
struct RawClaim {
    rows: Vec<JobRow>,
    lease: Lease,
    at_concurrency: bool,
    promoted: Vec<(String, String, String)>,
}

impl RawClaim {
    fn decode(self) -> StoreResult<Claims> {
        let promoted = self
            .promoted
            .into_iter()
            .map(|(id, task, queue)| {
                Ok(Promoted {
                    id: id.parse().map_err(|e| corrupt("jobs", e))?,
                    task: task.parse().map_err(|e| corrupt("jobs", e))?,
                    queue: queue.parse().map_err(|e| corrupt("jobs", e))?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let mut parsed = Parsed::default();
        let lease = self.lease;
        let mut jobs = self
            .rows
            .into_iter()
            .map(|row| {
                Ok(Claimed {
                    job: row.decode_with(&mut parsed)?.0,
                    lease,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        jobs.sort_by(|a, b| {
            b.job
                .priority
                .cmp(&a.job.priority)
                .then(a.job.run_at.cmp(&b.job.run_at))
                .then(a.job.id.cmp(&b.job.id))
        });
        Ok(Claims {
            jobs,
            at_concurrency: self.at_concurrency,
            promoted,
        })
    }
}

/// One claim's parameters: up to `max` jobs of `queue` for `worker`, under the lease `token`.
#[derive(Clone, Copy)]
struct ClaimOf<'a> {
    queue: &'a QueueName,
    worker: &'a str,
    token: i64,
    max: u32,
    lease_ttl_ms: i64,
    now: Timestamp,
}

/// Promotes due scheduled jobs, then claims queued jobs: [`Store::claim`]'s write.
fn claim_in(conn: &Connection, claim: ClaimOf<'_>) -> StoreResult<RawClaim> {
    let (queue, now) = (claim.queue, claim.now);
    let promoted = promote_due(conn, now)?;
    let (rows, lease, at_concurrency) = take_queued(conn, claim)?;
    let mut counts = StateCounts::default();
    for (_, _, q) in &promoted {
        counts.moved(q, JobState::Scheduled, JobState::Queued, 1);
    }
    counts.moved(
        queue.as_str(),
        JobState::Queued,
        JobState::Running,
        rows.len() as i64,
    );
    counts.write(conn)?;
    Ok(RawClaim {
        rows,
        lease,
        at_concurrency,
        promoted,
    })
}

/// Runs a parked claim inside the transaction of the submits that queued jobs in `queues`,
/// in a savepoint of its own; answers it once the transaction has ended.
fn ride(conn: &Connection, parked: Parked, queues: &[&str]) -> Completion {
    let Parked {
        claim,
        token,
        reply,
        ..
    } = parked;
    let now = claim.clock.now();
    let result = in_savepoint(conn, |c| {
        let mut left = claim.max;
        let mut taken = Vec::new();
        for queue in &claim.queues {
            if left == 0 {
                break;
            }
            if !queues.contains(&queue.as_str()) {
                continue;
            }
            let raw = claim_in(
                c,
                ClaimOf {
                    queue,
                    worker: &claim.worker,
                    token,
                    max: left,
                    lease_ttl_ms: claim.lease_ttl_ms,
                    now,
                },
            )?;
            left = left.saturating_sub(raw.rows.len() as u32);
            taken.push((queue.clone(), raw));
        }
        Ok(taken)
    });
    Box::new(move |committed: Result<(), String>| {
        let _ = reply.send(committed.map_err(StoreError::Database).and(result));
    })
}

/// Takes up to `max` queued jobs of `queue` under the lease `token`, within the queue's
/// concurrency; says whether that concurrency stopped it.
fn take_queued(conn: &Connection, claim: ClaimOf<'_>) -> StoreResult<(Vec<JobRow>, Lease, bool)> {
    let ClaimOf {
        queue,
        worker,
        token,
        max,
        lease_ttl_ms,
        now,
    } = claim;
    // The running jobs are read from the kept counts: counting them through `jobs_running`
    // cost a step per running job at every claim, up to the queue's concurrency.
    let settings: Option<(u32, bool, i64)> = conn
        .prepare_cached(
            "SELECT q.concurrency, q.paused, coalesce(c.n, 0) FROM queues q \
             LEFT JOIN job_counts c ON c.queue = q.name AND c.state = 'running' \
             WHERE q.name = ?1",
        )
        .map_err(db)?
        .query_row([queue.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(db)?;
    let none = Lease {
        token,
        expires_at: Timestamp(0),
    };
    let Some((concurrency, paused, running)) = settings else {
        return Ok((Vec::new(), none, false));
    };
    if paused {
        return Ok((Vec::new(), none, false));
    }
    let room = (i64::from(concurrency) - running).clamp(0, i64::from(max));
    let limited = room < i64::from(max);
    if room == 0 {
        return Ok((Vec::new(), none, limited));
    }
    let expires = now.0 + lease_ttl_ms;
    let sql = format!(
        "UPDATE jobs SET state = 'running', lease = ?1, lease_expires = ?2, worker = ?3, \
         attempts = attempts + 1, started_at = ?4, cancel_requested = 0, progress_done = NULL, \
         progress_total = NULL \
         WHERE id IN (SELECT id FROM jobs WHERE queue = ?5 AND state = 'queued' \
                      ORDER BY priority DESC, run_at, id LIMIT ?6) \
         RETURNING {CLAIMED_COLUMNS}"
    );
    let rows = query_rows(
        conn,
        &sql,
        &[&token, &expires, &worker, &now.0, &queue.as_str(), &room],
        |row| JobRow::claimed(row, &claim, expires),
    )?;
    let at_concurrency = limited && rows.len() as i64 == room;
    Ok((
        rows,
        Lease {
            token,
            expires_at: Timestamp(expires),
        },
        at_concurrency,
    ))
}

/// What one write changes in `job_counts`, by queue and state, written at its end: a batch
/// of submits, a claim or a batch of finishes updates a row per queue and state, not per job.
#[derive(Default)]
struct StateCounts<'a>(BTreeMap<(std::borrow::Cow<'a, str>, &'static str), i64>);

impl<'a> StateCounts<'a> {
    /// Counts `n` jobs of `queue` entering `state` (leaving it if `n` is negative).
    fn add(&mut self, queue: impl Into<std::borrow::Cow<'a, str>>, state: JobState, n: i64) {
        *self.0.entry((queue.into(), state.as_str())).or_default() += n;
    }

    /// Counts `n` jobs of `queue` moving from one state to another.
    fn moved(&mut self, queue: &'a str, from: JobState, to: JobState, n: i64) {
        if from != to {
            self.add(queue, from, -n);
            self.add(queue, to, n);
        }
    }

    fn write(&self, conn: &Connection) -> StoreResult<()> {
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO job_counts (queue, state, n) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n",
            )
            .map_err(db)?;
        for ((queue, state), n) in &self.0 {
            if *n != 0 {
                stmt.execute(params![queue.as_ref(), state, n])
                    .map_err(db)?;
            }
        }
        Ok(())
    }
}

/// Writes attempt ends; says for each whether it was written (false: its lease is stale).
/// Each job's next state is one guarded update; the attempts of those written are recorded
/// many rows per statement.
fn finish_all(conn: &Connection, ends: &[EncodedEnd], now: Timestamp) -> StoreResult<Vec<bool>> {
    let mut written = Vec::with_capacity(ends.len());
    let mut recorded: Vec<AttemptRow<'_>> = Vec::with_capacity(ends.len());
    let mut counts = StateCounts::default();
    for end in ends {
        let ok = finish_one(conn, end, now)?;
        if ok {
            let queue = end.end.queue.as_str();
            counts.moved(queue, JobState::Running, end.end.finish.state(), 1);
        }
        if let (true, Some(record), Some(encoded)) = (ok, &end.end.attempt, &end.attempt) {
            recorded.push((&end.key, record, encoded));
        }
        written.push(ok);
    }
    for chunk in statement_chunks(&recorded) {
        insert_attempts(conn, chunk)?;
    }
    counts.write(conn)?;
    Ok(written)
}

/// Moves the job of one attempt's end to its next state, if the attempt's lease still holds.
fn finish_one(conn: &Connection, encoded: &EncodedEnd, now: Timestamp) -> StoreResult<bool> {
    /// The guarded update that ends one attempt, `?1` its job's id and `?2` its lease, with
    /// `SET` clauses of its own; the SQL is a literal, built at compile time.
    macro_rules! end_attempt {
        ($set:literal) => {
            concat!(
                "UPDATE jobs SET ",
                $set,
                ", lease = NULL, lease_expires = NULL, cancel_requested = 0 \
                 WHERE id = ?1 AND state = 'running' AND lease = ?2"
            )
        };
    }
    let EncodedEnd {
        end, key, limits, ..
    } = encoded;
    let token = end.lease.token;
    let changed = match &end.finish {
        Finish::Completed { output } => conn
            .prepare_cached(end_attempt!(
                "state = 'completed', output = ?3, error_reason = NULL, error_message = NULL, \
                 finished_at = ?4"
            ))
            .map_err(db)?
            .execute(params![key, token, output, now.0]),
        Finish::Retry { run_at, error, .. } => conn
            .prepare_cached(end_attempt!(
                "state = 'scheduled', run_at = ?3, limits = ?4, error_reason = ?5, error_message = ?6"
            ))
            .map_err(db)?
            .execute(params![key, token, run_at.0, limits, error.reason.as_str(), error.message]),
        Finish::Failed { error } | Finish::Cancelled { error } => {
            let state = if matches!(end.finish, Finish::Failed { .. }) { "failed" } else { "cancelled" };
            conn.prepare_cached(end_attempt!(
                "state = ?3, error_reason = ?4, error_message = ?5, finished_at = ?6"
            ))
            .map_err(db)?
            .execute(params![key, token, state, error.reason.as_str(), error.message, now.0])
        }
        Finish::Interrupted => conn
            .prepare_cached(end_attempt!(
                "state = 'queued', attempts = max(attempts - 1, 0), progress_done = NULL, \
                 progress_total = NULL"
            ))
            .map_err(db)?
            .execute(params![key, token]),
    }
    .map_err(db)?;
    Ok(changed > 0)
}

const INSERT_ATTEMPT: &str = "INSERT OR REPLACE INTO attempts (job_id, number, reason, \
     trap_kind, exit_code, message, stderr, stderr_truncated, receipt, worker, started_at, \
     finished_at) VALUES ";
const INSERT_ATTEMPT_WIDTH: usize = 12;

/// An attempt to record: its job's key, the record and its encoded columns.
type AttemptRow<'a> = (&'a String, &'a AttemptRecord, &'a EncodedAttempt);

/// Records attempts in one statement.
fn insert_attempts(conn: &Connection, rows: &[AttemptRow<'_>]) -> StoreResult<()> {
    static SQL: BatchSql = BatchSql::new(|rows| {
        format!(
            "{INSERT_ATTEMPT}{}",
            values_rows(rows, INSERT_ATTEMPT_WIDTH, 1)
        )
    });
    let mut params: Vec<&dyn rusqlite::ToSql> =
        Vec::with_capacity(rows.len() * INSERT_ATTEMPT_WIDTH);
    for (key, a, attempt) in rows {
        params.extend::<[&dyn rusqlite::ToSql; INSERT_ATTEMPT_WIDTH]>([
            key,
            &a.number,
            &attempt.reason,
            &attempt.trap_kind,
            &a.exit_code,
            &a.message,
            &a.stderr,
            &a.stderr_truncated,
            &attempt.receipt,
            &a.worker,
            &a.started_at.0,
            &a.finished_at.0,
        ]);
    }
    conn.prepare_cached(SQL.get(rows.len()))
        .map_err(db)?
        .execute(params.as_slice())
        .map_err(db)?;
    Ok(())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn put_task(
        &self,
        name: &TaskName,
        digest: ModuleDigest,
        size_bytes: u64,
        defaults: Option<TaskDefaults>,
        now: Timestamp,
    ) -> StoreResult<TaskRecord> {
        let name = name.clone();
        self.write(move |conn| {
            let existing: Option<String> = conn
                .query_row("SELECT defaults FROM tasks WHERE name = ?1", [name.as_str()], |r| r.get(0))
                .optional()
                .map_err(db)?;
            let defaults = match (defaults, existing) {
                (Some(d), _) => json(&d),
                (None, Some(old)) => old,
                (None, None) => json(&TaskDefaults::default()),
            };
            conn.execute(
                "INSERT INTO tasks (name, digest, defaults, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, defaults = excluded.defaults, \
                 updated_at = excluded.updated_at",
                params![name.as_str(), digest.to_hex(), defaults, now.0],
            )
            .map_err(db)?;
            conn.execute(
                "INSERT INTO task_versions (name, digest, size_bytes, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (name, digest) DO UPDATE SET created_at = excluded.created_at",
                params![name.as_str(), digest.to_hex(), size_bytes as i64, now.0],
            )
            .map_err(db)?;
            load_task(conn, name.as_str())?.ok_or_else(|| corrupt("tasks", "task vanished after insert"))
        })
        .await
    }

    async fn get_task(&self, name: &TaskName) -> StoreResult<Option<TaskRecord>> {
        let name = name.clone();
        self.read_point(move |conn| load_task(conn, name.as_str()))
    }

    async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        self.read(|conn| {
            let names: Vec<String> = conn
                .prepare("SELECT name FROM tasks ORDER BY name")
                .map_err(db)?
                .query_map([], |r| r.get(0))
                .map_err(db)?
                .collect::<Result<_, _>>()
                .map_err(db)?;
            let mut out = Vec::new();
            for n in names {
                out.extend(load_task(conn, &n)?);
            }
            Ok(out)
        })
        .await
    }

    async fn set_task_defaults(
        &self,
        name: &TaskName,
        defaults: TaskDefaults,
        now: Timestamp,
    ) -> StoreResult<Option<TaskRecord>> {
        let name = name.clone();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE tasks SET defaults = ?2, updated_at = ?3 WHERE name = ?1",
                    params![name.as_str(), json(&defaults), now.0],
                )
                .map_err(db)?;
            if n == 0 {
                return Ok(None);
            }
            load_task(conn, name.as_str())
        })
        .await
    }

    async fn delete_task(&self, name: &TaskName) -> StoreResult<bool> {
        let name = name.clone();
        self.write(move |conn| {
            conn.execute("DELETE FROM task_versions WHERE name = ?1", [name.as_str()])
                .map_err(db)?;
            Ok(conn
                .execute("DELETE FROM tasks WHERE name = ?1", [name.as_str()])
                .map_err(db)?
                > 0)
        })
        .await
    }

    async fn put_queue(&self, config: &QueueConfig) -> StoreResult<()> {
        let c = config.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO queues (name, concurrency, default_limits, caps, paused) VALUES (?1, ?2, ?3, ?4, 0) \
                 ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, \
                 default_limits = excluded.default_limits, caps = excluded.caps",
                params![c.name.as_str(), c.concurrency, json(&c.default_limits), json(&c.caps)],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn get_queue(&self, name: &QueueName) -> StoreResult<Option<QueueStats>> {
        let name = name.clone();
        self.read(move |conn| load_queue(conn, name.as_str())).await
    }

    async fn list_queues(&self) -> StoreResult<Vec<QueueStats>> {
        self.read(|conn| {
            let names: Vec<String> = conn
                .prepare("SELECT name FROM queues ORDER BY name")
                .map_err(db)?
                .query_map([], |r| r.get(0))
                .map_err(db)?
                .collect::<Result<_, _>>()
                .map_err(db)?;
            let mut out = Vec::new();
            for n in names {
                out.extend(load_queue(conn, &n)?);
            }
            Ok(out)
        })
        .await
    }

    async fn queue_configs(&self) -> StoreResult<Vec<(QueueConfig, bool)>> {
        self.read_point(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name, concurrency, default_limits, caps, paused FROM queues ORDER BY name")
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, bool>(4)?))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for row in rows {
                let (name, concurrency, default_limits, caps, paused) = row.map_err(db)?;
                let config = QueueConfig {
                    name: name.parse().map_err(|e| corrupt("queues", e))?,
                    concurrency,
                    default_limits: parse_json("queues", &default_limits)?,
                    caps: parse_json("queues", &caps)?,
                };
                out.push((config, paused));
            }
            Ok(out)
        })
    }

    async fn set_paused(&self, name: &QueueName, paused: bool) -> StoreResult<bool> {
        let name = name.clone();
        self.write(move |conn| {
            Ok(conn
                .execute(
                    "UPDATE queues SET paused = ?2 WHERE name = ?1",
                    params![name.as_str(), paused],
                )
                .map_err(db)?
                > 0)
        })
        .await
    }

    async fn insert_jobs(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>> {
        let jobs: Vec<EncodedJob> = jobs.into_iter().map(EncodedJob::new).collect();
        self.insert(jobs).await
    }

    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        self.read_point(move |conn| {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
            Ok(query_jobs(conn, &sql, &[&id.to_string()])?
                .into_iter()
                .next()
                .map(|(j, _)| j))
        })
    }

    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>> {
        let f = filter.clone();
        self.read(move |conn| {
            let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1");
            let mut values: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
            if !f.states.is_empty() {
                let list: Vec<String> = f
                    .states
                    .iter()
                    .map(|s| format!("'{}'", s.as_str()))
                    .collect();
                // One state as `=`, so a partial index on that state can serve it.
                if let [one] = list.as_slice() {
                    sql.push_str(&format!(" AND state = {one}"));
                } else {
                    sql.push_str(&format!(" AND state IN ({})", list.join(", ")));
                }
            }
            let mut bind = |sql: &mut String, clause: &str, v: Box<dyn rusqlite::ToSql>| {
                values.push(v);
                sql.push_str(&clause.replace('?', &format!("?{}", values.len())));
            };
            if let Some(t) = &f.task {
                bind(&mut sql, " AND task = ?", Box::new(t.as_str().to_owned()));
            }
            if let Some(q) = &f.queue {
                bind(&mut sql, " AND queue = ?", Box::new(q.as_str().to_owned()));
            }
            if let Some(c) = &f.context {
                bind(&mut sql, " AND context = ?", Box::new(c.clone()));
            }
            if let Some(k) = &f.unique_key {
                bind(&mut sql, " AND unique_key = ?", Box::new(k.clone()));
            }
            if let Some(after) = f.after {
                bind(&mut sql, " AND id > ?", Box::new(after.to_string()));
            }
            let limit = if f.limit == 0 {
                100
            } else {
                f.limit.min(10_000)
            };
            sql.push_str(&format!(" ORDER BY id LIMIT {limit}"));
            let params: Vec<&dyn rusqlite::ToSql> = values.iter().map(|v| v.as_ref()).collect();
            Ok(query_jobs(conn, &sql, &params)?
                .into_iter()
                .map(|(j, _)| j)
                .collect())
        })
        .await
    }

    async fn attempts(&self, id: JobId) -> StoreResult<Vec<AttemptRecord>> {
        self.read_point(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT number, reason, trap_kind, exit_code, message, stderr, stderr_truncated, receipt, worker, \
                     started_at, finished_at FROM attempts WHERE job_id = ?1 ORDER BY number",
                )
                .map_err(db)?;
            let mut rows = stmt.query([id.to_string()]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(db)? {
                let reason: String = r.get(1).map_err(db)?;
                let trap_kind: Option<String> = r.get(2).map_err(db)?;
                let receipt: String = r.get(7).map_err(db)?;
                out.push(AttemptRecord {
                    number: r.get(0).map_err(db)?,
                    reason: reason.parse().map_err(|e| corrupt("attempts", e))?,
                    trap_kind: trap_kind.map(|k| parse_json("attempts", &format!("\"{k}\""))).transpose()?,
                    exit_code: r.get(3).map_err(db)?,
                    message: r.get(4).map_err(db)?,
                    stderr: r.get(5).map_err(db)?,
                    stderr_truncated: r.get(6).map_err(db)?,
                    receipt: parse_json("attempts", &receipt)?,
                    worker: r.get(8).map_err(db)?,
                    started_at: Timestamp(r.get(9).map_err(db)?),
                    finished_at: Timestamp(r.get(10).map_err(db)?),
                });
            }
            Ok(out)
        })
    }

    async fn claim(
        &self,
        queue: &QueueName,
        worker: &str,
        max: u32,
        lease_ttl_ms: i64,
        now: Timestamp,
    ) -> StoreResult<Claims> {
        let queue = queue.clone();
        let worker = worker.to_owned();
        let token = self.next_lease_token();
        let raw = self
            .write_volatile(move |conn| {
                let claim = ClaimOf {
                    queue: &queue,
                    worker: &worker,
                    token,
                    max,
                    lease_ttl_ms,
                    now,
                };
                claim_in(conn, claim)
            })
            .await?;
        raw.decode()
    }

    fn park_claim(&self, claim: StandingClaim) -> Option<(u64, ParkedAnswer)> {
        let parking = self.inner.parking.clone();
        let ticket = parking.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = tokio::sync::oneshot::channel();
        parking.lock().push(Parked {
            ticket,
            claim,
            token: self.next_lease_token(),
            reply,
        });
        let unpark = Unpark { parking, ticket };
        Some((
            ticket,
            Box::pin(async move {
                let _unpark = unpark;
                match answer.await {
                    Ok(taken) => taken?
                        .into_iter()
                        .map(|(queue, raw)| Ok((queue, raw.decode()?)))
                        .collect(),
                    // Taken back, or the writer is gone: nothing ran.
                    Err(_) => Ok(Vec::new()),
                }
            }),
        ))
    }

    fn unpark_claim(&self, ticket: u64) -> bool {
        self.inner.parking.remove(ticket)
    }

    async fn heartbeat(
        &self,
        id: JobId,
        lease: &Lease,
        expires_at: Timestamp,
    ) -> StoreResult<bool> {
        let token = lease.token;
        self.write_volatile(move |conn| {
            Ok(conn
                .prepare_cached("UPDATE jobs SET lease_expires = ?3 WHERE id = ?1 AND state = 'running' AND lease = ?2")
                .map_err(db)?
                .execute(params![id.to_string(), token, expires_at.0])
                .map_err(db)?
                > 0)
        })
        .await
    }

    async fn set_progress(
        &self,
        id: JobId,
        lease: &Lease,
        done: i64,
        total: i64,
    ) -> StoreResult<bool> {
        let token = lease.token;
        self.write_volatile(move |conn| {
            Ok(conn
                .prepare_cached(
                    "UPDATE jobs SET progress_done = ?3, progress_total = ?4 WHERE id = ?1 AND state = 'running' AND lease = ?2",
                )
                .map_err(db)?
                .execute(params![id.to_string(), token, done, total])
                .map_err(db)?
                > 0)
        })
        .await
    }

    async fn finish_many(&self, ends: Vec<AttemptEnd>, now: Timestamp) -> StoreResult<Vec<bool>> {
        let ends: Vec<EncodedEnd> = ends.into_iter().map(EncodedEnd::new).collect();
        self.write_volatile(move |conn| finish_all(conn, &ends, now))
            .await
    }

    async fn expired_leases(&self, now: Timestamp) -> StoreResult<Vec<Claimed>> {
        self.read(move |conn| {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {EXPIRED_LEASES}");
            let mut expired: Vec<Claimed> = query_jobs(conn, &sql, &[&now.0])?
                .into_iter()
                .filter_map(|(job, lease)| lease.map(|lease| Claimed { job, lease }))
                .collect();
            expired.sort_by_key(|c| c.job.id);
            Ok(expired)
        })
        .await
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> StoreResult<CancelOutcome> {
        self.write(move |conn| {
            let key = id.to_string();
            let Some((queue, state)) = job_queue_and_state(conn, &key)? else {
                return Ok(CancelOutcome::NotFound);
            };
            match state {
                JobState::Held | JobState::Scheduled | JobState::Queued => {
                    // Guarded like every transition, though the state was read in this
                    // transaction.
                    conn.prepare_cached(
                        "UPDATE jobs SET state = 'cancelled', finished_at = ?2, error_reason = 'cancelled', \
                         error_message = 'cancelled before it ran' WHERE id = ?1 AND state = ?3",
                    )
                    .map_err(db)?
                    .execute(params![key, now.0, state.as_str()])
                    .map_err(db)?;
                    let mut counts = StateCounts::default();
                    counts.moved(&queue, state, JobState::Cancelled, 1);
                    counts.write(conn)?;
                    Ok(CancelOutcome::Cancelled)
                }
                JobState::Running => {
                    conn.prepare_cached("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'")
                        .map_err(db)?
                        .execute([&key])
                        .map_err(db)?;
                    Ok(CancelOutcome::Running)
                }
                ended => Ok(CancelOutcome::AlreadyEnded(ended)),
            }
        })
        .await
    }

    async fn cancel_requested(&self, id: JobId) -> StoreResult<bool> {
        self.read_point(move |conn| {
            let v: Option<bool> = conn
                .prepare_cached(
                    "SELECT cancel_requested FROM jobs WHERE id = ?1 AND state = 'running'",
                )
                .map_err(db)?
                .query_row([id.to_string()], |r| r.get(0))
                .optional()
                .map_err(db)?;
            Ok(v.unwrap_or(false))
        })
    }

    async fn release(&self, id: JobId, now: Timestamp) -> StoreResult<bool> {
        self.write(move |conn| {
            let released: Option<String> = conn
                .query_row(
                    "UPDATE jobs SET state = 'queued', run_at = ?2 WHERE id = ?1 AND state = 'held' RETURNING queue",
                    params![id.to_string(), now.0],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            let Some(queue) = released else { return Ok(false) };
            let mut counts = StateCounts::default();
            counts.moved(&queue, JobState::Held, JobState::Queued, 1);
            counts.write(conn)?;
            Ok(true)
        })
        .await
    }

    async fn retry(&self, id: JobId, now: Timestamp) -> StoreResult<bool> {
        self.write(move |conn| {
            let key = id.to_string();
            let Some((queue, state)) = job_queue_and_state(conn, &key)? else {
                return Ok(false);
            };
            let result = conn.execute(
                "UPDATE jobs SET state = 'queued', run_at = ?2, attempts = 0, output = NULL, error_reason = NULL, \
                 error_message = NULL, finished_at = NULL, progress_done = NULL, progress_total = NULL \
                 WHERE id = ?1 AND state IN ('failed', 'cancelled')",
                params![key, now.0],
            );
            match result {
                Ok(0) => Ok(false),
                Ok(_) => {
                    let mut counts = StateCounts::default();
                    counts.moved(&queue, state, JobState::Queued, 1);
                    counts.write(conn)?;
                    Ok(true)
                }
                // Another live job holds the same unique key: this one stays as it is.
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => Ok(false),
                Err(e) => Err(db(e)),
            }
        })
        .await
    }

    async fn delete_job(&self, id: JobId) -> StoreResult<bool> {
        self.write(move |conn| {
            let deleted: Option<(String, String)> = conn
                .query_row(
                    "DELETE FROM jobs WHERE id = ?1 AND state != 'running' RETURNING queue, state",
                    [id.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            let Some((queue, state)) = deleted else {
                return Ok(false);
            };
            let state: JobState = state.parse().map_err(|e| corrupt("jobs", e))?;
            let mut counts = StateCounts::default();
            counts.add(queue, state, -1);
            counts.write(conn)?;
            Ok(true)
        })
        .await
    }

    async fn clean(&self, before: Option<Timestamp>) -> StoreResult<u64> {
        self.write(move |conn| {
            let n = match before {
                Some(t) => {
                    let mut counts = StateCounts::default();
                    let sql = format!(
                        "SELECT queue, state, count(*) FROM jobs WHERE {TERMINAL_STATES} AND finished_at < ?1 \
                         GROUP BY queue, state"
                    );
                    let mut stmt = conn.prepare(&sql).map_err(db)?;
                    let rows = stmt
                        .query_map([t.0], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))
                        .map_err(db)?;
                    for row in rows {
                        let (queue, state, n) = row.map_err(db)?;
                        let state: JobState = state.parse().map_err(|e| corrupt("jobs", e))?;
                        counts.add(queue, state, -n);
                    }
                    counts.write(conn)?;
                    conn.execute(
                        &format!("DELETE FROM jobs WHERE {TERMINAL_STATES} AND finished_at < ?1"),
                        [t.0],
                    )
                }
                None => {
                    conn.execute(&format!("DELETE FROM job_counts WHERE {TERMINAL_STATES}"), [])
                        .map_err(db)?;
                    conn.execute(&format!("DELETE FROM jobs WHERE {TERMINAL_STATES}"), [])
                }
            }
            .map_err(db)?;
            Ok(n as u64)
        })
        .await
    }

    async fn position(&self, id: JobId) -> StoreResult<Option<QueuePosition>> {
        self.read(move |conn| {
            let row: Option<(String, i32, i64)> = conn
                .query_row("SELECT queue, priority, run_at FROM jobs WHERE id = ?1", [id.to_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
                .map_err(db)?;
            let Some((queue, priority, run_at)) = row else { return Ok(None) };
            let (concurrency, paused): (u32, bool) = conn
                .query_row("SELECT concurrency, paused FROM queues WHERE name = ?1", [&queue], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db)?
                .unwrap_or((0, false));
            let running: i64 = conn
                .query_row("SELECT coalesce(sum(n), 0) FROM job_counts WHERE queue = ?1 AND state = 'running'", [&queue], |r| r.get(0))
                .map_err(db)?;
            let ahead: i64 = conn
                .query_row(
                    "SELECT count(*) FROM jobs WHERE queue = ?1 AND state = 'queued' AND \
                     (priority > ?2 OR (priority = ?2 AND (run_at < ?3 OR (run_at = ?3 AND id < ?4))))",
                    params![queue, priority, run_at, id.to_string()],
                    |r| r.get(0),
                )
                .map_err(db)?;
            Ok(Some(QueuePosition { paused, running: running as u64, concurrency, ahead: ahead as u64 }))
        })
        .await
    }

    async fn next_scheduled(&self) -> StoreResult<Option<Timestamp>> {
        self.read_point(|conn| {
            let t: Option<i64> = conn
                .prepare_cached("SELECT min(run_at) FROM jobs WHERE state = 'scheduled'")
                .map_err(db)?
                .query_row([], |r| r.get(0))
                .map_err(db)?;
            Ok(t.map(Timestamp))
        })
    }

    async fn put_schedule(&self, schedule: &ScheduleRecord) -> StoreResult<()> {
        let r = schedule.clone();
        self.write(move |conn| {
            // An update keeps the history the store has: a fire committed since the caller
            // read the schedule is not undone.
            conn.prepare_cached(
                "INSERT INTO schedules (name, spec, job, overlap, catch_up, paused, next_fire, \
                 last_fire, last_job, fires, skipped, last_error, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
                 ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, job = excluded.job, \
                 overlap = excluded.overlap, catch_up = excluded.catch_up, paused = excluded.paused, \
                 next_fire = excluded.next_fire, updated_at = excluded.updated_at",
            )
            .map_err(db)?
            .execute(params![
                r.name.as_str(),
                json(&r.spec),
                json(&r.job),
                json(&r.overlap),
                json(&r.catch_up),
                r.paused,
                r.next_fire.map(|t| t.0),
                r.last_fire.map(|t| t.0),
                r.last_job.map(|j| j.to_string()),
                r.fires as i64,
                r.skipped as i64,
                r.last_error,
                r.created_at.0,
                r.updated_at.0,
            ])
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn get_schedule(&self, name: &ScheduleName) -> StoreResult<Option<ScheduleRecord>> {
        let name = name.clone();
        self.read(move |conn| {
            let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?1");
            Ok(query_schedules(conn, &sql, &[&name.as_str()])?
                .into_iter()
                .next())
        })
        .await
    }

    async fn list_schedules(&self) -> StoreResult<Vec<ScheduleRecord>> {
        self.read(|conn| {
            let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name");
            query_schedules(conn, &sql, &[])
        })
        .await
    }

    async fn delete_schedule(&self, name: &ScheduleName) -> StoreResult<bool> {
        let name = name.clone();
        self.write(move |conn| {
            Ok(conn
                .prepare_cached("DELETE FROM schedules WHERE name = ?1")
                .map_err(db)?
                .execute([name.as_str()])
                .map_err(db)?
                > 0)
        })
        .await
    }

    async fn due_schedules(&self, now: Timestamp) -> StoreResult<Vec<ScheduleRecord>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {SCHEDULE_COLUMNS} FROM schedules \
                 WHERE paused = 0 AND next_fire IS NOT NULL AND next_fire <= ?1 ORDER BY next_fire"
            );
            query_schedules(conn, &sql, &[&now.0])
        })
        .await
    }

    async fn next_schedule_fire(&self) -> StoreResult<Option<Timestamp>> {
        self.read(|conn| {
            let t: Option<i64> = conn
                .prepare_cached(
                    "SELECT min(next_fire) FROM schedules WHERE paused = 0 AND next_fire IS NOT NULL",
                )
                .map_err(db)?
                .query_row([], |r| r.get(0))
                .map_err(db)?;
            Ok(t.map(Timestamp))
        })
        .await
    }

    async fn fire_schedule(
        &self,
        name: &ScheduleName,
        firing: Firing,
        now: Timestamp,
    ) -> StoreResult<Option<Vec<Inserted>>> {
        let name = name.clone();
        self.write(move |conn| {
            let moved = conn
                .prepare_cached(
                    "UPDATE schedules SET next_fire = ?3, last_fire = coalesce(?4, last_fire), fires = fires + ?5, \
                     skipped = skipped + ?6, last_error = ?7, updated_at = ?8 \
                     WHERE name = ?1 AND next_fire = ?2 AND paused = 0",
                )
                .map_err(db)?
                .execute(params![
                    name.as_str(),
                    firing.expected.0,
                    firing.next.map(|t| t.0),
                    firing.fired_at.map(|t| t.0),
                    firing.jobs.len() as i64,
                    firing.skipped as i64,
                    firing.error,
                    now.0,
                ])
                .map_err(db)?;
            if moved == 0 {
                return Ok(None);
            }
            let jobs: Vec<EncodedJob> = firing.jobs.into_iter().map(EncodedJob::new).collect();
            let inserted = insert_all(conn, &jobs)?;
            if let Some(last) = inserted.last() {
                conn.prepare_cached("UPDATE schedules SET last_job = ?2 WHERE name = ?1")
                    .map_err(db)?
                    .execute(params![name.as_str(), last.id().to_string()])
                    .map_err(db)?;
            }
            Ok(Some(inserted))
        })
        .await
    }

    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let t = token.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO tokens (id, name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![t.id, t.name, t.role.as_str(), t.hash, t.created_at.0],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare("SELECT id, name, role, hash, created_at, revoked_at FROM tokens ORDER BY created_at, id")
                .map_err(db)?;
            let rows = stmt.query_map([], token_row).map_err(db)?;
            rows.map(|r| r.map_err(db)?).collect()
        })
        .await
    }

    async fn revoke_token(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |conn| {
            Ok(conn
                .execute(
                    "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, now.0],
                )
                .map_err(db)?
                > 0)
        })
        .await
    }

    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        // Every authenticated request asks: a cached statement, on the calling thread.
        self.read_point(|conn| {
            let row = conn
                .prepare_cached(
                    "SELECT id, name, role, hash, created_at, revoked_at FROM tokens \
                     WHERE hash = ?1 AND revoked_at IS NULL",
                )
                .map_err(db)?
                .query_row([hash], token_row)
                .optional()
                .map_err(db)?;
            row.transpose()
        })
    }
}

type TokenRow = StoreResult<TokenRecord>;

fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    let role: String = r.get(2)?;
    Ok(role
        .parse()
        .map_err(|e| corrupt("tokens", e))
        .map(|role| TokenRecord {
            id: r.get(0).unwrap_or_default(),
            name: r.get(1).unwrap_or_default(),
            role,
            hash: r.get(3).unwrap_or_default(),
            created_at: Timestamp(r.get(4).unwrap_or_default()),
            revoked_at: r
                .get::<_, Option<i64>>(5)
                .unwrap_or_default()
                .map(Timestamp),
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh database file, opened and not migrated.
    fn opened() -> (tempfile::TempDir, PathBuf, Connection) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let conn = open_connection(&path).expect("open");
        (dir, path, conn)
    }

    fn migrated() -> (tempfile::TempDir, Connection) {
        let (dir, path, mut conn) = opened();
        migrate(&mut conn, &path).expect("migrate");
        (dir, conn)
    }

    fn plan(conn: &Connection, sql: &str, params: &[&dyn rusqlite::ToSql]) -> String {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("prepare");
        let rows = stmt
            .query_map(params, |r| r.get::<_, String>(3))
            .expect("query");
        rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn no_partial_index_condition_uses_in_which_sqlite_tests_with_a_table_per_row() {
        let (_dir, conn) = migrated();
        let mut stmt = conn
            .prepare(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql LIKE '% WHERE %'",
            )
            .expect("prepare");
        let partial: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect();
        assert!(partial.iter().any(|(name, _)| name == "jobs_ended"));
        for (name, sql) in &partial {
            assert!(!sql.contains(" IN "), "{name}: {sql}");
        }
    }

    #[test]
    fn batches_are_cut_into_a_few_statement_shapes() {
        let sizes = |n| chunk_sizes(n).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), vec![1]);
        assert_eq!(sizes(100), vec![64, 32, 4]);
        assert_eq!(sizes(200), vec![64, 64, 64, 8]);
        for n in 0..300 {
            let all = sizes(n);
            assert_eq!(all.iter().sum::<usize>(), n);
            assert!(
                all.iter()
                    .all(|s| s.is_power_of_two() && *s <= ROWS_PER_STATEMENT)
            );
        }
        let items: Vec<usize> = (0..100).collect();
        let chunks: Vec<&[usize]> = statement_chunks(&items).collect();
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            sizes(100)
        );
        assert_eq!(chunks.concat(), items);
        assert_eq!(values_rows(2, 3, 2), "(?2, ?3, ?4), (?5, ?6, ?7)");
    }

    #[test]
    fn a_limits_column_is_parsed_again_only_when_its_text_differs() {
        let parse = columns::parse_limits;
        let mut last: Option<(String, Limits)> = None;
        let limits = Limits::default();
        let text = columns::limits_text(&limits);
        assert_eq!(
            parsed_again(&mut last, text.clone(), parse).unwrap(),
            limits
        );
        // The kept value answers for the same text, even if what it holds were different.
        let kept = Limits { fuel: 7, ..limits };
        last = Some((text.clone(), kept));
        assert_eq!(parsed_again(&mut last, text.clone(), parse).unwrap(), kept);
        let other = Limits { fuel: 9, ..limits };
        let text = columns::limits_text(&other);
        assert_eq!(parsed_again(&mut last, text, parse).unwrap(), other);
        assert_eq!(last.as_ref().map(|(_, v)| *v), Some(other));
        assert!(parsed_again(&mut last, "{".to_owned(), parse).is_err());
        assert!(parsed_again(&mut last, "1;2".to_owned(), parse).is_err());
    }

    #[test]
    fn the_writer_restarts_the_log_only_when_little_is_left_to_copy() {
        use LogStep::{Ask, Nothing, Restart};
        let (restart, max, tail) = (LOG_RESTART_PAGES, LOG_MAX_PAGES, WRITER_COPIES_PAGES);
        // (log pages, copied by the checkpointer, log at the writer's last own checkpoint,
        // commits since the checkpointer was woken), what the writer does.
        let cases = [
            ((10, 0, 0, 1), Nothing),
            ((10, 10, 0, 100), Nothing),
            ((10, 0, 0, CHECKPOINT_EVERY_COMMITS), Ask),
            ((CHECKPOINT_EVERY_PAGES + 5, 5, 0, 1), Ask),
            ((restart - 1, restart - 1, 0, 1), Nothing),
            ((restart, restart - tail, 0, 1), Restart),
            ((restart, restart - tail - 1, 0, 1), Ask),
            ((max - 1, 0, 0, 1), Ask),
            ((max, 0, 0, 1), Restart),
            // Not again before the log grew by another stretch (readers kept it from
            // starting over)...
            ((restart + 10, restart + 10, restart, 1), Nothing),
            ((restart + tail, restart + tail, restart, 1), Restart),
            // ...unless it started over and grew back since.
            ((restart, restart, restart + 100, 1), Restart),
        ];
        for ((log, copied, own_at, commits), step) in cases {
            assert_eq!(
                log_step(log, copied, own_at, commits),
                step,
                "log {log}, copied {copied}, own at {own_at}, commits {commits}"
            );
        }
    }

    #[test]
    fn a_pass_over_an_earlier_log_counts_as_nothing_copied() {
        let log = Checkpoints::default();
        log.committed(100);
        log.passed(100, 80);
        assert_eq!(log.state(), (100, 80));
        log.passed(-1, -1);
        assert_eq!(
            log.state(),
            (100, 80),
            "a pass that did not run changes nothing"
        );
        log.committed(20);
        assert_eq!(log.state(), (20, 0));
    }

    #[test]
    fn the_rescuer_reads_running_jobs_only() {
        let (_dir, conn) = migrated();
        let expired = plan(
            &conn,
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {EXPIRED_LEASES}"),
            &[&0i64],
        );
        assert!(expired.contains("jobs_running"), "{expired}");
    }

    #[test]
    fn jobs_and_attempts_stored_before_the_migrations_are_kept_and_counted() {
        let (_dir, path, mut conn) = opened();
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).expect("migration");
        }
        conn.execute_batch("PRAGMA user_version = 5")
            .expect("version");
        for (i, (queue, state)) in [
            ("a", "completed"),
            ("a", "completed"),
            ("a", "failed"),
            ("a", "queued"),
            ("b", "cancelled"),
        ]
        .into_iter()
        .enumerate()
        {
            conn.execute(
                "INSERT INTO jobs (id, task, digest, queue, state, input, args, env, priority, \
                 run_at, limits, retry, created_at) \
                 VALUES (?1, 't', 'd', ?2, ?3, x'', '[]', '[]', 0, 0, '{}', '{}', 0)",
                params![i.to_string(), queue, state],
            )
            .expect("insert");
        }
        conn.execute(
            "INSERT INTO attempts (job_id, number, reason, stderr, stderr_truncated, receipt, \
             worker, started_at, finished_at) VALUES ('0', 1, 'completed', x'', 0, '{}', 'w', 0, 0)",
            [],
        )
        .expect("attempt");
        migrate(&mut conn, &path).expect("migrate");
        let counts: Vec<(String, String, i64)> = conn
            .prepare("SELECT queue, state, n FROM job_counts ORDER BY queue, state")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect();
        let expected = [
            ("a", "completed", 2),
            ("a", "failed", 1),
            ("a", "queued", 1),
            ("b", "cancelled", 1),
        ];
        assert_eq!(
            counts,
            expected.map(|(q, s, n)| (q.to_owned(), s.to_owned(), n))
        );
        let attempts = |conn: &Connection| -> i64 {
            conn.query_row("SELECT count(*) FROM attempts", [], |r| r.get(0))
                .expect("count")
        };
        assert_eq!(attempts(&conn), 1, "attempts are kept through migration 8");
        conn.execute("DELETE FROM jobs WHERE id = '0'", [])
            .expect("delete");
        assert_eq!(attempts(&conn), 0, "and go with their job");
    }

    #[test]
    fn the_unique_lookup_and_clean_use_their_partial_indexes() {
        let (_dir, conn) = migrated();
        let unique = plan(
            &conn,
            &format!("SELECT id FROM jobs WHERE unique_key = ?1 AND {LIVE_STATES}"),
            &[&"k"],
        );
        assert!(unique.contains("jobs_unique_live"), "{unique}");
        let clean = plan(
            &conn,
            &format!("DELETE FROM jobs WHERE {TERMINAL_STATES} AND finished_at < ?1"),
            &[&0i64],
        );
        assert!(clean.contains("jobs_ended"), "{clean}");
    }
}
