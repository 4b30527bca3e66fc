//! Validated names: `TaskName`, `QueueName`, `ScheduleName` and `WorkerName`. Lowercase letters, digits, `-`, `_` and `.`,
//! starting with a letter or digit, at most 64 characters; they appear in URLs, metrics labels
//! and file names, so nothing else is allowed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A name that breaks the naming rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid {kind} name {name:?}: use 1 to 64 of a-z 0-9 - _ . starting with a letter or digit"
)]
pub struct NameError {
    pub kind: &'static str,
    pub name: String,
}

fn check(kind: &'static str, s: &str) -> Result<(), NameError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(NameError {
            kind,
            name: s.to_owned(),
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                check($kind, s).map(|()| Self(s.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The name a task module is registered under.
    TaskName,
    "task"
);
name_type!(
    /// The name of a queue.
    QueueName,
    "queue"
);
name_type!(
    /// A schedule's name; its fires' unique keys are `schedule:<name>:<fire time>`.
    ScheduleName,
    "schedule"
);

name_type!(
    /// A worker's name, in leases, attempt records and the list of workers.
    WorkerName,
    "worker"
);

impl QueueName {
    /// The queue jobs go to when none is named.
    pub fn default_queue() -> Self {
        QueueName("default".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for good in ["echo", "resize-image", "v2.convert_pdf", "0day"] {
            assert!(good.parse::<TaskName>().is_ok(), "{good}");
        }
        for bad in ["", "Echo", "-x", "a/b", "a b", &"x".repeat(65)] {
            let e = bad.parse::<QueueName>().unwrap_err();
            assert_eq!(e.kind, "queue");
        }
    }
}

/// What a bearer token may do. `admin` may do everything; `submit` submits and manages jobs;
/// `worker` takes leases and fetches modules; `read` only reads. Every role may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Submit,
    Worker,
    Read,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Submit, Role::Worker, Role::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Submit => "submit",
            Role::Worker => "worker",
            Role::Read => "read",
        }
    }

    /// Whether a token of this role may do what `needed` stands for.
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed || needed == Role::Read
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: expected admin, submit, worker or read"))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod role_tests {
    use super::*;

    #[test]
    fn admin_does_everything_and_everyone_reads() {
        assert!(Role::Admin.allows(Role::Worker));
        assert!(Role::Submit.allows(Role::Read));
        assert!(!Role::Submit.allows(Role::Admin));
        assert!(!Role::Submit.allows(Role::Worker));
        assert!(!Role::Read.allows(Role::Submit));
        assert_eq!("worker".parse::<Role>(), Ok(Role::Worker));
    }
}
