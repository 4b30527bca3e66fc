//! The schedules page's form (admin): add a cron schedule or edit one, with a preview of its
//! next fires before it is saved. Schedules given as field sets or a delay are edited over the
//! API; the form shows and saves cron specs.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::actions::{back, forged};
use super::session::Viewer;
use super::{csrf, failure, forbidden, page};
use crate::domain::{
    JobTemplate, Role, ScheduleName, ScheduleRecord, SpecDef, TaskName, Timestamp,
};
use crate::http::AppState;
use crate::http::dto::time;
use crate::service::ScheduleRequest;

/// What the form holds, as typed.
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct Fields {
    pub(super) name: String,
    pub(super) task: String,
    pub(super) cron: String,
    #[serde(default)]
    pub(super) tz: String,
    #[serde(default)]
    pub(super) input: String,
    #[serde(default)]
    pub(super) action: String,
}

impl Fields {
    /// The form filled with `r`'s name, task, cron spec and input.
    pub(super) fn of(r: &ScheduleRecord) -> Self {
        Self {
            name: r.name.to_string(),
            task: r.job.task.to_string(),
            cron: r.spec.cron.clone().unwrap_or_default(),
            tz: r.spec.tz.clone().unwrap_or_default(),
            input: String::from_utf8_lossy(&r.job.input).into_owned(),
            action: String::new(),
        }
    }

    fn spec(&self) -> SpecDef {
        SpecDef {
            cron: Some(self.cron.trim().to_owned()),
            tz: Some(self.tz.trim())
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            ..SpecDef::default()
        }
    }
}

/// The form, filled with `fields`, and the preview of the next fires when there is one.
pub(super) fn form(viewer: &Viewer, fields: &Fields, preview: Option<&[Timestamp]>) -> Markup {
    html! {
        h2 { "Add or edit a schedule" }
        form class="filters" method="post" action="/ui/schedules" {
            (csrf(viewer))
            label { "Name" input name="name" required maxlength="64" value=(fields.name); }
            label { "Task" input name="task" required maxlength="64" value=(fields.task); }
            label { "Cron" input name="cron" required placeholder="0 3 * * *" value=(fields.cron); }
            label { "Time zone" input name="tz" placeholder="UTC" value=(fields.tz); }
            label { "Input (JSON or text)" input name="input" value=(fields.input); }
            button type="submit" name="action" value="preview" { "Preview" }
            button type="submit" name="action" value="save" { "Save" }
        }
        @if let Some(times) = preview {
            section aria-label="Preview" {
                h3 { "Next fires" }
                @if times.is_empty() { p { "It would not fire again." } }
                ol id="preview" { @for t in times { li { (time(*t)) } } }
            }
        }
    }
}

pub(super) async fn submit(State(s): State<AppState>, viewer: Viewer, body: Bytes) -> Response {
    if let Some(refused) = forged(&viewer, &body).or_else(|| forbidden(&viewer, Role::Admin)) {
        return refused;
    }
    let fields: Fields = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(e) => return failure(StatusCode::BAD_REQUEST, Some(&viewer), &e.to_string()),
    };
    let spec = fields.spec();
    let parsed = match spec.parse() {
        Ok(p) => p,
        Err(e) => return again(&viewer, &fields, &e.to_string()),
    };
    if fields.action != "save" {
        let times = parsed.preview(s.service.now(), 5);
        let body = form(&viewer, &fields, Some(&times));
        return page("Schedule preview", Some(&viewer), None, body);
    }
    let (name, task) = match (
        fields.name.trim().parse::<ScheduleName>(),
        fields.task.trim().parse::<TaskName>(),
    ) {
        (Ok(n), Ok(t)) => (n, t),
        (Err(e), _) => return again(&viewer, &fields, &e.to_string()),
        (_, Err(e)) => return again(&viewer, &fields, &e.to_string()),
    };
    let request = ScheduleRequest {
        spec,
        job: JobTemplate {
            task,
            input: fields.input.clone().into_bytes(),
            args: Vec::new(),
            env: Vec::new(),
            queue: None,
            priority: 0,
            limits: Default::default(),
            retry: None,
            context: None,
            concurrency_key: None,
        },
        overlap: Default::default(),
        catch_up: Default::default(),
        paused: false,
    };
    let saved = match s.service.schedule(&name).await {
        Ok(_) => s.service.update_schedule(&name, request).await,
        Err(_) => s.service.create_schedule(&name, request).await,
    };
    match saved {
        Ok(r) => back(
            "/ui/schedules",
            &format!(
                "Schedule {name} saved; next fire {}.",
                r.next_fire.map_or("none".to_owned(), time)
            ),
        ),
        Err(e) => again(&viewer, &fields, &e.to_string()),
    }
}

/// The form again, as typed, with why it was not taken.
fn again(viewer: &Viewer, fields: &Fields, why: &str) -> Response {
    let mut response = page(
        "Schedule not saved",
        Some(viewer),
        None,
        html! {
            p class="error" role="alert" { (why) }
            (form(viewer, fields, None))
        },
    );
    *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    response
}
