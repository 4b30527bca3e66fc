//! Registered tasks: a name that points at the newest of its module versions, with the
//! defaults it gives its jobs. Plain data; the store keeps it, the service fills it in.

use serde::{Deserialize, Serialize};

use super::{Limits, ModuleDigest, QueueName, RetryPolicy, TaskName, Timestamp};

/// Defaults a task gives its jobs (each overridable per job within the queue's caps).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskDefaults {
    pub queue: Option<QueueName>,
    pub limits: Option<Limits>,
    pub retry: Option<RetryPolicy>,
    pub env: Vec<(String, String)>,
}

/// A registered task: its name points at the newest version.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub name: TaskName,
    pub digest: ModuleDigest,
    pub defaults: TaskDefaults,
    /// Every version ever registered, newest first.
    pub versions: Vec<TaskVersion>,
    pub updated_at: Timestamp,
}

/// One registered module of a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskVersion {
    pub digest: ModuleDigest,
    pub size_bytes: u64,
    pub created_at: Timestamp,
}
