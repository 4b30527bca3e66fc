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

/// What kind of trap ended an attempt whose reason is [`Reason::Trap`]: one kind for each
/// trap wasmtime can raise in a core module with the features the engine has on, and for
/// what a WASI call does with a bad pointer. Traps of features it has off (GC, threads,
/// components, stack switching) are `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrapKind {
    /// `unreachable` executed (also how Rust panics and aborts end).
    Unreachable,
    /// The wasm call stack was exhausted.
    StackOverflow,
    /// A load or store outside linear memory, or a WASI call given memory outside it.
    OutOfBounds,
    /// A WASI call given a pointer not aligned for what it points to.
    UnalignedPointer,
    /// An atomic access at an address not aligned to its size.
    UnalignedAtomic,
    /// An indirect call or table access past the end of the table.
    TableOutOfBounds,
    /// An indirect call through a table entry that was never set.
    IndirectCallToNull,
    /// An indirect call to a function whose type is not the one the call expects (stored
    /// before as `bad_indirect_call`, which also covered calls to null).
    #[serde(alias = "bad_indirect_call")]
    BadSignature,
    /// A call through, or a use of, a null reference.
    NullReference,
    /// Integer division or remainder by zero.
    DivideByZero,
    /// Signed integer overflow in division (`i32::MIN / -1`), or a float too large for the
    /// integer it was truncated to.
    IntegerOverflow,
    /// A NaN truncated to an integer.
    BadConversion,
    /// Any other trap wasmtime reports.
    Other,
}

impl TrapKind {
    /// Every kind, in documentation order.
    pub const ALL: [TrapKind; 13] = [
        TrapKind::Unreachable,
        TrapKind::StackOverflow,
        TrapKind::OutOfBounds,
        TrapKind::UnalignedPointer,
        TrapKind::UnalignedAtomic,
        TrapKind::TableOutOfBounds,
        TrapKind::IndirectCallToNull,
        TrapKind::BadSignature,
        TrapKind::NullReference,
        TrapKind::DivideByZero,
        TrapKind::IntegerOverflow,
        TrapKind::BadConversion,
        TrapKind::Other,
    ];

    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TrapKind::Unreachable => "unreachable",
            TrapKind::StackOverflow => "stack_overflow",
            TrapKind::OutOfBounds => "out_of_bounds",
            TrapKind::UnalignedPointer => "unaligned_pointer",
            TrapKind::UnalignedAtomic => "unaligned_atomic",
            TrapKind::TableOutOfBounds => "table_out_of_bounds",
            TrapKind::IndirectCallToNull => "indirect_call_to_null",
            TrapKind::BadSignature => "bad_signature",
            TrapKind::NullReference => "null_reference",
            TrapKind::DivideByZero => "divide_by_zero",
            TrapKind::IntegerOverflow => "integer_overflow",
            TrapKind::BadConversion => "bad_conversion",
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
        for k in TrapKind::ALL {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        let old: TrapKind = serde_json::from_str("\"bad_indirect_call\"").unwrap();
        assert_eq!(
            old,
            TrapKind::BadSignature,
            "rows stored before the split still read"
        );
    }
}
