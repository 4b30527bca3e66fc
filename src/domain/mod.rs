//! Plain data and pure rules shared by every layer: module digests, attempt limits and the
//! reasons an attempt ends with. Nothing here does IO or knows wasmtime.

mod digest;
mod limits;
mod reason;

pub use digest::{DigestError, ModuleDigest};
pub use limits::{Limits, LimitsError};
pub use reason::{Reason, TrapKind};
