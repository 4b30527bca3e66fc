//! The writer thread: every write of the store goes through it, and the writes of many
//! callers share a transaction (group commit). It takes whatever writes are waiting, runs them
//! in one transaction (submits inserted together, parked claims riding on them), commits
//! without an fsync, hands the durable writes' answers to the log syncer and answers the
//! others at once, then does its share of checkpointing.
//!
//! A failed write changes nothing and spares the others in its transaction: beside other
//! writes each runs in a savepoint of its own ([`Isolation::Savepoint`]); alone
//! ([`Isolation::Alone`], most transactions under load) it runs without one, and its failure
//! rolls the transaction back.

use std::sync::Arc;
use std::sync::mpsc;

use rusqlite::Connection;

use super::checkpoint::{Checkpointing, Checkpoints};
use super::db;
use super::jobs::insert_all;
use super::parking::{Parking, ride};
use super::rows::EncodedJob;
use crate::domain::JobState;
use crate::store::{Inserted, StoreError, StoreResult};
use crate::telemetry::{Component, background_error};

/// How a write's caller is answered once its transaction has ended (and, for a durable
/// write, its log has been synced).
pub(super) type Completion = Box<dyn FnOnce(StoreResult<()>) + Send>;

/// How a write runs inside the writer's transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Isolation {
    /// In a savepoint of its own, so its failure undoes only its own changes.
    Savepoint,
    /// Alone in the transaction: its failure rolls back the transaction instead. A savepoint
    /// copies every page it changes into a statement journal first; most transactions under
    /// load hold one or two writes, so this spares that copy for the lone ones.
    Alone,
}

/// One caller's write, run inside the writer's batch transaction.
pub(super) enum WriteOp {
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
pub(super) type RunWrite = Box<dyn FnOnce(&Connection, Isolation) -> (bool, Completion) + Send>;

/// The writer's page cache, in KiB: small on purpose. When a b-tree page splits, SQLite
/// renumbers the new pages through a spare page number far past the end of the file (the
/// lock page), and at the end of that transaction its page cache then walks its whole hash
/// table to drop pages past the end. With 32 MiB of cache that walk was 7% of the writer's
/// time; the writer's working set (the right edges and upper levels of its b-trees) fits in
/// far less, and pages it misses are read back from the operating system's cache.
const WRITER_CACHE_KIB: u32 = 2_048;

/// Writes taken into one transaction at most.
const MAX_BATCH: usize = 1024;

/// Prepares the writer's connection: no automatic checkpoint (the writer and the
/// checkpointer share that, see `checkpoint.rs`), a small page cache, commits without an
/// fsync (the syncer does it for the writes that need it), and a WAL hook that tells
/// `log` the log's size after each commit.
pub(super) fn prepare(conn: &mut Connection, log: Arc<Checkpoints>) -> StoreResult<()> {
    conn.execute_batch(&format!(
        "PRAGMA wal_autocheckpoint = 0; \
         PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA synchronous = NORMAL;"
    ))
    .map_err(db)?;
    conn.wal_hook(Some(
        move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
            log.committed(pages);
            Ok(())
        },
    ))
    .map_err(db)
}

/// The writer thread's loop, until every sender is gone.
pub(super) fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<WriteOp>,
    mut checkpoints: Checkpointing<'_>,
    parking: &Parking,
    syncer: mpsc::Sender<Vec<Completion>>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if let Err(e) = exec(&conn, "BEGIN IMMEDIATE") {
            // Nothing ran; dropping the ops tells their callers the write was not applied.
            background_error(Component::Store, "starting a write transaction", &e);
            drop(batch);
            continue;
        }
        let ran = run_batch(&conn, batch, parking);
        let committed = if ran.failed_alone {
            // Its caller gets its own error; nothing else was in the transaction.
            let _ = exec(&conn, "ROLLBACK");
            Ok(())
        } else {
            commit(&conn)
        };
        ran.answer(committed, &syncer);
        checkpoints.after_commit(&conn);
    }
}

/// What one transaction's writes left to do once it ends.
struct Ran {
    /// Each write's answer, with whether it must wait for the log's fsync.
    completions: Vec<(bool, Completion)>,
    /// Parked claims that ran in the transaction.
    riders: Vec<Completion>,
    /// The transaction's only write failed: it is rolled back.
    failed_alone: bool,
}

/// Runs a batch of writes in the open transaction: the submits together, then every other
/// write, then the parked claims on the queues the submits gave queued jobs.
fn run_batch(conn: &Connection, batch: Vec<WriteOp>, parking: &Parking) -> Ran {
    let mut runs = Vec::with_capacity(batch.len());
    let mut inserts = Vec::new();
    // Queues that this transaction's submits give queued jobs, for parked claims (looked for
    // only if a claim is parked: a claim parked later waits for the submit's wake-up).
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
    let mut completions: Vec<(bool, Completion)> = Vec::with_capacity(writes);
    if !inserts.is_empty() {
        let (ok, done) = insert_together(conn, inserts, isolation);
        failed_alone |= !ok;
        completions.push((true, done));
    }
    for (durable, run) in runs {
        let (ok, done) = run(conn, isolation);
        failed_alone |= !ok && isolation == Isolation::Alone;
        completions.push((durable, done));
    }
    let mut riders = Vec::new();
    if !failed_alone && !queued_in.is_empty() {
        let queues: Vec<&str> = queued_in.iter().map(String::as_str).collect();
        riders = parking
            .take_for(&queues)
            .into_iter()
            .map(|parked| ride(conn, parked, &queues))
            .collect();
    }
    Ran {
        completions,
        riders,
        failed_alone,
    }
}

impl Ran {
    /// Answers the writes of a transaction that ended with `committed`. The commit wrote the
    /// log without an fsync: the durable writes are answered after the syncer's fsync, the
    /// others at once, while the writer goes on with the next transaction. The syncer is told
    /// first (its fsync is the longest wait), then parked claims that ran (a worker waits for
    /// their jobs).
    fn answer(self, committed: StoreResult<()>, syncer: &mpsc::Sender<Vec<Completion>>) {
        let synced = !self.failed_alone && committed.is_ok();
        let (durable, volatile): (Vec<_>, Vec<_>) = self
            .completions
            .into_iter()
            .partition(|(needs_sync, _)| *needs_sync && synced);
        if !durable.is_empty() {
            let durable = durable.into_iter().map(|(_, done)| done).collect();
            if let Err(mpsc::SendError(unsynced)) = syncer.send(durable) {
                let stopped = StoreError::io(
                    "the log cannot be synced",
                    std::io::Error::other("its thread stopped"),
                );
                for done in unsynced {
                    done(Err(stopped.clone()));
                }
            }
        }
        for done in self.riders {
            done(committed.clone());
        }
        for (_, done) in volatile {
            done(committed.clone());
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
            (insert_each(conn, jobs), replies, true)
        };
    let done: Completion = Box::new(move |committed: StoreResult<()>| {
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(committed.clone().and(result));
        }
    });
    (ok, done)
}

/// Several submits' jobs inserted in one savepoint, or if that fails, each submit in one of
/// its own: one answer per submit.
fn insert_each(conn: &Connection, jobs: Vec<Vec<EncodedJob>>) -> Vec<StoreResult<Vec<Inserted>>> {
    let lens: Vec<usize> = jobs.iter().map(Vec::len).collect();
    let all: Vec<EncodedJob> = jobs.into_iter().flatten().collect();
    match in_savepoint(conn, |c| insert_all(c, &all)) {
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
    }
}

/// A submit's jobs and where to answer it.
type InsertOp = (
    Vec<EncodedJob>,
    tokio::sync::oneshot::Sender<StoreResult<Vec<Inserted>>>,
);

/// Commits the writer's transaction, rolling it back if the commit fails.
fn commit(conn: &Connection) -> StoreResult<()> {
    let committed = exec(conn, "COMMIT").map_err(db);
    if committed.is_err() {
        let _ = exec(conn, "ROLLBACK");
    }
    committed
}

/// Runs one statement without parameters from the statement cache: transaction control runs
/// several times per batch, and parsing it each time shows in profiles.
pub(super) fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs `f` in a savepoint: if it fails, its changes are undone and the transaction goes on.
pub(super) fn in_savepoint<T>(
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
