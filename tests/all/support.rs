//! Helpers that make the tests read like specs: guest modules built once per test run, `.wat`
//! fixtures, one shared sandbox, and a one-call `attempt`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use remotask::domain::Limits;
use remotask::sandbox::{AttemptReport, AttemptRequest, Sandbox, SandboxConfig, TaskModule};

/// The Rust guests of the workspace, built for wasm32-wasip1.
const RUST_GUESTS: &[&str] = &["hostile", "echo", "fib", "word-count", "flaky", "progress"];

pub(crate) fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where guests are built: `guests/` in the cargo target directory in use.
pub(crate) fn guest_target_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from);
    target.join("guests")
}

/// Builds every Rust guest once per test run (a separate target dir, so it never waits on
/// the build of this test binary) and returns the path of `name.wasm`.
pub(crate) fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let target = guest_target_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace())
            .args(["build", "--release", "--target", "wasm32-wasip1", "--quiet"])
            .env("CARGO_TARGET_DIR", &target);
        for g in RUST_GUESTS {
            cmd.args(["-p", g]);
        }
        let status = cmd.status().expect("cargo runs");
        assert!(
            status.success(),
            "building the guest modules failed (is the wasm32-wasip1 target installed?)"
        );
        target.join("wasm32-wasip1/release")
    });
    dir.join(format!("{name}.wasm"))
}

/// The C example, built once with clang's wasm32-wasi target and Debian's wasi-libc.
pub(crate) fn c_guest() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = guest_target_dir().join("c-echo.wasm");
            std::fs::create_dir_all(out.parent().unwrap()).unwrap();
            let status = Command::new("clang")
                .args(["--target=wasm32-wasi", "-O2", "-o"])
                .arg(&out)
                .arg(workspace().join("examples/c-echo/echo.c"))
                .status()
                .expect("clang runs (packages clang lld wasi-libc libclang-rt-14-dev-wasm32)");
            assert!(status.success(), "building the C guest failed");
            out
        })
        .clone()
}

pub(crate) fn guest_bytes(name: &str) -> Vec<u8> {
    std::fs::read(guest(name)).unwrap()
}

/// A `.wat` fixture from tests/all/fixtures, as a binary module.
pub(crate) fn wat(name: &str) -> Vec<u8> {
    let path = workspace().join(format!("tests/all/fixtures/{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A sandbox config for tests: a debug build of Cranelift on two busy cores compiles slowly,
/// so the compile budget is generous here (the budget itself has its own test).
pub(crate) fn test_config() -> SandboxConfig {
    SandboxConfig {
        compile_budget: Duration::from_secs(600),
        ..SandboxConfig::default()
    }
}

/// One sandbox for the whole test run, as a server would have.
pub(crate) fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new(test_config()).expect("sandbox starts"))
}

pub(crate) fn module(bytes: &[u8]) -> TaskModule {
    sandbox().admit(bytes).expect("module is admitted")
}

/// Limits with a wall-clock budget of `secs`, the rest default.
pub(crate) fn limits_secs(secs: f64) -> Limits {
    Limits {
        max_time: Duration::from_secs_f64(secs),
        ..Limits::default()
    }
}

/// Runs the hostile guest with `args` (command first) and `input`.
pub(crate) fn hostile(args: &[&str], input: &[u8], limits: Limits) -> AttemptReport {
    attempt(&guest_bytes("hostile"), args, input, limits)
}

pub(crate) fn attempt(bytes: &[u8], args: &[&str], input: &[u8], limits: Limits) -> AttemptReport {
    let request = AttemptRequest {
        task_name: "test".into(),
        input: input.to_vec(),
        args: args.iter().map(|s| s.to_string()).collect(),
        limits,
        ..Default::default()
    };
    sandbox().run_blocking(&module(bytes), request)
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `remotask` binary built for this test run.
pub(crate) fn remotask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_remotask"))
}

/// A service on a fresh SQLite file, with the example and hostile guests registered, and
/// (optionally) a running worker pool on the in-process source, with maintenance (rescuer,
/// scheduler) beside it.
pub(crate) struct Engine {
    pub(crate) service: remotask::service::Service,
    pub(crate) pool: Option<(remotask::worker::WorkerPool, remotask::service::Maintenance)>,
    pub(crate) dir: tempfile::TempDir,
}

impl Engine {
    /// A new engine on a temporary data directory, on the real clock.
    pub(crate) async fn new() -> Self {
        Self::with_clock(std::sync::Arc::new(remotask::domain::SystemClock)).await
    }

    pub(crate) async fn with_clock(clock: std::sync::Arc<dyn remotask::domain::Clock>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let service = Self::open(dir.path(), clock).await;
        for name in ["hostile", "echo"] {
            service
                .register_task(&name.parse().unwrap(), guest_bytes(name), None)
                .await
                .unwrap();
        }
        Self {
            service,
            pool: None,
            dir,
        }
    }

    /// Opens the service on an existing data directory (a restart).
    pub(crate) async fn open(
        dir: &Path,
        clock: std::sync::Arc<dyn remotask::domain::Clock>,
    ) -> remotask::service::Service {
        let store = remotask::store::SqliteStore::open(dir.join("remotask.db")).unwrap();
        remotask::service::Service::new(std::sync::Arc::new(store), sandbox().clone(), clock)
    }

    pub(crate) fn start_workers(&mut self, threads: usize) {
        let config = remotask::worker::WorkerConfig {
            threads,
            shutdown_grace: Duration::from_millis(500),
            worker_id: "test-worker".into(),
            ..Default::default()
        };
        let maintenance = remotask::service::MaintenanceConfig {
            rescue_interval: Duration::from_millis(100),
            ..Default::default()
        };
        let source =
            remotask::service::LocalSource::new(self.service.clone(), maintenance.requeue_delay);
        let pool = remotask::worker::WorkerPool::start(source, sandbox().clone(), config);
        let maintenance = remotask::service::Maintenance::start(self.service.clone(), maintenance);
        self.pool = Some((pool, maintenance));
    }

    pub(crate) async fn stop_workers(&mut self) {
        if let Some((pool, maintenance)) = self.pool.take() {
            maintenance.stop();
            pool.shutdown().await;
        }
    }

    /// Submits `task` with argv `args` (for the hostile guest: the command first).
    pub(crate) fn request(task: &str, args: &[&str]) -> remotask::service::SubmitRequest {
        let mut r = remotask::service::SubmitRequest::new(task.parse().unwrap(), Vec::new());
        r.args = args.iter().map(|s| s.to_string()).collect();
        r
    }

    pub(crate) async fn submit(
        &self,
        request: remotask::service::SubmitRequest,
    ) -> remotask::domain::Job {
        self.service.submit(request).await.unwrap().job
    }

    pub(crate) async fn wait(&self, id: remotask::domain::JobId) -> remotask::domain::Job {
        self.service
            .wait(id, Duration::from_secs(20))
            .await
            .unwrap()
    }
}

/// A retry policy with no backoff, so retries happen at once in real-time tests.
pub(crate) fn no_backoff(retries: u32) -> remotask::domain::RetryPolicy {
    remotask::domain::RetryPolicy {
        retries,
        backoff_seconds: 0.0,
        jitter: 0.0,
        ..Default::default()
    }
}
