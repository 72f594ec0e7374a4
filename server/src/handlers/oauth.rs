//! Sign-in with an OAuth / OpenID Connect provider, as GoTrue serves it: `GET /authorize`
//! (and `GET /user/identities/authorize` for linking) sends the browser to the provider
//! with a single-use state the database made; `GET|POST /callback` takes that state back
//! (the database checks it once), exchanges the code at the provider (the network call is
//! the server's, src/providers.rs), and hands the provider's user to the database, which
//! finds or creates the user and answers the redirect. `DELETE /user/identities/{id}`
//! unlinks. The database decides everything; the server only talks to the provider.

use super::{json, path_uuid, redirect, Answer};
use crate::db::Param;
use crate::error::ApiError;
use crate::request::Req;
use crate::App;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use url::Url;

/// Parameters of /authorize that are ours; every other one goes on to the provider (as
/// GoTrue forwards them: `access_type`, `prompt`, `login_hint`, ...).
const OURS: &[&str] = &[
    "provider",
    "scopes",
    "redirect_to",
    "code_challenge",
    "code_challenge_method",
    "skip_http_redirect",
    "apikey",
    "invite_token",
];

fn unsupported(provider: &str) -> ApiError {
    let shown: String = provider.chars().take(64).collect();
    ApiError::validation(format!(
        "Unsupported provider: Provider {shown} could not be found"
    ))
}

/// GET /authorize: 302 to the provider (or `{"url"}` with skip_http_redirect=true).
pub async fn authorize(State(app): State<App>, req: Req) -> Answer {
    let ctx = req.anonymous();
    start(
        &app,
        &req,
        ctx,
        "select auth.oauth_authorize($1, $2, $3, $4)",
    )
    .await
}

/// GET /user/identities/authorize: the same, linking to the signed-in caller. supabase-js
/// asks with skip_http_redirect=true and sends the browser to `url` itself.
pub async fn link(State(app): State<App>, req: Req) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    start(&app, &req, ctx, "select auth.link_identity($1, $2, $3, $4)")
        .await
        .map_err(|e| e.with_status_for("manual_linking_disabled", StatusCode::NOT_FOUND))
}

async fn start(app: &App, req: &Req, ctx: crate::db::Ctx, sql: &'static str) -> Answer {
    let name = req.query("provider").unwrap_or("").trim().to_lowercase();
    if name.is_empty() {
        return Err(ApiError::validation(
            "Unsupported provider: missing provider",
        ));
    }
    // An unknown or disabled provider is refused before anything is stored.
    let provider = app.providers.get(&name).ok_or_else(|| unsupported(&name))?;
    let answer = app
        .db
        .call(
            ctx,
            sql,
            vec![
                Param::Text(Some(name)),
                Param::text(req.query("redirect_to")),
                Param::text(req.query("code_challenge")),
                Param::text(req.query("code_challenge_method")),
            ],
        )
        .await?;
    let state = answer
        .get("state")
        .and_then(Value::as_str)
        .ok_or_else(ApiError::unexpected)?;
    let mut extra: Vec<(String, String)> = req
        .query
        .iter()
        .filter(|(k, _)| !OURS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    extra.sort();
    let url = provider
        .authorize_url(state, req.query("scopes"), &extra)
        .await
        .map_err(|e| {
            tracing::warn!(provider = provider.name(), error = %e.message, "provider not reachable");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.code, e.message)
        })?;
    if req.query("skip_http_redirect") == Some("true") {
        return json(json!({ "url": url }));
    }
    Ok((StatusCode::FOUND, [(header::LOCATION, url)]).into_response())
}

/// The callback's parameters: the query's, or a form body's (providers that post, e.g.
/// `response_mode=form_post`).
fn callback_params(req: &Req, body: &Bytes) -> std::collections::HashMap<String, String> {
    let mut params = req.query.clone();
    if !body.is_empty() {
        for (k, v) in url::form_urlencoded::parse(body) {
            params.insert(k.into_owned(), v.into_owned());
        }
    }
    params.retain(|_, v| !v.is_empty());
    params
}

/// The redirect's target, or (nowhere to send the browser) the error as the response.
fn target_of(answer: &Value) -> Option<Url> {
    answer
        .get("redirect_to")
        .and_then(Value::as_str)
        .and_then(|r| Url::parse(r).ok())
}

fn back_with(target: Option<Url>, err: ApiError, name: Option<&str>) -> Answer {
    match target {
        // As GoTrue: the error in the query (and the fragment, for the implicit flow).
        Some(t) => Ok(redirect::with_error(t, &err, name, true)),
        None => Err(err),
    }
}

/// GET|POST /callback.
pub async fn callback(State(app): State<App>, req: Req, body: Bytes) -> Answer {
    let params = callback_params(&req, &body);
    let get = |k: &str| params.get(k).map(String::as_str);
    // First step: the state, taken once (a replay, an unknown or an expired state end here).
    let taken = app
        .db
        .call(
            req.oauth_callback(),
            "select auth.oauth_callback($1, $2, $3)",
            vec![
                Param::text(get("state")),
                Param::text(get("error")),
                Param::text(get("error_description")),
            ],
        )
        .await?;
    let target = target_of(&taken);
    if let Some(e) = taken.get("error") {
        let err =
            redirect::answered_error(e, "bad_oauth_state", "OAuth callback with invalid state");
        let name = e.get("oauth").and_then(Value::as_str);
        return back_with(target, err, name);
    }
    let (Some(flow), Some(name)) = (
        taken.get("flow").and_then(Value::as_str),
        taken.get("provider").and_then(Value::as_str),
    ) else {
        return Err(ApiError::unexpected());
    };
    let Some(provider) = app.providers.get(name) else {
        return back_with(target, unsupported(name), None);
    };
    let Some(code) = get("code") else {
        let err = ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_oauth_callback",
            "OAuth callback with missing authorization code",
        );
        return back_with(target, err, None);
    };
    let user = match provider.exchange(code, get("state").unwrap_or("")).await {
        Ok(user) => user,
        Err(e) => {
            tracing::warn!(provider = name, error = %e.message, "provider sign-in failed");
            let status = if e.code == "bad_oauth_callback" {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            return back_with(target, ApiError::new(status, e.code, e.message), None);
        }
    };
    let identity = json!({
        "subject": user.subject,
        "email": user.email,
        "email_verified": user.email_verified,
        "identity_data": user.identity_data,
        "provider_token": user.access_token,
        "provider_refresh_token": user.refresh_token,
    });
    // Second step: the one call that signs the provider's user in.
    let answer = match app
        .db
        .call(
            req.oauth_callback(),
            "select auth.oauth_sign_in($1::uuid, $2)",
            vec![
                Param::Text(Some(flow.to_string())),
                Param::Json(Some(identity)),
            ],
        )
        .await
    {
        Ok(answer) => answer,
        // The database refused the provider's user before the call ran (a NUL in a string,
        // which jsonb cannot hold): the state is spent, so back to the app like any refusal.
        Err(e) if e.status.is_client_error() => return back_with(target, e, None),
        Err(e) => return Err(e),
    };
    let target = target_of(&answer).or(target);
    if let Some(e) = answer.get("error") {
        let err = redirect::answered_error(e, "bad_oauth_callback", "OAuth callback failed");
        return back_with(target, err, None);
    }
    let Some(target) = target else {
        return Err(ApiError::unexpected());
    };
    if let Some(code) = answer.get("code").and_then(Value::as_str) {
        return Ok(redirect::with_code(target, code));
    }
    let session = answer.get("session").cloned().unwrap_or(Value::Null);
    let token = |k: &str| answer.get(k).and_then(Value::as_str).unwrap_or("");
    let mut extra: Vec<(&str, &str)> = Vec::new();
    if !token("provider_token").is_empty() {
        extra.push(("provider_token", token("provider_token")));
    }
    if !token("provider_refresh_token").is_empty() {
        extra.push(("provider_refresh_token", token("provider_refresh_token")));
    }
    Ok(redirect::with_session(target, &session, &extra))
}

/// DELETE /user/identities/{identity_id}.
pub async fn unlink(
    State(app): State<App>,
    req: Req,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    let id = path_uuid(id, "identity_not_found", "Identity doesn't exist")?;
    json(
        app.db
            .call(ctx, "select auth.unlink_identity($1::uuid)", vec![id])
            .await
            .map_err(|e| e.with_status_for("manual_linking_disabled", StatusCode::NOT_FOUND))?,
    )
}
