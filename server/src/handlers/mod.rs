//! Handlers, grouped as GoTrue groups them. Each parses its request, makes one extension
//! call and maps the answer; no rule about users or tokens is decided here.

pub mod account;
pub mod admin;
pub mod mfa;
pub mod misc;
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
