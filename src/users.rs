//! Sign-up and sign-in with email and password. Both run with the owner's rights and
//! search_path pinned to pg_catalog, pg_temp: auth.sign_in is itself SECURITY DEFINER;
//! auth.sign_up is a SECURITY DEFINER SQL wrapper (sql/finalize.sql) so that its jsonb
//! argument reaches Rust as text and is parsed with our own errors.

use crate::config;
use crate::db;
use crate::error::{require_primary, AuthError, AuthResult, OrRaise};
use crate::hashing;
use crate::lockout;
use crate::password::{self, Cost, Verdict};
use crate::request;
use crate::sessions;
use pgrx::prelude::*;
use serde_json::{json, Value};

fn invalid_email() -> AuthError {
    AuthError::ValidationFailed("Unable to validate email address: invalid format".into())
}

/// Trim, lower-case and validate an email address. ASCII only, like GoTrue's check:
/// look-alike Unicode addresses would otherwise be separate accounts.
pub fn normalize_email(raw: Option<&str>) -> AuthResult<String> {
    let email = raw.unwrap_or("").trim();
    if email.is_empty() {
        return Err(AuthError::ValidationFailed(
            "An email address is required".into(),
        ));
    }
    if email.len() > 255 {
        return Err(AuthError::ValidationFailed(
            "Unable to validate email address: longer than 255 characters".into(),
        ));
    }
    if !email.is_ascii() {
        return Err(invalid_email());
    }
    let email = email.to_ascii_lowercase();
    let (local, domain) = email.rsplit_once('@').ok_or_else(invalid_email)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(email)
    } else {
        Err(invalid_email())
    }
}

fn cost() -> Cost {
    Cost {
        memory_kib: config::ARGON2_MEMORY_KIB.get().max(0) as u32,
        iterations: config::ARGON2_ITERATIONS.get().max(0) as u32,
    }
}

fn password_policy(password: Option<&str>) -> AuthResult<&str> {
    let password =
        password.ok_or_else(|| AuthError::ValidationFailed("A password is required".into()))?;
    password::check_policy(
        password,
        config::PASSWORD_MIN_LENGTH.get().max(0) as usize,
        config::PASSWORD_MAX_LENGTH.get().max(0) as usize,
    )?;
    Ok(password)
}

/// An argon2id hash of a new password that meets the policy.
pub fn hash_new_password(password: Option<&str>) -> AuthResult<String> {
    hashing::hash(password_policy(password)?, cost())
}

/// A new session for a password sign-up or sign-in, with its audit entry.
fn password_session(
    user_id: pgrx::Uuid,
    audit_action: &str,
    req: &request::RequestInfo,
) -> AuthResult<Value> {
    let session = sessions::start(user_id, "password", req)?;
    sessions::audit(
        audit_action,
        &session["user"],
        req,
        json!({"provider": "email"}),
    )?;
    Ok(session)
}

/// Which SQL a sign-up with confirmation calls: the current forms, with the PKCE flow
/// (`auth._pkce_flow`'s JSON, or None), or the forms of 0.4.0 and 0.5.0, which a database
/// not yet updated calls through `_sign_up_with_redirect` with this library.
#[derive(Clone, Copy)]
enum Flow<'a> {
    Current(Option<&'a str>),
    Legacy,
}

fn sign_up_impl(
    email: Option<&str>,
    password: Option<&str>,
    data: Option<&str>,
    redirect_to: Option<&str>,
    flow: Flow<'_>,
) -> AuthResult<Value> {
    require_primary("sign-up")?;
    let email = normalize_email(email)?;
    // Cheap checks first: the metadata before the password policy, hashing last.
    let metadata = crate::metadata::parse_metadata(data)?;
    let hash = hash_new_password(password)?;
    let confirm = config::REQUIRE_EMAIL_CONFIRMATION.get();

    // ON CONFLICT DO NOTHING: a concurrent sign-up of the same email waits for the first
    // to commit, then inserts nothing, and we report one clean user_already_exists.
    let user_id = db::write_one::<pgrx::Uuid>(
        "insert into auth.users (instance_id, id, aud, role, email, encrypted_password, \
             email_confirmed_at, raw_app_meta_data, raw_user_meta_data, is_super_admin, \
             created_at, updated_at, last_sign_in_at, is_anonymous) \
         values ('00000000-0000-0000-0000-000000000000', pg_catalog.gen_random_uuid(), \
             'authenticated', 'authenticated', $1, $2, case when $4 then null else pg_catalog.now() end, \
             '{\"provider\": \"email\", \"providers\": [\"email\"]}', $3::pg_catalog.jsonb, false, \
             pg_catalog.now(), pg_catalog.now(), case when $4 then null else pg_catalog.now() end, false) \
         on conflict do nothing \
         returning id",
        &[
            email.as_str().into(),
            hash.clone().into(),
            metadata.to_string().into(),
            confirm.into(),
        ],
    )?;
    let Some(user_id) = user_id else {
        if !confirm {
            return Err(AuthError::UserAlreadyExists);
        }
        // With confirmation on, GoTrue answers a repeated sign-up like a new one, so that
        // sign_up does not reveal which addresses have accounts (sql/flows.sql).
        return match flow {
            Flow::Current(pkce) => db::write_json(
                "select auth._repeated_sign_up($1, $2, $3::pg_catalog.jsonb, $4, $5::pg_catalog.jsonb)::pg_catalog.text",
                &[
                    email.as_str().into(),
                    hash.into(),
                    metadata.to_string().into(),
                    redirect_to.into(),
                    pkce.into(),
                ],
            ),
            Flow::Legacy => db::write_json(
                "select auth._repeated_sign_up($1, $2, $3::pg_catalog.jsonb, $4)::pg_catalog.text",
                &[
                    email.as_str().into(),
                    hash.into(),
                    metadata.to_string().into(),
                    redirect_to.into(),
                ],
            ),
        };
    };

    let identity = json!({
        "sub": user_id.to_string(),
        "email": email,
        "email_verified": false,
        "phone_verified": false,
    });
    db::exec(
        "insert into auth.identities (provider_id, user_id, identity_data, provider, \
             last_sign_in_at, created_at, updated_at) \
         values ($1::pg_catalog.text, $1, $2::pg_catalog.jsonb, 'email', pg_catalog.now(), pg_catalog.now(), pg_catalog.now())",
        &[user_id.into(), identity.to_string().into()],
    )?;

    if confirm {
        // No session: the user object, and a confirmation on its way (sql/flows.sql).
        return match flow {
            Flow::Current(pkce) => db::write_json(
                "select auth._confirm_sign_up($1, $2, $3::pg_catalog.jsonb)::pg_catalog.text",
                &[user_id.into(), redirect_to.into(), pkce.into()],
            ),
            Flow::Legacy => db::write_json(
                "select auth._confirm_sign_up($1, $2)::pg_catalog.text",
                &[user_id.into(), redirect_to.into()],
            ),
        };
    }
    password_session(user_id, "user_signedup", &request::current())
}

/// The login_failed audit entry of a failed attempt.
pub fn failure_audit(
    email: Option<&str>,
    user_id: Option<pgrx::Uuid>,
    req: &request::RequestInfo,
    traits: Value,
) -> Value {
    let id = user_id.map(|u| u.to_string());
    sessions::audit_entry("login_failed", id.as_deref(), email, req, traits)
}

/// A failed sign-in: written down (with its lockout count) by an autonomous transaction,
/// then returned for raising.
fn failed_sign_in(
    email: &str,
    user_id: Option<pgrx::Uuid>,
    req: &request::RequestInfo,
    error: AuthError,
) -> AuthError {
    lockout::failed(failure_audit(
        Some(email),
        user_id,
        req,
        json!({"provider": "email", "reason": error.code()}),
    ));
    error
}

fn sign_in_impl(email: Option<&str>, password: Option<&str>) -> AuthResult<Value> {
    require_primary("sign-in")?;
    sign_in_checked(email, password)
}

/// What sign-in needs to know about a user: id, stored hash, banned, email confirmed.
type SignInRow = (
    Option<pgrx::Uuid>,
    Option<String>,
    Option<bool>,
    Option<bool>,
);

/// The user an address belongs to (none of SSO or deleted users).
fn lookup_for_sign_in(email: &str) -> AuthResult<SignInRow> {
    db::read_row(
        "select u.id, u.encrypted_password, \
                coalesce(u.banned_until > pg_catalog.now(), false), \
                u.email_confirmed_at is not null \
           from auth.users u \
          where pg_catalog.lower(u.email) = pg_catalog.lower($1) \
            and u.is_sso_user = false and u.deleted_at is null",
        &[email.into()],
        |t| {
            let r = t.first();
            Ok((
                r.get::<pgrx::Uuid>(1)?,
                r.get::<String>(2)?,
                r.get::<bool>(3)?,
                r.get::<bool>(4)?,
            ))
        },
    )
}

/// Everything a successful sign-in does after the password check: last sign-in times,
/// the account's lockout count cleared, a new session and its audit entry.
fn complete_sign_in(
    user_id: pgrx::Uuid,
    email: &str,
    req: &request::RequestInfo,
) -> AuthResult<Value> {
    db::exec(
        "with u as (update auth.users set last_sign_in_at = pg_catalog.now() where id = $1), \
              f as (delete from auth.sign_in_failures where key = $2) \
         update auth.identities set last_sign_in_at = pg_catalog.now() \
          where user_id = $1 and provider = 'email'",
        &[user_id.into(), lockout::account_key(email).into()],
    )?;
    password_session(user_id, "login", req)
}

/// For the benchmark only: a sign-in without the password check (the rest of sign-in,
/// measured on its own). No SQL function is created for it: a function that signs in
/// without a password must not exist in a user's database. bench/bench.sql declares it
/// (LANGUAGE C, which only a superuser can) in a schema of its own.
#[pg_extern(volatile, sql = false)]
fn _sign_in_without_password_check(email: &str) -> pgrx::JsonB {
    let result = (|| {
        let email = normalize_email(Some(email))?;
        let req = request::current();
        lockout::begin(Some(&email), &req)?;
        lockout::succeeded();
        match lookup_for_sign_in(&email)? {
            (Some(user_id), _, Some(false), _) => complete_sign_in(user_id, &email, &req),
            _ => Err(AuthError::InvalidCredentials),
        }
    })();
    pgrx::JsonB(result.or_raise())
}

fn sign_in_checked(email: Option<&str>, password: Option<&str>) -> AuthResult<Value> {
    let email = normalize_email(email)?;
    let password =
        password.ok_or_else(|| AuthError::ValidationFailed("A password is required".into()))?;
    let max = config::PASSWORD_MAX_LENGTH.get().max(0) as usize;
    if password.chars().count() > max {
        // Refused before any hashing: the same answer for every account, so no enumeration.
        return Err(AuthError::ValidationFailed(format!(
            "Password cannot be longer than {max} characters"
        )));
    }
    let cost = cost();
    let req = request::current();
    // Counted before anything is checked: refused here when the account or the address
    // is locked, or when the guesses in flight at it would reach the threshold.
    lockout::begin(Some(&email), &req)?;
    let found = lookup_for_sign_in(&email)?;
    let (user_id, stored, banned, confirmed) = match found {
        (Some(id), Some(stored), banned, confirmed) if !stored.is_empty() => (
            id,
            stored,
            banned.unwrap_or(false),
            confirmed.unwrap_or(false),
        ),
        (id, _, _, _) => {
            // Unknown email or no password: do the work a real check does, then fail alike.
            hashing::burn(password, cost)?;
            return Err(failed_sign_in(
                &email,
                id,
                &req,
                AuthError::InvalidCredentials,
            ));
        }
    };
    let (verdict, upgraded) = hashing::verify_upgrading(password, &stored, cost)?;
    if verdict == Verdict::Mismatch {
        return Err(failed_sign_in(
            &email,
            Some(user_id),
            &req,
            AuthError::InvalidCredentials,
        ));
    }
    // Checked only after the password, so a ban is not revealed to someone without it.
    if banned {
        return Err(failed_sign_in(
            &email,
            Some(user_id),
            &req,
            AuthError::UserBanned,
        ));
    }
    // Also only after the password: an unconfirmed address is not revealed either.
    if !confirmed && config::REQUIRE_EMAIL_CONFIRMATION.get() {
        return Err(failed_sign_in(
            &email,
            Some(user_id),
            &req,
            AuthError::EmailNotConfirmed,
        ));
    }
    lockout::succeeded();
    if let Some(upgraded) = upgraded {
        db::exec(
            "update auth.users set encrypted_password = $2, updated_at = pg_catalog.now() where id = $1",
            &[user_id.into(), upgraded.into()],
        )?;
    }
    complete_sign_in(user_id, &email, &req)
}

/// For the benchmark only (declared by bench/bench.sql, like the function above): does
/// `password` match the stored `hash`? The cost of exactly the check sign_in makes.
#[pg_extern(volatile, sql = false)]
fn _verify_password(password: &str, hash: &str) -> bool {
    password::verify(password, hash, cost()) != Verdict::Mismatch
}

/// The hash of a user's new password (GoTrue's PUT /user): `same_password` when it matches
/// the current one, the policy, then the new hash, computed before the caller locks the
/// user's row (a hash may wait for a place, src/hashing.rs).
///
/// Comparing a candidate with the current password answers "is this the password?", to
/// anyone holding an access token, in a call whose effects a rollback undoes. So each
/// comparison counts as a guess, before it is made and whatever it finds, on a counter of
/// its own (`password_check:<user id>`, with the account's threshold, not the address's): a
/// token holder gets that many per window, and a user's own sign-ins are never locked by
/// changing passwords.
fn new_password_hash(user_id: pgrx::Uuid, password: Option<&str>) -> AuthResult<String> {
    let password = password_policy(password)?;
    let (email, stored) = db::read_two::<String, String>(
        "select u.email, u.encrypted_password from auth.users u where u.id = $1",
        &[user_id.into()],
    )?;
    let stored = stored.filter(|s| !s.is_empty());
    let Some(stored) = stored else {
        return hashing::hash(password, cost());
    };
    let req = request::current();
    lockout::begin_named(&format!("password_check:{user_id}"))?;
    // The comparison and the new hash under one hashing place: a change that cannot get
    // one fails having compared nothing and counted nothing.
    let new_hash = hashing::compare_then_hash(password, Some(&stored), cost())?;
    lockout::failed(sessions::audit_entry(
        "user_password_checked",
        Some(&user_id.to_string()),
        email.as_deref(),
        &req,
        json!({"same_password": new_hash.is_none()}),
    ));
    new_hash.ok_or(AuthError::SamePassword)
}

/// Whether `password` is the user's current password: compared under a hashing place and
/// counted before the comparison like every password comparison of a change.
fn current_password_matches(user_id: pgrx::Uuid, password: Option<&str>) -> AuthResult<bool> {
    let password = password.unwrap_or("");
    let (email, stored) = db::read_two::<String, String>(
        "select u.email, u.encrypted_password from auth.users u where u.id = $1",
        &[user_id.into()],
    )?;
    let Some(stored) = stored.filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    let req = request::current();
    lockout::begin_named(&format!("password_check:{user_id}"))?;
    let (verdict, _) = hashing::verify_upgrading(password, &stored, cost())?;
    let matches = verdict != Verdict::Mismatch;
    if matches {
        lockout::succeeded();
    } else {
        lockout::failed(sessions::audit_entry(
            "user_password_checked",
            Some(&user_id.to_string()),
            email.as_deref(),
            &req,
            json!({"current_password": false}),
        ));
    }
    Ok(matches)
}

/// SQL (behind auth.update_user): see [`current_password_matches`].
#[pg_extern(volatile)]
fn _current_password_matches(user_id: pgrx::Uuid, password: Option<&str>) -> bool {
    current_password_matches(user_id, password).or_raise()
}

/// SQL (behind auth.update_user): which proofs a password change needs.
#[pg_extern(stable)]
fn _password_update_rules() -> pgrx::JsonB {
    pgrx::JsonB(json!({
        "reauthentication": config::UPDATE_PASSWORD_REQUIRE_REAUTHENTICATION.get(),
        "current_password": config::UPDATE_PASSWORD_REQUIRE_CURRENT_PASSWORD.get(),
    }))
}

/// SQL (behind auth.update_user): the hash of the user's new password.
#[pg_extern(volatile)]
fn _new_password_hash(user_id: pgrx::Uuid, password: Option<&str>) -> String {
    new_password_hash(user_id, password).or_raise()
}

/// Internal: called by the SECURITY DEFINER wrapper auth.sign_up. `pkce` is the flow of
/// the confirmation link (auth._pkce_flow), or NULL.
#[pg_extern(volatile)]
fn _sign_up_with_flow(
    email: Option<&str>,
    password: Option<&str>,
    data: Option<&str>,
    redirect_to: Option<&str>,
    pkce: Option<&str>,
) -> pgrx::JsonB {
    pgrx::JsonB(sign_up_impl(email, password, data, redirect_to, Flow::Current(pkce)).or_raise())
}

/// The wrapper of 0.4.0 and 0.5.0, whose SQL calls it until the database is updated; no
/// SQL function is created for it any more.
#[pg_extern(volatile, sql = false)]
fn _sign_up_with_redirect(
    email: Option<&str>,
    password: Option<&str>,
    data: Option<&str>,
    redirect_to: Option<&str>,
) -> pgrx::JsonB {
    pgrx::JsonB(sign_up_impl(email, password, data, redirect_to, Flow::Legacy).or_raise())
}

/// The wrapper of versions before 0.4.0: a database not yet updated (ALTER EXTENSION
/// auth_ext UPDATE) calls it with the new library, so its signature never changes.
#[pg_extern(volatile)]
fn _sign_up(email: Option<&str>, password: Option<&str>, data: Option<&str>) -> pgrx::JsonB {
    pgrx::JsonB(sign_up_impl(email, password, data, None, Flow::Legacy).or_raise())
}

/// auth.sign_in(email, password). SECURITY DEFINER (anon may sign in without any right on
/// auth.*) with search_path pinned to pg_catalog, pg_temp; every query qualifies its names.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sign_in(email: Option<&str>, password: Option<&str>) -> pgrx::JsonB {
    pgrx::JsonB(sign_in_impl(email, password).or_raise())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        assert_eq!(
            normalize_email(Some("  Alice@Example.IO ")).unwrap(),
            "alice@example.io"
        );
        assert_eq!(
            normalize_email(Some("a.b+tag@sub.x-y.io")).unwrap(),
            "a.b+tag@sub.x-y.io"
        );
        assert_eq!(normalize_email(Some("\ta@x.io\n")).unwrap(), "a@x.io");
    }

    #[test]
    fn bad_emails_fail_validation() {
        for e in [
            None,
            Some(""),
            Some("   "),
            Some("plain"),
            Some("@x.io"),
            Some("a@"),
            Some("a@x"),
            Some("a@@x.io"),
            Some("a b@x.io"),
            Some(".a@x.io"),
            Some("a..b@x.io"),
            Some("a@-x.io"),
            Some("a@x..io"),
            Some("a\n@x.io"),
            Some("a\u{0}@x.io"),
            Some("ålice@x.io"),
            Some("ａ@x.io"),
        ] {
            let err = normalize_email(e).unwrap_err();
            assert_eq!(err.code(), "validation_failed", "{e:?}");
        }
        let long = format!("{}@x.io", "a".repeat(251));
        assert!(normalize_email(Some(&long)).is_err());
    }
}
