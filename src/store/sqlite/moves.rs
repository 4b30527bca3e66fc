//! The SQLite statements of moves that are built from the state machine's table: one job's
//! move guarded by its states, and the end of a running job's attempt under its lease. `?1`
//! is the job's id, `?2` (for an end) its lease.

use crate::domain::{Event, JobState};
use crate::store::guards::{guard, target};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_is_its_target_and_its_guard() {
        assert_eq!(
            update(Event::Claim, ", worker = ?2", ""),
            "UPDATE jobs SET state = 'running', worker = ?2 WHERE id = ?1 AND state = 'queued'"
        );
        assert!(end_attempt(Event::Complete, "").contains("state = 'running' AND lease = ?2"));
    }
}
