//! The store contract, written once and run against every backend (SQLite here; PostgreSQL
//! runs the same checks when it lands). `conformance!` makes one test per check and backend,
//! so a failure names its check and the others still run; each check gets a fresh, empty
//! store.

use std::sync::Arc;

use remotask::domain::{
    AttemptRecord, AttemptReplay, CancelOutcome, CatchUp, Finish, JobError, JobFilter, JobId,
    JobState, JobTemplate, Lease, Limits, ManualClock, ModuleDigest, NewJob, Overlap, QueueConfig,
    QueueName, Reason, Recording, RetryPolicy, Role, ScheduleName, ScheduleRecord, Seed,
    SessionRecord, SpecDef, Start, TaskDefaults, TaskName, Timestamp, TokenRecord,
};
use remotask::store::{
    AttemptEnd, Claimed, Firing, Inserted, PgStore, Promoted, Revoked, SqliteStore, StandingClaim,
    Store, StoreError,
};

mod catalog;
mod claims;
mod ends;
mod jobs;
mod moves;
mod postgres;
mod sqlite;

const T0: Timestamp = Timestamp(1_700_000_000_000);

/// One test per check for a backend: `conformance!(name, || async { (store, guard) })`, where
/// `guard` lives as long as the check (a temporary directory, a database).
macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        conformance!(@tests $backend, $make, [
            claims::claims_follow_priority_then_run_at_then_id,
            claims::claims_respect_concurrency_and_pause,
            claims::a_parked_claim_runs_with_the_next_submit_to_its_queues,
            claims::scheduled_jobs_become_claimable_when_due,
            claims::a_claimed_job_is_the_job_as_stored,
            claims::lease_tokens_only_grow,
            claims::context_guards_hold_jobs_with_a_busy_key,
            ends::a_stale_lease_cannot_write,
            ends::many_attempts_end_in_one_write_each_under_its_own_lease,
            ends::a_large_batch_of_completions_writes_each_under_its_own_lease,
            ends::an_attempt_keeps_what_replays_it,
            ends::every_attempt_of_a_history_reads_back_whole,
            ends::expired_leases_are_every_lease_past_its_expiry_in_id_order,
            jobs::a_large_submit_keeps_order_and_unique_keys,
            jobs::jobs_are_listed_by_state,
            jobs::jobs_are_listed_by_task_and_context,
            jobs::unique_keys_hold_while_live,
            jobs::cancel_release_retry_delete_follow_the_state_machine,
            jobs::queue_counts_follow_every_transition,
            jobs::live_contexts_count_live_jobs_a_page_at_a_time,
            jobs::ended_jobs_are_counted_per_minute,
            jobs::a_failed_write_leaves_nothing_and_spares_the_writes_beside_it,
            moves::every_move_the_table_allows_is_made_and_every_other_is_refused,
            catalog::task_versions_and_defaults,
            catalog::tokens_are_found_by_hash_until_revoked,
            catalog::the_last_live_admin_token_is_never_revoked,
            catalog::sessions_last_until_they_expire_end_or_lose_their_token,
            catalog::a_schedule_fire_is_applied_once,
        ]);
    };
    (@tests $backend:ident, $make:expr, [$($module:ident :: $check:ident),* $(,)?]) => {
        mod $backend {
            #[allow(unused_imports, reason = "for the expression that makes a store")]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (store, _guard) = ($make)().await;
                    super::$module::$check(store).await;
                }
            )*
        }
    };
}

conformance!(sqlite_conforms, || async {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("jobs.db")).unwrap();
    (store, dir)
});

conformance!(postgres_conforms, || async {
    let url = crate::postgres::postgres().database();
    (PgStore::connect(&url).await.unwrap(), url)
});

pub(super) fn new_job(queue: &str, priority: i32, run_at: Timestamp) -> NewJob {
    NewJob {
        id: JobId::generate(),
        task: "echo".parse().unwrap(),
        digest: ModuleDigest::of(b"module"),
        queue: queue.parse().unwrap(),
        input: b"{}".to_vec(),
        args: vec![],
        env: vec![],
        priority,
        start: Start::At(run_at),
        unique_key: None,
        context: None,
        concurrency_key: None,
        limits: Limits::default(),
        retry: RetryPolicy::default(),
        submitter: None,
        created_at: T0,
    }
}

pub(super) fn attempt(number: u32, reason: Reason) -> AttemptRecord {
    AttemptRecord {
        number,
        reason,
        trap_kind: None,
        exit_code: None,
        message: None,
        stderr: b"log".to_vec(),
        stderr_truncated: false,
        receipt: serde_json::json!({"fuel_consumed": 1}),
        worker: "w".into(),
        started_at: T0,
        finished_at: T0,
        replay: None,
    }
}

/// The end of `claimed`'s first attempt: completed, with its record.
pub(super) fn completed(claimed: &Claimed) -> AttemptEnd {
    AttemptEnd {
        id: claimed.job.id,
        queue: claimed.job.queue.clone(),
        lease: claimed.lease,
        attempt: Some(attempt(1, Reason::Completed)),
        finish: Finish::Completed { output: vec![] },
    }
}

/// Stores `jobs` in queue `q` (concurrency 10, or `max` if more) and claims up to `max` of
/// them at `T0`.
pub(super) async fn insert_and_claim(
    store: &impl Store,
    jobs: Vec<NewJob>,
    max: u32,
) -> Vec<Claimed> {
    store.insert_jobs(jobs).await.unwrap();
    store
        .put_queue(&QueueConfig {
            concurrency: max.max(10),
            ..QueueConfig::with_defaults("q".parse().unwrap())
        })
        .await
        .unwrap();
    store
        .claim(&"q".parse().unwrap(), "w", max, 1000, T0)
        .await
        .unwrap()
        .jobs
}

pub(super) async fn set_concurrency(store: &impl Store, q: &QueueName, concurrency: u32) {
    store
        .put_queue(&QueueConfig {
            concurrency,
            ..QueueConfig::with_defaults(q.clone())
        })
        .await
        .unwrap();
}

/// How many jobs a claim of up to `max` took, and whether the queue's concurrency stopped it.
pub(super) async fn claim(store: &impl Store, q: &QueueName, max: u32) -> (usize, bool) {
    let claims = store.claim(q, "w", max, 1000, T0).await.unwrap();
    (claims.jobs.len(), claims.at_concurrency)
}

/// Asserts that each queue's stats count exactly the jobs stored in each state.
pub(super) async fn assert_counts_match(store: &impl Store, step: &str) {
    let all = JobFilter {
        limit: 1_000,
        ..JobFilter::default()
    };
    let jobs = store.list_jobs(&all).await.unwrap();
    let queues = store.list_queues().await.unwrap();
    assert!(!queues.is_empty(), "{step}");
    for stats in &queues {
        for state in JobState::ALL {
            let stored = jobs
                .iter()
                .filter(|j| j.queue == stats.config.name && j.state == state)
                .count() as u64;
            assert_eq!(
                stats.counts.get(&state).copied(),
                Some(stored),
                "{step}: {} {state:?}",
                stats.config.name
            );
        }
        let one = store.get_queue(&stats.config.name).await.unwrap().unwrap();
        assert_eq!(&one, stats, "{step}");
    }
}
