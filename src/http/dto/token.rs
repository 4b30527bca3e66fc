//! Token shapes: what creating a token asks for, and a token as listed (its secret only in
//! the answer to its creation).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::time;
use crate::domain::TokenRecord;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// admin, submit, worker or read.
    #[schema(pattern = "^(admin|submit|worker|read)$")]
    pub role: String,
    /// 0 to 200 printable characters.
    #[serde(default)]
    #[schema(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{0,200}$")]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenDto {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// The secret; shown once, when the token is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl TokenDto {
    pub fn from_record(t: &TokenRecord, secret: Option<String>) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            role: t.role.to_string(),
            created_at: time(t.created_at),
            revoked_at: t.revoked_at.map(time),
            token: secret,
        }
    }
}
