//! Schedules: their records, and a fire applied once. A fire moves the schedule's next fire
//! time only if it still holds the value the caller read, and submits the fire's jobs in the
//! same transaction; a second caller with the same value changes nothing.

use rusqlite::{Connection, params};

use super::jobs::insert_all;
use super::rows::{EncodedJob, json, parse_json};
use super::{corrupt, db};
use crate::domain::{ScheduleName, ScheduleRecord, Timestamp};
use crate::store::{Inserted, StoreResult};

const SCHEDULE_COLUMNS: &str = "name, spec, job, overlap, catch_up, paused, next_fire, last_fire, \
     last_job, fires, skipped, last_error, created_at, updated_at";

fn query_schedules(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<ScheduleRecord>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(db)? {
        let text = |i: usize| -> StoreResult<String> { r.get(i).map_err(db) };
        let opt_ts = |i: usize| -> StoreResult<Option<Timestamp>> {
            Ok(r.get::<_, Option<i64>>(i).map_err(db)?.map(Timestamp))
        };
        let last_job: Option<String> = r.get(8).map_err(db)?;
        out.push(ScheduleRecord {
            name: text(0)?.parse().map_err(|e| corrupt("schedules", e))?,
            spec: parse_json("schedules", &text(1)?)?,
            job: parse_json("schedules", &text(2)?)?,
            overlap: parse_json("schedules", &text(3)?)?,
            catch_up: parse_json("schedules", &text(4)?)?,
            paused: r.get(5).map_err(db)?,
            next_fire: opt_ts(6)?,
            last_fire: opt_ts(7)?,
            last_job: last_job
                .map(|j| j.parse().map_err(|e| corrupt("schedules", e)))
                .transpose()?,
            fires: r.get::<_, i64>(9).map_err(db)? as u64,
            skipped: r.get::<_, i64>(10).map_err(db)? as u64,
            last_error: r.get(11).map_err(db)?,
            created_at: Timestamp(r.get(12).map_err(db)?),
            updated_at: Timestamp(r.get(13).map_err(db)?),
        });
    }
    Ok(out)
}

/// Creates a schedule, or updates its definition, pause state and next fire, keeping the
/// history stored: a fire committed since the caller read the schedule is not undone.
pub(super) fn put(conn: &Connection, r: &ScheduleRecord) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO schedules (name, spec, job, overlap, catch_up, paused, next_fire, \
         last_fire, last_job, fires, skipped, last_error, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
         ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, job = excluded.job, \
         overlap = excluded.overlap, catch_up = excluded.catch_up, paused = excluded.paused, \
         next_fire = excluded.next_fire, updated_at = excluded.updated_at",
    )
    .map_err(db)?
    .execute(params![
        r.name.as_str(),
        json(&r.spec),
        json(&r.job),
        json(&r.overlap),
        json(&r.catch_up),
        r.paused,
        r.next_fire.map(|t| t.0),
        r.last_fire.map(|t| t.0),
        r.last_job.map(|j| j.to_string()),
        r.fires as i64,
        r.skipped as i64,
        r.last_error,
        r.created_at.0,
        r.updated_at.0,
    ])
    .map_err(db)?;
    Ok(())
}

/// The schedules that `filter` (a `WHERE` and `ORDER BY` clause, its values in `params`)
/// selects.
pub(super) fn select(
    conn: &Connection,
    filter: &str,
    params: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<ScheduleRecord>> {
    let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules {filter}");
    query_schedules(conn, &sql, params)
}

/// Deletes a schedule; false if unknown. Its jobs stay.
pub(super) fn delete(conn: &Connection, name: &ScheduleName) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM schedules WHERE name = ?1")
        .map_err(db)?
        .execute([name.as_str()])
        .map_err(db)?
        > 0)
}

/// The earliest next fire of an unpaused schedule.
pub(super) fn next_fire(conn: &Connection) -> StoreResult<Option<Timestamp>> {
    let t: Option<i64> = conn
        .prepare_cached(
            "SELECT min(next_fire) FROM schedules WHERE paused = 0 AND next_fire IS NOT NULL",
        )
        .map_err(db)?
        .query_row([], |r| r.get(0))
        .map_err(db)?;
    Ok(t.map(Timestamp))
}

/// What one fire writes: the schedule's times and counters, and its jobs, if the schedule's
/// next fire is still `expected`. `None` if another caller got there first.
pub(super) struct FireWrite {
    pub(super) expected: Timestamp,
    pub(super) next: Option<Timestamp>,
    pub(super) fired_at: Option<Timestamp>,
    pub(super) skipped: u64,
    pub(super) error: Option<String>,
    pub(super) jobs: Vec<EncodedJob>,
}

/// Applies a fire (see [`FireWrite`]).
pub(super) fn fire(
    conn: &Connection,
    name: &ScheduleName,
    firing: &FireWrite,
    now: Timestamp,
) -> StoreResult<Option<Vec<Inserted>>> {
    let moved = conn
        .prepare_cached(
            "UPDATE schedules SET next_fire = ?3, last_fire = coalesce(?4, last_fire), \
             fires = fires + ?5, skipped = skipped + ?6, last_error = ?7, updated_at = ?8 \
             WHERE name = ?1 AND next_fire = ?2 AND paused = 0",
        )
        .map_err(db)?
        .execute(params![
            name.as_str(),
            firing.expected.0,
            firing.next.map(|t| t.0),
            firing.fired_at.map(|t| t.0),
            firing.jobs.len() as i64,
            firing.skipped as i64,
            firing.error,
            now.0,
        ])
        .map_err(db)?;
    if moved == 0 {
        return Ok(None);
    }
    let inserted = insert_all(conn, &firing.jobs)?;
    if let Some(last) = inserted.last() {
        conn.prepare_cached("UPDATE schedules SET last_job = ?2 WHERE name = ?1")
            .map_err(db)?
            .execute(params![name.as_str(), last.id().to_string()])
            .map_err(db)?;
    }
    Ok(Some(inserted))
}
