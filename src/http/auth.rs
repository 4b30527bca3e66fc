//! Bearer-token authentication. Each request's token is looked up by its hash (cached for a
//! few seconds, so a revocation through another node takes effect within that time; through
//! this node at once) and the handler checks the caller's role.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::domain::Role;
use crate::service::{Service, ServiceResult};

const CACHE_FOR: Duration = Duration::from_secs(5);
const CACHE_MAX: usize = 10_000;

/// Looks tokens up, with a short cache keyed by the secret's hash.
#[derive(Clone, Default)]
pub struct Auth {
    cache: Arc<Mutex<HashMap<String, (Caller, Instant)>>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

impl Auth {
    /// The caller holding `secret`, or `None` if it is not a live token.
    pub async fn caller(&self, service: &Service, secret: &str) -> ServiceResult<Option<Caller>> {
        self.caller_by_hash(service, crate::service::hash_secret(secret))
            .await
    }

    /// The caller holding the token whose secret hashes to `key`, or `None` if it is not a
    /// live token (a console session keeps the hash, never the secret).
    pub async fn caller_by_hash(
        &self,
        service: &Service,
        key: String,
    ) -> ServiceResult<Option<Caller>> {
        if let Some((caller, at)) = self.lock().get(&key)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(Some(caller.clone()));
        }
        let found = service.token_for_hash(&key).await?.map(|t| Caller {
            role: t.role,
            token_id: t.id,
        });
        let mut cache = self.lock();
        match &found {
            Some(caller) => {
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(key, (caller.clone(), Instant::now()));
            }
            None => {
                cache.remove(&key);
            }
        }
        Ok(found)
    }

    /// Forgets cached lookups (after a revocation through this process).
    pub fn forget(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Caller, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    pub token_id: String,
}

impl Caller {
    /// Refuses with 403 unless the caller's role allows `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "a {} token cannot do this; it needs the {} role",
                    self.role, needed
                ),
            ))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <token> header"))?;
        let secret = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be Bearer <token>"))?;
        match state.auth.caller(&state.service, secret).await {
            Ok(Some(caller)) => Ok(caller),
            Ok(None) => Err(unauthorized("unknown or revoked token")),
            Err(e) => Err(ApiError::from(e)),
        }
    }
}
