//! `POST /verify` (a code or a link token, answered with a session) and `GET /verify` (the
//! e-mail link a browser opens: a 303 to `redirect_to` with the session in the fragment,
//! `?code=` in the PKCE flow, or the error in the fragment).

use super::{json, no_phone, Answer};
use crate::db::Param;
use crate::error::ApiError;
use crate::request::{Body, Req};
use crate::App;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize, Default)]
pub struct VerifyBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    token: Option<String>,
    token_hash: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

pub async fn verify_post(State(app): State<App>, req: Req, Body(b): Body<VerifyBody>) -> Answer {
    let ctx = req.keyed()?;
    if b.phone.is_some() || matches!(b.kind.as_deref(), Some("sms" | "phone_change")) {
        return Err(no_phone());
    }
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let (token, token_hash, email) = (nonempty(b.token), nonempty(b.token_hash), nonempty(b.email));
    let (email, token) = match (token_hash, token) {
        (Some(_), Some(_)) => {
            return Err(ApiError::validation(
                "Only the token_hash and type should be provided",
            ))
        }
        (Some(_), None) if email.is_some() => {
            return Err(ApiError::validation(
                "Only the token_hash and type should be provided",
            ))
        }
        (Some(hash), None) => (None, hash),
        (None, Some(token)) => (email, token),
        (None, None) => {
            return Err(ApiError::validation(
                "Verify requires either a token or a token hash",
            ))
        }
    };
    json(
        app.db
            .call(
                ctx,
                "select auth.verify_otp($1, $2, $3)",
                vec![
                    Param::Text(email),
                    Param::Text(Some(token)),
                    Param::Text(b.kind),
                ],
            )
            .await?,
    )
}

/// GoTrue's OAuth error name for a status, as the redirect's `error` (none for the others).
fn oauth_error(status: u16) -> Option<&'static str> {
    match status {
        400 => Some("invalid_request"),
        401 => Some("unauthorized_client"),
        403 => Some("access_denied"),
        500 => Some("server_error"),
        503 => Some("temporarily_unavailable"),
        _ => None,
    }
}

fn see_other(location: &str) -> Response {
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

pub async fn verify_get(State(app): State<App>, req: Req) -> Answer {
    let ctx = req.anonymous();
    let kind = req.query("type").map(str::to_string);
    let pkce = req.query("token").is_some_and(|t| t.starts_with("pkce_"));
    let answer = app
        .db
        .call(
            ctx,
            "select auth.verify_link($1, $2, $3)",
            vec![
                Param::text(req.query("token")),
                Param::Text(kind.clone()),
                Param::text(req.query("redirect_to")),
            ],
        )
        .await?;
    let target = answer
        .get("redirect_to")
        .and_then(Value::as_str)
        .and_then(|r| url::Url::parse(r).ok());
    let Some(mut target) = target else {
        // A token never goes into the body of a GET: with nowhere to send the browser,
        // the link's answer is an error.
        return Err(match answer.get("error") {
            Some(e) => link_error(e),
            None => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unexpected_failure",
                "The link has nowhere to redirect to: set auth.site_url",
            ),
        });
    };
    if let Some(e) = answer.get("error") {
        let err = link_error(e);
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        if let Some(name) = oauth_error(err.status.as_u16()) {
            pairs.push(("error", name));
        }
        pairs.push(("error_code", &err.code));
        pairs.push(("error_description", &err.message));
        // As GoTrue: the error in the fragment, and for PKCE also in the query (the
        // redirect's own query kept).
        if pkce {
            let mut q = target.query_pairs_mut();
            for (k, v) in &pairs {
                q.append_pair(k, v);
            }
        }
        pairs.push(("sb", ""));
        target.set_fragment(Some(&encode(&pairs)));
        return Ok(see_other(target.as_str()));
    }
    if let Some(code) = answer.get("code").and_then(Value::as_str) {
        // `code` set, not added: a redirect URL that has one keeps only ours.
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
        return Ok(see_other(target.as_str()));
    }
    let session = answer.get("session").cloned().unwrap_or(Value::Null);
    let field = |k: &str| match session.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let fragment = encode(&[
        ("access_token", &field("access_token")),
        ("expires_at", &field("expires_at")),
        ("expires_in", &field("expires_in")),
        ("refresh_token", &field("refresh_token")),
        ("token_type", "bearer"),
        ("type", kind.as_deref().unwrap_or("")),
        ("sb", ""),
    ]);
    target.set_fragment(Some(&fragment));
    Ok(see_other(target.as_str()))
}

/// The error `auth.verify_link` reports (it answers rather than raising, so the browser
/// can be sent back with it), with GoTrue's status for its code.
fn link_error(e: &Value) -> ApiError {
    let code = e
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or("otp_expired");
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("Email link is invalid or has expired");
    let state = e.get("sqlstate").and_then(Value::as_str).unwrap_or("28000");
    ApiError::new(crate::error::status_for(code, state), code, message)
}
