//! The job table's bulk form: cancel, retry or delete the jobs selected, or every job that
//! matches the table's filters (cancel in one store call; retry and delete a page at a time,
//! at most [`MAX_ALL`] jobs a click). Back to the table with what was done and refused.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::actions::{back, forged};
use super::session::Viewer;
use super::{failure, forbidden};
use crate::domain::{CancelOutcome, JobFilter, JobId, JobState, Role};
use crate::http::AppState;
use crate::service::{Service, ServiceResult};

/// The most jobs "retry all" or "delete all" moves in one click.
const MAX_ALL: usize = 10_000;

/// The form: the action, the ids checked, and the table's filters.
#[derive(Debug, Default)]
struct Bulk {
    action: String,
    ids: Vec<String>,
    filter: Vec<(String, String)>,
}

fn read(body: &[u8]) -> Bulk {
    let mut bulk = Bulk::default();
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "action" => bulk.action = v.into_owned(),
            "id" => bulk.ids.push(v.into_owned()),
            "state" | "task" | "queue" | "context" if !v.trim().is_empty() => {
                bulk.filter.push((k.into_owned(), v.trim().to_owned()));
            }
            _ => {}
        }
    }
    bulk
}

impl Bulk {
    fn job_filter(&self, limit: u32) -> Result<JobFilter, String> {
        let mut f = JobFilter {
            limit,
            ..JobFilter::default()
        };
        for (k, v) in &self.filter {
            match k.as_str() {
                "state" => f.states = vec![v.parse::<JobState>()?],
                "task" => f.task = Some(v.parse().map_err(|e| format!("{e}"))?),
                "queue" => f.queue = Some(v.parse().map_err(|e| format!("{e}"))?),
                _ => f.context = Some(v.clone()),
            }
        }
        Ok(f)
    }

    /// The table to go back to, with its filters.
    fn table(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.extend_pairs(&self.filter);
        let query = query.finish();
        if query.is_empty() {
            "/ui/jobs".to_owned()
        } else {
            format!("/ui/jobs?{query}")
        }
    }
}

/// One job's move; whether it was made (a cancel of an ended job is not).
async fn one(service: &Service, id: JobId, action: &str) -> bool {
    match action {
        "retry" => service.retry(id).await.is_ok(),
        "delete" => service.delete(id).await.is_ok(),
        _ => matches!(
            service.cancel(id).await,
            Ok(CancelOutcome::Cancelled | CancelOutcome::Running)
        ),
    }
}

/// The ids of up to [`MAX_ALL`] jobs matching `filter`, a page at a time.
async fn matching(service: &Service, mut filter: JobFilter) -> ServiceResult<Vec<JobId>> {
    let mut ids = Vec::new();
    loop {
        let page = service.jobs(&filter).await?;
        ids.extend(page.iter().map(|j| j.id));
        if page.len() < filter.limit as usize || ids.len() >= MAX_ALL {
            ids.truncate(MAX_ALL);
            return Ok(ids);
        }
        filter.after = page.last().map(|j| j.id);
    }
}

pub(super) async fn bulk(State(s): State<AppState>, viewer: Viewer, body: Bytes) -> Response {
    if let Some(refused) = forged(&viewer, &body).or_else(|| forbidden(&viewer, Role::Submit)) {
        return refused;
    }
    let form = read(&body);
    let table = form.table();
    let (action, all) = match form.action.as_str() {
        a @ ("cancel" | "retry" | "delete") => (a, false),
        "cancel-all" => ("cancel", true),
        "retry-all" => ("retry", true),
        "delete-all" => ("delete", true),
        _ => return failure(StatusCode::BAD_REQUEST, Some(&viewer), "no such action"),
    };
    let filter = match form.job_filter(1000) {
        Ok(f) => f,
        Err(e) => return failure(StatusCode::BAD_REQUEST, Some(&viewer), &e),
    };
    if all && action == "cancel" {
        return match s.service.cancel_matching(&filter).await {
            Ok(n) => back(&table, &format!("Cancelled {n} matching jobs.")),
            Err(e) => back(&table, &format!("Refused: {e}")),
        };
    }
    let ids: Vec<JobId> = if all {
        match matching(&s.service, filter).await {
            Ok(ids) => ids,
            Err(e) => return back(&table, &format!("Refused: {e}")),
        }
    } else {
        match form.ids.iter().map(|i| i.parse()).collect::<Result<_, _>>() {
            Ok(ids) => ids,
            Err(e) => return failure(StatusCode::BAD_REQUEST, Some(&viewer), &format!("{e}")),
        }
    };
    if ids.is_empty() {
        return back(&table, "No job selected.");
    }
    let (mut done, mut refused) = (0, 0);
    for id in &ids {
        if one(&s.service, *id, action).await {
            done += 1;
        } else {
            refused += 1;
        }
    }
    let verb = match action {
        "retry" => "Retried",
        "delete" => "Deleted",
        _ => "Cancelled",
    };
    let note = if refused == 0 {
        format!("{verb} {done} jobs.")
    } else {
        format!("{verb} {done} jobs; {refused} refused (their state does not allow it).")
    };
    back(&table, &note)
}
