//! What the PostgreSQL backend promises beyond the contract: what its indexes rely on.

use super::*;

/// A job holds a lease exactly while it runs, whichever way its attempt ends: the index of
/// running jobs names the lease (migration 9), so the rescuer and listings of running jobs
/// find every running job through it, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_job_holds_a_lease_exactly_while_it_runs() {
    let url = crate::postgres::postgres().database();
    let store = PgStore::connect(&url).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
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
             WHERE (lease IS NOT NULL) <> (state = 'running')",
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
