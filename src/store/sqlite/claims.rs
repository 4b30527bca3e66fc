//! Claims: due scheduled jobs made queued (the `due` move), then queued jobs of one queue
//! taken under a new lease (the `claim` move), within the queue's pause and concurrency, in
//! order priority desc, run_at asc, id asc. One write; its rows are decoded by the caller.

use rusqlite::{Connection, OptionalExtension};

use super::counts::StateCounts;
use super::rows::{CLAIMED_COLUMNS, JobRow, Parsed, query_rows};
use super::{corrupt, db};
use crate::domain::{Event, JobState, Lease, QueueName, Timestamp};
use crate::store::guards::{Sql, guard, target};
use crate::store::{Claimed, Claims, Promoted, StoreResult};

/// Makes due `scheduled` jobs (of every queue) `queued`; returns their id, task and queue.
pub(super) fn promote_due(
    conn: &Connection,
    now: Timestamp,
) -> StoreResult<Vec<(String, String, String)>> {
    static PROMOTE: Sql = Sql::new(|| {
        format!(
            "UPDATE jobs SET state = '{}' WHERE {} AND run_at <= ?1 RETURNING id, task, queue",
            target(Event::Due),
            guard(Event::Due)
        )
    });
    conn.prepare_cached(PROMOTE.get())
        .map_err(db)?
        .query_map([now.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)
}

/// A claim as the writer took it, decoded by its caller off the writer thread.
pub(super) struct RawClaim {
    pub(super) rows: Vec<JobRow>,
    pub(super) lease: Lease,
    pub(super) at_concurrency: bool,
    pub(super) promoted: Vec<(String, String, String)>,
}

impl RawClaim {
    pub(super) fn decode(self) -> StoreResult<Claims> {
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

/// One claim's parameters: up to `max` jobs of `queue` for `worker`.
#[derive(Clone, Copy)]
pub(super) struct ClaimOf<'a> {
    pub(super) queue: &'a QueueName,
    pub(super) worker: &'a str,
    pub(super) max: u32,
    pub(super) lease_ttl_ms: i64,
    pub(super) now: Timestamp,
}

/// Promotes due scheduled jobs, then claims queued jobs: [`Store::claim`]'s write.
pub(super) fn claim_in(conn: &Connection, claim: ClaimOf<'_>) -> StoreResult<RawClaim> {
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

/// Takes up to `max` queued jobs of `queue` under a new lease, within the queue's
/// concurrency; says whether that concurrency stopped it. The lease's token is the store's
/// lease counter raised by one (only when jobs are taken), so tokens only grow.
pub(super) fn take_queued(
    conn: &Connection,
    claim: ClaimOf<'_>,
) -> StoreResult<(Vec<JobRow>, Lease, bool)> {
    let ClaimOf {
        queue,
        worker,
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
        token: 0,
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
    let token = conn
        .prepare_cached("SELECT n + 1 FROM counters WHERE name = 'lease'")
        .map_err(db)?
        .query_row([], |r| r.get::<_, i64>(0))
        .map_err(db)?;
    static CLAIM: Sql = Sql::new(|| {
        format!(
            "UPDATE jobs SET state = '{}', lease = ?1, lease_expires = ?2, worker = ?3, \
             attempts = attempts + 1, started_at = ?4, cancel_requested = 0, \
             progress_done = NULL, progress_total = NULL \
             WHERE id IN (SELECT id FROM jobs WHERE queue = ?5 AND {} \
                          ORDER BY priority DESC, run_at, id LIMIT ?6) \
             RETURNING {CLAIMED_COLUMNS}",
            target(Event::Claim),
            guard(Event::Claim)
        )
    });
    let rows = query_rows(
        conn,
        CLAIM.get(),
        &[&token, &expires, &worker, &now.0, &queue.as_str(), &room],
        |row| JobRow::claimed(row, &claim, token, expires),
    )?;
    if !rows.is_empty() {
        conn.prepare_cached("UPDATE counters SET n = ?1 WHERE name = 'lease'")
            .map_err(db)?
            .execute([token])
            .map_err(db)?;
    }
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
