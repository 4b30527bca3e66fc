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

/// A web console session as stored: only the blake3 hash of its secret (the cookie's value)
/// is kept, with the hash of the token it was signed in with. Kept in the store, so every node
/// on it knows the session and signing out on one ends it on all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub hash: String,
    pub token_hash: String,
    pub expires_at: Timestamp,
}
