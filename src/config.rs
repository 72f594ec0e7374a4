//! Settings (GUCs). Every one is `SUSET`: only a superuser may change it (postgresql.conf,
//! `ALTER SYSTEM`, `ALTER DATABASE ... SET`), because each is a security policy. A client
//! that could `SET auth.jwt_exp` before `auth.sign_in` would mint itself year-long tokens.
//! None of them holds a secret: the signing secret lives in `auth.signing_keys`.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::{CStr, CString};

pub static JWT_EXP: GucSetting<i32> = GucSetting::<i32>::new(3600);
pub static JWT_LEEWAY: GucSetting<i32> = GucSetting::<i32>::new(30);
pub static JWT_ISSUER: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"auth_ext"));
pub static JWT_VERIFY_ISSUER: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static JWT_AUD: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static PASSWORD_MIN_LENGTH: GucSetting<i32> = GucSetting::<i32>::new(8);
pub static PASSWORD_MAX_LENGTH: GucSetting<i32> = GucSetting::<i32>::new(256);
pub static ARGON2_MEMORY_KIB: GucSetting<i32> = GucSetting::<i32>::new(19456);
pub static REFRESH_REUSE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(10);
pub static SESSION_TIMEBOX: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static SESSION_INACTIVITY_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static SESSION_SINGLE_PER_USER: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static SESSION_CHECK: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static REVOKED_TOKEN_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(86400);
pub static LOCKOUT_MAX_FAILURES: GucSetting<i32> = GucSetting::<i32>::new(10);
pub static LOCKOUT_IP_MAX_FAILURES: GucSetting<i32> = GucSetting::<i32>::new(100);
pub static LOCKOUT_WINDOW: GucSetting<i32> = GucSetting::<i32>::new(900);
pub static ARGON2_ITERATIONS: GucSetting<i32> = GucSetting::<i32>::new(2);
pub static REQUIRE_EMAIL_CONFIRMATION: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static UPDATE_PASSWORD_REQUIRE_REAUTHENTICATION: GucSetting<bool> =
    GucSetting::<bool>::new(false);
pub static UPDATE_PASSWORD_REQUIRE_CURRENT_PASSWORD: GucSetting<bool> =
    GucSetting::<bool>::new(false);
pub static OTP_EXPIRY: GucSetting<i32> = GucSetting::<i32>::new(3600);
pub static MFA_CHALLENGE_EXPIRY: GucSetting<i32> = GucSetting::<i32>::new(300);
pub static MFA_MAX_ENROLLED_FACTORS: GucSetting<i32> = GucSetting::<i32>::new(10);
pub static MFA_RATE_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(15);
pub static EMAIL_RATE_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(4);
pub static EMAIL_RATE_WINDOW: GucSetting<i32> = GucSetting::<i32>::new(3600);
pub static SITE_URL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"http://localhost:3000"));
pub static REDIRECT_ALLOW_LIST: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static HOOK_SEND_EMAIL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static ANONYMOUS_SIGN_INS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static ANONYMOUS_RATE_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(30);
pub static ID_TOKEN_LINK_BY_EMAIL: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static MANUAL_LINKING_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static KEEP_PROVIDER_TOKENS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static OAUTH_RATE_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(200);
pub static HOOK_CUSTOM_ACCESS_TOKEN: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static HOOK_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(2000);
pub static TRUSTED_PROXIES: GucSetting<i32> = GucSetting::<i32>::new(1);
pub static TOKEN_CACHE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(4096);
pub static AUTONOMOUS_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(2);
pub static PASSWORD_HASH_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static PASSWORD_HASH_WAIT: GucSetting<i32> = GucSetting::<i32>::new(10_000);
pub static PASSWORD_HASH_PRIORITY: GucSetting<HashPriority> =
    GucSetting::<HashPriority>::new(HashPriority::Low);

/// CPU priority of the threads that hash passwords (`auth.password_hash_priority`).
#[derive(pgrx::PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum HashPriority {
    /// As the backend's (nice 0).
    #[name = c"normal"]
    Normal,
    /// nice 19: queries come first, hashing still gets a share of a busy CPU.
    #[name = c"low"]
    Low,
    /// nice 19 in the idle scheduling class: a waking query preempts a hash at once, and a
    /// CPU that queries keep busy does next to no hashing.
    #[name = c"idle"]
    Idle,
}

fn int(
    name: &'static CStr,
    short: &'static CStr,
    long: &'static CStr,
    setting: &'static GucSetting<i32>,
    range: (i32, i32),
    flags: GucFlags,
) {
    GucRegistry::define_int_guc(
        name,
        short,
        long,
        setting,
        range.0,
        range.1,
        GucContext::Suset,
        flags,
    );
}

fn boolean(
    name: &'static CStr,
    short: &'static CStr,
    long: &'static CStr,
    setting: &'static GucSetting<bool>,
) {
    GucRegistry::define_bool_guc(
        name,
        short,
        long,
        setting,
        GucContext::Suset,
        GucFlags::default(),
    );
}

fn string(
    name: &'static CStr,
    short: &'static CStr,
    long: &'static CStr,
    setting: &'static GucSetting<Option<CString>>,
) {
    GucRegistry::define_string_guc(
        name,
        short,
        long,
        setting,
        GucContext::Suset,
        GucFlags::default(),
    );
}

pub fn register() {
    let secs = GucFlags::UNIT_S;
    let plain = GucFlags::default;
    int(
        c"auth.jwt_exp",
        c"Access token lifetime in seconds.",
        c"Used for the exp claim of tokens from sign_up and sign_in.",
        &JWT_EXP,
        (30, 7 * 24 * 3600),
        secs,
    );
    int(
        c"auth.jwt_leeway",
        c"Clock skew in seconds tolerated for exp, nbf and iat.",
        c"The same 30 seconds PostgREST allows by default.",
        &JWT_LEEWAY,
        (0, 300),
        secs,
    );
    string(
        c"auth.jwt_issuer",
        c"The iss claim of issued tokens.",
        c"Checked on verification only when auth.jwt_verify_issuer is on.",
        &JWT_ISSUER,
    );
    boolean(
        c"auth.jwt_verify_issuer",
        c"Require the iss claim of verified tokens to equal auth.jwt_issuer.",
        c"Off by default, like PostgREST, so API keys minted elsewhere keep working.",
        &JWT_VERIFY_ISSUER,
    );
    int(
        c"auth.refresh_reuse_interval",
        c"Seconds during which a rotated refresh token still yields a session.",
        c"Concurrent tabs and clients that failed to save the new token; later reuse revokes the session.",
        &REFRESH_REUSE_INTERVAL,
        (0, 3600),
        secs,
    );
    int(
        c"auth.session_timebox",
        c"Absolute session lifetime in seconds; 0 means none.",
        c"A session older than this refuses refresh with session_expired.",
        &SESSION_TIMEBOX,
        (0, i32::MAX),
        secs,
    );
    int(
        c"auth.session_inactivity_timeout",
        c"Seconds without a refresh after which a session expires; 0 means never.",
        c"Measured from the last refresh (or sign-in).",
        &SESSION_INACTIVITY_TIMEOUT,
        (0, i32::MAX),
        secs,
    );
    boolean(
        c"auth.session_single_per_user",
        c"Keep only each user's newest session alive.",
        c"Older sessions refuse refresh with session_expired.",
        &SESSION_SINGLE_PER_USER,
    );
    boolean(
        c"auth.session_check",
        c"Make the claim helpers return NULL for tokens of ended sessions.",
        c"Checked once per transaction; off by default, as on Supabase.",
        &SESSION_CHECK,
    );
    int(
        c"auth.revoked_token_retention",
        c"Seconds auth.cleanup keeps revoked refresh tokens for reuse detection.",
        c"After that a reused token is refresh_token_not_found instead of revoking its session.",
        &REVOKED_TOKEN_RETENTION,
        (0, i32::MAX),
        secs,
    );
    string(
        c"auth.jwt_aud",
        c"When set, verified tokens must carry this audience in aud.",
        c"Empty means the audience is not checked (PostgREST's jwt-aud).",
        &JWT_AUD,
    );
    int(
        c"auth.lockout_max_failures",
        c"Failed sign-ins per account within auth.lockout_window before it is locked; 0 disables.",
        c"A locked account gets over_request_rate_limit, even with the right password, until the window passes.",
        &LOCKOUT_MAX_FAILURES,
        (0, 1_000_000),
        plain(),
    );
    int(
        c"auth.lockout_ip_max_failures",
        c"Failed sign-ins per client IP within auth.lockout_window before it is locked; 0 disables.",
        c"The IP is the entry of x-forwarded-for that auth.trusted_proxies designates.",
        &LOCKOUT_IP_MAX_FAILURES,
        (0, 1_000_000),
        plain(),
    );
    int(
        c"auth.lockout_window",
        c"Length of the window in which failed sign-ins are counted.",
        c"Counting starts at the first failure; the count resets when the window has passed.",
        &LOCKOUT_WINDOW,
        (1, 7 * 24 * 3600),
        secs,
    );
    int(
        c"auth.password_min_length",
        c"Shortest password accepted by sign_up.",
        c"Shorter ones fail with weak_password.",
        &PASSWORD_MIN_LENGTH,
        (6, 1024),
        plain(),
    );
    int(
        c"auth.password_max_length",
        c"Longest password accepted, in characters.",
        c"Longer ones fail with validation_failed before any hashing work.",
        &PASSWORD_MAX_LENGTH,
        (8, 4096),
        plain(),
    );
    int(
        c"auth.argon2_memory_kib",
        c"argon2id memory cost for new password hashes, in KiB.",
        c"OWASP's minimum is 19456 (19 MiB). Stored hashes with less are upgraded at sign-in.",
        &ARGON2_MEMORY_KIB,
        (19456, 4 * 1024 * 1024),
        plain(),
    );
    int(
        c"auth.argon2_iterations",
        c"argon2id time cost (passes) for new password hashes.",
        c"OWASP's minimum is 2. Stored hashes with fewer are upgraded at sign-in.",
        &ARGON2_ITERATIONS,
        (2, 64),
        plain(),
    );
    int(
        c"auth.trusted_proxies",
        c"How many proxies in front of the API append to x-forwarded-for.",
        c"The client address is the n-th entry from the right (1: the one the nearest proxy appended); 0 trusts no header.",
        &TRUSTED_PROXIES,
        (0, 16),
        plain(),
    );
    int(
        c"auth.token_cache_size",
        c"Byte bound of each per-backend cache (verified tokens, parsed claims), in kB.",
        c"Past it a cache starts over; a single entry larger than a quarter of it is not kept.",
        &TOKEN_CACHE_SIZE,
        (0, 1024 * 1024),
        GucFlags::UNIT_KB,
    );
    // Cluster-wide, like the worker slots it shares: set in postgresql.conf or ALTER SYSTEM.
    GucRegistry::define_int_guc(
        c"auth.autonomous_workers",
        c"Background workers auth_ext runs at once for writes that must commit although the call fails.",
        c"Failed sign-ins, refresh-token reuse. Each takes a max_worker_processes slot for a few milliseconds; the rest stay free for parallel query.",
        &AUTONOMOUS_WORKERS,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"auth.password_hash_concurrency",
        c"Password hashes that may compute at once in the cluster: 0, one per CPU core; -1, no bound.",
        c"A sign-in, sign-up or password change beyond it waits (auth.password_hash_wait) for a place.",
        &PASSWORD_HASH_CONCURRENCY,
        -1,
        1024,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"auth.password_hash_priority",
        c"CPU priority of the threads that hash passwords: normal, low (nice 19) or idle (the idle scheduling class).",
        c"low: queries come first and hashing keeps a share of a busy CPU; idle: a waking query preempts a hash at once, but busy CPUs do next to no hashing.",
        &PASSWORD_HASH_PRIORITY,
        GucContext::Suset,
        GucFlags::default(),
    );
    int(
        c"auth.password_hash_wait",
        c"How long a password check waits for a hashing place before over_request_rate_limit.",
        c"Nothing is locked or written while it waits.",
        &PASSWORD_HASH_WAIT,
        (0, 600_000),
        GucFlags::UNIT_MS,
    );
    register_flows(secs, plain());
    #[cfg(any(feature = "pg15", feature = "pg16", feature = "pg17", feature = "pg18"))]
    unsafe {
        // Unknown auth.* names become errors instead of silent placeholders (typos in
        // postgresql.conf are reported at load).
        pgrx::pg_sys::MarkGUCPrefixReserved(c"auth".as_ptr());
    }
}

/// The account flows' settings (confirmation, one-time tokens, mail).
fn register_flows(secs: GucFlags, plain: GucFlags) {
    boolean(
        c"auth.require_email_confirmation",
        c"Make sign_up return no session until the address is confirmed.",
        c"The inverse of GoTrue's MAILER_AUTOCONFIRM; unconfirmed users get email_not_confirmed at sign-in.",
        &REQUIRE_EMAIL_CONFIRMATION,
    );
    boolean(
        c"auth.update_password_require_reauthentication",
        c"A password change needs the nonce auth.reauthenticate() sends (GoTrue's SECURITY_UPDATE_PASSWORD_REQUIRE_REAUTHENTICATION).",
        c"Without it: reauthentication_needed; a wrong or expired one: reauthentication_not_valid.",
        &UPDATE_PASSWORD_REQUIRE_REAUTHENTICATION,
    );
    boolean(
        c"auth.update_password_require_current_password",
        c"A password change needs the current password (current_password) when the user has one.",
        c"Without it: current_password_required; a wrong one: current_password_mismatch (counted like a wrong password).",
        &UPDATE_PASSWORD_REQUIRE_CURRENT_PASSWORD,
    );
    int(
        c"auth.mfa_challenge_expiry",
        c"Lifetime of an MFA challenge: its code must be verified within it.",
        c"An older challenge fails with mfa_challenge_expired.",
        &MFA_CHALLENGE_EXPIRY,
        (30, 3600),
        secs,
    );
    int(
        c"auth.mfa_rate_limit",
        c"MFA challenges per minute, per user and per client address (GoTrue's MFA_RATE_LIMIT_CHALLENGE_AND_VERIFY); 0 disables.",
        c"One more is over_request_rate_limit.",
        &MFA_RATE_LIMIT,
        (0, 10_000),
        plain,
    );
    int(
        c"auth.mfa_max_enrolled_factors",
        c"Factors (verified or not) a user may have.",
        c"One more is too_many_enrolled_mfa_factors.",
        &MFA_MAX_ENROLLED_FACTORS,
        (1, 100),
        plain,
    );
    int(
        c"auth.otp_expiry",
        c"Lifetime of confirmation, recovery, magic-link and email-change tokens and codes.",
        c"An older token fails with otp_expired.",
        &OTP_EXPIRY,
        (60, 7 * 24 * 3600),
        secs,
    );
    int(
        c"auth.email_rate_limit",
        c"Messages sent to one address within auth.email_rate_window; 0 means no limit.",
        c"One more fails with over_email_send_rate_limit, whether or not the address has an account.",
        &EMAIL_RATE_LIMIT,
        (0, 1_000_000),
        plain,
    );
    int(
        c"auth.email_rate_window",
        c"Length of the window in which messages per address are counted.",
        c"Counting starts at the first message; the count resets when the window has passed.",
        &EMAIL_RATE_WINDOW,
        (1, 7 * 24 * 3600),
        secs,
    );
    string(
        c"auth.site_url",
        c"The application's URL: site_url in every message, and the redirect_to fallback.",
        c"GoTrue's SITE_URL.",
        &SITE_URL,
    );
    string(
        c"auth.redirect_allow_list",
        c"Comma-separated URL prefixes accepted as redirect_to besides auth.site_url.",
        c"Any other redirect_to is replaced by auth.site_url (GoTrue's URI_ALLOW_LIST).",
        &REDIRECT_ALLOW_LIST,
    );
    string(
        c"auth.hook_send_email",
        c"SQL function (schema.name, one jsonb argument) that delivers account-flow messages.",
        c"Empty: messages go to auth.email_outbox with a NOTIFY on auth_email.",
        &HOOK_SEND_EMAIL,
    );
    boolean(
        c"auth.anonymous_sign_ins",
        c"Allow auth.sign_in_anonymously.",
        c"Off, as on Supabase: anonymous sign-in is anonymous_provider_disabled.",
        &ANONYMOUS_SIGN_INS,
    );
    int(
        c"auth.anonymous_rate_limit",
        c"Anonymous sign-ins per client IP per hour; 0 means no limit.",
        c"One more fails with over_request_rate_limit (Supabase's default is 30).",
        &ANONYMOUS_RATE_LIMIT,
        (0, 1_000_000),
        plain,
    );
    boolean(
        c"auth.id_token_link_by_email",
        c"Link an ID-token sign-in to the existing user with the same verified email.",
        c"Off: such a sign-in fails with email_exists instead.",
        &ID_TOKEN_LINK_BY_EMAIL,
    );
    boolean(
        c"auth.manual_linking_enabled",
        c"Let signed-in users link and unlink provider identities (auth.link_identity).",
        c"Off, as on Supabase: those calls fail with manual_linking_disabled.",
        &MANUAL_LINKING_ENABLED,
    );
    boolean(
        c"auth.keep_provider_tokens",
        c"Keep a provider's tokens, encrypted, until a PKCE sign-in's code is exchanged.",
        c"Off: the PKCE exchange answers no provider_token (the implicit flow always does).",
        &KEEP_PROVIDER_TOKENS,
    );
    int(
        c"auth.oauth_rate_limit",
        c"Provider sign-in flows started per client IP per hour; 0 means no limit.",
        c"One more fails with over_request_rate_limit.",
        &OAUTH_RATE_LIMIT,
        (0, 1_000_000),
        plain,
    );
    string(
        c"auth.hook_custom_access_token",
        c"SQL function (schema.name, one jsonb argument) that may change access token claims.",
        c"Receives {user_id, claims, authentication_method}; returns {claims} or {error}.",
        &HOOK_CUSTOM_ACCESS_TOKEN,
    );
    int(
        c"auth.hook_timeout",
        c"Longest time a hook may run, in milliseconds.",
        c"A slower hook fails the call with a clear error.",
        &HOOK_TIMEOUT,
        (10, 60_000),
        GucFlags::UNIT_MS,
    );
}

fn string_setting(s: &GucSetting<Option<CString>>) -> Option<String> {
    s.get()
        .and_then(|c| c.into_string().ok())
        .filter(|v| !v.is_empty())
}

pub fn jwt_issuer() -> Option<String> {
    string_setting(&JWT_ISSUER)
}

pub fn site_url() -> Option<String> {
    string_setting(&SITE_URL)
}

pub fn redirect_allow_list() -> Vec<String> {
    string_setting(&REDIRECT_ALLOW_LIST)
        .map(|s| {
            s.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

pub fn hook_custom_access_token() -> Option<String> {
    string_setting(&HOOK_CUSTOM_ACCESS_TOKEN)
}

pub fn hook_send_email() -> Option<String> {
    string_setting(&HOOK_SEND_EMAIL)
}

pub fn jwt_aud() -> Option<String> {
    string_setting(&JWT_AUD)
}

/// Verification policy from the current settings.
pub fn verify_policy() -> crate::jwt::VerifyPolicy {
    crate::jwt::VerifyPolicy {
        leeway: i64::from(JWT_LEEWAY.get()),
        audiences: jwt_aud().into_iter().collect(),
        issuer: if JWT_VERIFY_ISSUER.get() {
            jwt_issuer()
        } else {
            None
        },
        require_exp: false,
    }
}
