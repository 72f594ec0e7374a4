//! Signing keys: read from `auth.signing_keys` with the extension owner's rights (callers
//! such as `anon` cannot read the table), cached per backend, and dropped from the cache by
//! a relcache invalidation that a trigger on the table sends at every change. A token check
//! therefore costs no query at all once the backend has its keys.

use crate::db::read_two;
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::jwt::{Alg, Key};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pgrx::prelude::*;
use std::cell::RefCell;

struct Cache {
    /// Oid of auth.signing_keys when the keys were read; invalidations name it.
    relid: pg_sys::Oid,
    /// The table's owner: the extension owner, whose rights key and session reads use.
    owner: pg_sys::Oid,
    /// Keys that verify (in_use and previously_used).
    verify: Vec<Key>,
    /// The in_use HS256 key, used for signing.
    signing: Option<Key>,
}

thread_local! {
    static CACHE: RefCell<Option<Cache>> = const { RefCell::new(None) };
}

/// Registered once in _PG_init.
pub fn register_invalidation() {
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_callback), pg_sys::Datum::from(0));
    }
}

unsafe extern "C-unwind" fn relcache_callback(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // InvalidOid means "every relation" (a cache reset after an overflow).
    CACHE.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            let stale = match &*c {
                Some(cache) => relid == pg_sys::InvalidOid || relid == cache.relid,
                None => false,
            };
            if stale {
                *c = None;
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

fn load() -> AuthResult<Cache> {
    let (relid, owner) = key_table()?;
    let rows: Vec<(Option<String>, String, String, String)> = as_user(owner, || {
        Spi::connect(|client| {
            let table = client.select(
                "select kid, algorithm, state, secret from auth.signing_keys",
                None,
                &[],
            )?;
            let mut out = Vec::new();
            for row in table {
                let kid: Option<String> = row.get(1)?;
                let alg: Option<String> = row.get(2)?;
                let state: Option<String> = row.get(3)?;
                let secret: Option<String> = row.get(4)?;
                if let (Some(alg), Some(state), Some(secret)) = (alg, state, secret) {
                    out.push((kid, alg, state, secret));
                }
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
    })?;
    let mut cache = Cache {
        relid,
        owner,
        verify: Vec::new(),
        signing: None,
    };
    for (kid, alg, state, secret) in rows {
        let Some(alg) = Alg::from_name(&alg) else {
            continue;
        };
        let key = Key {
            kid,
            alg,
            secret: secret.into_bytes(),
        };
        match state.as_str() {
            "in_use" => {
                if alg == Alg::HS256 {
                    cache.signing = Some(key.clone());
                }
                cache.verify.push(key);
            }
            "previously_used" => cache.verify.push(key),
            _ => {}
        }
    }
    Ok(cache)
}

fn with_cache<R>(f: impl FnOnce(&Cache) -> AuthResult<R>) -> AuthResult<R> {
    let cached = CACHE.with(|c| c.borrow().is_some());
    if !cached {
        let fresh = load()?;
        CACHE.with(|c| *c.borrow_mut() = Some(fresh));
    }
    CACHE.with(|c| match &*c.borrow() {
        Some(cache) => f(cache),
        None => Err(AuthError::Unexpected(
            "signing key cache was dropped".into(),
        )),
    })
}

/// Run `f` with the keys that verify tokens, without copying them.
pub fn with_verification_keys<R>(f: impl FnOnce(&[Key]) -> R) -> AuthResult<R> {
    with_cache(|c| Ok(f(&c.verify)))
}

/// The key new tokens are signed with.
pub fn signing_key() -> AuthResult<Key> {
    with_cache(|c| {
        c.signing
            .clone()
            .ok_or_else(|| AuthError::Unexpected("no in_use HS256 key in auth.signing_keys".into()))
    })
}
