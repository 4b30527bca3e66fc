//! The state machine's moves as SQL, for every backend: the guard of an event's update (the
//! states it may leave, as comparisons, never an `IN` list) and the state it moves a job to,
//! both read from [`crate::domain::MOVES`]. Statements that run per job build their text from
//! these once ([`Sql`]).

use crate::domain::{Event, JobState};

/// `state = 'a'`, or `(state = 'a' OR state = 'b')`: a job in one of the states `event`
/// leaves, spelled as the partial indexes on those states spell their conditions.
pub(crate) fn guard(event: Event) -> String {
    let each: Vec<String> = event
        .sources()
        .map(|s| format!("state = '{}'", s.as_str()))
        .collect();
    match each.as_slice() {
        [one] => one.clone(),
        _ => format!("({})", each.join(" OR ")),
    }
}

/// The state `event` moves a job to, the same from every state it leaves.
pub(crate) fn target(event: Event) -> &'static str {
    let to = event
        .sources()
        .filter_map(|from| event.apply(Some(from)).ok().flatten())
        .next();
    to.map_or("", JobState::as_str)
}

/// A statement's text made once, the first time it is used.
pub(crate) struct Sql(std::sync::OnceLock<String>, fn() -> String);

impl Sql {
    pub(crate) const fn new(make: fn() -> String) -> Self {
        Self(std::sync::OnceLock::new(), make)
    }

    pub(crate) fn get(&self) -> &str {
        self.0.get_or_init(self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_and_targets_come_from_the_table() {
        assert_eq!(guard(Event::Release), "state = 'held'");
        assert_eq!(
            guard(Event::Retry),
            "(state = 'failed' OR state = 'cancelled')"
        );
        assert_eq!(target(Event::Retry), "queued");
        assert_eq!(target(Event::BackOff), "scheduled");
        for event in Event::ALL {
            let sources: Vec<_> = event.sources().collect();
            if !sources.is_empty() && event != Event::Delete && event != Event::Clean {
                assert!(!target(event).is_empty(), "{event} moves jobs somewhere");
            }
        }
    }
}
