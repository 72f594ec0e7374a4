//! The brute-force lockout: failed password sign-ins and one-time-code checks are counted
//! per account (`email:<address>`) and per client address (`ip:<address>`), and past a
//! threshold within a window every attempt is refused before anything is checked.
//!
//! Count before you check. A failure can only be written down after the check, by an
//! autonomous transaction (the failing call's own transaction is about to abort), so a
//! burst of guesses would all be checked before the first was recorded. So every attempt
//! first takes a place in a shared-memory counter of guesses in flight (src/shmem.rs),
//! and is refused when the failures already written down, plus those in flight (its own
//! included), plus any that could not be written down, reach the threshold. The written
//! failures are read through a snapshot taken after the place is taken, never the
//! transaction's: a guess that finishes is written down before it leaves the in-flight
//! count, so no failure is ever missed, and an old repeatable-read snapshot hides none.
//! A failure whose autonomous write cannot happen (no worker place) stays counted in shared
//! memory until its window passes; an attempt that cannot take a place is refused.
//!
//! The cost: concurrent guesses at one account can only make it lock sooner (a guess in
//! flight counts as a failure until it is known), never later.

use crate::config;
use crate::db;
use crate::error::{AuthError, AuthResult};
use crate::request::RequestInfo;
use crate::shmem;
use pgrx::pg_sys;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// One counter an attempt is counted against.
struct Counter {
    /// `email:<address>` or `ip:<address>`, as in auth.sign_in_failures.
    name: String,
    /// Its place in shared memory: a digest of the database and the name.
    digest: [u8; 16],
    /// The threshold; 0 means this counter never locks (its failures are still counted).
    limit: i32,
    /// Whether this is the account's counter (a success clears it).
    account: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The guess is being checked.
    Checking,
    /// It failed, and its failure is being written down.
    Recording,
}

struct Attempt {
    counters: Vec<Counter>,
    /// The subtransaction it began in: an abort of that one (or of the transaction) ends it.
    subxact: pg_sys::SubTransactionId,
    stage: Stage,
}

thread_local! {
    /// This backend's attempts in flight (one, but for a call nested in another's hook).
    static ACTIVE: RefCell<Vec<Attempt>> = const { RefCell::new(Vec::new()) };
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn window() -> i64 {
    i64::from(config::LOCKOUT_WINDOW.get())
}

/// The lockout counter of an account.
pub fn account_key(email: &str) -> String {
    format!("email:{email}")
}

/// The lockout counter of the request's client address, when it has one.
pub fn ip_key(req: &RequestInfo) -> Option<String> {
    req.limit_key().map(|k| format!("ip:{k}"))
}

fn counter(name: String, limit: i32, account: bool) -> Counter {
    // SAFETY: MyDatabaseId is set before any SQL function runs.
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let mut h = Sha256::new();
    h.update(db.to_le_bytes());
    h.update(name.as_bytes());
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&h.finalize()[..16]);
    Counter {
        name,
        digest,
        limit,
        account,
    }
}

fn counters(email: Option<&str>, req: &RequestInfo) -> Vec<Counter> {
    named_counters(email.map(account_key), req)
}

/// The counters of a guess at `account` (a counter name, when there is one) from the
/// request's address.
fn named_counters(account: Option<String>, req: &RequestInfo) -> Vec<Counter> {
    let mut out = Vec::with_capacity(2);
    if let Some(name) = account {
        out.push(counter(name, config::LOCKOUT_MAX_FAILURES.get(), true));
    }
    if let Some(ip) = ip_key(req) {
        out.push(counter(ip, config::LOCKOUT_IP_MAX_FAILURES.get(), false));
    }
    out
}

fn db_id() -> u32 {
    // SAFETY: as above.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// Take a place for each counter; per counter, the guesses in flight (this one included)
/// and the unrecorded failures. None, with nothing taken, when shared memory is full.
fn take_places(counters: &[Counter]) -> Option<Vec<(u32, u32)>> {
    let (db, now, window) = (db_id(), now(), window());
    shmem::with_slots(|slots| {
        let mut taken: Vec<usize> = Vec::with_capacity(counters.len());
        let mut seen = Vec::with_capacity(counters.len());
        for c in counters {
            match shmem::find_or_claim(slots, db, c.digest, now, window) {
                Some(i) => {
                    let s = &mut slots[i];
                    s.inflight += 1;
                    if s.unrecorded > 0 && s.since != shmem::STICKY && now - s.since >= window {
                        s.unrecorded = 0;
                    }
                    taken.push(i);
                    seen.push((s.inflight, s.unrecorded));
                }
                None => {
                    for i in taken {
                        slots[i].inflight = slots[i].inflight.saturating_sub(1);
                    }
                    return None;
                }
            }
        }
        Some(seen)
    })
}

/// What an unwritten failure counts as: more than any threshold.
const LOCKED: u32 = u32::MAX / 2;

/// How an attempt ends.
#[derive(Clone, Copy)]
enum End {
    /// Right answer: the account's unrecorded failures are forgiven too.
    Success,
    /// Refused before any check, or abandoned before the check finished.
    Nothing,
    /// A failure whose autonomous write did not happen: it stays counted here.
    Unrecorded,
    /// A failure now written to auth.sign_in_failures.
    Recorded,
}

fn give_back(counters: &[Counter], end: End) {
    let (db, now) = (db_id(), now());
    shmem::with_slots(|slots| {
        for c in counters {
            let Some(i) = shmem::find(slots, db, c.digest) else {
                continue;
            };
            let s = &mut slots[i];
            s.inflight = s.inflight.saturating_sub(1);
            match end {
                End::Success if c.account => s.unrecorded = 0,
                // A failure nobody could write down locks its key for the window: it is
                // not known how many came before it.
                End::Unrecorded => {
                    s.unrecorded = LOCKED;
                    s.since = now;
                }
                _ => {}
            }
        }
    });
}

/// Failures written down for each counter within the window, read through a snapshot taken
/// now (not the statement's or the transaction's).
fn recorded(names: &[String]) -> AuthResult<Vec<i32>> {
    let name = |i: usize| names.get(i).cloned();
    let counts = db::read_latest_ints(
        "select pg_catalog.count(*) filter (where f.key operator(pg_catalog.=) $1)::pg_catalog.int4, \
                pg_catalog.count(*) filter (where f.key operator(pg_catalog.=) $2)::pg_catalog.int4 \
           from auth.sign_in_failures f \
          where (f.key operator(pg_catalog.=) $1 or f.key operator(pg_catalog.=) $2) \
            and f.failed_at operator(pg_catalog.>) (pg_catalog.clock_timestamp() \
                operator(pg_catalog.-) pg_catalog.make_interval(0, 0, 0, 0, 0, 0, $3))",
        &[name(0).into(), name(1).into(), config::LOCKOUT_WINDOW.get().into()],
        2,
    )?;
    Ok(counts.into_iter().map(|n| n.unwrap_or(0)).collect())
}

/// Begin a guess at the account of `email` (when given) from the request's address: take
/// its places, then refuse it (over_request_rate_limit) if the account or the address is
/// locked. Every begun attempt ends with [`failed`] or [`succeeded`], or with the
/// (sub)transaction's abort.
pub fn begin(email: Option<&str>, req: &RequestInfo) -> AuthResult<()> {
    start(counters(email, req))
}

/// Begin a guess counted on the counter `name` alone (not an account's sign-in counter,
/// nor the address's).
pub fn begin_named(name: &str) -> AuthResult<()> {
    start(vec![counter(
        name.to_string(),
        config::LOCKOUT_MAX_FAILURES.get(),
        true,
    )])
}

/// Begin a guess counted on the counter `name` (with the account's threshold) and on the
/// request's address, like a sign-in's.
pub fn begin_key(name: &str, req: &RequestInfo) -> AuthResult<()> {
    start(named_counters(Some(name.to_string()), req))
}

/// Mark a session whose revocation could not be committed: refreshes of it are refused
/// until the mark is written ([`session_marked`], [`clear_session_mark`]) or the server
/// restarts.
pub fn mark_session(session_id: &str) {
    let c = counter(format!("revoked_session:{session_id}"), 0, false);
    let (db, now, window) = (db_id(), now(), window());
    shmem::with_slots(|slots| {
        if let Some(i) = shmem::find_or_claim(slots, db, c.digest, now, window) {
            slots[i].unrecorded = LOCKED;
            slots[i].since = shmem::STICKY;
        }
    });
}

/// Is the session marked revoked?
pub fn session_marked(session_id: &str) -> bool {
    let c = counter(format!("revoked_session:{session_id}"), 0, false);
    let db = db_id();
    shmem::with_slots(|slots| shmem::find(slots, db, c.digest).is_some())
}

/// The session's revocation is written: drop its mark.
pub fn clear_session_mark(session_id: &str) {
    let c = counter(format!("revoked_session:{session_id}"), 0, false);
    let db = db_id();
    shmem::with_slots(|slots| {
        if let Some(i) = shmem::find(slots, db, c.digest) {
            slots[i].unrecorded = 0;
            slots[i].since = 0;
        }
    });
}

fn start(counters: Vec<Counter>) -> AuthResult<()> {
    let seen = take_places(&counters).ok_or(AuthError::OverRequestRateLimit)?;
    let names: Vec<String> = counters.iter().map(|c| c.name.clone()).collect();
    let limits: Vec<i32> = counters.iter().map(|c| c.limit).collect();
    // From here an error (the read below) ends the attempt through the abort callback.
    // SAFETY: valid inside any transaction.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    ACTIVE.with(|a| {
        a.borrow_mut().push(Attempt {
            counters,
            subxact,
            stage: Stage::Checking,
        })
    });
    let written = recorded(&names)?;
    let locked = limits.iter().enumerate().any(|(i, &limit)| {
        let (inflight, unrecorded) = seen[i];
        let earlier = written.get(i).copied().unwrap_or(0).max(0) as u64
            + u64::from(unrecorded)
            + u64::from(inflight.saturating_sub(1));
        limit > 0 && earlier >= limit as u64
    });
    if locked {
        finish(End::Nothing);
        return Err(AuthError::OverRequestRateLimit);
    }
    Ok(())
}

/// Whether the account of `email` or the request's address is locked right now (for the
/// SQL of 0.4.0, which asks before it checks).
pub fn is_locked(email: Option<&str>, req: &RequestInfo) -> AuthResult<bool> {
    match begin(email, req) {
        Ok(()) => {
            finish(End::Nothing);
            Ok(false)
        }
        Err(AuthError::OverRequestRateLimit) => Ok(true),
        Err(e) => Err(e),
    }
}

/// End the newest attempt.
fn finish(end: End) {
    if let Some(at) = ACTIVE.with(|a| a.borrow_mut().pop()) {
        give_back(&at.counters, end);
    }
}

/// The newest attempt's guess was right.
pub fn succeeded() {
    finish(End::Success);
}

/// The newest attempt's guess was wrong: write the failure down (and its audit entry) in
/// a transaction of its own, then leave the in-flight count. When it cannot be written,
/// it stays counted in shared memory for the window.
pub fn failed(audit: Value) {
    failed_with(audit, Map::new())
}

/// As [`failed`], with more work for the same autonomous transaction (`extra`: further
/// jobs of auth._autonomous, such as deleting a flow state that a wrong guess used up).
pub fn failed_with(audit: Value, extra: Map<String, Value>) {
    // Only the counters that can lock are written (a threshold of 0 turns one off).
    let keys: Vec<String> = ACTIVE.with(|a| {
        let mut a = a.borrow_mut();
        match a.last_mut() {
            Some(at) => {
                at.stage = Stage::Recording;
                at.counters
                    .iter()
                    .filter(|c| c.limit > 0)
                    .map(|c| c.name.clone())
                    .collect()
            }
            None => Vec::new(),
        }
    });
    let mut job = json!({
        "audit": audit,
        "count_failures": {
            "keys": keys,
            "window": format!("{} seconds", config::LOCKOUT_WINDOW.get()),
        },
    });
    if let Value::Object(j) = &mut job {
        j.extend(extra);
    }
    // A cancel or a statement timeout must not cut the write short (the attempt would stay
    // counted in shared memory for the whole window, a place an attacker could fill): the
    // interrupts wait until it is done, a few milliseconds, a second or so at the worst.
    // SAFETY: what HOLD_INTERRUPTS/RESUME_INTERRUPTS do; an error in between aborts the
    // transaction, which resets the count.
    unsafe { pg_sys::InterruptHoldoffCount += 1 };
    let written = crate::autonomous::run(&job);
    unsafe { pg_sys::InterruptHoldoffCount -= 1 };
    match written {
        Ok(()) => finish(End::Recorded),
        Err(e) => {
            pgrx::warning!(
                "auth_ext: a failed attempt could not be written down ({e}); it stays counted in shared memory"
            );
            finish(End::Unrecorded);
        }
    }
}

/// An abort ends the attempts begun inside what it aborts: those being checked leave the
/// in-flight count; those whose failure was being written down stay counted.
fn on_abort(from_subxact: Option<pg_sys::SubTransactionId>) {
    let ended: Vec<Attempt> = ACTIVE.with(|a| {
        let mut a = match a.try_borrow_mut() {
            Ok(a) => a,
            Err(_) => return Vec::new(),
        };
        let keep = |at: &Attempt| from_subxact.is_some_and(|s| at.subxact < s);
        let (kept, ended): (Vec<Attempt>, Vec<Attempt>) = a.drain(..).partition(keep);
        *a = kept;
        ended
    });
    for at in ended {
        let end = match at.stage {
            Stage::Checking => End::Nothing,
            Stage::Recording => End::Unrecorded,
        };
        give_back(&at.counters, end);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    // At an abort the attempts it cut short end; at a commit none should be left (each
    // call ends its own), and any that is would otherwise hold its places for good.
    if event == pg_sys::XactEvent::XACT_EVENT_ABORT
        || event == pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
        || event == pg_sys::XactEvent::XACT_EVENT_COMMIT
        || event == pg_sys::XactEvent::XACT_EVENT_PREPARE
    {
        on_abort(None);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        on_abort(Some(my_subid));
    }
}

/// Registered once per backend in _PG_init.
pub fn register_callbacks() {
    // SAFETY: plain registrations of static functions.
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
    }
}
