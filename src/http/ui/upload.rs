//! The tasks page's upload form (admin): a module file under a task name, sent as
//! `multipart/form-data`; the answer is the admission report (exports, imports, compile time)
//! or the reasons the module was refused, as the API would give them.

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

use super::session::Viewer;
use super::{csrf, failure, forbidden, page};
use crate::domain::{Role, TaskName};
use crate::http::AppState;
use crate::sandbox::AdmissionReport;
use crate::service::ServiceError;

/// The form, for the tasks page.
pub(super) fn form(viewer: &Viewer) -> Markup {
    html! {
        h2 { "Upload a module" }
        form class="filters" method="post" action="/ui/tasks" enctype="multipart/form-data" {
            (csrf(viewer))
            label { "Task name" input name="name" required maxlength="64" pattern="[a-z0-9][a-z0-9._-]{0,63}"; }
            label { "Module (.wasm)" input type="file" name="module" accept=".wasm,application/wasm" required; }
            button type="submit" { "Upload" }
        }
    }
}

/// The fields of the form as sent.
#[derive(Default)]
struct Upload {
    csrf: String,
    name: String,
    module: Vec<u8>,
}

async fn read(mut form: Multipart, cap: usize) -> Result<Upload, String> {
    let mut upload = Upload::default();
    while let Some(mut field) = form.next_field().await.map_err(|e| e.to_string())? {
        let name = field.name().unwrap_or_default().to_owned();
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(|e| e.to_string())? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > cap {
                return Err(format!("the module is over the cap of {cap} bytes"));
            }
        }
        match name.as_str() {
            "csrf" => upload.csrf = String::from_utf8_lossy(&bytes).into_owned(),
            "name" => upload.name = String::from_utf8_lossy(&bytes).trim().to_owned(),
            "module" => upload.module = bytes,
            _ => {}
        }
    }
    Ok(upload)
}

pub(super) async fn upload(State(s): State<AppState>, viewer: Viewer, form: Multipart) -> Response {
    if let Some(refused) = forbidden(&viewer, Role::Admin) {
        return refused;
    }
    let upload = match read(form, s.caps.module_bytes).await {
        Ok(u) => u,
        Err(e) => return failure(StatusCode::BAD_REQUEST, Some(&viewer), &e),
    };
    if !super::same_secret(&upload.csrf, &viewer.csrf) {
        return failure(
            StatusCode::FORBIDDEN,
            Some(&viewer),
            "the form's CSRF token does not match this session; reload the page and try again",
        );
    }
    let name: TaskName = match upload.name.parse() {
        Ok(n) => n,
        Err(e) => return refused_page(&viewer, &upload.name, &format!("{e}")),
    };
    match s.service.register_task(&name, upload.module, None).await {
        Ok((_, report)) => page(
            &format!("Task {name} registered"),
            Some(&viewer),
            Some("The module was admitted."),
            admitted(&report),
        ),
        Err(ServiceError::Refused(e)) => refused_page(&viewer, name.as_str(), &e.to_string()),
        Err(e) => refused_page(&viewer, name.as_str(), &e.to_string()),
    }
}

fn refused_page(viewer: &Viewer, name: &str, why: &str) -> Response {
    let mut response = page(
        "Module refused",
        Some(viewer),
        None,
        html! {
            p class="error" role="alert" { "Task " (name) " was not registered: " (why) }
            p { a href="/ui/tasks" { "Back to tasks" } }
        },
    );
    *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    response
}

pub(super) fn admitted(report: &AdmissionReport) -> Markup {
    html! {
        dl {
            dt { "Digest" } dd { code { (report.digest.to_hex()) } }
            dt { "Size" } dd { (report.size_bytes) " bytes" }
            dt { "Compiled in" } dd { (format!("{:.1} ms", report.compile_ms)) " (" (report.compile_cache.as_str()) ")" }
        }
        h2 { "Exports" }
        ul { @for e in &report.exports { li { code { (e.name) } " (" (e.kind) ")" } } }
        h2 { "Imports" }
        ul { @for i in &report.imports { li { code { (i.module) "." (i.name) } " (" (i.kind) ")" } } }
        p { a href="/ui/tasks" { "Back to tasks" } }
    }
}
