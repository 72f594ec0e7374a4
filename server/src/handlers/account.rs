//! Sign-up, the messages (`/recover`, `/otp`, `/magiclink`, `/resend`) and the signed-in
//! user (`GET /user`, `PUT /user`).

use super::{json, no_phone, pkce, Answer};
use crate::db::Param;
use crate::request::{Body, Req};
use crate::App;
use axum::extract::State;
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
    let mut params = vec![
        Param::Text(b.email),
        Param::Text(b.password),
        data,
        Param::text(req.query("redirect_to")),
    ];
    let sql = if pkce(&b.code_challenge, &b.code_challenge_method)? {
        params.push(Param::Text(b.code_challenge));
        params.push(Param::Text(b.code_challenge_method));
        "select auth.sign_up($1, $2, $3, $4, $5, $6)"
    } else {
        "select auth.sign_up($1, $2, $3, $4)"
    };
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
    fn pkce_params(self, params: &mut Vec<Param>) -> Result<bool, crate::error::ApiError> {
        let with = pkce(&self.code_challenge, &self.code_challenge_method)?;
        if with {
            params.push(Param::Text(self.code_challenge));
            params.push(Param::Text(self.code_challenge_method));
        }
        Ok(with)
    }
}

pub async fn recover(State(app): State<App>, req: Req, Body(b): Body<EmailBody>) -> Answer {
    let ctx = req.keyed()?;
    let mut params = vec![
        Param::Text(b.email.clone()),
        Param::text(req.query("redirect_to")),
    ];
    let sql = if b.pkce_params(&mut params)? {
        "select auth.recover($1, $2, $3, $4)"
    } else {
        "select auth.recover($1, $2)"
    };
    json(app.db.call(ctx, sql, params).await?)
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
    let sql = if b.pkce_params(&mut params)? {
        "select auth.sign_in_with_otp($1, $2, $3, $4, $5, $6)"
    } else {
        "select auth.sign_in_with_otp($1, $2, $3, $4)"
    };
    json(app.db.call(ctx, sql, params).await?)
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
    let sql = if b.pkce_params(&mut params)? {
        "select auth.resend($1, $2, $3, $4, $5)"
    } else {
        "select auth.resend($1, $2, $3)"
    };
    json(app.db.call(ctx, sql, params).await?)
}

pub async fn get_user(State(app): State<App>, req: Req) -> Answer {
    let ctx = req.keyed()?;
    json(app.db.call(ctx, "select auth.user()", vec![]).await?)
}

pub async fn update_user(
    State(app): State<App>,
    req: Req,
    Body(b): Body<Map<String, Value>>,
) -> Answer {
    let ctx = req.keyed()?;
    // Clients send what they have: a null is an attribute not given, and the PKCE pair
    // (for a confirmation link of the new address) is not an attribute of the user.
    let attributes: Map<String, Value> = b
        .into_iter()
        .filter(|(k, v)| {
            !v.is_null()
                && k != "code_challenge"
                && k != "code_challenge_method"
                && k != "gotrue_meta_security"
        })
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
            .await?,
    )
}
