//! Unit tests of the SQLite backend's parts: statement shapes, the checkpoint decisions,
//! query plans, and migrations of rows stored by older versions. The contract every backend
//! keeps is tested in `tests/all/store_conformance.rs`.

use std::path::PathBuf;

use rusqlite::{Connection, params};

use super::batch::{ROWS_PER_STATEMENT, chunk_sizes, statement_chunks, values_rows};
use super::checkpoint::{
    CHECKPOINT_EVERY_COMMITS, CHECKPOINT_EVERY_PAGES, Checkpoints, LOG_MAX_PAGES,
    LOG_RESTART_PAGES, LogStep, WRITER_COPIES_PAGES, log_step,
};
use super::jobs::{EXPIRED_LEASES, LIVE_STATES};
use super::migrations::{MIGRATIONS, migrate};
use super::open_connection;
use super::rows::{JOB_COLUMNS, parsed_again};
use crate::domain::{Event, Limits};
use crate::store::columns;
use crate::store::guards::guard;

/// A fresh database file, opened and not migrated.
fn opened() -> (tempfile::TempDir, PathBuf, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    let conn = open_connection(&path).expect("open");
    (dir, path, conn)
}

fn migrated() -> (tempfile::TempDir, Connection) {
    let (dir, path, mut conn) = opened();
    migrate(&mut conn, &path).expect("migrate");
    (dir, conn)
}

fn plan(conn: &Connection, sql: &str, params: &[&dyn rusqlite::ToSql]) -> String {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("prepare");
    let rows = stmt
        .query_map(params, |r| r.get::<_, String>(3))
        .expect("query");
    rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("; ")
}

#[test]
fn no_partial_index_condition_uses_in_which_sqlite_tests_with_a_table_per_row() {
    let (_dir, conn) = migrated();
    let mut stmt = conn
        .prepare(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql LIKE '% WHERE %'",
        )
        .expect("prepare");
    let partial: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    assert!(partial.iter().any(|(name, _)| name == "jobs_ended"));
    for (name, sql) in &partial {
        assert!(!sql.contains(" IN "), "{name}: {sql}");
    }
}

#[test]
fn batches_are_cut_into_a_few_statement_shapes() {
    let sizes = |n| chunk_sizes(n).collect::<Vec<_>>();
    assert_eq!(sizes(0), Vec::<usize>::new());
    assert_eq!(sizes(1), vec![1]);
    assert_eq!(sizes(100), vec![64, 32, 4]);
    assert_eq!(sizes(200), vec![64, 64, 64, 8]);
    for n in 0..300 {
        let all = sizes(n);
        assert_eq!(all.iter().sum::<usize>(), n);
        assert!(
            all.iter()
                .all(|s| s.is_power_of_two() && *s <= ROWS_PER_STATEMENT)
        );
    }
    let items: Vec<usize> = (0..100).collect();
    let chunks: Vec<&[usize]> = statement_chunks(&items).collect();
    assert_eq!(
        chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
        sizes(100)
    );
    assert_eq!(chunks.concat(), items);
    assert_eq!(values_rows(2, 3, 2), "(?2, ?3, ?4), (?5, ?6, ?7)");
}

#[test]
fn a_limits_column_is_parsed_again_only_when_its_text_differs() {
    let parse = columns::parse_limits;
    let mut last: Option<(String, Limits)> = None;
    let limits = Limits::default();
    let text = columns::limits_text(&limits);
    assert_eq!(
        parsed_again(&mut last, text.clone(), parse).unwrap(),
        limits
    );
    // The kept value answers for the same text, even if what it holds were different.
    let kept = Limits { fuel: 7, ..limits };
    last = Some((text.clone(), kept));
    assert_eq!(parsed_again(&mut last, text.clone(), parse).unwrap(), kept);
    let other = Limits { fuel: 9, ..limits };
    let text = columns::limits_text(&other);
    assert_eq!(parsed_again(&mut last, text, parse).unwrap(), other);
    assert_eq!(last.as_ref().map(|(_, v)| *v), Some(other));
    assert!(parsed_again(&mut last, "{".to_owned(), parse).is_err());
    assert!(parsed_again(&mut last, "1;2".to_owned(), parse).is_err());
}

#[test]
fn the_writer_restarts_the_log_only_when_little_is_left_to_copy() {
    use LogStep::{Ask, Nothing, Restart};
    let (restart, max, tail) = (LOG_RESTART_PAGES, LOG_MAX_PAGES, WRITER_COPIES_PAGES);
    // (log pages, copied by the checkpointer, log at the writer's last own checkpoint,
    // commits since the checkpointer was woken), what the writer does.
    let cases = [
        ((10, 0, 0, 1), Nothing),
        ((10, 10, 0, 100), Nothing),
        ((10, 0, 0, CHECKPOINT_EVERY_COMMITS), Ask),
        ((CHECKPOINT_EVERY_PAGES + 5, 5, 0, 1), Ask),
        ((restart - 1, restart - 1, 0, 1), Nothing),
        ((restart, restart - tail, 0, 1), Restart),
        ((restart, restart - tail - 1, 0, 1), Ask),
        ((max - 1, 0, 0, 1), Ask),
        ((max, 0, 0, 1), Restart),
        // Not again before the log grew by another stretch (readers kept it from
        // starting over)...
        ((restart + 10, restart + 10, restart, 1), Nothing),
        ((restart + tail, restart + tail, restart, 1), Restart),
        // ...unless it started over and grew back since.
        ((restart, restart, restart + 100, 1), Restart),
    ];
    for ((log, copied, own_at, commits), step) in cases {
        assert_eq!(
            log_step(log, copied, own_at, commits),
            step,
            "log {log}, copied {copied}, own at {own_at}, commits {commits}"
        );
    }
}

#[test]
fn a_pass_over_an_earlier_log_counts_as_nothing_copied() {
    let log = Checkpoints::default();
    log.committed(100);
    log.passed(100, 80);
    assert_eq!(log.state(), (100, 80));
    log.passed(-1, -1);
    assert_eq!(
        log.state(),
        (100, 80),
        "a pass that did not run changes nothing"
    );
    log.committed(20);
    assert_eq!(log.state(), (20, 0));
}

#[test]
fn the_rescuer_reads_running_jobs_only() {
    let (_dir, conn) = migrated();
    let expired = plan(
        &conn,
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {EXPIRED_LEASES}"),
        &[&0i64],
    );
    assert!(expired.contains("jobs_running"), "{expired}");
}

#[test]
fn jobs_and_attempts_stored_before_the_migrations_are_kept_and_counted() {
    let (_dir, path, mut conn) = opened();
    for sql in &MIGRATIONS[..5] {
        conn.execute_batch(sql).expect("migration");
    }
    conn.execute_batch("PRAGMA user_version = 5")
        .expect("version");
    for (i, (queue, state)) in [
        ("a", "completed"),
        ("a", "completed"),
        ("a", "failed"),
        ("a", "queued"),
        ("b", "cancelled"),
    ]
    .into_iter()
    .enumerate()
    {
        conn.execute(
            "INSERT INTO jobs (id, task, digest, queue, state, input, args, env, priority, \
             run_at, limits, retry, created_at) \
             VALUES (?1, 't', 'd', ?2, ?3, x'', '[]', '[]', 0, 0, '{}', '{}', 0)",
            params![i.to_string(), queue, state],
        )
        .expect("insert");
    }
    conn.execute(
        "INSERT INTO attempts (job_id, number, reason, stderr, stderr_truncated, receipt, \
         worker, started_at, finished_at) VALUES ('0', 1, 'completed', x'', 0, '{}', 'w', 0, 0)",
        [],
    )
    .expect("attempt");
    migrate(&mut conn, &path).expect("migrate");
    let counts: Vec<(String, String, i64)> = conn
        .prepare("SELECT queue, state, n FROM job_counts ORDER BY queue, state")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    let expected = [
        ("a", "completed", 2),
        ("a", "failed", 1),
        ("a", "queued", 1),
        ("b", "cancelled", 1),
    ];
    assert_eq!(
        counts,
        expected.map(|(q, s, n)| (q.to_owned(), s.to_owned(), n))
    );
    let attempts = |conn: &Connection| -> i64 {
        conn.query_row("SELECT count(*) FROM attempts", [], |r| r.get(0))
            .expect("count")
    };
    assert_eq!(attempts(&conn), 1, "attempts are kept through migration 8");
    conn.execute("DELETE FROM jobs WHERE id = '0'", [])
        .expect("delete");
    assert_eq!(attempts(&conn), 0, "and go with their job");
}

#[test]
fn the_unique_lookup_and_clean_use_their_partial_indexes() {
    let (_dir, conn) = migrated();
    let unique = plan(
        &conn,
        &format!("SELECT id FROM jobs WHERE unique_key = ?1 AND {LIVE_STATES}"),
        &[&"k"],
    );
    assert!(unique.contains("jobs_unique_live"), "{unique}");
    let clean = plan(
        &conn,
        &format!(
            "DELETE FROM jobs WHERE {} AND finished_at < ?1",
            guard(Event::Clean)
        ),
        &[&0i64],
    );
    assert!(clean.contains("jobs_ended"), "{clean}");
}

#[test]
fn a_replay_record_is_read_in_the_compact_form_and_as_the_json_of_older_rows() {
    use crate::domain::{AttemptReplay, JobId, Recording, Seed, output_digest};
    use rusqlite::types::Value;

    let (_dir, conn) = migrated();
    let id: JobId = "01M97B6AJDAR3BXG0000000000".parse().expect("id");
    let mut recording = Recording::new(Seed([7; 32]));
    recording.wall = vec![1_700_000_000_000_000_000];
    let replay = AttemptReplay {
        limits: Limits::default(),
        output_digest: output_digest(b"out"),
        recording,
    };
    let json = serde_json::to_string(&replay).expect("json");
    for (number, value) in [
        (1, Value::Text(json)),
        (2, Value::Blob(replay.encode())),
        (3, Value::Null),
    ] {
        conn.execute(
            "INSERT INTO attempts (job_id, number, reason, stderr, stderr_truncated, receipt, \
             worker, started_at, finished_at, replay) \
             VALUES (?1, ?2, 'completed', x'', 0, '{}', 'w', 0, 0, ?3)",
            params![id.to_string(), number, value],
        )
        .expect("attempt");
    }
    let read: Vec<_> = super::ends::attempts(&conn, id)
        .expect("attempts")
        .into_iter()
        .map(|a| a.replay)
        .collect();
    assert_eq!(read, [Some(replay.clone()), Some(replay), None]);
    conn.execute("UPDATE attempts SET replay = x'09' WHERE number = 3", [])
        .expect("update");
    let refused = super::ends::attempts(&conn, id).unwrap_err().to_string();
    assert!(
        refused.contains("unknown replay record format 9"),
        "{refused}"
    );
}
