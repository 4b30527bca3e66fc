//! `remotask serve` as a real process: crash safety under SIGKILL, and a graceful stop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use remotask::domain::{JobState, Reason, SystemClock};
use remotask::store::JobFilter;

use crate::support::{Engine, guest, remotask};

/// Starts `remotask serve` on `data_dir` and waits until it says it is ready.
#[expect(
    clippy::zombie_processes,
    reason = "the child is returned to the caller, which waits on it"
)]
fn serve(data_dir: &Path, extra: &[&str]) -> Child {
    let mut child = remotask()
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
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
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("serve said ready in time");
        if line == "remotask: ready" {
            return child;
        }
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
    std::fs::write(&config, "worker_threads = 0\n").unwrap();
    let out = remotask()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("worker_threads must be between 1 and 1024, got 0"),
        "{stderr}"
    );
}
