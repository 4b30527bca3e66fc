//! Jobs written straight to a store, the cost of claiming them and the cost of each phase of
//! a job: the benches of both backends measure the same thing.

use std::time::{Duration, Instant};

use remotask::domain::{
    AttemptRecord, AttemptReplay, Finish, JobId, Limits, ModuleDigest, NewJob, QueueConfig,
    QueueName, Reason, Recording, RetryPolicy, Seed, Start, Timestamp, output_digest,
};
use remotask::store::{AttemptEnd, Store};

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

/// The store's cost per job by phase, one call at a time: `n` queued jobs inserted 1,000 per
/// call, claimed `claim` at a time and ended `end` at a time, each with the attempt record
/// of a real echo attempt (its receipt and what replays it). Prints the mean per job.
pub(crate) async fn phases(store: &dyn Store, n: u64, claim: u32, end: usize) {
    println!(
        "## the store's cost per job, by phase ({n} jobs, one call at a time: inserts of 1,000, \
         claims of {claim}, ends of {end})"
    );
    let q = QueueName::default_queue();
    store
        .put_queue(&QueueConfig {
            concurrency: 1_000,
            ..QueueConfig::with_defaults(q.clone())
        })
        .await
        .expect("queue");
    let started = Instant::now();
    for from in (0..n).step_by(1_000) {
        let jobs = (from..from + 1_000)
            .map(|i| NewJob {
                priority: 0,
                ..queued_job(i)
            })
            .collect();
        store.insert_jobs(jobs).await.expect("insert");
    }
    let insert = started.elapsed();
    let receipt = serde_json::json!({"fuel_consumed": 41_000, "cpu_us": 35,
        "peak_memory_bytes": 1_114_112, "wall_us": 30, "instantiate_us": 12,
        "compile_cache": "memory", "stdout_bytes": 8, "stderr_bytes": 0});
    // What a real attempt of a guest that reads no clock keeps to be replayed.
    let replay = AttemptReplay {
        limits: Limits::default(),
        output_digest: output_digest(b"{\"x\":1}"),
        recording: Recording::new(Seed([9; 32])),
    };
    let (mut claiming, mut ending, mut done) = (Duration::ZERO, Duration::ZERO, 0u64);
    loop {
        let started = Instant::now();
        let claimed = store
            .claim(&q, "bench", claim, 30_000, Timestamp::now())
            .await
            .expect("claim")
            .jobs;
        claiming += started.elapsed();
        if claimed.is_empty() {
            break;
        }
        done += claimed.len() as u64;
        for chunk in claimed.chunks(end) {
            let ends = chunk
                .iter()
                .map(|c| AttemptEnd {
                    id: c.job.id,
                    queue: c.job.queue.clone(),
                    lease: c.lease,
                    attempt: Some(AttemptRecord {
                        number: c.job.attempts,
                        reason: Reason::Completed,
                        trap_kind: None,
                        exit_code: None,
                        message: None,
                        stderr: Vec::new(),
                        stderr_truncated: false,
                        receipt: receipt.clone(),
                        worker: "bench".into(),
                        started_at: Timestamp::now(),
                        finished_at: Timestamp::now(),
                        replay: Some(replay.clone()),
                    }),
                    finish: Finish::Completed {
                        output: c.job.input.clone(),
                    },
                })
                .collect();
            let started = Instant::now();
            store
                .finish_many(ends, Timestamp::now())
                .await
                .expect("finish");
            ending += started.elapsed();
        }
    }
    assert_eq!(done, n);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "insert {:>5.1} us   claim {:>5.1} us   finish {:>5.1} us   per job\n",
        per(insert),
        per(claiming),
        per(ending)
    );
}
