//! The job queue end to end (service + SQLite store + worker pool + sandbox), in tests named
//! after the seed behaviours they keep (lovely.remotetask, senaite.queue).

use std::sync::Arc;
use std::time::{Duration, Instant};

use remotask::domain::{
    CancelOutcome, Clock, JobFilter, JobState, Limits, ManualClock, Metering, QueueConfig,
    QueueName, Reason, RetryPolicy, TaskDefaults, Timestamp,
};
use remotask::service::{ServiceError, WorkerHello};

use crate::support::{Engine, no_backoff};

fn queue(name: &str, concurrency: u32) -> QueueConfig {
    QueueConfig {
        concurrency,
        ..QueueConfig::with_defaults(name.parse().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lovely_add_is_queued_then_completed_with_its_result() {
    let mut e = Engine::new().await;
    let mut request = Engine::request("echo", &[]);
    request.input = br#"{"foo":"bar"}"#.to_vec();
    let job = e.submit(request).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.output, None);
    e.start_workers(2);
    let done = e.wait(job.id).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.output.as_deref(), Some(&br#"{"foo":"bar"}"#[..]));
    assert_eq!(done.attempts, 1);
    let attempts = e.service.attempts(job.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].reason, Reason::Completed);
    assert!(attempts[0].receipt["fuel_consumed"].as_u64().unwrap() > 0);
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lovely_task_error_fails_without_retry() {
    let mut e = Engine::new().await;
    e.start_workers(2);
    let job = e.submit(Engine::request("hostile", &["exit", "1"])).await;
    let done = e.wait(job.id).await;
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.attempts, 1);
    let error = done.error.unwrap();
    assert_eq!(
        (error.reason, error.message.as_str()),
        (Reason::GuestError, "exiting with 1")
    );
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_is_retried_only_if_the_policy_says_so() {
    let mut e = Engine::new().await;
    e.start_workers(2);
    let default = e.submit(Engine::request("hostile", &["panic", "x"])).await;
    let mut retried = Engine::request("hostile", &["panic", "x"]);
    retried.retry = Some(RetryPolicy {
        retry_on: vec![Reason::Trap],
        ..no_backoff(2)
    });
    let retried = e.submit(retried).await;
    let default = e.wait(default.id).await;
    let retried = e.wait(retried.id).await;
    assert_eq!((default.state, default.attempts), (JobState::Failed, 1));
    assert_eq!((retried.state, retried.attempts), (JobState::Failed, 3));
    assert_eq!(retried.error.unwrap().reason, Reason::Trap);
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senaite_fail_retries_three_times_then_failed_after_four_attempts() {
    let mut e = Engine::new().await;
    e.start_workers(2);
    let mut request = Engine::request("hostile", &["exit", "75"]);
    request.retry = Some(no_backoff(3));
    let job = e.submit(request).await;
    let done = e.wait(job.id).await;
    assert_eq!((done.state, done.attempts), (JobState::Failed, 4));
    let reasons: Vec<Reason> = e
        .service
        .attempts(job.id)
        .await
        .unwrap()
        .iter()
        .map(|a| a.reason)
        .collect();
    assert_eq!(reasons, vec![Reason::RetryableError; 4]);
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senaite_timeout_escalates_max_seconds_for_the_next_attempt() {
    let mut e = Engine::new().await;
    e.start_workers(2);
    let mut request = Engine::request("hostile", &["sleep", "0.3"]);
    request.limits.max_seconds = Some(0.2);
    request.retry = Some(no_backoff(3));
    let job = e.submit(request).await;
    let done = e.wait(job.id).await;
    assert_eq!((done.state, done.attempts), (JobState::Completed, 2));
    assert_eq!(
        done.limits.max_time,
        Duration::from_millis(400),
        "doubled after the deadline"
    );
    let attempts = e.service.attempts(job.id).await.unwrap();
    assert_eq!(
        (attempts[0].reason, attempts[1].reason),
        (Reason::Deadline, Reason::Completed)
    );
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_cpu_budget_doubles_it_for_the_next_attempt_within_the_queue_cap() {
    let mut e = Engine::new().await;
    e.service
        .put_queue(QueueConfig {
            caps: Limits::default()
                .with_cpu_ms(Some(150))
                .expect("a cap")
                .with_metering(Metering::Cpu),
            ..QueueConfig::with_defaults(QueueName::default_queue())
        })
        .await
        .unwrap();
    e.start_workers(1);
    let mut request = Engine::request("hostile", &["loop"]);
    request.limits.cpu_ms = Some(60);
    request.limits.metering = Some(Metering::Cpu);
    request.retry = Some(no_backoff(2));
    let job = e.submit(request).await;
    let done = e.wait(job.id).await;
    assert_eq!((done.state, done.attempts), (JobState::Failed, 3));
    let attempts = e.service.attempts(job.id).await.unwrap();
    let cpu_ms: Vec<u64> = attempts
        .iter()
        .map(|a| a.receipt["cpu_us"].as_u64().unwrap() / 1000)
        .collect();
    assert!(
        attempts.iter().all(|a| a.reason == Reason::CpuLimit),
        "{attempts:?}"
    );
    assert!(
        (60..100).contains(&cpu_ms[0]) && (120..160).contains(&cpu_ms[1]),
        "60 ms, then doubled: {cpu_ms:?}"
    );
    assert!(
        (150..190).contains(&cpu_ms[2]),
        "then capped at 150 ms: {cpu_ms:?}"
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.receipt["fuel_consumed"].is_null())
    );
    assert_eq!(done.limits.cpu_ms(), Some(150));
    // A job asking for more than the cap, or for none under a capped queue, is refused.
    let mut over = Engine::request("hostile", &["echo"]);
    over.limits.cpu_ms = Some(151);
    assert!(e.service.submit(over).await.is_err());
    assert!(
        e.service
            .submit(Engine::request("hostile", &["echo"]))
            .await
            .is_err()
    );
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_a_paused_queue_a_queue_nothing_serves_and_a_deleted_task() {
    let e = Engine::new().await;
    let q: QueueName = "later".parse().unwrap();
    e.service.set_paused(&q, true).await.unwrap();
    let mut delayed = Engine::request("echo", &[]);
    delayed.queue = Some(q.clone());
    delayed.delay = Some(Duration::from_secs(3600));
    let delayed = e.submit(delayed).await;
    let why = e.service.explain(delayed.id).await.unwrap();
    assert_eq!(why.causes, ["scheduled", "paused"], "{why:?}");
    assert!(why.message.contains("queue later is paused"), "{why}");

    // Told it runs no guest threads, and with no remote worker attached, the server says
    // nothing serves the queue; a remote worker for another queue does not change that.
    let queued = e.submit(Engine::request("echo", &[])).await;
    let causes = |e: &Engine, id| {
        let service = e.service.clone();
        async move { service.explain(id).await.unwrap().causes }
    };
    assert!(
        !causes(&e, queued.id).await.contains(&"no_worker"),
        "not told: unknown"
    );
    e.service.set_local_threads(0);
    assert!(causes(&e, queued.id).await.contains(&"no_worker"));
    e.service
        .worker_seen(WorkerHello {
            name: "elsewhere".into(),
            address: "127.0.0.1".into(),
            version: None,
            queues: vec!["other".parse().unwrap()],
            threads: Some(1),
            lease_ttl: Duration::from_secs(30),
        })
        .unwrap();
    assert!(causes(&e, queued.id).await.contains(&"no_worker"));
    e.service.set_local_threads(2);
    assert!(!causes(&e, queued.id).await.contains(&"no_worker"));

    e.service
        .delete_task(&"echo".parse().unwrap())
        .await
        .unwrap();
    let why = e.service.explain(queued.id).await.unwrap();
    assert!(why.causes.contains(&"task_deleted"), "{why:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_runs_without_fuel_by_default_is_compiled_so_at_upload() {
    let mut e = Engine::new().await;
    let defaults = TaskDefaults {
        limits: Some(Limits::default().with_metering(Metering::Cpu)),
        ..TaskDefaults::default()
    };
    e.service
        .register_task(
            &"cpu-echo".parse().unwrap(),
            crate::support::guest_bytes("echo"),
            Some(defaults),
        )
        .await
        .unwrap();
    e.start_workers(1);
    let job = e.submit(Engine::request("cpu-echo", &[])).await;
    let done = e.wait(job.id).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.limits.metering, Metering::Cpu);
    let attempts = e.service.attempts(job.id).await.unwrap();
    let receipt = &attempts[0].receipt;
    assert!(receipt["fuel_consumed"].is_null(), "{receipt}");
    assert_eq!(
        receipt["compile_cache"], "memory",
        "its CPU-time form was made at upload, not at its first attempt"
    );
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_backoff_waits_for_the_clock() {
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let mut e = Engine::with_clock(Arc::new(clock.clone())).await;
    e.start_workers(1);
    let mut request = Engine::request("hostile", &["exit", "75"]);
    request.retry = Some(RetryPolicy {
        retries: 1,
        jitter: 0.0,
        ..RetryPolicy::default()
    });
    let job = e.submit(request).await;
    let mut job = e.service.job(job.id).await.unwrap();
    for _ in 0..200 {
        if job.state == JobState::Scheduled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        job = e.service.job(job.id).await.unwrap();
    }
    assert_eq!(job.state, JobState::Scheduled);
    assert_eq!(
        job.run_at,
        Timestamp(1_700_000_005_000),
        "first retry 5 s after the failure"
    );
    assert!(
        e.service
            .explain(job.id)
            .await
            .unwrap()
            .message
            .starts_with("retry after backoff")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        e.service.job(job.id).await.unwrap().attempts,
        1,
        "not run before its time"
    );
    clock.advance(Duration::from_secs(5));
    e.service.release(job.id).await.ok();
    let done = e.wait(job.id).await;
    assert_eq!((done.state, done.attempts), (JobState::Failed, 2));
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_queued_job_and_a_running_one() {
    let mut e = Engine::new().await;
    e.service
        .set_paused(&QueueName::default_queue(), true)
        .await
        .unwrap();
    let queued = e.submit(Engine::request("echo", &[])).await;
    assert_eq!(
        e.service.cancel(queued.id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        e.service.job(queued.id).await.unwrap().state,
        JobState::Cancelled
    );
    assert_eq!(
        e.service.cancel(queued.id).await.unwrap(),
        CancelOutcome::AlreadyEnded(JobState::Cancelled)
    );

    e.service
        .set_paused(&QueueName::default_queue(), false)
        .await
        .unwrap();
    e.start_workers(2);
    let running = e.submit(Engine::request("hostile", &["loop"])).await;
    let mut job = e.service.job(running.id).await.unwrap();
    while job.state != JobState::Running {
        tokio::time::sleep(Duration::from_millis(5)).await;
        job = e.service.job(running.id).await.unwrap();
    }
    let asked = Instant::now();
    assert_eq!(
        e.service.cancel(running.id).await.unwrap(),
        CancelOutcome::Running
    );
    let done = e.wait(running.id).await;
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "took {:?}",
        asked.elapsed()
    );
    assert_eq!(done.state, JobState::Cancelled);
    assert_eq!(done.error.unwrap().reason, Reason::Cancelled);
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_removes_terminal_jobs_and_keeps_live_ones() {
    let mut e = Engine::new().await;
    e.start_workers(2);
    let done = e.submit(Engine::request("echo", &[])).await;
    let failed = e.submit(Engine::request("hostile", &["exit", "2"])).await;
    e.wait(done.id).await;
    e.wait(failed.id).await;
    let mut held = Engine::request("echo", &[]);
    held.hold = true;
    let held = e.submit(held).await;
    assert_eq!(
        e.service
            .clean(Some(Duration::from_secs(3600)))
            .await
            .unwrap(),
        0,
        "nothing is an hour old"
    );
    assert_eq!(e.service.clean(None).await.unwrap(), 2);
    let left: Vec<_> = e
        .service
        .jobs(&JobFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(left, vec![held.id]);
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senaite_unique_key_returns_the_live_job() {
    let mut e = Engine::new().await;
    let mut request = Engine::request("echo", &[]);
    request.unique_key = Some("report:42".into());
    let first = e.service.submit(request.clone()).await.unwrap();
    let second = e.service.submit(request.clone()).await.unwrap();
    assert!(!first.existing);
    assert!(second.existing);
    assert_eq!(first.job.id, second.job.id);
    e.start_workers(1);
    e.wait(first.job.id).await;
    let third = e.service.submit(request).await.unwrap();
    assert!(!third.existing, "a finished job no longer holds its key");
    assert_ne!(third.job.id, first.job.id);
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senaite_priorities_run_first_then_by_submission() {
    let mut e = Engine::new().await;
    e.service.put_queue(queue("ordered", 1)).await.unwrap();
    e.service
        .set_paused(&"ordered".parse().unwrap(), true)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (name, priority) in [
        ("low", 0),
        ("high", 10),
        ("mid", 5),
        ("low2", 0),
        ("high2", 10),
    ] {
        let mut r = Engine::request("echo", &[]);
        r.queue = Some("ordered".parse().unwrap());
        r.priority = priority;
        r.input = name.as_bytes().to_vec();
        ids.push(e.submit(r).await.id);
    }
    let explained = e.service.explain(ids[0]).await.unwrap();
    assert!(explained.causes.contains(&"paused"), "{explained:?}");
    assert!(
        explained.message.contains("behind 3 jobs"),
        "{}",
        explained.message
    );
    e.start_workers(2);
    e.service
        .set_paused(&"ordered".parse().unwrap(), false)
        .await
        .unwrap();
    let mut finished = Vec::new();
    for id in &ids {
        let job = e.wait(*id).await;
        finished.push((
            job.finished_at.unwrap(),
            String::from_utf8(job.output.unwrap()).unwrap(),
        ));
    }
    finished.sort();
    let order: Vec<&str> = finished.iter().map(|(_, name)| name.as_str()).collect();
    assert_eq!(order, ["high", "high2", "mid", "low", "low2"]);
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senaite_context_queries_find_all_jobs_about_one_object() {
    let e = Engine::new().await;
    for context in ["sample-1", "sample-2", "sample-1"] {
        let mut r = Engine::request("echo", &[]);
        r.context = Some(context.into());
        r.hold = true;
        e.submit(r).await;
    }
    let filter = JobFilter {
        context: Some("sample-1".into()),
        ..Default::default()
    };
    let found = e.service.jobs(&filter).await.unwrap();
    assert_eq!(found.len(), 2);
    assert!(
        found
            .iter()
            .all(|j| j.context.as_deref() == Some("sample-1"))
    );
    let page = e
        .service
        .jobs(&JobFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let next = e
        .service
        .jobs(&JobFilter {
            limit: 2,
            after: Some(page[1].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((page.len(), next.len()), (2, 1));
    assert!(next[0].id > page[1].id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lovely_startlater_holds_until_released() {
    let mut e = Engine::new().await;
    e.start_workers(2);
    let mut r = Engine::request("echo", &[]);
    r.hold = true;
    let job = e.submit(r).await;
    assert_eq!(job.state, JobState::Held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(e.service.job(job.id).await.unwrap().state, JobState::Held);
    assert!(
        e.service
            .explain(job.id)
            .await
            .unwrap()
            .causes
            .contains(&"held")
    );
    e.service.release(job.id).await.unwrap();
    assert_eq!(e.wait(job.id).await.state, JobState::Completed);
    let again = e.service.release(job.id).await.unwrap_err();
    assert!(matches!(again, ServiceError::Conflict(_)), "{again}");
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lovely_stop_processing_survives_a_restart() {
    let mut e = Engine::new().await;
    let q: QueueName = "reports".parse().unwrap();
    e.service.set_paused(&q, true).await.unwrap();
    let mut r = Engine::request("echo", &[]);
    r.queue = Some(q.clone());
    let job = e.submit(r).await;
    drop(e.service);
    let restarted = Engine::open(e.dir.path(), Arc::new(remotask::domain::SystemClock)).await;
    e.service = restarted;
    assert!(
        e.service.queue(&q).await.unwrap().paused,
        "pause is persisted"
    );
    e.start_workers(2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(e.service.job(job.id).await.unwrap().state, JobState::Queued);
    e.service.set_paused(&q, false).await.unwrap();
    assert_eq!(e.wait(job.id).await.state, JobState::Completed);
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lovely_simple_processor_finishes_jobs_in_submission_order() {
    let mut e = Engine::new().await;
    e.service.put_queue(queue("simple", 1)).await.unwrap();
    let mut ids = Vec::new();
    for secs in ["0.2", "0.01", "0.05", "0.01"] {
        let mut r = Engine::request("hostile", &["sleep", secs]);
        r.queue = Some("simple".parse().unwrap());
        ids.push(e.submit(r).await.id);
    }
    e.start_workers(4);
    let mut jobs = Vec::new();
    for id in &ids {
        jobs.push(e.wait(*id).await);
    }
    for pair in jobs.windows(2) {
        let (finished, next_started) = (pair[0].finished_at.unwrap(), pair[1].started_at.unwrap());
        assert!(finished <= next_started, "one at a time, in order");
        // The end of one job makes room for the next at once, not at the next poll (1 s).
        assert!(
            next_started.0 - finished.0 < 500,
            "the next job waited {} ms for room",
            next_started.0 - finished.0
        );
    }
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lovely_multi_processor_never_runs_more_than_its_max_threads() {
    let mut e = Engine::new().await;
    e.service.put_queue(queue("multi", 2)).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..6 {
        let mut r = Engine::request("hostile", &["sleep", "0.15"]);
        r.queue = Some("multi".parse().unwrap());
        ids.push(e.submit(r).await.id);
    }
    let started = Instant::now();
    e.start_workers(4);
    let mut spans = Vec::new();
    for id in &ids {
        let attempts = e.service.attempts(e.wait(*id).await.id).await.unwrap();
        spans.push((attempts[0].started_at, attempts[0].finished_at));
    }
    let took = started.elapsed();
    for (start, _) in &spans {
        let overlapping = spans
            .iter()
            .filter(|(s, f)| s <= start && start < f)
            .count();
        assert!(overlapping <= 2, "{overlapping} ran at once");
    }
    assert!(
        took >= Duration::from_millis(450),
        "6 jobs of 150 ms, 2 at a time: {took:?}"
    );
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senaite_purged_on_pop_an_expired_lease_is_requeued_as_lease_lost() {
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let e = Engine::with_clock(Arc::new(clock.clone())).await;
    let job = e.submit(Engine::request("echo", &[])).await;
    let store = e.service.store().clone();
    let claimed = store
        .claim(
            &QueueName::default_queue(),
            "worker-a",
            1,
            10_000,
            clock.now(),
        )
        .await
        .unwrap()
        .jobs;
    assert_eq!(claimed.len(), 1);
    clock.advance(Duration::from_secs(11));
    let rescued = e
        .service
        .rescue_expired(clock.now(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(rescued, vec![job.id]);
    let after = e.service.job(job.id).await.unwrap();
    assert_eq!(after.state, JobState::Scheduled);
    assert_eq!(after.run_at, clock.now().plus(Duration::from_secs(5)));
    let attempts = e.service.attempts(job.id).await.unwrap();
    assert_eq!(
        (attempts[0].reason, attempts[0].message.as_deref()),
        (Reason::LeaseLost, Some("lease expired (worker-a)"))
    );
    let stale = store
        .finish(
            &claimed[0],
            None,
            remotask::domain::Finish::Completed {
                output: b"late".to_vec(),
            },
            clock.now(),
        )
        .await
        .unwrap();
    assert!(!stale, "the stale worker cannot report");
    assert_eq!(e.service.job(job.id).await.unwrap().output, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_refuses_unknown_tasks_and_limits_over_the_queue_cap() {
    let e = Engine::new().await;
    let err = e
        .service
        .submit(Engine::request("nope", &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::TaskNotFound(_)), "{err}");
    let mut r = Engine::request("echo", &[]);
    r.limits.max_seconds = Some(7200.0);
    let err = e.service.submit(r).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "max_seconds 7200 is over queue default's cap of 3600"
    );
    assert!(matches!(err, ServiceError::OverCap(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_a_queue_s_caps_under_a_task_s_defaults_names_the_task() {
    let e = Engine::new().await;
    let defaults = TaskDefaults {
        limits: Some(Limits {
            max_time: Duration::from_secs(60),
            ..Limits::default()
        }),
        ..TaskDefaults::default()
    };
    e.service
        .set_task_defaults(&"echo".parse().unwrap(), defaults)
        .await
        .unwrap();
    let lowered = QueueConfig {
        caps: Limits {
            max_time: Duration::from_secs(10),
            ..QueueConfig::with_defaults(QueueName::default_queue()).caps
        },
        ..QueueConfig::with_defaults(QueueName::default_queue())
    };
    let over = e.service.put_queue(lowered.clone()).await.unwrap();
    assert_eq!(
        over,
        vec!["echo".parse::<remotask::domain::TaskName>().unwrap()]
    );
    let err = e
        .service
        .submit(Engine::request("echo", &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::OverCap(_)), "{err:?}");
    let other = QueueConfig {
        name: "other".parse().unwrap(),
        ..lowered
    };
    assert!(
        e.service.put_queue(other).await.unwrap().is_empty(),
        "not its queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_is_pinned_at_submit() {
    let mut e = Engine::new().await;
    let mut r = Engine::request("hostile", &["echo"]);
    r.input = b"v1".to_vec();
    r.hold = true;
    let job = e.submit(r).await;
    let old = job.digest;
    e.service
        .register_task(
            &"hostile".parse().unwrap(),
            crate::support::guest_bytes("echo"),
            None,
        )
        .await
        .unwrap();
    let task = e.service.task(&"hostile".parse().unwrap()).await.unwrap();
    assert_ne!(task.digest, old);
    assert_eq!(task.versions.len(), 2);
    e.start_workers(1);
    e.service.release(job.id).await.unwrap();
    let done = e.wait(job.id).await;
    assert_eq!(
        (done.digest, done.output.as_deref()),
        (old, Some(&b"v1"[..])),
        "ran the version it was submitted with"
    );
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_stored_whole_and_progress_is_kept_on_the_job() {
    let mut e = Engine::new().await;
    let batch = (0..50).map(|i| {
        let mut r = Engine::request("echo", &[]);
        r.input = format!("{i}").into_bytes();
        r
    });
    let submitted = e.service.submit_batch(batch.collect()).await.unwrap();
    assert_eq!(submitted.len(), 50);
    let mut progress = Engine::request("hostile", &["progress", "3"]);
    progress.limits = Limits::default().into();
    let progress = e.submit(progress).await;
    e.start_workers(2);
    for (i, s) in submitted.iter().enumerate() {
        assert_eq!(
            e.wait(s.job.id).await.output.unwrap(),
            format!("{i}").into_bytes()
        );
    }
    let done = e.wait(progress.id).await;
    assert_eq!(done.state, JobState::Completed);
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_progress_is_stored_on_the_running_job() {
    let mut e = Engine::new().await;
    e.start_workers(1);
    let job = e
        .submit(Engine::request("hostile", &["progress-sleep", "7", "1"]))
        .await;
    let started = Instant::now();
    let mut seen = None;
    while started.elapsed() < Duration::from_secs(10) {
        let j = e.service.job(job.id).await.unwrap();
        if j.state == JobState::Running && j.progress.is_some() {
            seen = j.progress;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, Some((7, 7)));
    assert_eq!(e.wait(job.id).await.state, JobState::Completed);
    e.stop_workers().await;
}

/// Listeners see each job's states in order, also when an idle pool's claim takes the job in
/// its submit's transaction and runs it before the submit is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_each_job_in_order_on_an_idle_pool() {
    let mut e = Engine::new().await;
    e.start_workers(2);
    let mut events = e.service.subscribe();
    for _ in 0..20 {
        let job = e.submit(Engine::request("echo", &[])).await;
        assert_eq!(e.wait(job.id).await.state, JobState::Completed);
        let mut seen = Vec::new();
        while seen.last() != Some(&JobState::Completed) {
            let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .expect("an event")
                .expect("not lagging");
            assert_eq!(event.id, job.id, "only this job runs");
            seen.push(event.state);
        }
        assert_eq!(
            seen,
            [JobState::Queued, JobState::Running, JobState::Completed]
        );
    }
    e.stop_workers().await;
}

/// An idle pool leaves a claim with the store for the next submit; once the pool is stopped,
/// that claim is gone: a later job stays queued for the next worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_pool_leaves_no_claim_behind() {
    let mut e = Engine::new().await;
    e.start_workers(2);
    let first = e.submit(Engine::request("echo", &[])).await;
    assert_eq!(e.wait(first.id).await.state, JobState::Completed);
    e.stop_workers().await;
    let later = e.submit(Engine::request("echo", &[])).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let later = e.service.job(later.id).await.unwrap();
    assert_eq!((later.state, later.attempts), (JobState::Queued, 0));
    e.start_workers(1);
    assert_eq!(e.wait(later.id).await.state, JobState::Completed);
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_requeues_unfinished_attempts_without_spending_them() {
    let mut e = Engine::new().await;
    e.start_workers(2);
    let quick = e
        .submit(Engine::request("hostile", &["sleep", "0.1"]))
        .await;
    let slow = e.submit(Engine::request("hostile", &["sleep", "30"])).await;
    let started = Instant::now();
    // Both attempts under way before the stop: the quick one running or done, the slow one
    // running (on a loaded machine the quick one could still be waiting for a thread).
    loop {
        let quick_on = e.service.job(quick.id).await.unwrap().state;
        let slow_on = e.service.job(slow.id).await.unwrap().state;
        if slow_on == JobState::Running && quick_on != JobState::Queued {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = Instant::now();
    e.stop_workers().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "grace of 500 ms, took {:?}",
        stopping.elapsed()
    );
    assert_eq!(
        e.service.job(quick.id).await.unwrap().state,
        JobState::Completed,
        "finished within the grace"
    );
    let slow = e.service.job(slow.id).await.unwrap();
    assert_eq!(
        (slow.state, slow.attempts),
        (JobState::Queued, 0),
        "requeued, attempt not spent"
    );
    assert!(e.service.attempts(slow.id).await.unwrap().is_empty());
}
