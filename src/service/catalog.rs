//! Tasks, their modules and queues: registering a task (admission in the sandbox, then the
//! store), its defaults (which must fit the caps of the queue they name), its versions, and
//! the queues' settings and pause state.

use super::{Service, ServiceError, ServiceResult, submit};
use crate::domain::{
    Metering, ModuleDigest, QueueConfig, QueueName, QueueStats, TaskDefaults, TaskName, TaskRecord,
    TaskVersion,
};
use crate::sandbox::{AdmissionError, AdmissionReport};

impl Service {
    /// Admits `module` and registers it as the newest version of `name`. The module bytes
    /// are stored by digest; older versions stay addressable by their digests.
    pub async fn register_task(
        &self,
        name: &TaskName,
        module: Vec<u8>,
        defaults: Option<TaskDefaults>,
    ) -> ServiceResult<(TaskRecord, AdmissionReport)> {
        if let Some(r) = defaults.as_ref().and_then(|d| d.retry.as_ref()) {
            r.validate().map_err(ServiceError::Invalid)?;
        }
        if let Some(defaults) = &defaults {
            self.check_defaults_fit(defaults).await?;
        }
        let metering = self.default_metering(defaults.as_ref()).await?;
        let sandbox = self.shared.sandbox.clone();
        let (report, module) =
            tokio::task::spawn_blocking(move || -> ServiceResult<(AdmissionReport, Vec<u8>)> {
                let admitted = sandbox.admit(&module)?;
                // A task whose jobs run without fuel by default gets that form now, not at
                // its first attempt; a module that cannot be compiled so is refused.
                if metering != Metering::Fuel {
                    sandbox
                        .prepare(&admitted, metering)
                        .map_err(|e| ServiceError::Refused(AdmissionError::Invalid(e)))?;
                }
                Ok((admitted.report().clone(), module))
            })
            .await
            .map_err(|e| ServiceError::Invalid(format!("admission did not finish: {e}")))??;
        let size = module.len() as u64;
        self.noted(self.shared.store.put_module(module).await)?;
        let task = self.noted(
            self.shared
                .store
                .put_task(name, report.digest, size, defaults, self.now())
                .await,
        )?;
        Ok((task, report))
    }

    pub async fn task(&self, name: &TaskName) -> ServiceResult<TaskRecord> {
        self.shared
            .store
            .get_task(name)
            .await?
            .ok_or_else(|| ServiceError::TaskNotFound(name.to_string()))
    }

    pub async fn tasks(&self) -> ServiceResult<Vec<TaskRecord>> {
        Ok(self.shared.store.list_tasks().await?)
    }

    pub async fn delete_task(&self, name: &TaskName) -> ServiceResult<()> {
        if self.shared.store.delete_task(name).await? {
            Ok(())
        } else {
            Err(ServiceError::TaskNotFound(name.to_string()))
        }
    }

    /// Replaces a task's defaults (limits, retry policy, env, queue) for jobs submitted later.
    pub async fn set_task_defaults(
        &self,
        name: &TaskName,
        defaults: TaskDefaults,
    ) -> ServiceResult<TaskRecord> {
        if let Some(r) = &defaults.retry {
            r.validate().map_err(ServiceError::Invalid)?;
        }
        self.check_defaults_fit(&defaults).await?;
        self.shared
            .store
            .set_task_defaults(name, defaults, self.now())
            .await?
            .ok_or_else(|| ServiceError::TaskNotFound(name.to_string()))
    }

    /// One version of a task with its admission report (from the compiled-module cache).
    pub async fn task_version(
        &self,
        name: &TaskName,
        digest: ModuleDigest,
    ) -> ServiceResult<(TaskVersion, AdmissionReport)> {
        let task = self.task(name).await?;
        let version = task
            .versions
            .into_iter()
            .find(|v| v.digest == digest)
            .ok_or_else(|| ServiceError::VersionNotFound {
                task: name.to_string(),
                digest: digest.to_hex(),
            })?;
        let sandbox = self.shared.sandbox.clone();
        let bytes = self.module(digest).await?;
        let report = tokio::task::spawn_blocking(move || -> ServiceResult<AdmissionReport> {
            Ok(sandbox.admit(&bytes)?.report().clone())
        })
        .await
        .map_err(|e| ServiceError::Invalid(format!("admission did not finish: {e}")))??;
        Ok((version, report))
    }

    /// The bytes of a registered module (checked against their digest on read).
    pub async fn module(&self, digest: ModuleDigest) -> ServiceResult<Vec<u8>> {
        self.shared
            .store
            .get_module(digest)
            .await?
            .ok_or_else(|| ServiceError::ModuleNotFound(digest.to_hex()))
    }

    /// Stores a queue's settings; the tasks whose default limits are over its caps now (their
    /// jobs, submitted without limits of their own, would be refused), by name.
    pub async fn put_queue(&self, config: QueueConfig) -> ServiceResult<Vec<TaskName>> {
        if config.concurrency == 0 || config.key_concurrency == 0 {
            return Err(ServiceError::Invalid(format!(
                "queue {}: concurrency and key_concurrency must be at least 1",
                config.name
            )));
        }
        self.shared.store.put_queue(&config).await?;
        self.queues_changed();
        let over = self
            .shared
            .store
            .list_tasks()
            .await?
            .into_iter()
            .filter(|t| {
                let queue = t
                    .defaults
                    .queue
                    .clone()
                    .unwrap_or_else(QueueName::default_queue);
                queue == config.name
                    && t.defaults.limits.is_some_and(|l| {
                        submit::check_caps(&l, &config.caps, &config.name).is_err()
                    })
            })
            .map(|t| t.name)
            .collect();
        Ok(over)
    }

    /// The metering a task's jobs run under when they give none: its defaults', else its
    /// queue's.
    async fn default_metering(&self, defaults: Option<&TaskDefaults>) -> ServiceResult<Metering> {
        if let Some(limits) = defaults.and_then(|d| d.limits.as_ref()) {
            return Ok(limits.metering);
        }
        let name = defaults
            .and_then(|d| d.queue.clone())
            .unwrap_or_else(QueueName::default_queue);
        Ok(self
            .shared
            .queue_config(&name)
            .await?
            .default_limits
            .metering)
    }

    /// Task defaults whose limits fit the caps of the queue they name (or the default queue).
    async fn check_defaults_fit(&self, defaults: &TaskDefaults) -> ServiceResult<()> {
        let Some(limits) = &defaults.limits else {
            return Ok(());
        };
        let name = defaults
            .queue
            .clone()
            .unwrap_or_else(QueueName::default_queue);
        let queue = self.shared.queue_config(&name).await?;
        submit::check_caps(limits, &queue.caps, &name).map_err(|e| {
            ServiceError::OverCap(format!(
                "the task's default limits would refuse every job submitted without limits of \
                 its own: {e}"
            ))
        })
    }

    pub async fn queues(&self) -> ServiceResult<Vec<QueueStats>> {
        Ok(self.shared.store.list_queues().await?)
    }

    pub async fn queue(&self, name: &QueueName) -> ServiceResult<QueueStats> {
        self.shared
            .store
            .get_queue(name)
            .await?
            .ok_or_else(|| ServiceError::QueueNotFound(name.to_string()))
    }

    /// Pauses (or resumes) a queue; persisted across restarts.
    pub async fn set_paused(&self, name: &QueueName, paused: bool) -> ServiceResult<()> {
        if !self.shared.store.set_paused(name, paused).await? {
            // Pausing a queue nobody configured yet creates it, so it can be paused ahead of use.
            self.shared
                .store
                .put_queue(&QueueConfig::with_defaults(name.clone()))
                .await?;
            self.shared.store.set_paused(name, paused).await?;
        }
        self.queues_changed();
        Ok(())
    }
}
