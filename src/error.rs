//! One error type for the whole extension, and its mapping to SQLSTATEs and to the
//! machine-readable codes that Supabase Auth clients already know.
//!
//! Every message that reaches a client reads `<code>: <text>`, so the stable code is visible
//! in psql, in PostgREST's JSON `message`, and in server logs alike.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Unknown email or wrong password: one error for both (no user enumeration).
    InvalidCredentials,
    UserAlreadyExists,
    UserBanned,
    /// A password change to the password the user already has.
    SamePassword,
    /// The password was right but the address is not confirmed yet.
    EmailNotConfirmed,
    WeakPassword(String),
    ValidationFailed(String),
    /// Any token that does not verify; the text says why.
    BadJwt(String),
    /// The request's API key (the gateway's `apikey` header) is missing, does not verify
    /// with this database's keys, or is not an anon or service_role key.
    InvalidApiKey,
    RefreshTokenNotFound,
    RefreshTokenAlreadyUsed,
    SessionExpired,
    /// Too many failed sign-ins for the account or the client IP.
    OverRequestRateLimit,
    /// Every password-hashing place stayed taken for `auth.password_hash_wait`.
    HashBusy,
    /// A write attempted on a hot standby.
    ReadOnly(&'static str),
    /// The caller may not do this (role switch, key material).
    InsufficientPrivilege(String),
    /// A hook failed or answered something unusable; the text names the hook.
    Hook(String),
    /// The custom access token hook refused the token with this message.
    HookDenied(String),
    /// A stored row that cannot be used (written around the API, before a validation
    /// existed): the text names it and how to repair it.
    StoredData(String),
    /// Something that should not happen (a broken row, SPI failure): never input-driven.
    Unexpected(String),
}

impl AuthError {
    /// The stable machine-readable code (GoTrue's `error_code` names).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::InvalidCredentials => "invalid_credentials",
            AuthError::UserAlreadyExists => "user_already_exists",
            AuthError::UserBanned => "user_banned",
            AuthError::SamePassword => "same_password",
            AuthError::EmailNotConfirmed => "email_not_confirmed",
            AuthError::WeakPassword(_) => "weak_password",
            AuthError::ValidationFailed(_) => "validation_failed",
            AuthError::BadJwt(_) => "bad_jwt",
            AuthError::InvalidApiKey => "invalid_api_key",
            AuthError::RefreshTokenNotFound => "refresh_token_not_found",
            AuthError::RefreshTokenAlreadyUsed => "refresh_token_already_used",
            AuthError::SessionExpired => "session_expired",
            AuthError::InsufficientPrivilege(_) => "insufficient_privilege",
            AuthError::ReadOnly(_) => "read_only",
            AuthError::OverRequestRateLimit | AuthError::HashBusy => "over_request_rate_limit",
            AuthError::Unexpected(_) | AuthError::Hook(_) | AuthError::StoredData(_) => {
                "unexpected_failure"
            }
            AuthError::HookDenied(_) => "access_denied",
        }
    }

    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            AuthError::InvalidCredentials => ERRCODE_INVALID_PASSWORD, // 28P01
            AuthError::UserBanned
            | AuthError::EmailNotConfirmed
            | AuthError::BadJwt(_)
            | AuthError::InvalidApiKey
            | AuthError::RefreshTokenNotFound
            | AuthError::RefreshTokenAlreadyUsed
            | AuthError::SessionExpired
            | AuthError::HookDenied(_) => {
                ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION // 28000
            }
            AuthError::Hook(_) => ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION, // 39000
            AuthError::UserAlreadyExists => ERRCODE_UNIQUE_VIOLATION,            // 23505
            AuthError::WeakPassword(_)
            | AuthError::ValidationFailed(_)
            | AuthError::SamePassword => {
                ERRCODE_INVALID_PARAMETER_VALUE // 22023
            }
            AuthError::InsufficientPrivilege(_) => ERRCODE_INSUFFICIENT_PRIVILEGE, // 42501
            AuthError::ReadOnly(_) => ERRCODE_READ_ONLY_SQL_TRANSACTION,           // 25006
            AuthError::OverRequestRateLimit => ERRCODE_CONFIGURATION_LIMIT_EXCEEDED, // 53400
            AuthError::HashBusy => ERRCODE_INSUFFICIENT_RESOURCES,                 // 53000
            AuthError::StoredData(_) => ERRCODE_DATA_EXCEPTION,                    // 22000
            AuthError::Unexpected(_) => ERRCODE_INTERNAL_ERROR,                    // XX000
        }
    }

    fn text(&self) -> String {
        match self {
            AuthError::InvalidCredentials => "Invalid login credentials".into(),
            AuthError::UserAlreadyExists => "User already registered".into(),
            AuthError::UserBanned => "User is banned".into(),
            AuthError::SamePassword => {
                "New password should be different from the old password.".into()
            }
            AuthError::EmailNotConfirmed => "Email not confirmed".into(),
            AuthError::InvalidApiKey => "Invalid API key".into(),
            AuthError::OverRequestRateLimit => "Too many failed attempts; try again later".into(),
            AuthError::HashBusy => "Too many password checks at once; try again in a moment".into(),
            AuthError::ReadOnly(what) => {
                format!("{what} writes to the database and cannot run on a read-only standby")
            }
            AuthError::RefreshTokenNotFound => {
                "Invalid Refresh Token: Refresh Token Not Found".into()
            }
            AuthError::RefreshTokenAlreadyUsed => {
                "Invalid Refresh Token: Already Used; the session has been revoked".into()
            }
            AuthError::SessionExpired => "Session has expired; sign in again".into(),
            AuthError::WeakPassword(m)
            | AuthError::ValidationFailed(m)
            | AuthError::BadJwt(m)
            | AuthError::InsufficientPrivilege(m)
            | AuthError::Hook(m)
            | AuthError::HookDenied(m)
            | AuthError::StoredData(m)
            | AuthError::Unexpected(m) => m.clone(),
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            AuthError::BadJwt(_)
            | AuthError::SessionExpired
            | AuthError::RefreshTokenAlreadyUsed => {
                Some("Sign in again to get a new access token.")
            }
            AuthError::UserAlreadyExists => Some("Sign in instead, or use another email."),
            AuthError::InvalidApiKey => {
                Some("Send this project's anon or service_role API key in the apikey header.")
            }
            AuthError::EmailNotConfirmed => {
                Some("Confirm the address with the link or code sent to it (auth.verify_otp).")
            }
            AuthError::ReadOnly(_) => Some("Send this call to the primary server."),
            AuthError::HashBusy => Some(
                "Every password-hashing place (auth.password_hash_concurrency) was busy for auth.password_hash_wait.",
            ),
            AuthError::StoredData(_) => {
                Some("An administrator can repair the row (auth.admin_update_user).")
            }
            _ => None,
        }
    }

    /// Raise this error as a Postgres ERROR. Never returns.
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.sqlstate(), self.to_string(), "auth_ext");
        if let Some(h) = self.hint() {
            report = report.set_hint(h);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.text())
    }
}

pub type AuthResult<T> = Result<T, AuthError>;

/// Turn an SPI failure into an unexpected error. SPI errors that Postgres itself raises
/// (constraint violations, permissions) never get here: they longjmp as ordinary ERRORs.
impl From<pgrx::spi::Error> for AuthError {
    fn from(e: pgrx::spi::Error) -> Self {
        AuthError::Unexpected(format!("internal query failed: {e}"))
    }
}

/// Refuse a writing call on a hot standby, before any work, with a clear error.
pub fn require_primary(what: &'static str) -> AuthResult<()> {
    if unsafe { pgrx::pg_sys::RecoveryInProgress() } {
        Err(AuthError::ReadOnly(what))
    } else {
        Ok(())
    }
}

/// At the SQL boundary: return the value or raise the error.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for AuthResult<T> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.raise(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_starts_with_code() {
        assert_eq!(
            AuthError::InvalidCredentials.to_string(),
            "invalid_credentials: Invalid login credentials"
        );
        assert_eq!(
            AuthError::BadJwt("JWT expired".into()).to_string(),
            "bad_jwt: JWT expired"
        );
    }

    #[test]
    fn authentication_failures_are_class_28() {
        for e in [
            AuthError::InvalidCredentials,
            AuthError::UserBanned,
            AuthError::BadJwt("x".into()),
            AuthError::InvalidApiKey,
        ] {
            let code = format!("{:?}", e.sqlstate());
            assert!(
                code.contains("INVALID_PASSWORD") || code.contains("AUTHORIZATION"),
                "{code}"
            );
        }
    }
}
