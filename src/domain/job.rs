//! Jobs: time-ordered unique ids and the states a job is in. Which state follows which, and
//! on what event, is written down once, in `lifecycle.rs` (the diagram is in
//! `ARCHITECTURE.md`, checked against that table by a test).

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A job id: 48 bits of milliseconds since the Unix epoch, then 80 bits that make it unique
/// (a random per-process prefix and a counter), shown as 26 Crockford base32 characters.
/// Ids sort by creation time, as strings and as numbers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(u128);

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A string that is not a job id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid job id {0:?}: expected 26 Crockford base32 characters")]
pub struct JobIdError(pub String);

impl JobId {
    /// A fresh id, greater than every id this process made before.
    pub fn generate() -> Self {
        static LAST: Mutex<u128> = Mutex::new(0);
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
            & ((1 << 48) - 1);
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        let candidate = (ms << 80) | (process_prefix() << 48);
        let next = if candidate > *last {
            candidate
        } else {
            *last + 1
        };
        *last = next;
        JobId(next)
    }

    pub fn from_u128(v: u128) -> Self {
        JobId(v)
    }

    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// Milliseconds since the Unix epoch when the id was made.
    pub fn timestamp_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }
}

/// 32 random bits per process, so two processes making ids in the same millisecond differ.
fn process_prefix() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    static PREFIX: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    *PREFIX.get_or_init(|| u128::from(RandomState::new().hash_one(std::process::id()) as u32))
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 26];
        for (i, c) in out.iter_mut().enumerate() {
            let shift = 125 - 5 * i as i32;
            let bits = if shift >= 0 {
                (self.0 >> shift) & 31
            } else {
                (self.0 << -shift) & 31
            };
            *c = CROCKFORD[bits as usize];
        }
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

impl FromStr for JobId {
    type Err = JobIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || JobIdError(s.to_owned());
        if s.len() != 26 {
            return Err(err());
        }
        let mut v: u128 = 0;
        for (i, b) in s.bytes().enumerate() {
            let digit = CROCKFORD
                .iter()
                .position(|c| *c == b.to_ascii_uppercase())
                .ok_or_else(err)? as u128;
            if i == 0 && digit > 7 {
                return Err(err());
            }
            v = (v << 5) | digit;
        }
        Ok(JobId(v))
    }
}

impl Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Submitted to start later; only an explicit `release` (or `cancel`) moves it on.
    Held,
    /// Waiting for `run_at` (a delayed job or a retry's backoff); the scheduler moves it to
    /// `queued` when due; `cancel` moves it to `cancelled`. Shown as "delayed".
    Scheduled,
    /// Ready to run; a worker's claim moves it to `running`; `cancel` to `cancelled`.
    Queued,
    /// Claimed by a worker under a lease. Only the lease holder reports its end (`completed`,
    /// `failed`, or `scheduled` for a retry); `cancel` interrupts it; the rescuer requeues it
    /// when the lease expires.
    Running,
    /// Terminal: the last attempt completed. Only `delete`/`clean` remove it.
    Completed,
    /// Terminal: the last attempt failed and the policy gave up. `retry` requeues it by hand.
    Failed,
    /// Terminal: cancelled before or while running. `retry` requeues it by hand.
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Held,
        JobState::Scheduled,
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Held => "held",
            JobState::Scheduled => "scheduled",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// No further transition happens without someone asking (retry, delete, clean).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    /// Counts for unique keys: a live job blocks a second one with the same key.
    pub fn is_live(self) -> bool {
        !self.is_terminal()
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;

    /// A state by its name, or by the name the older task service gave it: `delayed`
    /// (scheduled), `processing` (running), `error` (failed); `queued`, `completed` and
    /// `cancelled` are the same in both.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let alias = match s {
            "delayed" => Some(JobState::Scheduled),
            "processing" => Some(JobState::Running),
            "error" => Some(JobState::Failed),
            _ => None,
        };
        alias
            .or_else(|| JobState::ALL.into_iter().find(|st| st.as_str() == s))
            .ok_or_else(|| {
                format!(
                    "unknown job state {s:?}: expected one of held, scheduled, queued, running, \
                     completed, failed, cancelled (or the older delayed, processing, error)"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_older_service_s_status_names_are_read_as_states() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse(), Ok(state));
        }
        let older = [
            ("queued", JobState::Queued),
            ("processing", JobState::Running),
            ("cancelled", JobState::Cancelled),
            ("error", JobState::Failed),
            ("completed", JobState::Completed),
            ("delayed", JobState::Scheduled),
        ];
        for (name, state) in older {
            assert_eq!(name.parse(), Ok(state), "{name}");
        }
        assert!(
            "done"
                .parse::<JobState>()
                .unwrap_err()
                .contains("processing")
        );
    }

    #[test]
    fn ids_are_unique_increasing_and_round_trip() {
        let ids: Vec<JobId> = (0..10_000).map(|_| JobId::generate()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(
                pair[0].to_string() < pair[1].to_string(),
                "string order follows id order"
            );
        }
        for id in &ids[..100] {
            assert_eq!(id.to_string().parse::<JobId>().unwrap(), *id);
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now_ms - ids[0].timestamp_ms() < 10_000);
    }

    #[test]
    fn bad_ids_are_refused() {
        for bad in [
            "",
            "short",
            "ZZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "0000000000000000000000000U",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn states_parse_with_the_delayed_alias() {
        assert_eq!("delayed".parse::<JobState>(), Ok(JobState::Scheduled));
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(s));
            assert_eq!(s.is_terminal(), !s.is_live());
        }
    }
}
