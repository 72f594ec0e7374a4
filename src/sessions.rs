//! Sessions: a row in auth.sessions, a refresh token (stored only as its SHA-256), an
//! access token with Supabase's claims, and the session object GoTrue returns from /token.
//! Runs inside the SECURITY DEFINER wrappers, so every query is schema-qualified and
//! search_path is pinned by the caller.

use crate::config;
use crate::db;
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::jwt;
use crate::keys;
use crate::request::RequestInfo;
use pgrx::prelude::*;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Hex SHA-256 of a refresh token: what auth.refresh_tokens.token stores.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The user object (`auth._user_json`) of one user.
pub fn user_json(user_id: pgrx::Uuid) -> AuthResult<Value> {
    // As text, parsed here: metadata written straight into the table by an admin may hold
    // what serde cannot read, and that must be an error, not a panic.
    let text = db::read_one::<String>(
        "select auth._user_json(u)::pg_catalog.text from auth.users u where u.id = $1",
        &[user_id.into()],
    )?
    .ok_or_else(|| AuthError::Unexpected("user vanished while signing in".into()))?;
    // What is stored through the API or since 0.5.0 always parses (src/metadata.rs: at most
    // 64 levels inside a metadata object, far from serde's 128 for the whole user object); a
    // row written around the checks before them is a clear error, not an internal one.
    crate::metadata::parse_readable(&text).map_err(|why| {
        AuthError::StoredData(format!(
            "the stored data of user {user_id} cannot be used: its metadata or identity data {why}"
        ))
    })
}

/// An audit entry in Supabase's payload shape, and the client IP ('' when unknown). Never
/// holds a password, hash or token.
pub fn audit_entry(
    action: &str,
    actor_id: Option<&str>,
    actor_username: Option<&str>,
    req: &RequestInfo,
    traits: Value,
) -> Value {
    json!({
        "payload": {
            "action": action,
            "actor_id": actor_id,
            "actor_username": actor_username,
            "actor_via_sso": false,
            "log_type": if action == "user_signedup" { "team" } else { "account" },
            "traits": traits,
        },
        "ip": req.ip.map(|ip| ip.to_string()).unwrap_or_default(),
    })
}

/// Append an audit entry in the current transaction.
pub fn write_audit(entry: &Value) -> AuthResult<()> {
    db::exec(
        "insert into auth.audit_log_entries (instance_id, id, payload, created_at, ip_address) \
         values ('00000000-0000-0000-0000-000000000000', pg_catalog.gen_random_uuid(), $1::pg_catalog.json, pg_catalog.now(), $2)",
        &[entry["payload"].to_string().into(), entry["ip"].as_str().unwrap_or("").into()],
    )?;
    Ok(())
}

/// Audit an action of `user` (a user object) in the current transaction.
pub fn audit(action: &str, user: &Value, req: &RequestInfo, traits: Value) -> AuthResult<()> {
    write_audit(&audit_entry(
        action,
        user.get("id").and_then(Value::as_str),
        user.get("email").and_then(Value::as_str),
        req,
        traits,
    ))
}

/// SQL: audit an action of the user `actor_id` (used by auth.sign_out).
#[pg_extern(volatile)]
fn _audit(action: &str, actor_id: pgrx::Uuid, traits: pgrx::JsonB) {
    let user =
        user_json(actor_id).unwrap_or_else(|_| json!({"id": crate::claims::uuid_text(&actor_id)}));
    audit(action, &user, &crate::request::current(), traits.0).or_raise()
}

/// Whether a session may still be used: not ended (not_after), inside the timebox, not idle
/// past the inactivity timeout, and the user's newest when sessions are single per user.
/// The one definition of liveness, used by auth.refresh, auth.cleanup and
/// auth.session_check. Every name and operator is qualified: it runs under the caller's
/// search_path when called for the RLS check.
pub fn session_is_live(session_id: pgrx::Uuid) -> AuthResult<bool> {
    const LIVE: &str = "select coalesce(( \
        select (s.not_after is null or s.not_after operator(pg_catalog.>) pg_catalog.now()) \
           and ($2 operator(pg_catalog.=) 0 \
                or s.created_at operator(pg_catalog.+) pg_catalog.make_interval(0, 0, 0, 0, 0, 0, $2) \
                   operator(pg_catalog.>) pg_catalog.now()) \
           and ($3 operator(pg_catalog.=) 0 \
                or coalesce(s.refreshed_at at time zone 'UTC', s.created_at) \
                   operator(pg_catalog.+) pg_catalog.make_interval(0, 0, 0, 0, 0, 0, $3) \
                   operator(pg_catalog.>) pg_catalog.now()) \
           and not ($4 and exists ( \
                select 1 from auth.sessions o \
                 where o.user_id operator(pg_catalog.=) s.user_id \
                   and (o.created_at operator(pg_catalog.>) s.created_at \
                        or (o.created_at operator(pg_catalog.=) s.created_at \
                            and o.id operator(pg_catalog.>) s.id)))) \
          from auth.sessions s where s.id operator(pg_catalog.=) $1), false)";
    let args = [
        session_id.into(),
        config::SESSION_TIMEBOX.get().into(),
        config::SESSION_INACTIVITY_TIMEOUT.get().into(),
        config::SESSION_SINGLE_PER_USER.get().into(),
    ];
    Ok(db::read_one::<bool>(LIVE, &args)?.unwrap_or(false))
}

/// SQL: auth._session_is_live(session_id), for auth.cleanup and tests.
#[pg_extern(stable, parallel_restricted)]
fn _session_is_live(session_id: pgrx::Uuid) -> bool {
    session_is_live(session_id).or_raise()
}

/// The claims of an access token for `user` in session `session_id`.
pub fn access_claims(
    user: &Value,
    session_id: &str,
    aal: &str,
    amr: Value,
    issuer: Option<String>,
    now: i64,
    exp: i64,
) -> Map<String, Value> {
    let field = |k: &str| user.get(k).cloned().unwrap_or(Value::Null);
    let mut c = Map::new();
    if let Some(iss) = issuer {
        c.insert("iss".into(), Value::from(iss));
    }
    c.insert("sub".into(), field("id"));
    c.insert("aud".into(), field("aud"));
    c.insert("exp".into(), Value::from(exp));
    c.insert("iat".into(), Value::from(now));
    c.insert("email".into(), field("email"));
    c.insert("phone".into(), field("phone"));
    c.insert("app_metadata".into(), field("app_metadata"));
    c.insert("user_metadata".into(), field("user_metadata"));
    c.insert("role".into(), field("role"));
    c.insert("aal".into(), Value::from(aal));
    c.insert("amr".into(), amr);
    c.insert("session_id".into(), Value::from(session_id));
    c.insert("is_anonymous".into(), field("is_anonymous"));
    c
}

/// Start a session for `user_id` and return GoTrue's session object.
pub fn start(user_id: pgrx::Uuid, method: &str, req: &RequestInfo) -> AuthResult<Value> {
    // One statement for the session, its amr entry and its first refresh token (192
    // random bits, stored as a hash); the amr timestamp comes back with it.
    let refresh_token = keys::random_token(24)?;
    let (session_id, amr_time) = db::write_two::<String, i64>(
        "with s as ( \
             insert into auth.sessions (id, user_id, created_at, updated_at, aal, user_agent, ip) \
             values (pg_catalog.gen_random_uuid(), $1, pg_catalog.now(), pg_catalog.now(), 'aal1', $2, $3::pg_catalog.inet) \
             returning id, created_at), \
         a as ( \
             insert into auth.mfa_amr_claims (session_id, created_at, updated_at, authentication_method, id) \
             select s.id, s.created_at, s.created_at, $4, pg_catalog.gen_random_uuid() from s), \
         t as ( \
             insert into auth.refresh_tokens (instance_id, token, user_id, revoked, created_at, updated_at, session_id) \
             select '00000000-0000-0000-0000-000000000000', $5, $1::pg_catalog.text, false, pg_catalog.now(), pg_catalog.now(), s.id \
               from s) \
         select s.id::pg_catalog.text, pg_catalog.floor(pg_catalog.date_part('epoch', s.created_at))::pg_catalog.int8 from s",
        &[
            user_id.into(),
            req.user_agent.clone().into(),
            req.ip.map(|i| i.to_string()).into(),
            method.into(),
            token_hash(&refresh_token).into(),
        ],
    )?;
    let (Some(session_id), Some(amr_time)) = (session_id, amr_time) else {
        return Err(AuthError::Unexpected(
            "session insert returned nothing".into(),
        ));
    };
    // The same value auth.mfa_amr_claims now holds, which every refresh reads back.
    let amr = json!([{ "method": method, "timestamp": amr_time }]);
    issue(user_id, &session_id, "aal1", amr, refresh_token)
}

/// A new refresh token for the session: 192 random bits, of which only the SHA-256 is
/// stored; `parent` is the hash of the token it replaces.
pub fn new_refresh_token(
    user_id: pgrx::Uuid,
    session_id: &str,
    parent: Option<&str>,
) -> AuthResult<String> {
    let token = keys::random_token(24)?;
    db::exec(
        "insert into auth.refresh_tokens (instance_id, token, user_id, revoked, created_at, updated_at, parent, session_id) \
         values ('00000000-0000-0000-0000-000000000000', $1, $2, false, pg_catalog.now(), pg_catalog.now(), $3, $4::pg_catalog.uuid)",
        &[
            token_hash(&token).into(),
            crate::claims::uuid_text(&user_id).into(),
            parent.into(),
            session_id.into(),
        ],
    )?;
    Ok(token)
}

/// The amr claim of a session's tokens: how and when it was authenticated.
pub fn amr_of(session_id: &str) -> AuthResult<Value> {
    let text = db::read_one::<String>(
        "select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object( \
                    'method', c.authentication_method, \
                    'timestamp', pg_catalog.floor(pg_catalog.date_part('epoch', c.created_at))::pg_catalog.int8) \
                  order by c.created_at desc), '[]')::pg_catalog.text \
           from auth.mfa_amr_claims c where c.session_id = $1::pg_catalog.uuid",
        &[session_id.into()],
    )?
    .unwrap_or_else(|| "[]".into());
    serde_json::from_str(&text).map_err(|e| AuthError::Unexpected(format!("amr claims: {e}")))
}

/// New tokens for a session whose assurance level changed: every refresh token it had is
/// deleted (not revoked: a revoked token inside the reuse interval still mints a sibling),
/// so that one issued at aal1 cannot mint tokens of the new level; it is then
/// refresh_token_not_found, and the session lives on.
pub fn reissue(user_id: pgrx::Uuid, session_id: &str) -> AuthResult<Value> {
    db::exec(
        "delete from auth.refresh_tokens where session_id = $1::pg_catalog.uuid",
        &[session_id.into()],
    )?;
    let token = new_refresh_token(user_id, session_id, None)?;
    let aal = db::read_one::<String>(
        "select coalesce(s.aal, 'aal1')::pg_catalog.text from auth.sessions s where s.id = $1::pg_catalog.uuid",
        &[session_id.into()],
    )?
    .unwrap_or_else(|| "aal1".into());
    let amr = amr_of(session_id)?;
    issue(user_id, session_id, &aal, amr, token)
}

/// Sign an access token for the session and return GoTrue's session object.
/// `aal` is the session's assurance level (aal2 after a second factor), which the caller
/// has read with the session (a new session is aal1).
pub fn issue(
    user_id: pgrx::Uuid,
    session_id: &str,
    aal: &str,
    amr: Value,
    refresh_token: String,
) -> AuthResult<Value> {
    let user = user_json(user_id)?;
    let now = unix_now();
    let lifetime = i64::from(config::JWT_EXP.get());
    let method = amr
        .get(0)
        .and_then(|a| a.get("method"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let claims = crate::hooks::access_token_claims(
        user_id,
        access_claims(
            &user,
            session_id,
            aal,
            amr,
            config::jwt_issuer(),
            now,
            now + lifetime,
        ),
        &method,
    )?;
    let access_token = jwt::sign(&claims, &keys::signing_key()?)
        .map_err(|e| AuthError::Unexpected(e.to_string()))?;
    Ok(json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": lifetime,
        "expires_at": now + lifetime,
        "refresh_token": refresh_token,
        "user": user,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_token_hash_is_sha256_hex() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn claims_have_supabase_names() {
        let user = json!({"id": "u", "aud": "authenticated", "role": "authenticated",
            "email": "a@x.io", "phone": "", "app_metadata": {"provider": "email"},
            "user_metadata": {}, "is_anonymous": false});
        let c = access_claims(
            &user,
            "s",
            "aal1",
            json!([{"method": "password", "timestamp": 100}]),
            Some("me".into()),
            100,
            3700,
        );
        for k in [
            "sub",
            "aud",
            "exp",
            "iat",
            "email",
            "phone",
            "app_metadata",
            "user_metadata",
            "role",
            "aal",
            "amr",
            "session_id",
            "is_anonymous",
        ] {
            assert!(c.contains_key(k), "{k}");
        }
        assert_eq!(c["amr"], json!([{"method": "password", "timestamp": 100}]));
        assert_eq!(c["exp"], json!(3700));
    }
}
