//! Sign-up, the messages (`/recover`, `/otp`, `/magiclink`, `/resend`) and the signed-in
//! user (`GET /user`, `PUT /user`).

use super::{json, no_phone, Answer};
use crate::db::Param;
use crate::request::{Body, Req};
use crate::App;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize, Default)]
pub struct SignupBody {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    data: Option<Value>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

pub async fn signup(State(app): State<App>, req: Req, Body(b): Body<SignupBody>) -> Answer {
    let ctx = req.keyed()?;
    let data = Param::Json(Some(
        b.data
            .filter(|d| !d.is_null())
            .unwrap_or(Value::Object(Map::new())),
    ));
    if b.email.is_none() && b.phone.is_some() {
        return Err(no_phone());
    }
    if b.email.is_none() {
        // Neither an address nor a phone: GoTrue's anonymous sign-in.
        return json(
            app.db
                .call(ctx, "select auth.sign_in_anonymously($1)", vec![data])
                .await?,
        );
    }
    // The extension checks the PKCE pair (both or neither, its form).
    let params = vec![
        Param::Text(b.email),
        Param::Text(b.password),
        data,
        Param::text(req.query("redirect_to")),
        Param::Text(b.code_challenge),
        Param::Text(b.code_challenge_method),
    ];
    let sql = "select auth.sign_up($1, $2, $3, $4, $5, $6)";
    json(app.db.call(ctx, sql, params).await?)
}

#[derive(Deserialize, Default)]
pub struct EmailBody {
    email: Option<String>,
    phone: Option<String>,
    data: Option<Value>,
    create_user: Option<bool>,
    #[serde(rename = "type")]
    kind: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

impl EmailBody {
    fn pkce(self) -> [Param; 2] {
        [
            Param::Text(self.code_challenge),
            Param::Text(self.code_challenge_method),
        ]
    }
}

pub async fn recover(State(app): State<App>, req: Req, Body(b): Body<EmailBody>) -> Answer {
    let ctx = req.keyed()?;
    let mut params = vec![
        Param::Text(b.email.clone()),
        Param::text(req.query("redirect_to")),
    ];
    params.extend(b.pkce());
    json(
        app.db
            .call(ctx, "select auth.recover($1, $2, $3, $4)", params)
            .await?,
    )
}

pub async fn otp(State(app): State<App>, req: Req, Body(b): Body<EmailBody>) -> Answer {
    let ctx = req.keyed()?;
    if b.email.is_none() && b.phone.is_some() {
        return Err(no_phone());
    }
    let data = b.data.clone().filter(|d| !d.is_null());
    let mut params = vec![
        Param::Text(b.email.clone()),
        Param::Bool(Some(b.create_user.unwrap_or(true))),
        Param::Json(data),
        Param::text(req.query("redirect_to")),
    ];
    params.extend(b.pkce());
    json(
        app.db
            .call(
                ctx,
                "select auth.sign_in_with_otp($1, $2, $3, $4, $5, $6)",
                params,
            )
            .await?,
    )
}

/// The legacy magic link: `/otp` that always creates the user.
pub async fn magiclink(State(app): State<App>, req: Req, Body(mut b): Body<EmailBody>) -> Answer {
    b.create_user = Some(true);
    otp(State(app), req, Body(b)).await
}

pub async fn resend(State(app): State<App>, req: Req, Body(b): Body<EmailBody>) -> Answer {
    let ctx = req.keyed()?;
    if matches!(b.kind.as_deref(), Some("sms" | "phone_change"))
        || (b.email.is_none() && b.phone.is_some())
    {
        return Err(no_phone());
    }
    let mut params = vec![
        Param::Text(b.kind.clone()),
        Param::Text(b.email.clone()),
        Param::text(req.query("redirect_to")),
    ];
    params.extend(b.pkce());
    json(
        app.db
            .call(ctx, "select auth.resend($1, $2, $3, $4, $5)", params)
            .await?,
    )
}

pub async fn get_user(State(app): State<App>, req: Req) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    json(app.db.call(ctx, "select auth.user()", vec![]).await?)
}

pub async fn update_user(
    State(app): State<App>,
    req: Req,
    Body(b): Body<Map<String, Value>>,
) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    // Clients send what they have: a null is an attribute not given. The PKCE pair goes
    // along (the extension makes the new address's link a PKCE one).
    let attributes: Map<String, Value> = b
        .into_iter()
        .filter(|(k, v)| !v.is_null() && k != "gotrue_meta_security")
        .collect();
    json(
        app.db
            .call(
                ctx,
                "select auth.update_user($1, $2)",
                vec![
                    Param::Json(Some(Value::Object(attributes))),
                    Param::text(req.query("redirect_to")),
                ],
            )
            .await
            .map_err(|e| e.with_status_for("insufficient_aal", StatusCode::UNAUTHORIZED))?,
    )
}

/// `GET /reauthenticate`: a nonce for the signed-in user, sent to their address; a password
/// change then passes it as `nonce` (when the database asks for one).
pub async fn reauthenticate(State(app): State<App>, req: Req) -> Answer {
    let ctx = req.keyed_as_bearer()?;
    json(
        app.db
            .call(ctx, "select auth.reauthenticate()", vec![])
            .await?,
    )
}
