//! Per-attempt scratch directories (preopened as the guest's `/tmp`). Making and removing a
//! directory costs more than the rest of a small attempt on a journaling filesystem, so a
//! directory the guest left empty is reused: its times are reset to a fixed value, so the next
//! guest cannot tell it was used. A directory left with anything in it is removed, never reused.
//! Every guest still starts with an empty directory it alone can see. The checks between
//! attempts go through one descriptor kept per directory: read the entries, look at the times,
//! write them only if a guest changed them.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{AtFlags, Mode, OFlags, RawDir, SeekFrom, StatxFlags, Timespec, Timestamps};
use tempfile::TempDir;

/// How many empty directories are kept for reuse.
const IDLE_MAX: usize = 256;

/// The times every reused scratch directory shows: 2000-01-01T00:00:00Z.
const FIXED_SECS: u64 = 946_684_800;

/// One scratch directory and a descriptor of it kept open for the checks between attempts
/// (opened without updating the access time, so the checks do not change what they check).
#[derive(Debug)]
pub(super) struct Scratch {
    fd: OwnedFd,
    dir: TempDir,
}

impl Scratch {
    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }
}

#[derive(Debug)]
pub(super) struct ScratchPool {
    root: PathBuf,
    idle: Mutex<Vec<Scratch>>,
}

impl ScratchPool {
    pub(super) fn new(root: PathBuf) -> Self {
        Self {
            root,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An empty directory for one attempt.
    pub(super) fn take(&self) -> io::Result<Scratch> {
        if let Some(scratch) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(scratch);
        }
        let dir = tempfile::Builder::new()
            .prefix("remotask-attempt-")
            .tempdir_in(&self.root)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | NO_ATIME;
        let fd = rustix::fs::open(dir.path(), flags, Mode::empty())?;
        rustix::fs::futimens(&fd, &fixed_timestamps())?;
        Ok(Scratch { fd, dir })
    }

    /// Returns a directory after its attempt: kept if the guest left it empty, else removed.
    pub(super) fn give_back(&self, scratch: Scratch) {
        if matches!(ready_again(&scratch.fd), Ok(true)) {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE_MAX {
                idle.push(scratch);
                return;
            }
        }
        drop(scratch);
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const NO_ATIME: OFlags = OFlags::NOATIME;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const NO_ATIME: OFlags = OFlags::empty();

fn fixed_timestamps() -> Timestamps {
    let t = Timespec {
        tv_sec: FIXED_SECS as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Whether the directory is empty, and if so, its times set back to the fixed value (left as
/// they are when still at it: writing an inode's times is the dearest step here).
fn ready_again(dir: &OwnedFd) -> io::Result<bool> {
    // Read the entries from the start again: the last check read to the end.
    rustix::fs::seek(dir, SeekFrom::Start(0))?;
    let mut buf = [MaybeUninit::<u8>::uninit(); 512];
    let mut entries = RawDir::new(dir, &mut buf);
    while let Some(entry) = entries.next() {
        if !matches!(entry?.file_name().to_bytes(), b"." | b"..") {
            return Ok(false);
        }
    }
    let times = rustix::fs::statx(
        dir,
        c"",
        AtFlags::EMPTY_PATH,
        StatxFlags::ATIME | StatxFlags::MTIME,
    )?;
    let fixed = FIXED_SECS as i64;
    let at_fixed = |t: rustix::fs::StatxTimestamp| t.tv_sec == fixed && t.tv_nsec == 0;
    if !(at_fixed(times.stx_atime) && at_fixed(times.stx_mtime)) {
        rustix::fs::futimens(dir, &fixed_timestamps())?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File, FileTimes};
    use std::time::{Duration, SystemTime};

    use super::*;

    fn fixed_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(FIXED_SECS)
    }

    fn reset_times(path: &Path) -> io::Result<()> {
        let t = fixed_time();
        File::open(path)?.set_times(FileTimes::new().set_accessed(t).set_modified(t))
    }

    fn is_empty(path: &Path) -> bool {
        fs::read_dir(path)
            .map(|mut entries| entries.next().is_none())
            .unwrap_or(false)
    }

    /// A pool under a fresh root (kept alive by the first value) and a directory taken from it.
    fn pool_and_dir() -> (TempDir, ScratchPool, Scratch, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let pool = ScratchPool::new(root.path().to_path_buf());
        let dir = pool.take().unwrap();
        let path = dir.path().to_path_buf();
        (root, pool, dir, path)
    }

    #[test]
    fn an_empty_directory_is_reused_with_its_times_reset() {
        let (_root, pool, dir, path) = pool_and_dir();
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
    fn a_directory_only_read_gets_its_access_time_back() {
        let (_root, pool, dir, path) = pool_and_dir();
        File::open(&path)
            .unwrap()
            .set_times(FileTimes::new().set_accessed(SystemTime::now()))
            .unwrap();
        pool.give_back(dir);
        let again = pool.take().unwrap();
        assert_eq!(again.path(), path);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.accessed().unwrap(), meta.modified().unwrap()),
            (fixed_time(), fixed_time())
        );
    }

    #[test]
    fn every_check_reads_the_directory_from_its_first_entry() {
        let (_root, pool, dir, path) = pool_and_dir();
        pool.give_back(dir);
        let again = pool.take().unwrap();
        assert_eq!(again.path(), path, "reused after an empty attempt");
        fs::write(path.join("left"), b"x").unwrap();
        pool.give_back(again);
        assert!(!path.exists(), "the second check saw the file");
    }

    #[test]
    fn files_hidden_behind_the_fixed_times_are_still_found() {
        let (_root, pool, dir, path) = pool_and_dir();
        fs::write(path.join("left"), b"for the next guest").unwrap();
        reset_times(&path).unwrap();
        pool.give_back(dir);
        assert!(!path.exists());
    }

    #[test]
    fn a_directory_left_with_files_is_removed_not_reused() {
        let (_root, pool, dir, path) = pool_and_dir();
        fs::create_dir(path.join("sub")).unwrap();
        fs::write(path.join("sub/f"), b"secret").unwrap();
        pool.give_back(dir);
        assert!(!path.exists());
        let fresh = pool.take().unwrap();
        assert_ne!(fresh.path(), path);
        assert!(is_empty(fresh.path()));
    }
}
