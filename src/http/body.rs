//! Reading request bodies and query strings into typed values, with our error shape: a body
//! over its cap is 413, malformed JSON is 400 naming the field and what was wrong with it.

use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ApiResult};

/// Reads a whole body of at most `cap` bytes.
pub(super) async fn read_body(body: Body, cap: usize, what: &str) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, cap).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over {
            ApiError::too_large(what, cap)
        } else {
            ApiError::bad_request(
                "unreadable_body",
                format!("the request body could not be read: {e}"),
            )
        }
    })
}

/// Parses JSON, naming the path of the offending field in the error.
pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path == "." || path.is_empty() {
            format!("invalid JSON body: {inner}")
        } else {
            format!("invalid JSON body at `{path}`: {inner}")
        };
        ApiError::bad_request("invalid_json", message)
    })
}

/// A query string parsed into `T`; a bad one is 400 naming the parameter.
#[derive(Debug, Clone, Default)]
pub(super) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = if path == "." {
                    format!("invalid query string: {}", e.inner())
                } else {
                    format!("invalid query parameter `{path}`: {}", e.inner())
                };
                ApiError::bad_request("invalid_query", message)
            })
    }
}
