//! Password hashing under load. argon2id runs inside the database's backends, about 20 ms of
//! one core per check, so a flood of sign-ins would take every core from every other query
//! of the cluster. Two things bound it:
//!
//! - At most `auth.password_hash_concurrency` hashes run at once in the cluster (counted in
//!   shared memory, src/shmem.rs; no `shared_preload_libraries` needed). A call beyond the
//!   bound waits its turn, holding none of our locks, for up to `auth.password_hash_wait`,
//!   then fails with `over_request_rate_limit` (53000), having written nothing. Every path
//!   waits alike, the dummy hash of an unknown address too, so waiting says nothing about
//!   an account.
//! - The hash itself runs in a thread of the lowest CPU priority (`auth.password_hash_nice`,
//!   19, and on Linux the idle scheduling class), which a query preempts as soon as it
//!   wakes: hashing takes what CPU the rest of the cluster leaves.
//!
//! A place is held for exactly as long as a hash computes: the thread gives it back when it
//! is done, even when the call that asked for it was cancelled meanwhile; a backend that
//! exits gives back the places of hashes still running in it (a crashed one restarts the
//! server, which clears them all).

use crate::config;
use crate::error::{AuthError, AuthResult};
use crate::password::{self, Cost, Verdict};
use crate::shmem;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// A place taken for one hash: given back exactly once, by whichever comes first of the
/// hashing thread finishing and the backend exiting.
struct Place(AtomicBool);

impl Place {
    fn give_back(&self) {
        if !self.0.swap(true, Ordering::AcqRel) {
            shmem::release_hash();
        }
    }
}

thread_local! {
    /// Places of this backend's hashes still computing.
    static HELD: RefCell<Vec<Arc<Place>>> = const { RefCell::new(Vec::new()) };
    static EXIT_HOOK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn give_back_at_exit(_code: i32, _arg: pgrx::pg_sys::Datum) {
    HELD.with(|h| {
        for p in h.borrow_mut().drain(..) {
            p.give_back();
        }
    });
}

/// The bound in force: `auth.password_hash_concurrency`, one per CPU core for 0, none for
/// -1 (then there is always a place: the hashes are still counted, for
/// auth.password_hash_activity()).
fn bound() -> u32 {
    match config::PASSWORD_HASH_CONCURRENCY.get() {
        n if n < 0 => u32::MAX,
        0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        n => n as u32,
    }
}

/// Wait for a place, up to `auth.password_hash_wait`.
fn take_place() -> AuthResult<Arc<Place>> {
    let max = bound();
    if !EXIT_HOOK.with(|e| e.replace(true)) {
        // SAFETY: registered once per backend, for its exit.
        unsafe {
            pgrx::pg_sys::before_shmem_exit(Some(give_back_at_exit), pgrx::pg_sys::Datum::from(0))
        };
    }
    // Every caller queues, so a place given back goes to whoever has waited longest (a
    // newcomer never overtakes a waiter); waiting on this backend's latch, which a place
    // given back sets (so does a cancel); the timeout covers a wake-up that came between
    // the try and the wait.
    let deadline =
        Instant::now() + Duration::from_millis(config::PASSWORD_HASH_WAIT.get().max(0) as u64);
    let mut slot = shmem::wait_for_hash();
    let taken = loop {
        if shmem::take_hash(max, slot) {
            break true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        // SAFETY: the backend's own latch, waited on and reset in its own thread.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                left.as_millis().clamp(1, 20) as std::ffi::c_long,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        // SAFETY: a flag the signal handlers set.
        if unsafe { pg_sys::InterruptPending } != 0 {
            // Out of the queue before a cancel raises; back in (at its end) when the
            // interrupt was not one that ends the call.
            if let Some(s) = slot.take() {
                shmem::stop_waiting_for_hash(s);
            }
            pgrx::check_for_interrupts!();
            slot = shmem::wait_for_hash();
        }
    };
    if let Some(s) = slot {
        shmem::stop_waiting_for_hash(s);
    }
    if taken {
        Ok(hold_place())
    } else {
        Err(AuthError::HashBusy)
    }
}

fn hold_place() -> Arc<Place> {
    let place = Arc::new(Place(AtomicBool::new(false)));
    HELD.with(|h| h.borrow_mut().push(place.clone()));
    place
}

/// Run `work` (a hash or a verification) in a low-priority thread holding a place, and wait
/// for it, answering cancels meanwhile.
fn run<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> AuthResult<R> {
    let place = take_place()?;
    let (tx, rx) = mpsc::channel();
    let mine = place.clone();
    let nice = config::PASSWORD_HASH_NICE.get().clamp(0, 19);
    // SAFETY: the backend's latch lives as long as the backend; the thread only sets it.
    let latch = unsafe { pg_sys::MyLatch } as usize;
    let body = move || {
        // SAFETY: per-thread on Linux (a thread is a task with its own nice value); it only
        // ever lowers this thread's priority.
        if nice > 0 {
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice);
            }
        }
        // At the lowest priority, the idle scheduling class too: a query that wakes up on
        // a core that hashes preempts the hash at once, where a thread of nice 19 may still
        // run until the next scheduler tick (4 ms at 250 Hz). Lowering needs no privilege.
        #[cfg(target_os = "linux")]
        if nice == 19 {
            // SAFETY: with pid 0, sched_setscheduler changes the calling thread only.
            unsafe {
                let param = libc::sched_param { sched_priority: 0 };
                libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
            }
        }
        let r = work();
        mine.give_back();
        let _ = tx.send(r);
        shmem::wake(latch as *mut pg_sys::Latch);
    };
    // Signals belong to the backend's own thread: the new one starts with all of them
    // blocked (a signal handler of Postgres must never run on it).
    let spawned = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let spawned = std::thread::Builder::new()
            .name("auth_ext hash".into())
            .stack_size(256 * 1024)
            .spawn(body);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        spawned
    };
    if let Err(e) = spawned {
        place.give_back();
        return Err(AuthError::Unexpected(format!(
            "could not start a hashing thread: {e}"
        )));
    }
    // The thread sets the latch when it is done; so does a cancel.
    let result = loop {
        // SAFETY: the backend's own latch, reset and waited on in its own thread.
        unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
        match rx.try_recv() {
            Ok(r) => break r,
            Err(mpsc::TryRecvError::Disconnected) => {
                return Err(AuthError::Unexpected("the hashing thread failed".into()))
            }
            Err(mpsc::TryRecvError::Empty) => unsafe {
                pg_sys::WaitLatch(
                    pg_sys::MyLatch,
                    (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH)
                        as i32,
                    100,
                    pg_sys::PG_WAIT_EXTENSION,
                );
            },
        }
        pgrx::check_for_interrupts!();
    };
    HELD.with(|h| h.borrow_mut().retain(|p| !p.0.load(Ordering::Acquire)));
    Ok(result)
}

/// A new argon2id PHC string of `password`.
pub fn hash(password: &str, cost: Cost) -> AuthResult<String> {
    let password = password.to_string();
    run(move || password::hash(&password, cost))?
}

/// Verify `password` against a stored hash.
pub fn verify(password: &str, stored: &str, cost: Cost) -> AuthResult<Verdict> {
    let (password, stored) = (password.to_string(), stored.to_string());
    run(move || password::verify(&password, &stored, cost))
}

/// The work of a verification against no stored hash (an unknown address), waiting for a
/// place like any other.
pub fn burn(password: &str, cost: Cost) -> AuthResult<()> {
    let password = password.to_string();
    run(move || password::burn_verification(&password, cost))
}

/// auth.password_hash_activity(): password hashes computing right now in the cluster, and
/// the bound (null: none). For monitoring; service_role and the owner.
#[pgrx::pg_extern(volatile)]
fn password_hash_activity() -> pgrx::JsonB {
    pgrx::JsonB(serde_json::json!({
        "running": shmem::hashes_running(),
        "bound": match bound() {
            u32::MAX => serde_json::Value::Null,
            n => serde_json::Value::from(n),
        },
    }))
}
