//! Console sessions: signing in with a token makes a session, kept in this server process by
//! the hash of its secret, with the token's hash, role, a CSRF token and an expiry. The
//! secret travels only in a cookie that is `HttpOnly`, `SameSite=Strict` and, under HTTPS,
//! `Secure`. Every request checks the session and, through the token cache, that its token
//! is still live: revoking the token ends its sessions within the cache's few seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::domain::Role;
use crate::http::AppState;
use crate::service::hash_secret;

/// The session cookie's name.
pub(super) const COOKIE: &str = "remotask_session";
/// How long a session lasts from sign-in.
pub(super) const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// The most sessions kept; the oldest go first beyond it.
const MAX_SESSIONS: usize = 10_000;

/// The sessions of this process, by the hash of their secret.
#[derive(Clone, Default)]
pub(crate) struct Sessions {
    map: Arc<Mutex<HashMap<String, Session>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Session {
    /// The hash of the token signed in with.
    token_hash: String,
    /// Sent in every form that changes something, and checked.
    csrf: String,
    expires: Instant,
}

impl Sessions {
    /// Starts a session for the token whose secret hashes to `token_hash`; the session's
    /// secret, for the cookie.
    pub(super) fn start(&self, token_hash: String) -> String {
        let secret = random_hex();
        let session = Session {
            token_hash,
            csrf: random_hex(),
            expires: Instant::now() + LIFETIME,
        };
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(hash_secret(&secret), session);
        secret
    }

    /// Ends the session whose secret is `secret`.
    pub(super) fn end(&self, secret: &str) {
        self.lock().remove(&hash_secret(secret));
    }

    fn find(&self, secret: &str) -> Option<Session> {
        let key = hash_secret(secret);
        let mut map = self.lock();
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// 32 random bytes as hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS gives random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who is looking at a console page: the role of the token they signed in with, and the
/// session's CSRF token for the forms on the page.
#[derive(Debug, Clone)]
pub(super) struct Viewer {
    pub(super) role: Role,
    pub(super) csrf: String,
    /// The session's secret, to end it at sign-out.
    pub(super) secret: String,
}

impl Viewer {
    /// Whether the viewer's role allows `needed`.
    pub(super) fn can(&self, needed: Role) -> bool {
        self.role.allows(needed)
    }
}

/// The value of cookie `name` in `headers`.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value that holds `secret` (or, `None`, clears it).
pub(super) fn set_cookie(secret: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match secret {
        Some(s) => format!(
            "{COOKIE}={s}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            LIFETIME.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// Not signed in: to the sign-in page, which comes back to `path` after.
pub(super) struct SignIn(String);

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        let next: String = form_urlencoded::byte_serialize(self.0.as_bytes()).collect();
        Redirect::to(&format!("/ui/login?next={next}")).into_response()
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/ui", |p| p.as_str())
            .to_owned();
        let sign_in = || SignIn(path.clone()).into_response();
        let secret = cookie(&parts.headers, COOKIE).ok_or_else(sign_in)?;
        let session = state.sessions.find(secret).ok_or_else(sign_in)?;
        match state
            .auth
            .caller_by_hash(&state.service, session.token_hash.clone())
            .await
        {
            Ok(Some(caller)) => Ok(Viewer {
                role: caller.role,
                csrf: session.csrf,
                secret: secret.to_owned(),
            }),
            Ok(None) => {
                state.sessions.end(secret);
                Err(sign_in())
            }
            Err(e) => Err(crate::http::error::ApiError::from(e).into_response()),
        }
    }
}
