//! The log syncer thread: makes committed transactions durable. It fsyncs the write-ahead
//! log, then answers the durable writes that were waiting for it. One fsync answers every
//! write committed before it began, so the writes that queue up meanwhile share the next one.
//! The writer commits with `synchronous = NORMAL` and never waits here.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::writer::Completion;
use crate::store::{StoreError, StoreResult};
use crate::telemetry::{Component, background_error};

/// The write-ahead log of the database at `path`, as SQLite names it.
pub(super) fn wal_path(path: &Path) -> StoreResult<PathBuf> {
    let full = std::fs::canonicalize(path)
        .map_err(|e| StoreError::io(format!("cannot resolve {}", path.display()), e))?;
    let mut name = full.into_os_string();
    name.push("-wal");
    Ok(PathBuf::from(name))
}

/// The syncer's loop, until the writer is gone.
///
/// The log file is the one SQLite writes: the writer's connection stays open, and SQLite
/// removes the log only when its last connection closes. A log not seen before also gets its
/// directory entry synced, as SQLite does for a new log.
pub(super) fn log_syncer(log: &Path, waiting: &mpsc::Receiver<Vec<Completion>>) {
    let mut file: Option<(std::fs::File, u64)> = None;
    while let Ok(mut done) = waiting.recv() {
        while let Ok(more) = waiting.try_recv() {
            done.extend(more);
        }
        let synced = sync_log(log, &mut file).map_err(|e| {
            file = None;
            background_error(Component::Store, "syncing the log", &e);
            StoreError::io(
                format!(
                    "the write is committed, but the log {} could not be synced, so it may \
                     not survive a power loss",
                    log.display()
                ),
                e,
            )
        });
        for d in done {
            d(synced.clone());
        }
    }
}

/// fsyncs the log, through the descriptor kept in `file` while it is still SQLite's log.
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
