//! The browser redirects that end a link or a provider sign-in (GET /verify, /callback):
//! to `redirect_to` with the session in the fragment, `?code=` for a PKCE flow, or the
//! error, as GoTrue writes them and supabase-js reads them.

use crate::error::ApiError;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use url::Url;

/// GoTrue's OAuth error name for a status, as the redirect's `error` (none for the others).
pub fn oauth_error(status: u16) -> Option<&'static str> {
    match status {
        400 => Some("invalid_request"),
        401 => Some("unauthorized_client"),
        403 => Some("access_denied"),
        500 => Some("server_error"),
        503 => Some("temporarily_unavailable"),
        _ => None,
    }
}

pub fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

fn encode(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The error an extension call answered (rather than raised, so the browser can be sent
/// back with it): {"code", "message", "sqlstate"}, with GoTrue's status for its code.
pub fn answered_error(e: &Value, default_code: &str, default_message: &str) -> ApiError {
    let code = e
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or(default_code);
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or(default_message);
    let state = e.get("sqlstate").and_then(Value::as_str).unwrap_or("28000");
    ApiError::new(crate::error::status_for(code, state), code, message)
}

/// The error in the fragment (with `sb`, as GoTrue marks its redirects) and, when `query`
/// is set, also in the query (the redirect's own query kept). `name` is the OAuth error
/// name; without one, the status's.
pub fn with_error(mut target: Url, err: &ApiError, name: Option<&str>, query: bool) -> Response {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if let Some(name) = name.or_else(|| oauth_error(err.status.as_u16())) {
        pairs.push(("error", name));
    }
    pairs.push(("error_code", &err.code));
    pairs.push(("error_description", &err.message));
    if query {
        let mut q = target.query_pairs_mut();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
    }
    pairs.push(("sb", ""));
    target.set_fragment(Some(&encode(&pairs)));
    see_other(target.as_str())
}

/// `?code=` for a PKCE flow: set, not added (a redirect URL that has one keeps only ours).
pub fn with_code(mut target: Url, code: &str) -> Response {
    let kept: Vec<(String, String)> = target
        .query_pairs()
        .filter(|(k, _)| k != "code")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    target
        .query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("code", code);
    see_other(target.as_str())
}

/// The session in the fragment, with `extra` pairs (the link's type, a provider's tokens).
pub fn with_session(mut target: Url, session: &Value, extra: &[(&str, &str)]) -> Response {
    let field = |k: &str| match session.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let (access, expires_at, expires_in, refresh) = (
        field("access_token"),
        field("expires_at"),
        field("expires_in"),
        field("refresh_token"),
    );
    let mut pairs: Vec<(&str, &str)> = vec![
        ("access_token", &access),
        ("expires_at", &expires_at),
        ("expires_in", &expires_in),
        ("refresh_token", &refresh),
        ("token_type", "bearer"),
    ];
    pairs.extend_from_slice(extra);
    pairs.push(("sb", ""));
    target.set_fragment(Some(&encode(&pairs)));
    see_other(target.as_str())
}
