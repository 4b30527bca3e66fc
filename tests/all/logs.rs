//! Logs and the counts of background failures, seen from outside a real `remotask serve`:
//! a store that refuses writes makes the dispatcher's claims fail, and that shows as an
//! error line (JSON, with its source) and in `/metrics`; once the store takes writes again,
//! the job that waited runs.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::serve::cli;
use crate::support::{guest, remotask};

/// `remotask serve` with JSON logs, and every log line it writes, parsed.
struct JsonServer {
    child: Child,
    url: String,
    lines: mpsc::Receiver<Value>,
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl JsonServer {
    fn start(data_dir: &Path, modules: &Path) -> Self {
        let mut child = remotask()
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--register-dir")
            .arg(modules)
            .args(["--bind", "127.0.0.1:0", "--workers", "1"])
            .args(["--log-format", "json"])
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .expect("remotask serve starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let parsed = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
                let _ = tx.send(parsed);
            }
        });
        let mut server = Self {
            child,
            url: String::new(),
            lines,
        };
        let listening = server.wait_for(|l| message(l).starts_with("listening on "));
        server.url = message(&listening)["listening on ".len()..].to_owned();
        server.wait_for(|l| message(l) == "ready");
        server
    }

    /// The first log line from now that `wanted` accepts.
    fn wait_for(&self, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the awaited log line in time");
            if wanted(&line) {
                return line;
            }
        }
    }
}

fn message(line: &Value) -> &str {
    line["message"].as_str().unwrap_or_default()
}

/// `remotask_background_errors_total{component="<component>"}` in `/metrics`.
fn failures(url: &str, data_dir: &Path, component: &str) -> u64 {
    let (code, out, err) = cli(url, data_dir, &["server", "metrics"]);
    assert_eq!(code, 0, "{err}");
    let series = format!("remotask_background_errors_total{{component=\"{component}\"}} ");
    out.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in:\n{out}"))
        .parse()
        .unwrap()
}

#[test]
fn a_store_refusing_writes_shows_in_the_log_and_the_metrics_and_the_engine_recovers() {
    let data = tempfile::tempdir().unwrap();
    let modules = tempfile::tempdir().unwrap();
    std::fs::copy(guest("echo"), modules.path().join("echo.wasm")).unwrap();
    let d = data.path();
    let server = JsonServer::start(d, modules.path());
    assert_eq!(failures(&server.url, d, "dispatcher"), 0);

    // The database refuses to make a job running, as a full disk would refuse a write.
    let db = rusqlite::Connection::open(d.join("remotask.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_claims BEFORE UPDATE OF state ON jobs \
         WHEN new.state = 'running' BEGIN SELECT RAISE(ABORT, 'disk refused the write'); END;",
    )
    .unwrap();
    let (code, out, err) = cli(
        &server.url,
        d,
        &["job", "submit", "echo", "--input", "{\"n\": 1}"],
    );
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_owned();

    let failed = server.wait_for(|l| l["component"] == "dispatcher");
    assert_eq!(failed["level"], "ERROR", "{failed}");
    assert_eq!(
        message(&failed),
        "dispatcher failed claiming jobs",
        "{failed}"
    );
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("database error") && error.contains("disk refused the write"),
        "the error carries its source: {failed}"
    );
    assert!(failures(&server.url, d, "dispatcher") >= 1);

    db.execute_batch("DROP TRIGGER refuse_claims").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, err) = cli(&server.url, d, &["job", "get", &id, "--json"]);
        assert_eq!(code, 0, "{err}");
        let job: Value = serde_json::from_str(&out).unwrap();
        if job["state"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "the job did not run: {job}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
