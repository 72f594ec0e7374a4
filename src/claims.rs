//! The RLS helpers: `auth.uid()`, `auth.role()`, `auth.email()`, `auth.jwt()`, with
//! Supabase's semantics over PostgREST's settings:
//! the legacy per-claim setting `request.jwt.claim.<name>` wins when non-empty, then the
//! JSON setting `request.jwt.claims`; an empty string counts as absent.
//!
//! One deliberate difference: Supabase's SQL versions raise an error on malformed JSON or
//! a `sub` that is not a uuid; these fail closed and return NULL, so a policy denies.
//!
//! The JSON is parsed once per distinct value of the setting: every call compares the
//! setting's current bytes with the cached copy (a memcmp) and only parses when they
//! differ. Comparing the value itself, not a transaction or command counter, is what keeps
//! the cache from ever serving stale claims: SET, set_config, RESET, rollbacks and role
//! changes all show up as different bytes.

use pgrx::prelude::*;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::ffi::CStr;

const CLAIMS: &CStr = c"request.jwt.claims";

/// The current value of a setting, or None when it is unset or empty.
pub(crate) fn setting(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: GetConfigOption returns NULL or a NUL-terminated string owned by the GUC
    // machinery; it stays valid until the setting changes, which cannot happen before we
    // have finished using it within this call.
    unsafe {
        let p = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        if p.is_null() {
            return None;
        }
        let bytes = CStr::from_ptr(p).to_bytes();
        if bytes.is_empty() {
            None
        } else {
            Some(bytes)
        }
    }
}

/// What the helpers need from one value of `request.jwt.claims`, extracted once.
#[derive(Default)]
pub(crate) struct Parsed {
    pub(crate) object: Option<Map<String, Value>>,
    pub(crate) sub: Option<String>,
    /// `sub` read as a uuid, once per value of the setting (it is read at every row of a
    /// policy that calls auth.uid() directly).
    pub(crate) sub_uuid: Option<pgrx::Uuid>,
    pub(crate) role: Option<String>,
    pub(crate) email: Option<String>,
    session_id: Option<pgrx::Uuid>,
    iss: Option<String>,
}

struct Cached {
    raw: Vec<u8>,
    parsed: Parsed,
}

thread_local! {
    static CACHE: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

/// `->>` on a JSON value: strings unquoted, other scalars and containers as JSON text.
fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

pub(crate) fn parse(raw: &[u8]) -> Parsed {
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(raw) else {
        return Parsed::default();
    };
    let text = |k: &str| object.get(k).and_then(as_text);
    let sub = text("sub");
    Parsed {
        sub_uuid: sub.as_deref().and_then(parse_uuid),
        sub,
        role: text("role"),
        email: text("email"),
        session_id: text("session_id").as_deref().and_then(parse_uuid),
        iss: text("iss"),
        object: Some(object),
    }
}

/// With `auth.session_check` on: whether the claims' session is still live, asked once
/// per transaction and session id. Claims without a session (API keys) pass.
fn session_allows(session_id: Option<pgrx::Uuid>) -> bool {
    if !crate::config::SESSION_CHECK.get() {
        return true;
    }
    let Some(sid) = session_id else { return true };
    let lxid = current_lxid();
    thread_local! {
        static VERDICT: RefCell<Option<(u32, pgrx::Uuid, bool)>> = const { RefCell::new(None) };
    }
    if let Some(v) = VERDICT.with(|v| match &*v.borrow() {
        Some((x, s, ok)) if *x == lxid && *s == sid => Some(*ok),
        _ => None,
    }) {
        return v;
    }
    // The sessions table is the owner's: ask with its rights. Any failure denies.
    let live = crate::keys::as_owner(|| crate::sessions::session_is_live(sid)).unwrap_or(false);
    VERDICT.with(|v| *v.borrow_mut() = Some((lxid, sid, live)));
    live
}

/// This backend's local transaction id: changes with every transaction.
fn current_lxid() -> u32 {
    // SAFETY: MyProc is set for every backend before any SQL function can run.
    unsafe {
        #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
        {
            (*pg_sys::MyProc).lxid
        }
        #[cfg(any(feature = "pg17", feature = "pg18"))]
        {
            (*pg_sys::MyProc).vxid.lxid
        }
    }
}

/// Run `f` on the parsed claims of the current `request.jwt.claims` value; None when the
/// setting is empty or, with `auth.session_check` on, the claims' session has ended.
fn json_claims<R>(f: impl FnOnce(&Parsed) -> R) -> Option<R> {
    let raw = setting(CLAIMS)?;
    let session_id = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if !matches!(&*c, Some(cached) if cached.raw == raw) {
            *c = Some(Cached {
                raw: raw.to_vec(),
                parsed: parse(raw),
            });
        }
        c.as_ref().and_then(|cached| cached.parsed.session_id)
    });
    // Outside the borrow: the check may run SQL.
    if !session_allows(session_id) {
        return None;
    }
    let out = CACHE.with(|c| c.borrow().as_ref().map(|cached| f(&cached.parsed)));
    // The one cached value is as large as the setting itself; past the byte bound of the
    // per-backend caches it is parsed again at every call rather than kept.
    if raw.len() > crate::keys::cache_bound_bytes() {
        CACHE.with(|c| *c.borrow_mut() = None);
    }
    out
}

fn legacy(claim: &CStr) -> Option<String> {
    setting(claim)
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(str::to_owned)
}

/// The legacy per-claim settings of old PostgREST (`request.jwt.claim.<name>`), which
/// Supabase's helpers read first. When they are used, the session check applies to their
/// own `request.jwt.claim.session_id`. `auth.authenticate` empties them for its
/// transaction, so they can never outvote the token it has just verified.
fn legacy_claim(name: &CStr) -> Option<Option<String>> {
    let value = legacy(name)?;
    let sid = legacy(c"request.jwt.claim.session_id")
        .as_deref()
        .and_then(parse_uuid);
    Some(session_allows(sid).then_some(value))
}

/// Whose subject `sub` is: a token of ours (no `iss`, or this database's issuer, or any
/// issuer that is not a registered third party) names a local user; a trusted issuer's
/// token names a subject of that issuer, which is a local user only through an identity
/// linked to exactly that issuer and subject.
fn local_user(sub: &str, iss: Option<&str>) -> Option<pgrx::Uuid> {
    match third_party(iss) {
        None => parse_uuid(sub),
        Some(iss) => linked_user(iss, sub),
    }
}

/// `iss` when it names a registered trusted issuer (not this database's own issuer).
fn third_party(iss: Option<&str>) -> Option<&str> {
    let iss = iss?;
    if crate::config::jwt_issuer().as_deref() == Some(iss) {
        return None;
    }
    // A key cache that cannot load denies: the caller sees no user rather than the subject.
    match crate::keys::is_trusted_issuer(Some(iss)) {
        Ok(false) => None,
        _ => Some(iss),
    }
}

/// The local user linked to exactly this issuer and subject (an identity from
/// auth.sign_in_with_id_token), asked again whenever the transaction has written something
/// since; None when there is none or more than one.
fn linked_user(iss: &str, sub: &str) -> Option<pgrx::Uuid> {
    type Memo = Option<((u32, u32), String, String, Option<pgrx::Uuid>)>;
    thread_local! {
        static LINK: RefCell<Memo> = const { RefCell::new(None) };
    }
    // SAFETY: valid inside any transaction.
    let lxid = (current_lxid(), unsafe {
        pg_sys::GetCurrentCommandId(false)
    });
    if let Some(found) = LINK.with(|l| match &*l.borrow() {
        Some((x, i, s, u)) if *x == lxid && i == iss && s == sub => Some(*u),
        _ => None,
    }) {
        return found;
    }
    let found = crate::keys::as_owner(|| {
        crate::db::read_one::<pgrx::Uuid>(
            "select pg_catalog.min(i.user_id::pg_catalog.text)::pg_catalog.uuid \
               from auth.identities i join auth.users u on u.id = i.user_id \
              where i.provider_id = $2 and i.identity_data ->> 'iss' = $1 \
                and u.deleted_at is null \
             having pg_catalog.count(distinct i.user_id) = 1",
            &[iss.into(), sub.into()],
        )
    })
    .ok()
    .flatten();
    LINK.with(|l| *l.borrow_mut() = Some((lxid, iss.to_string(), sub.to_string(), found)));
    found
}

/// The trusted third-party issuer of the current claims (from whichever setting the
/// helpers read), if they come from one.
pub fn third_party_issuer() -> Option<String> {
    if legacy(c"request.jwt.claim.sub").is_some() {
        return third_party(legacy(c"request.jwt.claim.iss").as_deref()).map(str::to_owned);
    }
    let iss = json_claims(|p| p.iss.clone()).flatten();
    third_party(iss.as_deref()).map(str::to_owned)
}

/// A uuid by Postgres' own input rules (`uuid_in`), which are the contract of `auth.uid()`:
/// Supabase's SQL casts `sub` with `::uuid`. The common shapes (36 characters hyphenated,
/// 32 digits, 38 braced), which Postgres reads the same way, are read by the `uuid` crate
/// without a call into Postgres; any other text goes to `uuid_in` itself, whose refusal is
/// caught and means "not a uuid" (it allocates nothing and holds no resource, so no
/// subtransaction is needed to recover from it).
pub fn parse_uuid(s: &str) -> Option<pgrx::Uuid> {
    if matches!(s.len(), 32 | 36 | 38) {
        if let Ok(u) = uuid::Uuid::try_parse(s) {
            return Some(pgrx::Uuid::from_bytes(u.into_bytes()));
        }
    }
    // Postgres reads at most 32 digits, 7 hyphens and 2 braces: longer text is refused
    // without asking (uuid_in would refuse it too).
    if s.len() > 41 {
        return None;
    }
    let text = std::ffi::CString::new(s).ok()?;
    PgTryBuilder::new(|| unsafe {
        // SAFETY: uuid_in takes a cstring and returns a palloc'd uuid or raises.
        pgrx::direct_function_call::<pgrx::Uuid>(pg_sys::uuid_in, &[text.as_c_str().into_datum()])
    })
    .catch_others(|_| None)
    .execute()
}

/// A uuid as text, the way Postgres' uuid_out writes it (lower-case, hyphenated).
pub fn uuid_text(u: &pgrx::Uuid) -> String {
    uuid::Uuid::from_bytes(*u.as_bytes())
        .hyphenated()
        .to_string()
}

/// auth.uid(): the `sub` claim as a uuid; NULL when absent, empty or not a uuid, when the
/// session has ended (with `auth.session_check`), and for a trusted third-party issuer's
/// token unless its subject is linked to a local user.
#[pg_extern(stable, parallel_safe, support = "_claims_support")]
fn uid() -> Option<pgrx::Uuid> {
    if let Some(sub) = legacy_claim(c"request.jwt.claim.sub") {
        let iss = legacy(c"request.jwt.claim.iss");
        return local_user(&sub?, iss.as_deref());
    }
    // Without an iss (our own tokens, the common case) the cached uuid is the answer; with
    // one, whose subject it is decides.
    match json_claims(|p| match &p.iss {
        None => Err(p.sub_uuid),
        Some(iss) => Ok((p.sub.clone(), iss.clone())),
    })? {
        Err(uuid) => uuid,
        Ok((sub, iss)) => local_user(&sub?, Some(&iss)),
    }
}

/// auth.role(): the `role` claim.
#[pg_extern(stable, parallel_safe, support = "_claims_support")]
fn role() -> Option<String> {
    legacy_claim(c"request.jwt.claim.role")
        .unwrap_or_else(|| json_claims(|p| p.role.clone()).flatten())
}

/// auth.email(): the `email` claim.
#[pg_extern(stable, parallel_safe, support = "_claims_support")]
fn email() -> Option<String> {
    legacy_claim(c"request.jwt.claim.email")
        .unwrap_or_else(|| json_claims(|p| p.email.clone()).flatten())
}

/// auth.jwt(): all the claims as jsonb (the legacy `request.jwt.claim` setting first).
#[pg_extern(stable, parallel_safe, support = "_claims_support")]
fn jwt() -> Option<pgrx::JsonB> {
    if let Some(raw) = setting(c"request.jwt.claim") {
        let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(raw) else {
            return None;
        };
        let sid = o.get("session_id").and_then(as_text);
        return session_allows(sid.as_deref().and_then(parse_uuid))
            .then_some(pgrx::JsonB(Value::Object(o)));
    }
    json_claims(|p| p.object.clone().map(|o| pgrx::JsonB(Value::Object(o)))).flatten()
}

/// SQL: the trusted third-party issuer whose token the current claims are, or NULL. The
/// account functions refuse such claims: a third party's token acts on no local account.
#[pg_extern(stable, parallel_safe)]
fn _third_party_issuer() -> Option<String> {
    third_party_issuer()
}
