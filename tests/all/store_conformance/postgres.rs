//! What the PostgreSQL backend promises beyond the contract: what its indexes rely on.

use super::*;

/// A store on a fresh database, and a connection of the test's own to it.
async fn store_and_client() -> (PgStore, tokio_postgres::Client) {
    let url = crate::postgres::postgres().database();
    let store = PgStore::connect(&url).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    (store, client)
}

/// A job holds a lease, and a lease's expiry, exactly while it runs, whichever way its
/// attempt ends: the index of running jobs names the expiry (migration 11), so the rescuer
/// and listings of running jobs find every running job through it, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_job_holds_a_lease_exactly_while_it_runs() {
    let (store, client) = store_and_client().await;
    let claimed = insert_and_claim(&store, (0..7).map(|_| new_job("q", 0, T0)).collect(), 6).await;
    assert_eq!(claimed.len(), 6);
    let error = || JobError {
        reason: Reason::Trap,
        message: "trap".into(),
    };
    let ends = [
        Finish::Completed { output: vec![] },
        Finish::Failed { error: error() },
        Finish::Cancelled { error: error() },
        Finish::Retry {
            run_at: Timestamp(T0.0 + 60_000),
            limits: Limits::default(),
            error: error(),
        },
        Finish::Interrupted,
    ];
    for (c, finish) in claimed.iter().zip(ends) {
        let attempt = (finish != Finish::Interrupted).then(|| attempt(1, Reason::Trap));
        assert!(store.finish(c, attempt, finish, T0).await.unwrap());
    }
    let mismatched: Vec<(String, bool)> = client
        .query(
            "SELECT state, lease IS NOT NULL FROM jobs \
             WHERE (lease IS NOT NULL) <> (state = 'running') \
                OR (lease_expires IS NOT NULL) <> (state = 'running')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        mismatched,
        [],
        "a lease held outside the running state, or the reverse"
    );
    let running = JobFilter {
        states: vec![JobState::Running],
        ..JobFilter::default()
    };
    let listed = store.list_jobs(&running).await.unwrap();
    assert_eq!(
        listed.iter().map(|j| j.id).collect::<Vec<_>>(),
        [claimed[5].job.id],
        "the one attempt not ended"
    );
    let expired = store.expired_leases(Timestamp(T0.0 + 2000)).await.unwrap();
    assert_eq!(
        expired
            .iter()
            .map(|c| (c.job.id, c.lease))
            .collect::<Vec<_>>(),
        [(claimed[5].job.id, claimed[5].lease)]
    );
}

/// The rescuer and the listing of running jobs walk `jobs_running`, also on a table that
/// has no statistics yet (a new database, before the first automatic `ANALYZE`), and the
/// statement that ends attempts cannot: each statement as the store sent it, planned again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_running_jobs_are_found_through_their_index_without_statistics() {
    let (store, client) = store_and_client().await;
    // Many attempts ended: their entries in the index stay until a vacuum.
    let jobs: Vec<NewJob> = (0..20_000).map(|_| new_job("q", 0, T0)).collect();
    let claimed = insert_and_claim(&store, jobs, 2_002).await;
    let ends: Vec<AttemptEnd> = claimed[2..].iter().map(completed).collect();
    assert!(
        store
            .finish_many(ends, T0)
            .await
            .unwrap()
            .iter()
            .all(|a| *a)
    );
    let analyzed: bool = client
        .query_one(
            "SELECT reltuples >= 0 FROM pg_class WHERE relname = 'jobs'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!analyzed, "the table must not have statistics yet");
    // Each statement as sent, read from the store's connection right after the call.
    let sent = |like: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT query FROM pg_stat_activity \
                     WHERE datname = current_database() AND query LIKE $1 \
                       AND pid <> pg_backend_pid() LIMIT 1",
                    &[&like],
                )
                .await
                .unwrap_or_else(|e| panic!("no statement like {like}: {e}"));
            row.get::<_, String>(0)
        }
    };
    let plan = |sql: String| {
        let client = &client;
        async move {
            let rows = client.query(&sql, &[]).await.unwrap();
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let now = Timestamp(T0.0 + 2000);
    assert_eq!(store.expired_leases(now).await.unwrap().len(), 2);
    let rescuer = sent("%lease_expires < $1%").await;
    // The rescuer runs its prepared statement every pass: the plan for any expiry.
    client
        .batch_execute(&format!(
            "SET plan_cache_mode = force_generic_plan; PREPARE rescuer(int8) AS {rescuer}"
        ))
        .await
        .unwrap();
    let rescue_plan = plan(format!("EXPLAIN EXECUTE rescuer({})", now.0)).await;
    assert!(rescue_plan.contains("jobs_running"), "{rescue_plan}");
    let running = JobFilter {
        states: vec![JobState::Running],
        ..JobFilter::default()
    };
    assert_eq!(store.list_jobs(&running).await.unwrap().len(), 2);
    let listing = sent("SELECT%lease_expires IS NOT NULL%").await;
    let list_plan = plan(format!("EXPLAIN {listing}")).await;
    assert!(list_plan.contains("jobs_running"), "{list_plan}");
}

/// Each stored job has exactly one row in `job_lookup` (migration 10), with its task and
/// context: written by the submit (not for a job whose unique key a live job holds), deleted
/// with the job, by a delete or by a clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_job_has_one_lookup_row_while_it_is_stored() {
    let (store, client) = store_and_client().await;
    let unmatched = || async {
        client
            .query(
                "SELECT j.id, j.task, j.context, l.id, l.task, l.context \
                 FROM jobs j FULL JOIN job_lookup l ON l.id = j.id \
                 WHERE j.id IS NULL OR l.id IS NULL OR l.task <> j.task \
                    OR l.context IS DISTINCT FROM j.context",
                &[],
            )
            .await
            .unwrap()
            .len()
    };
    let rows = || async {
        let row = client
            .query_one("SELECT count(*) FROM job_lookup", &[])
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    let mut jobs: Vec<NewJob> = (0..5).map(|_| new_job("q", 0, T0)).collect();
    jobs[0].context = Some("c".into());
    jobs[1].task = "other".parse().unwrap();
    jobs[2].unique_key = Some("k".into());
    jobs[3].unique_key = Some("k".into());
    let [gone, _, _, _, ended] = [0, 1, 2, 3, 4].map(|i| jobs[i].id);
    store.insert_jobs(jobs).await.unwrap();
    assert_eq!(
        (rows().await, unmatched().await),
        (4, 0),
        "after the submit"
    );
    assert!(store.delete_job(gone).await.unwrap());
    assert_eq!((rows().await, unmatched().await), (3, 0), "after a delete");
    let claimed = store
        .claim(&"q".parse().unwrap(), "w", 10, 1000, T0)
        .await
        .unwrap()
        .jobs;
    let last = claimed.iter().find(|c| c.job.id == ended).unwrap();
    let done = Finish::Completed { output: vec![] };
    assert!(store.finish(last, None, done, T0).await.unwrap());
    assert_eq!(store.clean(None).await.unwrap(), 1);
    assert_eq!((rows().await, unmatched().await), (2, 0), "after a clean");
}

/// An attempt's record is inserted as a new row; one stored before under the same job and
/// number (a retry before migration 8 started a job's count of attempts again) makes the
/// batch write again with records that replace theirs: every end in it is applied, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_attempt_number_recorded_before_a_retry_is_replaced() {
    let (store, client) = store_and_client().await;
    let claimed = insert_and_claim(&store, (0..2).map(|_| new_job("q", 0, T0)).collect(), 2).await;
    let legacy = &claimed[0].job;
    client
        .execute(
            "INSERT INTO attempts (job_id, number, reason, stderr, stderr_truncated, receipt, \
             worker, started_at, finished_at) \
             VALUES ($1, 1, 'trap', '', false, '{}', 'before', 0, 0)",
            &[&legacy.id.as_u128().to_be_bytes().as_slice()],
        )
        .await
        .unwrap();
    let ends: Vec<AttemptEnd> = claimed.iter().map(completed).collect();
    assert_eq!(store.finish_many(ends, T0).await.unwrap(), [true, true]);
    for c in &claimed {
        let records = store.attempts(c.job.id).await.unwrap();
        assert_eq!(records, [attempt(1, Reason::Completed)], "{}", c.job.id);
        let job = store.get_job(c.job.id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Completed);
    }
}
