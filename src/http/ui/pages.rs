//! The console's job and queue pages: the job table (filters, keyset pages), one job
//! (input, output, attempts with their receipts and logs, the explain answer, the actions
//! the viewer's role allows), and the queues.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::session::Viewer;
use super::{csrf, failure, page, pretty};
use crate::domain::{AttemptRecord, Job, JobFilter, JobId, JobState, Role};
use crate::http::AppState;
use crate::http::dto::{ReceiptDto, time};

/// A message to show after an action, carried by the redirect.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Note {
    pub(super) note: Option<String>,
}

pub(super) fn store_failed(viewer: &Viewer, e: impl std::fmt::Display) -> Response {
    failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        Some(viewer),
        &e.to_string(),
    )
}

/// The job table's query: filters and the page.
#[derive(Debug, Default, Deserialize)]
pub(super) struct JobsQuery {
    state: Option<String>,
    task: Option<String>,
    queue: Option<String>,
    context: Option<String>,
    /// A job id to go to.
    id: Option<String>,
    after: Option<String>,
    /// `oldest` for oldest first; newest first otherwise.
    order: Option<String>,
    note: Option<String>,
}

impl JobsQuery {
    /// The table's filters that were filled in, as query pairs.
    fn filters(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("state", &self.state),
            ("task", &self.task),
            ("queue", &self.queue),
            ("context", &self.context),
        ]
        .into_iter()
        .filter_map(|(k, v)| given(v).map(|v| (k, v)))
    }
}

/// A query field that was filled in.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// How many jobs a page of the table shows.
const PAGE: u32 = 50;

pub(super) async fn jobs(
    State(s): State<AppState>,
    viewer: Viewer,
    Query(q): Query<JobsQuery>,
) -> Response {
    if let Some(id) = given(&q.id) {
        return match id.parse::<JobId>() {
            Ok(id) => axum::response::Redirect::to(&format!("/ui/jobs/{id}")).into_response(),
            Err(e) => failure(StatusCode::BAD_REQUEST, Some(&viewer), &e.to_string()),
        };
    }
    let filter = (|| -> Result<JobFilter, String> {
        Ok(JobFilter {
            states: match given(&q.state) {
                Some(s) => vec![s.parse::<JobState>()?],
                None => Vec::new(),
            },
            task: given(&q.task)
                .map(str::parse)
                .transpose()
                .map_err(|e: crate::domain::NameError| e.to_string())?,
            queue: given(&q.queue)
                .map(str::parse)
                .transpose()
                .map_err(|e: crate::domain::NameError| e.to_string())?,
            context: given(&q.context).map(str::to_owned),
            unique_key: None,
            after: given(&q.after)
                .map(str::parse)
                .transpose()
                .map_err(|e: crate::domain::JobIdError| e.to_string())?,
            limit: PAGE,
            newest_first: given(&q.order) != Some("oldest"),
        })
    })();
    let filter = match filter {
        Ok(f) => f,
        Err(e) => return failure(StatusCode::BAD_REQUEST, Some(&viewer), &e),
    };
    let jobs = match s.service.jobs(&filter).await {
        Ok(j) => j,
        Err(e) => return store_failed(&viewer, e),
    };
    let field = |v: &Option<String>| v.clone().unwrap_or_default();
    // On the first page, newest first, the script adds the rows of new jobs that match.
    let new_rows = (given(&q.after).is_none() && given(&q.order) != Some("oldest")).then(|| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.extend_pairs(q.filters());
        if viewer.can(Role::Submit) {
            query.append_pair("select", "1");
        }
        query.finish()
    });
    let next = (jobs.len() == PAGE as usize)
        .then(|| jobs.last().map(|j| j.id.to_string()))
        .flatten()
        .map(|after| {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.extend_pairs(q.filters());
            if let Some(order) = given(&q.order) {
                query.append_pair("order", order);
            }
            query.append_pair("after", &after);
            format!("/ui/jobs?{}", query.finish())
        });
    let body = html! {
        form class="filters" method="get" action="/ui/jobs" {
            label { "State"
                select name="state" {
                    option value="" { "any" }
                    @for state in JobState::ALL {
                        option value=(state.as_str())
                            selected[given(&q.state) == Some(state.as_str())] { (state.as_str()) }
                    }
                }
            }
            label { "Task" input name="task" value=(field(&q.task)); }
            label { "Queue" input name="queue" value=(field(&q.queue)); }
            label { "Context" input name="context" value=(field(&q.context)); }
            label { "Order"
                select name="order" {
                    option value="newest" { "newest first" }
                    option value="oldest" selected[given(&q.order) == Some("oldest")] { "oldest first" }
                }
            }
            button type="submit" { "Filter" }
        }
        form class="filters" method="get" action="/ui/jobs" {
            label { "Job id" input name="id" required; }
            button type="submit" { "Go to job" }
        }
        @if jobs.is_empty() {
            p { "No jobs match." }
        }
        // The table, empty too on the first page: new jobs' rows may come into it.
        @if !jobs.is_empty() || new_rows.is_some() {
            @if viewer.can(Role::Submit) {
                form method="post" action="/ui/jobs/bulk" {
                    (csrf(&viewer))
                    @for (k, v) in q.filters() { input type="hidden" name=(k) value=(v); }
                    div class="actions" {
                        button type="submit" name="action" value="cancel" class="danger" { "Cancel selected" }
                        button type="submit" name="action" value="retry" { "Retry selected" }
                        button type="submit" name="action" value="delete" class="danger" { "Delete selected" }
                        button type="submit" name="action" value="cancel-all" class="danger" { "Cancel all matching" }
                        button type="submit" name="action" value="retry-all" { "Retry all matching" }
                        button type="submit" name="action" value="delete-all" class="danger" { "Delete all matching" }
                    }
                    (job_table(&jobs, true, new_rows.as_deref()))
                }
            } @else {
                (job_table(&jobs, false, new_rows.as_deref()))
            }
        }
        @if let Some(next) = next {
            p { a href=(next) rel="next" { "Next page" } }
        }
    };
    page("Jobs", Some(&viewer), q.note.as_deref(), body)
}

/// The table of `jobs`; with `select`, a checkbox a row, for the bulk form around it; with
/// `new_rows` (the first page, newest first), the query its script adds new jobs' rows by.
pub(super) fn job_table(jobs: &[Job], select: bool, new_rows: Option<&str>) -> Markup {
    html! {
        div class="scroll" {
            table data-live-table data-new-rows=[new_rows] {
                thead { tr {
                    @if select { th scope="col" { span class="hidden" { "Select" } } }
                    th scope="col" { "Id" } th scope="col" { "Task" } th scope="col" { "Queue" }
                    th scope="col" { "State" } th scope="col" class="num" { "Attempts" }
                    th scope="col" { "Reason" } th scope="col" { "Created" }
                    th scope="col" { "Started" } th scope="col" { "Ended" }
                } }
                tbody {
                    @for j in jobs { (job_row(j, select)) }
                }
            }
        }
    }
}

/// One row of the job table (`select`: with its checkbox).
pub(super) fn job_row(j: &Job, select: bool) -> Markup {
    html! {
        tr id={ "job-" (j.id) } {
            @if select {
                td { label {
                    input type="checkbox" name="id" value=(j.id);
                    span class="hidden" { "Select job " (j.id) }
                } }
            }
            td { a href={ "/ui/jobs/" (j.id) } { (j.id) } }
            td { (j.task) }
            td { (j.queue) }
            td class={ "state-" (j.state.as_str()) } data-state=(j.state.as_str()) { (j.state.as_str()) }
            td class="num" { (j.attempts) "/" (j.retry.retries + 1) }
            td { (j.error.as_ref().map_or("", |e| e.reason.as_str())) }
            td { (time(j.created_at)) }
            td { (j.started_at.map(time).unwrap_or_default()) }
            td { (j.finished_at.map(time).unwrap_or_default()) }
        }
    }
}

pub(super) async fn job(
    State(s): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(note): Query<Note>,
) -> Response {
    let Ok(id) = id.parse::<JobId>() else {
        return failure(StatusCode::NOT_FOUND, Some(&viewer), "no such job");
    };
    let job = match s.service.job(id).await {
        Ok(job) => job,
        Err(e) => return failure(StatusCode::NOT_FOUND, Some(&viewer), &e.to_string()),
    };
    let (attempts, explain) = match (s.service.attempts(id).await, s.service.explain(id).await) {
        (Ok(a), Ok(e)) => (a, e),
        (Err(e), _) | (_, Err(e)) => return store_failed(&viewer, e),
    };
    let body = html! {
        (job_actions(&job, &viewer))
        dl data-live-job=(job.id) data-terminal=(job.state.is_terminal()) {
            dt { "State" } dd { span id="job-state" class={ "state-" (job.state.as_str()) } { (job.state.as_str()) } }
            dt { "Why" } dd { (explain.message) }
            dt { "Task" } dd { (job.task) " (" (job.digest.to_hex()) ")" }
            dt { "Queue" } dd { (job.queue) }
            dt { "Priority" } dd { (job.priority) }
            dt { "Attempts" } dd { (job.attempts) " of " (job.retry.retries + 1) }
            @if !job.state.is_terminal() || job.progress.is_some() {
                @let (done, total) = job.progress.unwrap_or((0, 0));
                dt { label for="job-progress" { "Progress" } }
                dd { progress id="job-progress" value=(done) max=(total.max(1)) { (done) "/" (total) }
                     span { " " (done) "/" (total) } }
            }
            @if let Some(c) = &job.context { dt { "Context" } dd { (c) } }
            @if let Some(k) = &job.concurrency_key { dt { "Concurrency key" } dd { (k) } }
            @if let Some(k) = &job.unique_key { dt { "Unique key" } dd { (k) } }
            dt { "Created" } dd { (time(job.created_at)) }
            @if let Some(t) = job.started_at { dt { "Started" } dd { (time(t)) } }
            @if let Some(t) = job.finished_at { dt { "Ended" } dd { (time(t)) } }
            @if let Some(e) = &job.error { dt { "Error" } dd { (e.reason) ": " (e.message) } }
        }
        h2 { "Input" }
        @if job.input.is_empty() { p { "None." } } @else { pre { (pretty(&job.input)) } }
        @if let Some(output) = &job.output {
            h2 { "Output" }
            pre { (pretty(output)) }
            p { a href={ "/ui/live/output/" (job.id) } download { "Download the output" } }
        }
        h2 { "Attempts" }
        @if attempts.is_empty() { p { "No attempt has ended yet." } }
        @for a in &attempts { (attempt(job.id, a)) }
    };
    page(
        &format!("Job {id}"),
        Some(&viewer),
        note.note.as_deref(),
        body,
    )
}

/// The buttons of the moves the job's state and the viewer's role allow.
fn job_actions(job: &Job, viewer: &Viewer) -> Markup {
    use crate::domain::Event;
    if !viewer.can(Role::Submit) {
        return html! {};
    }
    let can = |event: Event| event.apply(Some(job.state)).is_ok();
    let button = |action: &str, label: &str, danger: bool| {
        html! {
            form method="post" action={ "/ui/jobs/" (job.id) "/" (action) } {
                (csrf(viewer))
                button type="submit" class=[danger.then_some("danger")] { (label) }
            }
        }
    };
    html! {
        div class="actions" {
            @if job.state == JobState::Running || can(Event::Cancel) {
                (button("cancel", "Cancel", true))
            }
            @if can(Event::Release) { (button("release", "Release", false)) }
            @if can(Event::Retry) { (button("retry", "Retry", false)) }
            @if can(Event::Delete) { (button("delete", "Delete", true)) }
        }
    }
}

fn attempt(job: JobId, a: &AttemptRecord) -> Markup {
    let receipt = ReceiptDto::from_stored(&a.receipt);
    let why_not = match &a.replay {
        None => Some("it was not recorded".to_owned()),
        Some(r) => r.recording.not_replayable.clone(),
    };
    html! {
        section aria-label={ "Attempt " (a.number) } {
            h2 { "Attempt " (a.number) ": " (a.reason) }
            @match (&a.replay, &why_not) {
                (Some(_), None) => p {
                    a href={ "/ui/live/bundle/" (job) "/" (a.number) } download {
                        "Download the repro bundle"
                    }
                    " (run it again with " code { "remotask replay" } ")"
                },
                (Some(_), Some(why)) => p {
                    a href={ "/ui/live/bundle/" (job) "/" (a.number) } download {
                        "Download the bundle"
                    }
                    " (not replayable: " (why) ")"
                },
                (None, _) => p { "No repro bundle: the attempt was not recorded." },
            }
            dl {
                @if let Some(k) = a.trap_kind { dt { "Trap" } dd { (k.as_str()) } }
                @if let Some(c) = a.exit_code { dt { "Exit code" } dd { (c) } }
                @if let Some(m) = &a.message { dt { "Message" } dd { (m) } }
                dt { "Worker" } dd { (a.worker) }
                dt { "Wall time" } dd { (format!("{:.1} ms", receipt.wall_us as f64 / 1000.0)) }
                @if let Some(f) = receipt.fuel_consumed { dt { "Fuel" } dd { (f) } }
                dt { "CPU time" } dd { (format!("{:.1} ms", receipt.cpu_us as f64 / 1000.0)) }
                dt { "Peak memory" } dd { (receipt.peak_memory_bytes) " bytes" }
                dt { "Compiled code" } dd { (receipt.compile_cache) }
            }
            @if !a.stderr.is_empty() {
                h3 { "Log" @if a.stderr_truncated { " (truncated)" } }
                pre { (String::from_utf8_lossy(&a.stderr)) }
            }
        }
    }
}

pub(super) async fn queues(
    State(s): State<AppState>,
    viewer: Viewer,
    Query(note): Query<Note>,
) -> Response {
    match s.service.queues().await {
        Ok(queues) => page(
            "Queues",
            Some(&viewer),
            note.note.as_deref(),
            queue_table(&queues, &viewer),
        ),
        Err(e) => store_failed(&viewer, e),
    }
}

pub(super) fn queue_table(queues: &[crate::domain::QueueStats], viewer: &Viewer) -> Markup {
    let count = |q: &crate::domain::QueueStats, s: JobState| q.counts.get(&s).copied().unwrap_or(0);
    html! {
        div class="scroll" {
            table {
                thead { tr {
                    th scope="col" { "Queue" } th scope="col" { "State" }
                    th scope="col" class="num" { "Concurrency" }
                    @for state in JobState::ALL { th scope="col" class="num" { (state.as_str()) } }
                    @if viewer.can(Role::Admin) { th scope="col" { "Action" } }
                } }
                tbody {
                    @for q in queues {
                        tr {
                            td { a href={ "/ui/jobs?queue=" (q.config.name) } { (q.config.name) } }
                            td { @if q.paused { "paused" } @else { "active" } }
                            td class="num" { (q.config.concurrency) }
                            @for state in JobState::ALL { td class="num" { (count(q, state)) } }
                            @if viewer.can(Role::Admin) {
                                td {
                                    form method="post"
                                        action={ "/ui/queues/" (q.config.name) "/"
                                            (if q.paused { "resume" } else { "pause" }) } {
                                        (csrf(viewer))
                                        button type="submit" {
                                            @if q.paused { "Resume " } @else { "Pause " }
                                            (q.config.name)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
