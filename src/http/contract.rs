//! The OpenAPI document made exact where the route annotations leave it loose, in one place so
//! that a new route cannot forget: operation ids are unique (a handler's name shared by two
//! resources, like `list`, is prefixed with its tag); every response has a description; every
//! operation that needs a token says how one is refused (401 none or unknown, 403 the role
//! does not allow it); every operation that writes says the store's disk can be full (507);
//! every operation with parameters or a body says a malformed one is refused (400); and a
//! path parameter named `id`, `name` or `digest` has the pattern the server checks.

mod bodies;

use std::collections::HashMap;

use utoipa::openapi::path::{Operation, Parameter, ParameterIn, PathItem};
use utoipa::openapi::response::Response;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Required};

/// Completes `doc` as the module comment says.
pub(super) fn complete(doc: &mut OpenApi) {
    unique_operation_ids(doc);
    module_bodies_are_bytes(doc);
    if let Some(clean) = doc
        .paths
        .paths
        .get_mut("/v1/jobs/clean")
        .and_then(|item| item.post.as_mut())
        && let Some(RefOr::T(body)) = &mut clean.request_body
    {
        // The server cleans every ended job when a clean comes without a body.
        body.required = Some(Required::False);
    }
    schedule_names_required_on_create(doc);
    bodies::exact(doc);
    upload_defaults_are_json(doc);
    for (path, item) in doc.paths.paths.iter_mut() {
        let jobs = path.starts_with("/v1/jobs/");
        for (writes, operation) in operations(item) {
            let public = operation
                .security
                .as_ref()
                .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
            let takes_input = operation.request_body.is_some()
                || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
            for parameter in operation.parameters.iter_mut().flatten() {
                if let RefOr::T(parameter) = parameter {
                    constrain(parameter, jobs);
                }
            }
            let responses = &mut operation.responses.responses;
            if takes_input {
                responses
                    .entry("400".to_owned())
                    .or_insert_with(|| error("400"));
            }
            if !public {
                for status in ["401", "403"] {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(status));
                }
            }
            if writes {
                responses
                    .entry("507".to_owned())
                    .or_insert_with(|| error("507"));
            }
            for (status, response) in responses.iter_mut() {
                if let RefOr::T(response) = response
                    && response.description.is_empty()
                {
                    response.description = described(status).to_owned();
                }
            }
        }
    }
}

/// Prefixes each operation id that more than one operation has with the operation's tag.
fn unique_operation_ids(doc: &mut OpenApi) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for item in doc.paths.paths.values_mut() {
        for (_, operation) in operations(item) {
            if let Some(id) = &operation.operation_id {
                *seen.entry(id.clone()).or_default() += 1;
            }
        }
    }
    for item in doc.paths.paths.values_mut() {
        for (_, operation) in operations(item) {
            let tag = operation.tags.as_ref().and_then(|t| t.first()).cloned();
            if let (Some(id), Some(tag)) = (&mut operation.operation_id, tag)
                && seen.get(id.as_str()).is_some_and(|n| *n > 1)
            {
                *id = format!("{tag}_{id}");
            }
        }
    }
}

/// A job id (26 Crockford base-32 characters; an `id` under `/v1/jobs/`, where `jobs` says
/// the path is), a name (task, queue, schedule) or a module digest in a path, as the server
/// checks it.
fn constrain(parameter: &mut Parameter, jobs: bool) {
    if parameter.parameter_in != ParameterIn::Path {
        return;
    }
    let (pattern, max) = match parameter.name.as_str() {
        "id" if jobs => ("^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$", 26),
        "name" => ("^[a-z0-9][a-z0-9._-]{0,63}$", 64),
        "digest" => ("^[0-9a-f]{64}$", 64),
        _ => return,
    };
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .max_length(Some(max))
        .build();
    parameter.schema = Some(RefOr::T(Schema::Object(schema)));
}

/// A module upload's body is bytes (`string`, `binary`), not the array of integers the
/// route's `Vec<u8>` says; the server reads it whatever its content type, so it is offered
/// as `application/octet-stream` too, which generic clients know how to send.
fn module_bodies_are_bytes(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for (_, operation) in operations(item) {
            let Some(RefOr::T(body)) = &mut operation.request_body else {
                continue;
            };
            if !body.content.contains_key("application/wasm") {
                continue;
            }
            for media in ["application/wasm", "application/octet-stream"] {
                let bytes = ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
                    .build();
                body.content.insert(
                    media.to_owned(),
                    RefOr::T(Content::new(Some(RefOr::T(Schema::Object(bytes))))),
                );
            }
        }
    }
}

/// One body describes a schedule to create and one to update, and only a create must name
/// it: the create's body is `NewSchedule`, that schema with `name` a required string.
fn schedule_names_required_on_create(doc: &mut OpenApi) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(Schema::Object(input))) = components.schemas.get("ScheduleInput") else {
        return;
    };
    let mut create = input.clone();
    let name = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[a-z0-9][a-z0-9._-]{0,63}$"))
        .max_length(Some(64))
        .description(Some("The schedule's name."))
        .build();
    create
        .properties
        .insert("name".to_owned(), RefOr::T(Schema::Object(name)));
    create.required.push("name".to_owned());
    create.description = Some("A schedule to create: as `ScheduleInput`, with its name.".into());
    components
        .schemas
        .insert("NewSchedule".to_owned(), RefOr::T(Schema::Object(create)));
    let body = doc
        .paths
        .paths
        .get_mut("/v1/schedules")
        .and_then(|item| item.post.as_mut())
        .and_then(|create| match &mut create.request_body {
            Some(RefOr::T(body)) => body.content.get_mut("application/json"),
            _ => None,
        });
    if let Some(RefOr::T(json)) = body {
        json.schema = Some(RefOr::Ref(Ref::from_schema_name("NewSchedule")));
    }
}

/// An upload's `defaults` parameter is a `TaskDefaultsDto` written as JSON, which OpenAPI
/// says with the parameter's `content` (a generic client sends it serialized).
fn upload_defaults_are_json(doc: &mut OpenApi) {
    let upload = doc
        .paths
        .paths
        .get_mut("/v1/tasks/{name}")
        .and_then(|item| item.put.as_mut());
    for parameter in upload
        .into_iter()
        .flat_map(|u| u.parameters.iter_mut().flatten())
    {
        if let RefOr::T(p) = parameter
            && p.name == "defaults"
        {
            p.schema = None;
            p.content.insert(
                "application/json".to_owned(),
                RefOr::T(Content::new(Some(RefOr::Ref(Ref::from_schema_name(
                    "TaskDefaultsDto",
                ))))),
            );
        }
    }
}

/// The operations of a path, each with whether it writes.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (bool, &mut Operation)> {
    [
        (false, item.get.as_mut()),
        (true, item.put.as_mut()),
        (true, item.post.as_mut()),
        (true, item.patch.as_mut()),
        (true, item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(writes, operation)| operation.map(|o| (writes, o)))
}

/// An error response: the one error shape, described by its status.
fn error(status: &str) -> RefOr<Response> {
    let mut response = Response::new(described(status));
    response.content.insert(
        "application/json".to_owned(),
        RefOr::T(Content::new(Some(RefOr::Ref(Ref::from_schema_name(
            "ErrorBody",
        ))))),
    );
    RefOr::T(response)
}

/// What a status means in this API, for a response the annotations left undescribed.
fn described(status: &str) -> &'static str {
    match status {
        "200" => "the answer",
        "201" => "created",
        "202" => "accepted: stored, and run when a worker takes it",
        "204" => "done; no content",
        "400" => "the request is malformed: the message names the field or parameter",
        "401" => "no token, or an unknown or revoked one",
        "403" => "the token's role does not allow this",
        "404" => "not found",
        "409" => "the current state does not allow this",
        "413" => "the body is over its cap",
        "422" => "refused: the message says why",
        "503" => "the store cannot be used now",
        "507" => "the store's disk is full: nothing was stored",
        _ => "see the error's code and message",
    }
}
