//! Plain data and pure rules shared by every layer: module digests, attempt limits, the
//! reasons an attempt ends with, job ids and states, and the retry policy. Nothing here does IO or knows wasmtime.

mod clock;
mod digest;
mod job;
mod limits;
mod names;
mod reason;
mod record;
mod retry;
mod schedule;

pub use clock::{Clock, ManualClock, SystemClock};
pub use digest::{DigestError, ModuleDigest};
pub use job::{JobId, JobIdError, JobState};
pub use limits::{Limits, LimitsError, LimitsOverride};
pub use names::{NameError, QueueName, Role, ScheduleName, TaskName};
pub use reason::{Reason, TrapKind};
pub use record::{AttemptRecord, Job, JobError, NewJob, Timestamp};
pub use retry::{Decision, RetryPolicy};
pub use schedule::{
    CatchUp, FirePlan, JobTemplate, MAX_CATCH_UP, ON_TIME, Overlap, Spec, SpecDef, SpecError,
    describe_utc, fire_key, plan_fires,
};
