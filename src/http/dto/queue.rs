//! Queue shapes: a queue's settings, pause state and job counts by state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::LimitsDto;
use crate::domain::QueueStats;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueDto {
    pub name: String,
    pub concurrency: u32,
    /// Jobs with one `concurrency_key` that run at once.
    pub key_concurrency: u32,
    pub paused: bool,
    pub default_limits: LimitsDto,
    pub caps: LimitsDto,
    /// Jobs by state.
    pub counts: BTreeMap<String, u64>,
}

impl QueueDto {
    pub fn from_stats(q: &QueueStats) -> Self {
        Self {
            name: q.config.name.to_string(),
            concurrency: q.config.concurrency,
            key_concurrency: q.config.key_concurrency,
            paused: q.paused,
            default_limits: LimitsDto::from_limits(&q.config.default_limits),
            caps: LimitsDto::from_limits(&q.config.caps),
            counts: q.counts.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        }
    }
}
