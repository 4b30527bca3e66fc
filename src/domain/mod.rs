//! Plain data and pure rules shared by every layer: module digests, attempt limits, the
//! reasons an attempt ends with, job ids, states and the moves between them, the retry
//! policy, and the records of tasks, queues, schedules and tokens. Nothing here does IO or
//! knows wasmtime.

mod bundle;
mod clock;
mod digest;
mod job;
mod lifecycle;
mod limits;
mod names;
mod queue;
mod reason;
mod record;
mod replay;
mod retry;
mod schedule;
mod task;
mod token;
pub mod whole;

pub use bundle::{BUNDLE_VERSION, Bundle, BundleError, BundleHeader, BundleResult, ModuleSection};
pub use clock::{Clock, ManualClock, SystemClock};
pub use digest::{DigestError, ModuleDigest};
pub use job::{JobId, JobIdError, JobState};
pub use lifecycle::{
    CancelOutcome, EndRules, Ending, Event, Finish, JobError, Lease, MOVES, Move, Refused,
    after_attempt,
};
pub use limits::{Limits, LimitsError, LimitsOverride, Metering};
pub use names::{NameError, QueueName, Role, ScheduleName, TaskName, WorkerName};
pub use queue::{KeyPosition, QueueConfig, QueuePosition, QueueStats};
pub use reason::{Reason, TrapKind};
pub use record::{AttemptRecord, Job, JobFilter, NewJob, Start, Timestamp};
pub use replay::{AttemptReplay, MAX_CLOCK_READS, Recording, Seed, output_digest};
pub use retry::{Decision, RetryPolicy};
pub use schedule::{
    CatchUp, FirePlan, JobTemplate, MAX_CATCH_UP, ON_TIME, Overlap, ScheduleRecord, Spec, SpecDef,
    SpecError, describe_utc, fire_key, plan_fires,
};
pub use task::{TaskDefaults, TaskRecord, TaskVersion};
pub use token::{SessionRecord, TokenRecord};
