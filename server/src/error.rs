//! Errors as GoTrue answers them. One table maps the extension's error codes (every
//! extension error reads `<code>: <text>`) to GoTrue's HTTP statuses; the body's shape
//! depends on the request's `X-Supabase-Api-Version` and is chosen by [`shape_errors`],
//! so handlers only say what went wrong.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The API version from which GoTrue answers `{code, message}` instead of the legacy
/// `{code, error_code, msg}`.
const API_VERSION_2024: &str = "2024-01-01";

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// OAuth-style errors (`{"error", "error_description"}`), always 400 in GoTrue.
    pub oauth: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            oauth: false,
        }
    }

    /// GoTrue answers some codes with another status on some endpoints (insufficient_aal
    /// is 401 on PUT /user and 422 on DELETE /factors): that status for `code` here.
    pub fn with_status_for(mut self, code: &str, status: StatusCode) -> Self {
        if self.code == code {
            self.status = status;
        }
        self
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_failed", message)
    }

    pub fn oauth(description: &str) -> Self {
        ApiError {
            oauth: true,
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
        }
    }

    pub fn unexpected() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected_failure",
            "Unexpected failure, please check server logs for more information",
        )
    }

    /// An error the database raised. Extension errors carry their code in the message; the
    /// rest are classified by SQLSTATE, and what is not the caller's fault is logged and
    /// answered without detail.
    pub fn from_db(e: &tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            tracing::error!(error = %e, "database connection failed");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unexpected_failure",
                "The database is unavailable; try again shortly",
            );
        };
        let state = db.code().code();
        let (code, text) = split_code(db.message());
        let code = code.or_else(|| by_sqlstate(state));
        match code {
            Some(code) => {
                let status = status_for(code, state);
                if status.is_server_error() {
                    tracing::error!(sqlstate = state, code, message = text, "request failed");
                }
                Self::new(status, code, text)
            }
            // Bad data the database refused (a NUL byte, an invalid encoding, a value out
            // of range): the caller's input, not a failure.
            None if state.starts_with("22") || state.starts_with("23") => {
                Self::new(StatusCode::BAD_REQUEST, "validation_failed", db.message())
            }
            None => {
                tracing::error!(
                    sqlstate = state,
                    message = db.message(),
                    "unexpected database error"
                );
                Self::unexpected()
            }
        }
    }
}

/// `code: text` when the message starts with a snake_case code.
fn split_code(message: &str) -> (Option<&str>, &str) {
    if let Some((code, text)) = message.split_once(": ") {
        if !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return (Some(code), text);
        }
    }
    (None, message)
}

/// Errors raised by PostgreSQL itself rather than by the extension.
fn by_sqlstate(state: &str) -> Option<&'static str> {
    match state {
        "42501" => Some("insufficient_privilege"),
        "22P02" | "22023" | "22001" | "22004" | "42883" => Some("validation_failed"),
        "53000" | "53400" => Some("over_request_rate_limit"),
        "57014" => Some("request_timeout"),
        "25006" => Some("read_only"),
        _ => None,
    }
}

/// GoTrue's status for each code (internal/api/errors.go and the handlers); the README's
/// error table is this list.
pub const STATUS_BY_CODE: &[(&str, u16)] = &[
    ("validation_failed", 400),
    ("bad_json", 400),
    ("invalid_credentials", 400),
    ("email_not_confirmed", 400),
    ("user_banned", 400),
    ("refresh_token_not_found", 400),
    ("refresh_token_already_used", 400),
    ("session_expired", 400),
    ("phone_provider_disabled", 400),
    ("bad_code_verifier", 400),
    ("reauthentication_needed", 400),
    ("current_password_required", 400),
    ("current_password_mismatch", 400),
    ("no_authorization", 401),
    ("no_api_key", 401),
    ("invalid_api_key", 401),
    ("bad_jwt", 403),
    ("session_not_found", 403),
    ("otp_expired", 403),
    ("not_admin", 403),
    ("insufficient_aal", 403),
    ("insufficient_privilege", 403),
    ("access_denied", 403),
    ("user_not_found", 404),
    ("flow_state_not_found", 404),
    ("mfa_factor_not_found", 404),
    ("identity_not_found", 404),
    ("not_found", 404),
    ("method_not_allowed", 405),
    ("request_timeout", 504),
    ("request_too_large", 413),
    ("user_already_exists", 422),
    ("email_exists", 422),
    ("weak_password", 422),
    ("same_password", 422),
    ("signup_disabled", 422),
    ("anonymous_provider_disabled", 422),
    ("provider_disabled", 422),
    ("otp_disabled", 422),
    ("manual_linking_disabled", 422),
    ("identity_already_exists", 422),
    ("single_identity_not_deletable", 422),
    ("email_conflict_identity_not_deletable", 422),
    ("provider_email_needs_verification", 400),
    ("bad_oauth_state", 400),
    ("bad_oauth_callback", 400),
    ("reauthentication_not_valid", 422),
    ("flow_state_expired", 422),
    ("mfa_verification_failed", 422),
    ("mfa_challenge_expired", 422),
    ("mfa_ip_address_mismatch", 422),
    ("mfa_factor_name_conflict", 422),
    ("too_many_enrolled_mfa_factors", 422),
    ("mfa_phone_enroll_not_enabled", 422),
    ("mfa_webauthn_enroll_not_enabled", 422),
    ("over_request_rate_limit", 429),
    ("over_email_send_rate_limit", 429),
    ("unexpected_failure", 500),
    ("read_only", 503),
];

pub fn status_for(code: &str, sqlstate: &str) -> StatusCode {
    let known = STATUS_BY_CODE
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, s)| *s);
    let status = known.unwrap_or(match &sqlstate[..2.min(sqlstate.len())] {
        "22" | "23" => 400,
        "28" => 403,
        "42" => 403,
        "53" => 429,
        "P0" => 404,
        _ => 500,
    });
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The body is written by shape_errors, which knows the request's API version.
        let mut r = Response::new(Body::empty());
        *r.status_mut() = self.status;
        r.extensions_mut().insert(self);
        r
    }
}

/// Middleware: renders an [`ApiError`] in the shape the client asked for.
/// GoTrue reads the version as a date; anything that is not one is the legacy version.
fn new_api_version(v: &str) -> bool {
    let v = v.trim();
    let b = v.as_bytes();
    let date = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    date && v >= API_VERSION_2024
}

pub async fn shape_errors(req: Request, next: Next) -> Response {
    let new_shape = req
        .headers()
        .get("x-supabase-api-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(new_api_version);
    let mut response = next.run(req).await;
    let Some(err) = response.extensions_mut().remove::<ApiError>() else {
        return response;
    };
    render(err, new_shape)
}

pub fn render(err: ApiError, new_shape: bool) -> Response {
    let body = if err.oauth {
        json!({"error": err.code, "error_description": err.message})
    } else if new_shape {
        json!({"code": err.code, "message": err.message})
    } else {
        json!({"code": err.status.as_u16(), "error_code": err.code, "msg": err.message})
    };
    let mut body = body;
    if err.code == "weak_password" {
        body["weak_password"] = json!({"reasons": weak_reasons(&err.message)});
    }
    let mut r = (err.status, axum::Json(body)).into_response();
    let h = r.headers_mut();
    if !err.oauth {
        if let Ok(v) = HeaderValue::from_str(&err.code) {
            h.insert("x-sb-error-code", v);
        }
    }
    if new_shape {
        h.insert(
            "x-supabase-api-version",
            HeaderValue::from_static(API_VERSION_2024),
        );
    }
    r
}

/// GoTrue's `weak_password.reasons`: which rule the password broke.
fn weak_reasons(message: &str) -> Vec<Value> {
    let m = message.to_ascii_lowercase();
    let mut reasons = Vec::new();
    if m.contains("least") || m.contains("long") || m.contains("length") {
        reasons.push(json!("length"));
    }
    if m.contains("character") {
        reasons.push(json!("characters"));
    }
    if m.contains("pwned") || m.contains("breach") {
        reasons.push(json!("pwned"));
    }
    if reasons.is_empty() {
        reasons.push(json!("characters"));
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_split_from_messages() {
        assert_eq!(
            split_code("invalid_credentials: Invalid login credentials"),
            (Some("invalid_credentials"), "Invalid login credentials")
        );
        assert_eq!(
            split_code("permission denied for function x"),
            (None, "permission denied for function x")
        );
        assert_eq!(split_code("Key (id): exists"), (None, "Key (id): exists"));
    }

    #[test]
    fn api_versions_are_dates() {
        assert!(new_api_version("2024-01-01"));
        assert!(new_api_version(" 2025-06-30 "));
        assert!(!new_api_version("2023-12-31"));
        assert!(!new_api_version("banana"));
        assert!(!new_api_version("9"));
        assert!(!new_api_version("2024-1-01x"));
    }

    #[test]
    fn statuses_follow_gotrue() {
        assert_eq!(
            status_for("invalid_credentials", "28P01"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_for("weak_password", "22023"),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status_for("over_request_rate_limit", "53000"),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(status_for("something_new", "28000"), StatusCode::FORBIDDEN);
        assert_eq!(
            status_for("something_new", "XX000"),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
