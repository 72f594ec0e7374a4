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
//! - The hash itself runs in a thread of low CPU priority (`auth.password_hash_priority`:
//!   `low`, nice 19, by default; `idle`, the idle scheduling class, which a waking query
//!   preempts at once but which a busy CPU starves), so queries come first.
//!
//! A place is given back once, by the thread when its work ends (even when the call that
//! asked for it was cancelled meanwhile, or the work panicked), or by the backend's exit
//! callback when the backend exits first; a crashed backend restarts the server, which
//! clears them all.

use crate::config;
use crate::error::{AuthError, AuthResult};
use crate::password::{self, Cost, Verdict};
use crate::shmem;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// A place taken for one hash: given back exactly once, by whichever comes first of the
/// hashing thread finishing and the backend exiting. Three states, so that a backend that
/// exits while its thread is giving the place back waits for that to finish instead of
/// skipping it (the process would end with the place still counted).
struct Place(AtomicU8);

const HELD: u8 = 0;
const RELEASING: u8 = 1;
const RELEASED: u8 = 2;

impl Place {
    /// From the hashing thread, when its work is done (or has panicked).
    fn give_back(&self) {
        if self
            .0
            .compare_exchange(HELD, RELEASING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            shmem::release_hash();
            self.0.store(RELEASED, Ordering::Release);
        }
    }

    /// From the backend, as it exits with the thread possibly still running.
    fn give_back_at_exit(&self) {
        for _ in 0..1000 {
            match self
                .0
                .compare_exchange(HELD, RELEASED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return shmem::release_hash(),
                Err(RELEASED) => return,
                // The thread is giving it back right now: let it finish.
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    fn is_released(&self) -> bool {
        self.0.load(Ordering::Acquire) == RELEASED
    }
}

thread_local! {
    /// Places of this backend's hashes still computing.
    static HELD_PLACES: RefCell<Vec<Arc<Place>>> = const { RefCell::new(Vec::new()) };
    static EXIT_HOOK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn at_exit(_code: i32, _arg: pgrx::pg_sys::Datum) {
    shmem::stop_waiting_for_hash();
    HELD_PLACES.with(|h| {
        for p in h.borrow_mut().drain(..) {
            p.give_back_at_exit();
        }
    });
}

/// This backend's place in the queue for a hashing place: left when dropped, also when an
/// error or a cancel unwinds through the wait.
struct Queued(u32);

impl Drop for Queued {
    fn drop(&mut self) {
        shmem::stop_waiting_for_hash();
    }
}

/// Gives the place back and wakes the backend when the hashing thread's work ends, also by
/// a panic.
struct Finish {
    place: Arc<Place>,
    latch: usize,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.place.give_back();
        shmem::wake(self.latch as *mut pg_sys::Latch);
    }
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
    if !EXIT_HOOK.with(|e| e.get()) {
        // SAFETY: registered once per backend, for its exit.
        unsafe { pgrx::pg_sys::before_shmem_exit(Some(at_exit), pgrx::pg_sys::Datum::from(0)) };
        EXIT_HOOK.with(|e| e.set(true));
    }
    HELD_PLACES.with(|h| h.borrow_mut().retain(|p| !p.is_released()));
    // Every caller queues, so a place given back goes to whoever has waited longest (a
    // newcomer never overtakes a waiter). It waits on this backend's latch, which a place
    // given back sets (so does a cancel); the latch is reset only after a failed try, so
    // a wake-up between the try and the wait is not lost; the short timeout covers a
    // wake-up that went to a waiter who had just left.
    let deadline =
        Instant::now() + Duration::from_millis(config::PASSWORD_HASH_WAIT.get().max(0) as u64);
    let queued = Queued(shmem::wait_for_hash());
    let taken = loop {
        if shmem::take_hash(max, queued.0) {
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
        // A cancel raises here; dropping `queued` on the way out leaves the queue.
        pgrx::check_for_interrupts!();
    };
    if taken {
        let place = Arc::new(Place(AtomicU8::new(HELD)));
        HELD_PLACES.with(|h| h.borrow_mut().push(place.clone()));
        drop(queued);
        Ok(place)
    } else {
        Err(AuthError::HashBusy)
    }
}

/// Lower the calling thread's CPU priority (a thread is a task of its own on Linux, with
/// its own nice value and scheduling class; lowering needs no privilege).
fn lower_priority(priority: config::HashPriority) {
    use config::HashPriority::*;
    if priority == Normal {
        return;
    }
    // SAFETY: both calls change the calling thread only (PRIO_PROCESS with its thread id;
    // sched_setscheduler with pid 0).
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
        #[cfg(target_os = "linux")]
        if priority == Idle {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
        }
    }
}

/// Run `work` (a hash or a verification) in a low-priority thread holding a place, and wait
/// for it, answering cancels meanwhile.
fn run<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> AuthResult<R> {
    let place = take_place()?;
    let mine = place.clone();
    let (tx, rx) = mpsc::channel();
    let priority = config::PASSWORD_HASH_PRIORITY.get();
    // SAFETY: the backend's latch lives as long as the backend; the thread only sets it.
    let latch = unsafe { pg_sys::MyLatch } as usize;
    let body = move || {
        lower_priority(priority);
        let finish = Finish { place: mine, latch };
        let _ = tx.send(work());
        drop(finish);
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
    HELD_PLACES.with(|h| h.borrow_mut().retain(|p| !p.is_released()));
    Ok(result)
}

/// A new argon2id PHC string of `password`.
pub fn hash(password: &str, cost: Cost) -> AuthResult<String> {
    let password = password.to_string();
    run(move || password::hash(&password, cost))?
}

/// Verify `password` against a stored hash and, when it matches but is weaker than `cost`
/// asks (bcrypt, older argon2 parameters), compute its replacement under the same place:
/// a right password never waits twice, nor fails while waiting for the upgrade.
pub fn verify_upgrading(
    password: &str,
    stored: &str,
    cost: Cost,
) -> AuthResult<(Verdict, Option<String>)> {
    let (password, stored) = (password.to_string(), stored.to_string());
    let (verdict, upgraded) = run(move || {
        let verdict = password::verify(&password, &stored, cost);
        let upgraded =
            (verdict == Verdict::MatchNeedsRehash).then(|| password::hash(&password, cost));
        (verdict, upgraded)
    })?;
    Ok((verdict, upgraded.transpose()?))
}

/// A password change: compare the new password with the stored hash (when there is one)
/// and, when they differ, hash it, under one place. `Ok(None)`: it is the same password.
/// Either both are done or, when no place comes within the wait, neither.
pub fn compare_then_hash(
    password: &str,
    stored: Option<&str>,
    cost: Cost,
) -> AuthResult<Option<String>> {
    let (password, stored) = (password.to_string(), stored.map(str::to_string));
    run(move || {
        let same =
            stored.is_some_and(|s| password::verify(&password, &s, cost) != Verdict::Mismatch);
        (!same).then(|| password::hash(&password, cost)).transpose()
    })?
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
