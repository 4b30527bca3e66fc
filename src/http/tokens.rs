//! Token routes (admin): create (the secret is shown once), list, revoke.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::body::{parse_json, read_body};
use super::dto::{CreateToken, TokenDto};
use super::error::{ApiError, ApiResult};
use super::{AppState, Caller};
use crate::domain::Role;

/// Creates a token; the answer holds its secret, which is never shown again.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens",
    request_body = CreateToken,
    responses((status = 201, body = TokenDto), (status = 400, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody, description = "an unknown role, or a name that is not 0 to 200 printable characters")))]
pub(super) async fn create_token(
    State(s): State<AppState>,
    caller: Caller,
    body: Body,
) -> ApiResult<(StatusCode, Json<TokenDto>)> {
    caller.require(Role::Admin)?;
    let bytes = read_body(body, 64 << 10, "the request body").await?;
    let req: CreateToken = parse_json(&bytes)?;
    let role: Role = req
        .role
        .parse()
        .map_err(|e: String| ApiError::unprocessable("invalid", e))?;
    let token = s.service.create_token(role, &req.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenDto::from_record(&token.record, Some(token.secret))),
    ))
}

/// Every token (without secrets), revoked ones included.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenDto>), (status = 403, body = super::ErrorBody)))]
pub(super) async fn list_tokens(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<TokenDto>>> {
    caller.require(Role::Admin)?;
    let tokens = s.service.tokens().await?;
    Ok(Json(
        tokens
            .iter()
            .map(|t| TokenDto::from_record(t, None))
            .collect(),
    ))
}

/// Revokes a token; requests with it are refused from now on. The last live admin token is
/// not revoked (409): without it no one could administer the server.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "token id")),
    responses((status = 204, description = "revoked"),
        (status = 404, body = super::ErrorBody, description = "no live token has this id"),
        (status = 409, body = super::ErrorBody, description = "the last live admin token")))]
pub(super) async fn revoke_token(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    s.service.revoke_token(&id).await?;
    s.auth.forget();
    Ok(StatusCode::NO_CONTENT)
}
