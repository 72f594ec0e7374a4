//! Handlers, grouped as GoTrue groups them. Each parses its request, makes one extension
//! call and maps the answer; no rule about users or tokens is decided here.

pub mod account;
pub mod admin;
pub mod mfa;
pub mod misc;
pub mod oauth;
pub mod redirect;
pub mod token;
pub mod verify;

use crate::error::ApiError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

pub type Answer = Result<Response, ApiError>;

pub fn json(v: Value) -> Answer {
    Ok(Json(v).into_response())
}

/// GoTrue serves SMS flows; auth_ext has no phone provider.
pub fn no_phone() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "phone_provider_disabled",
        "Phone logins are disabled",
    )
}

/// A uuid from the path, as a call parameter; anything else (malformed, not UTF-8) is
/// GoTrue's 404 with `code` and `message`.
pub fn path_uuid(
    id: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
    code: &str,
    message: &str,
) -> Result<crate::db::Param, ApiError> {
    let id = id.map(|axum::extract::Path(id)| id).unwrap_or_default();
    uuid::Uuid::parse_str(&id)
        .map(|u| crate::db::Param::Text(Some(u.to_string())))
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, code, message))
}
