//! The one place that reads how an attempt ended and names its [`Reason`]. Order matters and
//! is written down here: a stop we caused (cancel, deadline) wins over what the guest saw, a
//! limit we enforced wins over the trap it caused, and only then exit codes and trap kinds.

use wasmtime::{Trap, WasmBacktrace};
use wasmtime_wasi::I32Exit;

use super::output::OutputLimitExceeded;
use crate::domain::{Limits, Reason, TrapKind};

/// Exit code a guest uses to ask for a retry (EX_TEMPFAIL).
pub(super) const EXIT_RETRY: i32 = 75;

/// Who stopped a running guest from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    Cancelled,
    Deadline,
    /// The guest's thread spent the CPU-time budget.
    CpuLimit,
}

/// Whether the guest's own code had started (`_start`) or we were still instantiating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Instantiate,
    Run,
}

/// How the attempt's future ended.
#[derive(Debug)]
pub(super) enum End {
    Returned(wasmtime::Result<()>),
    Stopped(Stop),
}

/// Everything `classify` looks at.
#[derive(Debug)]
pub(super) struct Evidence<'a> {
    pub(super) end: End,
    pub(super) phase: Phase,
    pub(super) stop: Option<Stop>,
    pub(super) memory_denied: Option<&'a str>,
    pub(super) stdout_overflowed: bool,
    pub(super) limits: &'a Limits,
    pub(super) stderr: &'a [u8],
}

#[derive(Debug, PartialEq)]
pub(super) struct Verdict {
    pub(super) reason: Reason,
    pub(super) trap_kind: Option<TrapKind>,
    pub(super) exit_code: Option<i32>,
    pub(super) message: Option<String>,
}

impl Verdict {
    fn new(reason: Reason, message: String) -> Self {
        Self {
            reason,
            trap_kind: None,
            exit_code: None,
            message: Some(message),
        }
    }
}

pub(super) fn classify(e: Evidence<'_>) -> Verdict {
    let stopped = match &e.end {
        End::Stopped(stop) => Some(*stop),
        End::Returned(_) => e.stop,
    };
    match stopped {
        Some(Stop::Cancelled) => {
            return Verdict::new(Reason::Cancelled, "cancelled while running".into());
        }
        Some(Stop::Deadline) => {
            let message = format!(
                "did not finish within max_seconds = {}",
                e.limits.max_seconds()
            );
            return Verdict::new(Reason::Deadline, message);
        }
        Some(Stop::CpuLimit) => {
            let ms = e.limits.cpu_ms().unwrap_or_default();
            let message = format!("spent its CPU-time budget, cpu_ms = {ms}");
            return Verdict::new(Reason::CpuLimit, message);
        }
        None => {}
    }
    let error = match e.end {
        End::Returned(Ok(())) => return exited(0, e.stderr),
        End::Returned(Err(error)) => error,
        End::Stopped(_) => unreachable!("handled above"),
    };
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return exited(exit.0, e.stderr);
    }
    if let Some(why) = e.memory_denied {
        return Verdict::new(Reason::MemoryLimit, why.to_owned());
    }
    if e.stdout_overflowed || error.downcast_ref::<OutputLimitExceeded>().is_some() {
        let message = format!("stdout exceeded its cap of {} bytes", e.limits.stdout_bytes);
        return Verdict::new(Reason::OutputLimit, message);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Verdict::new(
            Reason::OutOfFuel,
            format!("used up its fuel budget of {}", e.limits.fuel),
        ),
        Some(trap) => {
            let mut message = format!("{trap}{}", frames(&error));
            if let Some(line) = last_line(e.stderr) {
                message = format!("{message}; last log line: {line}");
            }
            Verdict {
                reason: Reason::Trap,
                trap_kind: Some(trap_kind(*trap)),
                exit_code: None,
                message: Some(message),
            }
        }
        // An error raised by a host function on the guest's behalf (WASI refusing what the
        // guest asked in a way that traps) is the guest's doing; before `_start` runs it is ours.
        None if e.phase == Phase::Run => Verdict {
            reason: Reason::Trap,
            trap_kind: Some(guest_error_kind(&error)),
            exit_code: None,
            message: Some(format!("{error:#}{}", frames(&error))),
        },
        None => Verdict::new(Reason::HostError, format!("{error:#}")),
    }
}

fn exited(code: i32, stderr: &[u8]) -> Verdict {
    let (reason, message) = match code {
        0 => (Reason::Completed, None),
        EXIT_RETRY => (
            Reason::RetryableError,
            Some(last_line(stderr).unwrap_or_else(|| format!("exited with code {code}"))),
        ),
        _ => (
            Reason::GuestError,
            Some(last_line(stderr).unwrap_or_else(|| format!("exited with code {code}"))),
        ),
    };
    Verdict {
        reason,
        trap_kind: None,
        exit_code: Some(code),
        message,
    }
}

/// The most guest frames a trap's message names.
const MAX_FRAMES: usize = 12;

/// The guest's frames where it trapped, innermost first, on one line: each function's name
/// (from the module's name section, else `<wasm function N>`) and, when the module carries
/// DWARF, its file and line: ` in panic (library/core/src/panicking.rs:75) <- main ...`.
/// Empty when wasmtime captured no backtrace.
pub(super) fn frames(error: &wasmtime::Error) -> String {
    let Some(trace) = error.downcast_ref::<WasmBacktrace>() else {
        return String::new();
    };
    let all = trace.frames();
    // A Rust panic traps deep in the standard library's abort path: start at the guest's
    // own frames when there are any.
    let runtime = all
        .iter()
        .take_while(|f| f.func_name().is_some_and(|n| is_runtime(&demangled(n))))
        .count();
    let skipped = if runtime < all.len() { runtime } else { 0 };
    let shown: Vec<String> = all
        .iter()
        .skip(skipped)
        .take(MAX_FRAMES)
        .map(|f| {
            let name = f
                .func_name()
                .map_or_else(|| format!("<wasm function {}>", f.func_index()), demangled);
            // Symbols run from the innermost inlined call out: the last is the function's own.
            let place = f.symbols().iter().rev().find_map(|s| {
                let file = s.file()?;
                Some(match s.line() {
                    Some(line) => format!(" ({file}:{line})"),
                    None => format!(" ({file})"),
                })
            });
            format!("{name}{}", place.unwrap_or_default())
        })
        .collect();
    if shown.is_empty() {
        return String::new();
    }
    let more = all.len().saturating_sub(skipped + MAX_FRAMES);
    let more = if more > 0 {
        format!(" <- ... {more} more")
    } else {
        String::new()
    };
    let below = if skipped > 0 {
        format!(" (below {skipped} frames of the panic's abort)")
    } else {
        String::new()
    };
    format!(" in {}{more}{below}", shown.join(" <- "))
}

/// A Rust symbol demangled without its hash (`hostile::main`); other names as they are.
fn demangled(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.to_owned(),
    }
}

/// Whether a frame is the Rust runtime's way from a panic to the trap.
fn is_runtime(name: &str) -> bool {
    let path = name.strip_prefix('<').unwrap_or(name);
    name == "abort"
        || ["std::", "core::", "alloc::", "__rustc::", "panic_abort::"]
            .iter()
            .any(|p| path.starts_with(p))
        || name.starts_with("rust_")
        || name.starts_with("__rust")
}

/// The last non-empty line of the log, trimmed, at most 1000 characters.
pub(super) fn last_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    Some(line.chars().take(1000).collect())
}

/// The kind of a wasm trap: one to one for the traps of the features the engine has on.
fn trap_kind(trap: Trap) -> TrapKind {
    match trap {
        Trap::UnreachableCodeReached => TrapKind::Unreachable,
        Trap::StackOverflow => TrapKind::StackOverflow,
        Trap::MemoryOutOfBounds => TrapKind::OutOfBounds,
        Trap::HeapMisaligned => TrapKind::UnalignedAtomic,
        Trap::TableOutOfBounds => TrapKind::TableOutOfBounds,
        Trap::IndirectCallToNull => TrapKind::IndirectCallToNull,
        Trap::BadSignature => TrapKind::BadSignature,
        Trap::NullReference => TrapKind::NullReference,
        Trap::IntegerDivisionByZero => TrapKind::DivideByZero,
        Trap::IntegerOverflow => TrapKind::IntegerOverflow,
        Trap::BadConversionToInteger => TrapKind::BadConversion,
        _ => TrapKind::Other,
    }
}

/// The kind of an error a host function raised for the guest: a WASI call given memory
/// outside the guest's (or a range that wraps around) is an out-of-bounds access, one given
/// a misaligned pointer an unaligned one.
fn guest_error_kind(error: &wasmtime::Error) -> TrapKind {
    match error.downcast_ref::<wiggle::GuestError>() {
        Some(wiggle::GuestError::PtrOutOfBounds(_) | wiggle::GuestError::PtrOverflow) => {
            TrapKind::OutOfBounds
        }
        Some(wiggle::GuestError::PtrNotAligned(..)) => TrapKind::UnalignedPointer,
        _ => TrapKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence<'a>(end: End, limits: &'a Limits, stderr: &'a [u8]) -> Evidence<'a> {
        Evidence {
            end,
            phase: Phase::Run,
            stop: None,
            memory_denied: None,
            stdout_overflowed: false,
            limits,
            stderr,
        }
    }

    #[test]
    fn exit_codes_name_the_reason_and_keep_the_last_log_line() {
        let limits = Limits::default();
        let exit = |code| End::Returned(Err(I32Exit(code).into()));
        let v = classify(evidence(exit(0), &limits, b""));
        assert_eq!(
            (v.reason, v.exit_code, v.message),
            (Reason::Completed, Some(0), None)
        );
        let v = classify(evidence(exit(75), &limits, b"busy\n\n"));
        assert_eq!(
            (v.reason, v.message.as_deref()),
            (Reason::RetryableError, Some("busy"))
        );
        let v = classify(evidence(exit(3), &limits, b"first\n  no such user  \n"));
        assert_eq!(
            (v.reason, v.exit_code, v.message.as_deref()),
            (Reason::GuestError, Some(3), Some("no such user"))
        );
        let v = classify(evidence(exit(9), &limits, b""));
        assert_eq!(v.message.as_deref(), Some("exited with code 9"));
    }

    #[test]
    fn a_stop_we_caused_wins_over_the_trap_it_produced() {
        let limits = Limits::default();
        let mut e = evidence(End::Returned(Err(Trap::Interrupt.into())), &limits, b"");
        e.stop = Some(Stop::Deadline);
        assert_eq!(classify(e).reason, Reason::Deadline);
        let e = evidence(End::Stopped(Stop::Cancelled), &limits, b"");
        assert_eq!(classify(e).reason, Reason::Cancelled);
        let mut e = evidence(End::Returned(Err(Trap::Interrupt.into())), &limits, b"");
        e.stop = Some(Stop::CpuLimit);
        assert_eq!(classify(e).reason, Reason::CpuLimit);
    }

    #[test]
    fn an_enforced_limit_wins_over_the_trap_it_caused() {
        let limits = Limits::default();
        let mut e = evidence(
            End::Returned(Err(wasmtime::Error::msg("grow refused"))),
            &limits,
            b"",
        );
        e.memory_denied = Some("memory would grow");
        assert_eq!(classify(e).reason, Reason::MemoryLimit);
        let mut e = evidence(
            End::Returned(Err(wasmtime::Error::msg("pipe"))),
            &limits,
            b"",
        );
        e.stdout_overflowed = true;
        assert_eq!(classify(e).reason, Reason::OutputLimit);
    }

    #[test]
    fn traps_have_kinds_and_unknown_errors_before_start_are_ours() {
        let limits = Limits::default();
        let v = classify(evidence(
            End::Returned(Err(Trap::StackOverflow.into())),
            &limits,
            b"",
        ));
        assert_eq!(
            (v.reason, v.trap_kind),
            (Reason::Trap, Some(TrapKind::StackOverflow))
        );
        let v = classify(evidence(
            End::Returned(Err(Trap::OutOfFuel.into())),
            &limits,
            b"",
        ));
        assert_eq!(v.reason, Reason::OutOfFuel);
        let mut e = evidence(
            End::Returned(Err(wasmtime::Error::msg("pool exhausted"))),
            &limits,
            b"",
        );
        e.phase = Phase::Instantiate;
        assert_eq!(classify(e).reason, Reason::HostError);
    }
}
