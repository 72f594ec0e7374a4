//! Signing keys: read from `auth.signing_keys` with the extension owner's rights (callers
//! such as `anon` cannot read the table), cached per backend, and dropped from the cache by
//! a relcache invalidation that a trigger on the table sends at every change. A token check
//! therefore costs no query at all once the backend has its keys.

use crate::db::read_two;
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::jwk;
use crate::jwt::{self, Alg, JwtError, Key, Material, VerifyPolicy};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pgrx::prelude::*;
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;

struct Cache {
    /// Oid of auth.signing_keys when the keys were read; invalidations name it.
    relid: pg_sys::Oid,
    /// The table's owner: the extension owner, whose rights key and session reads use.
    owner: pg_sys::Oid,
    /// Our keys that verify (standby, in_use, previously_used), and revoked ones kept by
    /// kid so that their tokens are refused by name.
    verify: Vec<Key>,
    /// The in_use key, used for signing.
    signing: Option<Key>,
    /// The public keys as a JWKS, built once per load.
    jwks: Value,
    /// Trusted third-party issuers by `iss`.
    issuers: HashMap<String, Issuer>,
    /// The HMAC key of stored one-time codes and tokens (auth.secret_keys), when present.
    otp_key: Option<String>,
    /// The key of stored TOTP secrets (auth.secret_keys, purpose 'mfa'), from 0.7.0 on.
    mfa_key: Option<String>,
    /// Tokens already verified in this backend: token -> what the check found. Part of the
    /// cache, so any key or issuer change drops it with everything else.
    verified: RefCell<Memo>,
}

/// A verified token as remembered: its claims text (the payload as signed, or a trusted
/// issuer's claims with the role it maps to), its registered claims, checked again at every
/// use against the clock and the policy of the moment, and the claims as a `jsonb` datum
/// once `auth.verify_jwt` has built one.
pub struct Remembered {
    text: String,
    registered: jwt::Registered,
    /// Verified with a trusted issuer's keys (rather than ours): the entry stands only while
    /// its `iss` still names a trusted issuer.
    trusted: bool,
    jsonb: Option<Box<[u8]>>,
}

impl Remembered {
    /// The claims as the bytes of a `jsonb` datum, built by `build` from the text the first
    /// time and kept.
    pub fn jsonb(
        &mut self,
        build: impl FnOnce(&str) -> AuthResult<Box<[u8]>>,
    ) -> AuthResult<&[u8]> {
        let bytes = match self.jsonb.take() {
            Some(bytes) => bytes,
            None => build(&self.text)?,
        };
        Ok(self.jsonb.insert(bytes))
    }

    fn jsonb_len(&self) -> usize {
        self.jsonb.as_ref().map_or(0, |j| j.len())
    }
}

/// The verified-token memory, bounded in bytes (`auth.token_cache_size`): each entry is
/// charged an estimate of what it holds (the token, its claims as text, parsed and as jsonb,
/// the map's overhead), and when a new one would pass the bound the memory starts over. An
/// asymmetric token is kept at its first check, which is what it saves; an HS256 token, whose
/// check is cheap, at its second, so that tokens seen once (a flood of distinct ones) cost a
/// 64-bit hash each rather than an entry.
#[derive(Default)]
struct Memo {
    entries: HashMap<String, Remembered>,
    /// Keyed hashes of HS256 tokens checked once and not kept.
    seen: std::collections::HashSet<u64>,
    bytes: usize,
}

impl Memo {
    /// A generous estimate of an entry's heap use: the token, the claims text, the registered
    /// claims parsed out of it, the jsonb form as built, the table's slot and the allocator's
    /// overhead.
    fn cost(token: &str, entry: &Remembered) -> usize {
        512 + token.len() + entry.text.len() + entry.registered.heap_bytes() + entry.jsonb_len()
    }

    /// Charged per hash in `seen`: the set's slot, its growth and the allocator.
    const SEEN_COST: usize = 32;

    fn start_over(&mut self) {
        self.entries = HashMap::new();
        self.seen = std::collections::HashSet::new();
        self.bytes = 0;
    }

    /// Can an entry of this cost be kept at all? One larger than a quarter of the bound is
    /// verified every time rather than crowd out the rest.
    fn fits(cost: usize) -> bool {
        cost <= cache_bound_bytes() / 4
    }

    /// Charge `cost` for what is about to be added, starting over first when it would pass
    /// the bound.
    fn charge(&mut self, cost: usize) {
        if self.bytes + cost > cache_bound_bytes() {
            self.start_over();
        }
        self.bytes += cost;
    }

    /// Has this token been checked before (and not kept)? Records it when not.
    fn seen_before(&mut self, token: &str) -> bool {
        let hash = std::hash::BuildHasher::hash_one(self.entries.hasher(), token);
        if self.seen.remove(&hash) {
            self.bytes = self.bytes.saturating_sub(Self::SEEN_COST);
            return true;
        }
        self.charge(Self::SEEN_COST);
        self.seen.insert(hash);
        false
    }

    fn insert(&mut self, token: &str, entry: Remembered) {
        let cost = Self::cost(token, &entry);
        if !Self::fits(cost) {
            return;
        }
        self.charge(cost);
        if let Some(old) = self.entries.insert(token.to_string(), entry) {
            self.bytes = self.bytes.saturating_sub(Self::cost(token, &old));
        }
    }

    /// Charge what an entry grew by (its jsonb, built at a later use): an entry that has
    /// grown past a quarter of the bound is dropped, and past the bound the memory starts
    /// over.
    fn grew(&mut self, token: &str, by: usize) {
        self.bytes += by;
        if self
            .entries
            .get(token)
            .is_some_and(|e| !Self::fits(Self::cost(token, e)))
        {
            if let Some(old) = self.entries.remove(token) {
                self.bytes = self.bytes.saturating_sub(Self::cost(token, &old));
            }
        }
        if self.bytes > cache_bound_bytes() {
            self.start_over();
        }
    }
}

/// The byte bound of each per-backend cache (`auth.token_cache_size`, in kB).
pub fn cache_bound_bytes() -> usize {
    crate::config::TOKEN_CACHE_SIZE.get().max(0) as usize * 1024
}

/// A trusted issuer: its keys, the audiences its tokens must carry, and the role map.
pub struct Issuer {
    pub keys: Vec<Key>,
    pub audiences: Vec<String>,
    pub role_claim: Vec<String>,
    pub role_map: Map<String, Value>,
    pub default_role: Option<String>,
}

thread_local! {
    static CACHE: RefCell<Option<Cache>> = const { RefCell::new(None) };
    /// Bumped by every invalidation of the key tables: a load that saw it change meanwhile
    /// may have read what the invalidation replaced, and is done again.
    static GENERATION: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// The oid of auth.signing_keys, which every key-table invalidation names.
    static KEY_RELID: std::cell::Cell<pg_sys::Oid> = const { std::cell::Cell::new(pg_sys::InvalidOid) };
    /// An invalidation of the key tables arrived while the cache was in use: it is dropped
    /// as soon as that use ends.
    static STALE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Registered once in _PG_init.
pub fn register_invalidation() {
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_callback), pg_sys::Datum::from(0));
    }
}

unsafe extern "C-unwind" fn relcache_callback(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // InvalidOid means "every relation" (a cache reset after an overflow).
    let ours = relid == pg_sys::InvalidOid || relid == KEY_RELID.with(|k| k.get());
    CACHE.with(|c| match c.try_borrow_mut() {
        Ok(mut c) => {
            let stale = match &*c {
                Some(cache) => relid == pg_sys::InvalidOid || relid == cache.relid,
                // While a load runs.
                None => ours,
            };
            if stale {
                *c = None;
                GENERATION.with(|g| g.set(g.get() + 1));
            }
        }
        // The cache is in use (a check that reached Postgres code which takes in
        // invalidations): never lose the message; the cache goes when that use ends.
        Err(_) => {
            if ours {
                STALE.with(|s| s.set(true));
                GENERATION.with(|g| g.set(g.get() + 1));
            }
        }
    });
}

/// SQL: called by the statement trigger on auth.signing_keys. Queues a relcache
/// invalidation of the table: other backends process it after commit, this one at the
/// next command.
#[pg_extern(volatile)]
fn _invalidate_key_cache() {
    let relid = key_table();
    if let Ok((relid, _)) = relid {
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
    }
    CACHE.with(|c| *c.borrow_mut() = None);
}

/// SQL: 256 random bits as a 43-character base64url string (the generated HS256 secret).
#[pg_extern(volatile)]
fn _random_secret() -> String {
    random_token(32).or_raise()
}

/// `n` bytes from the operating system's CSPRNG, base64url without padding.
pub fn random_token(n: usize) -> AuthResult<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf)
        .map_err(|e| AuthError::Unexpected(format!("random number generator failed: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(&buf))
}

/// The oid and owner of auth.signing_keys. Names are fully qualified and no operator is
/// used, so a caller's search_path cannot redirect this query.
fn key_table() -> AuthResult<(pg_sys::Oid, pg_sys::Oid)> {
    let found = read_two::<pg_sys::Oid, pg_sys::Oid>(
        "select c.oid, c.relowner from pg_catalog.pg_class c \
          where c.oid operator(pg_catalog.=) pg_catalog.to_regclass('auth.signing_keys')::pg_catalog.oid",
        &[],
    )?;
    match found {
        (Some(relid), Some(owner)) => Ok((relid, owner)),
        _ => Err(AuthError::Unexpected("auth.signing_keys is missing".into())),
    }
}

/// The extension owner (the owner of its tables), for work done with its rights. Cached
/// with the keys (an ownership change of the table invalidates both).
pub fn extension_owner() -> AuthResult<pg_sys::Oid> {
    with_cache(|c| Ok(c.owner))
}

/// Run `f` with the rights of `owner`, like a SECURITY DEFINER function, for reading the
/// owner-only tables. An error inside `f` aborts the (sub)transaction, which restores the
/// previous user by itself.
pub fn as_user<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_ctx: i32 = 0;
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_ctx);
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_ctx
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
    }
    let r = f();
    unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_ctx) };
    r
}

/// Run `f` with the extension owner's rights (see [`as_user`]).
pub fn as_owner<R>(f: impl FnOnce() -> AuthResult<R>) -> AuthResult<R> {
    let owner = extension_owner()?;
    as_user(owner, f)
}

fn load() -> AuthResult<Cache> {
    let (relid, owner) = key_table()?;
    KEY_RELID.with(|k| k.set(relid));
    let (keys, issuers, (otp_key, mfa_key)) = as_user(owner, || -> AuthResult<_> {
        let keys = crate::db::read_latest_text(
            "select kid, algorithm, state, secret from auth.signing_keys order by created_at",
        )?;
        // A database still on a version before trusted issuers (the library is shared by
        // every version's SQL until ALTER EXTENSION UPDATE) has no such table.
        let has_issuers = crate::db::read_one::<bool>(
            "select pg_catalog.to_regclass('auth.trusted_issuers') is not null",
            &[],
        )? == Some(true);
        if !has_issuers {
            return Ok((keys, Vec::new(), (None, None)));
        }
        let issuers = crate::db::read_latest_text(
            "select issuer, jwks::pg_catalog.text, pg_catalog.array_to_json(audiences)::pg_catalog.text, \
                    pg_catalog.array_to_json(role_claim)::pg_catalog.text, role_map::pg_catalog.text, default_role \
               from auth.trusted_issuers",
        )?;
        // Likewise the secret keys, from 0.5.0 on.
        let has_secrets = crate::db::read_one::<bool>(
            "select pg_catalog.to_regclass('auth.secret_keys') is not null",
            &[],
        )? == Some(true);
        let (mut otp_key, mut mfa_key) = (None, None);
        if has_secrets {
            for row in
                crate::db::read_latest_text("select k.purpose, k.secret from auth.secret_keys k")?
            {
                let mut row = row.into_iter();
                match (row.next().flatten().as_deref(), row.next().flatten()) {
                    (Some("otp"), secret) => otp_key = secret,
                    (Some("mfa"), secret) => mfa_key = secret,
                    _ => {}
                }
            }
        }
        Ok((keys, issuers, (otp_key, mfa_key)))
    })?;
    let mut cache = Cache {
        relid,
        owner,
        verify: Vec::new(),
        signing: None,
        jwks: Value::Null,
        issuers: HashMap::new(),
        otp_key,
        mfa_key,
        verified: RefCell::new(Memo::default()),
    };
    for row in keys {
        let [kid, alg, state, secret] = <[Option<String>; 4]>::try_from(row)
            .map_err(|_| AuthError::Unexpected("signing key row".into()))?;
        let (Some(alg), Some(state)) = (alg.as_deref().and_then(Alg::from_name), state) else {
            continue;
        };
        let material = match (state.as_str(), secret) {
            ("revoked", _) => Material::Revoked,
            (_, Some(secret)) => jwk::load(alg, &secret).map_err(AuthError::Unexpected)?,
            (_, None) => continue,
        };
        let key = Key { kid, alg, material };
        if state == "in_use" {
            cache.signing = Some(key.clone());
        }
        cache.verify.push(key);
    }
    let public: Vec<Value> = cache
        .verify
        .iter()
        .filter_map(jwk::public_jwk)
        .map(Value::Object)
        .collect();
    cache.jwks = json!({ "keys": public });
    for row in issuers {
        let [iss, jwks, audiences, role_claim, role_map, default_role] =
            <[Option<String>; 6]>::try_from(row)
                .map_err(|_| AuthError::Unexpected("trusted issuer row".into()))?;
        let Some(iss) = iss else { continue };
        let parse = |t: Option<String>| -> Value {
            t.and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null)
        };
        let strings = |v: Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        // The row was checked when it was written; a key set that no longer parses (it
        // cannot, short of a direct table edit) leaves the issuer without keys.
        let keys = jwk::parse_jwks(&parse(jwks))
            .map(|(k, _)| k)
            .unwrap_or_default();
        let issuer = Issuer {
            keys,
            audiences: strings(parse(audiences)),
            role_claim: strings(parse(role_claim)),
            role_map: parse(role_map).as_object().cloned().unwrap_or_default(),
            default_role,
        };
        cache.issuers.insert(iss, issuer);
    }
    Ok(cache)
}

/// The cache, loaded when missing. The load first takes in every invalidation sent so
/// far, then reads the key tables through a snapshot taken after that, so it never holds
/// what an invalidation this backend has seen replaced, whatever the transaction's own
/// snapshot (a repeatable-read transaction's would be older); an invalidation that arrives
/// during the load makes it start again.
fn with_cache<R>(f: impl FnOnce(&Cache) -> AuthResult<R>) -> AuthResult<R> {
    // A key change committed by another session reaches this one at its next invalidation
    // check; taking them in here (cheap when there are none) makes it reach even a check
    // inside a transaction that began before the change.
    // SAFETY: callable in any transaction; it runs the callbacks of pending messages.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    // Bounded: under a storm of key changes, give up rather than keep what a change may
    // have replaced.
    for _ in 0..10 {
        drop_if_stale();
        if CACHE.with(|c| c.borrow().is_some()) {
            break;
        }
        let generation = GENERATION.with(|g| g.get());
        // SAFETY: callable in any transaction; it runs the callbacks of pending messages.
        unsafe { pg_sys::AcceptInvalidationMessages() };
        if GENERATION.with(|g| g.get()) != generation {
            continue;
        }
        let fresh = load()?;
        if GENERATION.with(|g| g.get()) == generation {
            CACHE.with(|c| *c.borrow_mut() = Some(fresh));
        }
    }
    let result = CACHE.with(|c| match &*c.borrow() {
        Some(cache) => f(cache),
        None => Err(AuthError::Unexpected(
            "the signing keys kept changing while they were read; try again".into(),
        )),
    });
    drop_if_stale();
    result
}

/// Drop the cache if an invalidation arrived while it was in use, unless it still is (a
/// nested use): the outermost use drops it when it ends.
fn drop_if_stale() {
    if STALE.with(|s| s.get()) {
        CACHE.with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                *c = None;
                STALE.with(|s| s.set(false));
            }
        });
    }
}

/// The key new tokens are signed with.
pub fn signing_key() -> AuthResult<Key> {
    with_cache(|c| {
        c.signing.clone().ok_or_else(|| {
            AuthError::Unexpected("no in_use key in auth.signing_keys; promote one".into())
        })
    })
}

/// HMAC-SHA256 of `digest` (hex) under the one-time-token key, as hex: what
/// auth.one_time_tokens stores of a code or link token (the SHA-256 of it is `digest`).
pub fn keyed_hash(digest: &str) -> AuthResult<String> {
    with_cache(|c| {
        let key = c
            .otp_key
            .as_deref()
            .ok_or_else(|| AuthError::Unexpected("auth.secret_keys has no 'otp' key".into()))?;
        Ok(hmac_sha256(key, digest.as_bytes())?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    })
}

/// HMAC-SHA256 of `data` under the text `key` (a secret of auth.secret_keys).
fn hmac_sha256(key: &str, data: &[u8]) -> AuthResult<[u8; 32]> {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes())
        .map_err(|e| AuthError::Unexpected(format!("secret key: {e}")))?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().into())
}

/// The 256-bit key that encrypts TOTP secrets: derived (HMAC-SHA256) from the 'mfa' secret of
/// auth.secret_keys, a table apart from the factors.
pub fn mfa_key() -> AuthResult<[u8; 32]> {
    with_cache(|c| {
        let key = c
            .mfa_key
            .as_deref()
            .ok_or_else(|| AuthError::Unexpected("auth.secret_keys has no 'mfa' key".into()))?;
        hmac_sha256(key, b"auth_ext totp secrets v1")
    })
}

/// SQL: see [`keyed_hash`]. Behind auth._otp_hash; owner only.
#[pg_extern(stable, parallel_restricted)]
fn _keyed_hash(digest: &str) -> String {
    keyed_hash(digest).or_raise()
}

/// The public keys (standby, in_use, previously_used; asymmetric only) as a JWKS.
pub fn public_jwks() -> AuthResult<Value> {
    with_cache(|c| Ok(c.jwks.clone()))
}

/// Verify `token`, then hand what was found to `then`: a token whose `iss` names a trusted
/// issuer is checked with that issuer's keys, audiences and role map only; every other token
/// with our own keys and `own` policy. A token's signature is checked once per backend: a
/// verified token is remembered (bounded by `auth.token_cache_size`, forgotten at any key or
/// issuer change), and each later use checks only its time and audience claims again, with
/// `now` and the policy of that call. For our own tokens the claims text is the payload as
/// it was signed, never rebuilt.
pub fn verify_then<R>(
    token: &str,
    now: i64,
    own: &VerifyPolicy,
    then: impl FnOnce(&mut Remembered) -> AuthResult<R>,
) -> AuthResult<R> {
    let bad = |e: JwtError| AuthError::BadJwt(e.to_string());
    // Refused before it is hashed for the lookup.
    if token.len() > jwt::MAX_TOKEN_LEN {
        return Err(bad(JwtError::TooLong));
    }
    with_cache(|c| {
        // The claims of a token remembered or just verified, checked against this call's
        // clock and policy: a trusted issuer's token against that issuer's audiences.
        let check = |registered: &jwt::Registered, issuer: Option<&Issuer>| match issuer {
            None => jwt::check_claims(registered, now, own).map_err(bad),
            Some(issuer) => {
                let policy = VerifyPolicy {
                    leeway: own.leeway,
                    audiences: issuer.audiences.clone(),
                    issuer: None,
                    require_exp: true,
                };
                jwt::check_claims(registered, now, &policy).map_err(bad)
            }
        };
        {
            let mut memo = c.verified.borrow_mut();
            if let Some(entry) = memo.entries.get_mut(token) {
                let issuer = issuer_of(c, entry.registered.iss());
                if entry.trusted == issuer.is_some() {
                    check(&entry.registered, issuer)?;
                    let before = entry.jsonb_len();
                    let result = then(entry)?;
                    let by = entry.jsonb_len() - before;
                    if by > 0 {
                        memo.grew(token, by);
                    }
                    return Ok(result);
                }
            }
        }
        let parsed = jwt::parse(token).map_err(bad)?;
        let (text, registered) =
            jwt::read_payload(parsed.payload_json().map_err(bad)?).map_err(bad)?;
        let issuer = issuer_of(c, registered.iss());
        let keys = issuer.map_or(c.verify.as_slice(), |i| i.keys.as_slice());
        parsed
            .verify_signature(keys)
            .map_err(|e| key_error(registered.iss(), issuer.is_some(), e))?;
        check(&registered, issuer)?;
        let text = match issuer {
            None => text,
            Some(issuer) => {
                Value::Object(map_role(issuer, jwt::object(&text).map_err(bad)?)?).to_string()
            }
        };
        let mut entry = Remembered {
            text,
            registered,
            trusted: issuer.is_some(),
            jsonb: None,
        };
        let keep = !parsed.alg.is_symmetric() || c.verified.borrow_mut().seen_before(token);
        let result = then(&mut entry)?;
        if keep {
            c.verified.borrow_mut().insert(token, entry);
        }
        Ok(result)
    })
}

/// [`verify_then`], the claims as JSON text.
pub fn verify_text(token: &str, now: i64, own: &VerifyPolicy) -> AuthResult<String> {
    verify_then(token, now, own, |r| Ok(r.text.clone()))
}

/// [`verify_text`], the claims as a map.
pub fn verify(token: &str, now: i64, own: &VerifyPolicy) -> AuthResult<Map<String, Value>> {
    jwt::object(&verify_text(token, now, own)?).map_err(|e| AuthError::BadJwt(e.to_string()))
}

/// Is `iss` a registered trusted issuer (and not this database's own issuer)?
pub fn is_trusted_issuer(iss: Option<&str>) -> AuthResult<bool> {
    let ours = crate::config::jwt_issuer();
    with_cache(|c| Ok(iss.is_some_and(|i| Some(i) != ours.as_deref() && c.issuers.contains_key(i))))
}

/// A token that names no key we have: say whose key set was searched. For a trusted
/// issuer's token, that issuer's; for any other, ours, and when its `iss` is someone
/// else's, that this issuer is not trusted (rather than only that its kid is unknown).
fn key_error(iss: Option<&str>, trusted: bool, e: JwtError) -> AuthError {
    match (&e, iss) {
        (JwtError::UnknownKid(_) | JwtError::NoKey(_), Some(iss)) if trusted => {
            AuthError::BadJwt(format!("{e} in the key set of issuer \"{iss}\""))
        }
        (JwtError::UnknownKid(_) | JwtError::NoKey(_), Some(iss))
            if Some(iss) != crate::config::jwt_issuer().as_deref() =>
        {
            AuthError::BadJwt(format!(
                "token issuer \"{}\" is not trusted ({e})",
                iss.chars().take(128).collect::<String>()
            ))
        }
        _ => AuthError::BadJwt(e.to_string()),
    }
}

/// The trusted issuer a token names, if any. A token that names this database's own
/// issuer is always ours, whatever has been registered.
fn issuer_of<'c>(c: &'c Cache, iss: Option<&str>) -> Option<&'c Issuer> {
    let iss = iss?;
    if crate::config::jwt_issuer().as_deref() == Some(iss) {
        return None;
    }
    c.issuers.get(iss)
}

/// A trusted issuer's token gets the role its map assigns: the claim at `role_claim`
/// looked up in `role_map`, else `default_role`. The token's own `role` is never taken as
/// it is, so an outside issuer cannot name a role it was not given.
fn map_role(issuer: &Issuer, mut claims: Map<String, Value>) -> AuthResult<Map<String, Value>> {
    let mut at: Option<&Value> = None;
    for (i, step) in issuer.role_claim.iter().enumerate() {
        at = if i == 0 {
            claims.get(step)
        } else {
            at.and_then(|v| v.get(step))
        };
    }
    let role = at
        .and_then(Value::as_str)
        .and_then(|v| issuer.role_map.get(v))
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| issuer.default_role.clone())
        .ok_or_else(|| {
            AuthError::BadJwt("the issuer's token maps to no role (no default_role)".into())
        })?;
    claims.insert("role".into(), Value::from(role));
    Ok(claims)
}

/// How many tokens this backend remembers as verified, and the bytes charged for them.
#[cfg(any(test, feature = "pg_test"))]
pub fn verified_memory() -> AuthResult<(usize, usize)> {
    with_cache(|c| {
        let m = c.verified.borrow();
        Ok((m.entries.len(), m.bytes))
    })
}

/// SQL (owner only, behind the key management functions): the stored form and public JWK
/// of a new key. `private_key` NULL generates one of `algorithm`; otherwise it is imported
/// (PEM or private JWK) and `algorithm`, when given, must agree with it.
#[pg_extern(volatile)]
fn _new_key_material(algorithm: Option<&str>, private_key: Option<&str>, kid: &str) -> pgrx::JsonB {
    new_key_material(algorithm, private_key, kid).or_raise()
}

fn parse_alg(name: &str) -> AuthResult<Alg> {
    Alg::from_name(name).ok_or_else(|| {
        AuthError::ValidationFailed(format!(
            "algorithm must be one of HS256, ES256, RS256, EdDSA (got \"{}\")",
            name.chars().take(32).collect::<String>()
        ))
    })
}

fn new_key_material(
    algorithm: Option<&str>,
    private_key: Option<&str>,
    kid: &str,
) -> AuthResult<pgrx::JsonB> {
    let hint = algorithm.map(parse_alg).transpose()?;
    let (alg, stored, material) = match private_key {
        None => {
            let alg = hint.ok_or_else(|| {
                AuthError::ValidationFailed("algorithm is required to generate a key".into())
            })?;
            let (stored, material) = jwk::generate(alg).map_err(AuthError::Unexpected)?;
            (alg, stored, material)
        }
        Some(text) => jwk::import(text, hint).map_err(AuthError::ValidationFailed)?,
    };
    let key = Key {
        kid: Some(kid.to_string()),
        alg,
        material,
    };
    Ok(pgrx::JsonB(json!({
        "algorithm": alg.name(),
        "secret": stored,
        "public_jwk": jwk::public_jwk(&key).map(Value::Object),
    })))
}

/// SQL (behind auth.set_trusted_issuer): check a key set, given as jsonb text so that
/// any jsonb (huge numbers, deep nesting) is a clear error; report how many keys verify
/// and which entries were skipped, or raise 22023 naming the bad key.
#[pg_extern(immutable, parallel_safe)]
fn _check_jwks_text(jwks: &str) -> pgrx::JsonB {
    let parsed = crate::metadata::parse_storable(jwks)
        .map_err(|why| AuthError::ValidationFailed(format!("jwks {why}")))
        .or_raise();
    match jwk::parse_jwks(&parsed) {
        Ok((keys, skipped)) => pgrx::JsonB(json!({"keys": keys.len(), "skipped": skipped})),
        Err(e) => AuthError::ValidationFailed(e).raise(),
    }
}

/// The jsonb form of versions before 0.5.0, whose SQL still calls this symbol until the
/// database is updated; no SQL function is created for it any more.
#[pg_extern(immutable, parallel_safe, sql = false)]
fn _check_jwks(jwks: pgrx::JsonB) -> pgrx::JsonB {
    _check_jwks_text(&jwks.0.to_string())
}

/// auth.jwks(): the public signing keys as a JWKS, for PostgREST's jwt-secret and any
/// other verifier. Never holds a private or symmetric key.
#[pg_extern(stable, parallel_restricted)]
fn jwks() -> pgrx::JsonB {
    pgrx::JsonB(public_jwks().or_raise())
}
