//! Per-attempt scratch directories (preopened as the guest's `/tmp`). Making and removing a
//! directory costs more than the rest of a small attempt on a journaling filesystem, so a
//! directory the guest left empty is reused: its times are reset to a fixed value, so the next
//! guest cannot tell it was used. A directory left with anything in it is removed, never reused.
//! Every guest still starts with an empty directory it alone can see.

use std::fs::{self, File, FileTimes};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tempfile::TempDir;

/// How many empty directories are kept for reuse.
const IDLE_MAX: usize = 256;

/// The times every reused scratch directory shows: 2000-01-01T00:00:00Z.
fn fixed_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800)
}

#[derive(Debug)]
pub(super) struct ScratchPool {
    root: PathBuf,
    idle: Mutex<Vec<TempDir>>,
}

impl ScratchPool {
    pub(super) fn new(root: PathBuf) -> Self {
        Self {
            root,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An empty directory for one attempt.
    pub(super) fn take(&self) -> io::Result<TempDir> {
        if let Some(dir) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(dir);
        }
        let dir = tempfile::Builder::new()
            .prefix("remotask-attempt-")
            .tempdir_in(&self.root)?;
        reset_times(dir.path())?;
        Ok(dir)
    }

    /// Returns a directory after its attempt: kept if the guest left it empty, else removed.
    pub(super) fn give_back(&self, dir: TempDir) {
        if is_empty(dir.path()) && reset_times(dir.path()).is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE_MAX {
                idle.push(dir);
                return;
            }
        }
        drop(dir);
    }
}

fn is_empty(path: &Path) -> bool {
    fs::read_dir(path)
        .map(|mut entries| entries.next().is_none())
        .unwrap_or(false)
}

fn reset_times(path: &Path) -> io::Result<()> {
    let t = fixed_time();
    File::open(path)?.set_times(FileTimes::new().set_accessed(t).set_modified(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_directory_is_reused_with_its_times_reset() {
        let root = tempfile::tempdir().unwrap();
        let pool = ScratchPool::new(root.path().to_path_buf());
        let dir = pool.take().unwrap();
        let path = dir.path().to_path_buf();
        fs::write(path.join("f"), b"x").unwrap();
        fs::remove_file(path.join("f")).unwrap();
        pool.give_back(dir);
        let again = pool.take().unwrap();
        assert_eq!(again.path(), path);
        assert_eq!(
            fs::metadata(&path).unwrap().modified().unwrap(),
            fixed_time()
        );
    }

    #[test]
    fn a_directory_left_with_files_is_removed_not_reused() {
        let root = tempfile::tempdir().unwrap();
        let pool = ScratchPool::new(root.path().to_path_buf());
        let dir = pool.take().unwrap();
        let path = dir.path().to_path_buf();
        fs::create_dir(path.join("sub")).unwrap();
        fs::write(path.join("sub/f"), b"secret").unwrap();
        pool.give_back(dir);
        assert!(!path.exists());
        let fresh = pool.take().unwrap();
        assert_ne!(fresh.path(), path);
        assert!(is_empty(fresh.path()));
    }
}
