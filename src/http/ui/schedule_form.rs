//! The schedules page's form (admin): add a schedule or edit one, with a preview of its next
//! fires before it is saved. It takes every kind of spec: a cron expression, field sets, or a
//! single fire after a delay. Editing changes only what the form holds (the spec, the task and
//! the input); the schedule's other settings (queue, priority, limits, overlap, catch-up,
//! paused) stay as they were.

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
use crate::service::{ScheduleRequest, ServiceError};

/// What the form holds, as typed.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub(super) struct Fields {
    pub(super) name: String,
    pub(super) task: String,
    /// Which spec the form gives: `cron`, `fields` or `delay`.
    pub(super) kind: String,
    pub(super) cron: String,
    pub(super) minute: String,
    pub(super) hour: String,
    pub(super) day_of_month: String,
    pub(super) month: String,
    pub(super) day_of_week: String,
    pub(super) delay_seconds: String,
    pub(super) tz: String,
    pub(super) input: String,
    pub(super) action: String,
}

/// A field set as the form shows it: its values joined by commas, blank for any.
fn list_text(values: &Option<Vec<u32>>) -> String {
    values.as_ref().map_or_else(String::new, |v| {
        v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    })
}

/// A field set as typed: comma-separated whole numbers; blank for any.
fn list(name: &str, text: &str) -> Result<Option<Vec<u32>>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.split(',')
        .map(|v| {
            v.trim().parse::<u32>().map_err(|_| {
                format!("{name}: {v:?} is not a whole number; give numbers separated by commas")
            })
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

impl Fields {
    /// The form filled with `r`'s name, task, spec and input.
    pub(super) fn of(r: &ScheduleRecord) -> Self {
        let s = &r.spec;
        let kind = if s.cron.is_some() {
            "cron"
        } else if s.delay_seconds.is_some() {
            "delay"
        } else {
            "fields"
        };
        Self {
            name: r.name.to_string(),
            task: r.job.task.to_string(),
            kind: kind.to_owned(),
            cron: s.cron.clone().unwrap_or_default(),
            minute: list_text(&s.minute),
            hour: list_text(&s.hour),
            day_of_month: list_text(&s.day_of_month),
            month: list_text(&s.month),
            day_of_week: list_text(&s.day_of_week),
            delay_seconds: s.delay_seconds.map(|d| d.to_string()).unwrap_or_default(),
            tz: s.tz.clone().unwrap_or_default(),
            input: String::from_utf8_lossy(&r.job.input).into_owned(),
            action: String::new(),
        }
    }

    /// The spec of the kind chosen, from its fields; why not, if they do not make one.
    fn spec(&self) -> Result<SpecDef, String> {
        let tz = Some(self.tz.trim())
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        match self.kind.as_str() {
            "" | "cron" => Ok(SpecDef {
                cron: Some(self.cron.trim().to_owned()),
                tz,
                ..SpecDef::default()
            }),
            "fields" => {
                let def = SpecDef {
                    minute: list("minute", &self.minute)?,
                    hour: list("hour", &self.hour)?,
                    day_of_month: list("day of month", &self.day_of_month)?,
                    month: list("month", &self.month)?,
                    day_of_week: list("day of week", &self.day_of_week)?,
                    tz,
                    ..SpecDef::default()
                };
                let sets = [&def.minute, &def.hour, &def.day_of_month, &def.month];
                if sets
                    .into_iter()
                    .chain([&def.day_of_week])
                    .all(Option::is_none)
                {
                    return Err(
                        "field sets: give at least one of minute, hour, day of month, \
                                month, day of week"
                            .into(),
                    );
                }
                Ok(def)
            }
            "delay" => {
                let seconds = self.delay_seconds.trim();
                let seconds = seconds
                    .parse::<f64>()
                    .map_err(|_| format!("delay: {seconds:?} is not a number of seconds"))?;
                Ok(SpecDef {
                    delay_seconds: Some(seconds),
                    tz,
                    ..SpecDef::default()
                })
            }
            other => Err(format!("no kind of spec is called {other:?}")),
        }
    }
}

/// The kinds of spec the form offers, with their words.
const KINDS: [(&str, &str); 3] = [
    ("cron", "Cron expression"),
    ("fields", "Field sets"),
    ("delay", "Once, after a delay"),
];

/// The form, filled with `fields`, and the preview of the next fires when there is one.
pub(super) fn form(viewer: &Viewer, fields: &Fields, preview: Option<&[Timestamp]>) -> Markup {
    html! {
        h2 { "Add or edit a schedule" }
        form class="filters" method="post" action="/ui/schedules" {
            (csrf(viewer))
            label { "Name" input name="name" required maxlength="64" value=(fields.name); }
            label { "Task" input name="task" required maxlength="64" value=(fields.task); }
            label { "Kind"
                select name="kind" {
                    @for (value, words) in KINDS {
                        option value=(value) selected[fields.kind == value
                            || (fields.kind.is_empty() && value == "cron")] { (words) }
                    }
                }
            }
            label { "Cron (kind cron)" input name="cron" placeholder="0 3 * * *" value=(fields.cron); }
            label { "Minutes (field sets)" input name="minute" placeholder="0,30" value=(fields.minute); }
            label { "Hours" input name="hour" placeholder="any" value=(fields.hour); }
            label { "Days of month" input name="day_of_month" placeholder="any" value=(fields.day_of_month); }
            label { "Months" input name="month" placeholder="any" value=(fields.month); }
            label { "Days of week (Monday 0)" input name="day_of_week" placeholder="any" value=(fields.day_of_week); }
            label { "Once after seconds (kind delay)" input name="delay_seconds" inputmode="decimal" value=(fields.delay_seconds); }
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
    let spec = match fields.spec() {
        Ok(spec) => spec,
        Err(why) => return again(&viewer, &fields, &why),
    };
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
    let input = fields.input.clone().into_bytes();
    let existing = match s.service.schedule(&name).await {
        Ok(view) => Some(view.schedule),
        Err(ServiceError::ScheduleNotFound(_)) => None,
        Err(e) => return again(&viewer, &fields, &e.to_string()),
    };
    let saved = match existing {
        // What the form does not hold stays as it was.
        Some(r) => {
            let request = ScheduleRequest {
                spec,
                job: JobTemplate {
                    task,
                    // Bytes that are not text were shown as text; unchanged, they stay bytes.
                    input: if String::from_utf8_lossy(&r.job.input) == fields.input {
                        r.job.input
                    } else {
                        input
                    },
                    ..r.job
                },
                overlap: r.overlap,
                catch_up: r.catch_up,
                paused: r.paused,
            };
            s.service.update_schedule(&name, request).await
        }
        None => {
            let request = ScheduleRequest {
                spec,
                job: JobTemplate::of(task, input),
                overlap: Default::default(),
                catch_up: Default::default(),
                paused: false,
            };
            s.service.create_schedule(&name, request).await
        }
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
