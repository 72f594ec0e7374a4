//! The token API: `auth.verify_jwt`, `auth.authenticate` (the per-request entry point for a
//! client without PostgREST), `auth.authenticate_request` (the same behind an API gateway's
//! key check) and `auth.sign_jwt` (API keys).

use crate::config;
use crate::db::read_one;
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::jwt;
use crate::keys;
use crate::metadata::parse_object;
use crate::sessions::unix_now;
use pgrx::prelude::*;
use serde_json::{Map, Value};

/// Verify a token with the current keys and settings; return its claims.
pub fn verify(token: Option<&str>) -> AuthResult<Map<String, Value>> {
    let token = token.ok_or_else(|| AuthError::BadJwt("token is required".into()))?;
    let policy = config::verify_policy();
    keys::verify(token, unix_now(), &policy)
}

/// The bytes of a `jsonb` datum, built by Postgres' own jsonb input from JSON text (no
/// serde round trip: `pgrx::JsonB` would build a serde value and write it out as text first).
fn jsonb_bytes(text: &str) -> AuthResult<Box<[u8]>> {
    // Checked JSON has no NUL byte (raw control characters are not JSON).
    let text = std::ffi::CString::new(text)
        .map_err(|_| AuthError::BadJwt("claims hold a NUL byte".into()))?;
    // SAFETY: jsonb_in takes a cstring and raises on text it cannot read; what it returns is
    // a new, uncompressed varlena in the current memory context, read here for its length.
    unsafe {
        let datum =
            pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(text.as_ptr().into())])
                .ok_or_else(|| AuthError::Unexpected("jsonb input returned null".into()))?;
        let ptr = datum.cast_mut_ptr::<pg_sys::varlena>();
        let len = pgrx::varlena::varsize_any(ptr);
        let bytes: Box<[u8]> = std::slice::from_raw_parts(ptr.cast::<u8>(), len).into();
        pg_sys::pfree(ptr.cast());
        Ok(bytes)
    }
}

/// A `jsonb` datum to return: a copy, in the call's memory context, of bytes jsonb input
/// made (and the verified-token memory keeps).
pub struct JsonbDatum(pg_sys::Datum);

impl JsonbDatum {
    fn copy_of(bytes: &[u8]) -> JsonbDatum {
        // SAFETY: palloc raises rather than return null; the bytes are a whole varlena.
        unsafe {
            let ptr = pg_sys::palloc(bytes.len()).cast::<u8>();
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len());
            JsonbDatum(pg_sys::Datum::from(ptr))
        }
    }
}

pgrx::impl_sql_translatable!(JsonbDatum, "jsonb");

// SAFETY: the datum is a palloc'd jsonb in the function's memory context.
unsafe impl pgrx::callconv::BoxRet for JsonbDatum {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

/// auth.verify_jwt(token): the claims of a valid token, or SQLSTATE 28000 `bad_jwt`. A token
/// this backend has verified before returns the jsonb it built then, once its time and
/// audience claims pass again.
#[pg_extern(stable, parallel_restricted)]
fn verify_jwt(token: Option<&str>) -> JsonbDatum {
    let token = token
        .ok_or_else(|| AuthError::BadJwt("token is required".into()))
        .or_raise();
    let policy = config::verify_policy();
    keys::verify_then(token, unix_now(), &policy, |r| {
        r.jsonb(jsonb_bytes).map(JsonbDatum::copy_of)
    })
    .or_raise()
}

/// The legacy per-claim settings the helpers read before `request.jwt.claims` (Supabase's
/// order), each with the statement that empties it for the transaction.
const LEGACY: [(&std::ffi::CStr, &str); 6] = [
    (
        c"request.jwt.claim",
        "select pg_catalog.set_config('request.jwt.claim', '', true)",
    ),
    (
        c"request.jwt.claim.sub",
        "select pg_catalog.set_config('request.jwt.claim.sub', '', true)",
    ),
    (
        c"request.jwt.claim.role",
        "select pg_catalog.set_config('request.jwt.claim.role', '', true)",
    ),
    (
        c"request.jwt.claim.email",
        "select pg_catalog.set_config('request.jwt.claim.email', '', true)",
    ),
    (
        c"request.jwt.claim.session_id",
        "select pg_catalog.set_config('request.jwt.claim.session_id', '', true)",
    ),
    (
        c"request.jwt.claim.iss",
        "select pg_catalog.set_config('request.jwt.claim.iss', '', true)",
    ),
];

fn authenticate_impl(token: Option<&str>) -> AuthResult<Map<String, Value>> {
    let claims = verify(token)?;
    // PostgREST's rule: the role claim, or the anonymous role when there is none.
    let role = match claims.get("role") {
        None | Some(Value::Null) => "anon".to_string(),
        Some(Value::String(r)) if !r.is_empty() => r.clone(),
        Some(_) => return Err(AuthError::BadJwt("claim role is not a role name".into())),
    };
    // A third party's role was vetted when its issuer was registered; roles gain rights
    // later (a GRANT, a membership), so it is vetted again at every use.
    if keys::is_trusted_issuer(claims.get("iss").and_then(Value::as_str))? {
        let refusal = keys::as_owner(|| {
            read_one::<String>("select auth._role_refusal($1)", &[role.as_str().into()])
        })?;
        if let Some(why) = refusal {
            return Err(AuthError::InsufficientPrivilege(format!(
                "a third-party token cannot act as role \"{}\": it {why}",
                role.chars().take(63).collect::<String>()
            )));
        }
    }
    // Ask first, so a role the connection may not assume is a clean 42501 with our code
    // rather than set_config's own message. Runs with the caller's search_path: every
    // name and the operator are qualified.
    let allowed = read_one::<bool>(
        "select pg_catalog.pg_has_role(pg_catalog.session_user(), r.oid, 'MEMBER') \
           from pg_catalog.pg_roles r where r.rolname operator(pg_catalog.=) $1",
        &[role.as_str().into()],
    )?;
    if allowed != Some(true) {
        return Err(AuthError::InsufficientPrivilege(format!(
            "this connection may not assume the token's role \"{}\"",
            role.chars().take(63).collect::<String>()
        )));
    }
    // Legacy settings left over from earlier in the session would outvote these claims.
    for (name, empty_it) in LEGACY {
        if crate::claims::setting(name).is_some() {
            read_one::<String>(empty_it, &[])?;
        }
    }
    // A read-only select (set_config is not a write): works on a hot standby too.
    let claims_text = Value::Object(claims.clone()).to_string();
    read_one::<String>(
        "select pg_catalog.set_config('request.jwt.claims', $1, true) \
             operator(pg_catalog.||) pg_catalog.set_config('role', $2, true)",
        &[claims_text.as_str().into(), role.as_str().into()],
    )?;
    Ok(claims)
}

/// auth.authenticate(token): verify, then for the rest of the transaction act as the
/// token's role with its claims in `request.jwt.claims`, exactly as PostgREST would; the
/// legacy per-claim settings are emptied for the transaction so that every helper reports
/// this token.
#[pg_extern(volatile)]
fn authenticate(token: Option<&str>) -> pgrx::JsonB {
    pgrx::JsonB(Value::Object(authenticate_impl(token).or_raise()))
}

/// The check an API gateway (Supabase's Kong) makes of the `apikey` header: a token signed
/// by this database's own keys (never a trusted third party's, whatever it claims) for the
/// role `anon` or `service_role`, without a `sub` (an API key, not a user's access token).
/// Every way to fail is the one error, so the answer says nothing about why.
fn check_api_key(apikey: Option<&str>) -> AuthResult<()> {
    let key = apikey
        .filter(|k| !k.is_empty())
        .ok_or(AuthError::InvalidApiKey)?;
    let claims = match verify(Some(key)) {
        Ok(claims) => claims,
        Err(AuthError::BadJwt(_)) => return Err(AuthError::InvalidApiKey),
        Err(e) => return Err(e),
    };
    if keys::is_trusted_issuer(claims.get("iss").and_then(Value::as_str))? {
        return Err(AuthError::InvalidApiKey);
    }
    let api_role = matches!(
        claims.get("role").and_then(Value::as_str),
        Some("anon" | "service_role")
    );
    if !api_role || claims.contains_key("sub") {
        return Err(AuthError::InvalidApiKey);
    }
    Ok(())
}

/// auth.authenticate_request(apikey, bearer): what the gateway in front of GoTrue and
/// PostgREST does, then auth.authenticate: the API key must be this project's anon or
/// service_role key (invalid_api_key otherwise), then the bearer token (the API key itself
/// when there is none) is verified and its role and claims set for the transaction.
/// Read-only, so it works on a hot standby; not SECURITY DEFINER, since it switches the
/// role (its reads of the keys take the owner's rights inside, with a pinned path).
#[pg_extern(volatile)]
fn authenticate_request(apikey: Option<&str>, bearer: Option<&str>) -> pgrx::JsonB {
    let claims = check_api_key(apikey).and_then(|()| authenticate_impl(bearer.or(apikey)));
    pgrx::JsonB(Value::Object(claims.or_raise()))
}

fn sign_jwt_impl(claims: Option<&str>) -> AuthResult<String> {
    if claims.is_none() {
        return Err(AuthError::ValidationFailed("claims are required".into()));
    }
    let Value::Object(mut claims) = parse_object(claims, "claims", jwt::MAX_TOKEN_LEN / 2)? else {
        return Err(AuthError::ValidationFailed(
            "claims must be a JSON object".into(),
        ));
    };
    claims
        .entry("iat")
        .or_insert_with(|| Value::from(unix_now()));
    jwt::sign(&claims, &keys::signing_key()?).map_err(|e| AuthError::Unexpected(e.to_string()))
}

/// SQL: the issuer this database writes into its tokens (auth.jwt_issuer), read through
/// the library so that the setting is defined even in a session that has not loaded it.
#[pg_extern(stable, parallel_safe)]
fn _jwt_issuer() -> Option<String> {
    config::jwt_issuer()
}

/// A `jsonb` argument as its text (Postgres' own jsonb output, what `claims::text` gives),
/// read without a serde round trip of its own (`pgrx::JsonB` would parse it into a value
/// that panics on input serde cannot hold).
pub struct JsonbArg(String);

pgrx::impl_sql_translatable!(JsonbArg, "jsonb");

impl pgrx::FromDatum for JsonbArg {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<JsonbArg> {
        if is_null {
            return None;
        }
        // SAFETY: the datum is a jsonb (the SQL signature says so); jsonb_out detoasts it
        // and returns a palloc'd cstring, copied here and left to the call's memory context.
        let text = unsafe {
            pgrx::direct_function_call::<&std::ffi::CStr>(pg_sys::jsonb_out, &[Some(datum)])
        }?;
        Some(JsonbArg(text.to_string_lossy().into_owned()))
    }
}

// SAFETY: unboxed through FromDatum, as pgrx does for its own argument types.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for JsonbArg {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(
        arg: pgrx::callconv::Arg<'_, 'fcx>,
    ) -> pgrx::nullable::Nullable<Self> {
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

/// auth.sign_jwt(claims): sign arbitrary claims with the in-use key (API keys for anon and
/// service_role). Who may call it is decided by EXECUTE on it alone (service_role and the
/// owner). Not SECURITY DEFINER, because nothing on its path needs the owner's rights but
/// the read of the signing keys, and that read is the key cache's load, which takes the
/// owner's rights and the pinned search_path itself (`keys::as_user`, `db::pinned`), as it
/// does for verify_jwt's callers. A definer wrapper would switch users and save and restore
/// search_path at every call: half the cost of signing.
#[pg_extern(volatile, name = "sign_jwt")]
fn sign_jwt(claims: Option<JsonbArg>) -> String {
    sign_jwt_impl(claims.as_ref().map(|c| c.0.as_str())).or_raise()
}

/// The SQL of versions before 0.8.0 calls this symbol from its SECURITY DEFINER wrapper
/// until the database is updated; no SQL function is created for it any more.
#[pg_extern(volatile, sql = false)]
fn _sign_jwt(claims: Option<&str>) -> String {
    sign_jwt_impl(claims).or_raise()
}
