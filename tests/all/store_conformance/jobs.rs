//! Jobs: large submits, listing, unique keys, the operator's moves, the per-queue counts,
//! a failed write that leaves nothing, and the contexts of live jobs.

use super::*;

/// A submit of more jobs than one statement writes keeps their order, and unique keys among
/// them still return the live job (of this same batch too).
pub(super) async fn a_large_submit_keeps_order_and_unique_keys(store: impl Store) {
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

pub(super) async fn jobs_are_listed_by_state(store: impl Store) {
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
    // Newest first, a page at a time towards older jobs.
    let mut sorted = ids.to_vec();
    sorted.sort();
    let page = |after: Option<JobId>| JobFilter {
        newest_first: true,
        after,
        limit: 2,
        ..JobFilter::default()
    };
    let ids_of = |jobs: Vec<remotask::domain::Job>| jobs.iter().map(|j| j.id).collect::<Vec<_>>();
    let first = ids_of(store.list_jobs(&page(None)).await.unwrap());
    assert_eq!(first, vec![sorted[2], sorted[1]]);
    let rest = ids_of(store.list_jobs(&page(Some(sorted[1]))).await.unwrap());
    assert_eq!(rest, vec![sorted[0]]);
}

pub(super) async fn unique_keys_hold_while_live(store: impl Store) {
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

pub(super) async fn cancel_release_retry_delete_follow_the_state_machine(store: impl Store) {
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
    // A fresh budget: the attempt so far becomes the base, and keeps its number.
    assert_eq!(
        (job.state, job.attempts, job.attempt_base, job.error),
        (JobState::Queued, 1, 1, None)
    );
    assert_eq!(
        store.cancel(JobId::generate(), T0).await.unwrap(),
        CancelOutcome::NotFound
    );
    // The next attempt is number 2, beside the first, whose record is kept.
    let claimed = store
        .claim(&"q".parse().unwrap(), "w", 1, 1000, T0)
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_eq!((claimed.job.attempts, claimed.job.attempt_base), (2, 1));
    let output = b"done".to_vec();
    assert!(
        store
            .finish(
                &claimed,
                Some(attempt(2, Reason::Completed)),
                Finish::Completed { output },
                T0
            )
            .await
            .unwrap()
    );
    let history = store.attempts(id).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|a| (a.number, a.reason))
            .collect::<Vec<_>>(),
        [(1, Reason::Cancelled), (2, Reason::Completed)],
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

pub(super) async fn queue_counts_follow_every_transition(store: impl Store) {
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
pub(super) async fn a_failed_write_leaves_nothing_and_spares_the_writes_beside_it(
    store: impl Store,
) {
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

/// Jobs are listed by task and by context, alone, together and beside the other filters,
/// in every state and a page at a time; a deleted or cleaned job is no longer listed.
pub(super) async fn jobs_are_listed_by_task_and_context(store: impl Store) {
    let job = |task: &str, context: Option<&str>| NewJob {
        task: task.parse().unwrap(),
        context: context.map(str::to_owned),
        ..new_job("q", 0, T0)
    };
    let mut held = job("echo", None);
    held.start = Start::Held;
    let jobs = vec![
        job("echo", Some("c1")),
        job("echo", Some("c2")),
        job("other", Some("c1")),
        job("other", None),
        held,
    ];
    let [e1, e2, o1, o2, e3] = [0, 1, 2, 3, 4].map(|i| jobs[i].id);
    let claimed = insert_and_claim(&store, jobs, 4).await;
    let first = claimed.iter().find(|c| c.job.id == e1).unwrap();
    let done = Finish::Completed { output: vec![] };
    assert!(store.finish(first, None, done, T0).await.unwrap());
    let list = |task: Option<&str>, context: Option<&str>, states: Vec<JobState>| JobFilter {
        task: task.map(|t| t.parse().unwrap()),
        context: context.map(str::to_owned),
        states,
        ..JobFilter::default()
    };
    let ids = |f: JobFilter| {
        let store = &store;
        async move {
            let jobs = store.list_jobs(&f).await.unwrap();
            jobs.iter().map(|j| j.id).collect::<Vec<_>>()
        }
    };
    let sorted = |mut v: Vec<JobId>| {
        v.sort();
        v
    };
    assert_eq!(
        ids(list(Some("echo"), None, vec![])).await,
        sorted(vec![e1, e2, e3])
    );
    assert_eq!(
        ids(list(Some("other"), None, vec![])).await,
        sorted(vec![o1, o2])
    );
    assert_eq!(
        ids(list(None, Some("c1"), vec![])).await,
        sorted(vec![e1, o1])
    );
    assert_eq!(ids(list(Some("echo"), Some("c1"), vec![])).await, [e1]);
    assert_eq!(ids(list(Some("other"), Some("c2"), vec![])).await, []);
    assert_eq!(ids(list(Some("nothing"), None, vec![])).await, []);
    let state = |s| list(Some("echo"), None, vec![s]);
    assert_eq!(ids(state(JobState::Completed)).await, [e1]);
    assert_eq!(ids(state(JobState::Running)).await, [e2]);
    assert_eq!(ids(state(JobState::Held)).await, [e3]);
    let in_queue = JobFilter {
        queue: Some("elsewhere".parse().unwrap()),
        ..list(Some("echo"), None, vec![])
    };
    assert_eq!(ids(in_queue).await, []);
    // Newest first, a page at a time towards older jobs.
    let echo = sorted(vec![e1, e2, e3]);
    let page = |after: Option<JobId>| JobFilter {
        newest_first: true,
        after,
        limit: 2,
        ..list(Some("echo"), None, vec![])
    };
    assert_eq!(ids(page(None)).await, [echo[2], echo[1]]);
    assert_eq!(ids(page(Some(echo[1]))).await, [echo[0]]);
    // Deleted and cleaned jobs are gone from the lists by task and by context.
    assert!(store.delete_job(e3).await.unwrap());
    assert_eq!(store.clean(None).await.unwrap(), 1);
    assert_eq!(ids(list(Some("echo"), None, vec![])).await, [e2]);
    assert_eq!(ids(list(None, Some("c1"), vec![])).await, [o1]);
}

/// The contexts of live jobs, in order, each with its count of live jobs; ended jobs and
/// jobs without a context are not counted; pages follow `after`.
pub(super) async fn live_contexts_count_live_jobs_a_page_at_a_time(store: impl Store) {
    let with = |context: Option<&str>| NewJob {
        context: context.map(str::to_owned),
        ..new_job("q", 0, T0)
    };
    let jobs = vec![
        with(Some("b")),
        with(Some("a")),
        with(Some("b")),
        with(None),
        with(Some("c")),
        with(Some("d")),
    ];
    let cancelled = jobs[4].id;
    store.insert_jobs(jobs).await.unwrap();
    assert_eq!(
        store.cancel(cancelled, T0).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let page = |after: Option<&str>, limit| {
        let store = &store;
        let after = after.map(str::to_owned);
        async move { store.live_contexts(after, limit).await.unwrap() }
    };
    let owned = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(c, n)| (c.to_string(), *n)).collect()
    };
    assert_eq!(page(None, 10).await, owned(&[("a", 1), ("b", 2), ("d", 1)]));
    assert_eq!(page(None, 2).await, owned(&[("a", 1), ("b", 2)]));
    assert_eq!(page(Some("b"), 2).await, owned(&[("d", 1)]));
}

/// Completed and failed jobs counted by the minute they ended, from a time on.
pub(super) async fn ended_jobs_are_counted_per_minute(store: impl Store) {
    let claimed = insert_and_claim(&store, (0..4).map(|_| new_job("q", 0, T0)).collect(), 4).await;
    let minute = T0.0 / 60_000;
    let at = |m: i64| Timestamp((minute + m) * 60_000 + 5_000);
    let error = || JobError {
        reason: Reason::GuestError,
        message: "no".into(),
    };
    let end = |c: &Claimed, finish: Finish, reason: Reason| AttemptEnd {
        id: c.job.id,
        queue: c.job.queue.clone(),
        lease: c.lease,
        attempt: Some(attempt(1, reason)),
        finish,
    };
    let done = || Finish::Completed { output: vec![] };
    let ends = [
        (0, done(), Reason::Completed, at(0)),
        (1, done(), Reason::Completed, at(2)),
        (
            2,
            Finish::Failed { error: error() },
            Reason::GuestError,
            at(2),
        ),
        (
            3,
            Finish::Cancelled { error: error() },
            Reason::Cancelled,
            at(3),
        ),
    ];
    for (i, finish, reason, now) in ends {
        let applied = store
            .finish_many(vec![end(&claimed[i], finish, reason)], now)
            .await
            .unwrap();
        assert_eq!(applied, [true]);
    }
    let counted = store.ended_per_minute(at(0)).await.unwrap();
    assert_eq!(counted, vec![(minute, 1, 0), (minute + 2, 1, 1)]);
    let later = store.ended_per_minute(at(1)).await.unwrap();
    assert_eq!(later, vec![(minute + 2, 1, 1)]);
}
