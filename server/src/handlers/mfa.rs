//! `POST /factors`, `POST /factors/{id}/challenge`, `POST /factors/{id}/verify`,
//! `DELETE /factors/{id}`: the signed-in user's MFA factors (supabase-js `auth.mfa.*`).

use super::{json, Answer};
use crate::db::Param;
use crate::error::ApiError;
use crate::request::{Body, Req};
use crate::App;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

/// A factor id from the path; a malformed one is a factor that does not exist.
pub fn factor_id(id: Result<Path<String>, PathRejection>) -> Result<Param, ApiError> {
    super::path_uuid(id, "mfa_factor_not_found", "Factor not found")
}

#[derive(Deserialize, Default)]
pub struct EnrollBody {
    factor_type: Option<String>,
    friendly_name: Option<String>,
    issuer: Option<String>,
}

pub async fn enroll(State(app): State<App>, req: Req, Body(b): Body<EnrollBody>) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    json(
        app.db
            .call(
                ctx,
                "select auth.mfa_enroll(coalesce($1, 'totp'), $2, $3)",
                vec![
                    Param::Text(b.factor_type),
                    Param::Text(b.friendly_name),
                    Param::Text(b.issuer),
                ],
            )
            .await?,
    )
}

pub async fn challenge(
    State(app): State<App>,
    req: Req,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    let id = factor_id(id)?;
    json(
        app.db
            .call(
                ctx,
                "select auth.mfa_challenge($1::pg_catalog.uuid)",
                vec![id],
            )
            .await?,
    )
}

#[derive(Deserialize, Default)]
pub struct VerifyBody {
    challenge_id: Option<String>,
    code: Option<String>,
}

pub async fn verify(
    State(app): State<App>,
    req: Req,
    id: Result<Path<String>, PathRejection>,
    Body(b): Body<VerifyBody>,
) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    let id = factor_id(id)?;
    let challenge = b
        .challenge_id
        .as_deref()
        .and_then(|c| uuid::Uuid::parse_str(c).ok())
        .ok_or_else(|| ApiError::validation("challenge_id must be a UUID"))?;
    json(
        app.db
            .call(
                ctx,
                "select auth.mfa_verify($1::pg_catalog.uuid, $2::pg_catalog.uuid, $3)",
                vec![
                    id,
                    Param::Text(Some(challenge.to_string())),
                    Param::Text(b.code),
                ],
            )
            .await
            // GoTrue: an unknown challenge of a known factor is 422.
            .map_err(|e| {
                if e.message.contains("challenge") {
                    e.with_status_for("mfa_factor_not_found", StatusCode::UNPROCESSABLE_ENTITY)
                } else {
                    e
                }
            })?,
    )
}

pub async fn unenroll(
    State(app): State<App>,
    req: Req,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    let id = factor_id(id)?;
    json(
        app.db
            .call(
                ctx,
                "select auth.mfa_unenroll($1::pg_catalog.uuid)",
                vec![id],
            )
            .await
            .map_err(|e| e.with_status_for("insufficient_aal", StatusCode::UNPROCESSABLE_ENTITY))?,
    )
}

/// `POST /factors/recovery-codes/regenerate`: ten single-use recovery codes (auth_ext's;
/// GoTrue's are not released yet), shown once: `{"recovery_codes": [...]}`.
pub async fn regenerate_recovery_codes(State(app): State<App>, req: Req) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    json(
        app.db
            .call(ctx, "select auth.mfa_generate_recovery_codes()", vec![])
            .await?,
    )
}

#[derive(Deserialize, Default)]
pub struct RecoveryBody {
    code: Option<String>,
}

/// `POST /factors/recovery-codes/verify` `{code}`: a recovery code in place of a TOTP
/// code; answers the aal2 session.
pub async fn verify_recovery_code(
    State(app): State<App>,
    req: Req,
    Body(b): Body<RecoveryBody>,
) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    json(
        app.db
            .call(
                ctx,
                "select auth.mfa_verify_recovery_code($1)",
                vec![Param::Text(b.code)],
            )
            .await?,
    )
}
