//! Write remotask task modules in Rust.
//!
//! A task is one typed function `fn(In) -> Result<Out, TaskError>`: the SDK reads the job
//! input from stdin and parses it as JSON into `In`, calls the function, writes `Out` as JSON
//! to stdout, and exits with the code the guest contract gives the outcome:
//!
//! | the function returns | exit code | job outcome |
//! |---|---|---|
//! | `Ok(out)` | 0 | `completed`, output = `out` as JSON |
//! | `Err(TaskError::retry(msg))` | 75 | `retryable_error`, retried by the job's policy |
//! | `Err(TaskError::fatal(msg))` | 1 | `guest_error`, not retried |
//! | it panics | (trap) | `trap`; the panic message is the last line of the log |
//!
//! The message of an error is written to stderr as the line `error: <msg>`; remotask shows
//! the last stderr line as the job's error message. Empty input parses as JSON `null`, so a
//! task can take `()` or `Option<T>`. Input that does not parse is a fatal error
//! `invalid input: ...`. Use [`run_raw`] for bytes in and out.
//!
//! ```no_run
//! use remotask_guest::{TaskError, progress};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Resize { width: u32, height: u32, scale: f64 }
//!
//! #[derive(Serialize)]
//! struct Size { width: u32, height: u32 }
//!
//! fn resize(job: Resize) -> Result<Size, TaskError> {
//!     if job.scale <= 0.0 {
//!         return Err(TaskError::fatal(format!("scale must be positive, got {}", job.scale)));
//!     }
//!     progress(1, 2);
//!     let size = Size {
//!         width: (job.width as f64 * job.scale) as u32,
//!         height: (job.height as f64 * job.scale) as u32,
//!     };
//!     progress(2, 2);
//!     Ok(size)
//! }
//!
//! remotask_guest::task!(resize);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip1`, try it with
//! `remotask run target/wasm32-wasip1/release/<name>.wasm --input '{"width":4,"height":2,"scale":0.5}'`.
//!
//! ## Where a task failed
//!
//! When a task traps (a panic, an out-of-bounds access), the attempt's message names the
//! guest's frames, innermost first, demangled:
//! `wasm trap: ... in my_task::resize <- ... <- _start`. The names come from the module's
//! name section, which a release build keeps unless told to strip symbols (`strip = true` or
//! `strip = "symbols"`). For the file and line of each frame too, keep line tables in the
//! release build (the module grows by its line tables):
//!
//! ```toml
//! [profile.release]
//! debug = "line-tables-only"
//! strip = "none"
//! ```
//!
//! or for one build only: `CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
//! CARGO_PROFILE_RELEASE_STRIP=none cargo build --release --target wasm32-wasip1`. A panic's
//! frames start at the function that panicked, past the standard library's abort path.
//!
//! The SDK does not do IO beyond stdin, stdout and stderr, and keeps no state between jobs:
//! every attempt is a fresh instance.

use std::fmt;
use std::io::{Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Exit code that asks for a retry (EX_TEMPFAIL).
pub const EXIT_RETRY: i32 = 75;
/// Exit code of a fatal task error.
pub const EXIT_FATAL: i32 = 1;

/// How a task failed: worth retrying, or not.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskError {
    retryable: bool,
    message: String,
}

impl TaskError {
    /// A failure that may go away: the job is retried by its policy (exit code 75).
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
        }
    }

    /// A failure that will not go away with the same input: the job fails (exit code 1).
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The process exit code this error ends the task with.
    pub fn exit_code(&self) -> i32 {
        if self.retryable {
            EXIT_RETRY
        } else {
            EXIT_FATAL
        }
    }

    /// The stderr line written for this error: `error: <message>` on one line.
    pub fn log_line(&self) -> String {
        format!("error: {}", self.message.replace(['\n', '\r'], " "))
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.retryable { "retry" } else { "fatal" };
        write!(f, "TaskError::{kind}({:?})", self.message)
    }
}

impl std::error::Error for TaskError {}

impl From<serde_json::Error> for TaskError {
    fn from(e: serde_json::Error) -> Self {
        TaskError::fatal(e.to_string())
    }
}

/// Parses the job input: JSON, with empty input read as `null`.
pub fn parse_input<In: DeserializeOwned>(input: &[u8]) -> Result<In, TaskError> {
    let input = if input.iter().all(u8::is_ascii_whitespace) {
        &b"null"[..]
    } else {
        input
    };
    serde_json::from_slice(input).map_err(|e| TaskError::fatal(format!("invalid input: {e}")))
}

/// Encodes the job output as JSON.
pub fn encode_output<Out: Serialize>(out: &Out) -> Result<Vec<u8>, TaskError> {
    serde_json::to_vec(out).map_err(|e| TaskError::fatal(format!("cannot encode the output: {e}")))
}

/// Runs a typed task: JSON input in, JSON output out. On success it returns (so `main` returns
/// and the module ends with exit code 0); on failure it exits with the contract's code.
pub fn run<In, Out, F>(task: F)
where
    In: DeserializeOwned,
    Out: Serialize,
    F: FnOnce(In) -> Result<Out, TaskError>,
{
    run_raw(|input| encode_output(&task(parse_input(&input)?)?))
}

/// Runs a task on raw bytes: stdin in, stdout out. Returns on success and exits with the
/// contract's code on failure, as [`run`] does.
///
/// Success returns instead of calling `exit(0)`: `proc_exit` ends the instance the way a trap
/// does, and a plain return is the cheaper way out for the host.
pub fn run_raw<F>(task: F)
where
    F: FnOnce(Vec<u8>) -> Result<Vec<u8>, TaskError>,
{
    install_panic_hook();
    let mut input = Vec::new();
    let result = match std::io::stdin().read_to_end(&mut input) {
        Ok(_) => task(input),
        Err(e) => Err(TaskError::retry(format!("cannot read the input: {e}"))),
    };
    let code = match result {
        Ok(output) => match std::io::stdout()
            .write_all(&output)
            .and_then(|()| std::io::stdout().flush())
        {
            Ok(()) => 0,
            Err(e) => fail(&TaskError::retry(format!("cannot write the output: {e}"))),
        },
        Err(error) => fail(&error),
    };
    if code != 0 {
        std::process::exit(code)
    }
}

fn fail(error: &TaskError) -> i32 {
    let _ = writeln!(std::io::stderr(), "{}", error.log_line());
    error.exit_code()
}

/// Wires a typed task function as the module's `main`.
///
/// `remotask_guest::task!(resize);` expands to `fn main() { remotask_guest::run(resize) }`.
#[macro_export]
macro_rules! task {
    ($task:path) => {
        fn main() {
            $crate::run($task)
        }
    };
}

/// Writes one line to the job log (stderr).
pub fn log(message: impl fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Reports progress: `done` of `total` steps. Shown on the job while it runs.
pub fn progress(done: u64, total: u64) {
    host::progress(
        done.min(i64::MAX as u64) as i64,
        total.min(i64::MAX as u64) as i64,
    );
}

/// Makes a panic write `panic: <message> at <file>:<line>` as one line to stderr, so it is
/// the job's error message. (Installed by [`run`] and [`run_raw`].)
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr(),
            "panic: {}{place}",
            message.replace('\n', " ")
        );
    }));
}

#[cfg(target_arch = "wasm32")]
mod host {
    #[link(wasm_import_module = "remotask")]
    unsafe extern "C" {
        #[link_name = "progress"]
        fn remotask_progress(done: i64, total: i64);
    }

    pub(crate) fn progress(done: i64, total: i64) {
        // SAFETY: the host provides `remotask.progress(i64, i64)`, which reads only its
        // arguments. The import is linked only into modules that call this function.
        unsafe { remotask_progress(done, total) }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    /// Outside wasm there is no host to tell; progress is dropped.
    pub(crate) fn progress(_done: i64, _total: i64) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Job {
        n: u32,
    }

    #[test]
    fn retry_exits_75_and_fatal_exits_1() {
        assert_eq!(TaskError::retry("busy").exit_code(), 75);
        assert_eq!(TaskError::fatal("bad").exit_code(), 1);
        assert!(TaskError::retry("x").is_retryable());
        assert!(!TaskError::fatal("x").is_retryable());
    }

    #[test]
    fn the_log_line_is_one_line_with_the_message() {
        assert_eq!(
            TaskError::fatal("no such user\nid 7").log_line(),
            "error: no such user id 7"
        );
    }

    #[test]
    fn input_parses_as_json_and_empty_input_is_null() {
        assert_eq!(parse_input::<Job>(br#"{"n": 3}"#), Ok(Job { n: 3 }));
        assert_eq!(parse_input::<Option<Job>>(b""), Ok(None));
        assert_eq!(parse_input::<()>(b"  \n"), Ok(()));
    }

    #[test]
    fn bad_input_is_a_fatal_error_naming_the_problem() {
        let e = parse_input::<Job>(br#"{"n": "three"}"#).unwrap_err();
        assert!(!e.is_retryable());
        assert!(
            e.message()
                .starts_with("invalid input: invalid type: string \"three\""),
            "{}",
            e.message()
        );
    }

    #[test]
    fn output_is_compact_json() {
        #[derive(Serialize)]
        struct Out {
            ok: bool,
        }
        assert_eq!(encode_output(&Out { ok: true }).unwrap(), br#"{"ok":true}"#);
    }
}
