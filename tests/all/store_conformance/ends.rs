//! The ends of attempts: a stale lease writes nothing, many ends in one write each apply
//! under their own lease, and the leases past their expiry are found.

use super::*;

pub(super) async fn a_stale_lease_cannot_write(store: impl Store) {
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

pub(super) async fn many_attempts_end_in_one_write_each_under_its_own_lease(store: impl Store) {
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
pub(super) async fn a_large_batch_of_completions_writes_each_under_its_own_lease(
    store: impl Store,
) {
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

/// An attempt's replay (its limits, output digest, seed and clock values, why it is not
/// replayable) reads back as written, in one write with an attempt that has none.
pub(super) async fn an_attempt_keeps_what_replays_it(store: impl Store) {
    let jobs: Vec<NewJob> = (0..2).map(|_| new_job("q", 0, T0)).collect();
    let claimed = insert_and_claim(&store, jobs, 2).await;
    let mut recording = Recording::new(Seed([7; 32]));
    recording.wall = vec![1_700_000_000_123_456_789, u64::MAX];
    recording.monotonic = vec![0, 15, 1 << 40];
    recording.not_replayable = Some("the guest read the clocks too often".into());
    let replay = AttemptReplay {
        limits: Limits::default().with_metering(remotask::domain::Metering::Cpu),
        output_digest: remotask::domain::output_digest(b"zero"),
        recording,
    };
    let recorded = AttemptRecord {
        replay: Some(replay),
        ..attempt(1, Reason::Completed)
    };
    let ends: Vec<AttemptEnd> = claimed
        .iter()
        .zip([Some(recorded.clone()), Some(attempt(1, Reason::Completed))])
        .map(|(c, attempt)| AttemptEnd {
            id: c.job.id,
            queue: c.job.queue.clone(),
            lease: c.lease,
            attempt,
            finish: Finish::Completed {
                output: b"zero".to_vec(),
            },
        })
        .collect();
    let written = store.finish_many(ends, T0).await.unwrap();
    assert_eq!(written, vec![true, true]);
    let first = store.attempts(claimed[0].job.id).await.unwrap();
    assert_eq!(first, vec![recorded]);
    let second = store.attempts(claimed[1].job.id).await.unwrap();
    assert_eq!(second[0].replay, None);
}

/// A job's history reads back whole, oldest first, however its attempts ended: an attempt
/// replaced as the latest by the next one keeps every field, an interrupted attempt (which
/// is not recorded) leaves the one before it as the latest, and a stale end moves nothing.
pub(super) async fn every_attempt_of_a_history_reads_back_whole(store: impl Store) {
    let q: QueueName = "q".parse().unwrap();
    let claimed = insert_and_claim(&store, vec![new_job("q", 0, T0)], 1).await;
    let id = claimed[0].job.id;
    let first = AttemptRecord {
        trap_kind: Some(remotask::domain::TrapKind::Unreachable),
        exit_code: Some(3),
        message: Some("it fell over".into()),
        stderr: b"first stderr".to_vec(),
        stderr_truncated: true,
        worker: "w1".into(),
        started_at: Timestamp(T0.0 + 1),
        finished_at: Timestamp(T0.0 + 2),
        replay: Some(AttemptReplay {
            limits: Limits::default(),
            output_digest: remotask::domain::output_digest(b""),
            recording: Recording::new(Seed([1; 32])),
        }),
        ..attempt(1, Reason::Trap)
    };
    let retry = || Finish::Retry {
        run_at: T0,
        limits: Limits::default(),
        error: JobError {
            reason: Reason::Trap,
            message: "it fell over".into(),
        },
    };
    assert!(
        store
            .finish(&claimed[0], Some(first.clone()), retry(), T0)
            .await
            .unwrap()
    );
    let take = || async {
        store
            .claim(&q, "w", 1, 1000, T0)
            .await
            .unwrap()
            .jobs
            .remove(0)
    };
    let interrupted = take().await;
    assert_eq!(interrupted.job.attempts, 2);
    assert!(
        store
            .finish(&interrupted, None, Finish::Interrupted, T0)
            .await
            .unwrap()
    );
    assert_eq!(store.attempts(id).await.unwrap(), vec![first.clone()]);
    let second_claim = take().await;
    assert_eq!(
        second_claim.job.attempts, 2,
        "an interrupted attempt is not spent"
    );
    let second = AttemptRecord {
        message: Some("again".into()),
        stderr: b"second stderr".to_vec(),
        worker: "w2".into(),
        ..attempt(2, Reason::Trap)
    };
    assert!(
        store
            .finish(&second_claim, Some(second.clone()), retry(), T0)
            .await
            .unwrap()
    );
    let third_claim = take().await;
    let stale = store
        .finish(
            &second_claim,
            Some(attempt(2, Reason::Completed)),
            Finish::Completed {
                output: b"stale".to_vec(),
            },
            T0,
        )
        .await
        .unwrap();
    assert!(!stale);
    assert_eq!(
        store.attempts(id).await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    let third = attempt(3, Reason::Completed);
    assert!(
        store
            .finish(
                &third_claim,
                Some(third.clone()),
                Finish::Completed {
                    output: b"done".to_vec()
                },
                T0
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.attempts(id).await.unwrap(),
        vec![first, second, third]
    );
}

/// The rescuer's read: every running job whose lease expired strictly before `now`, with
/// that lease, in id order, however many (thousands, many with the same expiry), and none
/// whose lease is still good.
pub(super) async fn expired_leases_are_every_lease_past_its_expiry_in_id_order(store: impl Store) {
    let q: QueueName = "q".parse().unwrap();
    let early = insert_and_claim(
        &store,
        (0..2_500).map(|_| new_job("q", 0, T0)).collect(),
        2_500,
    )
    .await;
    assert_eq!(early.len(), 2_500);
    set_concurrency(&store, &q, 3_000).await;
    let later = Timestamp(T0.0 + 5_000);
    store
        .insert_jobs((0..5).map(|_| new_job("q", 0, T0)).collect())
        .await
        .unwrap();
    let late = store.claim(&q, "w", 5, 1000, later).await.unwrap().jobs;
    assert_eq!(late.len(), 5);
    let leases = |claimed: &[Claimed]| {
        let mut v: Vec<(JobId, Lease)> = claimed.iter().map(|c| (c.job.id, c.lease)).collect();
        v.sort_by_key(|(id, _)| *id);
        v
    };
    let expired = |now: i64| {
        let store = &store;
        async move {
            let found = store.expired_leases(Timestamp(T0.0 + now)).await.unwrap();
            assert!(found.iter().all(|c| c.job.state == JobState::Running));
            found
                .iter()
                .map(|c| (c.job.id, c.lease))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(expired(1_000).await, [], "a lease expiring now still holds");
    assert_eq!(expired(1_001).await, leases(&early));
    let all: Vec<Claimed> = early.iter().chain(&late).cloned().collect();
    assert_eq!(expired(7_000).await, leases(&all));
}
