//! The store contract, written once and run against every backend (SQLite here; PostgreSQL
//! runs the same functions when it lands). Each check takes a fresh, empty store.

use std::future::Future;
use std::sync::Arc;

use remotask::domain::{
    AttemptRecord, CancelOutcome, CatchUp, Finish, JobError, JobFilter, JobId, JobState,
    JobTemplate, Lease, Limits, ManualClock, ModuleDigest, NewJob, Overlap, QueueConfig, QueueName,
    Reason, RetryPolicy, Role, ScheduleName, ScheduleRecord, SpecDef, Start, TaskDefaults,
    TaskName, Timestamp, TokenRecord,
};
use remotask::store::{
    AttemptEnd, Claimed, Firing, Inserted, Promoted, SqliteStore, StandingClaim, Store, StoreError,
};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn new_job(queue: &str, priority: i32, run_at: Timestamp) -> NewJob {
    NewJob {
        id: JobId::generate(),
        task: "echo".parse().unwrap(),
        digest: ModuleDigest::of(b"module"),
        queue: queue.parse().unwrap(),
        input: b"{}".to_vec(),
        args: vec![],
        env: vec![],
        priority,
        start: Start::At(run_at),
        unique_key: None,
        context: None,
        limits: Limits::default(),
        retry: RetryPolicy::default(),
        submitter: None,
        created_at: T0,
    }
}

fn attempt(number: u32, reason: Reason) -> AttemptRecord {
    AttemptRecord {
        number,
        reason,
        trap_kind: None,
        exit_code: None,
        message: None,
        stderr: b"log".to_vec(),
        stderr_truncated: false,
        receipt: serde_json::json!({"fuel_consumed": 1}),
        worker: "w".into(),
        started_at: T0,
        finished_at: T0,
    }
}

/// Runs every check of the contract against stores made by `make`.
async fn conformance<S: Store, F: Future<Output = S>>(make: impl Fn() -> F) {
    claims_follow_priority_then_run_at_then_id(make().await).await;
    claims_respect_concurrency_and_pause(make().await).await;
    a_parked_claim_runs_with_the_next_submit_to_its_queues(make().await).await;
    scheduled_jobs_become_claimable_when_due(make().await).await;
    a_stale_lease_cannot_write(make().await).await;
    a_claimed_job_is_the_job_as_stored(make().await).await;
    many_attempts_end_in_one_write_each_under_its_own_lease(make().await).await;
    a_large_batch_of_completions_writes_each_under_its_own_lease(make().await).await;
    a_large_submit_keeps_order_and_unique_keys(make().await).await;
    jobs_are_listed_by_state(make().await).await;
    unique_keys_hold_while_live(make().await).await;
    cancel_release_retry_delete_follow_the_state_machine(make().await).await;
    queue_counts_follow_every_transition(make().await).await;
    a_failed_write_leaves_nothing_and_spares_the_writes_beside_it(make().await).await;
    task_versions_and_defaults(make().await).await;
    tokens_are_found_by_hash_until_revoked(make().await).await;
    a_schedule_fire_is_applied_once(make().await).await;
}

async fn task_versions_and_defaults(store: impl Store) {
    let name: TaskName = "resize".parse().unwrap();
    let (v1, v2) = (ModuleDigest::of(b"v1"), ModuleDigest::of(b"v2"));
    let defaults = TaskDefaults {
        env: vec![("MODE".into(), "fast".into())],
        ..TaskDefaults::default()
    };
    store
        .put_task(&name, v1, 10, Some(defaults.clone()), T0)
        .await
        .unwrap();
    let t = store
        .put_task(&name, v2, 20, None, Timestamp(T0.0 + 1))
        .await
        .unwrap();
    assert_eq!(t.digest, v2, "the name points at the newest version");
    assert_eq!(
        t.defaults, defaults,
        "a new version without defaults keeps them"
    );
    let versions: Vec<_> = t
        .versions
        .iter()
        .map(|v| (v.digest, v.size_bytes))
        .collect();
    assert_eq!(versions, vec![(v2, 20), (v1, 10)], "newest first");

    let changed = TaskDefaults {
        queue: Some("slow".parse().unwrap()),
        ..TaskDefaults::default()
    };
    let t = store
        .set_task_defaults(&name, changed.clone(), Timestamp(T0.0 + 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((t.defaults, t.digest), (changed, v2));
    assert_eq!(
        store
            .set_task_defaults(&"nope".parse().unwrap(), TaskDefaults::default(), T0)
            .await
            .unwrap(),
        None
    );
    assert!(store.delete_task(&name).await.unwrap());
    assert!(store.get_task(&name).await.unwrap().is_none());
    assert!(!store.delete_task(&name).await.unwrap());
}

async fn tokens_are_found_by_hash_until_revoked(store: impl Store) {
    let token = TokenRecord {
        id: "tok_1".into(),
        name: "ci".into(),
        role: Role::Submit,
        hash: "h1".into(),
        created_at: T0,
        revoked_at: None,
    };
    store.create_token(&token).await.unwrap();
    assert_eq!(
        store.token_by_hash("h1").await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(store.token_by_hash("h2").await.unwrap(), None);
    assert!(
        store
            .revoke_token("tok_1", Timestamp(T0.0 + 5))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_token("tok_1", Timestamp(T0.0 + 6))
            .await
            .unwrap()
    );
    assert!(!store.revoke_token("tok_unknown", T0).await.unwrap());
    assert_eq!(store.token_by_hash("h1").await.unwrap(), None);
    let listed = store.list_tokens().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].revoked_at, Some(Timestamp(T0.0 + 5)));
}

/// Stores `jobs` in queue `q` (concurrency 10, or `max` if more) and claims up to `max` of
/// them at `T0`.
async fn insert_and_claim(store: &impl Store, jobs: Vec<NewJob>, max: u32) -> Vec<Claimed> {
    store.insert_jobs(jobs).await.unwrap();
    store
        .put_queue(&QueueConfig {
            concurrency: max.max(10),
            ..QueueConfig::with_defaults("q".parse().unwrap())
        })
        .await
        .unwrap();
    store
        .claim(&"q".parse().unwrap(), "w", max, 1000, T0)
        .await
        .unwrap()
        .jobs
}

async fn claims_follow_priority_then_run_at_then_id(store: impl Store) {
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

async fn set_concurrency(store: &impl Store, q: &QueueName, concurrency: u32) {
    store
        .put_queue(&QueueConfig {
            concurrency,
            ..QueueConfig::with_defaults(q.clone())
        })
        .await
        .unwrap();
}

/// How many jobs a claim of up to `max` took, and whether the queue's concurrency stopped it.
async fn claim(store: &impl Store, q: &QueueName, max: u32) -> (usize, bool) {
    let claims = store.claim(q, "w", max, 1000, T0).await.unwrap();
    (claims.jobs.len(), claims.at_concurrency)
}

async fn claims_respect_concurrency_and_pause(store: impl Store) {
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
async fn a_parked_claim_runs_with_the_next_submit_to_its_queues(store: impl Store) {
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

async fn scheduled_jobs_become_claimable_when_due(store: impl Store) {
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

async fn a_stale_lease_cannot_write(store: impl Store) {
    let job = new_job("q", 0, T0);
    let id = job.id;
    store.insert_jobs(vec![job]).await.unwrap();
    let q: QueueName = "q".parse().unwrap();
    let first = store
        .claim(&q, "a", 1, 1000, T0)
        .await
        .unwrap()
        .jobs
        .remove(0);
    let expired = store.expired_leases(Timestamp(T0.0 + 2000)).await.unwrap();
    assert_eq!(expired.len(), 1);
    let error = JobError {
        reason: Reason::LeaseLost,
        message: "lease expired (a)".into(),
    };
    let retry = Finish::Retry {
        run_at: T0,
        limits: Limits::default(),
        error,
    };
    assert!(
        store
            .finish(&expired[0], Some(attempt(1, Reason::LeaseLost)), retry, T0)
            .await
            .unwrap()
    );
    let second = store
        .claim(&q, "b", 1, 1000, T0)
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_ne!(first.lease, second.lease);
    let late = Finish::Completed {
        output: b"stale".to_vec(),
    };
    assert!(
        !store
            .finish(&first, Some(attempt(1, Reason::Completed)), late, T0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .heartbeat(id, &first.lease, Timestamp(T0.0 + 9000))
            .await
            .unwrap()
    );
    assert!(!store.set_progress(id, &first.lease, 1, 2).await.unwrap());
    let done = Finish::Completed {
        output: b"fresh".to_vec(),
    };
    assert!(
        store
            .finish(&second, Some(attempt(2, Reason::Completed)), done, T0)
            .await
            .unwrap()
    );
    let job = store.get_job(id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.output.as_deref(), job.attempts),
        (JobState::Completed, Some(&b"fresh"[..]), 2)
    );
    let reasons: Vec<Reason> = store
        .attempts(id)
        .await
        .unwrap()
        .iter()
        .map(|a| a.reason)
        .collect();
    assert_eq!(reasons, vec![Reason::LeaseLost, Reason::Completed]);
}

/// What a claim hands out is the job as stored, every field: also those the claim itself
/// sets, and those left from an earlier attempt (its error, the escalated limits).
async fn a_claimed_job_is_the_job_as_stored(store: impl Store) {
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

async fn many_attempts_end_in_one_write_each_under_its_own_lease(store: impl Store) {
    let jobs: Vec<NewJob> = (0..4).map(|_| new_job("q", 0, T0)).collect();
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let claimed = insert_and_claim(&store, jobs, 4).await;
    let error = JobError {
        reason: Reason::GuestError,
        message: "no".into(),
    };
    let mut stale = claimed[2].lease;
    stale.token += 1;
    let end = |c: &Claimed, lease, reason: Option<Reason>, finish| AttemptEnd {
        id: c.job.id,
        queue: c.job.queue.clone(),
        lease,
        attempt: reason.map(|r| attempt(1, r)),
        finish,
    };
    let done = |output: &[u8]| Finish::Completed {
        output: output.to_vec(),
    };
    let ends = vec![
        end(
            &claimed[0],
            claimed[0].lease,
            Some(Reason::Completed),
            done(b"zero"),
        ),
        end(
            &claimed[1],
            claimed[1].lease,
            Some(Reason::GuestError),
            Finish::Failed { error },
        ),
        end(&claimed[2], stale, Some(Reason::Completed), done(b"stale")),
        end(&claimed[3], claimed[3].lease, None, Finish::Interrupted),
    ];
    let written = store.finish_many(ends, Timestamp(T0.0 + 7)).await.unwrap();
    assert_eq!(written, vec![true, true, false, true]);
    let mut states = Vec::new();
    for id in &ids {
        let job = store.get_job(*id).await.unwrap().unwrap();
        let attempts = store.attempts(*id).await.unwrap().len();
        states.push((job.state, job.attempts, attempts));
    }
    assert_eq!(
        states,
        vec![
            (JobState::Completed, 1, 1),
            (JobState::Failed, 1, 1),
            (JobState::Running, 1, 0),
            (JobState::Queued, 0, 0),
        ]
    );
    let done = store.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (done.output.as_deref(), done.finished_at),
        (Some(&b"zero"[..]), Some(Timestamp(T0.0 + 7)))
    );
    assert!(store.finish_many(Vec::new(), T0).await.unwrap().is_empty());
}

/// More ends than one statement writes: stale leases among them, and one job twice (its stale
/// attempt and its current one), each end written or refused on its own lease.
async fn a_large_batch_of_completions_writes_each_under_its_own_lease(store: impl Store) {
    let n = 150;
    let jobs: Vec<NewJob> = (0..n).map(|_| new_job("q", 0, T0)).collect();
    let claimed = insert_and_claim(&store, jobs, n as u32).await;
    assert_eq!(claimed.len(), n);
    let stale = |c: &Claimed| Lease {
        token: c.lease.token + 1,
        ..c.lease
    };
    let mut ends: Vec<AttemptEnd> = claimed
        .iter()
        .enumerate()
        .map(|(i, c)| AttemptEnd {
            id: c.job.id,
            queue: c.job.queue.clone(),
            lease: if i % 7 == 3 { stale(c) } else { c.lease },
            attempt: Some(attempt(1, Reason::Completed)),
            finish: Finish::Completed {
                output: format!("out {i}").into_bytes(),
            },
        })
        .collect();
    // Job 0 ends twice: first under a stale lease, then under its own.
    ends.insert(
        0,
        AttemptEnd {
            lease: stale(&claimed[0]),
            finish: Finish::Completed {
                output: b"stale".to_vec(),
            },
            ..ends[0].clone()
        },
    );
    let written = store.finish_many(ends, Timestamp(T0.0 + 9)).await.unwrap();
    let mut expected = vec![false];
    expected.extend((0..n).map(|i| i % 7 != 3));
    assert_eq!(written, expected);
    for (i, c) in claimed.iter().enumerate() {
        let job = store.get_job(c.job.id).await.unwrap().unwrap();
        let attempts = store.attempts(c.job.id).await.unwrap();
        if i % 7 == 3 {
            assert_eq!(
                (job.state, attempts.len()),
                (JobState::Running, 0),
                "job {i}"
            );
        } else {
            assert_eq!(
                (job.state, job.output, job.finished_at),
                (
                    JobState::Completed,
                    Some(format!("out {i}").into_bytes()),
                    Some(Timestamp(T0.0 + 9))
                ),
                "job {i}"
            );
            assert_eq!(attempts.len(), 1, "job {i}");
            assert_eq!(
                (attempts[0].number, attempts[0].reason, &attempts[0].receipt),
                (
                    1,
                    Reason::Completed,
                    &serde_json::json!({"fuel_consumed": 1})
                ),
                "job {i}"
            );
        }
    }
}

/// A submit of more jobs than one statement writes keeps their order, and unique keys among
/// them still return the live job (of this same batch too).
async fn a_large_submit_keeps_order_and_unique_keys(store: impl Store) {
    let mut jobs: Vec<NewJob> = (0..200).map(|_| new_job("q", 0, T0)).collect();
    jobs[10].unique_key = Some("a".into());
    jobs[11].unique_key = Some("a".into());
    jobs[150].unique_key = Some("b".into());
    jobs[199].unique_key = Some("a".into());
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let inserted = store.insert_jobs(jobs).await.unwrap();
    let expected: Vec<Inserted> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| match i {
            11 | 199 => Inserted::Existing(ids[10]),
            _ => Inserted::New(*id),
        })
        .collect();
    assert_eq!(inserted, expected);
    let listed: Vec<JobId> = store
        .list_jobs(&JobFilter {
            limit: 1_000,
            ..JobFilter::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    let mut stored: Vec<JobId> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 11 && *i != 199)
        .map(|(_, id)| *id)
        .collect();
    stored.sort();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, stored);
    let job = store.get_job(ids[150]).await.unwrap().unwrap();
    assert_eq!(
        (job.unique_key.as_deref(), job.state, job.input),
        (Some("b"), JobState::Queued, b"{}".to_vec())
    );
}

async fn jobs_are_listed_by_state(store: impl Store) {
    let mut held = new_job("q", 0, T0);
    held.start = Start::Held;
    let later = new_job("q", 0, Timestamp(T0.0 + 60_000));
    let queued = new_job("q", 0, T0);
    let ids = [held.id, later.id, queued.id];
    store.insert_jobs(vec![held, later, queued]).await.unwrap();
    for (state, id) in [
        (JobState::Held, ids[0]),
        (JobState::Scheduled, ids[1]),
        (JobState::Queued, ids[2]),
    ] {
        let filter = JobFilter {
            states: vec![state],
            ..JobFilter::default()
        };
        let listed: Vec<JobId> = store
            .list_jobs(&filter)
            .await
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(listed, vec![id], "{state:?}");
    }
    let live = JobFilter {
        states: vec![JobState::Held, JobState::Queued],
        ..JobFilter::default()
    };
    assert_eq!(store.list_jobs(&live).await.unwrap().len(), 2);
}

async fn unique_keys_hold_while_live(store: impl Store) {
    let mut a = new_job("q", 0, T0);
    a.unique_key = Some("k".into());
    let mut b = new_job("q", 0, T0);
    b.unique_key = Some("k".into());
    let (a_id, b_id) = (a.id, b.id);
    assert_eq!(
        store.insert_jobs(vec![a, b]).await.unwrap(),
        vec![Inserted::New(a_id), Inserted::Existing(a_id)]
    );
    assert_eq!(
        store.cancel(a_id, T0).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let mut c = new_job("q", 0, T0);
    c.unique_key = Some("k".into());
    let c_id = c.id;
    assert_eq!(
        store.insert_jobs(vec![c]).await.unwrap(),
        vec![Inserted::New(c_id)]
    );
    assert!(
        !store.retry(a_id, T0).await.unwrap(),
        "a live job holds the key"
    );
    let _ = b_id;
}

async fn cancel_release_retry_delete_follow_the_state_machine(store: impl Store) {
    let mut held = new_job("q", 0, T0);
    held.start = Start::Held;
    let id = held.id;
    store.insert_jobs(vec![held]).await.unwrap();
    assert!(store.release(id, T0).await.unwrap());
    assert!(
        !store.release(id, T0).await.unwrap(),
        "only a held job is released"
    );
    let claimed = store
        .claim(&"q".parse().unwrap(), "w", 1, 1000, T0)
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert!(
        !store.delete_job(id).await.unwrap(),
        "a running job is not deleted"
    );
    assert_eq!(store.cancel(id, T0).await.unwrap(), CancelOutcome::Running);
    assert!(store.cancel_requested(id).await.unwrap());
    let error = JobError {
        reason: Reason::Cancelled,
        message: "cancelled while running".into(),
    };
    assert!(
        store
            .finish(
                &claimed,
                Some(attempt(1, Reason::Cancelled)),
                Finish::Cancelled { error },
                T0
            )
            .await
            .unwrap()
    );
    assert!(store.retry(id, T0).await.unwrap());
    let job = store.get_job(id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempts, job.error),
        (JobState::Queued, 0, None)
    );
    assert_eq!(
        store.cancel(JobId::generate(), T0).await.unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        store.attempts(id).await.unwrap().len(),
        1,
        "history is kept"
    );
    assert!(store.delete_job(id).await.unwrap());
    assert!(store.get_job(id).await.unwrap().is_none());
    assert!(
        store.attempts(id).await.unwrap().is_empty(),
        "a deleted job's attempts go with it"
    );
    assert!(
        store
            .list_jobs(&JobFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Asserts that each queue's stats count exactly the jobs stored in each state.
async fn assert_counts_match(store: &impl Store, step: &str) {
    let all = JobFilter {
        limit: 1_000,
        ..JobFilter::default()
    };
    let jobs = store.list_jobs(&all).await.unwrap();
    let queues = store.list_queues().await.unwrap();
    assert!(!queues.is_empty(), "{step}");
    for stats in &queues {
        for state in JobState::ALL {
            let stored = jobs
                .iter()
                .filter(|j| j.queue == stats.config.name && j.state == state)
                .count() as u64;
            assert_eq!(
                stats.counts.get(&state).copied(),
                Some(stored),
                "{step}: {} {state:?}",
                stats.config.name
            );
        }
        let one = store.get_queue(&stats.config.name).await.unwrap().unwrap();
        assert_eq!(&one, stats, "{step}");
    }
}

async fn queue_counts_follow_every_transition(store: impl Store) {
    let (q, r): (QueueName, QueueName) = ("q".parse().unwrap(), "r".parse().unwrap());
    let held = || {
        let mut job = new_job("q", 0, T0);
        job.start = Start::Held;
        job
    };
    let holds = [held(), held()];
    let (held_a, held_b) = (holds[0].id, holds[1].id);
    let mut jobs = Vec::from(holds);
    jobs.push(new_job("q", 0, Timestamp(T0.0 + 60_000)));
    jobs.extend((0..6).map(|_| new_job("q", 0, T0)));
    jobs.push(new_job("r", 0, T0));
    let mut unique = new_job("q", 0, T0);
    unique.unique_key = Some("u".into());
    let mut again = new_job("q", 0, T0);
    again.unique_key = Some("u".into());
    jobs.extend([unique, again]);
    let inserted = store.insert_jobs(jobs).await.unwrap();
    assert!(matches!(inserted[11], Inserted::Existing(_)));
    assert_counts_match(&store, "inserted").await;

    let claimed = store.claim(&q, "w", 4, 1000, T0).await.unwrap().jobs;
    assert_eq!(claimed.len(), 4);
    assert_counts_match(&store, "claimed").await;
    let error = |reason| JobError {
        reason,
        message: "m".into(),
    };
    let ends = [
        Finish::Completed { output: vec![] },
        Finish::Failed {
            error: error(Reason::GuestError),
        },
        Finish::Cancelled {
            error: error(Reason::Cancelled),
        },
        Finish::Retry {
            run_at: Timestamp(T0.0 + 5_000),
            limits: Limits::default(),
            error: error(Reason::RetryableError),
        },
    ];
    let ends: Vec<AttemptEnd> = claimed
        .iter()
        .zip(ends)
        .map(|(c, finish)| AttemptEnd {
            id: c.job.id,
            queue: c.job.queue.clone(),
            lease: c.lease,
            attempt: Some(attempt(1, Reason::Completed)),
            finish,
        })
        .collect();
    // Written twice: the second time every lease is stale and nothing may be counted.
    assert_eq!(
        store.finish_many(ends.clone(), T0).await.unwrap(),
        vec![true; 4]
    );
    assert_eq!(store.finish_many(ends, T0).await.unwrap(), vec![false; 4]);
    assert_counts_match(&store, "finished").await;

    let later = Timestamp(T0.0 + 10_000);
    let other = store.claim(&r, "w", 1, 1000, T0).await.unwrap().jobs;
    let done = Finish::Completed { output: vec![] };
    assert!(store.finish(&other[0], None, done, later).await.unwrap());
    let interrupted = store.claim(&q, "w", 1, 1000, T0).await.unwrap().jobs;
    let back = Finish::Interrupted;
    assert!(store.finish(&interrupted[0], None, back, T0).await.unwrap());
    assert_counts_match(&store, "another queue, an interrupted attempt").await;

    assert!(store.release(held_b, T0).await.unwrap());
    assert!(!store.release(held_b, T0).await.unwrap());
    let due = store
        .claim(&q, "w", 1, 1000, Timestamp(T0.0 + 60_000))
        .await
        .unwrap();
    assert_eq!((due.promoted.len(), due.jobs.len()), (2, 1));
    assert_counts_match(&store, "released, promoted").await;

    let queued = store
        .list_jobs(&JobFilter {
            states: vec![JobState::Queued],
            queue: Some(q.clone()),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.cancel(queued[0].id, later).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        store.cancel(held_a, later).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        store.cancel(held_a, later).await.unwrap(),
        CancelOutcome::AlreadyEnded(JobState::Cancelled)
    );
    assert_eq!(
        store.cancel(due.jobs[0].job.id, later).await.unwrap(),
        CancelOutcome::Running
    );
    assert_counts_match(&store, "cancelled").await;

    let (completed, failed) = (claimed[0].job.id, claimed[1].job.id);
    assert!(store.retry(failed, T0).await.unwrap());
    assert!(!store.retry(failed, T0).await.unwrap(), "queued now");
    assert!(
        !store.retry(completed, T0).await.unwrap(),
        "only failed or cancelled"
    );
    assert_counts_match(&store, "retried").await;
    assert!(store.delete_job(completed).await.unwrap());
    assert!(!store.delete_job(completed).await.unwrap());
    assert!(store.delete_job(queued[1].id).await.unwrap());
    assert_counts_match(&store, "deleted").await;

    // Ended at T0: one cancelled by its attempt. Ended later: the job of `r`, two cancels.
    let recorded = store.list_jobs(&JobFilter::default()).await.unwrap();
    let mut with_attempts = Vec::new();
    for job in &recorded {
        if !store.attempts(job.id).await.unwrap().is_empty() {
            with_attempts.push(job.id);
        }
    }
    assert!(!with_attempts.is_empty());
    assert_eq!(store.clean(Some(Timestamp(T0.0 + 1))).await.unwrap(), 1);
    assert_counts_match(&store, "cleaned before a time").await;
    assert_eq!(store.clean(None).await.unwrap(), 3);
    assert_counts_match(&store, "cleaned").await;
    for id in with_attempts {
        if store.get_job(id).await.unwrap().is_none() {
            assert!(
                store.attempts(id).await.unwrap().is_empty(),
                "cleaned with its job"
            );
        }
    }
}

/// A write that fails (here a submit reusing a stored job's id) changes nothing, whether it
/// was alone in its transaction or beside others, and the others still land.
async fn a_failed_write_leaves_nothing_and_spares_the_writes_beside_it(store: impl Store) {
    let stored = new_job("q", 0, T0);
    let taken_id = stored.id;
    store.insert_jobs(vec![stored]).await.unwrap();
    let reusing = |n: usize| {
        let mut jobs: Vec<NewJob> = (0..n).map(|_| new_job("q", 0, T0)).collect();
        let mut dup = new_job("q", 0, T0);
        dup.id = taken_id;
        jobs.push(dup);
        jobs
    };
    let exists = |id: JobId| {
        let store = &store;
        async move { store.get_job(id).await.unwrap().is_some() }
    };

    // Enough jobs that a backend writing them in several statements has written some before
    // it meets the taken id.
    let failed = reusing(70);
    let ids: Vec<JobId> = failed.iter().take(70).map(|j| j.id).collect();
    assert!(store.insert_jobs(failed).await.is_err(), "the id is taken");
    for id in ids {
        assert!(!exists(id).await, "nothing of the failed submit is kept");
    }
    assert_counts_match(&store, "after a failed submit").await;

    // Submits sent together ride in one transaction when the writer is busy; the failed one
    // must not take the others down with it, nor leave its own rows.
    for round in 0..20 {
        let failed = reusing(2);
        let failed_ids: Vec<JobId> = failed.iter().take(2).map(|j| j.id).collect();
        let good: Vec<NewJob> = (0..2).map(|_| new_job("q", 0, T0)).collect();
        let good_ids: Vec<JobId> = good.iter().map(|j| j.id).collect();
        let other = new_job("q", 0, T0);
        let other_id = other.id;
        let (bad, ok, ok2) = tokio::join!(
            store.insert_jobs(failed),
            store.insert_jobs(good),
            store.insert_jobs(vec![other]),
        );
        assert!(bad.is_err(), "round {round}");
        let new = |ids: &[JobId]| ids.iter().map(|id| Inserted::New(*id)).collect::<Vec<_>>();
        assert_eq!(
            ok.unwrap(),
            new(&good_ids),
            "round {round}: each caller its own jobs"
        );
        assert_eq!(ok2.unwrap(), new(&[other_id]), "round {round}");
        for id in failed_ids {
            assert!(
                !exists(id).await,
                "round {round}: the failed submit left a job"
            );
        }
        for id in good_ids.into_iter().chain([other_id]) {
            assert!(exists(id).await, "round {round}: a good submit was lost");
        }
    }
    assert_counts_match(&store, "after failed submits beside good ones").await;

    // Submits of one unique key sent together: one is stored, the other gets it back.
    for round in 0..10 {
        let keyed = || {
            let mut job = new_job("q", 0, T0);
            job.unique_key = Some(format!("key-{round}"));
            job
        };
        let (a, b) = (keyed(), keyed());
        let (a_id, b_id) = (a.id, b.id);
        let (ra, rb) = tokio::join!(store.insert_jobs(vec![a]), store.insert_jobs(vec![b]));
        let mut answers = [ra.unwrap()[0], rb.unwrap()[0]];
        answers.sort_by_key(|i| matches!(i, Inserted::Existing(_)));
        match answers {
            [Inserted::New(stored), Inserted::Existing(existing)] => {
                assert_eq!(stored, existing, "round {round}");
                assert!(stored == a_id || stored == b_id, "round {round}");
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
    assert_counts_match(&store, "after keyed submits sent together").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_the_conformance_suite() {
    let dirs = Arc::new(std::sync::Mutex::new(Vec::new()));
    conformance(|| {
        let dirs = dirs.clone();
        async move {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(dir.path().join("jobs.db")).unwrap();
            dirs.lock().unwrap().push(dir);
            store
        }
    })
    .await;
}

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

async fn a_schedule_fire_is_applied_once(store: impl Store) {
    let name: ScheduleName = "tick".parse().unwrap();
    let record = ScheduleRecord {
        name: name.clone(),
        spec: SpecDef {
            cron: Some("* * * * *".into()),
            ..SpecDef::default()
        },
        job: JobTemplate {
            task: "echo".parse().unwrap(),
            input: vec![],
            args: vec![],
            env: vec![],
            queue: None,
            priority: 0,
            limits: Default::default(),
            retry: None,
            context: None,
        },
        overlap: Overlap::Allow,
        catch_up: CatchUp::One,
        paused: false,
        next_fire: Some(Timestamp(T0.0 + 60_000)),
        last_fire: None,
        last_job: None,
        fires: 0,
        skipped: 0,
        last_error: None,
        created_at: T0,
        updated_at: T0,
    };
    store.put_schedule(&record).await.unwrap();
    assert_eq!(
        store.get_schedule(&name).await.unwrap(),
        Some(record.clone())
    );
    assert!(store.due_schedules(T0).await.unwrap().is_empty());
    assert_eq!(
        store
            .due_schedules(Timestamp(T0.0 + 60_000))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.next_schedule_fire().await.unwrap(),
        Some(Timestamp(T0.0 + 60_000))
    );

    let mut job = new_job("q", 0, T0);
    job.unique_key = Some("schedule:tick:t1".into());
    let firing = Firing {
        expected: Timestamp(T0.0 + 60_000),
        next: Some(Timestamp(T0.0 + 120_000)),
        fired_at: Some(Timestamp(T0.0 + 60_000)),
        jobs: vec![job.clone()],
        skipped: 2,
        error: None,
    };
    let now = Timestamp(T0.0 + 61_000);
    let first = store
        .fire_schedule(&name, firing.clone(), now)
        .await
        .unwrap();
    assert_eq!(first, Some(vec![Inserted::New(job.id)]));
    // The same fire again (another node that read the same next_fire) changes nothing.
    let mut again = firing.clone();
    again.jobs[0].id = JobId::generate();
    assert_eq!(store.fire_schedule(&name, again, now).await.unwrap(), None);
    let r = store.get_schedule(&name).await.unwrap().unwrap();
    assert_eq!(
        (r.next_fire, r.last_fire, r.last_job, r.fires, r.skipped),
        (
            Some(Timestamp(T0.0 + 120_000)),
            Some(Timestamp(T0.0 + 60_000)),
            Some(job.id),
            1,
            2
        )
    );
    // Paused schedules are not due; deleted ones are gone, their jobs stay. An update made
    // from the record as read before the fire keeps the fire's history.
    store
        .put_schedule(&ScheduleRecord {
            paused: true,
            ..record
        })
        .await
        .unwrap();
    let paused = store.get_schedule(&name).await.unwrap().unwrap();
    assert_eq!(
        (paused.paused, paused.last_job, paused.fires, paused.skipped),
        (true, Some(job.id), 1, 2)
    );
    assert!(
        store
            .due_schedules(Timestamp(T0.0 + 999_000))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_schedule_fire().await.unwrap(), None);
    assert_eq!(store.list_schedules().await.unwrap().len(), 1);
    assert!(store.delete_schedule(&name).await.unwrap());
    assert!(!store.delete_schedule(&name).await.unwrap());
    assert!(store.get_job(job.id).await.unwrap().is_some());
}
