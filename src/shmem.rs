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
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

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
    /// The next ticket of a backend that waits for a hashing place (the waiting themselves
    /// are in a block of their own, one entry per backend: `WAITERS_NAME`).
    hash_next_ticket: AtomicU32,
    slots: [Slot; SLOTS],
}

/// Named with the layout's version: a library with another layout loaded into a running
/// server gets a block of its own instead of misreading this one.
const NAME: &CStr = c"auth_ext shared state v4";

/// Backends waiting for a hashing place: one ticket per PGPROC (0: not waiting), so every
/// backend has its entry and clears only its own; sized by the server's process count,
/// which is fixed for the life of the server.
const WAITERS_NAME: &CStr = c"auth_ext hash waiters v1";

/// The waiters' block, for every thread of the process (set once attached).
static WAITERS: AtomicPtr<AtomicU32> = AtomicPtr::new(std::ptr::null_mut());
static WAITERS_LEN: AtomicUsize = AtomicUsize::new(0);

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

/// The size to reserve for the waiters' block: the process count is not known yet when
/// libraries are preloaded, so it is estimated from the settings it derives from (what is
/// missing comes from the reserve for late allocations).
fn waiters_reserve() -> usize {
    // SAFETY: settings Postgres has read before it preloads libraries.
    let procs = unsafe {
        // Autovacuum workers, auxiliary processes, prepared transactions: a few dozen.
        pg_sys::MaxConnections + pg_sys::max_worker_processes + pg_sys::max_wal_senders + 64
    };
    procs.max(0) as usize * std::mem::size_of::<AtomicU32>()
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
        let n = (*pg_sys::ProcGlobal).allProcCount as usize;
        let mut found_waiters = false;
        let w = pg_sys::ShmemInitStruct(
            WAITERS_NAME.as_ptr(),
            n * std::mem::size_of::<AtomicU32>(),
            &mut found_waiters,
        ) as *mut AtomicU32;
        if !found_waiters {
            std::ptr::write_bytes(w as *mut u8, 0, n * std::mem::size_of::<AtomicU32>());
        }
        pg_sys::LWLockRelease(addin_lock());
        pg_sys::LWLockRegisterTranche((*p).tranche, c"auth_ext".as_ptr());
        WAITERS_LEN.store(n, Ordering::Release);
        WAITERS.store(w, Ordering::Release);
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

/// The waiters' entries (attached by [`shared`] before any hash is asked for).
fn waiters() -> &'static [AtomicU32] {
    let p = WAITERS.load(Ordering::Acquire);
    if p.is_null() {
        return &[];
    }
    // SAFETY: WAITERS_LEN entries in shared memory, valid for the life of the server, set
    // before the pointer was published.
    unsafe { std::slice::from_raw_parts(p, WAITERS_LEN.load(Ordering::Acquire)) }
}

/// Whether ticket `a` was given out before ticket `b` (tickets wrap around).
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Take one of `max` hashing places in turn: only when fewer backends with an earlier
/// ticket wait than there are free places, so a place given back goes to the longest
/// waiter, never to a newcomer. The count in `hashes` alone keeps the bound; the order
/// only decides who.
pub fn take_hash(max: u32, ticket: u32) -> bool {
    // SAFETY: atomics in shared memory, valid for the life of the server.
    let shared = unsafe { &*shared() };
    let running = shared.hashes.load(Ordering::Acquire);
    if running >= max {
        return false;
    }
    let ahead = waiters()
        .iter()
        .map(|w| w.load(Ordering::Acquire))
        .filter(|&t| t != 0 && before(t, ticket))
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

/// Give a hashing place back and wake the longest-waiting backend (callable from any
/// thread of the process: atomics, and SetLatch, which only signals).
pub fn release_hash() {
    // SAFETY: as above. The pointer was set by the backend's thread before any hash ran.
    let shared = unsafe { &*SHARED_ANY.load(Ordering::Acquire) };
    let _ = shared
        .hashes
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    wake_longest_waiter();
}

fn wake_longest_waiter() {
    let mut oldest: Option<(u32, usize)> = None;
    for (procno, w) in waiters().iter().enumerate() {
        let t = w.load(Ordering::Acquire);
        if t != 0 && oldest.is_none_or(|(o, _)| before(t, o)) {
            oldest = Some((t, procno));
        }
    }
    if let Some((_, procno)) = oldest {
        // SAFETY: a PGPROC of the server's array (entries are indexed by pgprocno); setting
        // the latch of a backend that has moved on only makes it look once more.
        let latch = unsafe {
            let proc_ = (*pg_sys::ProcGlobal).allProcs.add(procno);
            &raw mut (*proc_).procLatch
        };
        wake(latch);
    }
}

/// This backend's entry among the waiters.
fn my_waiter_entry() -> Option<&'static AtomicU32> {
    // SAFETY: MyProc is set for every backend before it runs SQL.
    let procno = unsafe { (*pg_sys::MyProc).pgprocno } as usize;
    waiters().get(procno)
}

/// Queue this backend for a hashing place: its ticket.
pub fn wait_for_hash() -> u32 {
    // SAFETY: as above.
    let shared = unsafe { &*shared() };
    let ticket = loop {
        let t = shared.hash_next_ticket.fetch_add(1, Ordering::AcqRel);
        if t != 0 {
            break t;
        }
    };
    if let Some(w) = my_waiter_entry() {
        w.store(ticket, Ordering::Release);
    }
    ticket
}

/// Leave the queue (after taking a place, giving up, an error, or at exit; doing it twice
/// is harmless) and wake the next waiter, in case a place is free for it now.
pub fn stop_waiting_for_hash() {
    if let Some(w) = my_waiter_entry() {
        if w.swap(0, Ordering::AcqRel) != 0 {
            wake_longest_waiter();
        }
    }
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
            pgrx::pg_sys::RequestAddinShmemSpace(super::size() + super::waiters_reserve());
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
            pg_sys::RequestAddinShmemSpace(size() + waiters_reserve());
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
