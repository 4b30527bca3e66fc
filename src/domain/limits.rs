//! `Limits`: the hard budget of one attempt (fuel or CPU time, wall clock, memory, output).
//! Built and validated at the edge (CLI flags, task defaults, job fields); the sandbox trusts
//! it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How an attempt's computation is counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metering {
    /// Fuel is metered (code compiled with fuel checks): deterministic, one unit per wasm
    /// instruction or so, and the guest runs at about half the engine's speed on compute.
    #[default]
    Fuel,
    /// No fuel (code compiled without it): the guest runs at the engine's speed; `cpu_ms`
    /// (and `max_seconds`) bound it.
    Cpu,
}

impl Metering {
    pub fn as_str(self) -> &'static str {
        match self {
            Metering::Fuel => "fuel",
            Metering::Cpu => "cpu",
        }
    }
}

impl std::str::FromStr for Metering {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fuel" => Ok(Metering::Fuel),
            "cpu" => Ok(Metering::Cpu),
            other => Err(format!("metering must be fuel or cpu, got {other:?}")),
        }
    }
}

/// The budget one attempt runs under. Every field is enforced by the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawLimits", into = "RawLimits")]
pub struct Limits {
    /// Fuel units (roughly one per wasm instruction); running out ends as `out_of_fuel`.
    /// Enforced when `metering` is `fuel`.
    pub fuel: u64,
    /// CPU time the guest's thread may spend, in either metering; spending it ends as
    /// `cpu_limit`. `None`: only `max_seconds` bounds it.
    pub cpu_time: Option<Duration>,
    pub metering: Metering,
    /// Wall-clock budget; passing it ends as `deadline`, also when blocked in a host call.
    pub max_time: Duration,
    /// Largest linear memory the guest may grow to, in bytes; more ends as `memory_limit`.
    pub memory_bytes: u64,
    /// Largest stdout (the result); more ends as `output_limit`.
    pub stdout_bytes: u64,
    /// Largest stderr (the log) kept; the excess is dropped and the log marked truncated.
    pub stderr_bytes: u64,
}

/// Some fields of [`Limits`], laid over others: a job's own limits over its task's or queue's
/// defaults, a config file's over the built-in ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsOverride {
    pub fuel: Option<u64>,
    pub cpu_ms: Option<u64>,
    pub metering: Option<Metering>,
    pub max_seconds: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub stdout_bytes: Option<u64>,
    pub stderr_bytes: Option<u64>,
}

impl LimitsOverride {
    /// `base` with the fields given here replaced, validated.
    pub fn over(&self, base: Limits) -> Result<Limits, LimitsError> {
        Ok(Limits::new(
            self.fuel.unwrap_or(base.fuel),
            self.max_seconds.unwrap_or(base.max_seconds()),
            self.memory_bytes.unwrap_or(base.memory_bytes),
            self.stdout_bytes.unwrap_or(base.stdout_bytes),
            self.stderr_bytes.unwrap_or(base.stderr_bytes),
        )?
        .with_cpu_ms(self.cpu_ms.or(base.cpu_ms()))?
        .with_metering(self.metering.unwrap_or(base.metering)))
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl From<Limits> for LimitsOverride {
    fn from(l: Limits) -> Self {
        Self {
            fuel: Some(l.fuel),
            cpu_ms: l.cpu_ms(),
            metering: Some(l.metering),
            max_seconds: Some(l.max_seconds()),
            memory_bytes: Some(l.memory_bytes),
            stdout_bytes: Some(l.stdout_bytes),
            stderr_bytes: Some(l.stderr_bytes),
        }
    }
}

/// Limits that cannot be enforced or make no sense.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LimitsError {
    #[error("fuel must be at least 1, got {0}")]
    Fuel(u64),
    #[error("cpu_ms must be between 1 and {max}, got {0}", max = Limits::MAX_SECONDS as u64 * 1000)]
    CpuMs(u64),
    #[error("max_seconds must be a number between 0.001 and {max}, got {0}", max = Limits::MAX_SECONDS)]
    MaxSeconds(f64),
    #[error("memory must be between 64 KiB and {max} bytes, got {0}", max = Limits::MAX_MEMORY_BYTES)]
    Memory(u64),
    #[error("{0} cap must be between 0 and {max} bytes, got {1}", max = Limits::MAX_OUTPUT_BYTES)]
    Output(&'static str, u64),
}

impl Limits {
    /// The longest wall-clock budget an attempt may ask for (one day).
    pub const MAX_SECONDS: f64 = 86_400.0;
    /// The largest linear memory a wasm32 guest can address.
    pub const MAX_MEMORY_BYTES: u64 = 4 << 30;
    /// The largest stdout or stderr cap.
    pub const MAX_OUTPUT_BYTES: u64 = 256 << 20;
    const WASM_PAGE: u64 = 64 << 10;

    /// Builds limits from their wire form, refusing values that cannot be enforced.
    pub fn new(
        fuel: u64,
        max_seconds: f64,
        memory_bytes: u64,
        stdout_bytes: u64,
        stderr_bytes: u64,
    ) -> Result<Self, LimitsError> {
        if fuel == 0 {
            return Err(LimitsError::Fuel(fuel));
        }
        if !(0.001..=Self::MAX_SECONDS).contains(&max_seconds) {
            return Err(LimitsError::MaxSeconds(max_seconds));
        }
        if !(Self::WASM_PAGE..=Self::MAX_MEMORY_BYTES).contains(&memory_bytes) {
            return Err(LimitsError::Memory(memory_bytes));
        }
        for (name, cap) in [("stdout", stdout_bytes), ("stderr", stderr_bytes)] {
            if cap > Self::MAX_OUTPUT_BYTES {
                return Err(LimitsError::Output(name, cap));
            }
        }
        Ok(Self {
            fuel,
            cpu_time: None,
            metering: Metering::Fuel,
            max_time: Duration::from_secs_f64(max_seconds),
            memory_bytes,
            stdout_bytes,
            stderr_bytes,
        })
    }

    /// The wall-clock budget in seconds, as on the wire.
    pub fn max_seconds(&self) -> f64 {
        self.max_time.as_secs_f64()
    }

    /// These limits with a CPU-time budget of `cpu_ms` milliseconds (`None`: none).
    pub fn with_cpu_ms(self, cpu_ms: Option<u64>) -> Result<Self, LimitsError> {
        let max = Self::MAX_SECONDS as u64 * 1000;
        match cpu_ms {
            Some(ms) if ms == 0 || ms > max => Err(LimitsError::CpuMs(ms)),
            ms => Ok(Self {
                cpu_time: ms.map(Duration::from_millis),
                ..self
            }),
        }
    }

    pub fn with_metering(self, metering: Metering) -> Self {
        Self { metering, ..self }
    }

    /// The CPU-time budget in milliseconds, as on the wire.
    pub fn cpu_ms(&self) -> Option<u64> {
        self.cpu_time
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
    }
}

impl Default for Limits {
    /// 10^10 fuel (metered), no CPU-time budget, 30 s, 256 MiB of memory, 1 MiB each of
    /// stdout and stderr.
    fn default() -> Self {
        Self {
            fuel: 10_000_000_000,
            cpu_time: None,
            metering: Metering::Fuel,
            max_time: Duration::from_secs(30),
            memory_bytes: 256 << 20,
            stdout_bytes: 1 << 20,
            stderr_bytes: 1 << 20,
        }
    }
}

/// The wire form of [`Limits`]: `max_seconds` as a number of seconds, the CPU-time budget
/// as `cpu_ms` (absent: none), `metering` `fuel` when absent.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    fuel: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpu_ms: Option<u64>,
    #[serde(default)]
    metering: Metering,
    max_seconds: f64,
    memory_bytes: u64,
    stdout_bytes: u64,
    stderr_bytes: u64,
}

impl TryFrom<RawLimits> for Limits {
    type Error = LimitsError;

    fn try_from(r: RawLimits) -> Result<Self, Self::Error> {
        Ok(Limits::new(
            r.fuel,
            r.max_seconds,
            r.memory_bytes,
            r.stdout_bytes,
            r.stderr_bytes,
        )?
        .with_cpu_ms(r.cpu_ms)?
        .with_metering(r.metering))
    }
}

impl From<Limits> for RawLimits {
    fn from(l: Limits) -> Self {
        RawLimits {
            fuel: l.fuel,
            cpu_ms: l.cpu_ms(),
            metering: l.metering,
            max_seconds: l.max_seconds(),
            memory_bytes: l.memory_bytes,
            stdout_bytes: l.stdout_bytes,
            stderr_bytes: l.stderr_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_json() {
        let d = Limits::default();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Limits>(&json).unwrap(), d);
        assert!(json.contains("\"max_seconds\":30.0"), "{json}");
    }

    #[test]
    fn a_cpu_budget_and_metering_travel_on_the_wire_and_default_to_none_and_fuel() {
        let cpu = Limits::default()
            .with_cpu_ms(Some(1500))
            .unwrap()
            .with_metering(Metering::Cpu);
        let json = serde_json::to_string(&cpu).unwrap();
        assert!(json.contains("\"cpu_ms\":1500") && json.contains("\"metering\":\"cpu\""));
        assert_eq!(serde_json::from_str::<Limits>(&json).unwrap(), cpu);
        let old = r#"{"fuel":5,"max_seconds":1.0,"memory_bytes":65536,"stdout_bytes":0,"stderr_bytes":0}"#;
        let read: Limits = serde_json::from_str(old).unwrap();
        assert_eq!((read.cpu_time, read.metering), (None, Metering::Fuel));
        assert_eq!(
            Limits::default().with_cpu_ms(Some(0)),
            Err(LimitsError::CpuMs(0))
        );
        let over = LimitsOverride {
            cpu_ms: Some(20),
            metering: Some(Metering::Cpu),
            ..LimitsOverride::default()
        };
        let laid = over.over(Limits::default()).unwrap();
        assert_eq!((laid.cpu_ms(), laid.metering), (Some(20), Metering::Cpu));
        assert_eq!(LimitsOverride::default().over(laid).unwrap(), laid);
    }

    #[test]
    fn refuses_what_cannot_be_enforced() {
        assert_eq!(
            Limits::new(0, 1.0, 1 << 20, 0, 0),
            Err(LimitsError::Fuel(0))
        );
        assert_eq!(
            Limits::new(1, 0.0, 1 << 20, 0, 0),
            Err(LimitsError::MaxSeconds(0.0))
        );
        assert!(matches!(
            Limits::new(1, f64::NAN, 1 << 20, 0, 0),
            Err(LimitsError::MaxSeconds(_))
        ));
        assert_eq!(
            Limits::new(1, 1.0, 1024, 0, 0),
            Err(LimitsError::Memory(1024))
        );
        assert_eq!(
            Limits::new(1, 1.0, 8 << 30, 0, 0),
            Err(LimitsError::Memory(8 << 30))
        );
        assert_eq!(
            Limits::new(1, 1.0, 1 << 20, 1 << 30, 0),
            Err(LimitsError::Output("stdout", 1 << 30))
        );
    }
}
