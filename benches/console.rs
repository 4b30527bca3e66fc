//! Web console benchmark; prints figures, asserts nothing. Run with `cargo bench --bench
//! console`. A SQLite store is filled with 1,000,000 jobs (900,000 ended: completed, with one
//! in fifty failed; 100,000 queued), then each console page is asked for 20 times through the
//! router (no network), signed in as an admin: the median and slowest server time, and the
//! page's weight. Targets (BENCHMARKS.md): under 50 ms a page, no page over 200 KB.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use remotask::domain::{
    Finish, JobError, QueueConfig, QueueName, Reason, Role, SystemClock, Timestamp,
};
use remotask::http::{AppState, HttpCaps, router};
use remotask::sandbox::{Sandbox, SandboxConfig};
use remotask::service::Service;
use remotask::store::{AttemptEnd, SqliteStore, Store};
use tower::ServiceExt;

#[path = "support/jobs.rs"]
#[allow(dead_code, reason = "its claim-cost half serves the queue benches")]
mod jobs;

const JOBS: u64 = 1_000_000;
const ENDED: u64 = 900_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(SqliteStore::open(dir.path().join("remotask.db")).expect("store"));
    let took = fill(store.as_ref()).await;
    println!("filled {JOBS} jobs ({ENDED} ended) in {:.0?}", took);
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    let service = Service::new(store, sandbox, Arc::new(SystemClock));
    let admin = service
        .create_token(Role::Admin, "bench")
        .await
        .expect("token");
    let app = router(AppState::new(service.clone(), HttpCaps::default()));
    let login = Request::post("/ui/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={}&next=/ui", admin.secret)))
        .expect("request");
    let answer = app.clone().oneshot(login).await.expect("login");
    let cookie = answer.headers()[header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("cookie")
        .to_owned();
    let some_job = service
        .jobs(&remotask::domain::JobFilter {
            limit: 1,
            newest_first: true,
            ..Default::default()
        })
        .await
        .expect("jobs")[0]
        .id;
    let pages = [
        "/ui".to_owned(),
        "/ui/jobs".to_owned(),
        "/ui/jobs?order=oldest".to_owned(),
        "/ui/jobs?state=failed".to_owned(),
        "/ui/jobs?state=queued".to_owned(),
        "/ui/jobs?state=cancelled".to_owned(),
        "/ui/jobs?state=scheduled".to_owned(),
        "/ui/jobs?state=running".to_owned(),
        "/ui/jobs?task=echo&context=nothing".to_owned(),
        format!("/ui/jobs/{some_job}"),
        "/ui/queues".to_owned(),
        "/ui/tasks".to_owned(),
        "/ui/schedules".to_owned(),
        "/ui/tokens".to_owned(),
    ];
    println!(
        "\n{:<40} {:>10} {:>10} {:>10}",
        "page", "p50", "slowest", "bytes"
    );
    for path in &pages {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..20 {
            let request = Request::get(path.as_str())
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .expect("request");
            let started = Instant::now();
            let answer = app.clone().oneshot(request).await.expect("page");
            assert!(answer.status().is_success(), "{path}: {}", answer.status());
            let body = answer.into_body().collect().await.expect("body").to_bytes();
            times.push(started.elapsed());
            bytes = body.len();
        }
        times.sort();
        println!(
            "{path:<40} {:>8.2}ms {:>8.2}ms {bytes:>10}",
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// 1,000,000 echo jobs in the default queue, 900,000 of them claimed and ended (one in fifty
/// failed), the rest queued; how long that took.
async fn fill(store: &dyn Store) -> Duration {
    let started = Instant::now();
    let mut queued = 0;
    jobs::fill(store, &mut queued, JOBS).await;
    let q = QueueName::default_queue();
    store
        .put_queue(&QueueConfig {
            concurrency: 1_000_000,
            ..QueueConfig::with_defaults(q.clone())
        })
        .await
        .expect("queue");
    let mut ended = 0;
    while ended < ENDED {
        let now = Timestamp::now();
        let claimed = store
            .claim(&q, "bench", 5_000, 600_000, now)
            .await
            .expect("claim")
            .jobs;
        let ends = claimed
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let failed = (ended + i as u64).is_multiple_of(50);
                let (reason, finish) = if failed {
                    let error = JobError {
                        reason: Reason::GuestError,
                        message: "exit 1".into(),
                    };
                    (Reason::GuestError, Finish::Failed { error })
                } else {
                    (
                        Reason::Completed,
                        Finish::Completed {
                            output: b"{}".to_vec(),
                        },
                    )
                };
                AttemptEnd {
                    id: c.job.id,
                    queue: c.job.queue.clone(),
                    lease: c.lease,
                    attempt: Some(remotask::domain::AttemptRecord {
                        number: 1,
                        reason,
                        trap_kind: None,
                        exit_code: Some(i32::from(failed)),
                        message: None,
                        stderr: Vec::new(),
                        stderr_truncated: false,
                        receipt: serde_json::json!({"wall_us": 900, "compile_cache": "memory"}),
                        worker: "bench".into(),
                        started_at: now,
                        finished_at: now,
                        replay: None,
                    }),
                    finish,
                }
            })
            .collect();
        store
            .finish_many(ends, Timestamp::now())
            .await
            .expect("finish");
        ended += claimed.len() as u64;
    }
    started.elapsed()
}
