//! Multi-factor authentication: TOTP factors (RFC 6238 as authenticator apps expect it:
//! a 20-byte secret in base32, SHA-1, 6 digits, 30-second steps, one step of drift either
//! way), their secrets encrypted at rest, and the session upgrade to aal2. The rules
//! (who may enroll, challenge expiry, replay) are in sql/mfa.sql; this module does the
//! cryptography.

use crate::error::{AuthError, AuthResult, OrRaise};
use crate::{keys, lockout, request, sessions, users};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use pgrx::prelude::*;
use serde_json::json;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Totp};

const DIGITS: usize = 6;
const PERIOD: u64 = 30;
const SECRET_BYTES: usize = 20;
/// The prefix of a stored secret: the format's version.
const STORED: &str = "v1:";

fn builder(secret: Vec<u8>, digits: u8) -> Builder {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(digits)
        .with_skew(1)
        .with_step_duration(PERIOD)
        .with_secret(secret)
}

fn totp(secret: Vec<u8>, issuer: Option<String>, account: String) -> AuthResult<Totp> {
    builder(secret, DIGITS as u8)
        .with_account_name(account)
        .with_issuer(issuer)
        .build()
        .map_err(|e| AuthError::ValidationFailed(format!("cannot make a TOTP factor: {e}")))
}

fn cipher() -> AuthResult<XChaCha20Poly1305> {
    let key = keys::mfa_key()?;
    XChaCha20Poly1305::new_from_slice(&key)
        .map_err(|e| AuthError::Unexpected(format!("mfa key: {e}")))
}

/// The secret as stored: a random nonce and the ciphertext, with the factor's id as
/// associated data (a secret copied to another factor's row does not decrypt).
pub(crate) fn seal(factor_id: &str, secret: &[u8]) -> AuthResult<String> {
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce)
        .map_err(|e| AuthError::Unexpected(format!("random number generator failed: {e}")))?;
    let sealed = cipher()?
        .encrypt(
            &XNonce::try_from(&nonce[..]).map_err(|_| AuthError::Unexpected("nonce".into()))?,
            Payload {
                msg: secret,
                aad: factor_id.as_bytes(),
            },
        )
        .map_err(|_| AuthError::Unexpected("cannot encrypt the factor's secret".into()))?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(format!("{STORED}{}", URL_SAFE_NO_PAD.encode(out)))
}

pub(crate) fn open(factor_id: &str, stored: &str) -> AuthResult<Vec<u8>> {
    let broken = || {
        AuthError::StoredData(format!(
            "the secret sealed for {factor_id} does not decrypt (changed, or the 'mfa' key of auth.secret_keys was replaced)"
        ))
    };
    let bytes = stored
        .strip_prefix(STORED)
        .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
        .filter(|b| b.len() > 24)
        .ok_or_else(broken)?;
    let (nonce, sealed) = bytes.split_at(24);
    cipher()?
        .decrypt(
            &XNonce::try_from(nonce).map_err(|_| broken())?,
            Payload {
                msg: sealed,
                aad: factor_id.as_bytes(),
            },
        )
        .map_err(|_| broken())
}

/// The code of `secret` at time step `step`.
fn code_at(secret: &[u8], step: u64) -> AuthResult<String> {
    Ok(totp(secret.to_vec(), None, String::new())?
        .generate(step * PERIOD)
        .to_string())
}

/// The step (previous, current or next) whose code `code` is, if it is later than
/// `after`: a code is accepted once.
fn matching_step(
    secret: &[u8],
    code: &str,
    now: u64,
    after: Option<i64>,
) -> AuthResult<Option<i64>> {
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let current = now / PERIOD;
    let mut found = None;
    // Every candidate is computed and compared in constant time, whichever matches.
    for step in [current.saturating_sub(1), current, current + 1] {
        let expected = code_at(secret, step)?;
        let same: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        if same && after.is_none_or(|a| step > a) && found.is_none() {
            found = Some(step);
        }
    }
    Ok(found)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The QR code of `uri` as SVG markup (error correction H, as GoTrue draws it).
fn qr_svg(uri: &str) -> AuthResult<String> {
    let code = qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::H)
        .map_err(|e| AuthError::Unexpected(format!("QR code: {e}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build())
}

/// SQL (auth.mfa_enroll): a new TOTP secret for factor `factor_id`: what the user sees once
/// (`secret` in base32, the `otpauth://` `uri`, the `qr_code` SVG) and what is stored
/// (`sealed`).
#[pg_extern(volatile)]
fn _mfa_new_totp(factor_id: pgrx::Uuid, issuer: &str, account: &str) -> pgrx::JsonB {
    let made = (|| {
        let mut secret = vec![0u8; SECRET_BYTES];
        getrandom::fill(&mut secret)
            .map_err(|e| AuthError::Unexpected(format!("random number generator failed: {e}")))?;
        let t = totp(
            secret.clone(),
            Some(issuer.to_string()),
            account.to_string(),
        )?;
        let uri = t
            .to_url()
            .map_err(|e| AuthError::ValidationFailed(format!("cannot name the factor: {e}")))?;
        Ok::<_, AuthError>(json!({
            "secret": t.secret().to_base32(),
            "uri": uri,
            "qr_code": qr_svg(&uri)?,
            "sealed": seal(&factor_id.to_string(), &secret)?,
        }))
    })();
    pgrx::JsonB(made.or_raise())
}

/// SQL (auth.mfa_verify): the time step of `code` for the factor whose stored secret is
/// `sealed`, when it is the previous, current or next step's code and later than
/// `last_step`; NULL otherwise.
#[pg_extern(volatile)]
fn _mfa_totp_step(
    factor_id: pgrx::Uuid,
    sealed: &str,
    code: Option<&str>,
    last_step: Option<i64>,
) -> Option<i64> {
    let secret = open(&factor_id.to_string(), sealed).or_raise();
    matching_step(&secret, code.unwrap_or(""), unix_now(), last_step).or_raise()
}

/// SQL: the client's address as given (a challenge is bound to it), if known.
#[pg_extern(volatile)]
fn _request_ip() -> Option<String> {
    request::current().ip.map(|ip| ip.to_string())
}

/// SQL: the host of auth.site_url, GoTrue's default TOTP issuer.
#[pg_extern(stable)]
fn _site_url() -> Option<String> {
    crate::config::site_url()
}

/// SQL: the MFA settings the SQL rules need: `{"challenge_expiry": seconds, "max_factors": n}`.
#[pg_extern(stable, parallel_safe)]
fn _mfa_settings() -> pgrx::JsonB {
    pgrx::JsonB(json!({
        "challenge_expiry": crate::config::MFA_CHALLENGE_EXPIRY.get(),
        "max_factors": crate::config::MFA_MAX_ENROLLED_FACTORS.get(),
        "rate_limit": crate::config::MFA_RATE_LIMIT.get(),
    }))
}

/// SQL: begin a code check of a factor, counted before it is made on the factor's counter
/// and the request's address (src/lockout.rs). It ends with _attempt_succeeded,
/// _mfa_failed or an abort.
#[pg_extern(volatile)]
fn _mfa_attempt_begin(factor_id: pgrx::Uuid) {
    lockout::begin_key(&format!("mfa:{factor_id}"), &request::current()).or_raise()
}

/// SQL: the code check begun last failed: counted and audited in a transaction of its own.
#[pg_extern(volatile)]
fn _mfa_failed(factor_id: pgrx::Uuid, user_id: pgrx::Uuid) {
    let audit = users::failure_audit(
        None,
        Some(user_id),
        &request::current(),
        json!({"reason": "mfa_verification_failed", "factor_id": factor_id.to_string()}),
    );
    lockout::failed(audit);
}

/// SQL: a recovery code: 80 random bits as 16 characters of RFC 4648's base32 alphabet in
/// lower case, in four groups (`abcd-efgh-ijkl-mnop`).
#[pg_extern(volatile)]
fn _mfa_recovery_code() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| AuthError::Unexpected(format!("random number generator failed: {e}")))
        .or_raise();
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// SQL: a recovery code check begun with _attempt_begin_named failed: counted and audited
/// in a transaction of its own.
#[pg_extern(volatile)]
fn _mfa_recovery_failed(user_id: pgrx::Uuid) {
    let audit = users::failure_audit(
        None,
        Some(user_id),
        &request::current(),
        json!({"reason": "mfa_verification_failed", "method": "recovery"}),
    );
    lockout::failed(audit);
}

/// SQL: the session's tokens after its assurance level changed: its refresh tokens are
/// revoked (an aal1 refresh token must not mint aal2 tokens) and a new one issued with an
/// access token of the session's level and amr.
#[pg_extern(volatile)]
fn _mfa_session(user_id: pgrx::Uuid, session_id: pgrx::Uuid) -> pgrx::JsonB {
    pgrx::JsonB(sessions::reissue(user_id, &session_id.to_string()).or_raise())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, the SHA-1 rows (8 digits, the 20-byte ASCII key).
    #[test]
    fn rfc6238_sha1_vectors() {
        let key = b"12345678901234567890".to_vec();
        let t = builder(key, 8).build().unwrap();
        for (time, code) in [
            (59u64, "94287082"),
            (1111111109, "07081804"),
            (1111111111, "14050471"),
            (1234567890, "89005924"),
            (2000000000, "69279037"),
            (20000000000, "65353130"),
        ] {
            assert_eq!(t.generate(time).to_string(), code, "at {time}");
        }
    }

    #[test]
    fn a_code_matches_its_step_and_the_neighbours_once() {
        let secret = b"12345678901234567890".to_vec();
        let now = 1_234_567_890;
        let step = (now / PERIOD) as i64;
        let code = code_at(&secret, now / PERIOD).unwrap();
        assert_eq!(
            matching_step(&secret, &code, now, None).unwrap(),
            Some(step)
        );
        // The next step's code is accepted (drift), and the previous one.
        let next = code_at(&secret, now / PERIOD + 1).unwrap();
        assert_eq!(
            matching_step(&secret, &next, now, None).unwrap(),
            Some(step + 1)
        );
        let before = code_at(&secret, now / PERIOD - 1).unwrap();
        assert_eq!(
            matching_step(&secret, &before, now, None).unwrap(),
            Some(step - 1)
        );
        // Not two steps away, not again once used.
        let far = code_at(&secret, now / PERIOD + 2).unwrap();
        assert_eq!(matching_step(&secret, &far, now, None).unwrap(), None);
        assert_eq!(
            matching_step(&secret, &code, now, Some(step)).unwrap(),
            None
        );
        assert_eq!(
            matching_step(&secret, &before, now, Some(step)).unwrap(),
            None
        );
        // Not a code at all.
        assert_eq!(matching_step(&secret, "12345", now, None).unwrap(), None);
        assert_eq!(matching_step(&secret, "abcdef", now, None).unwrap(), None);
    }

    #[test]
    fn uri_is_what_authenticator_apps_read() {
        let t = totp(
            vec![7u8; 20],
            Some("example.com".into()),
            "ann@example.com".into(),
        )
        .unwrap();
        let uri = t.to_url().unwrap();
        assert!(
            uri.starts_with("otpauth://totp/example.com:ann%40example.com?secret="),
            "{uri}"
        );
        assert!(uri.contains("issuer=example.com"));
        assert_eq!(t.secret().to_base32().len(), 32);
        assert!(qr_svg(&uri).unwrap().starts_with("<?xml"));
    }
}
