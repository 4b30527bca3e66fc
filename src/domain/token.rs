//! API tokens as stored: only the blake3 hash of a token's secret is kept.

use serde::Serialize;

use super::{Role, Timestamp};

/// An API token as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(skip)]
    pub hash: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}
