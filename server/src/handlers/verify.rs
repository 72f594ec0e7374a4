//! `POST /verify` (a code or a link token, answered with a session) and `GET /verify` (the
//! e-mail link a browser opens: a 303 to `redirect_to` with the session in the fragment,
//! `?code=` in the PKCE flow, or the error in the fragment).

use super::{json, no_phone, redirect, Answer};
use crate::db::Param;
use crate::error::ApiError;
use crate::request::{Body, Req};
use crate::App;
use axum::extract::State;
use axum::http::StatusCode;
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
    let Some(target) = target else {
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
        // As GoTrue: the error in the fragment, and for PKCE also in the query.
        return Ok(redirect::with_error(target, &link_error(e), None, pkce));
    }
    if let Some(code) = answer.get("code").and_then(Value::as_str) {
        return Ok(redirect::with_code(target, code));
    }
    let session = answer.get("session").cloned().unwrap_or(Value::Null);
    Ok(redirect::with_session(
        target,
        &session,
        &[("type", kind.as_deref().unwrap_or(""))],
    ))
}

/// The error `auth.verify_link` reports (it answers rather than raising, so the browser
/// can be sent back with it), with GoTrue's status for its code.
fn link_error(e: &Value) -> ApiError {
    redirect::answered_error(e, "otp_expired", "Email link is invalid or has expired")
}
