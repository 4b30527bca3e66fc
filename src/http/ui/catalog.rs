//! The console's catalog pages: tasks (versions, defaults), schedules (the spec in words, the
//! next fire times, the last job and its result, pause and resume) and, for admins, tokens
//! (create, the secret shown once; list; revoke).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::actions::{back, forged};
use super::pages::{Note, store_failed};
use super::session::Viewer;
use super::{csrf, failure, forbidden, page};
use crate::domain::{
    ModuleDigest, Role, ScheduleName, ScheduleRecord, SpecDef, TaskName, TaskRecord,
};
use crate::http::AppState;
use crate::http::dto::time;

pub(super) async fn tasks(
    State(s): State<AppState>,
    viewer: Viewer,
    Query(note): Query<Note>,
) -> Response {
    let tasks = match s.service.tasks().await {
        Ok(t) => t,
        Err(e) => return store_failed(&viewer, e),
    };
    let body = html! {
        @if viewer.can(Role::Admin) { (super::upload::form(&viewer)) }
        @if tasks.is_empty() { p { "No task is registered." } }
        @for t in &tasks { (task(t)) }
    };
    page("Tasks", Some(&viewer), note.note.as_deref(), body)
}

fn task(t: &TaskRecord) -> Markup {
    let limits = t.defaults.limits.map(|l| {
        let mut parts = vec![format!("max {} s", l.max_time.as_secs_f64())];
        if let Some(ms) = l.cpu_ms() {
            parts.push(format!("cpu {ms} ms"));
        }
        parts.push(format!("fuel {}", l.fuel));
        parts.push(format!("memory {} MiB", l.memory_bytes >> 20));
        parts.push(format!("metering {}", l.metering.as_str()));
        parts.join(", ")
    });
    html! {
        section aria-label={ "Task " (t.name) } {
            h2 { (t.name) }
            dl {
                dt { "Current version" } dd { code { (t.digest.to_hex()) } }
                dt { "Queue" } dd { (t.defaults.queue.as_ref().map_or("default", |q| q.as_str())) }
                dt { "Default limits" } dd { (limits.unwrap_or_else(|| "the queue's".into())) }
                dt { "Retries" }
                dd { (t.defaults.retry.as_ref().map_or("the default policy".into(), |r| r.retries.to_string())) }
                dt { "Updated" } dd { (time(t.updated_at)) }
            }
            div class="scroll" {
                table {
                    thead { tr { th scope="col" { "Version" } th scope="col" class="num" { "Bytes" } th scope="col" { "Registered" } } }
                    tbody {
                        @for v in &t.versions {
                            tr {
                                td { a href={ "/ui/tasks/" (t.name) "/versions/" (v.digest.to_hex()) } {
                                    code { (v.digest.to_hex()) }
                                } }
                                td class="num" { (v.size_bytes) }
                                td { (time(v.created_at)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One version of a task: its admission report (exports, imports, compile time).
pub(super) async fn version(
    State(s): State<AppState>,
    viewer: Viewer,
    Path((name, digest)): Path<(String, String)>,
) -> Response {
    let found = match (name.parse::<TaskName>(), digest.parse::<ModuleDigest>()) {
        (Ok(name), Ok(digest)) => s.service.task_version(&name, digest).await.ok(),
        _ => None,
    };
    match found {
        Some((v, report)) => page(
            &format!("Task {name}, version {}", &digest[..12]),
            Some(&viewer),
            None,
            html! {
                p { "Registered " (time(v.created_at)) "." }
                (super::upload::admitted(&report))
            },
        ),
        None => failure(StatusCode::NOT_FOUND, Some(&viewer), "no such task version"),
    }
}

/// A schedule's spec in words.
fn spec_words(spec: &SpecDef) -> String {
    if let Some(cron) = &spec.cron {
        return format!("cron \"{cron}\" in {}", spec.tz.as_deref().unwrap_or("UTC"));
    }
    if let Some(delay) = spec.delay_seconds {
        return format!("once, {delay} s after it was made");
    }
    let list = |name: &str, v: &Option<Vec<u32>>| {
        v.as_ref().map(|v| {
            let items: Vec<String> = v.iter().map(u32::to_string).collect();
            format!("{name} {}", items.join(", "))
        })
    };
    let parts: Vec<String> = [
        list("minute", &spec.minute),
        list("hour", &spec.hour),
        list("day of month", &spec.day_of_month),
        list("month", &spec.month),
        list("day of week (Monday 0)", &spec.day_of_week),
    ]
    .into_iter()
    .flatten()
    .collect();
    let zone = spec.tz.as_deref().unwrap_or("UTC");
    if parts.is_empty() {
        format!("every minute, {zone}")
    } else {
        format!("at {}, {zone}", parts.join("; "))
    }
}

/// The schedules page's query: a message, and the schedule to fill the form with.
#[derive(Debug, Default, Deserialize)]
pub(super) struct SchedulesQuery {
    note: Option<String>,
    edit: Option<String>,
}

pub(super) async fn schedules(
    State(s): State<AppState>,
    viewer: Viewer,
    Query(q): Query<SchedulesQuery>,
) -> Response {
    let records = match s.service.schedules().await {
        Ok(r) => r,
        Err(e) => return store_failed(&viewer, e),
    };
    let mut shown = Vec::with_capacity(records.len());
    for r in records {
        let next = s
            .service
            .preview_schedule(&r.name, 3)
            .await
            .unwrap_or_default();
        let last = match r.last_job {
            Some(id) => s.service.job(id).await.ok(),
            None => None,
        };
        shown.push((r, next, last));
    }
    let editing = shown
        .iter()
        .find(|(r, _, _)| Some(r.name.as_str()) == q.edit.as_deref())
        .map(|(r, _, _)| super::schedule_form::Fields::of(r))
        .unwrap_or_default();
    let body = html! {
        @if viewer.can(Role::Admin) { (super::schedule_form::form(&viewer, &editing, None)) }
        @if shown.is_empty() { p { "No schedule." } }
        @for (r, next, last) in &shown {
            section aria-label={ "Schedule " (r.name) } {
                h2 { (r.name) @if r.paused { " (paused)" } }
                dl {
                    dt { "When" } dd { (spec_words(&r.spec)) }
                    dt { "Task" } dd { (r.job.task) }
                    dt { "Next fires" }
                    dd { @if next.is_empty() { "none" } @else {
                        (next.iter().map(|t| time(*t)).collect::<Vec<_>>().join(", "))
                    } }
                    dt { "Fired" } dd { (r.fires) " times, " (r.skipped) " passed over" }
                    @if let Some(e) = &r.last_error { dt { "Last error" } dd { (e) } }
                    @if let Some(job) = last {
                        dt { "Last job" }
                        dd {
                            a href={ "/ui/jobs/" (job.id) } { (job.id) }
                            " " span class={ "state-" (job.state.as_str()) } { (job.state.as_str()) }
                        }
                        @if let Some(result) = last_result(job) { dt { "Last result" } dd { (result) } }
                    }
                }
                (schedule_action(r, &viewer))
            }
        }
    };
    page("Schedules", Some(&viewer), q.note.as_deref(), body)
}

fn schedule_action(r: &ScheduleRecord, viewer: &Viewer) -> Markup {
    if !viewer.can(Role::Admin) {
        return html! {};
    }
    let action = if r.paused { "resume" } else { "pause" };
    html! {
        div class="actions" {
            a href={ "/ui/schedules?edit=" (r.name) } { "Edit " (r.name) }
            form method="post" action={ "/ui/schedules/" (r.name) "/" (action) } {
                (csrf(viewer))
                button type="submit" { @if r.paused { "Resume" } @else { "Pause" } }
            }
        }
    }
}

pub(super) async fn schedule_action_post(
    State(s): State<AppState>,
    viewer: Viewer,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(refused) = forged(&viewer, &body).or_else(|| forbidden(&viewer, Role::Admin)) {
        return refused;
    }
    let Ok(name) = name.parse::<ScheduleName>() else {
        return failure(StatusCode::NOT_FOUND, Some(&viewer), "no such schedule");
    };
    let Some(paused) = super::actions::pausing(&action) else {
        return failure(StatusCode::NOT_FOUND, Some(&viewer), "no such action");
    };
    match s.service.set_schedule_paused(&name, paused).await {
        Ok(_) => back(
            "/ui/schedules",
            &format!(
                "Schedule {name} {}.",
                if paused { "paused" } else { "resumed" }
            ),
        ),
        Err(e) => back("/ui/schedules", &format!("Refused: {e}")),
    }
}

pub(super) async fn tokens(
    State(s): State<AppState>,
    viewer: Viewer,
    Query(note): Query<Note>,
) -> Response {
    if let Some(refused) = forbidden(&viewer, Role::Admin) {
        return refused;
    }
    let tokens = match s.service.tokens().await {
        Ok(t) => t,
        Err(e) => return store_failed(&viewer, e),
    };
    let body = html! {
        form class="filters" method="post" action="/ui/tokens" {
            (csrf(&viewer))
            label { "Name" input name="name" required maxlength="64"; }
            label { "Role"
                select name="role" {
                    @for role in ["read", "submit", "worker", "admin"] { option value=(role) { (role) } }
                }
            }
            button type="submit" { "Create token" }
        }
        div class="scroll" {
            table {
                thead { tr {
                    th scope="col" { "Id" } th scope="col" { "Name" } th scope="col" { "Role" }
                    th scope="col" { "Created" } th scope="col" { "Revoked" } th scope="col" { "Action" }
                } }
                tbody {
                    @for t in &tokens {
                        tr {
                            td { code { (t.id) } }
                            td { (t.name) }
                            td { (t.role.as_str()) }
                            td { (time(t.created_at)) }
                            td { (t.revoked_at.map(time).unwrap_or_default()) }
                            td {
                                @if t.revoked_at.is_none() {
                                    form method="post" action={ "/ui/tokens/" (t.id) "/revoke" }
                                        data-token=(t.name) {
                                        (csrf(&viewer))
                                        button type="submit" class="danger" { "Revoke " (t.name) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Tokens", Some(&viewer), note.note.as_deref(), body)
}

#[derive(Debug, Deserialize)]
struct NewToken {
    name: String,
    role: String,
}

pub(super) async fn create_token(
    State(s): State<AppState>,
    viewer: Viewer,
    body: Bytes,
) -> Response {
    if let Some(refused) = forged(&viewer, &body).or_else(|| forbidden(&viewer, Role::Admin)) {
        return refused;
    }
    let made = match serde_urlencoded::from_bytes::<NewToken>(&body) {
        Ok(form) => match form.role.parse::<Role>() {
            Ok(role) => s
                .service
                .create_token(role, form.name.trim())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    match made {
        // The secret is shown on this page only, never again.
        Ok(token) => page(
            "Token created",
            Some(&viewer),
            Some("Copy the secret now: it is not shown again."),
            html! {
                dl {
                    dt { "Name" } dd { (token.record.name) }
                    dt { "Role" } dd { (token.record.role.as_str()) }
                    dt { "Secret" } dd { code id="secret" { (token.secret) } }
                }
                p { a href="/ui/tokens" { "Back to tokens" } }
            },
        ),
        Err(e) => back("/ui/tokens", &format!("Refused: {e}")),
    }
}

pub(super) async fn revoke_token(
    State(s): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(refused) = forged(&viewer, &body).or_else(|| forbidden(&viewer, Role::Admin)) {
        return refused;
    }
    match s.service.revoke_token(&id).await {
        Ok(()) => {
            s.auth.forget();
            back("/ui/tokens", &format!("Token {id} revoked."))
        }
        Err(e) => back("/ui/tokens", &format!("Refused: {e}")),
    }
}

/// What a schedule's last job gave, in a line: the start of its output, or its reason and
/// message if it failed.
fn last_result(job: &crate::domain::Job) -> Option<String> {
    const SHOWN: usize = 200;
    if let Some(error) = &job.error {
        return Some(format!("{}: {}", error.reason.as_str(), error.message));
    }
    let output = job.output.as_deref()?;
    let text = String::from_utf8_lossy(&output[..output.len().min(SHOWN)]).into_owned();
    Some(if output.len() > SHOWN {
        format!("{text}… ({} bytes)", output.len())
    } else {
        text
    })
}
