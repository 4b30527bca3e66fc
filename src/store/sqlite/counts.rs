//! `job_counts`: every queue's jobs counted per state, kept by the writes that insert, move or
//! delete jobs, in the same transaction. Queue stats, health checks, metrics scrapes and a
//! claim's room under its queue's concurrency read these counts, never the jobs: counting a
//! state of a million jobs was a scan of the table.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use super::db;
use crate::domain::JobState;
use crate::store::StoreResult;

/// What one write changes in `job_counts`, by queue and state, written at its end: a batch
/// of submits, a claim or a batch of finishes updates a row per queue and state, not per job.
#[derive(Default)]
pub(super) struct StateCounts<'a>(BTreeMap<(std::borrow::Cow<'a, str>, &'static str), i64>);

impl<'a> StateCounts<'a> {
    /// Counts `n` jobs of `queue` entering `state` (leaving it if `n` is negative).
    pub(super) fn add(
        &mut self,
        queue: impl Into<std::borrow::Cow<'a, str>>,
        state: JobState,
        n: i64,
    ) {
        *self.0.entry((queue.into(), state.as_str())).or_default() += n;
    }

    /// Counts `n` jobs of `queue` moving from one state to another.
    pub(super) fn moved(&mut self, queue: &'a str, from: JobState, to: JobState, n: i64) {
        if from != to {
            self.add(queue, from, -n);
            self.add(queue, to, n);
        }
    }

    pub(super) fn write(&self, conn: &Connection) -> StoreResult<()> {
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
