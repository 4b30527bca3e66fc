//! Plain data and pure rules shared by every layer: module digests, attempt limits, the
//! reasons an attempt ends with, job ids and states, and the retry policy. Nothing here does IO or knows wasmtime.

mod digest;
mod job;
mod limits;
mod reason;
mod retry;

pub use digest::{DigestError, ModuleDigest};
pub use job::{JobId, JobIdError, JobState};
pub use limits::{Limits, LimitsError};
pub use reason::{Reason, TrapKind};
pub use retry::{Decision, RetryPolicy};
