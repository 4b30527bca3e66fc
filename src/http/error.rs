//! The one error type of the HTTP layer and its wire shape: `{"error": {"code", "message"}}`
//! with the right status. 4xx are the caller's and are not logged; 5xx are logged with their
//! detail and the client sees only "internal error".

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::service::ServiceError;
use crate::telemetry::Chain;

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code, e.g. `not_found`, `invalid_json`, `module_refused`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn too_large(what: &str, cap: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("{what} is over the cap of {cap} bytes"),
        )
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            detail.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.status.is_server_error() {
            tracing::error!(code = self.code, "internal error: {}", self.message);
            "internal error".to_owned()
        } else {
            self.message
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::TaskNotFound(_)
            | ServiceError::JobNotFound(_)
            | ServiceError::AttemptNotFound { .. }
            | ServiceError::QueueNotFound(_)
            | ServiceError::VersionNotFound { .. }
            | ServiceError::ModuleNotFound(_)
            | ServiceError::TokenNotFound(_)
            | ServiceError::ScheduleNotFound(_) => ApiError::not_found(message),
            ServiceError::Refused(_) => ApiError::unprocessable("module_refused", message),
            ServiceError::Invalid(_) => ApiError::unprocessable("invalid", message),
            ServiceError::OverCap(_) => ApiError::unprocessable("over_cap", message),
            ServiceError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            ServiceError::Store(ref s) if s.is_disk_full() => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "disk_full",
                "the server's disk is full: nothing was stored; try again once there is space",
            ),
            ServiceError::Store(_) => ApiError::internal(Chain(&e)),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
