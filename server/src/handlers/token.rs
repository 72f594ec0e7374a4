//! `POST /token` (password, refresh_token, id_token, pkce) and `POST /logout`.

use super::{json, no_phone, Answer};
use crate::db::Param;
use crate::error::ApiError;
use crate::request::{Body, Req};
use crate::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

#[derive(Deserialize, Default)]
pub struct TokenBody {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    provider: Option<String>,
    id_token: Option<String>,
    nonce: Option<String>,
    auth_code: Option<String>,
    code_verifier: Option<String>,
    grant_type: Option<String>,
    link_identity: Option<bool>,
}

pub async fn token(State(app): State<App>, req: Req, Body(b): Body<TokenBody>) -> Answer {
    let ctx = req.keyed()?;
    let grant = req
        .query("grant_type")
        .map(str::to_string)
        .or(b.grant_type.clone())
        .unwrap_or_default();
    let (sql, params) = match grant.as_str() {
        "password" => {
            if b.email.is_none() && b.phone.is_some() {
                return Err(no_phone());
            }
            (
                "select auth.sign_in($1, $2)",
                vec![Param::Text(b.email), Param::Text(b.password)],
            )
        }
        "refresh_token" => {
            let Some(t) = b.refresh_token.filter(|t| !t.is_empty()) else {
                return Err(ApiError::oauth("refresh_token required"));
            };
            ("select auth.refresh($1)", vec![Param::Text(Some(t))])
        }
        "id_token" if b.link_identity == Some(true) => {
            // Linking an ID token to the signed-in user is not in the extension: signing in
            // as the token's user instead would replace the caller's session.
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "manual_linking_disabled",
                "Manual linking is disabled",
            ));
        }
        "id_token" => (
            "select auth.sign_in_with_id_token($1, $2, $3)",
            vec![
                Param::Text(b.provider),
                Param::Text(b.id_token),
                Param::Text(b.nonce),
            ],
        ),
        "pkce" => {
            let (Some(code), Some(verifier)) = (
                b.auth_code.filter(|c| !c.is_empty()),
                b.code_verifier.filter(|v| !v.is_empty()),
            ) else {
                return Err(ApiError::validation(
                    "invalid request: both auth code and code verifier should be non-empty",
                ));
            };
            (
                "select auth.exchange_code_for_session($1, $2)",
                vec![Param::Text(Some(code)), Param::Text(Some(verifier))],
            )
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_credentials",
                "unsupported_grant_type",
            ))
        }
    };
    json(app.db.call(ctx, sql, params).await?)
}

pub async fn logout(State(app): State<App>, req: Req) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    let scope = req.query("scope").unwrap_or("global").to_string();
    app.db
        .call(
            ctx,
            "select 'null'::pg_catalog.jsonb from auth.sign_out($1)",
            vec![Param::Text(Some(scope))],
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
