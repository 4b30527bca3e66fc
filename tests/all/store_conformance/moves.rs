//! The state machine, carried out by the store: for a job in each state, every store
//! operation that stands for an event makes exactly the move `domain::MOVES` allows, and
//! every other is refused and changes nothing.

use super::*;
use remotask::domain::Event;

/// A job of queue `q` brought into `state` through the store's own operations, with the
/// lease of its last claim, if it had one.
async fn job_in(store: &impl Store, state: JobState, q: &str) -> (JobId, Option<Lease>) {
    let queue: QueueName = q.parse().unwrap();
    set_concurrency(store, &queue, 10).await;
    let mut job = new_job(q, 0, T0);
    match state {
        JobState::Held => job.start = Start::Held,
        JobState::Scheduled => job.start = Start::At(Timestamp(T0.0 + 3_600_000)),
        _ => {}
    }
    let id = job.id;
    store.insert_jobs(vec![job]).await.unwrap();
    let finish = match state {
        JobState::Held | JobState::Scheduled | JobState::Queued => return (id, None),
        JobState::Cancelled => {
            store.cancel(id, T0).await.unwrap();
            return (id, None);
        }
        JobState::Running => None,
        JobState::Completed => Some(Finish::Completed { output: vec![] }),
        JobState::Failed => Some(Finish::Failed {
            error: JobError {
                reason: Reason::Trap,
                message: "trap".into(),
            },
        }),
    };
    let claimed = store.claim(&queue, "w", 1, 60_000, T0).await.unwrap().jobs;
    assert_eq!(claimed.len(), 1, "{state}");
    if let Some(finish) = finish {
        assert!(store.finish(&claimed[0], None, finish, T0).await.unwrap());
    }
    (id, Some(claimed[0].lease))
}

/// Carries out `event` for job `id` of queue `q` through the store; false if the store
/// refused it.
async fn carry_out(
    store: &impl Store,
    event: Event,
    (id, lease): (JobId, Option<Lease>),
    q: &str,
) -> bool {
    let lease = lease.unwrap_or(Lease {
        token: -1,
        expires_at: T0,
    });
    let end = |finish: Finish| AttemptEnd {
        id,
        queue: q.parse().unwrap(),
        lease,
        attempt: None,
        finish,
    };
    let error = JobError {
        reason: Reason::Cancelled,
        message: "m".into(),
    };
    let finish = match event {
        Event::Release => return store.release(id, T0).await.unwrap(),
        Event::Claim => {
            let queue = q.parse().unwrap();
            let claims = store.claim(&queue, "w", 1, 60_000, T0).await.unwrap();
            return claims.jobs.iter().any(|c| c.job.id == id);
        }
        Event::Cancel if lease.token < 0 => {
            return store.cancel(id, T0).await.unwrap() == CancelOutcome::Cancelled;
        }
        Event::Retry => return store.retry(id, T0).await.unwrap(),
        Event::Delete => return store.delete_job(id).await.unwrap(),
        Event::Complete => Finish::Completed { output: vec![] },
        Event::BackOff => Finish::Retry {
            run_at: Timestamp(T0.0 + 1_000),
            limits: Limits::default(),
            error,
        },
        Event::Fail => Finish::Failed { error },
        Event::Cancel => Finish::Cancelled { error },
        Event::Interrupt => Finish::Interrupted,
        Event::Submit | Event::SubmitHeld | Event::SubmitDelayed | Event::Due | Event::Clean => {
            unreachable!("{event} is checked on its own")
        }
    };
    let written = store.finish_many(vec![end(finish)], T0).await.unwrap();
    written == [true]
}

async fn state_of(store: &impl Store, id: JobId) -> Option<JobState> {
    store.get_job(id).await.unwrap().map(|j| j.state)
}

/// What the table says `event` does to a job in `from`: the state after it (`None`: gone),
/// or the same state when it is refused.
fn expected(event: Event, from: JobState) -> (bool, Option<JobState>) {
    match event.apply(Some(from)) {
        Ok(to) => (true, to),
        Err(_) => (false, Some(from)),
    }
}

pub(super) async fn every_move_the_table_allows_is_made_and_every_other_is_refused(
    store: impl Store,
) {
    let one_by_one = [
        Event::Release,
        Event::Claim,
        Event::Complete,
        Event::BackOff,
        Event::Fail,
        Event::Cancel,
        Event::Interrupt,
        Event::Retry,
        Event::Delete,
    ];
    for (s, from) in JobState::ALL.into_iter().enumerate() {
        for (e, event) in one_by_one.into_iter().enumerate() {
            let q = format!("q{s}-{e}");
            let job = job_in(&store, from, &q).await;
            assert_eq!(state_of(&store, job.0).await, Some(from));
            // A running job is cancelled through its worker: the store only marks it, and
            // the attempt's end under its lease makes the move.
            if (from, event) == (JobState::Running, Event::Cancel) {
                let marked = store.cancel(job.0, T0).await.unwrap();
                assert_eq!(marked, CancelOutcome::Running);
                assert_eq!(state_of(&store, job.0).await, Some(from), "only marked");
            }
            let applied = carry_out(&store, event, job, &q).await;
            let after = state_of(&store, job.0).await;
            assert_eq!(
                (applied, after),
                expected(event, from),
                "{event} on a {from} job"
            );
        }
    }
    assert_counts_match(&store, "after every move").await;

    // Due and clean move every job they apply to at once: one job in each state.
    let due_at = Timestamp(T0.0 + 7_200_000);
    let mut jobs = Vec::new();
    for (s, from) in JobState::ALL.into_iter().enumerate() {
        jobs.push((from, job_in(&store, from, &format!("due{s}")).await.0));
    }
    let claims = store
        .claim(&"nothing".parse().unwrap(), "w", 1, 60_000, due_at)
        .await
        .unwrap();
    for (from, id) in &jobs {
        let promoted = claims.promoted.iter().any(|p| p.id == *id);
        let after = state_of(&store, *id).await;
        assert_eq!(
            (promoted, after),
            expected(Event::Due, *from),
            "due on {from}"
        );
    }
    let before: Vec<Option<JobState>> = {
        let mut states = Vec::new();
        for (_, id) in &jobs {
            states.push(state_of(&store, *id).await);
        }
        states
    };
    store.clean(None).await.unwrap();
    for ((_, id), was) in jobs.iter().zip(before) {
        let was = was.expect("every job is stored");
        let cleaned = state_of(&store, *id).await.is_none();
        assert_eq!(
            (cleaned, state_of(&store, *id).await),
            expected(Event::Clean, was),
            "clean on {was}"
        );
    }
    assert_counts_match(&store, "after due and clean").await;

    // A submit stores a job in the state its start says.
    for (start, event) in [
        (Start::Now, Event::Submit),
        (Start::Held, Event::SubmitHeld),
        (Start::At(Timestamp(T0.0 + 1)), Event::SubmitDelayed),
        (Start::At(Timestamp(T0.0 - 1)), Event::Submit),
    ] {
        let mut job = new_job("submits", 0, T0);
        job.start = start;
        let id = job.id;
        assert_eq!(job.event(), event);
        store.insert_jobs(vec![job]).await.unwrap();
        assert_eq!(Some(state_of(&store, id).await), event.apply(None).ok());
    }
}
