//! What the console's forms do: sign in (a token for a session), sign out, a job's moves
//! (cancel, release, retry, delete) and a queue's pause and resume. Each checks the session's
//! CSRF token and the role, whatever the page offered, then goes back to the page with a
//! message saying what happened.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::session::{Viewer, set_cookie};
use super::{failure, forbidden, page};
use crate::domain::{CancelOutcome, JobId, QueueName, Role};
use crate::http::AppState;
use crate::service::hash_secret;

#[derive(Debug, Default, Deserialize)]
pub(super) struct Next {
    next: Option<String>,
    error: Option<String>,
}

/// Only a console page to go back to after signing in: never another site.
fn next_page(next: Option<&str>) -> &str {
    next.filter(|n| n.starts_with("/ui") && !n.starts_with("//"))
        .unwrap_or("/ui")
}

pub(super) async fn login_form(Query(q): Query<Next>) -> Response {
    let next = next_page(q.next.as_deref()).to_owned();
    let body = html! {
        @if let Some(e) = &q.error { p class="error" role="alert" { (e) } }
        form class="login" method="post" action="/ui/login" {
            input type="hidden" name="next" value=(next);
            label for="token" { "API token" }
            input id="token" name="token" type="password" autocomplete="off" required autofocus;
            button type="submit" { "Sign in" }
        }
        p { "Paste a token made with " code { "remotask token create" } ". Its role decides what "
            "you may do here: read, submit, or admin." }
    };
    page("Sign in", None, None, body)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

pub(super) async fn login(State(s): State<AppState>, body: Bytes) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return Redirect::to("/ui/login?error=Paste+a+token").into_response();
    };
    let next = next_page(form.next.as_deref()).to_owned();
    let hash = hash_secret(form.token.trim());
    match s.auth.caller_by_hash(&s.service, hash.clone()).await {
        Ok(Some(_)) => {
            let secret = match s.service.start_session(hash).await {
                Ok(secret) => secret,
                Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, None, &e.to_string()),
            };
            (
                [(
                    header::SET_COOKIE,
                    set_cookie(Some(&secret), s.secure_cookies),
                )],
                Redirect::to(&next),
            )
                .into_response()
        }
        Ok(None) => {
            let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
            Redirect::to(&format!(
                "/ui/login?next={next}&error=Unknown+or+revoked+token"
            ))
            .into_response()
        }
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, None, &e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct Csrf {
    csrf: String,
}

/// The refusal (403) of a form whose CSRF token is not the session's.
pub(super) fn forged(viewer: &Viewer, body: &[u8]) -> Option<Response> {
    let given = serde_urlencoded::from_bytes::<Csrf>(body).map(|c| c.csrf);
    let same = given.is_ok_and(|g| super::same_secret(&g, &viewer.csrf));
    if same {
        None
    } else {
        Some(failure(
            StatusCode::FORBIDDEN,
            Some(viewer),
            "the form's CSRF token does not match this session; reload the page and try again",
        ))
    }
}

pub(super) async fn logout(State(s): State<AppState>, viewer: Viewer, body: Bytes) -> Response {
    if let Some(refused) = forged(&viewer, &body) {
        return refused;
    }
    if let Err(e) = s.service.end_session(&viewer.secret).await {
        return failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(&viewer),
            &e.to_string(),
        );
    }
    (
        [(header::SET_COOKIE, set_cookie(None, s.secure_cookies))],
        Redirect::to("/ui/login"),
    )
        .into_response()
}

/// Back to `path` with `note` shown.
pub(super) fn back(path: &str, note: &str) -> Response {
    let note: String = form_urlencoded::byte_serialize(note.as_bytes()).collect();
    let join = if path.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{path}{join}note={note}")).into_response()
}

pub(super) async fn job_action(
    State(s): State<AppState>,
    viewer: Viewer,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(refused) = forged(&viewer, &body).or_else(|| forbidden(&viewer, Role::Submit)) {
        return refused;
    }
    let Ok(id) = id.parse::<JobId>() else {
        return failure(StatusCode::NOT_FOUND, Some(&viewer), "no such job");
    };
    let page = format!("/ui/jobs/{id}");
    let done = match action.as_str() {
        "cancel" => s.service.cancel(id).await.map(|o| match o {
            CancelOutcome::Cancelled => "Cancelled.".to_owned(),
            CancelOutcome::Running => "Cancel sent: the running attempt stops.".to_owned(),
            CancelOutcome::AlreadyEnded(state) => format!("Nothing to cancel: the job is {state}."),
            CancelOutcome::NotFound => "No such job.".to_owned(),
        }),
        "release" => s.service.release(id).await.map(|_| "Released.".to_owned()),
        "retry" => s
            .service
            .retry(id)
            .await
            .map(|_| "Queued again.".to_owned()),
        "delete" => {
            return match s.service.delete(id).await {
                Ok(()) => back("/ui/jobs", &format!("Deleted job {id}.")),
                Err(e) => back(&page, &format!("Not deleted: {e}")),
            };
        }
        _ => return failure(StatusCode::NOT_FOUND, Some(&viewer), "no such action"),
    };
    match done {
        Ok(note) => back(&page, &note),
        Err(e) => back(&page, &format!("Refused: {e}")),
    }
}

/// Whether a `pause` or `resume` action pauses; `None` for any other word.
pub(super) fn pausing(action: &str) -> Option<bool> {
    match action {
        "pause" => Some(true),
        "resume" => Some(false),
        _ => None,
    }
}

pub(super) async fn queue_action(
    State(s): State<AppState>,
    viewer: Viewer,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(refused) = forged(&viewer, &body).or_else(|| forbidden(&viewer, Role::Admin)) {
        return refused;
    }
    let Ok(queue) = name.parse::<QueueName>() else {
        return failure(StatusCode::NOT_FOUND, Some(&viewer), "no such queue");
    };
    let Some(paused) = pausing(&action) else {
        return failure(StatusCode::NOT_FOUND, Some(&viewer), "no such action");
    };
    match s.service.set_paused(&queue, paused).await {
        Ok(()) => back(
            "/ui/queues",
            &format!(
                "Queue {queue} {}.",
                if paused { "paused" } else { "resumed" }
            ),
        ),
        Err(e) => back("/ui/queues", &format!("Refused: {e}")),
    }
}
