//! What the SQLite backend promises beyond the contract: durability of acknowledged
//! submits, refusing a newer schema, reading older rows, and a log that starts over.

use super::*;

/// A submit is acknowledged only once the log holding it is synced. With the log out of the
/// syncer's reach the submit fails, though it is committed; a claim, which needs no fsync, is
/// answered all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledges_a_submit_only_after_syncing_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("remotask.db")).unwrap();
    let q: QueueName = "q".parse().unwrap();
    set_concurrency(&store, &q, 10).await;
    store.insert_jobs(vec![new_job("q", 0, T0)]).await.unwrap();
    let (log, away) = (
        dir.path().join("remotask.db-wal"),
        dir.path().join("moved-wal"),
    );
    std::fs::rename(&log, &away).unwrap();
    let err = store
        .insert_jobs(vec![new_job("q", 0, T0)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("could not be synced"), "{err}");
    assert_eq!(claim(&store, &q, 10).await, (2, false));
    std::fs::rename(&away, &log).unwrap();
    store.insert_jobs(vec![new_job("q", 0, T0)]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_refuses_a_database_newer_than_the_binary_and_keeps_data_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = SqliteStore::open(&path).unwrap();
    let job = new_job("q", 0, T0);
    let id = job.id;
    store.insert_jobs(vec![job]).await.unwrap();
    drop(store);
    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(
        reopened.get_job(id).await.unwrap().unwrap().state,
        JobState::Queued
    );
    drop(reopened);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("upgrade remotask"));
}

/// Limits and retry policies are stored in a compact text form since schema version 7; the
/// JSON of rows written before is still read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_limits_and_retry_policies_written_as_json_before_version_7() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = SqliteStore::open(&path).unwrap();
    let q: QueueName = "q".parse().unwrap();
    set_concurrency(&store, &q, 10).await;
    let mut job = new_job("q", 0, T0);
    job.limits = Limits::new(123, 2.5, 1 << 20, 10, 20).unwrap();
    job.retry = RetryPolicy {
        retries: 9,
        backoff_factor: 1.5,
        retry_on: vec![Reason::Trap, Reason::Deadline],
        escalate: false,
        ..RetryPolicy::default()
    };
    let (id, limits, retry) = (job.id, job.limits, job.retry.clone());
    let newer = new_job("q", 0, T0);
    store.insert_jobs(vec![job, newer.clone()]).await.unwrap();
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let stored: (String, String) = conn
        .query_row(
            "SELECT limits, retry FROM jobs WHERE id = ?1",
            [id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(stored.0, "123;2.5;1048576;10;20");
    assert_eq!(stored.1, "9;5;1.5;3600;0.1;0;trap,deadline");
    conn.execute(
        "UPDATE jobs SET limits = ?2, retry = ?3 WHERE id = ?1",
        rusqlite::params![
            id.to_string(),
            serde_json::to_string(&limits).unwrap(),
            serde_json::to_string(&retry).unwrap()
        ],
    )
    .unwrap();
    drop(conn);

    let store = SqliteStore::open(&path).unwrap();
    let read = store.get_job(id).await.unwrap().unwrap();
    assert_eq!((read.limits, &read.retry), (limits, &retry));
    let claimed = store.claim(&q, "w", 10, 1000, T0).await.unwrap().jobs;
    let by_id = |id| claimed.iter().find(|c| c.job.id == id).unwrap();
    assert_eq!(
        (by_id(id).job.limits, &by_id(id).job.retry),
        (limits, &retry)
    );
    assert_eq!(by_id(newer.id).job.limits, newer.limits);
}

/// Under steady writes the checkpointer never copies the log up to the last commit, which is
/// what lets the log start over. The writer finishes its copy once the log passes 16 MiB, so
/// the log file stops growing there, though far more is written through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_starts_its_log_over_under_steady_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("jobs.db")).unwrap();
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    let mut written = 0u64;
    while written < 56 << 20 {
        let jobs: Vec<NewJob> = (0..8)
            .map(|i| {
                let mut job = new_job("q", 0, T0);
                job.input = vec![b'a' + i; 64 << 10];
                job
            })
            .collect();
        written += jobs.iter().map(|j| j.input.len() as u64).sum::<u64>();
        store.insert_jobs(jobs).await.unwrap();
    }
    let log = std::fs::metadata(dir.path().join("jobs.db-wal"))
        .unwrap()
        .len();
    assert!(
        log < 32 << 20,
        "the log grew to {:.1} MiB with {:.1} MiB written",
        mib(log),
        mib(written)
    );
}

/// Two server processes on one database file (two stores here) and a restart: every lease
/// token is greater than every token before it, whichever process claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lease_tokens_grow_across_processes_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let q: QueueName = "q".parse().unwrap();
    let (one, two) = (
        SqliteStore::open(&path).unwrap(),
        SqliteStore::open(&path).unwrap(),
    );
    set_concurrency(&one, &q, 100).await;
    let mut last = i64::MIN;
    for round in 0..4 {
        let store = if round % 2 == 0 { &one } else { &two };
        store.insert_jobs(vec![new_job("q", 0, T0)]).await.unwrap();
        let claimed = store.claim(&q, "w", 1, 1000, T0).await.unwrap().jobs;
        assert!(claimed[0].lease.token > last, "round {round}");
        last = claimed[0].lease.token;
    }
    drop((one, two));
    let reopened = SqliteStore::open(&path).unwrap();
    reopened
        .insert_jobs(vec![new_job("q", 0, T0)])
        .await
        .unwrap();
    let claimed = reopened.claim(&q, "w", 1, 1000, T0).await.unwrap().jobs;
    assert!(claimed[0].lease.token > last, "after a restart");
}
