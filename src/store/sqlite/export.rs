//! Reading the whole store for a copy (`store::copy`): one read transaction on a connection
//! of its own, so the batches are one state of the store even while a server writes to it.

use std::collections::HashSet;

use rusqlite::Connection;

use super::ends::attempt_row;
use super::rows::{JOB_COLUMNS, query_jobs};
use super::{SqliteStore, catalog, db, open_reader, schedules};
use crate::domain::{JobId, ModuleDigest};
use crate::store::copy::{BATCH, Batch, Batches, Catalog, JobCopy};
use crate::store::{BlobError, StoreError, StoreResult};

impl SqliteStore {
    /// Sends everything the store holds to `out`, ending with [`Batch::Done`]; a failure is
    /// sent too, so the target does not commit. Blocks: run it on a thread of its own. Stops
    /// early, without error, when the receiver is gone.
    pub fn export(&self, out: &Batches) -> StoreResult<()> {
        let result = self.export_all(out);
        if let Err(e) = &result {
            let _ = out.blocking_send(Err(e.clone()));
        }
        result
    }

    fn export_all(&self, out: &Batches) -> StoreResult<()> {
        let conn = open_reader(&self.inner.path)?;
        conn.execute_batch("BEGIN").map_err(db)?;
        let catalog = Catalog {
            tasks: catalog::list_tasks(&conn)?,
            queues: catalog::queue_configs(&conn)?,
            schedules: schedules::select(&conn, "ORDER BY name", &[])?,
            tokens: catalog::list_tokens(&conn)?,
        };
        let mut sent = HashSet::new();
        let versions = catalog
            .tasks
            .iter()
            .flat_map(|t| t.versions.iter().map(|v| v.digest))
            .collect::<Vec<_>>();
        let modules = self.modules(versions, &mut sent)?;
        if !send(out, Batch::Catalog(catalog)) || !send(out, Batch::Modules(modules)) {
            return Ok(());
        }
        let mut after = String::new();
        loop {
            let jobs = jobs_after(&conn, &after)?;
            let Some(last) = jobs.last() else { break };
            after = last.job.id.to_string();
            let modules = self.modules(jobs.iter().map(|j| j.job.digest), &mut sent)?;
            if !modules.is_empty() && !send(out, Batch::Modules(modules)) {
                return Ok(());
            }
            if !send(out, Batch::Jobs(jobs)) {
                return Ok(());
            }
        }
        conn.execute_batch("COMMIT").map_err(db)?;
        send(out, Batch::Done);
        Ok(())
    }

    /// The bytes of each digest not in `sent` (which they join); `None` for a module the blob
    /// directory does not have.
    fn modules(
        &self,
        digests: impl IntoIterator<Item = ModuleDigest>,
        sent: &mut HashSet<ModuleDigest>,
    ) -> StoreResult<Vec<(ModuleDigest, Option<Vec<u8>>)>> {
        let mut out = Vec::new();
        for digest in digests {
            if !sent.insert(digest) {
                continue;
            }
            match self.inner.blobs.get(&digest) {
                Ok(bytes) => out.push((digest, Some(bytes))),
                Err(BlobError::NotFound(_)) => out.push((digest, None)),
                Err(e) => return Err(StoreError::io(format!("cannot read module {digest}"), e)),
            }
        }
        Ok(out)
    }
}

/// False when the receiver is gone.
fn send(out: &Batches, batch: Batch) -> bool {
    out.blocking_send(Ok(batch)).is_ok()
}

/// The next jobs after id `after` in id order, with their cancel flags and attempts.
fn jobs_after(conn: &Connection, after: &str) -> StoreResult<Vec<JobCopy>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id > ?1 ORDER BY id LIMIT ?2");
    let jobs = query_jobs(conn, &sql, &[&after, &BATCH])?;
    let (Some(first), Some(last)) = (jobs.first(), jobs.last()) else {
        return Ok(Vec::new());
    };
    let (first, last) = (first.0.id.to_string(), last.0.id.to_string());
    let cancelling: HashSet<String> = conn
        .prepare_cached(
            "SELECT id FROM jobs WHERE cancel_requested AND id >= ?1 AND id <= ?2 ORDER BY id",
        )
        .map_err(db)?
        .query_map([&first, &last], |r| r.get(0))
        .map_err(db)?
        .collect::<Result<_, _>>()
        .map_err(db)?;
    let mut attempts = attempts_between(conn, &first, &last)?
        .into_iter()
        .peekable();
    let mut out = Vec::with_capacity(jobs.len());
    for (job, lease) in jobs {
        let mut own = Vec::new();
        while let Some((_, a)) = attempts.next_if(|(id, _)| *id == job.id) {
            own.push(a);
        }
        out.push(JobCopy {
            cancel_requested: cancelling.contains(&job.id.to_string()),
            job,
            lease,
            attempts: own,
        });
    }
    Ok(out)
}

/// The attempts of the jobs with ids from `first` to `last`, in job id and number order.
fn attempts_between(
    conn: &Connection,
    first: &str,
    last: &str,
) -> StoreResult<Vec<(JobId, crate::domain::AttemptRecord)>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT job_id, number, reason, trap_kind, exit_code, message, stderr, \
             stderr_truncated, receipt, worker, started_at, finished_at, replay FROM attempts \
             WHERE job_id >= ?1 AND job_id <= ?2 ORDER BY job_id, number",
        )
        .map_err(db)?;
    let mut rows = stmt.query([first, last]).map_err(db)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(db)? {
        let id: String = r.get(0).map_err(db)?;
        let id = id.parse().map_err(|e| super::corrupt("attempts", e))?;
        out.push((id, attempt_row(r, 1)?));
    }
    Ok(out)
}
