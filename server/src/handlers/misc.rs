//! `GET /health`, `GET /settings`, `GET /.well-known/jwks.json`.

use super::{json, Answer};
use crate::request::Req;
use crate::App;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

pub async fn health(State(app): State<App>, req: Req) -> Answer {
    // The whole request path (a connection, the request's transaction), not just a ping.
    app.db
        .call(req.anonymous(), "select pg_catalog.to_jsonb(1)", vec![])
        .await?;
    json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "name": "GoTrue",
        "description": "GoTrue is a user registration and authentication API (auth_ext)",
    }))
}

/// The database's settings, with the providers this server signs in with turned on.
pub async fn settings(State(app): State<App>, req: Req) -> Answer {
    let mut settings = app
        .db
        .call(req.anonymous(), "select auth.settings()", vec![])
        .await?;
    if let Some(external) = settings
        .get_mut("external")
        .and_then(serde_json::Value::as_object_mut)
    {
        for name in app.providers.enabled() {
            external.insert(name, serde_json::Value::Bool(true));
        }
    }
    json(settings)
}

pub async fn jwks(State(app): State<App>, req: Req) -> Answer {
    let keys = app
        .db
        .call(req.anonymous(), "select auth.jwks()", vec![])
        .await?;
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=600")],
        axum::Json(keys),
    )
        .into_response())
}
