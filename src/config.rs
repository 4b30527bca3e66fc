//! The server's configuration: a TOML file, then flags and environment variables (clap reads
//! the environment, in `cli/serve.rs`, and nowhere else), validated once into [`ServerConfig`].
//! Each subsystem receives only its own part (`WorkerConfig`, `MaintenanceConfig`,
//! `QueueConfig`s, `HttpCaps`, the data dir, the log settings).
//!
//! ```toml
//! data_dir = "remotask-data"
//! store_url = "postgres://remotask@db:5432/remotask"  # several nodes; absent: SQLite
//! worker_threads = 2              # 0: no guest runs here, only remote workers
//! retention_seconds = 604800       # clean terminal jobs older than this; 0 keeps them
//! lease_ttl_seconds = 30
//! requeue_delay_seconds = 5
//! shutdown_grace_seconds = 10
//! log_format = "human"             # or "json": one JSON object per line
//! log_level = "info"               # a tracing filter; RUST_LOG wins when set
//! max_workers = 4                  # remote workers at once; absent: any number
//! autostart = ["default", "reports-*"]  # queues that process at start; absent: all
//! bind = "0.0.0.0:7443"            # default 127.0.0.1:7070, this machine only
//! tls_cert = "server.pem"          # serve HTTPS: the certificate chain and its key (PEM),
//! tls_key = "server.key"           # both or neither
//!
//! [[queues]]
//! name = "default"
//! concurrency = 5
//! key_concurrency = 1              # jobs with one concurrency_key at once
//! default_limits = { fuel = 10_000_000_000, max_seconds = 30 }
//! caps = { max_seconds = 3600 }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::{LimitsOverride, QueueConfig, QueueName};
use crate::http::{HttpCaps, TlsFiles};
use crate::service::MaintenanceConfig;
use crate::telemetry::LogFormat;
use crate::worker::WorkerConfig;

/// One `[[queues]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFile {
    pub name: String,
    pub concurrency: Option<u32>,
    pub key_concurrency: Option<u32>,
    #[serde(default)]
    pub default_limits: LimitsOverride,
    #[serde(default)]
    pub caps: LimitsOverride,
}

/// The config file as written; every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL database (`postgres://user@host:port/db`) that several server nodes
    /// share; absent: SQLite in the data directory.
    pub store_url: Option<String>,
    pub worker_threads: Option<usize>,
    pub retention_seconds: Option<u64>,
    pub lease_ttl_seconds: Option<f64>,
    pub requeue_delay_seconds: Option<f64>,
    pub shutdown_grace_seconds: Option<f64>,
    /// Address the HTTP API listens on (default 127.0.0.1:7070).
    pub bind: Option<String>,
    /// The server's certificate chain (PEM), to serve HTTPS; needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert` (PEM).
    pub tls_key: Option<PathBuf>,
    /// Largest module upload, in bytes.
    pub max_module_bytes: Option<usize>,
    /// Largest job input, in bytes.
    pub max_input_bytes: Option<usize>,
    /// Most jobs in one batch submit.
    pub max_batch_jobs: Option<usize>,
    /// At most this many remote workers at once (default: any number).
    pub max_workers: Option<usize>,
    /// `human` (default) or `json`.
    pub log_format: Option<String>,
    /// A `tracing` filter (`info`, `remotask=debug`); `RUST_LOG` wins when set.
    pub log_level: Option<String>,
    /// Queue-name patterns (`*` any run of characters, `?` one): at start, queues that match
    /// none are paused until resumed. Absent: every queue processes.
    pub autostart: Option<Vec<String>>,
    #[serde(default)]
    pub queues: Vec<QueueFile>,
}

/// Values given on the command line or in the environment; they win over the file.
/// The HTTP API's address when none is configured: loopback only.
pub const DEFAULT_BIND: &str = "127.0.0.1:7070";

#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub store_url: Option<String>,
    pub worker_threads: Option<usize>,
    pub lease_ttl_seconds: Option<f64>,
    pub requeue_delay_seconds: Option<f64>,
    pub bind: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
}

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The data directory: the SQLite file unless `store_url` is given, the compiled-module
    /// cache, the first admin token.
    pub data_dir: PathBuf,
    /// The PostgreSQL database the store is in, if not SQLite in the data directory.
    pub store_url: Option<String>,
    /// Where the HTTP API listens; loopback unless configured otherwise.
    pub bind: SocketAddr,
    /// The certificate and key files when the API is served over HTTPS (not read yet: see
    /// [`TlsFiles::load`]).
    pub tls: Option<TlsFiles>,
    pub http: HttpCaps,
    pub workers: WorkerConfig,
    /// The rescuer's and the cleaner's timing, the requeue delay, the retention period.
    pub maintenance: MaintenanceConfig,
    pub queues: Vec<QueueConfig>,
    /// At most this many remote workers at once; `None` takes any number.
    pub max_workers: Option<usize>,
    pub log_format: LogFormat,
    /// A `tracing` filter for the log, if configured (`RUST_LOG` wins when set).
    pub log_level: Option<String>,
    /// The queues that process at start; `None`: all of them.
    pub autostart: Option<Autostart>,
}

/// Queue-name patterns: `*` stands for any run of characters, `?` for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autostart(Vec<String>);

impl Autostart {
    /// The patterns, refused when one is empty or holds what no queue name can.
    pub fn new(patterns: Vec<String>) -> Result<Self, String> {
        for p in &patterns {
            let name_char = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
            if p.is_empty() || !p.chars().all(|c| name_char(c) || c == '*' || c == '?') {
                return Err(format!(
                    "autostart pattern {p:?}: a queue name with * and ? (letters, digits, - _ .)"
                ));
            }
        }
        Ok(Self(patterns))
    }

    pub fn matches(&self, queue: &str) -> bool {
        self.0.iter().any(|p| glob(p.as_bytes(), queue.as_bytes()))
    }

    /// The patterns that match none of `queues`.
    pub fn unmatched<'a>(&'a self, queues: &[String]) -> Vec<&'a str> {
        self.0
            .iter()
            .filter(|p| !queues.iter().any(|q| glob(p.as_bytes(), q.as_bytes())))
            .map(String::as_str)
            .collect()
    }
}

/// Whether `name` matches `pattern` (`*` any run, `?` one character).
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], name) || (!name.is_empty() && glob(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob(&pattern[1..], &name[1..]),
        _ => false,
    }
}

impl ServerConfig {
    /// Reads `path` (if given), applies the overrides and validates everything.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, String> {
        let file = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read config {}: {e}", p.display()))?;
                toml::from_str::<ConfigFile>(&text)
                    .map_err(|e| format!("config {}: {e}", p.display()))?
            }
            None => ConfigFile::default(),
        };
        Self::from_file(file, overrides)
    }

    pub fn from_file(file: ConfigFile, o: Overrides) -> Result<Self, String> {
        let workers = workers(&file, &o)?;
        let maintenance = MaintenanceConfig {
            requeue_delay: seconds(
                "requeue_delay_seconds",
                o.requeue_delay_seconds.or(file.requeue_delay_seconds),
                5.0,
            )?,
            retention: file
                .retention_seconds
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            ..MaintenanceConfig::default()
        };
        let queues = queues(&file.queues)?;
        let bind_text = o
            .bind
            .or(file.bind.clone())
            .unwrap_or_else(|| DEFAULT_BIND.to_owned());
        let bind: SocketAddr = bind_text.parse().map_err(|_| {
            format!("bind must be an address with a port, like 127.0.0.1:7070, got {bind_text:?}")
        })?;
        let tls = match (
            o.tls_cert.or(file.tls_cert.clone()),
            o.tls_key.or(file.tls_key.clone()),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(cert), None) => {
                return Err(format!(
                    "tls_cert (--tls-cert) is {} but no tls_key (--tls-key) is given: HTTPS takes both",
                    cert.display()
                ));
            }
            (None, Some(key)) => {
                return Err(format!(
                    "tls_key (--tls-key) is {} but no tls_cert (--tls-cert) is given: HTTPS takes both",
                    key.display()
                ));
            }
        };
        let http = http_caps(&file)?;
        let log_format = match o.log_format.or(file.log_format) {
            Some(f) => f.parse()?,
            None => LogFormat::default(),
        };
        let store_url = match o.store_url.or(file.store_url) {
            Some(url) if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) => {
                return Err(format!(
                    "store_url must be a postgres:// URL (without it, SQLite in the data \
                     directory is the store), got {url:?}"
                ));
            }
            url => url,
        };
        Ok(Self {
            data_dir: o
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("remotask-data")),
            store_url,
            bind,
            tls,
            http,
            workers,
            maintenance,
            queues,
            max_workers: match file.max_workers {
                Some(0) => return Err("max_workers must be at least 1".to_owned()),
                n => n,
            },
            log_format,
            log_level: o.log_level.or(file.log_level),
            autostart: file.autostart.map(Autostart::new).transpose()?,
        })
    }
}

/// `v` seconds (else `default`), refused unless above 0 and at most a day.
fn seconds(name: &str, v: Option<f64>, default: f64) -> Result<Duration, String> {
    let v = v.unwrap_or(default);
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        return Err(format!(
            "{name} must be between 0 and 86400 seconds, got {v}"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// The worker pool's part.
fn workers(file: &ConfigFile, o: &Overrides) -> Result<WorkerConfig, String> {
    let mut workers = WorkerConfig::default();
    if let Some(n) = o.worker_threads.or(file.worker_threads) {
        if n > 1024 {
            return Err(format!(
                "worker_threads must be between 0 (no guest runs here: remote workers only) \
                 and 1024, got {n}"
            ));
        }
        workers.threads = n;
    }
    workers.lease_ttl = seconds(
        "lease_ttl_seconds",
        o.lease_ttl_seconds.or(file.lease_ttl_seconds),
        30.0,
    )?;
    workers.shutdown_grace = seconds("shutdown_grace_seconds", file.shutdown_grace_seconds, 10.0)?;
    Ok(workers)
}

/// The `[[queues]]` entries, each filled in from a queue's defaults and checked.
fn queues(entries: &[QueueFile]) -> Result<Vec<QueueConfig>, String> {
    let mut queues: Vec<QueueConfig> = Vec::new();
    for q in entries {
        let name: QueueName = q.name.parse().map_err(|e| format!("{e}"))?;
        if queues.iter().any(|c| c.name == name) {
            return Err(format!("queue {name} is configured twice"));
        }
        let base = QueueConfig::with_defaults(name.clone());
        let concurrency = q.concurrency.unwrap_or(base.concurrency);
        if concurrency == 0 {
            return Err(format!("queue {name}: concurrency must be at least 1"));
        }
        let key_concurrency = q.key_concurrency.unwrap_or(base.key_concurrency);
        if key_concurrency == 0 {
            return Err(format!("queue {name}: key_concurrency must be at least 1"));
        }
        let caps = q
            .caps
            .over(base.caps)
            .map_err(|e| format!("queue {name} caps: {e}"))?;
        let default_limits = q
            .default_limits
            .over(base.default_limits)
            .map_err(|e| format!("queue {name} default_limits: {e}"))?;
        if default_limits.fuel > caps.fuel
            || default_limits.max_time > caps.max_time
            || default_limits.memory_bytes > caps.memory_bytes
        {
            return Err(format!("queue {name}: default_limits are over its caps"));
        }
        queues.push(QueueConfig {
            name,
            concurrency,
            key_concurrency,
            default_limits,
            caps,
        });
    }
    Ok(queues)
}

/// The HTTP API's size caps.
fn http_caps(file: &ConfigFile) -> Result<HttpCaps, String> {
    let mut http = HttpCaps::default();
    let cap = |name: &str, v: Option<usize>, default: usize, max: usize| match v {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(format!("{name} must be between 1 and {max}, got {n}")),
    };
    http.module_bytes = cap(
        "max_module_bytes",
        file.max_module_bytes,
        http.module_bytes,
        1 << 30,
    )?;
    http.input_bytes = cap(
        "max_input_bytes",
        file.max_input_bytes,
        http.input_bytes,
        256 << 20,
    )?;
    http.batch_jobs = cap(
        "max_batch_jobs",
        file.max_batch_jobs,
        http.batch_jobs,
        1_000_000,
    )?;
    Ok(http)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Limits;

    fn parse(text: &str) -> Result<ServerConfig, String> {
        ServerConfig::from_file(
            toml::from_str(text).map_err(|e| e.to_string())?,
            Overrides::default(),
        )
    }

    #[test]
    fn a_full_file_is_read_and_filled_from_defaults() {
        let c = parse(
            "data_dir = \"d\"\nworker_threads = 3\nretention_seconds = 60\n[[queues]]\nname = \"fast\"\nconcurrency = 1\ndefault_limits = { max_seconds = 2 }\n",
        )
        .unwrap();
        assert_eq!(
            (c.data_dir, c.workers.threads, c.maintenance.retention),
            (PathBuf::from("d"), 3, Some(Duration::from_secs(60)))
        );
        assert_eq!(c.queues[0].concurrency, 1);
        assert_eq!(c.queues[0].default_limits.max_time, Duration::from_secs(2));
        assert_eq!(c.queues[0].default_limits.fuel, Limits::default().fuel);
    }

    #[test]
    fn tls_takes_a_certificate_and_its_key_from_the_file_or_the_flags() {
        assert_eq!(parse("").unwrap().tls, None);
        let file = parse("tls_cert = \"a.pem\"\ntls_key = \"a.key\"").unwrap();
        let files = TlsFiles {
            cert: PathBuf::from("a.pem"),
            key: PathBuf::from("a.key"),
        };
        assert_eq!(file.tls, Some(files));
        let flags = ServerConfig::from_file(
            toml::from_str("tls_cert = \"a.pem\"").unwrap(),
            Overrides {
                tls_key: Some(PathBuf::from("b.key")),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(flags.tls.unwrap().key, PathBuf::from("b.key"));
    }

    #[test]
    fn autostart_patterns_match_queue_names_and_bad_ones_are_refused() {
        let config = parse(r#"autostart = ["default", "reports-*", "q?"]"#).unwrap();
        let a = config.autostart.unwrap();
        assert!(a.matches("default") && a.matches("reports-") && a.matches("reports-eu"));
        assert!(a.matches("q1") && !a.matches("q12") && !a.matches("other"));
        let queues = ["default".to_owned(), "reports-eu".to_owned()];
        assert_eq!(a.unmatched(&queues), ["q?"]);
        assert_eq!(parse("").unwrap().autostart, None);
        assert!(
            parse(r#"autostart = ["a b"]"#)
                .unwrap_err()
                .contains("autostart")
        );
        assert!(parse(r#"autostart = [""]"#).is_err());
    }

    #[test]
    fn the_store_is_sqlite_unless_a_postgres_url_is_given() {
        assert_eq!(parse("").unwrap().store_url, None);
        let url = "postgres://remotask@db:5432/jobs";
        let file = parse(&format!("store_url = \"{url}\"")).unwrap();
        assert_eq!(file.store_url.as_deref(), Some(url));
        let flag = ServerConfig::from_file(
            toml::from_str(&format!("store_url = \"{url}\"")).unwrap(),
            Overrides {
                store_url: Some("postgresql://other/db".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(flag.store_url.as_deref(), Some("postgresql://other/db"));
        let err = parse("store_url = \"mysql://db/jobs\"").unwrap_err();
        assert!(
            err.contains("postgres://") && err.contains("\"mysql://db/jobs\""),
            "{err}"
        );
    }

    #[test]
    fn mistakes_are_refused_with_the_offending_value() {
        assert!(
            parse("worker_threads = 1025")
                .unwrap_err()
                .contains("got 1025")
        );
        assert_eq!(parse("worker_threads = 0").unwrap().workers.threads, 0);
        assert!(
            parse("max_workers = 0")
                .unwrap_err()
                .contains("max_workers")
        );
        assert!(
            parse("[[queues]]\nname = \"Bad Name\"")
                .unwrap_err()
                .contains("\"Bad Name\"")
        );
        assert!(
            parse("[[queues]]\nname = \"q\"\ncaps = { max_seconds = -1 }")
                .unwrap_err()
                .contains("max_seconds")
        );
        assert!(
            parse("unknown_key = 1")
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            parse("[[queues]]\nname = \"q\"\n[[queues]]\nname = \"q\"")
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            parse("log_format = \"xml\"")
                .unwrap_err()
                .contains("\"xml\"")
        );
        assert!(
            parse("tls_cert = \"server.pem\"")
                .unwrap_err()
                .contains("tls_cert (--tls-cert) is server.pem but no tls_key")
        );
        assert!(
            parse("tls_key = \"server.key\"")
                .unwrap_err()
                .contains("no tls_cert")
        );
        let json = parse("log_format = \"json\"\nlog_level = \"debug\"").unwrap();
        assert_eq!(
            (json.log_format, json.log_level.as_deref()),
            (LogFormat::Json, Some("debug"))
        );
    }
}
