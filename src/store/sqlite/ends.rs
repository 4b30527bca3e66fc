//! The ends of attempts: each job's next state written as one update guarded by its
//! attempt's lease (a stale lease writes nothing and says so), and the attempts of those
//! written recorded many rows per statement. Also reading a job's attempts back.

use rusqlite::{Connection, params};

use super::batch::{BatchSql, statement_chunks, values_rows};
use super::counts::StateCounts;
use super::moves::end_attempt;
use super::rows::{EncodedAttempt, EncodedEnd, parse_json};
use super::{corrupt, db};
use crate::domain::{AttemptRecord, AttemptReplay, Event, Finish, JobId, JobState, Timestamp};
use crate::store::StoreResult;
use crate::store::guards::Sql;
use rusqlite::types::ValueRef;

/// Writes attempt ends; says for each whether it was written (false: its lease is stale).
/// Each job's next state is one guarded update; the attempts of those written are recorded
/// many rows per statement.
pub(super) fn finish_all(
    conn: &Connection,
    ends: &[EncodedEnd],
    now: Timestamp,
) -> StoreResult<Vec<bool>> {
    let mut written = Vec::with_capacity(ends.len());
    let mut recorded: Vec<AttemptRow<'_>> = Vec::with_capacity(ends.len());
    let mut counts = StateCounts::default();
    let (mut completed, mut failed) = (0i64, 0i64);
    for end in ends {
        let ok = finish_one(conn, end, now)?;
        if ok {
            let queue = end.end.queue.as_str();
            let state = end.end.finish.state();
            counts.moved(queue, JobState::Running, state, 1);
            completed += i64::from(state == JobState::Completed);
            failed += i64::from(state == JobState::Failed);
        }
        if let (true, Some(record), Some(encoded)) = (ok, &end.end.attempt, &end.attempt) {
            recorded.push((&end.key, record, encoded));
        }
        written.push(ok);
    }
    for chunk in statement_chunks(&recorded) {
        insert_attempts(conn, chunk)?;
    }
    counts.write(conn)?;
    if completed + failed > 0 {
        conn.prepare_cached(
            "INSERT INTO ended_minutes (minute, completed, failed) VALUES (?1, ?2, ?3) \
             ON CONFLICT (minute) DO UPDATE SET completed = completed + excluded.completed, \
             failed = failed + excluded.failed",
        )
        .map_err(db)?
        .execute(rusqlite::params![
            now.0.div_euclid(60_000),
            completed,
            failed
        ])
        .map_err(db)?;
    }
    Ok(written)
}

/// Moves the job of one attempt's end to its next state, if the attempt's lease still holds.
fn finish_one(conn: &Connection, encoded: &EncodedEnd, now: Timestamp) -> StoreResult<bool> {
    static COMPLETE: Sql = Sql::new(|| {
        end_attempt(
            Event::Complete,
            ", output = ?3, error_reason = NULL, error_message = NULL, finished_at = ?4",
        )
    });
    static BACK_OFF: Sql = Sql::new(|| {
        end_attempt(
            Event::BackOff,
            ", run_at = ?3, limits = ?4, error_reason = ?5, error_message = ?6",
        )
    });
    static FAIL: Sql = Sql::new(|| {
        end_attempt(
            Event::Fail,
            ", error_reason = ?3, error_message = ?4, finished_at = ?5",
        )
    });
    static CANCEL: Sql = Sql::new(|| {
        end_attempt(
            Event::Cancel,
            ", error_reason = ?3, error_message = ?4, finished_at = ?5",
        )
    });
    static INTERRUPT: Sql = Sql::new(|| {
        end_attempt(
            Event::Interrupt,
            ", attempts = max(attempts - 1, 0), progress_done = NULL, progress_total = NULL",
        )
    });
    let EncodedEnd {
        end, key, limits, ..
    } = encoded;
    let token = end.lease.token;
    let run = |sql: &Sql, values: &[&dyn rusqlite::ToSql]| -> StoreResult<usize> {
        conn.prepare_cached(sql.get())
            .map_err(db)?
            .execute(values)
            .map_err(db)
    };
    let changed = match &end.finish {
        Finish::Completed { output } => run(&COMPLETE, params![key, token, output, now.0])?,
        Finish::Retry { run_at, error, .. } => {
            let reason = error.reason.as_str();
            let values = params![key, token, run_at.0, limits, reason, error.message];
            run(&BACK_OFF, values)?
        }
        Finish::Failed { error } | Finish::Cancelled { error } => {
            let sql = if matches!(end.finish, Finish::Failed { .. }) {
                &FAIL
            } else {
                &CANCEL
            };
            let reason = error.reason.as_str();
            run(sql, params![key, token, reason, error.message, now.0])?
        }
        Finish::Interrupted => run(&INTERRUPT, params![key, token])?,
    };
    Ok(changed > 0)
}

const INSERT_ATTEMPT: &str = "INSERT OR REPLACE INTO attempts (job_id, number, reason, \
     trap_kind, exit_code, message, stderr, stderr_truncated, receipt, worker, started_at, \
     finished_at, replay) VALUES ";

const INSERT_ATTEMPT_WIDTH: usize = 13;

/// An attempt to record: its job's key, the record and its encoded columns.
type AttemptRow<'a> = (&'a String, &'a AttemptRecord, &'a EncodedAttempt);

/// Records attempts in one statement.
fn insert_attempts(conn: &Connection, rows: &[AttemptRow<'_>]) -> StoreResult<()> {
    static SQL: BatchSql = BatchSql::new(|rows| {
        format!(
            "{INSERT_ATTEMPT}{}",
            values_rows(rows, INSERT_ATTEMPT_WIDTH, 1)
        )
    });
    let mut params: Vec<&dyn rusqlite::ToSql> =
        Vec::with_capacity(rows.len() * INSERT_ATTEMPT_WIDTH);
    for (key, a, attempt) in rows {
        params.extend::<[&dyn rusqlite::ToSql; INSERT_ATTEMPT_WIDTH]>([
            key,
            &a.number,
            &attempt.reason,
            &attempt.trap_kind,
            &a.exit_code,
            &a.message,
            &a.stderr,
            &a.stderr_truncated,
            &attempt.receipt,
            &a.worker,
            &a.started_at.0,
            &a.finished_at.0,
            &attempt.replay,
        ]);
    }
    conn.prepare_cached(SQL.get(rows.len()))
        .map_err(db)?
        .execute(params.as_slice())
        .map_err(db)?;
    Ok(())
}

/// A job's attempts, oldest first.
pub(super) fn attempts(conn: &Connection, id: JobId) -> StoreResult<Vec<AttemptRecord>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT number, reason, trap_kind, exit_code, message, stderr, stderr_truncated, \
             receipt, worker, started_at, finished_at, replay FROM attempts WHERE job_id = ?1 \
             ORDER BY number",
        )
        .map_err(db)?;
    let mut rows = stmt.query([id.to_string()]).map_err(db)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(db)? {
        out.push(attempt_row(r, 0)?);
    }
    Ok(out)
}

/// An attempt from a row whose columns from `at` on are `number, reason, trap_kind,
/// exit_code, message, stderr, stderr_truncated, receipt, worker, started_at, finished_at,
/// replay`.
pub(super) fn attempt_row(r: &rusqlite::Row<'_>, at: usize) -> StoreResult<AttemptRecord> {
    let reason: String = r.get(at + 1).map_err(db)?;
    let trap_kind: Option<String> = r.get(at + 2).map_err(db)?;
    let receipt: String = r.get(at + 7).map_err(db)?;
    let replay = match r.get_ref(at + 11).map_err(db)? {
        ValueRef::Null => None,
        // The compact form; rows written before it hold JSON text.
        ValueRef::Blob(b) | ValueRef::Text(b) => {
            Some(AttemptReplay::decode(b).map_err(|e| corrupt("attempts", e))?)
        }
        _ => return Err(corrupt("attempts", "a replay record that is a number")),
    };
    Ok(AttemptRecord {
        number: r.get(at).map_err(db)?,
        reason: reason.parse().map_err(|e| corrupt("attempts", e))?,
        trap_kind: trap_kind
            .map(|k| parse_json("attempts", &format!("\"{k}\"")))
            .transpose()?,
        exit_code: r.get(at + 3).map_err(db)?,
        message: r.get(at + 4).map_err(db)?,
        stderr: r.get(at + 5).map_err(db)?,
        stderr_truncated: r.get(at + 6).map_err(db)?,
        receipt: parse_json("attempts", &receipt)?,
        worker: r.get(at + 8).map_err(db)?,
        started_at: Timestamp(r.get(at + 9).map_err(db)?),
        finished_at: Timestamp(r.get(at + 10).map_err(db)?),
        replay,
    })
}
