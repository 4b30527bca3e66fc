//! The repro bundle of one attempt: the job's module (from the store, by digest), input,
//! args and env, the limits the attempt ran under, its recording (seed and clock values) and
//! what it produced. Assembling only; the format is `domain::bundle`'s.

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{Bundle, BundleHeader, BundleResult, JobId, ModuleSection};

impl Service {
    /// The bundle of attempt `number` of job `id`. An attempt the sandbox did not run to a
    /// report (`lease_lost`, or one recorded before replays existed) has none: `Conflict`.
    pub async fn bundle(&self, id: JobId, number: u32) -> ServiceResult<Bundle> {
        let job = self.job(id).await?;
        let attempt = self
            .shared
            .store
            .attempts(id)
            .await?
            .into_iter()
            .find(|a| a.number == number)
            .ok_or(ServiceError::AttemptNotFound { job: id, number })?;
        let replay = attempt.replay.ok_or_else(|| {
            ServiceError::Conflict(format!(
                "attempt {number} of job {id} ended {} without a recording of what its guest \
                 was given, so it has no bundle",
                attempt.reason
            ))
        })?;
        let module = self.module(job.digest).await?;
        let receipt = &attempt.receipt;
        let fuel_consumed = receipt["fuel_consumed"].as_u64();
        let output_bytes = receipt["stdout_bytes"].as_u64().unwrap_or(0);
        let header = BundleHeader {
            remotask_version: env!("CARGO_PKG_VERSION").to_owned(),
            job: id,
            attempt: number,
            task: job.task.to_string(),
            module: ModuleSection {
                digest: job.digest,
                bytes: module.len() as u64,
            },
            input_bytes: job.input.len() as u64,
            args: job.args,
            env: job.env,
            limits: replay.limits,
            recording: replay.recording,
            result: BundleResult {
                reason: attempt.reason,
                trap_kind: attempt.trap_kind,
                exit_code: attempt.exit_code,
                message: attempt.message,
                output_digest: replay.output_digest,
                output_bytes,
                fuel_consumed,
                log_bytes: attempt.stderr.len() as u64,
                log_truncated: attempt.stderr_truncated,
                worker: attempt.worker,
                started_at: attempt.started_at,
                finished_at: attempt.finished_at,
            },
        };
        Ok(Bundle {
            header,
            module,
            input: job.input,
            log: attempt.stderr,
        })
    }
}
