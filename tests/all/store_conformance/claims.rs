//! Claims: order, concurrency and pause, parked claims, due scheduled jobs, a claimed job
//! equal to the job as stored, and context guards.

use super::*;

pub(super) async fn claims_follow_priority_then_run_at_then_id(store: impl Store) {
    let mut jobs = vec![
        new_job("q", 0, T0),
        new_job("q", 5, T0),
        new_job("q", 0, Timestamp(T0.0 - 10)),
        new_job("q", 5, T0),
    ];
    // Jobs of one claim with their own limits and retry policies get them back.
    jobs[3].limits.fuel = 12_345;
    jobs[3].retry.retries = 7;
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let claimed = insert_and_claim(&store, jobs, 10).await;
    let order: Vec<JobId> = claimed.iter().map(|c| c.job.id).collect();
    assert_eq!(order, vec![ids[1], ids[3], ids[2], ids[0]]);
    let budgets: Vec<(u64, u32)> = claimed
        .iter()
        .map(|c| (c.job.limits.fuel, c.job.retry.retries))
        .collect();
    let default = (Limits::default().fuel, RetryPolicy::default().retries);
    assert_eq!(budgets, vec![default, (12_345, 7), default, default]);
    assert!(
        claimed
            .iter()
            .all(|c| c.job.state == JobState::Running && c.job.attempts == 1)
    );
}

pub(super) async fn claims_respect_concurrency_and_pause(store: impl Store) {
    let q: QueueName = "q".parse().unwrap();
    set_concurrency(&store, &q, 2).await;
    store
        .insert_jobs((0..5).map(|_| new_job("q", 0, T0)).collect())
        .await
        .unwrap();
    // The answer says when the queue's concurrency, not a lack of jobs, stopped the claim.
    assert_eq!(claim(&store, &q, 10).await, (2, true));
    assert_eq!(claim(&store, &q, 10).await, (0, true), "2 of 2 running");
    assert!(store.set_paused(&q, true).await.unwrap());
    let stats = store.get_queue(&q).await.unwrap().unwrap();
    assert!(stats.paused);
    assert_eq!(
        (
            stats.counts[&JobState::Running],
            stats.counts[&JobState::Queued]
        ),
        (2, 3)
    );
    set_concurrency(&store, &q, 5).await;
    assert_eq!(
        claim(&store, &q, 10).await,
        (0, false),
        "paused survives a settings change"
    );
    store.set_paused(&q, false).await.unwrap();
    // Room for 3 more (5 - 2 running), 3 queued: all taken, but that was the room there was.
    assert_eq!(claim(&store, &q, 10).await, (3, true));
    // Not limited: 5 running of 8 would leave room for 3, only 2 asked, 0 queued.
    set_concurrency(&store, &q, 8).await;
    assert_eq!(claim(&store, &q, 2).await, (0, false));
    store.insert_jobs(vec![new_job("q", 0, T0)]).await.unwrap();
    assert_eq!(
        claim(&store, &q, 10).await,
        (1, false),
        "the queue ran dry before its concurrency"
    );
}

/// A claim parked with the store runs in the transaction of the next submit that queues a job
/// in one of its queues: those jobs are running, in claim order and no more than asked, when
/// the submit returns. Submits that queue nothing there leave it parked; taken back or
/// dropped, it claims nothing. A backend that does not park claims skips this check.
pub(super) async fn a_parked_claim_runs_with_the_next_submit_to_its_queues(store: impl Store) {
    let q: QueueName = "q".parse().unwrap();
    set_concurrency(&store, &q, 10).await;
    set_concurrency(&store, &"other".parse().unwrap(), 10).await;
    let clock = ManualClock::new(T0);
    let standing = |max| StandingClaim {
        queues: vec!["q".parse().unwrap()],
        worker: "parked".into(),
        max,
        lease_ttl_ms: 1000,
        clock: Arc::new(clock.clone()),
    };
    let Some((ticket, mut answer)) = store.park_claim(standing(2)) else {
        return;
    };
    // Another queue's job, and one of its own queue that is not due yet.
    let later = Timestamp(T0.0 + 60_000);
    store
        .insert_jobs(vec![new_job("other", 0, T0), new_job("q", 0, later)])
        .await
        .unwrap();
    let waited = tokio::time::timeout(std::time::Duration::from_millis(50), &mut answer).await;
    assert!(waited.is_err(), "still parked");

    clock.advance(std::time::Duration::from_secs(5));
    let jobs = vec![
        new_job("q", 0, T0),
        new_job("q", 5, T0),
        new_job("q", 0, T0),
    ];
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    store.insert_jobs(jobs).await.unwrap();
    let taken = tokio::time::timeout(std::time::Duration::from_secs(10), answer)
        .await
        .expect("the submit ran the parked claim")
        .unwrap();
    assert!(!store.unpark_claim(ticket), "it ran");
    assert_eq!(taken.len(), 1);
    let (queue, claims) = &taken[0];
    assert_eq!(queue, &q);
    let order: Vec<JobId> = claims.jobs.iter().map(|c| c.job.id).collect();
    assert_eq!(order, vec![ids[1], ids[0]], "priority first, at most `max`");
    let now = T0.0 + 5_000;
    for c in &claims.jobs {
        let job = store.get_job(c.job.id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Running);
        assert_eq!((job.attempts, job.worker.as_deref()), (1, Some("parked")));
        assert_eq!(job.started_at, Some(Timestamp(now)), "timed when it ran");
        assert_eq!(c.lease.expires_at, Timestamp(now + 1000));
    }
    let left = store.get_job(ids[2]).await.unwrap().unwrap();
    assert_eq!(left.state, JobState::Queued);
    assert_counts_match(&store, "after a parked claim").await;

    // Taken back before any submit: nothing is claimed, and its answer is empty.
    let (ticket, answer) = store.park_claim(standing(5)).unwrap();
    assert!(store.unpark_claim(ticket));
    let fresh = new_job("q", 0, T0);
    store.insert_jobs(vec![fresh.clone()]).await.unwrap();
    assert!(answer.await.unwrap().is_empty());
    // Dropped (its worker is gone): nothing is claimed either.
    let (_, answer) = store.park_claim(standing(5)).unwrap();
    drop(answer);
    let last = new_job("q", 0, T0);
    store.insert_jobs(vec![last.clone()]).await.unwrap();
    for id in [fresh.id, last.id] {
        let job = store.get_job(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Queued);
    }
    assert_eq!(claim(&store, &q, 10).await, (3, false));
}

pub(super) async fn scheduled_jobs_become_claimable_when_due(store: impl Store) {
    let later = new_job("q", 0, Timestamp(T0.0 + 5000));
    let id = later.id;
    store.insert_jobs(vec![later]).await.unwrap();
    let q: QueueName = "q".parse().unwrap();
    assert!(
        store
            .claim(&q, "w", 1, 1000, T0)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    assert_eq!(
        store.next_scheduled().await.unwrap(),
        Some(Timestamp(T0.0 + 5000))
    );
    let claims = store
        .claim(&q, "w", 1, 1000, Timestamp(T0.0 + 5000))
        .await
        .unwrap();
    assert_eq!(claims.jobs[0].job.id, id);
    // The claim says which jobs it moved from `scheduled` to `queued`, in any queue, once.
    assert_eq!(
        claims.promoted,
        vec![Promoted {
            id,
            task: "echo".parse().unwrap(),
            queue: q.clone()
        }]
    );
    let other = new_job("other", 0, Timestamp(T0.0 + 6000));
    let other_id = other.id;
    store.insert_jobs(vec![other]).await.unwrap();
    let claims = store
        .claim(&q, "w", 1, 1000, Timestamp(T0.0 + 6000))
        .await
        .unwrap();
    assert!(claims.jobs.is_empty());
    assert_eq!(claims.promoted.len(), 1);
    assert_eq!(claims.promoted[0].id, other_id);
    assert_eq!(claims.promoted[0].queue.as_str(), "other");
    let again = store
        .claim(&q, "w", 1, 1000, Timestamp(T0.0 + 7000))
        .await
        .unwrap();
    assert!(again.promoted.is_empty());
}

/// What a claim hands out is the job as stored, every field: also those the claim itself
/// sets, and those left from an earlier attempt (its error, the escalated limits).
pub(super) async fn a_claimed_job_is_the_job_as_stored(store: impl Store) {
    let q: QueueName = "q".parse().unwrap();
    set_concurrency(&store, &q, 10).await;
    let mut job = new_job("q", 3, T0);
    job.unique_key = Some("key".into());
    job.context = Some("ctx".into());
    job.submitter = Some("someone".into());
    job.args = vec!["--flag".into()];
    job.env = vec![("K".into(), "V".into())];
    job.input = b"\x00binary\xff".to_vec();
    let id = job.id;
    store.insert_jobs(vec![job]).await.unwrap();
    let first = store.claim(&q, "w1", 1, 1000, T0).await.unwrap().jobs;
    assert_eq!(first.len(), 1);
    let stored = store.get_job(id).await.unwrap().unwrap();
    assert_eq!(first[0].job, stored);
    let escalated = Limits::new(7, 60.0, 1 << 20, 10, 20).unwrap();
    let retry = Finish::Retry {
        run_at: T0,
        limits: escalated,
        error: JobError {
            reason: Reason::Deadline,
            message: "too slow".into(),
        },
    };
    assert!(
        store
            .finish(&first[0], Some(attempt(1, Reason::Deadline)), retry, T0)
            .await
            .unwrap()
    );
    let later = Timestamp(T0.0 + 5);
    let second = store.claim(&q, "w2", 1, 1000, later).await.unwrap().jobs;
    assert_eq!(second.len(), 1);
    let stored = store.get_job(id).await.unwrap().unwrap();
    assert_eq!(second[0].job, stored);
    let job = &second[0].job;
    assert_eq!(
        (job.state, job.attempts, job.limits, job.worker.as_deref()),
        (JobState::Running, 2, escalated, Some("w2"))
    );
    assert_eq!(job.started_at, Some(later));
    assert_eq!(job.error.as_ref().map(|e| e.reason), Some(Reason::Deadline));
    assert_eq!(second[0].lease.expires_at, Timestamp(later.0 + 1000));
}

/// Fencing tokens come from the store and only grow: a later claim's lease is greater than
/// every earlier one's, whatever queue it is of and whether the earlier job ended.
pub(super) async fn lease_tokens_only_grow(store: impl Store) {
    let mut last = i64::MIN;
    for round in 0..3 {
        for q in ["a", "b"] {
            let claimed = insert_and_claim_in(&store, q, 2).await;
            for c in &claimed {
                assert!(c.lease.token > last, "round {round} queue {q}: {c:?}");
            }
            last = claimed.iter().map(|c| c.lease.token).max().unwrap();
            let done = Finish::Completed { output: vec![] };
            assert!(store.finish(&claimed[0], None, done, T0).await.unwrap());
        }
    }
}

/// Stores two jobs in `q` and claims them.
async fn insert_and_claim_in(store: &impl Store, q: &str, n: usize) -> Vec<Claimed> {
    let queue: QueueName = q.parse().unwrap();
    set_concurrency(store, &queue, 100).await;
    let jobs = (0..n).map(|_| new_job(q, 0, T0)).collect();
    store.insert_jobs(jobs).await.unwrap();
    let claimed = store
        .claim(&queue, "w", n as u32, 1000, T0)
        .await
        .unwrap()
        .jobs;
    assert_eq!(claimed.len(), n);
    claimed
}

/// Context guards: a queue runs at most `key_concurrency` jobs with one concurrency key at a
/// time. A claim passes over (and sets aside) jobs whose key is at its limit and says the
/// guard stopped it; an attempt's end gives the key room at the next claim, to the next job
/// of the key in claim order. Keys are the queue's own; a guarded job cancelled and retried
/// comes back; a raised limit takes effect at the next claim.
pub(super) async fn context_guards_hold_jobs_with_a_busy_key(store: impl Store) {
    let q: QueueName = "q".parse().unwrap();
    set_concurrency(&store, &q, 10).await;
    let keyed = |queue: &str, priority: i32, key: Option<&str>| NewJob {
        concurrency_key: key.map(str::to_owned),
        ..new_job(queue, priority, T0)
    };
    let jobs = vec![
        keyed("q", 9, Some("a")),
        keyed("q", 8, Some("a")),
        keyed("q", 7, Some("b")),
        keyed("q", 6, None),
        keyed("q", 5, Some("a")),
        keyed("q", 4, Some("b")),
        keyed("other", 3, Some("a")),
    ];
    let id: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    store.insert_jobs(jobs).await.unwrap();
    let (ids, guarded, first) = take(&store, 10).await;
    assert_eq!(
        ids,
        vec![id[0], id[2], id[3]],
        "one job per key, and the one without"
    );
    assert!(guarded, "the guard, not a lack of jobs, stopped the claim");
    assert_eq!(first[0].job.concurrency_key.as_deref(), Some("a"));
    let (ids, guarded, _) = take(&store, 10).await;
    assert_eq!((ids, guarded), (vec![], true), "keys a and b are busy");
    let other = store
        .claim(&"other".parse().unwrap(), "w", 10, 1000, T0)
        .await;
    assert_eq!(
        other.unwrap().jobs.len(),
        1,
        "key a of another queue is its own"
    );

    // Where the held jobs stand: set aside behind their key.
    let at = store.position(id[1]).await.unwrap().unwrap();
    let key = at.key.expect("a keyed job's position names its key");
    assert_eq!((key.key.as_str(), key.running, key.limit), ("a", 1, 1));
    assert!(key.guarded);
    assert_eq!(store.position(id[3]).await.unwrap().unwrap().key, None);

    // A's job completes: the next job with key a, in claim order, is taken; the last waits.
    let done = |c: &Claimed| AttemptEnd {
        id: c.job.id,
        queue: c.job.queue.clone(),
        lease: c.lease,
        attempt: Some(attempt(1, Reason::Completed)),
        finish: Finish::Completed { output: vec![] },
    };
    assert_eq!(
        store.finish_many(vec![done(&first[0])], T0).await.unwrap(),
        [true]
    );
    let (ids, _, second) = take(&store, 10).await;
    assert_eq!(ids, vec![id[1]]);

    // A guarded job cancelled and retried comes back to the line.
    assert_eq!(
        store.cancel(id[4], T0).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert!(store.retry(id[4], T0).await.unwrap());
    assert_eq!(
        take(&store, 10).await.0,
        vec![],
        "key a still runs its one job"
    );

    // A raised limit: a second job with each key runs beside the first.
    store
        .put_queue(&QueueConfig {
            concurrency: 10,
            key_concurrency: 2,
            ..QueueConfig::with_defaults(q.clone())
        })
        .await
        .unwrap();
    let (mut ids, guarded, _) = take(&store, 10).await;
    ids.sort();
    let mut both = vec![id[4], id[5]];
    both.sort();
    assert_eq!((ids, guarded), (both, false));
    assert_eq!(
        store.finish_many(vec![done(&second[0])], T0).await.unwrap(),
        [true]
    );
    assert_counts_match(&store, "after guarded claims").await;
}

/// The ids a claim of up to `max` jobs of queue `q` took, whether its queue's concurrency or
/// a guard stopped it, and the jobs.
async fn take(store: &impl Store, max: u32) -> (Vec<JobId>, bool, Vec<Claimed>) {
    let claims = store
        .claim(&"q".parse().unwrap(), "w", max, 1000, T0)
        .await
        .unwrap();
    let ids = claims.jobs.iter().map(|c| c.job.id).collect();
    (ids, claims.at_concurrency, claims.jobs)
}
