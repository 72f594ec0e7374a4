//! `auth.refresh`: refresh-token rotation with reuse detection.
//!
//! Every use rotates: the presented token is revoked and a new one issued. A token that
//! was already rotated is either a benign race or a theft:
//! - within `auth.refresh_reuse_interval` of its rotation (two tabs, a server-side render,
//!   a client that lost the response) it yields a valid session again: since only hashes
//!   are stored, the caller gets a fresh sibling refresh token of the same session rather
//!   than a copy of the current one, with the same effect;
//! - later, the whole session is revoked, committed by an autonomous write (the call then
//!   fails), and `refresh_token_already_used` is raised.
//!
//! Locking: the first look at the token takes no lock, so the revocation's autonomous
//! transaction never waits for us. Then the session row is locked FOR UPDATE, which
//! serialises concurrent refreshes of one session; nothing else is locked.

use crate::autonomous;
use crate::config;
use crate::db;
use crate::error::{require_primary, AuthError, AuthResult, OrRaise};
use crate::request;
use crate::sessions;
use pgrx::prelude::*;
use serde_json::{json, Value};

/// Longest refresh token looked up; ours are 32 characters.
const MAX_REFRESH_TOKEN_LEN: usize = 512;

struct TokenState {
    session_id: Option<String>,
    user_id: Option<String>,
    revoked: bool,
    /// Revoked longer ago than the reuse interval.
    stale: bool,
    /// The session has ended (not_after in the past): revoked by an earlier reuse.
    session_ended: bool,
}

fn token_state(hash: &str) -> AuthResult<Option<TokenState>> {
    let interval = config::REFRESH_REUSE_INTERVAL.get();
    db::read_row(
        "select t.session_id::pg_catalog.text, t.user_id::pg_catalog.text, coalesce(t.revoked, false), \
                    coalesce(t.revoked, false) \
                      and t.updated_at < pg_catalog.now() - pg_catalog.make_interval(secs => $2), \
                    coalesce(s.not_after <= pg_catalog.now(), false) \
               from auth.refresh_tokens t left join auth.sessions s on s.id = t.session_id \
              where t.token = $1",
        &[hash.into(), interval.into()],
        |t| {
            let r = t.first();
            Ok(Some(TokenState {
                session_id: r.get(1)?,
                user_id: r.get(2)?,
                revoked: r.get(3)?.unwrap_or(false),
                stale: r.get(4)?.unwrap_or(false),
                session_ended: r.get(5)?.unwrap_or(false),
            }))
        },
    )
}

/// Revoke the session in a transaction of its own, with an audit entry, so that both stay
/// even though the caller's transaction is about to fail.
fn revoke_session_autonomously(state: &TokenState, req: &request::RequestInfo) {
    let Some(session_id) = &state.session_id else {
        return;
    };
    let entry = sessions::audit_entry(
        "token_revoked",
        state.user_id.as_deref(),
        None,
        req,
        json!({"reason": "refresh_token_reuse", "session_id": session_id}),
    );
    let job = json!({"revoke_session": session_id, "audit": entry});
    match autonomous::run(&job) {
        Ok(()) => crate::lockout::clear_session_mark(session_id),
        Err(e) => {
            // Fail closed: until the revocation is written (at the next attempt to use the
            // session), every refresh of it is refused.
            crate::lockout::mark_session(session_id);
            pgrx::warning!(
                "auth_ext: could not commit the revocation of session {session_id} after refresh token reuse ({e}); its refreshes are refused until it is"
            );
        }
    }
}

fn refresh_impl(token: Option<&str>) -> AuthResult<Value> {
    require_primary("refresh")?;
    let token =
        token.ok_or_else(|| AuthError::ValidationFailed("A refresh token is required".into()))?;
    if token.is_empty() || token.len() > MAX_REFRESH_TOKEN_LEN {
        return Err(AuthError::RefreshTokenNotFound);
    }
    let hash = sessions::token_hash(token);
    let req = request::current();

    let state = token_state(&hash)?.ok_or(AuthError::RefreshTokenNotFound)?;
    let Some(session_id) = state.session_id.clone() else {
        return Err(AuthError::RefreshTokenNotFound);
    };
    if state.revoked && state.session_ended {
        return Err(AuthError::RefreshTokenAlreadyUsed);
    }
    // A session whose revocation is still to be written: write it now, refuse either way.
    if state.stale || crate::lockout::session_marked(&session_id) {
        revoke_session_autonomously(&state, &req);
        return Err(AuthError::RefreshTokenAlreadyUsed);
    }

    // Serialise with every other refresh of this session.
    let locked = db::write_row(
        "select s.user_id, s.id, \
                    coalesce(u.banned_until > pg_catalog.now(), false), \
                    (select t.revoked from auth.refresh_tokens t where t.token = $2) \
               from auth.sessions s join auth.users u on u.id = s.user_id \
              where s.id = $1::pg_catalog.uuid \
                for update of s",
        &[session_id.as_str().into(), hash.as_str().into()],
        |t| {
            let r = t.first();
            Ok(Some((
                r.get::<pgrx::Uuid>(1)?,
                r.get::<pgrx::Uuid>(2)?,
                r.get::<bool>(3)?.unwrap_or(false),
                r.get::<bool>(4)?,
            )))
        },
    )?;
    // The session or the token vanished meanwhile (signed out, cleaned up).
    let Some((Some(user_id), Some(locked_id), banned, Some(revoked_now))) = locked else {
        return Err(AuthError::RefreshTokenNotFound);
    };
    // Read again in a statement of its own, with a snapshot taken after the lock: a change
    // of the session's level (MFA) deletes its tokens while holding the lock, and a refresh
    // that waited for it must not mint a child of a token that is gone. The session's level
    // comes with it, for the new access token.
    let (still_there, aal) = db::read_two::<bool, String>(
        "select exists (select from auth.refresh_tokens t where t.token operator(pg_catalog.=) $1), \
                coalesce(s.aal, 'aal1')::pg_catalog.text \
           from auth.sessions s where s.id operator(pg_catalog.=) $2::pg_catalog.uuid",
        &[hash.as_str().into(), session_id.as_str().into()],
    )?;
    if still_there != Some(true) {
        return Err(AuthError::RefreshTokenNotFound);
    }
    let aal = aal.unwrap_or_else(|| "aal1".into());
    if !sessions::session_is_live(locked_id)? {
        return Err(AuthError::SessionExpired);
    }
    if banned {
        return Err(AuthError::UserBanned);
    }
    if !revoked_now {
        db::exec(
            "update auth.refresh_tokens set revoked = true, updated_at = pg_catalog.now() where token = $1",
            &[hash.as_str().into()],
        )?;
    }
    // Either the rotation's successor, or (a rotated token inside the reuse interval) a
    // sibling: both are children of the presented token.
    let new_token = sessions::new_refresh_token(user_id, &session_id, Some(&hash))?;
    db::exec(
        "update auth.sessions \
            set refreshed_at = pg_catalog.now() at time zone 'UTC', updated_at = pg_catalog.now(), \
                user_agent = coalesce($2, user_agent), ip = coalesce($3::pg_catalog.inet, ip) \
          where id = $1::pg_catalog.uuid",
        &[
            session_id.as_str().into(),
            req.user_agent.clone().into(),
            req.ip.map(|i| i.to_string()).into(),
        ],
    )?;
    let amr = sessions::amr_of(&session_id)?;
    let session = sessions::issue(user_id, &session_id, &aal, amr, new_token)?;
    sessions::audit(
        "token_refreshed",
        &session["user"],
        &req,
        json!({"session_id": session_id, "reused_within_interval": revoked_now}),
    )?;
    Ok(session)
}

/// auth.refresh(refresh_token). SECURITY DEFINER (the tokens are owner-only) with
/// search_path pinned to pg_catalog, pg_temp; every query qualifies its names.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn refresh(refresh_token: Option<&str>) -> pgrx::JsonB {
    pgrx::JsonB(refresh_impl(refresh_token).or_raise())
}
