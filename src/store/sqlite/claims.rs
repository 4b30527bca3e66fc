//! Claims: due scheduled jobs made queued (the `due` move), then queued jobs of one queue
//! taken under a new lease (the `claim` move), within the queue's pause, concurrency and
//! context guards, in order priority desc, run_at asc, id asc. One write; its rows are
//! decoded by the caller.
//!
//! Context guards: a queued job whose concurrency key already runs the queue's
//! `key_concurrency` jobs is set aside when a claim meets it (`guarded`, out of `jobs_claim`,
//! its key listed in `guarded_keys`), so no claim scans it again; every claim first gives the
//! listed keys of its queue their free room back. Claims of a queue take turns (the one
//! writer), so the running count a claim reads holds until it commits.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

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
/// concurrency and its context guards; says whether either stopped it. The lease's token is
/// the store's lease counter raised by one (only when jobs are taken), so tokens only grow.
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
    let settings: Option<(u32, bool, i64, u32)> = conn
        .prepare_cached(
            "SELECT q.concurrency, q.paused, coalesce(c.n, 0), q.key_concurrency FROM queues q \
             LEFT JOIN job_counts c ON c.queue = q.name AND c.state = 'running' \
             WHERE q.name = ?1",
        )
        .map_err(db)?
        .query_row([queue.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()
        .map_err(db)?;
    let none = Lease {
        token: 0,
        expires_at: Timestamp(0),
    };
    let Some((concurrency, paused, running, key_limit)) = settings else {
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
    let guarded = free_guarded(conn, queue.as_str(), key_limit)?;
    let expires = now.0 + lease_ttl_ms;
    let token = conn
        .prepare_cached("SELECT n + 1 FROM counters WHERE name = 'lease'")
        .map_err(db)?
        .query_row([], |r| r.get::<_, i64>(0))
        .map_err(db)?;
    let rows = if has_keyed(conn, queue.as_str())? {
        let ids = pick(conn, queue.as_str(), room as usize, key_limit)?;
        take_each(conn, &claim, &ids, token, expires)?
    } else {
        static CLAIM: Sql = Sql::new(|| {
            format!(
                "UPDATE jobs SET state = '{}', lease = ?1, lease_expires = ?2, worker = ?3, \
                 attempts = attempts + 1, started_at = ?4, cancel_requested = 0, \
                 progress_done = NULL, progress_total = NULL \
                 WHERE id IN (SELECT id FROM jobs WHERE queue = ?5 AND {} AND guarded = 0 \
                              ORDER BY priority DESC, run_at, id LIMIT ?6) \
                 RETURNING {CLAIMED_COLUMNS}",
                target(Event::Claim),
                guard(Event::Claim)
            )
        });
        query_rows(
            conn,
            CLAIM.get(),
            &[&token, &expires, &worker, &now.0, &queue.as_str(), &room],
            |row| JobRow::claimed(row, &claim, token, expires),
        )?
    };
    if !rows.is_empty() {
        conn.prepare_cached("UPDATE counters SET n = ?1 WHERE name = 'lease'")
            .map_err(db)?
            .execute([token])
            .map_err(db)?;
    }
    let short = (rows.len() as i64) < i64::from(max);
    let at_concurrency =
        (limited && rows.len() as i64 == room) || (short && (guarded || has_guarded(conn, queue)?));
    Ok((
        rows,
        Lease {
            token,
            expires_at: Timestamp(expires),
        },
        at_concurrency,
    ))
}

/// How many jobs of `queue` with concurrency key `key` are running.
pub(super) fn key_running(conn: &Connection, queue: &str, key: &str) -> StoreResult<i64> {
    conn.prepare_cached(
        "SELECT count(*) FROM jobs WHERE queue = ?1 AND concurrency_key = ?2 AND state = 'running'",
    )
    .map_err(db)?
    .query_row([queue, key], |r| r.get(0))
    .map_err(db)
}

/// Gives the keys set aside in `queue` their room back: for each, as many of its guarded jobs
/// (in claim order) as `limit` leaves room for beside its running ones become claimable
/// again, and a key with none left is struck off. Says whether any key is still listed.
fn free_guarded(conn: &Connection, queue: &str, limit: u32) -> StoreResult<bool> {
    let keys: Vec<String> = conn
        .prepare_cached("SELECT key FROM guarded_keys WHERE queue = ?1")
        .map_err(db)?
        .query_map([queue], |r| r.get(0))
        .map_err(db)?
        .collect::<Result<_, _>>()
        .map_err(db)?;
    let mut listed = false;
    for key in keys {
        let free = i64::from(limit) - key_running(conn, queue, &key)?;
        if free > 0 {
            conn.prepare_cached(
                "UPDATE jobs SET guarded = 0 WHERE id IN (SELECT id FROM jobs \
                 WHERE queue = ?1 AND concurrency_key = ?2 AND state = 'queued' AND guarded = 1 \
                 ORDER BY priority DESC, run_at, id LIMIT ?3)",
            )
            .map_err(db)?
            .execute(params![queue, key, free])
            .map_err(db)?;
        }
        let left: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = ?1 AND concurrency_key = ?2 \
                 AND state = 'queued' AND guarded = 1)",
            )
            .map_err(db)?
            .query_row([queue, &key], |r| r.get(0))
            .map_err(db)?;
        if left {
            listed = true;
        } else {
            conn.prepare_cached("DELETE FROM guarded_keys WHERE queue = ?1 AND key = ?2")
                .map_err(db)?
                .execute([queue, &key])
                .map_err(db)?;
        }
    }
    Ok(listed)
}

/// Whether `queue` has claimable jobs with a concurrency key (through `jobs_keyed`): only
/// then does a claim look at keys.
fn has_keyed(conn: &Connection, queue: &str) -> StoreResult<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = ?1 AND state = 'queued' \
         AND guarded = 0 AND concurrency_key IS NOT NULL)",
    )
    .map_err(db)?
    .query_row([queue], |r| r.get(0))
    .map_err(db)
}

/// Whether jobs of `queue` wait behind a context guard.
fn has_guarded(conn: &Connection, queue: &QueueName) -> StoreResult<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM guarded_keys WHERE queue = ?1)")
        .map_err(db)?
        .query_row([queue.as_str()], |r| r.get(0))
        .map_err(db)
}

/// The ids of up to `room` claimable jobs of `queue` in claim order, passing over (and
/// setting aside) those whose key already runs `limit` jobs, counting the ones picked.
fn pick(conn: &Connection, queue: &str, room: usize, limit: u32) -> StoreResult<Vec<String>> {
    let mut picked = Vec::with_capacity(room);
    let mut aside: Vec<(String, String)> = Vec::new();
    let mut keys: HashMap<String, i64> = HashMap::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, concurrency_key FROM jobs WHERE queue = ?1 AND state = 'queued' \
                 AND guarded = 0 ORDER BY priority DESC, run_at, id",
            )
            .map_err(db)?;
        let mut rows = stmt.query([queue]).map_err(db)?;
        while picked.len() < room {
            let Some(row) = rows.next().map_err(db)? else {
                break;
            };
            let id: String = row.get(0).map_err(db)?;
            let Some(key) = row.get::<_, Option<String>>(1).map_err(db)? else {
                picked.push(id);
                continue;
            };
            let n = match keys.get_mut(&key) {
                Some(n) => n,
                None => {
                    let running = key_running(conn, queue, &key)?;
                    keys.entry(key.clone()).or_insert(running)
                }
            };
            if *n < i64::from(limit) {
                *n += 1;
                picked.push(id);
            } else {
                aside.push((id, key));
            }
        }
    }
    for (id, key) in aside {
        conn.prepare_cached("UPDATE jobs SET guarded = 1 WHERE id = ?1 AND state = 'queued'")
            .map_err(db)?
            .execute([&id])
            .map_err(db)?;
        conn.prepare_cached("INSERT OR IGNORE INTO guarded_keys (queue, key) VALUES (?1, ?2)")
            .map_err(db)?
            .execute([queue, &key])
            .map_err(db)?;
    }
    Ok(picked)
}

/// The `claim` move of each job in `ids`, one statement each, under one lease.
fn take_each(
    conn: &Connection,
    claim: &ClaimOf<'_>,
    ids: &[String],
    token: i64,
    expires: i64,
) -> StoreResult<Vec<JobRow>> {
    static TAKE: Sql = Sql::new(|| {
        format!(
            "UPDATE jobs SET state = '{}', lease = ?1, lease_expires = ?2, worker = ?3, \
             attempts = attempts + 1, started_at = ?4, cancel_requested = 0, \
             progress_done = NULL, progress_total = NULL \
             WHERE id = ?5 AND {} RETURNING {CLAIMED_COLUMNS}",
            target(Event::Claim),
            guard(Event::Claim)
        )
    });
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        rows.extend(query_rows(
            conn,
            TAKE.get(),
            &[&token, &expires, &claim.worker, &claim.now.0, id],
            |row| JobRow::claimed(row, claim, token, expires),
        )?);
    }
    Ok(rows)
}
