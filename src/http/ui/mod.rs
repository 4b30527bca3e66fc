//! The web console under `/ui`: pages rendered on the server (maud), one stylesheet embedded
//! in the binary, no script needed to read or act. Signing in with a token starts a session
//! (`session.rs`); what a page offers follows the token's role, and every action checks the
//! role again and the session's CSRF token (`actions.rs`). Pages read the service, as the
//! API's handlers do (`pages.rs`: jobs and queues; `catalog.rs`: tasks, schedules, tokens).

mod actions;
mod bulk;
mod catalog;
mod dashboard;
mod live;
mod pages;
mod schedule_form;
mod session;
mod upload;
mod workers;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};

use session::Viewer;

use super::AppState;
use crate::domain::Role;

/// The console's routes, and `/` sending browsers to it.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(dashboard::dashboard))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/login", get(actions::login_form).post(actions::login))
        .route("/ui/logout", post(actions::logout))
        .route("/ui/jobs", get(pages::jobs))
        .route("/ui/jobs/bulk", post(bulk::bulk))
        .route("/ui/jobs/{id}", get(pages::job))
        .route("/ui/jobs/{id}/{action}", post(actions::job_action))
        .route("/ui/queues", get(pages::queues))
        .route("/ui/queues/{name}/{action}", post(actions::queue_action))
        .route("/ui/tasks", get(catalog::tasks).post(upload::upload))
        .route("/ui/tasks/{name}/versions/{digest}", get(catalog::version))
        .route(
            "/ui/schedules",
            get(catalog::schedules).post(schedule_form::submit),
        )
        .route(
            "/ui/schedules/{name}/{action}",
            post(catalog::schedule_action_post),
        )
        .route(
            "/ui/tokens",
            get(catalog::tokens).post(catalog::create_token),
        )
        .route("/ui/tokens/{id}/revoke", post(catalog::revoke_token))
        .route("/ui/workers", get(workers::workers))
        .route("/ui/console.css", get(stylesheet))
        .route("/ui/console.js", get(live::script))
        .route("/ui/live/events", get(live::events))
        .route("/ui/live/jobs/{id}", get(live::job))
        .route("/ui/live/rows/{id}", get(live::row))
        .route("/ui/live/output/{id}", get(live::output))
        .route("/ui/live/bundle/{id}/{n}", get(live::bundle))
}

/// The stylesheet: light and dark (by `prefers-color-scheme`), readable at 375 px.
const CSS: &str = include_str!("console.css");

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

/// A page: `title`, the navigation for `viewer` (none on the sign-in page), a message after
/// an action (`note`), and `body`.
fn page(title: &str, viewer: Option<&Viewer>, note: Option<&str>, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · remotask" }
                link rel="stylesheet" href="/ui/console.css";
                script src="/ui/console.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header {
                    a class="brand" href="/ui" { "remotask" }
                    @if let Some(v) = viewer {
                        nav aria-label="Main" {
                            a href="/ui" { "Dashboard" }
                            a href="/ui/jobs" { "Jobs" }
                            a href="/ui/queues" { "Queues" }
                            a href="/ui/tasks" { "Tasks" }
                            a href="/ui/schedules" { "Schedules" }
                            a href="/ui/workers" { "Workers" }
                            @if v.can(Role::Admin) { a href="/ui/tokens" { "Tokens" } }
                        }
                        form class="signout" method="post" action="/ui/logout" {
                            (csrf(v))
                            span class="role" { (v.role.as_str()) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    @if let Some(note) = note {
                        p class="note" role="status" { (note) }
                    }
                    (body)
                }
            }
        }
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// The hidden CSRF field every form that changes something carries.
fn csrf(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// Whether two secrets are the same, compared in full whatever the first difference, so the
/// time taken says nothing.
fn same_secret(given: &str, kept: &str) -> bool {
    given.len() == kept.len()
        && given
            .bytes()
            .zip(kept.bytes())
            .fold(0u8, |d, (a, b)| d | (a ^ b))
            == 0
}

/// An error page with `status`.
fn failure(status: StatusCode, viewer: Option<&Viewer>, message: &str) -> Response {
    let mut response = page(
        status.canonical_reason().unwrap_or("Error"),
        viewer,
        None,
        html! { p class="error" role="alert" { (message) } },
    );
    *response.status_mut() = status;
    response
}

/// The refusal (403) of what `viewer`'s role does not allow, whatever a page showed.
fn forbidden(viewer: &Viewer, needed: Role) -> Option<Response> {
    if viewer.can(needed) {
        None
    } else {
        Some(failure(
            StatusCode::FORBIDDEN,
            Some(viewer),
            &format!(
                "a {} token cannot do this; it needs the {} role",
                viewer.role, needed
            ),
        ))
    }
}

/// JSON pretty-printed, else the text as it is.
fn pretty(bytes: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}
