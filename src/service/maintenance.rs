//! Maintenance: the work a server does on its own, on a timer. The rescuer ends the attempts
//! whose lease expired (their worker died or went silent) as `lease_lost`, so their jobs run
//! again after the requeue delay, or fail when their retries are spent; it goes through the
//! same guarded write and the same decision as any attempt, so it cannot overwrite a worker
//! that reported in the meantime. The scheduler fires due schedules. The cleaner removes
//! ended jobs past the retention period. Each failure is logged and counted, and the task
//! goes on at its next turn. With several server nodes on one store, only the node the store
//! says leads does this work; each asks again before every round, so another takes over when
//! the leader dies.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{Service, ServiceResult};
use crate::domain::{
    AttemptRecord, EndRules, Ending, JobId, JobState, Reason, Timestamp, after_attempt,
};
use crate::telemetry::{Component, background_error};

/// When maintenance runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaintenanceConfig {
    /// Delay before a job whose lease expired runs again (the seed's 5 s).
    pub requeue_delay: Duration,
    /// How often the rescuer looks for expired leases.
    pub rescue_interval: Duration,
    /// Ended jobs older than this are cleaned; `None` keeps them.
    pub retention: Option<Duration>,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            requeue_delay: Duration::from_secs(5),
            rescue_interval: Duration::from_secs(1),
            retention: None,
        }
    }
}

/// The running maintenance tasks; dropping this leaves them running, [`Maintenance::stop`]
/// stops them.
#[derive(Debug)]
pub struct Maintenance {
    tasks: Vec<JoinHandle<()>>,
}

/// The longest the scheduler sleeps between looks at the store: a schedule created through
/// another server process on the same store is seen within this.
const SCHEDULER_MAX_SLEEP: Duration = Duration::from_secs(1);

/// How often the cleaner looks for ended jobs past the retention period.
const CLEAN_INTERVAL: Duration = Duration::from_secs(60);

impl Maintenance {
    /// Starts the rescuer, the scheduler and (with a retention period) the cleaner on the
    /// current tokio runtime.
    pub fn start(service: Service, config: MaintenanceConfig) -> Self {
        let mut tasks = vec![
            tokio::spawn(rescuer(service.clone(), config)),
            tokio::spawn(scheduler(service.clone())),
        ];
        if let Some(keep) = config.retention {
            tasks.push(tokio::spawn(cleaner(service, keep)));
        }
        Self { tasks }
    }

    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Whether this node leads the store's maintenance now (logged if the store cannot say).
async fn leading(service: &Service, component: Component) -> bool {
    let lead = match service.store().lead().await {
        Ok(lead) => lead,
        Err(e) => {
            background_error(component, "asking whether this node leads", &e);
            false
        }
    };
    let was = service.shared.metrics.leading.swap(lead, Ordering::Relaxed);
    if was != lead {
        tracing::info!(
            leading = lead,
            "{}",
            if lead {
                "this node now leads maintenance"
            } else {
                "this node no longer leads maintenance"
            }
        );
    }
    lead
}

async fn rescuer(service: Service, config: MaintenanceConfig) {
    loop {
        let now = service.now();
        if leading(&service, Component::Rescuer).await
            && let Err(e) = service.rescue_expired(now, config.requeue_delay).await
        {
            background_error(
                Component::Rescuer,
                "requeueing jobs whose lease expired",
                &e,
            );
        }
        tokio::time::sleep(config.rescue_interval).await;
    }
}

/// Fires due schedules, then sleeps until the next fire time (at most a second), or until a
/// schedule changes in this process.
async fn scheduler(service: Service) {
    loop {
        let changed = service.shared.schedules.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if leading(&service, Component::Scheduler).await
            && let Err(e) = service.fire_due().await
        {
            background_error(Component::Scheduler, "firing due schedules", &e);
        }
        let sleep = match service.store().next_schedule_fire().await {
            Ok(Some(next)) => service.now().until(next).min(SCHEDULER_MAX_SLEEP),
            Ok(None) => SCHEDULER_MAX_SLEEP,
            Err(e) => {
                background_error(Component::Scheduler, "reading the next fire time", &e);
                SCHEDULER_MAX_SLEEP
            }
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = &mut changed => {}
        }
    }
}

async fn cleaner(service: Service, keep: Duration) {
    loop {
        if leading(&service, Component::Cleaner).await
            && let Err(e) = service.clean(Some(keep)).await
        {
            background_error(Component::Cleaner, "removing ended jobs", &e);
        }
        tokio::time::sleep(CLEAN_INTERVAL).await;
    }
}

impl Service {
    /// Ends the attempt of every running job whose lease expired before `now` as
    /// `lease_lost`: its job runs again `requeue_delay` later, or fails when its retries are
    /// spent. Returns the jobs it ended.
    pub async fn rescue_expired(
        &self,
        now: Timestamp,
        requeue_delay: Duration,
    ) -> ServiceResult<Vec<JobId>> {
        let store = self.store().clone();
        let mut rescued = Vec::new();
        for claimed in store.expired_leases(now).await? {
            let job = &claimed.job;
            let worker = job
                .worker
                .clone()
                .unwrap_or_else(|| "unknown worker".into());
            let message = format!("lease expired ({worker})");
            let rules = EndRules {
                caps: self.shared.queue_config(&job.queue).await?.caps,
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
                replay: None,
            };
            let state: JobState = finish.state();
            if store.finish(&claimed, Some(record), finish, now).await? {
                self.publish(job, state);
                rescued.push(job.id);
            }
        }
        if !rescued.is_empty() {
            self.shared.wake_work();
        }
        Ok(rescued)
    }
}
