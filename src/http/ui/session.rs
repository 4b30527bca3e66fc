//! Console sessions: signing in with a token makes a session, kept in the store (through the
//! service) by the hash of its secret, so every node knows it and signing out on one ends it
//! on all. The secret travels only in a cookie that is `HttpOnly`, `SameSite=Strict` and,
//! under HTTPS, `Secure`; the session's CSRF token is derived from the secret, so the store
//! holds nothing a form could be forged with. Every request checks the session and, through
//! the token cache, that its token is still live; revoking the token ends its sessions.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::domain::Role;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::service::SESSION_LIFETIME;

/// The session cookie's name.
pub(super) const COOKIE: &str = "remotask_session";

/// The CSRF token of the session whose secret is `secret`.
fn csrf_of(secret: &str) -> String {
    blake3::derive_key("remotask console 2026 session csrf", secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
            SESSION_LIFETIME.as_secs()
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
        let failed = |e| ApiError::from(e).into_response();
        let secret = cookie(&parts.headers, COOKIE).ok_or_else(sign_in)?;
        let session = state
            .service
            .session(secret)
            .await
            .map_err(failed)?
            .ok_or_else(sign_in)?;
        match state
            .auth
            .caller_by_hash(&state.service, session.token_hash)
            .await
        {
            Ok(Some(caller)) => Ok(Viewer {
                role: caller.role,
                csrf: csrf_of(secret),
                secret: secret.to_owned(),
            }),
            Ok(None) => {
                state.service.end_session(secret).await.map_err(failed)?;
                Err(sign_in())
            }
            Err(e) => Err(failed(e)),
        }
    }
}
