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
    /// Failures that could not be written to auth.sign_in_failures, counted here until
    /// their window passes.
    pub unrecorded: u32,
    /// When the first of those failures happened (Unix seconds).
    pub since: i64,
}

impl Slot {
    fn is_free(&self, now: i64, window: i64) -> bool {
        self.inflight == 0 && (self.unrecorded == 0 || now - self.since >= window)
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
    slots: [Slot; SLOTS],
}

/// Named with the layout's version: a library with another layout loaded into a running
/// server gets a block of its own instead of misreading this one.
const NAME: &CStr = c"auth_ext shared state v1";

thread_local! {
    static SHARED: std::cell::Cell<*mut Shared> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

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

/// Find the slot of (db, key), or claim a free one for it. When none is free, the oldest
/// slot that only holds unwritten failures is taken over (those are lost, which is better
/// than refusing every sign-in of the cluster); None when every slot has a guess in
/// flight.
pub fn find_or_claim(
    slots: &mut [Slot; SLOTS],
    db: u32,
    key: [u8; 16],
    now: i64,
    window: i64,
) -> Option<usize> {
    let mut free = None;
    let mut oldest: Option<usize> = None;
    for (i, s) in slots.iter().enumerate() {
        if s.db == db && s.key == key && !s.is_free(now, window) {
            return Some(i);
        }
        if free.is_none() && s.is_free(now, window) {
            free = Some(i);
        }
        if s.inflight == 0 && oldest.is_none_or(|o| s.since < slots[o].since) {
            oldest = Some(i);
        }
    }
    let i = free.or(oldest)?;
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
