//! The rescuer: a job whose lease expired (its worker died or stalled) is ended as a
//! `lease_lost` attempt and requeued after the requeue delay, or failed when its retries are
//! spent. It goes through the same guarded `finish` as any attempt, so it cannot overwrite a
//! worker that reported in the meantime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::WorkerConfig;
use crate::domain::{AttemptRecord, EndRules, Ending, JobId, Reason, Timestamp, after_attempt};
use crate::service::Service;
use crate::store::StoreResult;

pub(super) async fn rescuer(service: Service, config: WorkerConfig, stopping: Arc<AtomicBool>) {
    while !stopping.load(Ordering::SeqCst) {
        let now = service.now();
        let _ = rescue_expired(&service, now, config.requeue_delay).await;
        tokio::time::sleep(config.rescue_interval).await;
    }
}

/// Requeues (or fails) every running job whose lease expired before `now`. Returns the ids.
pub async fn rescue_expired(
    service: &Service,
    now: Timestamp,
    requeue_delay: std::time::Duration,
) -> StoreResult<Vec<JobId>> {
    let store = service.store().clone();
    let expired = store.expired_leases(now).await?;
    let mut rescued = Vec::new();
    for claimed in expired {
        let job = &claimed.job;
        let worker = job
            .worker
            .clone()
            .unwrap_or_else(|| "unknown worker".into());
        let message = format!("lease expired ({worker})");
        let rules = EndRules {
            caps: service.shared.queue_config(&job.queue).await?.caps,
            lease_lost_delay: requeue_delay,
        };
        let ending = Ending::Ran {
            reason: Reason::LeaseLost,
            message: Some(message.clone()),
            output: Vec::new(),
        };
        let finish = after_attempt(job, ending, &rules, now);
        let record = AttemptRecord {
            number: job.attempts,
            reason: Reason::LeaseLost,
            trap_kind: None,
            exit_code: None,
            message: Some(message),
            stderr: Vec::new(),
            stderr_truncated: false,
            receipt: serde_json::Value::Null,
            worker,
            started_at: job.started_at.unwrap_or(now),
            finished_at: now,
        };
        let state = finish.state();
        if store.finish(&claimed, Some(record), finish, now).await? {
            service.publish(job, state);
            rescued.push(job.id);
        }
    }
    if !rescued.is_empty() {
        service.shared.work.notify_waiters();
    }
    Ok(rescued)
}
