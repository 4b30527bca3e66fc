//! Whether the store can write. A write that fails because the disk is full marks the store
//! (and is counted); the next write that succeeds clears the mark. `/healthz` reads it: with
//! the mark set it tries a small write of its own, so the mark clears once space is back,
//! also with no traffic; and where the store's disk is visible (SQLite), less than
//! [`MIN_FREE_BYTES`] free on it is a full disk too, since a small write can still fit in
//! space the store's log already holds while a submit does not.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Service, ServiceResult};
use crate::domain::{QueueConfig, QueueName, Timestamp};
use crate::store::StoreResult;

/// Below this much free space on the store's disk, the store is reported as full.
const MIN_FREE_BYTES: u64 = 1 << 20;

/// What the service saw of the store's writes.
#[derive(Debug, Default)]
pub(crate) struct StoreWrites {
    /// Since when writes fail for want of space; `None` while they succeed.
    full_since: Mutex<Option<Timestamp>>,
    disk_full_total: AtomicU64,
}

/// Whether the store takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreHealth {
    Writable,
    /// Its disk is full: submits and uploads are refused (507) until there is space again.
    DiskFull {
        since: Timestamp,
    },
}

impl Service {
    /// Notes how a write of the store went.
    pub(crate) fn noted<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        let writes = &self.shared.store_writes;
        let mut since = writes.full_since.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => *since = None,
            Err(e) if e.is_disk_full() => {
                writes.disk_full_total.fetch_add(1, Ordering::Relaxed);
                if since.is_none() {
                    *since = Some(self.now());
                    tracing::warn!(error = %crate::telemetry::Chain(e), "the store's disk is full");
                }
            }
            Err(_) => {}
        }
        result
    }

    /// Whether the store takes writes; while its disk was full, tries a write to find out.
    pub async fn store_health(&self) -> ServiceResult<StoreHealth> {
        let since = *self
            .shared
            .store_writes
            .full_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let low = self
            .shared
            .store
            .free_bytes()
            .is_some_and(|free| free < MIN_FREE_BYTES);
        let Some(since) = since else {
            return Ok(if low {
                StoreHealth::DiskFull { since: self.now() }
            } else {
                StoreHealth::Writable
            });
        };
        // Writes a queue's settings as they are: a real write, which changes nothing.
        let settings = self.shared.queue_settings().await?;
        let config = settings
            .first()
            .map(|(config, _)| config.clone())
            .unwrap_or_else(|| QueueConfig::with_defaults(QueueName::default_queue()));
        let probe = self.noted(self.shared.store.put_queue(&config).await);
        Ok(match probe {
            Ok(()) if !low => StoreHealth::Writable,
            Ok(()) => StoreHealth::DiskFull { since: self.now() },
            Err(e) if e.is_disk_full() => StoreHealth::DiskFull { since },
            Err(e) => return Err(e.into()),
        })
    }

    /// Writes refused because the store's disk was full, since start.
    pub fn disk_full_total(&self) -> u64 {
        self.shared
            .store_writes
            .disk_full_total
            .load(Ordering::Relaxed)
    }
}
