//! Per-attempt scratch directories (preopened as the guest's `/tmp`). Making and removing a
//! directory costs more than the rest of a small attempt on a journaling filesystem, so a
//! directory the guest left empty is reused: its times are reset to a fixed value, so the next
//! guest cannot tell it was used. A directory left with anything in it is removed, never reused.
//! Every guest still starts with an empty directory it alone can see. The checks between
//! attempts go through one descriptor kept per directory: read the entries, look at the times,
//! write them only if a guest changed them.
//!
//! Reading the entries is most of a check's cost (ext4 reads even a one-block directory
//! through its hash index), so it is skipped when the directory's change time proves nothing
//! happened in it: creating, removing or renaming an entry, and setting its times, all set
//! the change time to the current time, and no call sets it to a chosen value. If the change
//! time is still the one recorded when the directory was last seen empty, and that was well
//! before the attempt began (`margin`: longer than the lag of the clock that stamps changes
//! plus the filesystem's timestamp granularity), the guest changed nothing.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags, RawDir, SeekFrom, StatxFlags, Timespec, Timestamps};
use tempfile::TempDir;

/// How many empty directories are kept for reuse.
const IDLE_MAX: usize = 256;

/// The times every reused scratch directory shows: 2000-01-01T00:00:00Z.
const FIXED_SECS: u64 = 946_684_800;

/// How long before an attempt began a directory's change time must have been recorded for
/// an unchanged change time to prove the attempt changed nothing. A change is stamped with
/// the kernel's coarse clock (which lags the clock read at `take` by up to a tick, 10 ms at
/// the least frequent), truncated to the filesystem's granularity (up to 2 s on some), so a
/// change made just after a recording could carry the same time; this much later, it cannot.
const CTIME_MARGIN: Duration = Duration::from_secs(3);
/// The margin when the recorded change time is not a whole number of microseconds, so the
/// filesystem stamps finer than that (ext4, xfs, btrfs, tmpfs: nanoseconds) and only the
/// coarse clock's lag remains. A coarse filesystem's times are whole microseconds or more,
/// and a fine one's are too once in a thousand: then the long margin applies.
const CTIME_MARGIN_FINE: Duration = Duration::from_millis(50);

/// One scratch directory and a descriptor of it kept open for the checks between attempts
/// (opened without updating the access time, so the checks do not change what they check).
#[derive(Debug)]
pub(super) struct Scratch {
    fd: OwnedFd,
    dir: TempDir,
    /// The directory's change time when it was last seen empty, at the fixed times.
    seen_empty: Option<ChangeTime>,
    /// When the current attempt took it.
    taken: SystemTime,
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
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(mut scratch) = reused {
            scratch.taken = SystemTime::now();
            return Ok(scratch);
        }
        let dir = tempfile::Builder::new()
            .prefix("remotask-attempt-")
            .tempdir_in(&self.root)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | NO_ATIME;
        let fd = rustix::fs::open(dir.path(), flags, Mode::empty())?;
        rustix::fs::futimens(&fd, &fixed_timestamps())?;
        Ok(Scratch {
            fd,
            dir,
            seen_empty: None,
            taken: SystemTime::now(),
        })
    }

    /// Returns a directory after its attempt: kept if the guest left it empty, else removed.
    pub(super) fn give_back(&self, mut scratch: Scratch) {
        if matches!(ready_again(&mut scratch), Ok(true)) {
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

/// A change time as `statx` gives it: seconds and nanoseconds.
type ChangeTime = (i64, u32);

/// The times a check reads.
const TIMES: StatxFlags = StatxFlags::ATIME
    .union(StatxFlags::MTIME)
    .union(StatxFlags::CTIME);

fn stat_times(dir: &OwnedFd, mask: StatxFlags) -> io::Result<rustix::fs::Statx> {
    Ok(rustix::fs::statx(dir, c"", AtFlags::EMPTY_PATH, mask)?)
}

fn stamp(t: rustix::fs::StatxTimestamp) -> ChangeTime {
    (t.tv_sec, t.tv_nsec)
}

/// Whether `t` is the fixed time every reused directory shows.
fn at_fixed_time(t: rustix::fs::StatxTimestamp) -> bool {
    stamp(t) == (FIXED_SECS as i64, 0)
}

/// The margin for a change time recorded as `seen` (see `CTIME_MARGIN_FINE`).
fn margin(seen: ChangeTime) -> Duration {
    if !seen.1.is_multiple_of(1_000) {
        CTIME_MARGIN_FINE
    } else {
        CTIME_MARGIN
    }
}

/// Whether an attempt that began at `taken` changed nothing in the directory: its change time
/// is still the one recorded when it was last seen empty, recorded at least `margin` before,
/// and its other times are still the fixed ones.
fn unchanged(times: &rustix::fs::Statx, seen_empty: Option<ChangeTime>, taken: SystemTime) -> bool {
    let Some(seen) = seen_empty else { return false };
    if !StatxFlags::from_bits_retain(times.stx_mask).contains(StatxFlags::CTIME) {
        return false;
    }
    let Ok(since_epoch) = taken.duration_since(SystemTime::UNIX_EPOCH) else {
        return false;
    };
    let recorded_before = u64::try_from(seen.0)
        .is_ok_and(|secs| Duration::new(secs, seen.1).saturating_add(margin(seen)) <= since_epoch);
    stamp(times.stx_ctime) == seen
        && recorded_before
        && at_fixed_time(times.stx_atime)
        && at_fixed_time(times.stx_mtime)
}

/// Whether the directory is empty, and if so, its times set back to the fixed value (left as
/// they are when still at it: writing an inode's times is the dearest step here). Reads the
/// entries only if its change time cannot prove them unchanged (see the module's notes).
fn ready_again(scratch: &mut Scratch) -> io::Result<bool> {
    let dir = &scratch.fd;
    let times = stat_times(dir, TIMES)?;
    if unchanged(&times, scratch.seen_empty, scratch.taken) {
        return Ok(true);
    }
    scratch.seen_empty = None;
    // Read the entries from the start again: the last check read to the end.
    rustix::fs::seek(dir, SeekFrom::Start(0))?;
    let mut buf = [MaybeUninit::<u8>::uninit(); 512];
    let mut entries = RawDir::new(dir, &mut buf);
    while let Some(entry) = entries.next() {
        if !matches!(entry?.file_name().to_bytes(), b"." | b"..") {
            return Ok(false);
        }
    }
    let seen = if at_fixed_time(times.stx_atime) && at_fixed_time(times.stx_mtime) {
        times.stx_ctime
    } else {
        rustix::fs::futimens(dir, &fixed_timestamps())?;
        stat_times(dir, StatxFlags::CTIME)?.stx_ctime
    };
    scratch.seen_empty = Some(stamp(seen));
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

    /// Takes the directory again as an attempt that began `after` past now.
    fn take_later(pool: &ScratchPool, path: &Path, after: Duration) -> Scratch {
        let mut again = pool.take().unwrap();
        assert_eq!(again.path(), path, "reused");
        again.taken = SystemTime::now() + after;
        again
    }

    #[test]
    fn a_directory_seen_empty_long_before_is_still_checked_after_a_change() {
        let (_root, pool, dir, path) = pool_and_dir();
        pool.give_back(dir);
        let late = take_later(&pool, &path, Duration::from_secs(60));
        assert!(late.seen_empty.is_some(), "recorded when last seen empty");
        fs::write(path.join("left"), b"x").unwrap();
        pool.give_back(late);
        assert!(!path.exists(), "the change time gave the file away");
    }

    #[test]
    fn a_file_behind_reset_times_changes_the_change_time() {
        let (_root, pool, dir, path) = pool_and_dir();
        pool.give_back(dir);
        let late = take_later(&pool, &path, Duration::from_secs(60));
        fs::write(path.join("left"), b"x").unwrap();
        reset_times(&path).unwrap();
        pool.give_back(late);
        assert!(!path.exists());
    }

    #[test]
    fn an_unchanged_directory_is_proven_empty_only_well_after_it_was_seen_empty() {
        let (_root, pool, dir, path) = pool_and_dir();
        pool.give_back(dir);
        let scratch = pool.take().unwrap();
        let seen = scratch.seen_empty.expect("seen empty");
        let times = stat_times(&scratch.fd, TIMES).unwrap();
        let recorded = SystemTime::UNIX_EPOCH + Duration::new(seen.0 as u64, seen.1);
        let at = |d: Duration| recorded + d;
        let margin = margin(seen);
        assert!(unchanged(&times, Some(seen), at(margin)));
        assert!(
            !unchanged(&times, Some(seen), at(margin - Duration::from_millis(1))),
            "a change stamped by a lagging clock could carry the same time"
        );
        assert!(!unchanged(&times, None, at(CTIME_MARGIN)));
        let other = (seen.0, seen.1 ^ 1);
        assert!(!unchanged(&times, Some(other), at(CTIME_MARGIN)));
        File::open(&path)
            .unwrap()
            .set_times(FileTimes::new().set_accessed(SystemTime::now()))
            .unwrap();
        let read = stat_times(&scratch.fd, TIMES).unwrap();
        assert!(!unchanged(
            &read,
            Some(stamp(read.stx_ctime)),
            at(CTIME_MARGIN * 100)
        ));
    }

    #[test]
    fn times_in_whole_microseconds_may_come_from_a_coarse_filesystem() {
        assert_eq!(margin((1, 123_456_789)), CTIME_MARGIN_FINE);
        assert_eq!(
            margin((1, 123_457_000)),
            CTIME_MARGIN,
            "1 µs granularity or coarser"
        );
        assert_eq!(margin((1, 0)), CTIME_MARGIN, "whole seconds");
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
