//! A throwaway PostgreSQL server for this test run: Debian's `postgresql` binaries (installed
//! by `scripts/setup`), a cluster made in a temporary directory and started as the `postgres`
//! user (the server refuses to run as root) on 127.0.0.1, on a free port, once per run. Each
//! test takes a database of its own. A watchdog stops the server when the test process ends.
//!
//! The cluster runs with `fsync` off: tests need no durability, and fsyncs would only make
//! them slow. The benchmarks run with it on. `REMOTASK_PG_OPTIONS` adds server options (for
//! example `-c shared_preload_libraries=auto_explain ...`, to read the plans a bench runs).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The running server.
pub(crate) struct Postgres {
    port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

/// The newest PostgreSQL installed from Debian's packages: its `bin` directory.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/setup installs Debian's postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL server binary")
}

fn as_postgres(bin: &std::path::Path, program: &str) -> Command {
    let mut command = Command::new("runuser");
    command
        .args(["-u", "postgres", "--"])
        .arg(bin.join(program));
    command
}

impl Postgres {
    fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts a server; `durable` keeps PostgreSQL's defaults (`fsync`, `synchronous_commit`
    /// and `full_page_writes` on) instead of turning them off.
    pub(crate) fn start_with(durable: bool) -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("pg");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("chmod");
        let initdb = as_postgres(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = dir.path().join("postgres.log");
        let volatile = if durable {
            ""
        } else {
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        };
        let started = as_postgres(&bin, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1{volatile} -c max_connections=500 {}",
                dir.path().display(),
                std::env::var("REMOTASK_PG_OPTIONS").unwrap_or_default()
            ))
            .args(["-w", "start"])
            .output()
            .expect("pg_ctl runs");
        assert!(
            started.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&started.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // Stops the server when this process is gone; it outlives this process on purpose.
        let watchdog = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             runuser -u postgres -- {pg_ctl} -D {data} stop -m immediate >/dev/null 2>&1",
            pid = std::process::id(),
            pg_ctl = bin.join("pg_ctl").display(),
            data = data.display()
        );
        #[expect(
            clippy::zombie_processes,
            reason = "the watchdog outlives the test process, to stop the server after it"
        )]
        let _watchdog = Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the watchdog starts");
        Self { port, bin, dir }
    }

    /// `postgres://` URL of database `name`.
    pub(crate) fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A new, empty database of its own: its URL.
    pub(crate) fn database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let made = Command::new(self.bin.join("psql"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args(["-q", "-c", &format!("CREATE DATABASE {name}")])
                .output()
                .expect("psql runs");
            if made.status.success() {
                return self.url(&name);
            }
            // Two databases made at once from one template can collide; try again.
            assert!(
                Instant::now() < deadline,
                "CREATE DATABASE: {}",
                String::from_utf8_lossy(&made.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postgres {
    /// Stops the server while its directory is still there (the watchdog's `pg_ctl` needs
    /// it): a server owned by a local, as a benchmark's is, would otherwise outlive it.
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("pg"))
            .args(["stop", "-m", "immediate"])
            .output();
    }
}

/// The test run's server, started at the first call.
pub(crate) fn postgres() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(Postgres::start)
}
