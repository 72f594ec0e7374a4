//! A small block of the server's shared memory that every backend sees at once, for what
//! cannot wait for a commit: the password and code guesses in flight per account and
//! client address (counted before a guess is checked, see src/lockout.rs), failures that
//! could not be written down, and how many of our background workers run.
//!
//! It is allocated at first use from the reserve Postgres keeps in its main segment for
//! late allocations, so `shared_preload_libraries` is not needed; with auth_ext there, it
//! is reserved at start-up instead. A restart loses it, which also ends every attempt that
//! was in flight; failures already written to auth.sign_in_failures stay counted.

use pgrx::pg_sys;
use std::ffi::CStr;
use std::sync::atomic::{AtomicU32, Ordering};

/// One counter: an account or client address of one database, by a 128-bit digest of its
/// key. Free when nothing is in flight and nothing unrecorded is left.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Slot {
    pub db: u32,
    pub key: [u8; 16],
    /// Guesses being checked right now.
    pub inflight: u32,
    /// Failures that could not be written to auth.sign_in_failures: while there are any,
    /// until their window passes, the key counts as locked.
    pub unrecorded: u32,
    /// When the first of those failures happened (Unix seconds); `STICKY` for a mark that
    /// stays until it is written (a session whose revocation could not be committed).
    pub since: i64,
}

/// `since` of a mark that never expires by itself.
pub const STICKY: i64 = i64::MIN;

impl Slot {
    fn is_free(&self, now: i64, window: i64) -> bool {
        self.inflight == 0
            && (self.unrecorded == 0 || (self.since != STICKY && now - self.since >= window))
    }
}

/// How many counters exist: each attempt in flight holds at most two (its account and its
/// address), so 512 attempts at once across the cluster; past that, attempts are refused
/// rather than checked uncounted.
pub const SLOTS: usize = 1024;

#[repr(C)]
struct Shared {
    lock: pg_sys::LWLock,
    tranche: i32,
    /// Background workers of ours that are running (src/autonomous.rs).
    workers: AtomicU32,
    /// Password hashes computing (src/hashing.rs).
    hashes: AtomicU32,
    /// Backends waiting for a hashing place (pgprocno + 1; 0 is free), served in the order
    /// of their tickets (`hash_tickets`) and woken, oldest first, as places come back.
    hash_waiters: [std::sync::atomic::AtomicI32; WAITERS],
    hash_tickets: [std::sync::atomic::AtomicU64; WAITERS],
    /// The next ticket.
    hash_next_ticket: std::sync::atomic::AtomicU64,
    slots: [Slot; SLOTS],
}

/// How many waiting backends are woken by name; more wait on a short timeout instead.
const WAITERS: usize = 128;

/// Named with the layout's version: a library with another layout loaded into a running
/// server gets a block of its own instead of misreading this one.
const NAME: &CStr = c"auth_ext shared state v4";

thread_local! {
    static SHARED: std::cell::Cell<*mut Shared> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// The same pointer for threads other than the backend's (a hashing thread gives its place
/// back through it): set once attached, the same in every thread of the process.
static SHARED_ANY: std::sync::atomic::AtomicPtr<Shared> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// The size to reserve (`shared_preload_libraries`) or allocate.
pub fn size() -> usize {
    std::mem::size_of::<Shared>()
}

/// AddinShmemInitLock, which Postgres provides for exactly this (lwlocknames.txt: 21 in
/// every supported major; the C macro is not bound).
unsafe fn addin_lock() -> *mut pg_sys::LWLock {
    unsafe { &raw mut (*pg_sys::MainLWLockArray.add(21)).lock }
}

/// Attach to the block, creating it on first use in the cluster.
fn shared() -> *mut Shared {
    let p = SHARED.with(|s| s.get());
    if !p.is_null() {
        return p;
    }
    // SAFETY: the documented pattern for add-in shared memory: ShmemInitStruct under
    // AddinShmemInitLock, initialised by whoever creates it. ShmemInitStruct raises an
    // ERROR (no counting, so the caller's attempt fails closed) when no memory is left.
    let p = unsafe {
        pg_sys::LWLockAcquire(addin_lock(), pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let p = pg_sys::ShmemInitStruct(NAME.as_ptr(), size(), &mut found) as *mut Shared;
        if !found {
            std::ptr::write_bytes(p as *mut u8, 0, size());
            let tranche = pg_sys::LWLockNewTrancheId();
            (*p).tranche = tranche;
            pg_sys::LWLockInitialize(&raw mut (*p).lock, tranche);
        }
        pg_sys::LWLockRelease(addin_lock());
        pg_sys::LWLockRegisterTranche((*p).tranche, c"auth_ext".as_ptr());
        p
    };
    SHARED.with(|s| s.set(p));
    SHARED_ANY.store(p, Ordering::Release);
    p
}

/// Run `f` on the counters, under the block's lock. `f` must not raise: it only reads and
/// writes the slots.
pub fn with_slots<R>(f: impl FnOnce(&mut [Slot; SLOTS]) -> R) -> R {
    let p = shared();
    // SAFETY: the slots are only touched under the exclusive lock; LWLocks are released
    // by Postgres itself if anything aborts while one is held.
    unsafe {
        pg_sys::LWLockAcquire(&raw mut (*p).lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let r = f(&mut (*p).slots);
        pg_sys::LWLockRelease(&raw mut (*p).lock);
        r
    }
}

/// Take one of `max` worker places; false when all are taken.
pub fn take_worker(max: u32) -> bool {
    // SAFETY: an atomic in shared memory, valid for the life of the server.
    let workers = unsafe { &(*shared()).workers };
    workers
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// Give a worker place back.
pub fn release_worker() {
    // SAFETY: as above.
    let workers = unsafe { &(*shared()).workers };
    let _ = workers.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
}

/// Take one of `max` hashing places in turn: only when fewer waiters came before this one
/// (by ticket; for a backend that found no waiting slot, every registered waiter) than
/// there are free places, so a place given back goes to the oldest waiter, never to a
/// newcomer. The count in `hashes` alone keeps the bound; the order only decides who.
pub fn take_hash(max: u32, waiting: Option<usize>) -> bool {
    // SAFETY: atomics in shared memory, valid for the life of the server.
    let shared = unsafe { &*shared() };
    let running = shared.hashes.load(Ordering::Acquire);
    if running >= max {
        return false;
    }
    let mine = waiting.map(|s| shared.hash_tickets[s].load(Ordering::Acquire));
    let ahead = (0..WAITERS)
        .filter(|&i| Some(i) != waiting && shared.hash_waiters[i].load(Ordering::Acquire) != 0)
        .filter(|&i| mine.is_none_or(|t| shared.hash_tickets[i].load(Ordering::Acquire) < t))
        .count() as u32;
    ahead < max - running
        && shared
            .hashes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
}

// Postgres' SetLatch without pgrx's wrapper, which refuses calls from any thread but the
// backend's own: a hashing thread sets latches (marks a flag, signals a process).
unsafe extern "C" {
    #[link_name = "SetLatch"]
    fn set_latch_from_any_thread(latch: *mut pg_sys::Latch);
}

/// Set a latch from any thread of this process.
pub fn wake(latch: *mut pg_sys::Latch) {
    // SAFETY: SetLatch only sets the latch's flag and signals its owner (kill or a write
    // to a pipe), both safe from any thread; the latch is a backend's, which outlives it.
    unsafe { set_latch_from_any_thread(latch) }
}

/// Give a hashing place back and wake the oldest waiting backend (callable from any thread
/// of the process: atomics, and SetLatch, which only signals).
pub fn release_hash() {
    // SAFETY: as above. The pointer was set by the backend's thread before any hash ran.
    let shared = unsafe { &*SHARED_ANY.load(Ordering::Acquire) };
    let _ = shared
        .hashes
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    wake_oldest_waiter(shared);
}

fn wake_oldest_waiter(shared: &Shared) {
    let oldest = (0..WAITERS)
        .filter_map(|i| {
            let procno = shared.hash_waiters[i].load(Ordering::Acquire) - 1;
            (procno >= 0).then(|| (shared.hash_tickets[i].load(Ordering::Acquire), procno))
        })
        .min();
    if let Some((_, procno)) = oldest {
        // SAFETY: a live backend's PGPROC (it unregisters before it exits); a latch set
        // after it moved on only makes it look once more.
        let latch = unsafe {
            let proc_ = (*pg_sys::ProcGlobal).allProcs.add(procno as usize);
            &raw mut (*proc_).procLatch
        };
        wake(latch);
    }
}

/// Register this backend as waiting for a hashing place, with the next ticket; the slot to
/// give back, or None when every slot is taken (it then takes a place only when no
/// registered waiter could).
pub fn wait_for_hash() -> Option<usize> {
    // SAFETY: as above; MyProc is set for every backend.
    let (shared, me) = unsafe { (&*shared(), (*pg_sys::MyProc).pgprocno + 1) };
    let slot = shared.hash_waiters.iter().position(|w| {
        w.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    })?;
    // Until the ticket is stored, others see the slot's old (smaller) ticket and count this
    // backend as ahead of them: a moment of caution, never a place too many.
    let ticket = shared.hash_next_ticket.fetch_add(1, Ordering::AcqRel);
    shared.hash_tickets[slot].store(ticket, Ordering::Release);
    Some(slot)
}

/// Stop waiting (the slot of [`wait_for_hash`]): after taking a place, or giving up. The
/// next waiter is woken, in case a place is free for it now.
pub fn stop_waiting_for_hash(slot: usize) {
    // SAFETY: as above.
    let shared = unsafe { &*shared() };
    shared.hash_waiters[slot].store(0, Ordering::Release);
    wake_oldest_waiter(shared);
}

/// Hashes computing right now in the cluster (for tests and the benchmark).
pub fn hashes_running() -> u32 {
    // SAFETY: as above.
    unsafe { (*shared()).hashes.load(Ordering::Acquire) }
}

/// Find the slot of (db, key), or claim a free one for it; None when every slot is taken.
/// A slot that holds unwritten failures is never taken over before its window passes:
/// dropping it would reopen a locked account (an attacker who keeps the writers busy could
/// otherwise wash any account's failures out), so a full table refuses instead.
pub fn find_or_claim(
    slots: &mut [Slot; SLOTS],
    db: u32,
    key: [u8; 16],
    now: i64,
    window: i64,
) -> Option<usize> {
    let mut free = None;
    for (i, s) in slots.iter().enumerate() {
        if s.db == db && s.key == key && !s.is_free(now, window) {
            return Some(i);
        }
        if free.is_none() && s.is_free(now, window) {
            free = Some(i);
        }
    }
    let i = free?;
    slots[i] = Slot {
        db,
        key,
        inflight: 0,
        unrecorded: 0,
        since: now,
    };
    Some(i)
}

/// The slot of (db, key) if it is in use.
pub fn find(slots: &[Slot; SLOTS], db: u32, key: [u8; 16]) -> Option<usize> {
    slots
        .iter()
        .position(|s| s.db == db && s.key == key && (s.inflight > 0 || s.unrecorded > 0))
}

#[cfg(any(feature = "pg15", feature = "pg16", feature = "pg17", feature = "pg18"))]
mod preload {
    static mut PREVIOUS: pgrx::pg_sys::shmem_request_hook_type = None;

    /// With auth_ext in shared_preload_libraries: reserve the block at start-up.
    pub fn request() {
        // SAFETY: called once, from _PG_init in the postmaster.
        unsafe {
            PREVIOUS = pgrx::pg_sys::shmem_request_hook;
            pgrx::pg_sys::shmem_request_hook = Some(hook);
        }
    }

    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn hook() {
        unsafe {
            if let Some(previous) = PREVIOUS {
                previous();
            }
            pgrx::pg_sys::RequestAddinShmemSpace(super::size());
        }
    }
}

/// Called from _PG_init: reserve the block when loaded at start-up.
pub fn init() {
    // SAFETY: a flag Postgres sets while it loads shared_preload_libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        #[cfg(any(feature = "pg15", feature = "pg16", feature = "pg17", feature = "pg18"))]
        preload::request();
        // Before 15 the space is requested from _PG_init itself.
        #[cfg(any(feature = "pg13", feature = "pg14"))]
        unsafe {
            pg_sys::RequestAddinShmemSpace(size());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots() -> Box<[Slot; SLOTS]> {
        vec![
            Slot {
                db: 0,
                key: [0; 16],
                inflight: 0,
                unrecorded: 0,
                since: 0
            };
            SLOTS
        ]
        .into_boxed_slice()
        .try_into()
        .unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn unwritten_failures_are_never_taken_over_before_their_window() {
        let mut s = slots();
        for (i, slot) in s.iter_mut().enumerate() {
            slot.db = 1;
            slot.key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            slot.unrecorded = 1;
            slot.since = 1000;
        }
        // Full of unwritten failures: a new key finds no place (the guess is refused).
        assert_eq!(find_or_claim(&mut s, 1, [0xff; 16], 1010, 900), None);
        // An existing key still finds its own.
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&7u64.to_le_bytes());
        assert_eq!(find_or_claim(&mut s, 1, k, 1010, 900), Some(7));
        // Once a window has passed, its slot is free again.
        s[3].since = 0;
        assert_eq!(find_or_claim(&mut s, 1, [0xff; 16], 1010, 900), Some(3));
        // A sticky mark never frees by itself.
        s[5].since = STICKY;
        assert_eq!(find(&s, 1, s[5].key), Some(5));
        assert!(!s[5].is_free(i64::MAX, 900));
    }
}
