//! Jobs written straight to a store, and the cost of claiming them: the claim-cost benches of
//! both backends measure the same thing.

use std::time::{Duration, Instant};

use remotask::domain::{
    Finish, JobId, Limits, ModuleDigest, NewJob, QueueName, RetryPolicy, Start, Timestamp,
};
use remotask::store::Store;

/// The `i`th of many queued echo jobs in the default queue, of three priorities.
pub(crate) fn queued_job(i: u64) -> NewJob {
    NewJob {
        id: JobId::generate(),
        task: "echo".parse().unwrap(),
        digest: ModuleDigest::of(b"echo"),
        queue: QueueName::default_queue(),
        input: format!("{{\"i\":{i}}}").into_bytes(),
        args: vec![],
        env: vec![],
        priority: (i % 3) as i32,
        start: Start::Now,
        unique_key: None,
        context: None,
        concurrency_key: None,
        limits: Limits::default(),
        retry: RetryPolicy::default(),
        submitter: None,
        created_at: Timestamp::now(),
    }
}

/// Fills the default queue of `store` with queued jobs until it holds `target`, from
/// `queued`, 10,000 per insert; how long that took.
pub(crate) async fn fill(store: &dyn Store, queued: &mut u64, target: u64) -> Duration {
    let started = Instant::now();
    while *queued < target {
        let n = (target - *queued).min(10_000);
        store
            .insert_jobs((*queued..*queued + n).map(queued_job).collect())
            .await
            .expect("insert");
        *queued += n;
    }
    started.elapsed()
}

/// Claims one job and completes it, `rounds` times; the mean cost of one claim.
pub(crate) async fn claim_cost(store: &dyn Store, rounds: u32) -> Duration {
    let q = QueueName::default_queue();
    let mut total = Duration::ZERO;
    for _ in 0..rounds {
        let t = Instant::now();
        let claimed = store
            .claim(&q, "bench", 1, 30_000, Timestamp::now())
            .await
            .expect("claim")
            .jobs;
        total += t.elapsed();
        for c in claimed {
            let finish = Finish::Completed { output: Vec::new() };
            store
                .finish(&c, None, finish, Timestamp::now())
                .await
                .expect("finish");
        }
    }
    total / rounds
}
