//! Task shapes: a task with its versions and defaults, an upload's answer, one version with
//! its admission report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::super::error::ApiError;
use super::{LimitsDto, time};
use crate::domain::{Limits, RetryPolicy, TaskDefaults, TaskRecord};
use crate::sandbox::AdmissionReport;

/// Task defaults: limits, retry policy, env and queue for its jobs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskDefaultsDto {
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", max_length = 64)]
    pub queue: Option<String>,
    pub limits: Option<LimitsDto>,
    #[schema(value_type = Option<Object>)]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl TaskDefaultsDto {
    pub fn from_defaults(d: &TaskDefaults) -> Self {
        Self {
            queue: d.queue.as_ref().map(|q| q.to_string()),
            limits: d.limits.as_ref().map(LimitsDto::from_limits),
            retry: d.retry.clone(),
            env: d.env.iter().cloned().collect(),
        }
    }

    pub fn to_defaults(&self) -> Result<TaskDefaults, ApiError> {
        let queue = match &self.queue {
            Some(q) => Some(q.parse().map_err(|e: crate::domain::NameError| {
                ApiError::unprocessable("invalid", e.to_string())
            })?),
            None => None,
        };
        let limits = match &self.limits {
            Some(l) => Some(
                l.to_override()
                    .over(Limits::default())
                    .map_err(|e| ApiError::unprocessable("invalid_limits", e.to_string()))?,
            ),
            None => None,
        };
        if self.env.len() > 256 {
            return Err(ApiError::unprocessable(
                "invalid",
                "env: at most 256 variables",
            ));
        }
        if let Some(key) = self
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err(ApiError::unprocessable(
                "invalid",
                format!("env: {key:?} is not a variable name"),
            ));
        }
        Ok(TaskDefaults {
            queue,
            limits,
            retry: self.retry.clone(),
            env: self.env.clone().into_iter().collect(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionDto {
    pub digest: String,
    pub size_bytes: u64,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskDto {
    pub name: String,
    /// The newest version's digest.
    pub digest: String,
    pub defaults: TaskDefaultsDto,
    pub versions: Vec<VersionDto>,
    pub updated_at: String,
}

impl TaskDto {
    pub fn from_record(t: &TaskRecord) -> Self {
        Self {
            name: t.name.to_string(),
            digest: t.digest.to_hex(),
            defaults: TaskDefaultsDto::from_defaults(&t.defaults),
            versions: t
                .versions
                .iter()
                .map(|v| VersionDto {
                    digest: v.digest.to_hex(),
                    size_bytes: v.size_bytes,
                    created_at: time(v.created_at),
                })
                .collect(),
            updated_at: time(t.updated_at),
        }
    }
}

/// What admission found in a module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdmissionDto {
    /// The module's blake3 digest (64 lowercase hex characters).
    pub digest: String,
    pub size_bytes: u64,
    pub exports: Vec<ExportDto>,
    pub imports: Vec<ImportDto>,
    /// Time to compile, or to load the cached artifact, in milliseconds.
    pub compile_ms: f64,
    /// `memory`, `disk` or `miss`.
    pub compile_cache: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExportDto {
    pub name: String,
    /// `func`, `memory`, `table`, `global` or `tag`.
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImportDto {
    pub module: String,
    pub name: String,
    pub kind: String,
}

impl AdmissionDto {
    pub fn from_report(r: &AdmissionReport) -> Self {
        Self {
            digest: r.digest.to_hex(),
            size_bytes: r.size_bytes as u64,
            exports: r
                .exports
                .iter()
                .map(|e| ExportDto {
                    name: e.name.clone(),
                    kind: e.kind.to_owned(),
                })
                .collect(),
            imports: r
                .imports
                .iter()
                .map(|i| ImportDto {
                    module: i.module.clone(),
                    name: i.name.clone(),
                    kind: i.kind.to_owned(),
                })
                .collect(),
            compile_ms: r.compile_ms,
            compile_cache: r.compile_cache.as_str().to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UploadDto {
    pub task: TaskDto,
    pub admission: AdmissionDto,
}

impl UploadDto {
    pub fn new(task: &TaskRecord, report: &AdmissionReport) -> Self {
        Self {
            task: TaskDto::from_record(task),
            admission: AdmissionDto::from_report(report),
        }
    }
}

/// One version of a task, with its admission report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionDetailDto {
    pub task: String,
    pub version: VersionDto,
    pub admission: AdmissionDto,
    /// Whether the task's name points at this version.
    pub current: bool,
    pub defaults: TaskDefaultsDto,
}
