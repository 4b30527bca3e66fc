//! Logs, and the counts of failures in background work.
//!
//! Every layer logs through `tracing`; a process that serves installs one subscriber
//! ([`init`]): human-readable lines on stderr by default, one JSON object per line with
//! `log_format = "json"`, at the level `RUST_LOG` gives, else the config's `log_level`, else
//! `info`. Job state changes are logged at `debug` with the job's id.
//!
//! Work that runs in the background (the dispatcher's claims, the reporter's writes,
//! heartbeats, progress, the rescuer, the scheduler, the retention cleaner, the store's
//! threads, shutdown) has no caller to answer: each of its failures goes through
//! [`background_error`], which logs it with its whole source chain and counts it for its
//! [`Component`]. `/metrics` shows the counts as `remotask_background_errors_total`. The
//! counts are per process, like the metrics that show them.
//!
//! What this does not do: decide anything. A failure is logged and counted where it happens;
//! the code there decides whether to retry.

use std::error::Error;
use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A part of the engine that works in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// Claims jobs for the worker pool.
    Dispatcher,
    /// Writes ended attempts.
    Reporter,
    /// Extends the leases of running attempts.
    Heartbeats,
    /// Writes guest progress.
    Progress,
    /// Requeues jobs whose lease expired.
    Rescuer,
    /// Fires due schedules.
    Scheduler,
    /// Removes ended jobs past the retention period.
    Cleaner,
    /// The store's own threads (SQLite: writer, log syncer, checkpointer).
    Store,
    /// Graceful shutdown's requeue of what it interrupted.
    Shutdown,
    /// What the nodes of one store tell each other.
    Signals,
}

impl Component {
    pub const ALL: [Component; 10] = [
        Component::Dispatcher,
        Component::Reporter,
        Component::Heartbeats,
        Component::Progress,
        Component::Rescuer,
        Component::Scheduler,
        Component::Cleaner,
        Component::Store,
        Component::Shutdown,
        Component::Signals,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Dispatcher => "dispatcher",
            Component::Reporter => "reporter",
            Component::Heartbeats => "heartbeats",
            Component::Progress => "progress",
            Component::Rescuer => "rescuer",
            Component::Scheduler => "scheduler",
            Component::Cleaner => "cleaner",
            Component::Store => "store",
            Component::Shutdown => "shutdown",
            Component::Signals => "signals",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

static FAILURES: [AtomicU64; Component::ALL.len()] =
    [const { AtomicU64::new(0) }; Component::ALL.len()];

/// Logs a failure of `component`'s background work, `doing` what (a short phrase: "claiming
/// jobs"), with the error's source chain, and counts it.
pub fn background_error(component: Component, doing: &str, error: &(dyn Error + 'static)) {
    if let Some(i) = Component::ALL.iter().position(|c| *c == component) {
        FAILURES[i].fetch_add(1, Ordering::Relaxed);
    }
    tracing::error!(
        component = component.as_str(),
        error = %Chain(error),
        "{component} failed {doing}"
    );
}

/// The failures counted so far, per component.
pub fn background_errors() -> Vec<(Component, u64)> {
    Component::ALL
        .iter()
        .zip(&FAILURES)
        .map(|(c, n)| (*c, n.load(Ordering::Relaxed)))
        .collect()
}

/// An error and its sources, as `outer: inner: innermost`.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// A line of text per event, for people.
    #[default]
    Human,
    /// A JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" | "text" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?}: expected human or json"
            )),
        }
    }
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Installs the process's log subscriber on stderr: `format`, at the level `RUST_LOG` gives,
/// else `level` (a `tracing` filter such as `info` or `remotask=debug`), else `info`. Once per
/// process; later calls change nothing.
pub fn init(format: LogFormat, level: Option<&str>) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(&env)
            .map_err(|e| format!("RUST_LOG={env:?} is not a log filter: {e}"))?,
        _ => {
            let level = level.unwrap_or("info");
            EnvFilter::try_new(level)
                .map_err(|e| format!("log_level {level:?} is not a log filter: {e}"))?
        }
    };
    if FORMAT.set(format).is_err() {
        return Ok(());
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Human => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    installed.map_err(|e| format!("cannot install the log subscriber: {e}"))
}

/// A notice the operator reads when a command starts or stops ("listening on ..."): with the
/// human format the line `remotask: <message>`, which scripts wait for; with JSON an `info`
/// event like every other line.
pub fn notice(message: fmt::Arguments<'_>) {
    match FORMAT.get() {
        Some(LogFormat::Json) => tracing::info!("{message}"),
        _ => eprintln!("remotask: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_shows_every_source() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(Chain(&e).to_string(), "outer: disk full");
    }

    #[test]
    fn a_background_failure_is_counted_for_its_component() {
        let count = |c| {
            background_errors()
                .into_iter()
                .find(|(k, _)| *k == c)
                .map(|(_, n)| n)
        };
        let before = count(Component::Cleaner).unwrap();
        background_error(Component::Cleaner, "cleaning", &std::io::Error::other("no"));
        assert!(count(Component::Cleaner).unwrap() > before);
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
