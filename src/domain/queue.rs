//! Queues: their settings (concurrency, default limits, caps), and what the store can tell
//! about one (pause state, job counts per state, where a job stands in it). Plain data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{JobState, Limits, QueueName};

/// A queue's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueConfig {
    pub name: QueueName,
    /// Jobs run at once; 1 runs them strictly one at a time in claim order.
    pub concurrency: u32,
    /// Jobs with one `concurrency_key` run at once (at least 1): the context guard.
    #[serde(default = "one")]
    pub key_concurrency: u32,
    /// Limits of jobs that give none.
    pub default_limits: Limits,
    /// The most any job (or escalation) may ask for.
    pub caps: Limits,
}

impl QueueConfig {
    /// A queue nobody configured: concurrency 5, default limits, generous caps.
    pub fn with_defaults(name: QueueName) -> Self {
        Self {
            name,
            concurrency: 5,
            key_concurrency: 1,
            default_limits: Limits::default(),
            caps: Limits {
                fuel: 1_000_000_000_000,
                cpu_time: None,
                metering: crate::domain::Metering::Fuel,
                max_time: std::time::Duration::from_secs(3600),
                memory_bytes: Limits::MAX_MEMORY_BYTES,
                stdout_bytes: 64 << 20,
                stderr_bytes: 64 << 20,
            },
        }
    }
}

/// A queue's settings, pause state and job counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStats {
    pub config: QueueConfig,
    pub paused: bool,
    pub counts: BTreeMap<JobState, u64>,
}

/// Why a job is where it is, as far as the store can tell.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuePosition {
    pub paused: bool,
    pub running: u64,
    pub concurrency: u32,
    /// Queued jobs of the same queue that are claimed before this one.
    pub ahead: u64,
    /// The job's concurrency key, when it has one: how many jobs with it run, and whether a
    /// claim found the key at its limit and set the job aside until one of them ends.
    pub key: Option<KeyPosition>,
}

/// Where a job with a `concurrency_key` stands behind its context guard.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyPosition {
    pub key: String,
    pub running: u64,
    pub limit: u32,
    pub guarded: bool,
}

fn one() -> u32 {
    1
}
