//! The OpenAPI document made exact where the route annotations leave it loose, in one place so
//! that a new route cannot forget: operation ids are unique (a handler's name shared by two
//! resources, like `list`, is prefixed with its tag); every response has a description; every
//! operation that needs a token says how one is refused (401 none or unknown, 403 the role
//! does not allow it); every operation that writes says the store's disk can be full (507).

use std::collections::HashMap;

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::Response;
use utoipa::openapi::{Content, OpenApi, Ref, RefOr};

/// Completes `doc` as the module comment says.
pub(super) fn complete(doc: &mut OpenApi) {
    unique_operation_ids(doc);
    for item in doc.paths.paths.values_mut() {
        for (writes, operation) in operations(item) {
            let public = operation
                .security
                .as_ref()
                .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
            let responses = &mut operation.responses.responses;
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
