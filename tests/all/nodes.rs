//! Several `remotask serve` nodes on one PostgreSQL database, as real processes on 127.0.0.1.
//! Jobs submitted to either node run exactly once; a killed node's attempts are rescued by
//! another; cancels, job events and waits cross nodes; maintenance runs on one leader and
//! another takes over when it dies; a schedule fires once per fire time; a console session
//! made on one node holds on the other.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::console::{csrf_of, no_redirects, post_form, sign_in_over_http, signed_in_page};
use crate::http::read_events;
use crate::postgres::postgres;
use crate::remote::{Api, Proc, attempts, guest_dir, shared_cache, sleeper};
use crate::serve::{cli, serve_http};
use crate::support::remotask;

/// One `remotask serve` process with a data directory of its own.
struct Node {
    data: tempfile::TempDir,
    process: Proc,
    api: Api,
}

impl Node {
    /// The name its guest threads go by in leases and attempts (`local-<host>-<pid>`).
    fn worker_suffix(&self) -> String {
        format!("-{}", self.process.0.id())
    }

    /// Kills the process with SIGKILL: no graceful stop, its leases are left to expire.
    fn kill(self) {
        self.process.signal("-KILL");
    }

    /// Whether `/metrics` says this node leads maintenance.
    async fn leads(&self) -> bool {
        let text = self.api.metrics().await;
        text.lines().any(|l| l == "remotask_leader 1")
    }
}

/// Nodes on one fresh database; the first registers the echo and hostile guests and writes
/// the admin token, which the others share.
struct Nodes {
    store: String,
    modules: tempfile::TempDir,
    admin: String,
}

impl Nodes {
    fn new() -> Self {
        Self {
            store: postgres().database(),
            modules: guest_dir(),
            admin: String::new(),
        }
    }

    /// Starts a node with `--workers <threads>` and `extra` arguments; waits until ready.
    fn start(&mut self, threads: &str, extra: &[&str]) -> Node {
        let data = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(shared_cache().join("compiled"), data.path().join("cache"))
            .unwrap();
        let mut args = vec![
            "--store",
            &self.store,
            "--workers",
            threads,
            "--requeue-delay",
            "0.2",
        ];
        let first = self.admin.is_empty();
        if first {
            args.extend(["--register-dir", self.modules.path().to_str().unwrap()]);
        } else {
            // The CLI finds the admin token in the data directory it is given.
            std::fs::write(data.path().join("admin.token"), &self.admin).unwrap();
        }
        args.extend(extra);
        let (child, url) = serve_http(data.path(), &args);
        let process = Proc(child);
        if first {
            let token = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
            self.admin = token.trim().to_owned();
        }
        Node {
            api: Api::new(url, self.admin.clone()),
            data,
            process,
        }
    }
}

/// Cancels running job `id` through `api` and waits until it ended; the job. It must end
/// `cancelled`, well before a heartbeat (20 s apart in these tests) could have told its worker.
async fn cancel_running(api: &Api, id: &str) -> Value {
    let sent = Instant::now();
    let r = api
        .request(reqwest::Method::POST, &format!("/v1/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let job = api
        .wait_ended(&[id.to_owned()], Duration::from_secs(10))
        .await
        .remove(0);
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "a heartbeat would take 20 s; the cancel took {:?}",
        sent.elapsed()
    );
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_take_jobs_submitted_to_either_and_each_runs_once() {
    let mut nodes = Nodes::new();
    let a = nodes.start("2", &[]);
    let b = nodes.start("2", &[]);
    let mut ids = Vec::new();
    for chunk in 0..4 {
        let jobs = (0..250)
            .map(|i| json!({"task": "echo", "input": {"i": chunk * 250 + i}}))
            .collect();
        let to = if chunk % 2 == 0 { &a.api } else { &b.api };
        ids.extend(to.submit(jobs).await);
    }
    let jobs = b.api.wait_ended(&ids, Duration::from_secs(120)).await;
    let (mut on_a, mut on_b) = (0, 0);
    for (i, job) in jobs.iter().enumerate() {
        assert_eq!(job["state"], "completed", "{job}");
        assert_eq!(job["output"], json!({"i": i}), "each job its own output");
        let attempts = attempts(job);
        assert_eq!(attempts.len(), 1, "{job}");
        let worker = &attempts[0].1;
        assert!(worker.starts_with("local-"), "{worker}");
        on_a += usize::from(worker.ends_with(&a.worker_suffix()));
        on_b += usize::from(worker.ends_with(&b.worker_suffix()));
    }
    assert_eq!(on_a + on_b, ids.len(), "every job ran on one of the nodes");
    assert!(
        on_a > 0 && on_b > 0,
        "both nodes ran jobs: {on_a} and {on_b}"
    );
    // Either node answers for any job, from the one database.
    let last = ids.last().unwrap();
    assert_eq!(a.api.job(last).await, b.api.job(last).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_attempts_end_lease_lost_once_and_complete_on_the_other() {
    let mut nodes = Nodes::new();
    let doomed = nodes.start("2", &["--lease-ttl", "1"]);
    let ids = doomed.api.submit(vec![sleeper("1"), sleeper("1")]).await;
    let mut doomed_worker = String::new();
    for id in &ids {
        doomed_worker = doomed.api.running_on(id).await;
        assert!(doomed_worker.ends_with(&doomed.worker_suffix()));
    }
    let survivor = nodes.start("2", &[]);
    doomed.kill();
    for job in survivor.api.wait_ended(&ids, Duration::from_secs(60)).await {
        assert_eq!(job["state"], "completed", "{job}");
        let attempts = attempts(&job);
        assert_eq!(attempts.len(), 2, "{job}");
        assert_eq!(
            attempts[0],
            ("lease_lost".to_owned(), doomed_worker.clone())
        );
        assert_eq!(attempts[1].0, "completed");
        assert!(attempts[1].1.ends_with(&survivor.worker_suffix()), "{job}");
    }
    assert!(survivor.leads().await, "the survivor took over maintenance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_one_node_stops_an_attempt_running_on_another_at_once() {
    let mut nodes = Nodes::new();
    let a = nodes.start("0", &[]);
    // Heartbeats every 20 s: only the cancel carried between the nodes can stop it in time.
    let b = nodes.start("1", &["--lease-ttl", "60"]);
    let ids = a.api.submit(vec![sleeper("30")]).await;
    assert!(
        a.api
            .running_on(&ids[0])
            .await
            .ends_with(&b.worker_suffix())
    );
    let job = cancel_running(&a.api, &ids[0]).await;
    assert_eq!(attempts(&job)[0].0, "cancelled", "{job}");
    // B's thread is free again: the next job runs there.
    let next = a.api.submit(vec![json!({"task": "echo"})]).await;
    let job = a
        .api
        .wait_ended(&next, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(job["state"], "completed", "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_one_node_reaches_a_remote_worker_attached_to_another() {
    let mut nodes = Nodes::new();
    let a = nodes.start("0", &[]);
    let b = nodes.start("0", &[]);
    let (code, token, err) = cli(
        &b.api.url,
        a.data.path(),
        &["token", "create", "--role", "worker", "--name", "w"],
    );
    assert_eq!(code, 0, "{err}");
    let mut child = remotask()
        .args(["worker", "--server", &b.api.url, "--token", token.trim()])
        .args(["--name", "w-b", "--lease-ttl", "60", "--cache-dir"])
        .arg(shared_cache())
        .env_remove("REMOTASK_TOKEN")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::remote::wait_ready(&mut child);
    let _worker = Proc(child);
    let ids = a.api.submit(vec![sleeper("30")]).await;
    assert_eq!(a.api.running_on(&ids[0]).await, "w-b");
    // The worker's cancel stream may open a moment after it said ready.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = cancel_running(&a.api, &ids[0]).await;
    assert_eq!(
        attempts(&job)[0],
        ("cancelled".to_owned(), "w-b".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_waits_on_one_node_see_a_job_run_on_another() {
    let mut nodes = Nodes::new();
    let a = nodes.start("0", &[]);
    let b = nodes.start("1", &[]);
    let held = a
        .api
        .submit(vec![json!({"task": "echo", "input": 7, "hold": true})])
        .await
        .remove(0);
    let mut events = a
        .api
        .request(reqwest::Method::GET, &format!("/v1/events?job={held}"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let waited = {
        let api = Api::new(a.api.url.clone(), a.api.admin.clone());
        let id = held.clone();
        tokio::spawn(async move {
            api.request(reqwest::Method::GET, &format!("/v1/jobs/{id}?wait=20"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    let r = b
        .api
        .request(reqwest::Method::POST, &format!("/v1/jobs/{held}/release"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let states = read_events(&mut events, 3).await;
    assert_eq!(states, ["queued", "running", "completed"]);
    let job = waited.await.unwrap();
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["output"], 7);
    assert!(attempts(&job)[0].1.ends_with(&b.worker_suffix()), "{job}");
}

/// The fire times (ms since the epoch) of the jobs schedule `name` fired, sorted.
async fn fire_times(api: &Api, name: &str) -> Vec<i64> {
    let list = api.get("/v1/jobs?limit=1000").await;
    let prefix = format!("schedule:{name}:");
    let mut times: Vec<i64> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| {
            j["unique_key"]
                .as_str()?
                .strip_prefix(&prefix)
                .map(str::to_owned)
        })
        .map(|t| {
            let t = humantime::parse_rfc3339(&t).unwrap();
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
        })
        .collect();
    times.sort_unstable();
    times
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_fire_time_with_two_nodes_and_after_its_leader_dies() {
    let mut nodes = Nodes::new();
    let first = nodes.start("1", &[]);
    let second = nodes.start("1", &[]);
    let (code, out, err) = cli(
        &second.api.url,
        first.data.path(),
        &[
            "schedule",
            "add",
            "tick",
            "echo",
            "--cron",
            "* * * * * *",
            "--catch-up",
            "all",
            "--overlap",
            "allow",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let (leader, survivor) = if first.leads().await {
        (first, second)
    } else {
        assert!(second.leads().await, "one of the nodes leads");
        (second, first)
    };
    assert!(!survivor.leads().await, "only one node leads");
    leader.kill();
    let killed = now_ms();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !survivor.leads().await {
        assert!(Instant::now() < deadline, "no node took over maintenance");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let (code, _, err) = cli(
        &survivor.api.url,
        survivor.data.path(),
        &["schedule", "pause", "tick"],
    );
    assert_eq!(code, 0, "{err}");
    let times = fire_times(&survivor.api, "tick").await;
    let mut distinct = times.clone();
    distinct.dedup();
    assert_eq!(distinct, times, "a fire time fired twice");
    assert!(
        times.iter().filter(|t| **t < killed).count() >= 2,
        "fires with both nodes up: {times:?}"
    );
    assert!(
        times.iter().filter(|t| **t > killed + 1_000).count() >= 2,
        "fires after the leader died: {times:?}"
    );
    // Catch-up `all`: the fire times the takeover missed fired late, none was lost.
    assert!(
        times.windows(2).all(|w| w[1] - w[0] == 1_000),
        "every second from the first fire to the last: {times:?}"
    );
}

/// Context guards hold across nodes: jobs with one concurrency key never run two at a time,
/// though both nodes have free guest threads, and a job with another key runs beside them.
/// Meanwhile explain says why a job waits, and the contexts of live jobs are listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_with_one_concurrency_key_run_one_at_a_time_across_nodes() {
    let mut nodes = Nodes::new();
    let a = nodes.start("2", &[]);
    let b = nodes.start("2", &[]);
    let job = |key: &str, seconds: &str| {
        let mut j = sleeper(seconds);
        j["concurrency_key"] = key.into();
        j["context"] = format!("doc-{key}").into();
        j
    };
    let mut ids = a
        .api
        .submit((0..3).map(|_| job("x", "0.5")).collect())
        .await;
    ids.extend(
        b.api
            .submit((0..3).map(|_| job("x", "0.5")).collect())
            .await,
    );
    let contexts = a.api.get("/v1/contexts").await;
    assert_eq!(
        contexts["contexts"],
        json!([{"context": "doc-x", "live": 6}]),
        "{contexts}"
    );
    let other = b.api.submit(vec![job("y", "0.1")]).await.remove(0);

    // While one x job runs, every other waits behind its key.
    let deadline = Instant::now() + Duration::from_secs(30);
    let waiting = loop {
        let mut running = 0;
        let mut queued = None;
        for id in &ids {
            match a.api.job(id).await["state"].as_str().unwrap() {
                "running" => running += 1,
                "queued" => queued = Some(id.clone()),
                _ => {}
            }
        }
        assert!(running <= 1, "{running} jobs with key x run at once");
        if let (1, Some(id)) = (running, queued) {
            break id;
        }
        assert!(Instant::now() < deadline, "no x job ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let why = b.api.get(&format!("/v1/jobs/{waiting}/explain")).await;
    let causes = why["causes"].as_array().unwrap();
    assert!(causes.contains(&json!("key_busy")), "{why}");
    assert!(why["message"].as_str().unwrap().contains("\"x\""), "{why}");

    let ended = a.api.wait_ended(&ids, Duration::from_secs(60)).await;
    let mut spans: Vec<(String, String)> = ended
        .iter()
        .map(|j| {
            assert_eq!(j["state"], "completed", "{j}");
            let at = |f: &str| j[f].as_str().unwrap().to_owned();
            (at("started_at"), at("finished_at"))
        })
        .collect();
    // RFC 3339 times with milliseconds, all UTC: they sort as text.
    spans.sort();
    assert!(
        spans.windows(2).all(|w| w[0].1 <= w[1].0),
        "x jobs overlapped: {spans:#?}"
    );
    let y = a.api.job(&other).await;
    assert_eq!(y["state"], "completed", "{y}");
    assert!(
        y["finished_at"].as_str().unwrap() < spans.last().unwrap().0.as_str(),
        "the y job waited for the x jobs: {y}, {spans:#?}"
    );
    let left = b.api.get("/v1/contexts").await;
    assert_eq!(left["contexts"], json!([]), "{left}");
}

/// A console session is the store's: made on one node, it works on the other, and signing out
/// on that one ends it on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_made_on_one_node_works_on_the_other_until_signed_out() {
    let mut nodes = Nodes::new();
    let a = nodes.start("0", &[]);
    let b = nodes.start("0", &[]);
    let cookie = sign_in_over_http(&a.api.url, nodes.admin.clone()).await;
    let page = signed_in_page(&b.api.url, &cookie)
        .await
        .expect("node B knows node A's session");
    let r = post_form(
        &no_redirects(),
        &b.api.url,
        &cookie,
        "/ui/logout",
        &csrf_of(&page),
    )
    .await;
    assert_eq!(r.status(), 303);
    assert!(signed_in_page(&a.api.url, &cookie).await.is_none());
    assert!(signed_in_page(&b.api.url, &cookie).await.is_none());
}
