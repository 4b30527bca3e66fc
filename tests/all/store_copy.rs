//! `remotask store copy`: an installation's SQLite store moved into PostgreSQL. Every record
//! arrives as it was stored (jobs in every state with their attempts, leases and cancel
//! flags, tasks with their versions and modules, queues, schedules with their history, tokens
//! with their hashes); a non-empty target is refused unless replaced; and a server started on
//! the copy answers for the old jobs with the old tokens.

use std::time::Duration;

use serde_json::json;

use remotask::domain::{
    CancelOutcome, CatchUp, Finish, JobError, JobFilter, JobId, JobState, JobTemplate, Lease,
    ModuleDigest, NewJob, Overlap, QueueConfig, QueueName, Reason, Role, ScheduleRecord, SpecDef,
    Start, TaskDefaults, Timestamp, TokenRecord,
};
use remotask::store::copy::{self, CopyReport};
use remotask::store::{AttemptEnd, Firing, PgStore, SqliteStore, Store, StoreError};

use crate::postgres::postgres;
use crate::remote::{Api, Proc, attempts, shared_cache};
use crate::serve::serve_http;
use crate::support::remotask;

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn job(queue: &str, digest: ModuleDigest, start: Start) -> NewJob {
    let id = JobId::generate();
    NewJob {
        id,
        task: "echo".parse().unwrap(),
        digest,
        queue: queue.parse().unwrap(),
        input: b"{\"n\": 1}".to_vec(),
        args: vec!["--flag".into()],
        env: vec![("K".into(), "v".into())],
        priority: 3,
        start,
        unique_key: None,
        context: Some("ctx".into()),
        concurrency_key: Some(format!("key-{id}")),
        limits: Default::default(),
        retry: Default::default(),
        submitter: Some("tok".into()),
        created_at: T0,
    }
}

fn attempt(number: u32, reason: Reason) -> remotask::domain::AttemptRecord {
    remotask::domain::AttemptRecord {
        number,
        reason,
        trap_kind: None,
        exit_code: Some(number as i32),
        message: Some(format!("attempt {number}")),
        stderr: format!("log of {number}").into_bytes(),
        stderr_truncated: number.is_multiple_of(2),
        receipt: json!({"fuel_consumed": number, "wall_ms": 2}),
        worker: "w".into(),
        started_at: T0,
        finished_at: Timestamp(T0.0 + 5),
        // Every other attempt carries what replays it, so the copy must carry both kinds.
        replay: number
            .is_multiple_of(2)
            .then(|| remotask::domain::AttemptReplay {
                limits: Default::default(),
                output_digest: remotask::domain::output_digest(b"out"),
                recording: remotask::domain::Recording {
                    seed: remotask::domain::Seed([number as u8; 32]),
                    wall: vec![1_700_000_000_000_000_000 + u64::from(number)],
                    monotonic: vec![1, 2, u64::from(number)],
                    not_replayable: None,
                },
            }),
    }
}

/// A SQLite store holding some of everything; the lease of its running job and the digest
/// its jobs name that it has no module for.
async fn source(store: &SqliteStore) -> (Lease, ModuleDigest) {
    let echo: remotask::domain::TaskName = "echo".parse().unwrap();
    let v1 = store.put_module(b"\0asm v1".to_vec()).await.unwrap();
    store.put_task(&echo, v1, 7, None, T0).await.unwrap();
    let v2 = store.put_module(b"\0asm v2".to_vec()).await.unwrap();
    let defaults = TaskDefaults {
        env: vec![("A".into(), "b".into())],
        ..TaskDefaults::default()
    };
    let later = Timestamp(T0.0 + 1_000);
    store
        .put_task(&echo, v2, 7, Some(defaults), later)
        .await
        .unwrap();
    for (name, concurrency) in [("q", 2_000), ("slow", 1)] {
        let config = QueueConfig {
            concurrency,
            ..QueueConfig::with_defaults(name.parse().unwrap())
        };
        store.put_queue(&config).await.unwrap();
    }
    store
        .set_paused(&"slow".parse().unwrap(), true)
        .await
        .unwrap();
    for (id, role) in [("t1", Role::Admin), ("t2", Role::Read)] {
        let token = TokenRecord {
            id: id.into(),
            name: format!("{id} name"),
            role,
            hash: format!("hash of {id}"),
            created_at: T0,
            revoked_at: None,
        };
        store.create_token(&token).await.unwrap();
    }
    store.revoke_token("t2", later).await.unwrap();
    let schedule = ScheduleRecord {
        name: "nightly".parse().unwrap(),
        spec: SpecDef {
            cron: Some("0 3 * * *".into()),
            ..SpecDef::default()
        },
        job: JobTemplate::of(echo.clone(), b"{}".to_vec()),
        overlap: Overlap::Skip,
        catch_up: CatchUp::One,
        paused: false,
        next_fire: Some(T0),
        last_fire: None,
        last_job: None,
        fires: 0,
        skipped: 0,
        last_error: None,
        created_at: T0,
        updated_at: T0,
    };
    store.put_schedule(&schedule).await.unwrap();
    let fired = job("q", v2, Start::At(T0));
    let firing = Firing {
        expected: T0,
        next: Some(Timestamp(T0.0 + 86_400_000)),
        fired_at: Some(T0),
        jobs: vec![fired],
        skipped: 1,
        error: None,
    };
    store
        .fire_schedule(&schedule.name, firing, T0)
        .await
        .unwrap()
        .unwrap();

    // Held, scheduled and queued jobs (one in a paused queue, one with a unique key, one
    // naming a module the store does not have), and 1,200 to run, over several batches.
    let gone = ModuleDigest::of(b"a module nobody stored");
    let mut unique = job("q", v2, Start::Now);
    unique.unique_key = Some("only-one".into());
    let waiting = vec![
        job("q", v2, Start::Held),
        job("q", v2, Start::At(Timestamp(T0.0 + 3_600_000))),
        job("slow", v1, Start::Now),
        unique,
        job("q", gone, Start::Now),
    ];
    let mut ran: Vec<NewJob> = (0..1_200).map(|_| job("q", v2, Start::Now)).collect();
    ran.sort_by_key(|j| j.id);
    store.insert_jobs(ran).await.unwrap();
    let claimed = store
        .claim(&"q".parse().unwrap(), "w", 1_200, 60_000, T0)
        .await
        .unwrap()
        .jobs;
    assert_eq!(claimed.len(), 1_200);
    store.insert_jobs(waiting).await.unwrap();
    // Ends: completed, failed after a retry, cancelled while running; one left running
    // with progress and a cancel asked for.
    let (running, rest) = claimed.split_last().unwrap();
    let error = |reason| JobError {
        reason,
        message: "why".into(),
    };
    let ends = rest
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (finish, reason) = match i % 3 {
                0 => (
                    Finish::Completed {
                        output: format!("out {i}").into_bytes(),
                    },
                    Reason::Completed,
                ),
                1 => (
                    Finish::Failed {
                        error: error(Reason::Trap),
                    },
                    Reason::Trap,
                ),
                _ => (
                    Finish::Cancelled {
                        error: error(Reason::Cancelled),
                    },
                    Reason::Cancelled,
                ),
            };
            AttemptEnd {
                id: c.job.id,
                queue: c.job.queue.clone(),
                lease: c.lease,
                attempt: Some(attempt(1, reason)),
                finish,
            }
        })
        .collect();
    store.finish_many(ends, T0).await.unwrap();
    store
        .set_progress(running.job.id, &running.lease, 3, 10)
        .await
        .unwrap();
    assert_eq!(
        store.cancel(running.job.id, T0).await.unwrap(),
        CancelOutcome::Running
    );
    (running.lease, gone)
}

/// Every job of `store`, in id order.
async fn all_jobs(store: &impl Store) -> Vec<remotask::domain::Job> {
    let mut out = Vec::new();
    loop {
        let page = store
            .list_jobs(&JobFilter {
                after: out.last().map(|j: &remotask::domain::Job| j.id),
                limit: 1_000,
                ..JobFilter::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// The two stores hold the same records.
async fn assert_same(from: &SqliteStore, to: &PgStore) {
    assert_eq!(
        from.list_tasks().await.unwrap(),
        to.list_tasks().await.unwrap()
    );
    for task in from.list_tasks().await.unwrap() {
        for v in task.versions {
            assert_eq!(
                from.get_module(v.digest).await.unwrap(),
                to.get_module(v.digest).await.unwrap()
            );
        }
    }
    let sorted = |mut v: Vec<(QueueConfig, bool)>| {
        v.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        v
    };
    assert_eq!(
        sorted(from.queue_configs().await.unwrap()),
        sorted(to.queue_configs().await.unwrap())
    );
    for q in ["q", "slow"] {
        let q: QueueName = q.parse().unwrap();
        let counts = |s: Option<remotask::domain::QueueStats>| s.unwrap().counts;
        assert_eq!(
            counts(from.get_queue(&q).await.unwrap()),
            counts(to.get_queue(&q).await.unwrap()),
            "queue {q}"
        );
    }
    assert_eq!(
        from.list_schedules().await.unwrap(),
        to.list_schedules().await.unwrap()
    );
    let tokens = |v: Vec<TokenRecord>| {
        v.into_iter()
            .map(|t| (t.id, t.name, t.role, t.hash, t.created_at, t.revoked_at))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tokens(from.list_tokens().await.unwrap()),
        tokens(to.list_tokens().await.unwrap())
    );
    let jobs = all_jobs(from).await;
    assert_eq!(jobs, all_jobs(to).await);
    for j in &jobs {
        assert_eq!(
            from.attempts(j.id).await.unwrap(),
            to.attempts(j.id).await.unwrap(),
            "attempts of {}",
            j.id
        );
        assert_eq!(
            from.cancel_requested(j.id).await.unwrap(),
            to.cancel_requested(j.id).await.unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_keeps_every_record_as_it_was_stored() {
    let dir = tempfile::tempdir().unwrap();
    let from = SqliteStore::open(dir.path().join("remotask.db")).unwrap();
    let (lease, gone) = source(&from).await;
    let to = PgStore::connect(&postgres().database()).await.unwrap();

    let report = copy::copy(&from, &to, false).await.unwrap();
    let states = [
        (JobState::Held, 1),
        (JobState::Scheduled, 1),
        (JobState::Queued, 4),
        (JobState::Running, 1),
        (JobState::Completed, 400),
        (JobState::Failed, 400),
        (JobState::Cancelled, 399),
    ];
    let expected = CopyReport {
        tasks: 1,
        task_versions: 2,
        modules: 2,
        module_bytes: 14,
        queues: 2,
        schedules: 1,
        tokens: 2,
        jobs: states.into_iter().collect(),
        attempts: 1_199,
        missing_modules: vec![gone],
    };
    assert_eq!(report, expected);
    assert_same(&from, &to).await;

    // The running job keeps its lease: the rescuer of a node on the copy finds it once it
    // expires, and a new claim's fencing token is above it.
    let expired = to
        .expired_leases(Timestamp(lease.expires_at.0 + 1))
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].lease, lease);
    let claims = to
        .claim(&"q".parse().unwrap(), "w", 10, 1_000, T0)
        .await
        .unwrap();
    assert_eq!(
        claims.jobs.len(),
        3,
        "the queued jobs of q, the unique one among them"
    );
    assert!(claims.jobs.iter().all(|c| c.lease.token > lease.token));

    // A target holding anything is refused, and left as it was; --replace starts it over.
    let refused = copy::copy(&from, &to, false).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::NotEmpty { holds } if holds.contains("1206 jobs")),
        "{refused}"
    );
    assert_eq!(all_jobs(&to).await.len(), 1_206);
    assert_eq!(copy::copy(&from, &to, true).await.unwrap(), expected);
    assert_same(&from, &to).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_on_the_copy_answers_with_the_old_jobs_and_tokens() {
    let data = tempfile::tempdir().unwrap();
    let compiled = shared_cache().join("compiled");
    std::os::unix::fs::symlink(&compiled, data.path().join("cache")).unwrap();
    let (child, url) = serve_http(data.path(), &["--workers", "1"]);
    let admin = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let api = Api::new(url, admin.trim().to_owned());
    let echo = crate::support::guest_bytes("echo");
    let r = api
        .request(reqwest::Method::PUT, "/v1/tasks/echo")
        .header("content-type", "application/wasm")
        .body(echo)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let ids = api
        .submit(vec![json!({"task": "echo", "input": {"moved": true}})])
        .await;
    let before = api
        .wait_ended(&ids, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(before["state"], "completed", "{before}");
    let mut server = Proc(child);
    server.signal("-TERM");
    assert!(server.0.wait().unwrap().success(), "a graceful stop");

    let store = postgres().database();
    let copy = |extra: &[&str]| {
        remotask()
            .args(["store", "copy", "--from"])
            .arg(data.path())
            .args(["--to", &store])
            .args(extra)
            .output()
            .unwrap()
    };
    let first = copy(&[]);
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(out.contains("jobs       1 (1 completed)"), "{out}");
    assert!(out.contains("tasks      1 (1 versions)"), "{out}");
    let again = copy(&[]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2));
    assert!(err.contains("not empty") && err.contains("1 jobs"), "{err}");
    assert!(copy(&["--replace"]).status.success());

    // A node on the copy, with a data directory of its own, knows the old token and job.
    let fresh = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&compiled, fresh.path().join("cache")).unwrap();
    let (child, url) = serve_http(fresh.path(), &["--store", &store, "--workers", "1"]);
    let _node = Proc(child);
    let moved = Api::new(url, api.admin.clone());
    let after = moved.job(ids[0].as_str()).await;
    assert_eq!(after, before);
    assert_eq!(attempts(&after).len(), 1);
    let done = moved
        .run_one(json!({"task": "echo", "input": {"after": 1}}))
        .await;
    assert_eq!(
        done["output"],
        json!({"after": 1}),
        "the copied module runs"
    );
}
