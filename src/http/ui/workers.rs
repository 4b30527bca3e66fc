//! The console's workers page: the remote workers attached to this server (name, address,
//! version, queues, threads, when last seen, gone or not) and the jobs each runs now, beside
//! this server's own guest threads.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::response::Response;
use maud::html;

use super::page;
use super::pages::{Note, store_failed};
use super::session::Viewer;
use crate::domain::{Job, JobFilter, JobState};
use crate::http::AppState;
use crate::http::dto::time;

pub(super) async fn workers(
    State(s): State<AppState>,
    viewer: Viewer,
    Query(note): Query<Note>,
) -> Response {
    let running = JobFilter {
        states: vec![JobState::Running],
        limit: 1000,
        ..JobFilter::default()
    };
    let running = match s.service.jobs(&running).await {
        Ok(j) => j,
        Err(e) => return store_failed(&viewer, e),
    };
    let mut by_worker: BTreeMap<&str, Vec<&Job>> = BTreeMap::new();
    for job in &running {
        by_worker
            .entry(job.worker.as_deref().unwrap_or("?"))
            .or_default()
            .push(job);
    }
    let remote = s.service.workers();
    let body = html! {
        h2 { "Remote workers" }
        @if remote.is_empty() { p { "No remote worker has attached to this server." } } @else {
            div class="scroll" {
                table {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Address" } th scope="col" { "Version" }
                        th scope="col" { "Queues" } th scope="col" class="num" { "Threads" }
                        th scope="col" class="num" { "Running" } th scope="col" { "Last seen" }
                        th scope="col" { "State" }
                    } }
                    tbody {
                        @for w in &remote {
                            tr {
                                td { (w.hello.name) }
                                td { (w.hello.address) }
                                td { (w.hello.version.as_deref().unwrap_or("")) }
                                td { @if w.hello.queues.is_empty() { "all" } @else {
                                    (w.hello.queues.iter().map(|q| q.as_str()).collect::<Vec<_>>().join(", "))
                                } }
                                td class="num" { (w.hello.threads.map(|t| t.to_string()).unwrap_or_default()) }
                                td class="num" { (w.running) }
                                td { (time(w.last_seen)) }
                                td { @if w.gone { "gone" } @else { "connected" } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "What runs where" }
        @if by_worker.is_empty() { p { "Nothing is running." } }
        @for (worker, jobs) in &by_worker {
            h3 { (worker) " (" (jobs.len()) ")" }
            ul {
                @for j in jobs {
                    li { a href={ "/ui/jobs/" (j.id) } { (j.id) } " " (j.task) " in " (j.queue) }
                }
            }
        }
    };
    page("Workers", Some(&viewer), note.note.as_deref(), body)
}
