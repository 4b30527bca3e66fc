//! Remote-worker benchmarks; prints figures, asserts nothing. Run with `cargo bench --bench
//! remote` (add `-- throughput`, `preloaded` or `cancel` to run one). One `remotask serve
//! --workers 0` and one `remotask worker --threads 2`, real processes on 127.0.0.1 on this
//! machine; figures and targets are kept in BENCHMARKS.md:
//! - echo jobs submitted over HTTP in batches of 1,000 while the worker runs them, end to
//!   end, jobs/s;
//! - the same jobs queued before the worker starts, then run: jobs/s, and the server's and
//!   the worker's CPU per job (the server's is what handing jobs out over the lease API and
//!   taking their results back costs it);
//! - a running remote job cancelled: the time from the cancel request to the job's
//!   `cancelled`, p50/p99.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "support/guests.rs"]
mod guests;

fn main() {
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let wants = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    remotask::cli::install_default_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "remotask remote-worker benchmarks ({} cores)\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    runtime.block_on(async {
        if wants("throughput") {
            throughput(false).await;
        }
        if wants("preloaded") {
            throughput(true).await;
        }
        if wants("cancel") {
            cancel().await;
        }
    });
}

/// Builds the echo and hostile guests into a directory of their own; its path.
fn guests() -> tempfile::TempDir {
    let built = guests::build(&["echo", "hostile"]);
    let dir = tempfile::tempdir().expect("tempdir");
    for g in ["echo", "hostile"] {
        let wasm = format!("{g}.wasm");
        std::fs::copy(built.join(&wasm), dir.path().join(wasm)).expect("copy");
    }
    dir
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// CPU seconds (user + system) the process used so far.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).expect("stat");
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let ticks: f64 =
            fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
        ticks / 100.0
    }
}

/// Starts `remotask` with `args` and waits for `remotask: ready`; the lines before it.
fn start(args: &[&str]) -> (Proc, Vec<String>) {
    let child = Command::new(env!("CARGO_BIN_EXE_remotask"))
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("remotask starts");
    // Killed and waited for when the `Proc` is dropped.
    let mut child = Proc(child);
    let stderr = child.0.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("ready in time");
        if line == "remotask: ready" {
            return (child, lines);
        }
        lines.push(line);
    }
}

/// A server without guest threads: its process, base URL and admin token.
struct Server {
    proc: Proc,
    url: String,
    token: String,
    http: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Server {
    fn start(guests: &Path) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let config = data.path().join("remotask.toml");
        // Room for what the worker claims ahead.
        std::fs::write(
            &config,
            "[[queues]]\nname = \"default\"\nconcurrency = 2048\n",
        )
        .expect("config");
        let (proc, lines) = start(&[
            "serve",
            "--workers",
            "0",
            "--bind",
            "127.0.0.1:0",
            "--config",
            config.to_str().expect("utf-8"),
            "--data-dir",
            data.path().to_str().expect("utf-8"),
            "--register-dir",
            guests.to_str().expect("utf-8"),
        ]);
        let url = lines
            .iter()
            .find_map(|l| l.strip_prefix("remotask: listening on "))
            .expect("url")
            .to_owned();
        let token = std::fs::read_to_string(data.path().join("admin.token"))
            .expect("token")
            .trim()
            .to_owned();
        Self {
            proc,
            url,
            token,
            http: reqwest::Client::new(),
            _data: data,
        }
    }

    /// A worker whose cache of compiled modules is the server's, filled when the server
    /// registered the guests: no attempt waits for a compile.
    fn worker(&self, cache: &Path) -> Proc {
        let compiled = cache.join("compiled");
        if !compiled.exists() {
            std::os::unix::fs::symlink(self._data.path().join("cache"), &compiled)
                .expect("symlink");
        }
        start(&[
            "worker",
            "--server",
            &self.url,
            "--token",
            &self.token,
            "--threads",
            "2",
            "--name",
            "bench",
            "--cache-dir",
            cache.to_str().expect("utf-8"),
        ])
        .0
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        response.json().await.unwrap_or(Value::Null)
    }

    async fn submit(&self, n: u64) {
        for from in (0..n).step_by(1_000) {
            let jobs: Vec<Value> = (from..(from + 1_000).min(n))
                .map(|i| json!({"task": "echo", "input": {"i": i}}))
                .collect();
            self.call(
                reqwest::Method::POST,
                "/v1/jobs/batch",
                Some(json!({ "jobs": jobs })),
            )
            .await;
        }
    }

    async fn completed(&self) -> u64 {
        let queue = self
            .call(reqwest::Method::GET, "/v1/queues/default", None)
            .await;
        queue["counts"]["completed"].as_u64().unwrap_or(0)
    }

    async fn wait_completed(&self, n: u64) {
        while self.completed().await < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn throughput(preloaded: bool) {
    let n = 20_000u64;
    let guests = guests();
    let cache = tempfile::tempdir().expect("tempdir");
    let server = Server::start(guests.path());
    if preloaded {
        println!("## {n} echo jobs queued, then one remote worker (2 threads) runs them");
        server.submit(n).await;
    } else {
        println!("## {n} echo jobs over HTTP in batches of 1,000, one remote worker (2 threads)");
    }
    let cpu0 = server.proc.cpu_secs();
    let started = Instant::now();
    let worker = server.worker(cache.path());
    let worker_cpu0 = worker.cpu_secs();
    if !preloaded {
        server.submit(n).await;
    }
    server.wait_completed(n).await;
    let took = started.elapsed();
    let per_job = |cpu: f64| cpu * 1e6 / n as f64;
    println!(
        "end to end   {:>6.0} jobs/s ({:.2} s)   server CPU {:>5.1} us/job   worker CPU {:>5.1} us/job\n",
        n as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        per_job(server.proc.cpu_secs() - cpu0),
        per_job(worker.cpu_secs() - worker_cpu0),
    );
}

async fn cancel() {
    let n = 30;
    println!("## a running remote job cancelled: cancel request -> `cancelled` ({n} jobs)");
    let guests = guests();
    let cache = tempfile::tempdir().expect("tempdir");
    let server = Server::start(guests.path());
    let _worker = server.worker(cache.path());
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let job = server
            .call(
                reqwest::Method::POST,
                "/v1/jobs",
                Some(json!({"task": "hostile", "args": ["sleep", "30"]})),
            )
            .await;
        let id = job["id"].as_str().expect("id").to_owned();
        loop {
            let job = server
                .call(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None)
                .await;
            if job["state"] == "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        server
            .call(
                reqwest::Method::POST,
                &format!("/v1/jobs/{id}/cancel"),
                None,
            )
            .await;
        let done = server
            .call(
                reqwest::Method::GET,
                &format!("/v1/jobs/{id}?wait=10"),
                None,
            )
            .await;
        assert_eq!(done["state"], "cancelled", "{done}");
        times.push(t.elapsed());
    }
    times.sort();
    let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!("p50 {:.2} ms   p99 {:.2} ms\n", p(0.5), p(0.99));
}
