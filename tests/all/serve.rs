//! `remotask serve` as a real process: crash safety under SIGKILL, and a graceful stop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use remotask::domain::{JobFilter, JobState, Reason, SystemClock};
use serde_json::Value;

use crate::support::{Engine, guest, remotask};

/// Starts `remotask serve` on `data_dir` (HTTP on a free loopback port) and waits until it
/// says it is ready.
fn serve(data_dir: &Path, extra: &[&str]) -> Child {
    serve_http(data_dir, extra).0
}

/// [`serve`], also returning the API's base URL.
pub(crate) fn serve_http(data_dir: &Path, extra: &[&str]) -> (Child, String) {
    let (child, url, _) = serve_at(data_dir, "127.0.0.1:0", extra);
    (child, url)
}

/// [`serve_http`] on `bind`, also returning the lines it wrote on stderr until it was ready.
#[expect(
    clippy::zombie_processes,
    reason = "the child is returned to the caller, which waits on it"
)]
pub(crate) fn serve_at(
    data_dir: &Path,
    bind: &str,
    extra: &[&str],
) -> (Child, String, Vec<String>) {
    let mut child = remotask()
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--bind", bind])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("remotask serve starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut url = None;
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("serve said ready in time");
        if let Some(u) = line.strip_prefix("remotask: listening on ") {
            url = Some(u.to_owned());
        }
        if line == "remotask: ready" {
            return (child, url.expect("serve said where it listens"), lines);
        }
        lines.push(line);
    }
}

async fn jobs_in(service: &remotask::service::Service, state: JobState) -> usize {
    service
        .jobs(&JobFilter {
            states: vec![state],
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_run_finishes_every_accepted_job_exactly_once_after_restart() {
    let data = tempfile::tempdir().unwrap();
    let modules = tempfile::tempdir().unwrap();
    std::fs::copy(guest("hostile"), modules.path().join("hostile.wasm")).unwrap();
    let fast = [
        "--workers",
        "2",
        "--lease-ttl",
        "1",
        "--requeue-delay",
        "0.2",
    ];
    let mut args = fast.to_vec();
    args.extend(["--register-dir", modules.path().to_str().unwrap()]);
    let mut server = serve(data.path(), &args);

    let client = Engine::open(data.path(), Arc::new(SystemClock)).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let mut r = Engine::request("hostile", &["sleep", "0.1"]);
        r.context = Some(format!("job-{i}"));
        ids.push(client.submit(r).await.unwrap().job.id);
    }
    let started = Instant::now();
    while jobs_in(&client, JobState::Completed).await < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server ran no job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let interrupted = jobs_in(&client, JobState::Running).await;
    assert!(
        interrupted >= 1,
        "jobs of 100 ms on 2 threads: some were running at the kill"
    );
    assert!(
        jobs_in(&client, JobState::Completed).await < 30,
        "killed before the end"
    );

    let mut server = serve(data.path(), &fast);
    let started = Instant::now();
    while jobs_in(&client, JobState::Completed).await < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not every job finished after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut lease_lost = 0;
    for id in &ids {
        let job = client.job(*id).await.unwrap();
        assert_eq!(
            (job.state, job.output.as_deref()),
            (JobState::Completed, Some(&b"slept\n"[..]))
        );
        let attempts = client.attempts(*id).await.unwrap();
        let completed = attempts
            .iter()
            .filter(|a| a.reason == Reason::Completed)
            .count();
        assert_eq!(completed, 1, "job {id} completed {completed} times");
        lease_lost += attempts
            .iter()
            .filter(|a| a.reason == Reason::LeaseLost)
            .count();
    }
    assert_eq!(
        lease_lost, interrupted,
        "each job running at the kill was rescued once"
    );

    // SIGTERM: a graceful stop.
    let pid = server.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = server.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_bad_config_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("remotask.toml");
    std::fs::write(&config, "worker_threads = 1025\n").unwrap();
    let out = remotask()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("worker_threads must be between 0") && stderr.contains("got 1025"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autostart_pauses_the_queues_it_does_not_name_and_warns_of_patterns_naming_none() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("remotask.toml");
    std::fs::write(
        &config,
        "autostart = [\"fast*\", \"ghost-?\"]\n\
         [[queues]]\nname = \"fast-lane\"\n\
         [[queues]]\nname = \"slow\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let (child, url, lines) = serve_at(
        data.path(),
        "127.0.0.1:0",
        &["--workers", "0", "--config", &config],
    );
    let _server = Reap(child);
    let warned = lines
        .iter()
        .any(|l| l.contains("autostart pattern matches no queue") && l.contains("ghost-?"));
    assert!(warned, "{lines:#?}");
    let (code, out, err) = cli(&url, data.path(), &["queue", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let queues: serde_json::Value = serde_json::from_str(&out).unwrap();
    let paused = |name: &str| {
        queues
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {queues}"))["paused"]
            .clone()
    };
    assert_eq!(paused("fast-lane"), false);
    assert_eq!(paused("slow"), true);
}

/// Runs the CLI against `url`, with the data dir for the admin token and no user config.
pub(crate) fn cli(url: &str, data_dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = remotask()
        .args(args)
        .arg("--server")
        .arg(url)
        .arg("--data-dir")
        .arg(data_dir)
        .env("XDG_CONFIG_HOME", data_dir)
        .env_remove("REMOTASK_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `remotask token create` with a data directory and no server: the token goes straight into
/// the store, while the server runs, and the server takes it at once.
fn token_in_store(data_dir: &Path, role: &str) -> String {
    let out = remotask()
        .args([
            "token",
            "create",
            "--role",
            role,
            "--name",
            "rescue",
            "--data-dir",
        ])
        .arg(data_dir)
        .env_remove("REMOTASK_SERVER")
        .env_remove("REMOTASK_TOKEN")
        .env("XDG_CONFIG_HOME", data_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("in the store"), "{err}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_token_stays_and_a_new_one_can_be_written_into_the_store() {
    let data = tempfile::tempdir().unwrap();
    let (server, url) = serve_http(data.path(), &["--workers", "0"]);
    let _server = Reap(server);
    remotask::cli::install_default_provider();
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, token: &str| {
        http.request(method, format!("{url}{path}"))
            .bearer_auth(token)
            .send()
    };
    let first = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let first = first.trim();
    let tokens: serde_json::Value = call(reqwest::Method::GET, "/v1/tokens", first)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first_id = tokens[0]["id"].as_str().unwrap().to_owned();
    let refused = call(
        reqwest::Method::DELETE,
        &format!("/v1/tokens/{first_id}"),
        first,
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 409);

    let rescue = token_in_store(data.path(), "admin");
    assert!(rescue.starts_with("rt_"), "{rescue}");
    let listed = call(reqwest::Method::GET, "/v1/tokens", &rescue)
        .await
        .unwrap();
    assert_eq!(
        listed.status(),
        200,
        "the running server takes the new token"
    );
    let tokens: serde_json::Value = listed.json().await.unwrap();
    let rescue_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "rescue")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // With two admin tokens live, the first can go; then the rescue token is the last.
    let revoked = call(
        reqwest::Method::DELETE,
        &format!("/v1/tokens/{first_id}"),
        &rescue,
    )
    .await
    .unwrap();
    assert_eq!(revoked.status(), 204);
    let last = call(
        reqwest::Method::DELETE,
        &format!("/v1/tokens/{rescue_id}"),
        &rescue,
    )
    .await
    .unwrap();
    assert_eq!(last.status(), 409);
    let gone = call(reqwest::Method::GET, "/v1/tokens", first)
        .await
        .unwrap();
    assert_eq!(gone.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_uploads_submits_waits_and_manages_a_real_server() {
    let data = tempfile::tempdir().unwrap();
    let (server, url) = serve_http(data.path(), &["--workers", "2"]);
    let mut server = Reap(server);
    let d = data.path();
    let ok = |(code, out, err): (i32, String, String)| {
        assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
        out
    };
    let wc = guest("word-count");
    let hostile = guest("hostile");
    let out = ok(cli(
        &url,
        d,
        &[
            "task",
            "upload",
            "wc",
            wc.to_str().unwrap(),
            "--max-seconds",
            "5",
        ],
    ));
    assert!(out.starts_with("uploaded wc version "), "{out}");
    ok(cli(
        &url,
        d,
        &[
            "task",
            "upload",
            "hostile",
            hostile.to_str().unwrap(),
            "--retries",
            "0",
        ],
    ));
    let out = ok(cli(&url, d, &["task", "list"]));
    assert!(
        out.starts_with("NAME") && out.contains("\nwc ") && out.contains("\nhostile "),
        "{out}"
    );

    // submit --wait prints the output as the guest wrote it.
    let out = ok(cli(
        &url,
        d,
        &[
            "job",
            "submit",
            "wc",
            "--input",
            r#"{"text": "a b a"}"#,
            "--wait",
        ],
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["words"], 3);
    // A failing job's exit code tells the reason, as `remotask run`'s does.
    let (code, _, err) = cli(
        &url,
        d,
        &[
            "job", "submit", "hostile", "--arg", "exit", "--arg", "4", "--wait",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("failed: guest_error"), "{err}");

    let out = ok(cli(&url, d, &["job", "list", "--json"]));
    let list: Value = serde_json::from_str(&out).unwrap();
    let states: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["completed", "failed"]);
    let failed = list["jobs"][1]["id"].as_str().unwrap().to_owned();
    let out = ok(cli(&url, d, &["job", "logs", &failed]));
    assert!(
        out.starts_with("== attempt 1: guest_error, exit 4 =="),
        "{out}"
    );

    // Held, explained, released.
    let id = ok(cli(
        &url,
        d,
        &[
            "job",
            "submit",
            "wc",
            "--input",
            r#"{"text": "x"}"#,
            "--hold",
        ],
    ));
    let id = id.trim();
    let out = ok(cli(&url, d, &["job", "explain", id]));
    assert!(out.contains("held"), "{out}");
    let out = ok(cli(&url, d, &["job", "release", id]));
    assert!(out.starts_with(id), "{out}");
    let out = ok(cli(&url, d, &["job", "get", id]));
    assert!(out.contains(&format!("id        {id}")), "{out}");

    // A delayed job shows as delayed until its time.
    let later = ok(cli(
        &url,
        d,
        &[
            "job",
            "submit",
            "wc",
            "--input",
            r#"{"text": "x"}"#,
            "--delay",
            "3600",
        ],
    ));
    let out = ok(cli(&url, d, &["job", "get", later.trim()]));
    assert!(out.contains("state     delayed"), "{out}");
    ok(cli(&url, d, &["job", "cancel", later.trim()]));

    // Versions, defaults, module bytes.
    let list: Value =
        serde_json::from_str(&ok(cli(&url, d, &["task", "show", "wc", "--json"]))).unwrap();
    let digest = list["digest"].as_str().unwrap().to_owned();
    let out = ok(cli(&url, d, &["task", "show", "wc", "--version", &digest]));
    assert!(
        out.contains("(current)") && out.contains("\"_start\""),
        "{out}"
    );
    let out = ok(cli(
        &url,
        d,
        &[
            "task",
            "defaults",
            "wc",
            "--queue",
            "text",
            "--env",
            "MODE=fast",
        ],
    ));
    assert!(
        out.contains("\"queue\":\"text\"") && out.contains("\"MODE\":\"fast\""),
        "{out}"
    );
    let copy = d.join("copy.wasm");
    ok(cli(
        &url,
        d,
        &[
            "task",
            "module",
            &digest,
            "--output",
            copy.to_str().unwrap(),
        ],
    ));
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&wc).unwrap());

    // Watch a job's transitions while a batch runs it.
    let batch = d.join("batch.jsonl");
    std::fs::write(&batch, "{\"task\": \"wc\", \"input\": {\"text\": \"a\"}, \"hold\": true}\n{\"task\": \"wc\", \"input\": {\"text\": \"b\"}}\n").unwrap();
    let ids = ok(cli(&url, d, &["job", "batch", batch.to_str().unwrap()]));
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 2);
    let mut watch = remotask()
        .args([
            "job",
            "watch",
            "--job",
            ids[0],
            "--server",
            &url,
            "--data-dir",
        ])
        .arg(d)
        .env("XDG_CONFIG_HOME", d)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The stream is open once a request through it would be answered; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    ok(cli(&url, d, &["job", "release", ids[0]]));
    let mut states = Vec::new();
    while states.len() < 3 {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("watch prints events");
        assert!(
            line.contains(ids[0]) && line.contains("  wc  text  "),
            "{line}"
        );
        states.push(line.rsplit("  ").next().unwrap().to_owned());
    }
    assert_eq!(states, ["queued", "running", "completed"]);
    drop(watch);

    // Queues.
    ok(cli(&url, d, &["queue", "pause", "default"]));
    let out = ok(cli(&url, d, &["queue", "list"]));
    assert!(out.contains("default") && out.contains("paused"), "{out}");
    ok(cli(&url, d, &["queue", "resume", "default"]));

    // Tokens: a read token reads but cannot upload; the error says why; exit code 2.
    let secret = ok(cli(
        &url,
        d,
        &["token", "create", "--role", "read", "--name", "dash"],
    ));
    let secret = secret.trim();
    assert!(secret.starts_with("rt_") && secret.len() == 67, "{secret}");
    let (code, out, _) = cli(&url, d, &["job", "list", "--token", secret]);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = cli(
        &url,
        d,
        &[
            "task",
            "upload",
            "x",
            wc.to_str().unwrap(),
            "--token",
            secret,
        ],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("needs the admin role") && err.contains("HTTP 403"),
        "{err}"
    );
    let out = ok(cli(&url, d, &["token", "list"]));
    assert!(out.contains("dash") && out.contains("first admin"), "{out}");
    let out = ok(cli(&url, d, &["job", "clean", "--older-than", "0"]));
    assert!(out.starts_with("removed "), "{out}");
    assert_eq!(ok(cli(&url, d, &["server", "health"])), "ok\n");
    let out = ok(cli(&url, d, &["server", "metrics"]));
    assert!(
        out.contains("remotask_attempts_total{reason=\"completed\"}"),
        "{out}"
    );
    let doc: Value = serde_json::from_str(&ok(cli(&url, d, &["server", "openapi"]))).unwrap();
    assert!(doc["paths"]["/v1/jobs"].is_object());
    let (code, _, err) = cli(&url, d, &["job", "get", "01M88Q29NG2JQ4V0G000000000"]);
    assert_eq!(code, 2);
    assert!(err.contains("not found (not_found, HTTP 404)"), "{err}");

    std::process::Command::new("kill")
        .arg(server.0.id().to_string())
        .status()
        .unwrap();
    assert!(server.0.wait().unwrap().success());
}

/// A child process killed when the test ends, also when it fails: a child left running would
/// hold the test's output pipes open.
pub(crate) struct Reap(pub(crate) Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_every_second_schedule_fires_on_time_across_a_restart_with_catch_up_one() {
    let data = tempfile::tempdir().unwrap();
    let modules = tempfile::tempdir().unwrap();
    std::fs::copy(guest("echo"), modules.path().join("echo.wasm")).unwrap();
    let d = data.path();
    let args = [
        "--workers",
        "2",
        "--register-dir",
        modules.path().to_str().unwrap(),
    ];
    let ok = |(code, out, err): (i32, String, String)| {
        assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
        out
    };
    let stop = |mut server: Reap| {
        std::process::Command::new("kill")
            .arg(server.0.id().to_string())
            .status()
            .unwrap();
        assert!(server.0.wait().unwrap().success());
    };
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };

    let (server, url) = serve_http(d, &args);
    let server = Reap(server);
    let out = ok(cli(
        &url,
        d,
        &[
            "schedule",
            "add",
            "tick",
            "echo",
            "--cron",
            "* * * * * *",
            "--catch-up",
            "one",
            "--overlap",
            "allow",
            "--input",
            r#"{"tick": true}"#,
        ],
    ));
    assert!(out.contains("schedule  tick"), "{out}");
    let out = ok(cli(&url, d, &["schedule", "next", "tick", "-n", "3"]));
    assert_eq!(out.lines().count(), 3, "{out}");
    std::thread::sleep(Duration::from_millis(3_200));
    stop(server);
    let stopped = now_ms();
    std::thread::sleep(Duration::from_millis(3_500));
    let (server, url) = serve_http(d, &args);
    let server = Reap(server);
    let restarted = now_ms();
    std::thread::sleep(Duration::from_millis(3_200));
    // Pause the schedule and let the jobs it fired end before reading it and stopping: a fire
    // in the moment before the stop would leave a job that is run only after the next start.
    ok(cli(&url, d, &["schedule", "pause", "tick"]));
    let settled = (0..100).any(|_| {
        let list: Value =
            serde_json::from_str(&ok(cli(&url, d, &["job", "list", "--json"]))).unwrap();
        let live = list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["state"] != "completed");
        if live {
            std::thread::sleep(Duration::from_millis(100));
        }
        !live
    });
    assert!(settled, "the fired jobs did not end");
    let shown: Value =
        serde_json::from_str(&ok(cli(&url, d, &["schedule", "show", "tick", "--json"]))).unwrap();
    stop(server);

    let service = Engine::open(d, Arc::new(SystemClock)).await;
    let jobs = service
        .jobs(&JobFilter {
            limit: 1_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut fired: Vec<(i64, i64)> = jobs
        .iter()
        .map(|j| {
            assert_eq!(j.state, JobState::Completed, "{j:?}");
            let key = j.unique_key.as_deref().unwrap();
            let time = key.strip_prefix("schedule:tick:").unwrap();
            let t = humantime::parse_rfc3339(time).unwrap();
            let ms = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
            (ms, j.created_at.0)
        })
        .collect();
    fired.sort();
    let times: Vec<i64> = fired.iter().map(|(t, _)| *t).collect();
    let mut distinct = times.clone();
    distinct.dedup();
    assert_eq!(distinct, times, "a fire time ran twice");
    // On time: every job was submitted within a second and a half of its fire time.
    for (t, created) in &fired {
        assert!(
            (0..1_500).contains(&(created - t)),
            "fired at {t}, submitted at {created}"
        );
    }
    // Every second while up; one gap for the downtime, closed by exactly one catch-up fire.
    let gaps: Vec<(i64, i64)> = times
        .windows(2)
        .filter(|w| w[1] - w[0] != 1_000)
        .map(|w| (w[0], w[1]))
        .collect();
    assert_eq!(gaps.len(), 1, "{times:?}");
    let (before, catch_up) = gaps[0];
    assert!(
        before <= stopped && catch_up > stopped,
        "{times:?} stopped {stopped}"
    );
    assert!(
        catch_up - before >= 3_000,
        "the downtime shows as a gap: {times:?}"
    );
    assert!(
        (restarted - 1_500..=restarted + 1_500).contains(&catch_up),
        "{catch_up} vs {restarted}"
    );
    assert!(
        times.iter().filter(|t| **t > catch_up).count() >= 2,
        "{times:?}"
    );
    assert!(shown["skipped"].as_u64().unwrap() >= 2, "{shown}");
    assert_eq!(shown["fires"].as_u64().unwrap(), times.len() as u64);
    assert_eq!(
        shown["last_job"]["output"],
        serde_json::json!({"tick": true})
    );
}
