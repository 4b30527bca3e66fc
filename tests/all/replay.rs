//! Replays: an attempt run on a server (or a remote worker) and replayed from its bundle with
//! `remotask replay`, elsewhere and after a server restart, gives the same reason, exit code,
//! output bytes and fuel; an attempt past the recording limit says it is not replayable; a
//! bundle with a changed module or from a newer format is refused; other limits report the
//! differences without failing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use remotask::domain::{
    Bundle, BundleHeader, BundleResult, JobId, Limits, ModuleDigest, ModuleSection, Timestamp,
    output_digest,
};
use remotask::sandbox::AttemptReport;
use serde_json::{Value, json};

use crate::remote::{Api, Proc, wait_ready};
use crate::serve::{cli, serve_http};
use crate::support::{guest, guest_bytes, hostile, remotask};

/// A directory holding every example guest and the hostile one, for `--register-dir`.
fn every_guest() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for g in ["echo", "fib", "word-count", "flaky", "progress", "hostile"] {
        std::fs::copy(guest(g), dir.path().join(format!("{g}.wasm"))).unwrap();
    }
    dir
}

/// A server on `data` with every guest registered, and its admin's API.
fn start(data: &Path, modules: &Path, extra: &[&str]) -> (Proc, Api) {
    let mut args = vec!["--register-dir", modules.to_str().unwrap()];
    args.extend(extra);
    let (child, url) = serve_http(data, &args);
    let admin = std::fs::read_to_string(data.join("admin.token")).unwrap();
    (Proc(child), Api::new(url, admin.trim().to_owned()))
}

/// Stops a server gracefully (SIGTERM) and waits for it to exit.
fn stop(mut server: Proc) {
    server.signal("-TERM");
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// `remotask replay ARGS --json` run in `dir` with no server, data directory or config:
/// its exit code, its JSON answer (`Null` if none) and its stderr.
fn replay(dir: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = remotask()
        .arg("replay")
        .args(args)
        .arg("--json")
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", dir)
        .env_remove("REMOTASK_SERVER")
        .env_remove("REMOTASK_TOKEN")
        .output()
        .unwrap();
    let answer = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        answer,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Downloads attempt 1 of `id` with `remotask job bundle` into `dir`; the bundle's path.
fn download(url: &str, data: &Path, id: &str, dir: &Path) -> PathBuf {
    let file = dir.join(format!("{id}.bundle"));
    let (code, _, err) = cli(
        url,
        data,
        &[
            "job",
            "bundle",
            id,
            "--attempt",
            "1",
            "-o",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    file
}

fn bundle_of(file: &Path) -> Bundle {
    Bundle::decode(&std::fs::read(file).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_and_hostile_attempt_replays_identically_after_a_restart_elsewhere() {
    let (data, modules, elsewhere) = (
        tempfile::tempdir().unwrap(),
        every_guest(),
        tempfile::tempdir().unwrap(),
    );
    let (server, api) = start(data.path(), modules.path(), &[]);
    let once = json!({"retries": 0});
    let jobs = vec![
        json!({"task": "echo", "input": {"x": 1}}),
        json!({"task": "fib", "input": {"n": 20}}),
        json!({"task": "word-count", "input": {"text": "the fox and the dog and the end"}}),
        json!({"task": "flaky", "input": {"fail": true, "message": "busy"}, "retry": once}),
        json!({"task": "progress", "input": {"steps": 3}}),
        json!({"task": "hostile", "args": ["clocks", "300"]}),
        json!({"task": "hostile", "args": ["random", "40"], "retry": once}),
        json!({"task": "hostile", "args": ["random", "40"], "retry": once}),
        json!({"task": "hostile", "args": ["clock-sleep", "3", "5"]}),
        json!({"task": "hostile", "args": ["panic", "boom"], "retry": once}),
    ];
    let ids = api.submit(jobs).await;
    let ended = api.wait_ended(&ids, Duration::from_secs(120)).await;
    for job in &ended {
        let attempt = &job["attempt_history"][0];
        assert_eq!(attempt["replayable"], true, "{job}");
    }
    // The panic's attempt failed: `job get` offers its bundle.
    let (code, shown, err) = cli(&api.url, data.path(), &["job", "get", &ids[9]]);
    assert_eq!(code, 0, "{err}");
    let offer = format!("remotask job bundle {} --attempt 1", ids[9]);
    assert!(shown.contains(&offer), "{shown}");

    stop(server);
    let (_server, api) = start(data.path(), modules.path(), &[]);
    let mut seeds = Vec::new();
    for (id, job) in ids.iter().zip(&ended) {
        let file = download(&api.url, data.path(), id, elsewhere.path());
        let bundle = bundle_of(&file);
        let result = &bundle.header.result;
        assert_eq!(
            result.reason.to_string(),
            job["attempt_history"][0]["reason"]
        );
        seeds.push(bundle.header.recording.seed);
        let (code, answer, err) = replay(elsewhere.path(), &[file.to_str().unwrap()]);
        assert_eq!(answer["identical"], true, "{id} {job}: {answer} {err}");
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            answer["replay"]["reason"],
            job["attempt_history"][0]["reason"]
        );
        assert_eq!(answer["replay"]["exit_code"], json!(result.exit_code));
        assert_eq!(
            answer["replay"]["receipt"]["fuel_consumed"],
            json!(result.fuel_consumed)
        );
        assert!(result.fuel_consumed.is_some_and(|f| f > 0));
    }
    // The clock readers read the clocks, and each attempt had its own seed: the two runs of
    // `random` exited as their seeds said, not alike.
    let clocks = bundle_of(&elsewhere.path().join(format!("{}.bundle", ids[5])));
    assert_eq!(clocks.header.recording.clock_reads(), 601);
    let sleeps = bundle_of(&elsewhere.path().join(format!("{}.bundle", ids[8])));
    let monotonic = &sleeps.header.recording.monotonic;
    assert!(monotonic.len() >= 3 && monotonic[monotonic.len() - 1] >= 15_000_000);
    assert_ne!(seeds[6], seeds[7]);
    let random: Vec<_> = [6, 7]
        .iter()
        .map(|i| bundle_of(&elsewhere.path().join(format!("{}.bundle", ids[*i]))))
        .collect();
    assert_ne!(
        random[0].header.result.output_digest,
        random[1].header.result.output_digest
    );
    for r in &random {
        let result = &r.header.result;
        assert_eq!(result.reason.to_string(), "guest_error", "{result:?}");
        assert!((1..=100).contains(&r.header.result.exit_code.unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_on_a_remote_worker_replays_identically() {
    let (data, modules, elsewhere) = (
        tempfile::tempdir().unwrap(),
        every_guest(),
        tempfile::tempdir().unwrap(),
    );
    let (_server, api) = start(data.path(), modules.path(), &["--workers", "0"]);
    let (code, token, err) = cli(
        &api.url,
        data.path(),
        &["token", "create", "--role", "worker", "--name", "w"],
    );
    assert_eq!(code, 0, "{err}");
    std::fs::create_dir(elsewhere.path().join("cache")).unwrap();
    let mut child = remotask()
        .args(["worker", "--server", &api.url, "--token", token.trim()])
        .args(["--name", "far", "--cache-dir"])
        .arg(elsewhere.path().join("cache"))
        .env_remove("REMOTASK_TOKEN")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&mut child);
    let _worker = Proc(child);
    let job = api
        .run_one(json!({"task": "hostile", "args": ["clock-sleep", "2", "5"]}))
        .await;
    assert_eq!(job["attempt_history"][0]["worker"], "far", "{job}");
    let id = job["id"].as_str().unwrap();
    let file = download(&api.url, data.path(), id, elsewhere.path());
    assert_eq!(bundle_of(&file).header.recording.clock_reads(), 5);
    let (code, answer, err) = replay(elsewhere.path(), &[file.to_str().unwrap()]);
    assert_eq!(
        (code, &answer["identical"]),
        (0, &json!(true)),
        "{answer} {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_read_the_clocks_past_the_limit_says_it_is_not_replayable() {
    let (data, modules, elsewhere) = (
        tempfile::tempdir().unwrap(),
        every_guest(),
        tempfile::tempdir().unwrap(),
    );
    let (_server, api) = start(data.path(), modules.path(), &[]);
    // 2,100 rounds of two reads: past the 4,096 a recording keeps.
    let job = api
        .run_one(json!({"task": "hostile", "args": ["clocks", "2100"]}))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    let attempt = &job["attempt_history"][0];
    assert_eq!(attempt["replayable"], false);
    let why = attempt["not_replayable"].as_str().unwrap();
    assert!(why.contains("more than 4096 times"), "{why}");
    let id = job["id"].as_str().unwrap();
    let (_, shown, _) = cli(&api.url, data.path(), &["job", "get", id]);
    assert!(
        shown.contains("not replayable: the guest read the clocks"),
        "{shown}"
    );

    let file = download(&api.url, data.path(), id, elsewhere.path());
    let (code, answer, err) = replay(elsewhere.path(), &[file.to_str().unwrap()]);
    assert_eq!((code, answer), (2, Value::Null));
    assert!(
        err.contains("is not replayable: the guest read the clocks"),
        "{err}"
    );
}

/// A bundle of a local attempt of the hostile guest with `args`, written in `dir`; the
/// attempt's report and the bundle's path.
fn local_bundle(dir: &Path, args: &[&str]) -> (AttemptReport, PathBuf) {
    let limits = Limits::default();
    let report = hostile(args, b"", limits);
    let module = guest_bytes("hostile");
    let bundle = Bundle {
        header: BundleHeader {
            remotask_version: env!("CARGO_PKG_VERSION").into(),
            job: JobId::generate(),
            attempt: 1,
            task: "test".into(),
            module: ModuleSection {
                digest: ModuleDigest::of(&module),
                bytes: 0,
            },
            input_bytes: 0,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            limits,
            recording: report.recording.clone().expect("the guest ran"),
            result: BundleResult {
                reason: report.reason,
                trap_kind: report.trap_kind,
                exit_code: report.exit_code,
                message: report.message.clone(),
                output_digest: output_digest(&report.output),
                output_bytes: report.output.len() as u64,
                fuel_consumed: report.receipt.fuel_consumed,
                log_bytes: 0,
                log_truncated: report.stderr_truncated,
                worker: "local".into(),
                started_at: Timestamp(0),
                finished_at: Timestamp(0),
            },
        },
        module,
        input: Vec::new(),
        log: report.stderr.clone(),
    };
    let file = dir.join("attempt.bundle");
    std::fs::write(&file, bundle.encode()).unwrap();
    (report, file)
}

#[test]
fn a_bundle_whose_module_does_not_match_its_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, file) = local_bundle(dir.path(), &["random", "5"]);
    let (code, answer, _) = replay(dir.path(), &[file.to_str().unwrap()]);
    assert_eq!((code, &answer["identical"]), (0, &json!(true)), "{answer}");
    let mut bytes = std::fs::read(&file).unwrap();
    let log = bundle_of(&file).log.len();
    let at = bytes.len() - log - 100; // inside the module, the last section but the log
    bytes[at] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let (code, _, err) = replay(dir.path(), &[file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the bundle's module hashes to"), "{err}");
    assert!(err.contains("not to the digest"), "{err}");
}

#[test]
fn a_bundle_from_a_newer_format_version_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (_, file) = local_bundle(dir.path(), &["clocks", "3"]);
    let bytes = std::fs::read(&file).unwrap();
    let first = b"remotask-bundle 1\n";
    assert!(bytes.starts_with(first));
    let newer = [b"remotask-bundle 2\n".as_slice(), &bytes[first.len()..]].concat();
    std::fs::write(&file, newer).unwrap();
    let (code, _, err) = replay(dir.path(), &[file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("format version 2, newer than this remotask reads (up to version 1)"),
        "{err}"
    );
}

#[test]
fn a_replay_with_other_limits_reports_the_differences_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let (report, file) = local_bundle(dir.path(), &["clocks", "50"]);
    let out = dir.path().join("out");
    let path = file.to_str().unwrap();
    let (code, answer, err) = replay(dir.path(), &[path, "--output", out.to_str().unwrap()]);
    assert_eq!((code, &answer["identical"]), (0, &json!(true)), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), report.output);

    let (code, answer, err) = replay(dir.path(), &[path, "--fuel", "20000"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(answer["identical"], false);
    assert_eq!(answer["first_difference"], "reason");
    assert_eq!(answer["replay"]["reason"], "out_of_fuel");

    // The same difference with the recorded limits is a failure (exit 1): a changed fuel
    // count in the bundle stands for a replay that did not reproduce the attempt.
    let mut bundle = bundle_of(&file);
    bundle.header.result.fuel_consumed = bundle.header.result.fuel_consumed.map(|f| f + 1);
    std::fs::write(&file, bundle.encode()).unwrap();
    let (code, answer, _) = replay(dir.path(), &[path]);
    assert_eq!((code, &answer["first_difference"]), (1, &json!("fuel")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_ended_lease_lost_has_no_bundle_and_says_why() {
    use remotask::domain::{Clock, ManualClock, QueueName};
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let e = crate::support::Engine::with_clock(std::sync::Arc::new(clock.clone())).await;
    let job = e.submit(crate::support::Engine::request("echo", &[])).await;
    let claimed = e
        .service
        .store()
        .claim(&QueueName::default_queue(), "gone", 1, 10_000, clock.now())
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
    let err = e.service.bundle(job.id, 1).await.unwrap_err();
    assert!(
        matches!(&err, remotask::service::ServiceError::Conflict(m)
            if m.contains("ended lease_lost without a recording")),
        "{err}"
    );
    let err = e.service.bundle(job.id, 2).await.unwrap_err();
    assert!(
        matches!(
            err,
            remotask::service::ServiceError::AttemptNotFound { number: 2, .. }
        ),
        "{err}"
    );
}
