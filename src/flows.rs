//! The Rust half of the account flows (confirmation, recovery, magic link and codes, email
//! change; sql/flows.sql holds the other half): what needs a CSPRNG, the password hasher,
//! the session machinery, an autonomous write or strict parsing. Each is an owner-only
//! helper called from the SECURITY DEFINER functions of sql/flows.sql.

use crate::config;
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::lockout;
use crate::request;
use crate::sessions;
use crate::users;
use pgrx::prelude::*;
use serde_json::json;

/// A uniformly random six-digit code (rejection sampling: no digit is likelier than
/// another).
fn six_digit_code() -> AuthResult<String> {
    loop {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b)
            .map_err(|e| AuthError::Unexpected(format!("random number generator failed: {e}")))?;
        let n = u32::from_le_bytes(b);
        // The largest multiple of 10^6 that fits in u32.
        if n < 4_294_000_000 {
            return Ok(format!("{:06}", n % 1_000_000));
        }
    }
}

/// Does `url` start with `prefix` at a URL boundary (end, '/', '?' or '#')? So an allowed
/// `https://app.example` does not let `https://app.example.evil.io` through.
fn within(url: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match url.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with(['/', '?', '#']),
        None => false,
    }
}

/// The redirect_to handed to the mailer: the caller's when it is within auth.site_url or
/// an entry of auth.redirect_allow_list, else auth.site_url (as GoTrue falls back).
pub fn redirect_to(requested: Option<&str>, site: Option<&str>, allowed: &[String]) -> String {
    let site = site.unwrap_or("");
    match requested.map(str::trim) {
        Some(url)
            if !url.is_empty()
                && url.len() <= 2048
                && !url.chars().any(|c| c.is_control() || c.is_whitespace())
                && ((!site.is_empty() && within(url, site))
                    || allowed.iter().any(|p| within(url, p))) =>
        {
            url.to_string()
        }
        _ => site.to_string(),
    }
}

/// SQL: the flows' settings in one call (the plpgsql side never reads a setting of ours
/// before the library is loaded, and gets typed values).
#[pg_extern(stable)]
fn _flow_settings(redirect: Option<&str>) -> pgrx::JsonB {
    let site = config::site_url();
    pgrx::JsonB(json!({
        "confirm": config::REQUIRE_EMAIL_CONFIRMATION.get(),
        "otp_expiry": config::OTP_EXPIRY.get(),
        "email_rate_limit": config::EMAIL_RATE_LIMIT.get(),
        "email_rate_window": config::EMAIL_RATE_WINDOW.get(),
        "site_url": site.clone().unwrap_or_default(),
        "redirect_to": redirect_to(redirect, site.as_deref(), &config::redirect_allow_list()),
        "hook": config::hook_send_email(),
        "hook_timeout": config::HOOK_TIMEOUT.get(),
        "anonymous_sign_ins": config::ANONYMOUS_SIGN_INS.get(),
        "anonymous_rate_limit": config::ANONYMOUS_RATE_LIMIT.get(),
        "id_token_link_by_email": config::ID_TOKEN_LINK_BY_EMAIL.get(),
        "manual_linking": config::MANUAL_LINKING_ENABLED.get(),
        "keep_provider_tokens": config::KEEP_PROVIDER_TOKENS.get(),
        "oauth_rate_limit": config::OAUTH_RATE_LIMIT.get(),
    }))
}

/// SQL: a new one-time token: [link token (256 random bits, base64url), six-digit code].
#[pg_extern(volatile)]
fn _new_otp() -> Vec<String> {
    (|| Ok(vec![crate::keys::random_token(32)?, six_digit_code()?]))().or_raise()
}

/// SQL: a lower-cased, validated email address (validation_failed otherwise).
#[pg_extern(immutable, parallel_safe)]
fn _normalize_email(email: Option<&str>) -> String {
    users::normalize_email(email).or_raise()
}

/// SQL: an argon2id hash of a password that meets the policy (weak_password otherwise).
#[pg_extern(volatile)]
fn _hash_password(password: Option<&str>) -> String {
    users::hash_new_password(password).or_raise()
}

/// SQL: a new session for a user who just proved who they are by `method` (an amr name).
#[pg_extern(volatile)]
fn _start_session(user_id: pgrx::Uuid, method: &str) -> pgrx::JsonB {
    pgrx::JsonB(sessions::start(user_id, method, &request::current()).or_raise())
}

/// SQL (auth.verify_otp): begin a code check for `email` (when given) and the request's
/// address, counted before the code is looked at (src/lockout.rs); over_request_rate_limit
/// when either is locked. It ends with _attempt_failed, _attempt_succeeded or an abort.
#[pg_extern(volatile)]
fn _attempt_begin(email: Option<&str>) {
    lockout::begin(email, &request::current()).or_raise()
}

/// SQL: the code check begun last failed: written down, with its audit entry and lockout
/// count, in a transaction of its own (the error the caller raises next aborts ours).
#[pg_extern(volatile)]
fn _attempt_failed(email: Option<&str>, user_id: Option<pgrx::Uuid>, otp_type: &str) {
    lockout::failed(users::failure_audit(
        email,
        user_id,
        &request::current(),
        json!({"provider": "email", "reason": "otp_expired", "type": otp_type}),
    ));
}

/// SQL: the code check begun last succeeded.
#[pg_extern(volatile)]
fn _attempt_succeeded() {
    lockout::succeeded()
}

/// The form of 0.4.0, whose SQL calls it until the database is updated: is the address (or
/// the request's client IP) locked? No SQL function is created for it any more.
#[pg_extern(volatile, sql = false)]
fn _locked_out(email: Option<&str>) -> bool {
    lockout::is_locked(email, &request::current()).or_raise()
}

/// The form of 0.4.0 (as above): write a failed code check down.
#[pg_extern(volatile, sql = false)]
fn _otp_failed(email: Option<&str>, user_id: Option<pgrx::Uuid>, otp_type: &str) {
    lockout::begin(email, &request::current()).ok();
    _attempt_failed(email, user_id, otp_type);
}

/// SQL: the client address of the request as the per-address limits count it (an IPv4
/// address, an IPv6 /64), if known.
#[pg_extern(volatile)]
fn _client_ip() -> Option<String> {
    request::current().limit_key()
}

/// SQL: the claims of an ID token from a trusted issuer (its keys, audiences, exp), or
/// bad_jwt. Tokens of this database's own keys are not ID tokens.
#[pg_extern(volatile)]
fn _verify_id_token(token: Option<&str>) -> pgrx::JsonB {
    let claims = crate::tokens::verify(token).or_raise();
    if !crate::keys::is_trusted_issuer(claims.get("iss").and_then(|v| v.as_str())).or_raise() {
        AuthError::BadJwt(
            "an ID token must come from a trusted issuer (auth.set_trusted_issuer)".into(),
        )
        .raise()
    }
    pgrx::JsonB(serde_json::Value::Object(claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..200 {
            let c = six_digit_code().unwrap();
            assert_eq!(c.len(), 6);
            assert!(c.chars().all(|d| d.is_ascii_digit()));
        }
    }

    #[test]
    fn redirects_stay_within_allowed_prefixes() {
        let site = Some("https://app.example");
        let allow = vec!["myapp://callback".to_string(), "https://x.io/auth/".into()];
        let r = |u: Option<&str>| redirect_to(u, site, &allow);
        assert_eq!(r(None), "https://app.example");
        assert_eq!(r(Some("")), "https://app.example");
        assert_eq!(
            r(Some("https://app.example/welcome?a=1")),
            "https://app.example/welcome?a=1"
        );
        assert_eq!(r(Some("https://app.example")), "https://app.example");
        assert_eq!(
            r(Some("https://app.example.evil.io/")),
            "https://app.example"
        );
        assert_eq!(
            r(Some("https://evil.io/https://app.example")),
            "https://app.example"
        );
        assert_eq!(r(Some("myapp://callback?x=1")), "myapp://callback?x=1");
        assert_eq!(r(Some("https://x.io/auth/done")), "https://x.io/auth/done");
        assert_eq!(r(Some("https://x.io/other")), "https://app.example");
        assert_eq!(r(Some("https://app.example/a b")), "https://app.example");
        assert_eq!(r(Some("https://app.example/a\nb")), "https://app.example");
        assert_eq!(redirect_to(Some("https://a.io"), None, &[]), "");
    }
}
