//! The state machine's moves as SQL: the guard of an event's update (the states it may leave,
//! as comparisons, never an `IN` list) and the state it moves a job to, both read from
//! [`crate::domain::MOVES`]. Statements that run per job build their text from these once.

use crate::domain::{Event, JobState};

/// `state = 'a'`, or `(state = 'a' OR state = 'b')`: a job in one of the states `event`
/// leaves, spelled as the partial indexes on those states spell their conditions.
pub(super) fn guard(event: Event) -> String {
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
pub(super) fn target(event: Event) -> &'static str {
    let to = event
        .sources()
        .filter_map(|from| event.apply(Some(from)).ok().flatten())
        .next();
    to.map_or("", JobState::as_str)
}

/// `event`'s move of one job, `id = ?1`, guarded by its states: `UPDATE jobs SET state =
/// '<target>'<set> WHERE id = ?1 AND <guard><and>`.
pub(super) fn update(event: Event, set: &str, and: &str) -> String {
    format!(
        "UPDATE jobs SET state = '{}'{set} WHERE id = ?1 AND {}{and}",
        target(event),
        guard(event)
    )
}

/// The end of a running job's attempt, `id = ?1`, under its lease `?2`: `event`'s move from
/// `running`, with `set` (starting with `, `), and the lease cleared.
pub(super) fn end_attempt(event: Event, set: &str) -> String {
    let running = JobState::Running;
    let to = match event.apply(Some(running)) {
        Ok(Some(to)) => to.as_str(),
        _ => panic!("{event} does not end an attempt"),
    };
    format!(
        "UPDATE jobs SET state = '{to}'{set}, lease = NULL, lease_expires = NULL, \
         cancel_requested = 0 WHERE id = ?1 AND state = '{}' AND lease = ?2",
        running.as_str()
    )
}

/// A statement's text made once, the first time it is used.
pub(super) struct Sql(std::sync::OnceLock<String>, fn() -> String);

impl Sql {
    pub(super) const fn new(make: fn() -> String) -> Self {
        Self(std::sync::OnceLock::new(), make)
    }

    pub(super) fn get(&self) -> &str {
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
        assert_eq!(
            update(Event::Claim, ", worker = ?2", ""),
            "UPDATE jobs SET state = 'running', worker = ?2 WHERE id = ?1 AND state = 'queued'"
        );
        for event in Event::ALL {
            let sources: Vec<_> = event.sources().collect();
            if !sources.is_empty() && event != Event::Delete && event != Event::Clean {
                assert!(!target(event).is_empty(), "{event} moves jobs somewhere");
            }
        }
    }
}
