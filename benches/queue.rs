//! Queue benchmarks; prints figures, asserts nothing. Run with `cargo bench --bench queue`
//! (add `-- throughput`, `preloaded`, `stream`, `latency`, `store`, `claim` or `memory` to run
//! one). Figures and targets are kept in BENCHMARKS.md:
//! - echo jobs submitted in batches and run to completion on the embedded store, jobs/s;
//! - the same jobs submitted one at a time by many concurrent callers, run to completion;
//! - the same jobs queued before the workers start, then run: jobs/s and CPU per job;
//! - the store's cost per job by phase (insert, claim, finish), one call at a time;
//! - submit -> completed latency of single jobs on an idle engine, p50/p99;
//! - claim cost with 10k vs 1M queued jobs;
//! - resident memory with 1M queued jobs;
//! - over HTTP on 127.0.0.1 (`-- http`): echo jobs submitted with `POST /v1/jobs/batch` and
//!   run to completion, jobs/s; submit -> result latency of one job with `?wait=`, p50/p99.

use std::sync::Arc;
use std::time::{Duration, Instant};

use remotask::domain::{JobState, QueueConfig, QueueName, Reason, SystemClock, Timestamp};
use remotask::sandbox::{Sandbox, SandboxConfig};
use remotask::service::{LocalSource, Service, SubmitRequest};
use remotask::store::{SqliteStore, Store};
use remotask::worker::{WorkerConfig, WorkerPool};

#[path = "support/guests.rs"]
mod guests;
#[path = "support/jobs.rs"]
mod jobs;

fn main() {
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let wants = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "remotask queue benchmarks ({} cores)\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    runtime.block_on(async {
        if wants("throughput") {
            throughput().await;
        }
        if wants("preloaded") {
            preloaded().await;
        }
        if wants("stream") {
            stream().await;
        }
        if wants("latency") {
            latency().await;
        }
        if wants("http") {
            http_throughput().await;
            http_latency().await;
        }
        if wants("store") {
            store_phases().await;
        }
        if wants("claim") || wants("memory") {
            claim_and_memory().await;
        }
    });
}

fn echo_module() -> Vec<u8> {
    guests::echo()
}

async fn engine(dir: &std::path::Path, threads: usize) -> (Service, WorkerPool) {
    let store = SqliteStore::open(dir.join("remotask.db")).expect("store");
    let service = Service::new(Arc::new(store), sandbox().clone(), Arc::new(SystemClock));
    service
        .register_task(&"echo".parse().unwrap(), echo_module(), None)
        .await
        .expect("register");
    service
        .put_queue(QueueConfig {
            // Room for what the workers claim ahead (up to 512 per guest thread), and for
            // ended attempts whose results are not written yet (they count as running).
            concurrency: 2048,
            ..QueueConfig::with_defaults(QueueName::default_queue())
        })
        .await
        .expect("queue");
    let pool = start_pool(&service, threads);
    (service, pool)
}

/// The sandbox of every engine of this run: admission and compiled modules shared.
fn sandbox() -> &'static Sandbox {
    static SANDBOX: std::sync::OnceLock<Sandbox> = std::sync::OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new(SandboxConfig::default()).expect("sandbox"))
}

/// A worker pool of `threads` guest threads on `service`'s in-process source.
fn start_pool(service: &Service, threads: usize) -> WorkerPool {
    let source = LocalSource::new(service.clone(), Duration::from_secs(5));
    let config = WorkerConfig {
        threads,
        ..WorkerConfig::default()
    };
    WorkerPool::start(source, sandbox().clone(), config)
}

async fn completed(service: &Service) -> u64 {
    service
        .queue(&QueueName::default_queue())
        .await
        .map_or(0, |q| q.counts[&JobState::Completed])
}

/// Waits until `n` jobs have completed. Watches the attempt counters (free to read) and only
/// then reads the queue's counts from the store, so polling takes no reader from the engine
/// being measured.
async fn all_completed(service: &Service, n: u64) {
    let attempts = |service: &Service| {
        service
            .metrics()
            .attempts_by_reason
            .iter()
            .find(|(reason, _)| *reason == Reason::Completed)
            .map_or(0, |(_, count)| *count)
    };
    while attempts(service) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while completed(service).await < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Submits `n` echo jobs in batches of `batch`.
async fn submit_echo(service: &Service, n: u64, batch: u64) {
    for _ in 0..n / batch {
        let requests = (0..batch)
            .map(|i| SubmitRequest::new("echo".parse().unwrap(), format!("{{\"i\":{i}}}")))
            .collect();
        service.submit_batch(requests).await.expect("submit");
    }
}

async fn throughput() {
    let n = 20_000u64;
    let batch = 1_000;
    println!(
        "## {n} echo jobs, submitted in batches of {batch}, run to completion (2 guest threads)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (service, pool) = engine(dir.path(), 2).await;
    let started = Instant::now();
    submit_echo(&service, n, batch).await;
    let submitted = started.elapsed();
    all_completed(&service, n).await;
    let took = started.elapsed();
    print_rates(n, submitted, took);
    pool.shutdown().await;
}

/// Prints how fast `n` jobs were submitted, and run to completion from the first submit.
fn print_rates(n: u64, submitted: Duration, took: Duration) {
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "submit            {:>8.0} jobs/s ({:.2} s)",
        rate(submitted),
        submitted.as_secs_f64()
    );
    println!(
        "end to end        {:>8.0} jobs/s ({:.2} s)\n",
        rate(took),
        took.as_secs_f64()
    );
}

/// Single submits from many callers at once while the workers run: the shape of a server
/// taking one job per request. Each submit is durable when it returns, so most of the
/// writer's transactions carry an fsync.
async fn stream() {
    let n = 20_000u64;
    let callers = 32u64;
    println!(
        "## {n} echo jobs, submitted one at a time by {callers} concurrent callers, run to \
         completion (2 guest threads)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (service, pool) = engine(dir.path(), 2).await;
    let started = Instant::now();
    let submitters: Vec<_> = (0..callers)
        .map(|c| {
            let service = service.clone();
            tokio::spawn(async move {
                for i in 0..n / callers {
                    let input = format!("{{\"c\":{c},\"i\":{i}}}");
                    service
                        .submit(SubmitRequest::new("echo".parse().unwrap(), input))
                        .await
                        .expect("submit");
                }
            })
        })
        .collect();
    for s in submitters {
        s.await.expect("submitter");
    }
    let submitted = started.elapsed();
    all_completed(&service, n).await;
    let took = started.elapsed();
    print_rates(n, submitted, took);
    pool.shutdown().await;
}

async fn latency() {
    let n = 1_000;
    println!("## submit -> completed latency of one echo job on an idle engine ({n} jobs)");
    let dir = tempfile::tempdir().expect("tempdir");
    let (service, pool) = engine(dir.path(), 2).await;
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 50 {
        let t = Instant::now();
        let job = service
            .submit(SubmitRequest::new("echo".parse().unwrap(), format!("{i}")))
            .await
            .expect("submit")
            .job;
        let done = service
            .wait(job.id, Duration::from_secs(10))
            .await
            .expect("wait");
        assert_eq!(done.state, JobState::Completed);
        if i >= 50 {
            times.push(t.elapsed());
        }
    }
    times.sort();
    let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!("p50 {:.2} ms   p99 {:.2} ms\n", p(0.5), p(0.99));
    pool.shutdown().await;
}

/// The engine behind the HTTP API on a free loopback port: base URL and an admin token.
async fn http_engine(dir: &std::path::Path) -> (Service, WorkerPool, String, String) {
    // `reqwest::Client::new()` needs a process-wide rustls provider.
    remotask::cli::install_default_provider();
    let (service, pool) = engine(dir, 2).await;
    let token = service
        .create_token(remotask::domain::Role::Admin, "bench")
        .await
        .expect("token")
        .secret;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = remotask::http::router(remotask::http::AppState::new(
        service.clone(),
        remotask::http::HttpCaps::default(),
    ));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (service, pool, format!("http://{addr}"), token)
}

async fn http_throughput() {
    let n = 20_000u64;
    let batch = 1_000;
    println!(
        "## over HTTP: {n} echo jobs, POST /v1/jobs/batch of {batch}, run to completion (2 guest threads)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (service, pool, base, token) = http_engine(dir.path()).await;
    let http = reqwest::Client::new();
    let started = Instant::now();
    for _ in 0..n / batch {
        let jobs: Vec<serde_json::Value> = (0..batch)
            .map(|i| serde_json::json!({"task": "echo", "input": {"i": i}}))
            .collect();
        let response = http
            .post(format!("{base}/v1/jobs/batch"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "jobs": jobs }))
            .send()
            .await
            .expect("submit");
        assert_eq!(response.status(), 202);
    }
    let submitted = started.elapsed();
    // Completion is watched in process, not over HTTP: polling would load the server.
    all_completed(&service, n).await;
    let took = started.elapsed();
    print_rates(n, submitted, took);
    pool.shutdown().await;
}

async fn http_latency() {
    let n = 1_000;
    println!(
        "## over HTTP: POST /v1/jobs then GET /v1/jobs/{{id}}?wait=10, one echo job at a time ({n} jobs)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (_service, pool, base, token) = http_engine(dir.path()).await;
    let http = reqwest::Client::new();
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 50 {
        let t = Instant::now();
        let job: serde_json::Value = http
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"task": "echo", "input": i}))
            .send()
            .await
            .expect("submit")
            .json()
            .await
            .expect("json");
        let id = job["id"].as_str().expect("id");
        let done: serde_json::Value = http
            .get(format!("{base}/v1/jobs/{id}?wait=10"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(done["state"], "completed");
        if i >= 50 {
            times.push(t.elapsed());
        }
    }
    times.sort();
    let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!("p50 {:.2} ms   p99 {:.2} ms\n", p(0.5), p(0.99));
    pool.shutdown().await;
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

async fn claim_and_memory() {
    println!("## claim cost and memory with many queued jobs");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("remotask.db")).expect("store");
    store
        .put_queue(&QueueConfig {
            concurrency: 1_000,
            ..QueueConfig::with_defaults(QueueName::default_queue())
        })
        .await
        .expect("queue");
    let rss_before = rss_mib();
    let mut queued = 0u64;
    for target in [10_000u64, 1_000_000] {
        let inserted = jobs::fill(&store, &mut queued, target).await;
        let cost = jobs::claim_cost(&store, 2_000).await;
        // The rescuer's look for expired leases, as it runs every second.
        let started = Instant::now();
        for _ in 0..10 {
            store
                .expired_leases(Timestamp::now())
                .await
                .expect("expired");
        }
        let rescue = started.elapsed() / 10;
        // What a queue stats call, a health check or a metrics scrape reads.
        let started = Instant::now();
        for _ in 0..10 {
            store
                .get_queue(&QueueName::default_queue())
                .await
                .expect("stats");
        }
        let stats = started.elapsed() / 10;
        println!(
            "{target:>9} queued: claim {:>6.1} us   rescuer pass {:>8.1} us   queue stats {:>8.1} us   (filled in {:.1} s)   RSS {:.0} MiB (was {:.0} MiB before the jobs)",
            cost.as_secs_f64() * 1e6,
            rescue.as_secs_f64() * 1e6,
            stats.as_secs_f64() * 1e6,
            inserted.as_secs_f64(),
            rss_mib(),
            rss_before
        );
    }
    println!();
}

/// The store's share of one job, phase by phase, as the engine calls it: submits in batches
/// of 1,000, claims of 32, results written 16 at a time. Each call waits for the previous one,
/// so the figures are the writer thread's cost per job (the engine overlaps them).
async fn store_phases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("remotask.db")).expect("store");
    jobs::phases(&store, 20_000, 32, 16).await;
}

async fn preloaded() {
    let n = 20_000u64;
    let batch = 1_000;
    println!("## {n} echo jobs queued before the workers start, run to completion");
    let dir = tempfile::tempdir().expect("tempdir");
    let (service, pool) = engine(dir.path(), 2).await;
    pool.shutdown().await;
    submit_echo(&service, n, batch).await;
    let cpu0 = cpu_secs();
    let started = Instant::now();
    let pool = start_pool(&service, 2);
    all_completed(&service, n).await;
    let took = started.elapsed();
    let cpu = cpu_secs() - cpu0;
    println!(
        "run               {:>8.0} jobs/s ({:.2} s, {:.2} CPUs, {:.0} us CPU per job)\n",
        n as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        cpu / took.as_secs_f64(),
        cpu * 1e6 / n as f64
    );
    pool.shutdown().await;
}

/// CPU time used by this process so far (user + system), in seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}
