//! The console's dashboard: jobs by state and by queue, completed and failed jobs per minute
//! over the last hour (an SVG chart drawn here), what runs now, the newest failures with
//! their reasons, and the slowest tasks among the newest completed jobs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, PreEscaped, html};

use super::page;
use super::pages::{Note, job_table, queue_table, store_failed};
use super::session::Viewer;
use crate::domain::{Job, JobFilter, JobState};
use crate::http::AppState;

/// Completed jobs the "slowest tasks" table is drawn from, newest first.
const SAMPLE: u32 = 500;

pub(super) async fn dashboard(
    State(s): State<AppState>,
    viewer: Viewer,
    Query(note): Query<Note>,
) -> Response {
    let now = s.service.now();
    let hour_ago = now.minus(std::time::Duration::from_secs(3600));
    let newest = |state: JobState, limit: u32| JobFilter {
        states: vec![state],
        limit,
        newest_first: true,
        ..JobFilter::default()
    };
    let service = &s.service;
    let read = async {
        Ok::<_, crate::service::ServiceError>((
            service.queues().await?,
            service.jobs(&newest(JobState::Running, 20)).await?,
            service.jobs(&newest(JobState::Failed, 10)).await?,
            service.jobs(&newest(JobState::Completed, SAMPLE)).await?,
            service.ended_per_minute(hour_ago).await?,
        ))
    };
    let (queues, running, failed, completed, minutes) = match read.await {
        Ok(all) => all,
        Err(e) => return store_failed(&viewer, e),
    };
    let total = |state: JobState| -> u64 {
        queues
            .iter()
            .map(|q| q.counts.get(&state).copied().unwrap_or(0))
            .sum()
    };
    let body = html! {
        h2 { "Jobs by state" }
        div class="cards" {
            @for state in JobState::ALL {
                a class="card" href={ "/ui/jobs?state=" (state.as_str()) } {
                    span class={ "state-" (state.as_str()) } { (state.as_str()) }
                    b { (total(state)) }
                }
            }
        }
        h2 { "The last hour" }
        (chart(&minutes, now.0 / 60_000))
        h2 { "Queues" }
        (queue_table(&queues, &viewer))
        h2 { "Running now" }
        @if running.is_empty() { p { "Nothing is running." } } @else { (job_table(&running, false, None)) }
        h2 { "Recent failures" }
        @if failed.is_empty() { p { "No job has failed." } } @else { (failures(&failed)) }
        h2 { "Slowest tasks" }
        (slowest(&completed))
    };
    page("Dashboard", Some(&viewer), note.note.as_deref(), body)
}

/// Bars a minute for the 60 minutes up to `this_minute`: completed above, failed in red on
/// top; with the totals in words for those who cannot see it.
fn chart(minutes: &[(i64, u64, u64)], this_minute: i64) -> Markup {
    let by_minute: BTreeMap<i64, (u64, u64)> =
        minutes.iter().map(|(m, c, f)| (*m, (*c, *f))).collect();
    let first = this_minute - 59;
    let top = by_minute
        .values()
        .map(|(c, f)| c + f)
        .max()
        .unwrap_or(0)
        .max(1);
    let (width, height, bar) = (600.0, 120.0, 10.0);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
         aria-labelledby=\"chart-title\"><title id=\"chart-title\">Completed and failed jobs \
         per minute, the last hour</title>"
    );
    for (i, m) in (first..=this_minute).enumerate() {
        let (c, f) = by_minute.get(&m).copied().unwrap_or((0, 0));
        let x = i as f64 * bar;
        let hc = c as f64 / top as f64 * height;
        let hf = f as f64 / top as f64 * height;
        let _ = write!(
            svg,
            "<rect class=\"ok\" x=\"{x}\" y=\"{:.1}\" width=\"{}\" height=\"{hc:.1}\"/>\
             <rect class=\"bad\" x=\"{x}\" y=\"{:.1}\" width=\"{}\" height=\"{hf:.1}\"/>",
            height - hc,
            bar - 1.0,
            height - hc - hf,
            bar - 1.0
        );
    }
    svg.push_str("</svg>");
    let (completed, failed) = by_minute
        .values()
        .fold((0, 0), |(c, f), (dc, df)| (c + dc, f + df));
    html! {
        figure {
            (PreEscaped(svg))
            figcaption { (completed) " completed, " (failed) " failed in the last hour; the busiest minute "
                (top) " jobs." }
        }
    }
}

fn failures(jobs: &[Job]) -> Markup {
    html! {
        div class="scroll" {
            table {
                thead { tr {
                    th scope="col" { "Id" } th scope="col" { "Task" } th scope="col" { "Reason" }
                    th scope="col" { "Message" }
                } }
                tbody {
                    @for j in jobs {
                        tr {
                            td { a href={ "/ui/jobs/" (j.id) } { (j.id) } }
                            td { (j.task) }
                            td { (j.error.as_ref().map_or("", |e| e.reason.as_str())) }
                            td { (j.error.as_ref().map_or("", |e| e.message.as_str())) }
                        }
                    }
                }
            }
        }
    }
}

/// Tasks by their slowest run among `completed`, with the mean and how many ran.
fn slowest(completed: &[Job]) -> Markup {
    let mut by_task: BTreeMap<&str, (u64, i64, i64)> = BTreeMap::new();
    for j in completed {
        if let (Some(start), Some(end)) = (j.started_at, j.finished_at) {
            let ms = (end.0 - start.0).max(0);
            let e = by_task.entry(j.task.as_str()).or_insert((0, 0, 0));
            e.0 += 1;
            e.1 += ms;
            e.2 = e.2.max(ms);
        }
    }
    let mut rows: Vec<_> = by_task.into_iter().collect();
    rows.sort_by_key(|(_, (_, _, max))| std::cmp::Reverse(*max));
    rows.truncate(10);
    html! {
        @if rows.is_empty() { p { "No job has completed yet." } } @else {
            p { "Among the " (completed.len()) " newest completed jobs, from start to end." }
            div class="scroll" {
                table id="slowest" {
                    thead { tr {
                        th scope="col" { "Task" } th scope="col" class="num" { "Runs" }
                        th scope="col" class="num" { "Mean ms" } th scope="col" class="num" { "Slowest ms" }
                    } }
                    tbody {
                        @for (task, (n, sum, max)) in &rows {
                            tr {
                                td { a href={ "/ui/jobs?task=" (task) } { (task) } }
                                td class="num" { (n) }
                                td class="num" { (sum / (*n as i64).max(1)) }
                                td class="num" { (max) }
                            }
                        }
                    }
                }
            }
        }
    }
}
