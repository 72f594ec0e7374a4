//! Sign-up and sign-in with email and password. Both run with the owner's rights and
//! search_path pinned to pg_catalog, pg_temp: auth.sign_in is itself SECURITY DEFINER;
//! auth.sign_up is a SECURITY DEFINER SQL wrapper (sql/finalize.sql) so that its jsonb
//! argument reaches Rust as text and is parsed with our own errors.

use crate::config;
use crate::db;
use crate::error::{require_primary, AuthError, AuthResult, OrRaise};
use crate::password::{self, Cost, Verdict};
use crate::request;
use crate::sessions;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use serde_json::{json, Value};

/// Largest user metadata accepted, serialized: it travels in every access token.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

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

/// A JSON object given as jsonb text: NULL means `{}`; anything else must be an object of
/// at most `max` bytes. Parsed here (not by pgrx) so that deep nesting or odd numbers give
/// validation_failed rather than an internal error.
pub fn parse_object(raw: Option<&str>, what: &str, max: usize) -> AuthResult<Value> {
    let Some(raw) = raw else { return Ok(json!({})) };
    if raw.len() > max {
        return Err(AuthError::ValidationFailed(format!(
            "{what} is larger than {max} bytes"
        )));
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(AuthError::ValidationFailed(format!(
            "{what} must be a JSON object"
        ))),
        Err(_) => Err(AuthError::ValidationFailed(format!(
            "{what} is nested too deeply or holds numbers out of range"
        ))),
    }
}

pub fn parse_metadata(raw: Option<&str>) -> AuthResult<Value> {
    parse_object(raw, "user metadata", MAX_METADATA_BYTES)
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
    password::hash(password_policy(password)?, cost())
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

fn sign_up_impl(
    email: Option<&str>,
    password: Option<&str>,
    data: Option<&str>,
    redirect_to: Option<&str>,
) -> AuthResult<Value> {
    require_primary("sign-up")?;
    let email = normalize_email(email)?;
    // Cheap checks first: the metadata before the password policy, hashing last.
    let metadata = parse_metadata(data)?;
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
        return db::write_json(
            "select auth._repeated_sign_up($1, $2, $3::pg_catalog.jsonb, $4)::pg_catalog.text",
            &[
                email.as_str().into(),
                hash.into(),
                metadata.to_string().into(),
                redirect_to.into(),
            ],
        );
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
        return db::write_json(
            "select auth._confirm_sign_up($1, $2)::pg_catalog.text",
            &[user_id.into(), redirect_to.into()],
        );
    }
    password_session(user_id, "user_signedup", &request::current())
}

/// The lockout counter of an account.
fn account_key(email: &str) -> String {
    format!("email:{email}")
}

/// The lockout counter of the request's client IP, when it has one.
fn ip_key(req: &request::RequestInfo) -> Option<String> {
    req.ip.map(|ip| format!("ip:{ip}"))
}

/// Record a failed attempt in a transaction of its own (the error that follows aborts
/// ours): the login_failed audit entry and the lockout counters of the account (when the
/// address is known) and of the client IP.
pub fn record_failure(
    email: Option<&str>,
    user_id: Option<pgrx::Uuid>,
    req: &request::RequestInfo,
    traits: Value,
) {
    let id = user_id.map(|u| u.to_string());
    let entry = sessions::audit_entry("login_failed", id.as_deref(), email, req, traits);
    let keys: Vec<String> = email
        .map(account_key)
        .into_iter()
        .chain(ip_key(req))
        .collect();
    let job = json!({
        "audit": entry,
        "count_failures": {
            "keys": keys,
            "window": format!("{} seconds", config::LOCKOUT_WINDOW.get()),
        },
    });
    if let Err(e) = crate::autonomous::run(&job) {
        pgrx::warning!("auth_ext: could not record a failed attempt: {e}");
    }
}

/// A failed sign-in: recorded, then returned for raising.
fn failed_sign_in(
    email: &str,
    user_id: Option<pgrx::Uuid>,
    req: &request::RequestInfo,
    error: AuthError,
) -> AuthError {
    record_failure(
        Some(email),
        user_id,
        req,
        json!({"provider": "email", "reason": error.code()}),
    );
    error
}

fn sign_in_impl(email: Option<&str>, password: Option<&str>) -> AuthResult<Value> {
    require_primary("sign-in")?;
    sign_in_checked(email, password)
}

/// Whether the account ($2) or the client IP ($3) has reached its failure limit ($4, $5)
/// within the window ($6 seconds). A macro so that the sign-in lookup can embed it.
macro_rules! locked_sql {
    () => {
        "select coalesce(bool_or((f.key = $2 and $4 > 0 and f.failures >= $4) \
                              or (f.key = $3 and $5 > 0 and f.failures >= $5)), false) as locked \
           from auth.sign_in_failures f \
          where f.key = any (array[$2, $3]) \
            and f.window_start > pg_catalog.now() - pg_catalog.make_interval(0, 0, 0, 0, 0, 0, $6)"
    };
}

fn lockout_args(email: Option<&str>, req: &request::RequestInfo) -> [DatumWithOid<'static>; 6] {
    [
        email.map(str::to_string).into(),
        email.map(account_key).into(),
        ip_key(req).into(),
        config::LOCKOUT_MAX_FAILURES.get().into(),
        config::LOCKOUT_IP_MAX_FAILURES.get().into(),
        config::LOCKOUT_WINDOW.get().into(),
    ]
}

/// Is the account of `email` (when given) or the request's client IP locked out?
pub fn locked_out(email: Option<&str>, req: &request::RequestInfo) -> AuthResult<bool> {
    Ok(db::read_one::<bool>(locked_sql!(), &lockout_args(email, req))?.unwrap_or(false))
}

/// What sign-in needs to know about a user: id, stored hash, banned, email confirmed.
type SignInRow = (
    Option<pgrx::Uuid>,
    Option<String>,
    Option<bool>,
    Option<bool>,
);

/// The lockout verdict for the account and the client IP, and the user: one statement.
/// A locked account or IP is refused before any password work, so even the right password
/// waits for the window to pass.
fn lookup_for_sign_in(email: &str, req: &request::RequestInfo) -> AuthResult<SignInRow> {
    let (locked, found) = db::read_row(
        concat!(
            "select l.locked, u.id, u.encrypted_password, \
                    coalesce(u.banned_until > pg_catalog.now(), false), \
                    u.email_confirmed_at is not null \
               from (",
            locked_sql!(),
            ") l \
               left join auth.users u \
                 on pg_catalog.lower(u.email) = pg_catalog.lower($1) \
                and u.is_sso_user = false and u.deleted_at is null"
        ),
        &lockout_args(Some(email), req),
        |t| {
            let r = t.first();
            Ok((
                r.get::<bool>(1)?.unwrap_or(false),
                (
                    r.get::<pgrx::Uuid>(2)?,
                    r.get::<String>(3)?,
                    r.get::<bool>(4)?,
                    r.get::<bool>(5)?,
                ),
            ))
        },
    )?;
    if locked {
        return Err(AuthError::OverRequestRateLimit);
    }
    Ok(found)
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
        &[user_id.into(), account_key(email).into()],
    )?;
    password_session(user_id, "login", req)
}

/// Internal, owner only, for the benchmark: a sign-in without the password check (the
/// rest of sign-in, measured on its own).
#[pg_extern(volatile)]
fn _sign_in_without_password_check(email: &str) -> pgrx::JsonB {
    let result = (|| {
        let email = normalize_email(Some(email))?;
        let req = request::current();
        match lookup_for_sign_in(&email, &req)? {
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
    let found = lookup_for_sign_in(&email, &req)?;
    let (user_id, stored, banned, confirmed) = match found {
        (Some(id), Some(stored), banned, confirmed) if !stored.is_empty() => (
            id,
            stored,
            banned.unwrap_or(false),
            confirmed.unwrap_or(false),
        ),
        (id, _, _, _) => {
            // Unknown email or no password: do the work a real check does, then fail alike.
            password::burn_verification(password, cost);
            return Err(failed_sign_in(
                &email,
                id,
                &req,
                AuthError::InvalidCredentials,
            ));
        }
    };
    let verdict = password::verify(password, &stored, cost);
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
    if verdict == Verdict::MatchNeedsRehash {
        let upgraded = password::hash(password, cost)?;
        db::exec(
            "update auth.users set encrypted_password = $2, updated_at = pg_catalog.now() where id = $1",
            &[user_id.into(), upgraded.into()],
        )?;
    }
    complete_sign_in(user_id, &email, &req)
}

/// Internal, owner only: does `password` match the stored `hash`? The cost of exactly the
/// check sign_in makes (the benchmark uses it to split sign-in time).
#[pg_extern(volatile)]
fn _verify_password(password: &str, hash: &str) -> bool {
    password::verify(password, hash, cost()) != Verdict::Mismatch
}

/// Internal: called by the SECURITY DEFINER wrapper auth.sign_up.
#[pg_extern(volatile)]
fn _sign_up_with_redirect(
    email: Option<&str>,
    password: Option<&str>,
    data: Option<&str>,
    redirect_to: Option<&str>,
) -> pgrx::JsonB {
    pgrx::JsonB(sign_up_impl(email, password, data, redirect_to).or_raise())
}

/// The wrapper of versions before 0.4.0: a database not yet updated (ALTER EXTENSION
/// auth_ext UPDATE) calls it with the new library, so its signature never changes.
#[pg_extern(volatile)]
fn _sign_up(email: Option<&str>, password: Option<&str>, data: Option<&str>) -> pgrx::JsonB {
    pgrx::JsonB(sign_up_impl(email, password, data, None).or_raise())
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

    #[test]
    fn metadata_must_be_a_bounded_object() {
        assert_eq!(parse_metadata(None).unwrap(), json!({}));
        assert_eq!(parse_metadata(Some(r#"{"a":1}"#)).unwrap(), json!({"a": 1}));
        for bad in ["[1]", "\"s\"", "null", "1", "{\"n\":1e400}"] {
            assert_eq!(
                parse_metadata(Some(bad)).unwrap_err().code(),
                "validation_failed",
                "{bad}"
            );
        }
        let deep = format!(
            "{}{}",
            "{\"a\":".repeat(200),
            "1".to_string() + &"}".repeat(200)
        );
        assert_eq!(
            parse_metadata(Some(&deep)).unwrap_err().code(),
            "validation_failed"
        );
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_METADATA_BYTES));
        assert_eq!(
            parse_metadata(Some(&big)).unwrap_err().code(),
            "validation_failed"
        );
    }
}
