//! API tokens: a secret is `rt_` + 64 hex characters of OS randomness, shown once; only its
//! blake3 hash is stored, so a copy of the database does not hand out access. Console
//! sessions likewise: the store keeps the hash of a session's secret (the cookie's value),
//! so every node on it knows the session and signing out on one ends it on all.

use std::time::Duration;

use crate::domain::{Role, SessionRecord, Timestamp, TokenRecord};

use super::{Service, ServiceError, ServiceResult};
use crate::store::Revoked;

/// A token just made: its stored record and its secret (shown once).
#[derive(Debug, Clone)]
pub struct NewToken {
    pub record: TokenRecord,
    pub secret: String,
}

/// The hash under which a token secret is stored and looked up.
pub fn hash_secret(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// A new token with `role` and `name`, made at `now`: a fresh secret and the record to store.
pub fn new_token(role: Role, name: &str, now: Timestamp) -> ServiceResult<NewToken> {
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ServiceError::Invalid(
            "a token name is at most 200 printable characters".into(),
        ));
    }
    let secret = format!("rt_{}", random_hex()?);
    let record = TokenRecord {
        // The id is derived from the hash, never from the secret.
        id: format!("tok_{}", &hash_secret(&secret)[..16]),
        name: name.to_owned(),
        role,
        hash: hash_secret(&secret),
        created_at: now,
        revoked_at: None,
    };
    Ok(NewToken { record, secret })
}

/// How long a console session lasts from sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// 32 bytes of OS randomness as hex.
fn random_hex() -> ServiceResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ServiceError::Invalid(format!("no OS randomness for a secret: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Service {
    /// Starts a console session for the token whose secret hashes to `token_hash`; the
    /// session's secret, for the cookie. Expired sessions are forgotten on the way.
    pub async fn start_session(&self, token_hash: String) -> ServiceResult<String> {
        let secret = random_hex()?;
        let now = self.now();
        let session = SessionRecord {
            hash: hash_secret(&secret),
            token_hash,
            expires_at: Timestamp(now.0 + SESSION_LIFETIME.as_millis() as i64),
        };
        self.shared.store.start_session(&session, now).await?;
        Ok(secret)
    }

    /// The live session whose secret is `secret`.
    pub async fn session(&self, secret: &str) -> ServiceResult<Option<SessionRecord>> {
        let hash = hash_secret(secret);
        Ok(self.shared.store.session(&hash, self.now()).await?)
    }

    /// Ends the session whose secret is `secret` (signing out).
    pub async fn end_session(&self, secret: &str) -> ServiceResult<()> {
        self.shared.store.end_session(&hash_secret(secret)).await?;
        Ok(())
    }

    /// Makes and stores a token with `role`.
    pub async fn create_token(&self, role: Role, name: &str) -> ServiceResult<NewToken> {
        let token = new_token(role, name, self.now())?;
        self.shared.store.create_token(&token.record).await?;
        Ok(token)
    }

    pub async fn tokens(&self) -> ServiceResult<Vec<TokenRecord>> {
        Ok(self.shared.store.list_tokens().await?)
    }

    /// Revokes a token; an unknown or already revoked id is `TokenNotFound`, the last live
    /// admin token a `Conflict`.
    pub async fn revoke_token(&self, id: &str) -> ServiceResult<()> {
        match self.shared.store.revoke_token(id, self.now()).await? {
            Revoked::Revoked => Ok(()),
            Revoked::NotFound => Err(ServiceError::TokenNotFound(id.to_owned())),
            Revoked::LastAdmin => Err(ServiceError::Conflict(format!(
                "token {id} is the last live admin token: without it no one could administer \
                 the server; create another admin token first (or, without the API, \
                 `remotask token create --role admin --data-dir DIR`)"
            ))),
        }
    }

    /// The live token whose secret hashes to `hash` ([`hash_secret`]).
    pub async fn token_for_hash(&self, hash: &str) -> ServiceResult<Option<TokenRecord>> {
        Ok(self.shared.store.token_by_hash(hash).await?)
    }

    /// The live token whose secret is `secret`.
    pub async fn token_for_secret(&self, secret: &str) -> ServiceResult<Option<TokenRecord>> {
        Ok(self
            .shared
            .store
            .token_by_hash(&hash_secret(secret))
            .await?)
    }
}
