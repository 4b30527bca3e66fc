//! PostgreSQL store benchmarks; prints figures, asserts nothing. Run with
//! `cargo bench --bench postgres` (add `-- e2e`, `-- preloaded`, `-- nodes`, `-- store` or
//! `-- claim` to run one). A throwaway server is started for the run with its durability
//! settings on (`fsync`, `synchronous_commit`, `full_page_writes`); each run takes a fresh
//! database on it:
//! - e2e: one node (a service and 2 guest threads), echo jobs submitted in batches and run to
//!   completion, jobs/s submit and end to end; 3 runs and their median;
//! - preloaded: one node whose guest threads start once the jobs are stored: jobs/s run;
//! - nodes: two nodes on one database in this process (a store, a service and 2 guest threads
//!   each), half the jobs submitted through each at once, run to completion, jobs/s; beside
//!   it the one-node figure of the same run; 3 runs each and their medians;
//! - store: the store's cost per job by phase (insert, claim, finish), one call at a time, in
//!   batches of the sizes the engine uses on PostgreSQL;
//! - claim: the cost of one claim with 10,000 and with 1,000,000 jobs queued, and of the
//!   rescuer's pass and a queue stats read at those sizes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use remotask::domain::{JobState, QueueConfig, QueueName, Reason, SystemClock};
use remotask::sandbox::{Sandbox, SandboxConfig};
use remotask::service::{LocalSource, Service, SubmitRequest};
use remotask::store::{PgStore, Store};
use remotask::worker::{WorkerConfig, WorkerPool};

// The bench uses the durable server and its databases, not the tests' shared server.
#[allow(dead_code)]
#[path = "../tests/all/postgres.rs"]
mod postgres;

use postgres::Postgres;

const JOBS: u64 = 50_000;
const BATCH: u64 = 1_000;
const THREADS: usize = 2;
const RUNS: usize = 3;

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
        "remotask PostgreSQL benchmarks ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let server = Postgres::start_with(true);
    runtime.block_on(async {
        print_settings(&server).await;
        if wants("e2e") {
            e2e(&server).await;
        }
        if wants("preloaded") {
            preloaded(&server).await;
        }
        if wants("nodes") {
            nodes(&server).await;
        }
        if wants("store") {
            let store = PgStore::connect(&server.database()).await.expect("store");
            jobs::phases(&store, 50_000, 250, 250).await;
        }
        if wants("claim") {
            claim(&server).await;
        }
    });
}

/// The server's version and durability settings, as the server reports them.
async fn print_settings(server: &Postgres) {
    let (client, connection) =
        tokio_postgres::connect(&server.url("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect");
    let connection = tokio::spawn(connection);
    let mut shown = Vec::new();
    for name in [
        "server_version",
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "wal_sync_method",
    ] {
        let row = client
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .expect("SHOW");
        shown.push(format!("{name}={}", row.get::<_, String>(0)));
    }
    drop(client);
    let _ = connection.await;
    println!("server: {}", shown.join(" "));
    println!(
        "(the store's claims, heartbeats, progress and results commit with \
         synchronous_commit=off per session; submits and the rest wait for the WAL flush)\n"
    );
}

fn echo_module() -> Vec<u8> {
    guests::echo()
}

/// The sandbox of node `node` (0 or 1) for every run: each node has its own, as separate
/// processes would.
fn sandbox(node: usize) -> &'static Sandbox {
    static SANDBOXES: std::sync::OnceLock<[Sandbox; 2]> = std::sync::OnceLock::new();
    let make = || Sandbox::new(SandboxConfig::default()).expect("sandbox");
    &SANDBOXES.get_or_init(|| [make(), make()])[node]
}

/// Node `node` on the database at `url`: a service on a store of its own and a worker pool of
/// `THREADS` guest threads. The first node registers the echo task and sets up the queue.
async fn node(url: &str, node: usize) -> (Service, WorkerPool) {
    let service = node_service(url, node).await;
    let pool = workers(&service, node);
    (service, pool)
}

/// Node `node`'s service, without guest threads yet.
async fn node_service(url: &str, node: usize) -> Service {
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(url).await.expect("store"));
    let service = Service::new(store, sandbox(node).clone(), Arc::new(SystemClock));
    if node == 0 {
        service
            .register_task(&"echo".parse().unwrap(), echo_module(), None)
            .await
            .expect("register");
        service
            .put_queue(QueueConfig {
                // Room for what the workers claim ahead (up to 512 per guest thread), and for
                // ended attempts whose results are not written yet (they count as running).
                concurrency: 4096,
                ..QueueConfig::with_defaults(QueueName::default_queue())
            })
            .await
            .expect("queue");
    }
    service
}

/// `THREADS` guest threads on node `node`'s service.
fn workers(service: &Service, node: usize) -> WorkerPool {
    let source = LocalSource::new(service.clone(), Duration::from_secs(5));
    let config = WorkerConfig {
        threads: THREADS,
        ..WorkerConfig::default()
    };
    WorkerPool::start(source, sandbox(node).clone(), config)
}

async fn completed(service: &Service) -> u64 {
    service
        .queue(&QueueName::default_queue())
        .await
        .map_or(0, |q| q.counts[&JobState::Completed])
}

/// Waits until `n` jobs have completed. Watches the attempt counters of every node (free to
/// read) and only then reads the queue's counts from the database through the first node, so
/// polling takes no connection from the engine being measured.
async fn all_completed(services: &[&Service], n: u64) {
    let attempts = |service: &Service| {
        service
            .metrics()
            .attempts_by_reason
            .iter()
            .find(|(reason, _)| *reason == Reason::Completed)
            .map_or(0, |(_, count)| *count)
    };
    while services.iter().map(|s| attempts(s)).sum::<u64>() < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while completed(services[0]).await < n {
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

/// One node on a fresh database: how long `JOBS` jobs took to submit, and to run to
/// completion from the first submit.
async fn one_node(server: &Postgres) -> (Duration, Duration) {
    let url = server.database();
    let (service, pool) = node(&url, 0).await;
    let started = Instant::now();
    submit_echo(&service, JOBS, BATCH).await;
    let submitted = started.elapsed();
    all_completed(&[&service], JOBS).await;
    let took = started.elapsed();
    pool.shutdown().await;
    (submitted, took)
}

/// One node on a fresh database, its guest threads started once `JOBS` jobs are stored: how
/// long they took to run.
async fn preloaded_node(server: &Postgres) -> Duration {
    let url = server.database();
    let service = node_service(&url, 0).await;
    submit_echo(&service, JOBS, BATCH).await;
    let started = Instant::now();
    let pool = workers(&service, 0);
    all_completed(&[&service], JOBS).await;
    let took = started.elapsed();
    pool.shutdown().await;
    took
}

/// Two nodes on a fresh database, half the jobs submitted through each at once: how long
/// `JOBS` jobs took to submit, and to run to completion from the first submit.
async fn two_nodes(server: &Postgres) -> (Duration, Duration) {
    let url = server.database();
    let (a, pool_a) = node(&url, 0).await;
    let (b, pool_b) = node(&url, 1).await;
    let started = Instant::now();
    tokio::join!(
        submit_echo(&a, JOBS / 2, BATCH),
        submit_echo(&b, JOBS / 2, BATCH)
    );
    let submitted = started.elapsed();
    all_completed(&[&a, &b], JOBS).await;
    let took = started.elapsed();
    tokio::join!(pool_a.shutdown(), pool_b.shutdown());
    (submitted, took)
}

fn rate(d: Duration) -> f64 {
    JOBS as f64 / d.as_secs_f64()
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

async fn e2e(server: &Postgres) {
    println!(
        "## e2e: {JOBS} echo jobs, submitted in batches of {BATCH}, run to completion \
         (one node, {THREADS} guest threads, {RUNS} runs)"
    );
    let (mut submits, mut ends) = (Vec::new(), Vec::new());
    for run in 1..=RUNS {
        let (submitted, took) = one_node(server).await;
        println!(
            "run {run}   submit {:>7.0} jobs/s ({:.2} s)   end to end {:>7.0} jobs/s ({:.2} s)",
            rate(submitted),
            submitted.as_secs_f64(),
            rate(took),
            took.as_secs_f64()
        );
        submits.push(rate(submitted));
        ends.push(rate(took));
    }
    println!(
        "median  submit {:>7.0} jobs/s              end to end {:>7.0} jobs/s\n",
        median(submits),
        median(ends)
    );
}

async fn preloaded(server: &Postgres) {
    println!(
        "## preloaded: {JOBS} echo jobs stored first, then run to completion (one node, \
         {THREADS} guest threads, {RUNS} runs)"
    );
    let mut rates = Vec::new();
    for run in 1..=RUNS {
        let took = preloaded_node(server).await;
        println!(
            "run {run}   {:>7.0} jobs/s ({:.2} s)",
            rate(took),
            took.as_secs_f64()
        );
        rates.push(rate(took));
    }
    println!("median  {:>7.0} jobs/s\n", median(rates));
}

async fn nodes(server: &Postgres) {
    println!(
        "## nodes: {JOBS} echo jobs, submitted in batches of {BATCH}, run to completion; two \
         nodes on one database ({THREADS} guest threads each, half the jobs submitted through \
         each) beside one node, {RUNS} runs each"
    );
    let (mut ones, mut twos) = (Vec::new(), Vec::new());
    for run in 1..=RUNS {
        let (_, one) = one_node(server).await;
        let (submitted, two) = two_nodes(server).await;
        println!(
            "run {run}   one node {:>7.0} jobs/s ({:.2} s)   two nodes {:>7.0} jobs/s ({:.2} s, \
             submitted in {:.2} s)",
            rate(one),
            one.as_secs_f64(),
            rate(two),
            two.as_secs_f64(),
            submitted.as_secs_f64()
        );
        ones.push(rate(one));
        twos.push(rate(two));
    }
    println!(
        "median  one node {:>7.0} jobs/s          two nodes {:>7.0} jobs/s\n",
        median(ones),
        median(twos)
    );
}

/// The cost of one claim (and, untimed, its job's end) with 10,000 and then 1,000,000 jobs
/// queued, and of what the rescuer and a stats call read at those sizes.
async fn claim(server: &Postgres) {
    println!("## claim cost with many queued jobs (one call at a time)");
    let store = PgStore::connect(&server.database()).await.expect("store");
    store
        .put_queue(&QueueConfig {
            concurrency: 1_000,
            ..QueueConfig::with_defaults(QueueName::default_queue())
        })
        .await
        .expect("queue");
    let mut queued = 0u64;
    for target in [10_000u64, 1_000_000] {
        let inserted = jobs::fill(&store, &mut queued, target).await;
        let cost = jobs::claim_cost(&store, 2_000).await;
        let mean = |n: u32, d: Duration| d.as_secs_f64() * 1e6 / f64::from(n);
        let started = Instant::now();
        for _ in 0..10 {
            store
                .expired_leases(remotask::domain::Timestamp::now())
                .await
                .expect("expired");
        }
        let rescue = mean(10, started.elapsed());
        let started = Instant::now();
        for _ in 0..10 {
            store
                .get_queue(&QueueName::default_queue())
                .await
                .expect("stats");
        }
        let stats = mean(10, started.elapsed());
        println!(
            "{target:>9} queued: claim {:>6.1} us   rescuer pass {rescue:>8.1} us   queue stats {stats:>8.1} us   (filled in {:.1} s)",
            cost.as_secs_f64() * 1e6,
            inserted.as_secs_f64(),
        );
    }
    println!();
}
