//! Schedules: create, read, update in place (a reschedule: the old fire times stop, the new
//! ones start), pause, resume, delete, preview; and `fire_due`, which the scheduler calls.
//!
//! A fire submits one job with the unique key `schedule:<name>:<fire time>`, in the same
//! transaction that moves the schedule's `next_fire` on, guarded by the value it read: a fire
//! time is handled once, also with several server processes on one store.

use crate::domain::ScheduleRecord;
use crate::domain::{
    CatchUp, Job, JobTemplate, NewJob, Overlap, ScheduleName, SpecDef, Timestamp, fire_key,
    plan_fires,
};
use crate::store::{Firing, Inserted};

use super::{Service, ServiceError, ServiceResult, SubmitRequest};

/// What a schedule is asked to be.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRequest {
    pub spec: SpecDef,
    pub job: JobTemplate,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub paused: bool,
}

/// A schedule with its last job (whose output is the schedule's last result).
#[derive(Debug, Clone)]
pub struct ScheduleView {
    pub schedule: ScheduleRecord,
    pub last_job: Option<Job>,
}

fn request_for(name: &ScheduleName, job: &JobTemplate, fire: Timestamp) -> SubmitRequest {
    let mut r = SubmitRequest::new(job.task.clone(), job.input.clone());
    r.args = job.args.clone();
    r.env = job.env.clone();
    r.queue = job.queue.clone();
    r.priority = job.priority;
    r.limits = job.limits;
    r.retry = job.retry.clone();
    r.context = job.context.clone();
    r.concurrency_key = job.concurrency_key.clone();
    r.unique_key = Some(fire_key(name, fire));
    r.submitter = Some(format!("schedule:{name}"));
    r
}

impl Service {
    /// Checks a request as a fire would use it: the spec parses, the task exists, the job's
    /// limits fit its queue.
    async fn check_schedule(&self, name: &ScheduleName, r: &ScheduleRequest) -> ServiceResult<()> {
        r.spec
            .parse()
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        self.resolve_all(vec![request_for(name, &r.job, self.now())], self.now())
            .await?;
        Ok(())
    }

    /// Creates a schedule; its first fire is the spec's first time after now.
    pub async fn create_schedule(
        &self,
        name: &ScheduleName,
        r: ScheduleRequest,
    ) -> ServiceResult<ScheduleRecord> {
        self.check_schedule(name, &r).await?;
        if self.shared.store.get_schedule(name).await?.is_some() {
            return Err(ServiceError::Conflict(format!(
                "schedule {name} exists; update it instead"
            )));
        }
        let now = self.now();
        let spec = r
            .spec
            .parse()
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let record = ScheduleRecord {
            name: name.clone(),
            next_fire: spec.next_after(now),
            spec: r.spec,
            job: r.job,
            overlap: r.overlap,
            catch_up: r.catch_up,
            paused: r.paused,
            last_fire: None,
            last_job: None,
            fires: 0,
            skipped: 0,
            last_error: None,
            created_at: now,
            updated_at: now,
        };
        self.shared.store.put_schedule(&record).await?;
        self.shared.schedules_changed();
        Ok(record)
    }

    /// Replaces a schedule's spec, job and policies in place, keeping its history; the next
    /// fire is recomputed from now, so times of the old spec no longer fire.
    pub async fn update_schedule(
        &self,
        name: &ScheduleName,
        r: ScheduleRequest,
    ) -> ServiceResult<ScheduleRecord> {
        self.check_schedule(name, &r).await?;
        let old = self.schedule_record(name).await?;
        let now = self.now();
        let spec = r
            .spec
            .parse()
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let record = ScheduleRecord {
            next_fire: spec.next_after(now),
            spec: r.spec,
            job: r.job,
            overlap: r.overlap,
            catch_up: r.catch_up,
            paused: r.paused,
            updated_at: now,
            ..old
        };
        self.shared.store.put_schedule(&record).await?;
        self.shared.schedules_changed();
        Ok(record)
    }

    async fn schedule_record(&self, name: &ScheduleName) -> ServiceResult<ScheduleRecord> {
        self.shared
            .store
            .get_schedule(name)
            .await?
            .ok_or_else(|| ServiceError::ScheduleNotFound(name.to_string()))
    }

    /// A schedule with its last job.
    pub async fn schedule(&self, name: &ScheduleName) -> ServiceResult<ScheduleView> {
        let schedule = self.schedule_record(name).await?;
        let last_job = match schedule.last_job {
            Some(id) => self.shared.store.get_job(id).await?,
            None => None,
        };
        Ok(ScheduleView { schedule, last_job })
    }

    pub async fn schedules(&self) -> ServiceResult<Vec<ScheduleRecord>> {
        Ok(self.shared.store.list_schedules().await?)
    }

    /// Deletes a schedule; the jobs it submitted stay.
    pub async fn delete_schedule(&self, name: &ScheduleName) -> ServiceResult<()> {
        if self.shared.store.delete_schedule(name).await? {
            Ok(())
        } else {
            Err(ServiceError::ScheduleNotFound(name.to_string()))
        }
    }

    /// Pauses or resumes. A resumed schedule goes on from now: what it would have fired while
    /// paused is not caught up (a one-shot delay that already fired stays done).
    pub async fn set_schedule_paused(
        &self,
        name: &ScheduleName,
        paused: bool,
    ) -> ServiceResult<ScheduleRecord> {
        let mut r = self.schedule_record(name).await?;
        let now = self.now();
        if r.paused && !paused && (r.next_fire.is_some() || r.last_fire.is_none()) {
            let spec = r
                .spec
                .parse()
                .map_err(|e| ServiceError::Invalid(e.to_string()))?;
            r.next_fire = spec.next_after(now);
        }
        r.paused = paused;
        r.updated_at = now;
        self.shared.store.put_schedule(&r).await?;
        self.shared.schedules_changed();
        Ok(r)
    }

    /// The next `n` fire times of a schedule, from its stored next fire on.
    pub async fn preview_schedule(
        &self,
        name: &ScheduleName,
        n: usize,
    ) -> ServiceResult<Vec<Timestamp>> {
        let r = self.schedule_record(name).await?;
        let spec = r
            .spec
            .parse()
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let Some(first) = r.next_fire else {
            return Ok(Vec::new());
        };
        let mut out = vec![first];
        if !spec.is_one_shot() {
            out.extend(spec.preview(first, n.saturating_sub(1)));
        }
        out.truncate(n);
        Ok(out)
    }

    /// Fires every due schedule once (each fire handled by exactly one caller). Returns how
    /// many jobs were submitted.
    pub async fn fire_due(&self) -> ServiceResult<usize> {
        let now = self.now();
        let mut submitted = 0;
        for r in self.shared.store.due_schedules(now).await? {
            let Some(due) = r.next_fire else { continue };
            let firing = self.plan(&r, due, now).await;
            let jobs: Vec<Job> = firing.jobs.iter().cloned().map(NewJob::into_job).collect();
            let _expected = self.expect_new(&jobs);
            let fired = self
                .shared
                .store
                .fire_schedule(&r.name, firing.clone(), now)
                .await?;
            let Some(inserted) = fired else {
                continue;
            };
            for (i, job) in inserted.iter().zip(&jobs) {
                if let Inserted::New(_) = i {
                    submitted += 1;
                    self.announce_new(job);
                }
            }
        }
        if submitted > 0 {
            self.shared.wake_work();
        }
        Ok(submitted)
    }

    /// What firing `r` at `now` does: which fire times get a job, which are skipped and why.
    async fn plan(&self, r: &ScheduleRecord, due: Timestamp, now: Timestamp) -> Firing {
        let stop = |error: String| Firing {
            expected: due,
            next: None,
            fired_at: None,
            jobs: Vec::new(),
            skipped: 1,
            error: Some(error),
        };
        let spec = match r.spec.parse() {
            Ok(s) => s,
            Err(e) => return stop(e.to_string()),
        };
        let plan = plan_fires(&spec, due, now, r.catch_up);
        let mut skipped = plan.missed;
        let mut fires = plan.fires;
        if r.overlap == Overlap::Skip && !fires.is_empty() {
            let previous_live = match r.last_job {
                Some(id) => {
                    matches!(self.shared.store.get_job(id).await, Ok(Some(j)) if j.state.is_live())
                }
                None => false,
            };
            // Fires in one go would overlap each other too: with `skip`, one job at a time.
            let keep = if previous_live { 0 } else { 1 };
            skipped += fires.len().saturating_sub(keep) as u64;
            fires.truncate(keep);
        }
        let fired_at = fires.last().copied();
        let requests = fires
            .iter()
            .map(|t| request_for(&r.name, &r.job, *t))
            .collect();
        let (jobs, error) = match self.resolve_all(requests, now).await {
            Ok(jobs) => (jobs, None),
            Err(e) => {
                skipped += fires.len() as u64;
                (Vec::new(), Some(e.to_string()))
            }
        };
        Firing {
            expected: due,
            next: plan.next,
            fired_at,
            jobs,
            skipped,
            error,
        }
    }
}
