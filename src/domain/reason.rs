//! Why an attempt ended: exactly one [`Reason`] per attempt, and for traps the [`TrapKind`].
//! The retry policy decides from these alone; the sandbox is the only producer of most of them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The one reason an attempt ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// `_start` returned or the guest called `proc_exit(0)`.
    Completed,
    /// The guest exited with a code other than 0 and 75: "this job failed".
    GuestError,
    /// The guest exited with 75 (EX_TEMPFAIL): "try me again later".
    RetryableError,
    /// The guest trapped (see [`TrapKind`]).
    Trap,
    /// The fuel budget ran out.
    OutOfFuel,
    /// The CPU-time budget (`cpu_ms`) was spent.
    CpuLimit,
    /// The wall-clock budget (`max_seconds`) passed.
    Deadline,
    /// The guest tried to grow its memory (or tables) past the limit.
    MemoryLimit,
    /// The guest wrote more to stdout than the cap.
    OutputLimit,
    /// Someone cancelled the attempt while it ran.
    Cancelled,
    /// The worker running the attempt died or its lease expired.
    LeaseLost,
    /// A fault of the host, never of the guest.
    HostError,
}

impl Reason {
    /// Every reason, in documentation order.
    pub const ALL: [Reason; 12] = [
        Reason::Completed,
        Reason::GuestError,
        Reason::RetryableError,
        Reason::Trap,
        Reason::OutOfFuel,
        Reason::CpuLimit,
        Reason::Deadline,
        Reason::MemoryLimit,
        Reason::OutputLimit,
        Reason::Cancelled,
        Reason::LeaseLost,
        Reason::HostError,
    ];

    /// The snake_case name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Completed => "completed",
            Reason::GuestError => "guest_error",
            Reason::RetryableError => "retryable_error",
            Reason::Trap => "trap",
            Reason::OutOfFuel => "out_of_fuel",
            Reason::CpuLimit => "cpu_limit",
            Reason::Deadline => "deadline",
            Reason::MemoryLimit => "memory_limit",
            Reason::OutputLimit => "output_limit",
            Reason::Cancelled => "cancelled",
            Reason::LeaseLost => "lease_lost",
            Reason::HostError => "host_error",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reason {
    type Err = String;

    /// A reason by its snake_case name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("no such reason: {s:?}"))
    }
}

/// What kind of trap ended an attempt whose reason is [`Reason::Trap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrapKind {
    /// `unreachable` executed (also how Rust panics and aborts end).
    Unreachable,
    /// The wasm call stack was exhausted.
    StackOverflow,
    /// A load or store outside linear memory.
    OutOfBounds,
    /// Integer division or remainder by zero.
    DivideByZero,
    /// Signed integer overflow in division.
    IntegerOverflow,
    /// A float that does not fit the integer it was converted to.
    BadConversion,
    /// An indirect call through a null, out-of-bounds or mistyped table entry.
    BadIndirectCall,
    /// Any other trap wasmtime reports.
    Other,
}

impl TrapKind {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TrapKind::Unreachable => "unreachable",
            TrapKind::StackOverflow => "stack_overflow",
            TrapKind::OutOfBounds => "out_of_bounds",
            TrapKind::DivideByZero => "divide_by_zero",
            TrapKind::IntegerOverflow => "integer_overflow",
            TrapKind::BadConversion => "bad_conversion",
            TrapKind::BadIndirectCall => "bad_indirect_call",
            TrapKind::Other => "other",
        }
    }
}

impl fmt::Display for TrapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for r in Reason::ALL {
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
            assert_eq!(r.as_str().parse(), Ok(r));
        }
        assert!("sleepy".parse::<Reason>().is_err());
        assert_eq!(
            serde_json::to_string(&TrapKind::StackOverflow).unwrap(),
            "\"stack_overflow\""
        );
    }
}
