//! Autonomous writes: a few writes must be committed even though the call that makes them
//! fails (a refresh-token reuse revokes the session, then raises; a failed sign-in is
//! audited and counted, then raises), and an ERROR aborts the caller's transaction. So the
//! write runs in a dynamic background worker, in a transaction of its own, while the caller
//! waits.
//!
//! The job is a JSON object handed over in a dynamic shared memory segment; the worker runs
//! `auth._autonomous(job)` (sql/finalize.sql) as the extension owner and reports back in the
//! same segment. The caller must hold no row lock the job needs (see refresh.rs); the job
//! only inserts and updates rows no caller locks for long, and gives up on locks after
//! `lock_timeout`.
//! No `shared_preload_libraries` is needed; each job takes a `max_worker_processes` slot for
//! a few milliseconds, and at most `auth.autonomous_workers` run at once in the cluster
//! (counted in shared memory, src/shmem.rs), so parallel query keeps the other slots.
//!
//! Bounded: a place among ours within a second, a server slot within a second, the job
//! within five; the caller's interrupts are held meanwhile (a cancel must not cut a write
//! short), so a caller can never be stuck longer. An Err means the write is not known to
//! have happened, and the caller fails closed.
//!
//! Who gives a place back is settled on the segment's status word: the worker takes it over
//! by moving the status from PENDING to STARTED (and gives it back when it exits, however
//! it exits); the caller, when it stops waiting, by moving it from PENDING to ABANDONED. One
//! of the two moves wins, so a place is given back exactly once.

use crate::error::{AuthError, AuthResult};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Segment layout: [status u32][length u32][job bytes].
const HEADER: usize = 8;
const STATUS_PENDING: u32 = 0;
/// The job committed.
const STATUS_DONE: u32 = 1;
/// The worker runs, and gives its place back when it exits.
const STATUS_STARTED: u32 = 2;
/// The worker exited without committing the job.
const STATUS_FAILED: u32 = 3;
/// The caller stopped waiting before the worker started, and gave the place back.
const STATUS_ABANDONED: u32 = 4;

/// How long the caller waits for the job once the worker is registered.
const JOB_WAIT: Duration = Duration::from_secs(5);

fn status(base: *mut u8) -> &'static AtomicU32 {
    // SAFETY: the first four bytes of a live segment, aligned (segments are page aligned).
    unsafe { &*(base as *const AtomicU32) }
}

/// Run `job` in its own committed transaction, as the extension owner, and wait for it.
pub fn run(job: &Value) -> AuthResult<()> {
    // On a hot standby nothing can be written, and a worker that starts only after
    // recovery would be waited for until promotion: refuse at once instead.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Err(AuthError::Unexpected(
            "autonomous write skipped: the server is a read-only standby".into(),
        ));
    }
    let owner = crate::keys::extension_owner()?;
    let payload = job.to_string();
    // SAFETY: HOLD_INTERRUPTS/RESUME_INTERRUPTS around a bounded wait; an error in between
    // aborts the transaction, which resets the count.
    unsafe { pg_sys::InterruptHoldoffCount += 1 };
    let result = unsafe {
        let seg = pg_sys::dsm_create(HEADER + payload.len(), 0);
        let base = pg_sys::dsm_segment_address(seg) as *mut u8;
        status(base).store(STATUS_PENDING, Ordering::Release);
        (base.add(4) as *mut u32).write_unaligned(payload.len() as u32);
        std::ptr::copy_nonoverlapping(payload.as_ptr(), base.add(HEADER), payload.len());
        let handle = pg_sys::dsm_segment_handle(seg);
        let result = launch_and_wait(handle, owner, base);
        pg_sys::dsm_detach(seg);
        result
    };
    unsafe { pg_sys::InterruptHoldoffCount -= 1 };
    result
}

fn launch_and_wait(
    handle: pg_sys::dsm_handle,
    owner: pg_sys::Oid,
    base: *mut u8,
) -> AuthResult<()> {
    let extra = format!(
        "{} {}",
        unsafe { pg_sys::MyDatabaseId }.to_u32(),
        owner.to_u32()
    );
    // A place among ours first (about a second at most), then a slot of the server's.
    let max = crate::config::AUTONOMOUS_WORKERS.get().max(1) as u32;
    let mut placed = false;
    for _ in 0..200 {
        if crate::shmem::take_worker(max) {
            placed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if !placed {
        return Err(AuthError::Unexpected(format!(
            "all {max} autonomous-write workers are busy (auth.autonomous_workers)"
        )));
    }
    // Worker slots can be briefly exhausted under a burst: retry for about a second.
    let mut registered = false;
    for attempt in 0..20 {
        let worker = BackgroundWorkerBuilder::new("auth_ext autonomous write")
            .set_type("auth_ext")
            .set_library("auth_ext")
            .set_function("auth_ext_autonomous_main")
            .set_argument(Some(pg_sys::Datum::from(handle)))
            .set_extra(&extra)
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(None)
            .set_notify_pid(unsafe { pg_sys::MyProcPid })
            .load_dynamic();
        match worker {
            Ok(_) => {
                registered = true;
                break;
            }
            Err(_) if attempt < 19 => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break,
        }
    }
    if registered {
        let deadline = Instant::now() + JOB_WAIT;
        loop {
            match status(base).load(Ordering::Acquire) {
                STATUS_DONE => return Ok(()),
                STATUS_FAILED => {
                    return Err(AuthError::Unexpected(
                        "autonomous write failed (see the server log)".into(),
                    ))
                }
                _ if Instant::now() >= deadline => break,
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
    // Stop waiting. A worker that has not started never will (its segment goes with us):
    // its place is ours to give back; a started one gives its own back.
    if status(base)
        .compare_exchange(
            STATUS_PENDING,
            STATUS_ABANDONED,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
    {
        crate::shmem::release_worker();
    }
    Err(AuthError::Unexpected(if registered {
        "an autonomous write did not finish in time".into()
    } else {
        "no background worker slot for an autonomous write (raise max_worker_processes)".into()
    }))
}

thread_local! {
    /// The worker's segment, for its exit callback.
    static SEGMENT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The worker's entry point (looked up by name by the postmaster).
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn auth_ext_autonomous_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    let handle = arg.value() as pg_sys::dsm_handle;
    // Attached outside any transaction (no resource owner): the mapping lives until we
    // detach, so the status can be written after the commit has succeeded.
    let seg = unsafe { pg_sys::dsm_attach(handle) };
    if seg.is_null() {
        return; // the caller gave up and detached; it gave the place back
    }
    let base = unsafe { pg_sys::dsm_segment_address(seg) as *mut u8 };
    if status(base)
        .compare_exchange(
            STATUS_PENDING,
            STATUS_STARTED,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        return; // abandoned: the caller gave the place back
    }
    SEGMENT.with(|s| s.set(base as usize));
    // From here the place is ours: given back however this worker ends.
    unsafe {
        pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(0));
    }
    let mut ids = BackgroundWorker::get_extra()
        .split(' ')
        .map(|s| s.parse::<u32>().unwrap_or(0)); // ok: written by run() above
    let db = pg_sys::Oid::from(ids.next().unwrap_or(0));
    let user = pg_sys::Oid::from(ids.next().unwrap_or(0));
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), Some(user));
    let job = unsafe {
        let len = (base.add(4) as *const u32).read_unaligned() as usize;
        String::from_utf8_lossy(std::slice::from_raw_parts(base.add(HEADER), len)).into_owned()
    };
    BackgroundWorker::transaction(move || {
        // The owner's session: a database-level search_path must not reach our statements;
        // a synchronous standby that is down must not hold the caller (it waits for us).
        Spi::run(
            "set local search_path = pg_catalog, pg_temp; set local lock_timeout = '5s'; \
             set local statement_timeout = '5s'; set local synchronous_commit = local",
        )
        .unwrap_or_else(|e| pgrx::error!("{e}"));
        Spi::run_with_args(
            "select auth._autonomous($1::pg_catalog.jsonb)",
            &[job.as_str().into()],
        )
        .unwrap_or_else(|e| pgrx::error!("auth_ext autonomous write: {e}"));
    });
    // Only reached when the transaction committed.
    status(base).store(STATUS_DONE, Ordering::Release);
}

#[pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: i32, _arg: pg_sys::Datum) {
    let base = SEGMENT.with(|s| s.get()) as *mut u8;
    if !base.is_null() {
        let _ = status(base).compare_exchange(
            STATUS_STARTED,
            STATUS_FAILED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
    crate::shmem::release_worker();
}
