//! Unit tests of the PostgreSQL backend's parts that need no database: the SQL of its moves
//! and functions against the state machine's table. The contract is tested against a real
//! server in `tests/all/store_conformance/`.

use super::jobs::INSERT;
use super::leases::FINISH;
use super::migrations::MIGRATIONS;
use crate::domain::Event;
use crate::store::guards::guard;

#[test]
fn the_claim_function_takes_queued_jobs_and_makes_due_ones_queued_as_the_table_says() {
    // The claim function as the newest migration that makes it.
    let functions = MIGRATIONS
        .iter()
        .rev()
        .find(|m| m.contains("CREATE FUNCTION remotask_claim"))
        .unwrap();
    assert!(
        functions.contains(&format!("j.{}", guard(Event::Claim))),
        "claim guard"
    );
    assert!(functions.contains("SET state = 'running'"));
    assert!(functions.contains(&format!("j.{}", guard(Event::Due))));
    assert!(functions.contains("UPDATE jobs SET state = 'queued'"));
    assert!(FINISH.contains("j.state = 'running' AND j.lease = v.token"));
    assert!(INSERT.contains("state = 'held' OR state = 'scheduled' OR state = 'queued'"));
}
