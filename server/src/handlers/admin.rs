//! `/admin/*` and `/invite`: service_role only. The extension's grants decide; a caller
//! without them gets GoTrue's 403 `not_admin`.

use super::{json, Answer};
use crate::db::{Ctx, Param};
use crate::error::ApiError;
use crate::request::{Body, Req};
use crate::App;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Map, Value};

async fn call(
    app: &App,
    ctx: Ctx,
    sql: &'static str,
    params: Vec<Param>,
) -> Result<Value, ApiError> {
    app.db.call(ctx, sql, params).await.map_err(|e| {
        if e.code == "insufficient_privilege" {
            ApiError::new(StatusCode::FORBIDDEN, "not_admin", "User not allowed")
        } else {
            e
        }
    })
}

/// A user id from the path: GoTrue answers a malformed one with 404.
fn user_id(id: Result<Path<String>, PathRejection>) -> Result<Param, ApiError> {
    super::path_uuid(id, "validation_failed", "user_id must be an UUID")
}

fn page_number(req: &Req, name: &str, default: i32) -> Result<i32, ApiError> {
    match req.query(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            ApiError::validation(format!(
                "Bad Pagination Parameters: {name} must be a number"
            ))
        }),
    }
}

pub async fn list_users(State(app): State<App>, req: Req) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    let page = page_number(&req, "page", 1)?;
    let per_page = page_number(&req, "per_page", 50)?;
    let answer = call(
        &app,
        ctx,
        "select auth.admin_list_users($1, $2, $3)",
        vec![
            Param::Int(Some(page)),
            Param::Int(Some(per_page)),
            Param::text(req.query("filter")),
        ],
    )
    .await?;
    let total = answer.get("total").and_then(Value::as_i64).unwrap_or(0);
    let last = answer.get("last_page").and_then(Value::as_i64).unwrap_or(1);
    let body = serde_json::json!({
        "users": answer.get("users").cloned().unwrap_or(Value::Array(vec![])),
        "aud": answer.get("aud").cloned().unwrap_or(Value::from("authenticated")),
    });
    let mut response = axum::Json(body).into_response();
    let h = response.headers_mut();
    h.insert("x-total-count", HeaderValue::from(total));
    // As GoTrue writes it (query keys sorted, so page comes first: supabase-js reads it
    // from there).
    let link =
        |p: i64, rel: &str| format!("<{}?page={p}&per_page={per_page}>; rel=\"{rel}\"", req.path);
    let mut links = Vec::new();
    if i64::from(page) < last {
        links.push(link(i64::from(page) + 1, "next"));
    }
    links.push(link(last, "last"));
    if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
        h.insert("link", v);
    }
    Ok(response)
}

pub async fn create_user(
    State(app): State<App>,
    req: Req,
    Body(b): Body<Map<String, Value>>,
) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    json(
        call(
            &app,
            ctx,
            "select auth.admin_create_user($1)",
            vec![Param::Json(Some(Value::Object(b)))],
        )
        .await?,
    )
}

pub async fn get_user(
    State(app): State<App>,
    req: Req,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    let id = user_id(id)?;
    json(
        call(
            &app,
            ctx,
            "select auth.admin_get_user($1::pg_catalog.uuid)",
            vec![id],
        )
        .await?,
    )
}

pub async fn update_user(
    State(app): State<App>,
    req: Req,
    id: Result<Path<String>, PathRejection>,
    Body(b): Body<Map<String, Value>>,
) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    let id = user_id(id)?;
    json(
        call(
            &app,
            ctx,
            "select auth.admin_update_user($1::pg_catalog.uuid, $2)",
            vec![id, Param::Json(Some(Value::Object(b)))],
        )
        .await?,
    )
}

#[derive(Deserialize, Default)]
pub struct DeleteBody {
    should_soft_delete: Option<bool>,
}

pub async fn delete_user(
    State(app): State<App>,
    req: Req,
    id: Result<Path<String>, PathRejection>,
    Body(b): Body<DeleteBody>,
) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    let id = user_id(id)?;
    call(
        &app,
        ctx,
        "select auth.admin_delete_user($1::pg_catalog.uuid, $2)",
        vec![id, Param::Bool(Some(b.should_soft_delete.unwrap_or(false)))],
    )
    .await?;
    json(Value::Object(Map::new()))
}

#[derive(Deserialize, Default)]
pub struct InviteBody {
    email: Option<String>,
    data: Option<Value>,
}

pub async fn invite(State(app): State<App>, req: Req, Body(b): Body<InviteBody>) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    json(
        call(
            &app,
            ctx,
            "select auth.admin_invite_user($1, $2, $3)",
            vec![
                Param::Text(b.email),
                Param::Json(b.data.filter(|d| !d.is_null())),
                Param::text(req.query("redirect_to")),
            ],
        )
        .await?,
    )
}

#[derive(Deserialize, Default)]
pub struct LinkBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    email: Option<String>,
    password: Option<String>,
    data: Option<Value>,
    redirect_to: Option<String>,
}

pub async fn generate_link(State(app): State<App>, req: Req, Body(b): Body<LinkBody>) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    let redirect = b
        .redirect_to
        .clone()
        .or_else(|| req.query("redirect_to").map(str::to_string));
    let answer = call(
        &app,
        ctx,
        "select auth.admin_generate_link($1, $2, $3, $4, $5)",
        vec![
            Param::Text(b.kind),
            Param::Text(b.email),
            Param::Text(b.password),
            Param::Json(b.data.filter(|d| !d.is_null())),
            Param::Text(redirect),
        ],
    )
    .await?;
    // GoTrue answers the user's fields with the link's beside them (supabase-js splits them
    // again), and its action_link is this server's /verify, which redirects on.
    let properties = answer.get("properties").cloned().unwrap_or_default();
    let text = |k: &str| {
        properties
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut body = match answer.get("user") {
        Some(Value::Object(user)) => user.clone(),
        _ => Map::new(),
    };
    if let Value::Object(p) = &properties {
        body.extend(p.clone());
    }
    let (token, kind, redirect_to) = (
        text("hashed_token"),
        text("verification_type"),
        text("redirect_to"),
    );
    if !token.is_empty() {
        let mut link = url::Url::parse(&format!("{}/verify", app.config.external_url))
            .map_err(|_| ApiError::unexpected())?;
        link.query_pairs_mut()
            .append_pair("token", &token)
            .append_pair("type", &kind)
            .append_pair("redirect_to", &redirect_to);
        body.insert("action_link".into(), Value::from(link.as_str()));
    }
    json(Value::Object(body))
}

/// `GET /admin/users/{id}/factors`: GoTrue answers a bare array.
pub async fn list_factors(
    State(app): State<App>,
    req: Req,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    let id = user_id(id)?;
    let answer = call(
        &app,
        ctx,
        "select auth.admin_mfa_list_factors($1::pg_catalog.uuid)",
        vec![id],
    )
    .await?;
    json(
        answer
            .get("factors")
            .cloned()
            .unwrap_or(Value::Array(vec![])),
    )
}

/// `DELETE /admin/users/{id}/factors/{factor_id}`: the deleted factor.
pub async fn delete_factor(
    State(app): State<App>,
    req: Req,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    let (user, factor) = ids.map(|Path(p)| p).unwrap_or_default();
    let user = user_id(Ok(Path(user)))?;
    let factor = super::mfa::factor_id(Ok(Path(factor)))?;
    json(
        call(
            &app,
            ctx,
            "select auth.admin_mfa_delete_factor($1::pg_catalog.uuid, $2::pg_catalog.uuid)",
            vec![user, factor],
        )
        .await?,
    )
}
