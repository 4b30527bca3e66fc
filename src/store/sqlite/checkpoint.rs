//! Checkpoints: copying the write-ahead log into the database file, shared between a thread
//! of its own and the writer. The checkpointer runs PASSIVE checkpoints when the writer asks,
//! without blocking it; the writer finishes the last short stretch itself when the log has
//! grown long, so that its next commit starts the log over ([`log_step`] decides).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;

use rusqlite::Connection;

use crate::telemetry::{Component, background_error};

/// Commits between two checkpoints at most (a commit writes a few dozen pages to the log).
pub(super) const CHECKPOINT_EVERY_COMMITS: u32 = 64;

/// Pages written to the log and not yet copied that wake the checkpointer early.
pub(super) const CHECKPOINT_EVERY_PAGES: u32 = 256;

/// From this many pages (16 MiB), the log is started over: the writer copies what the
/// checkpointer has not yet, and its next commit writes the log from the start. A log that
/// kept growing would make every durable commit extend the file, and an fsync that changes
/// a file's size costs about twice one that does not.
pub(super) const LOG_RESTART_PAGES: u32 = 4_096;

/// The writer's share of a restart: it waits for the checkpointer to have copied all but this
/// many pages of the log, so its own copy and fsync stay short...
pub(super) const WRITER_COPIES_PAGES: u32 = 256;

/// ...unless the log reaches this size (64 MiB), when it copies everything left itself.
pub(super) const LOG_MAX_PAGES: u32 = 16_384;

/// What the writer and the checkpointer know of the log, to share the checkpointing.
///
/// Only a checkpoint that copied the whole log lets the next commit start it over, and under
/// steady writes the checkpointer's passes never catch up with the last commit. Left to
/// SQLite's automatic checkpoint, the writer copied everything the checkpointer had not at
/// 16 MiB and fsynced the database file, 25-40 ms in which no write was made. Now the writer
/// checkpoints only right after a pass, when the checkpointer's copy is nearly complete.
#[derive(Default)]
pub(super) struct Checkpoints {
    /// Pages in the log after the writer's last commit (SQLite's WAL hook).
    log: AtomicU32,
    /// The checkpointer's last pass: the log's pages when it began (high half) and how many
    /// of them are copied into the database file (low half).
    pass: AtomicU64,
}

impl Checkpoints {
    pub(super) fn committed(&self, pages: std::ffi::c_int) {
        self.log
            .store(u32::try_from(pages).unwrap_or(0), Ordering::Relaxed);
    }

    pub(super) fn passed(&self, log: i64, copied: i64) {
        let (Ok(log), Ok(copied)) = (u32::try_from(log), u32::try_from(copied)) else {
            return; // -1 and -1: the pass did not run
        };
        self.pass
            .store(u64::from(log) << 32 | u64::from(copied), Ordering::Relaxed);
    }

    /// The log's pages, and how many of them the checkpointer has copied.
    pub(super) fn state(&self) -> (u32, u32) {
        let log = self.log.load(Ordering::Relaxed);
        let pass = self.pass.load(Ordering::Relaxed);
        let (pass_log, copied) = ((pass >> 32) as u32, pass as u32);
        // A pass over a longer log was over the log before it started over.
        (log, if pass_log <= log { copied } else { 0 })
    }
}

/// What the writer does about the log after a commit.
#[derive(Debug, PartialEq)]
pub(super) enum LogStep {
    Nothing,
    /// Wake the checkpointer.
    Ask,
    /// Copy the rest of the log itself, so the next commit starts it over.
    Restart,
}

/// Decides [`LogStep`] from the log's pages, how many of them are copied, the log's pages at
/// the writer's own last checkpoint and the commits since the checkpointer was last woken.
pub(super) fn log_step(log: u32, copied: u32, own_at: u32, commits: u32) -> LogStep {
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
pub(super) struct Checkpointing<'a> {
    log: &'a Checkpoints,
    wake: mpsc::SyncSender<()>,
    /// Commits since the checkpointer was last woken.
    commits: u32,
    /// The log's pages at the writer's own last checkpoint.
    own_at: u32,
}

impl<'a> Checkpointing<'a> {
    pub(super) fn new(log: &'a Checkpoints, wake: mpsc::SyncSender<()>) -> Self {
        Self {
            log,
            wake,
            commits: 0,
            own_at: 0,
        }
    }

    /// After each commit: wakes the checkpointer, or copies the rest of the log itself, as
    /// [`log_step`] decides.
    pub(super) fn after_commit(&mut self, conn: &Connection) {
        self.commits += 1;
        let (log, copied) = self.log.state();
        match log_step(log, copied, self.own_at, self.commits) {
            LogStep::Nothing => {}
            LogStep::Ask => {
                // A full channel means a checkpoint is asked for already.
                let _ = self.wake.try_send(());
                self.commits = 0;
            }
            LogStep::Restart => match passive_checkpoint(conn) {
                // Busy: the checkpointer is copying; after its pass, little is left.
                Ok((-1, _)) => {}
                Ok((pages, copied)) => {
                    self.log.passed(pages, copied);
                    self.own_at = log;
                }
                Err(e) => {
                    background_error(
                        Component::Store,
                        "checkpointing the log (retried after the next commits)",
                        &e,
                    );
                    self.own_at = log;
                }
            },
        }
    }
}

/// Copies the log into the database file when the writer asks, without blocking it (a
/// passive checkpoint takes no write lock), and tells it how far it got. Ends when the
/// writer does.
pub(super) fn checkpointer(conn: Connection, asks: mpsc::Receiver<()>, log: &Checkpoints) {
    while asks.recv().is_ok() {
        match passive_checkpoint(&conn) {
            Ok((pages, copied)) => log.passed(pages, copied),
            Err(e) => background_error(
                Component::Store,
                "checkpointing the log (retried after the next commits)",
                &e,
            ),
        }
    }
}

/// Copies what it can of the log into the database file: the log's pages and how many of
/// them are copied (-1 and -1 if another checkpoint was running).
pub(super) fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}
