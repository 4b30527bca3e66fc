//! Remote workers as real processes on 127.0.0.1: `remotask serve --workers 0` keeps the
//! queue and `remotask worker` processes run the jobs over the lease API. Jobs run exactly
//! once however workers die, stall or the server restarts; cancels reach remote attempts;
//! fencing tokens refuse late and forged reports; roles are checked.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::serve::{cli, serve_at, serve_http};
use crate::support::{guest, remotask};

/// A child process killed when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub(crate) fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// A server with no guest threads, the echo and hostile guests registered, and an HTTP
/// client with its admin token.
struct Cluster {
    data: tempfile::TempDir,
    modules: tempfile::TempDir,
    server: Option<Proc>,
    port: u16,
    api: Api,
    server_args: Vec<String>,
}

/// A server's API as its admin calls it.
pub(crate) struct Api {
    pub(crate) url: String,
    pub(crate) admin: String,
    pub(crate) http: reqwest::Client,
}

impl std::ops::Deref for Cluster {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Compiled modules and module bytes shared by every server and worker of this test run, so
/// a guest is compiled once per run (compiles of a debug build, many at once, are slow). The
/// first use fills it with a server that registers the guests and stops.
pub(crate) fn shared_cache() -> &'static std::path::Path {
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    CACHE
        .get_or_init(|| {
            let cache = tempfile::tempdir().unwrap();
            std::fs::create_dir(cache.path().join("compiled")).unwrap();
            let data = tempfile::tempdir().unwrap();
            let modules = guest_dir();
            std::os::unix::fs::symlink(cache.path().join("compiled"), data.path().join("cache"))
                .unwrap();
            let args = [
                "--workers",
                "0",
                "--register-dir",
                modules.path().to_str().unwrap(),
            ];
            let (server, _) = serve_http(data.path(), &args);
            drop(Proc(server));
            cache
        })
        .path()
}

/// A directory holding the echo and hostile guests.
pub(crate) fn guest_dir() -> tempfile::TempDir {
    let modules = tempfile::tempdir().unwrap();
    for g in ["echo", "hostile"] {
        std::fs::copy(guest(g), modules.path().join(format!("{g}.wasm"))).unwrap();
    }
    modules
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn start(server_args: &[&str]) -> Self {
        let cache = shared_cache();
        let data = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(cache.join("compiled"), data.path().join("cache")).unwrap();
        let mut cluster = Self {
            data,
            modules: guest_dir(),
            server: None,
            port: free_port(),
            api: Api::new(String::new(), String::new()),
            server_args: server_args.iter().map(|s| s.to_string()).collect(),
        };
        cluster.start_server();
        cluster.api.admin = std::fs::read_to_string(cluster.data.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        cluster
    }

    fn start_server(&mut self) {
        let bind = format!("127.0.0.1:{}", self.port);
        let mut args = vec!["--workers", "0", "--register-dir"];
        args.push(self.modules.path().to_str().unwrap());
        args.extend(self.server_args.iter().map(String::as_str));
        let (child, url, _) = serve_at(self.data.path(), &bind, &args);
        self.server = Some(Proc(child));
        self.api.url = url;
    }

    /// Kills the server with SIGKILL and starts it again on the same port and data.
    fn restart_server(&mut self) {
        let server = self.server.take().unwrap();
        server.signal("-KILL");
        drop(server);
        self.start_server();
    }

    fn token(&self, role: &str) -> String {
        let (code, out, err) = cli(
            &self.url,
            self.data.path(),
            &["token", "create", "--role", role, "--name", role],
        );
        assert_eq!(code, 0, "{err}");
        out.trim().to_owned()
    }

    /// Starts `remotask worker` named `name` and waits until it is ready.
    fn worker(&self, name: &str, token: &str, extra: &[&str]) -> Proc {
        let mut child = remotask()
            .args([
                "worker", "--server", &self.url, "--token", token, "--name", name,
            ])
            .arg("--cache-dir")
            .arg(shared_cache())
            .args(extra)
            .env_remove("REMOTASK_TOKEN")
            .stderr(Stdio::piped())
            .spawn()
            .expect("remotask worker starts");
        wait_ready(&mut child);
        Proc(child)
    }
}

impl Api {
    pub(crate) fn new(url: String, admin: String) -> Self {
        remotask::cli::install_default_provider();
        Self {
            url,
            admin,
            http: reqwest::Client::new(),
        }
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.admin)
    }

    /// Submits `jobs` (request bodies) in one batch; their ids.
    pub(crate) async fn submit(&self, jobs: Vec<Value>) -> Vec<String> {
        let r = self
            .request(reqwest::Method::POST, "/v1/jobs/batch")
            .json(&json!({ "jobs": jobs }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let body: Value = r.json().await.unwrap();
        body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// `GET path` as JSON.
    pub(crate) async fn get(&self, path: &str) -> Value {
        let r = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    /// Submits one job (a request body) and waits up to 30 s for it to end; the job.
    pub(crate) async fn run_one(&self, job: Value) -> Value {
        let ids = self.submit(vec![job]).await;
        self.wait_ended(&ids, Duration::from_secs(30))
            .await
            .remove(0)
    }

    /// `/metrics`, as text.
    pub(crate) async fn metrics(&self) -> String {
        let r = self
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    }

    pub(crate) async fn job(&self, id: &str) -> Value {
        self.get(&format!("/v1/jobs/{id}")).await
    }

    /// Waits until every job of `ids` is in a terminal state; the jobs.
    pub(crate) async fn wait_ended(&self, ids: &[String], within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            loop {
                let job = self.job(id).await;
                let state = job["state"].as_str().unwrap_or_default().to_owned();
                if ["completed", "failed", "cancelled"].contains(&state.as_str()) {
                    jobs.push(job);
                    break;
                }
                assert!(Instant::now() < deadline, "job {id} still {state}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        jobs
    }

    /// Waits until `id` is running on a worker; its name.
    pub(crate) async fn running_on(&self, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let job = self.job(id).await;
            if job["state"] == "running" {
                return job["worker"].as_str().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "{job}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Waits until a `remotask worker` says it is ready, and keeps reading its stderr.
pub(crate) fn wait_ready(child: &mut Child) {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the worker said ready in time");
        if line == "remotask: ready" {
            return;
        }
    }
}

/// The reasons and workers of a job's attempts, in order.
pub(crate) fn attempts(job: &Value) -> Vec<(String, String)> {
    job["attempt_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["reason"].as_str().unwrap().to_owned(),
                a["worker"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

pub(crate) fn sleeper(seconds: &str) -> Value {
    json!({"task": "hostile", "args": ["sleep", seconds]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_remote_workers_run_every_job_exactly_once_and_both_take_some() {
    let cluster = Cluster::start(&[]);
    let token = cluster.token("worker");
    let _a = cluster.worker("w-a", &token, &["--threads", "2"]);
    let _b = cluster.worker("w-b", &token, &["--threads", "2"]);
    let mut ids = Vec::new();
    for chunk in 0..4 {
        let jobs = (0..500)
            .map(|i| json!({"task": "echo", "input": {"i": chunk * 500 + i}}))
            .collect();
        ids.extend(cluster.submit(jobs).await);
    }
    let jobs = cluster.wait_ended(&ids, Duration::from_secs(120)).await;
    let mut by_worker = std::collections::BTreeMap::<String, usize>::new();
    for (i, job) in jobs.iter().enumerate() {
        assert_eq!(job["state"], "completed", "{job}");
        assert_eq!(job["output"], json!({"i": i}), "each job its own output");
        let attempts = attempts(job);
        assert_eq!(attempts.len(), 1, "{job}");
        *by_worker.entry(attempts[0].1.clone()).or_default() += 1;
    }
    assert_eq!(
        by_worker.keys().collect::<Vec<_>>(),
        ["w-a", "w-b"],
        "{by_worker:?}"
    );
    let (code, out, _) = cli(&cluster.url, cluster.data.path(), &["worker", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("w-a") && out.contains("w-b") && out.contains("up"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_jobs_end_lease_lost_once_and_run_again_elsewhere() {
    let cluster = Cluster::start(&["--requeue-delay", "0.2"]);
    let token = cluster.token("worker");
    let doomed = cluster.worker("doomed", &token, &["--threads", "2", "--lease-ttl", "1"]);
    let ids = cluster.submit(vec![sleeper("1"), sleeper("1")]).await;
    for id in &ids {
        assert_eq!(cluster.running_on(id).await, "doomed");
    }
    doomed.signal("-KILL");
    drop(doomed);
    let _other = cluster.worker("other", &token, &["--threads", "2"]);
    for job in cluster.wait_ended(&ids, Duration::from_secs(60)).await {
        assert_eq!(job["state"], "completed", "{job}");
        let want = [
            ("lease_lost".to_owned(), "doomed".to_owned()),
            ("completed".to_owned(), "other".to_owned()),
        ];
        assert_eq!(attempts(&job), want, "{job}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_s_late_reports_are_refused_and_change_nothing() {
    let cluster = Cluster::start(&["--requeue-delay", "0.2"]);
    let token = cluster.token("worker");
    let stalled = cluster.worker("stalled", &token, &["--threads", "2", "--lease-ttl", "1"]);
    let ids = cluster.submit(vec![sleeper("2"), sleeper("2")]).await;
    for id in &ids {
        assert_eq!(cluster.running_on(id).await, "stalled");
    }
    stalled.signal("-STOP");
    let _other = cluster.worker("other", &token, &["--threads", "2"]);
    let jobs = cluster.wait_ended(&ids, Duration::from_secs(60)).await;
    stalled.signal("-CONT");
    // The stalled worker wakes up, its attempts end and it reports them, late.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let workers = cluster.get("/v1/workers").await;
        let reported = workers["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "stalled")
            .map_or(0, |w| w["reported_total"].as_u64().unwrap());
        if reported >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{workers}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (before, id) in jobs.iter().zip(&ids) {
        let after = cluster.job(id).await;
        assert_eq!(after["state"], "completed");
        assert_eq!(
            after["finished_at"], before["finished_at"],
            "nothing changed"
        );
        let want = [
            ("lease_lost".to_owned(), "stalled".to_owned()),
            ("completed".to_owned(), "other".to_owned()),
        ];
        assert_eq!(attempts(&after), want, "{after}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_and_restarted_under_running_workers_loses_no_job_and_runs_none_twice() {
    let mut cluster = Cluster::start(&[]);
    let token = cluster.token("worker");
    let _a = cluster.worker("w-a", &token, &["--threads", "2"]);
    let _b = cluster.worker("w-b", &token, &["--threads", "2"]);
    let ids = cluster
        .submit((0..60).map(|_| sleeper("0.1")).collect())
        .await;
    // Some have run, some are running, some wait.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.job(&ids[8]).await["state"] != "completed" {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.restart_server();
    for job in cluster.wait_ended(&ids, Duration::from_secs(120)).await {
        assert_eq!(job["state"], "completed", "{job}");
        let completed = attempts(&job)
            .iter()
            .filter(|(reason, _)| reason == "completed")
            .count();
        assert_eq!(completed, 1, "{job}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_a_remote_attempt_at_once_not_at_the_next_heartbeat() {
    let cluster = Cluster::start(&[]);
    let token = cluster.token("worker");
    // Heartbeats every 20 s: only the pushed cancel can stop the attempt in time.
    let _w = cluster.worker("w", &token, &["--lease-ttl", "60"]);
    let ids = cluster.submit(vec![sleeper("30")]).await;
    cluster.running_on(&ids[0]).await;
    // The worker's cancel stream may open a moment after it said ready.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancelled = Instant::now();
    let r = cluster
        .request(
            reqwest::Method::POST,
            &format!("/v1/jobs/{}/cancel", ids[0]),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let job = cluster
        .wait_ended(&ids, Duration::from_secs(10))
        .await
        .remove(0);
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(attempts(&job)[0].0, "cancelled");
    assert!(
        cancelled.elapsed() < Duration::from_secs(5),
        "the heartbeat would take 20 s; the push took {:?}",
        cancelled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_worker_tokens_lease_and_a_stale_or_forged_token_is_refused() {
    let cluster = Cluster::start(&[]);
    let lease = json!({"worker": "probe", "max": 1, "wait_seconds": 0});
    for role in ["submit", "read"] {
        let token = cluster.token(role);
        let r = cluster
            .http
            .post(format!("{}/v1/leases", cluster.url))
            .bearer_auth(&token)
            .json(&lease)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{role}");
    }
    let worker = cluster.token("worker");
    let ids = cluster
        .submit(vec![json!({"task": "echo", "input": 1})])
        .await;
    let post = |path: &str, body: Value| {
        cluster
            .http
            .post(format!("{}{path}", cluster.url))
            .bearer_auth(&worker)
            .json(&body)
            .send()
    };
    let granted: Value = post(
        "/v1/leases",
        json!({"worker": "probe", "max": 5, "wait_seconds": 5}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let job = &granted["jobs"][0];
    assert_eq!(job["id"], ids[0].as_str(), "{granted}");
    let token = job["lease"]["token"].as_i64().unwrap();
    let forged = token + 1_000;
    let r = post(
        "/v1/leases/heartbeat",
        json!({"worker": "probe", "leases": [{"id": ids[0], "token": forged}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 409);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["leases"][0]["state"], "lost");
    let report = |token: i64| {
        json!({"worker": "probe", "ended": [{"id": ids[0], "token": token, "report": {
            "reason": "completed", "output_base64": "Zm9yZ2Vk", "stderr_base64": "",
            "receipt": {"fuel_consumed": 1, "peak_memory_bytes": 0, "wall_us": 1,
                "instantiate_us": 1, "compile_cache": "memory", "stdout_bytes": 6,
                "stderr_bytes": 0},
            "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z"}}]})
    };
    let r = post("/v1/leases/report", report(forged)).await.unwrap();
    assert_eq!(r.status(), 409);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["results"][0]["status"], "refused");
    assert_eq!(
        cluster.job(&ids[0]).await["state"],
        "running",
        "nothing changed"
    );
    let r = post("/v1/leases/report", report(token)).await.unwrap();
    assert_eq!(r.status(), 200);
    let done = cluster.job(&ids[0]).await;
    assert_eq!(
        (&done["state"], &done["output"]),
        (&json!("completed"), &json!("forged"))
    );
    // The same report again: its lease is gone now.
    let r = post("/v1/leases/report", report(token)).await.unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_hands_back_what_it_could_not_finish_and_exits_0() {
    let cluster = Cluster::start(&[]);
    let token = cluster.token("worker");
    let worker = cluster.worker("w", &token, &["--shutdown-grace", "1"]);
    let ids = cluster.submit(vec![sleeper("0.2"), sleeper("60")]).await;
    for id in &ids {
        cluster.running_on(id).await;
    }
    worker.signal("-TERM");
    let mut worker = worker;
    let status = worker.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let quick = cluster.job(&ids[0]).await;
    assert_eq!(
        quick["state"], "completed",
        "finished within the grace: {quick}"
    );
    let slow = cluster.job(&ids[1]).await;
    assert_eq!(
        (&slow["state"], &slow["attempts"]),
        (&json!("queued"), &json!(0)),
        "handed back, no attempt spent: {slow}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_workers_refuses_one_worker_more_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("remotask.toml");
    std::fs::write(&config, "max_workers = 1\n").unwrap();
    let cluster = Cluster::start(&["--config", config.to_str().unwrap()]);
    let token = cluster.token("worker");
    let _first = cluster.worker("first", &token, &[]);
    // Ready is said before the first lease call arrives: wait until the server knows it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let workers = cluster.get("/v1/workers").await;
        if workers.to_string().contains("\"first\"") {
            break;
        }
        assert!(Instant::now() < deadline, "{workers}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = cluster
        .http
        .post(format!("{}/v1/leases", cluster.url))
        .bearer_auth(&token)
        .json(&json!({"worker": "second", "max": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("at most 1 workers") && message.contains("first"),
        "{message}"
    );
}

/// A server that leases one job whose module digest the bytes it serves do not have, and
/// keeps what the worker reports.
async fn lying_server(reports: tokio::sync::mpsc::UnboundedSender<Value>) -> String {
    use axum::routing::{get, post};
    let claimed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let digest = remotask::domain::ModuleDigest::of(b"the module the job names");
    let job = json!({"id": remotask::domain::JobId::generate().to_string(), "task": "echo",
        "digest": digest.to_hex(), "queue": "default", "input_base64": "", "args": [],
        "env": {}, "limits": {"fuel": 1_000_000, "max_seconds": 5.0,
            "memory_bytes": 16_777_216, "stdout_bytes": 1024, "stderr_bytes": 1024},
        "attempt": 1, "lease": {"token": 7, "expires_at_ms": i64::MAX}});
    let app = axum::Router::new()
        .route(
            "/v1/leases",
            post(move || {
                let first = !claimed.swap(true, std::sync::atomic::Ordering::SeqCst);
                let jobs = if first { vec![job.clone()] } else { vec![] };
                async move {
                    if !first {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    axum::Json(json!({"jobs": jobs, "cursor": null}))
                }
            }),
        )
        .route(
            "/v1/modules/{digest}",
            get(|| async { std::fs::read(guest("echo")).unwrap() }),
        )
        .route(
            "/v1/leases/report",
            post(move |axum::Json(body): axum::Json<Value>| {
                let _ = reports.send(body);
                async { axum::Json(json!({"results": [{"id": "x", "status": "applied"}]})) }
            }),
        )
        .route(
            "/v1/leases/heartbeat",
            post(|| async { axum::Json(json!({"leases": []})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_a_module_whose_bytes_are_not_its_digest() {
    let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let url = lying_server(tx).await;
    let cache = tempfile::tempdir().unwrap();
    let mut child = remotask()
        .args([
            "worker", "--server", &url, "--token", "rt_any", "--name", "w",
        ])
        .arg("--cache-dir")
        .arg(cache.path())
        .env_remove("REMOTASK_TOKEN")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&mut child);
    let _worker = Proc(child);
    let report = tokio::time::timeout(Duration::from_secs(60), reports.recv())
        .await
        .expect("a report in time")
        .unwrap();
    let ended = &report["ended"][0]["report"];
    assert_eq!(ended["reason"], "host_error", "{report}");
    let message = ended["message"].as_str().unwrap();
    assert!(
        message.contains("is not that module") && message.contains("its bytes hash to"),
        "{message}"
    );
    assert_eq!(
        std::fs::read_dir(cache.path().join("modules"))
            .unwrap()
            .count(),
        0,
        "the wrong bytes are not kept"
    );
}
