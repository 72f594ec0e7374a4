//! Handlers, grouped as GoTrue groups them. Each parses its request, makes one extension
//! call and maps the answer; no rule about users or tokens is decided here.

pub mod account;
pub mod admin;
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

/// PKCE parameters as GoTrue takes them: both or neither (the extension checks their form).
pub fn pkce(challenge: &Option<String>, method: &Option<String>) -> Result<bool, ApiError> {
    match (challenge.as_deref(), method.as_deref()) {
        (None | Some(""), None | Some("")) => Ok(false),
        (Some(c), Some(m)) if !c.is_empty() && !m.is_empty() => Ok(true),
        _ => Err(ApiError::validation(
            "PKCE flow requires code_challenge and code_challenge_method",
        )),
    }
}
