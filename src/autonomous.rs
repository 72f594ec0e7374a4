//! Autonomous writes: a few writes must be committed even though the call that makes them
//! fails (a refresh-token reuse revokes the session, then raises; a failed sign-in is
//! audited, then raises), and an ERROR aborts the caller's transaction. So the write runs in
//! a dynamic background worker, in a transaction of its own, while the caller waits.
//!
//! The job is a JSON object handed over in a dynamic shared memory segment; the worker runs
//! `auth._autonomous(job)` (sql/finalize.sql) as the extension owner and reports back in the
//! same segment. The caller must hold no row lock the job needs (see refresh.rs), and the
//! worker gives up on locks after `lock_timeout` so a mistake cannot hang both.
//! No `shared_preload_libraries` is needed; each job takes a `max_worker_processes` slot for
//! a few milliseconds, and at most `auth.autonomous_workers` run at once in the cluster
//! (counted in shared memory, src/shmem.rs), so parallel query keeps the other slots. A job
//! that finds no place within about a second fails, and its caller fails closed.

use crate::error::{AuthError, AuthResult};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use serde_json::Value;
use std::time::Duration;

/// Segment layout: [status u32][length u32][job bytes].
const HEADER: usize = 8;
const STATUS_PENDING: u32 = 0;
const STATUS_DONE: u32 = 1;
/// The worker ran and will give its place back itself when it exits.
const STATUS_STARTED: u32 = 2;

/// Run `job` in its own committed transaction, as the extension owner, and wait for it.
/// An Err means the write did not happen (no worker slot, or the job failed: the server
/// log says why).
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
    unsafe {
        let seg = pg_sys::dsm_create(HEADER + payload.len(), 0);
        let base = pg_sys::dsm_segment_address(seg) as *mut u8;
        (base as *mut u32).write_unaligned(STATUS_PENDING);
        (base.add(4) as *mut u32).write_unaligned(payload.len() as u32);
        std::ptr::copy_nonoverlapping(payload.as_ptr(), base.add(HEADER), payload.len());
        let handle = pg_sys::dsm_segment_handle(seg);
        let result = launch_and_wait(handle, owner);
        let status = (base as *const u32).read_unaligned();
        pg_sys::dsm_detach(seg);
        if result.is_ok() && status == STATUS_PENDING {
            // Registered but never run (the postmaster could not start it): its place is
            // ours to give back.
            crate::shmem::release_worker();
        }
        result?;
        if status == STATUS_DONE {
            Ok(())
        } else {
            Err(AuthError::Unexpected(
                "autonomous write failed (see the server log)".into(),
            ))
        }
    }
}

fn launch_and_wait(handle: pg_sys::dsm_handle, owner: pg_sys::Oid) -> AuthResult<()> {
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
        pgrx::check_for_interrupts!();
        std::thread::sleep(Duration::from_millis(5));
    }
    if !placed {
        return Err(AuthError::Unexpected(format!(
            "all {max} autonomous-write workers are busy (auth.autonomous_workers)"
        )));
    }
    // Worker slots can be briefly exhausted under a burst: retry for about a second.
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
            Ok(w) => {
                return w
                    .wait_for_shutdown()
                    .map_err(|s| AuthError::Unexpected(format!("autonomous write worker: {s:?}")));
            }
            Err(_) if attempt < 19 => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break,
        }
    }
    crate::shmem::release_worker();
    Err(AuthError::Unexpected(
        "no background worker slot for an autonomous write (raise max_worker_processes)".into(),
    ))
}

/// The worker's entry point (looked up by name by the postmaster).
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn auth_ext_autonomous_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    // First of all: however this worker ends, its place among ours is given back.
    unsafe {
        pg_sys::before_shmem_exit(Some(give_place_back), pg_sys::Datum::from(0));
    }
    let handle = arg.value() as pg_sys::dsm_handle;
    // Attached outside any transaction (no resource owner): the mapping lives until we
    // detach, so the status can be written after the commit has succeeded.
    let seg = unsafe { pg_sys::dsm_attach(handle) };
    if seg.is_null() {
        return; // the caller gave up and detached; nothing to do
    }
    let base = unsafe { pg_sys::dsm_segment_address(seg) as *mut u8 };
    unsafe { (base as *mut u32).write_unaligned(STATUS_STARTED) };
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
        // The owner's session: a database-level search_path must not reach our statements.
        Spi::run("set local search_path = pg_catalog, pg_temp; set local lock_timeout = '5s'")
            .unwrap_or_else(|e| pgrx::error!("{e}"));
        Spi::run_with_args(
            "select auth._autonomous($1::pg_catalog.jsonb)",
            &[job.as_str().into()],
        )
        .unwrap_or_else(|e| pgrx::error!("auth_ext autonomous write: {e}"));
    });
    // Only reached when the transaction committed.
    unsafe {
        (base as *mut u32).write_unaligned(STATUS_DONE);
        pg_sys::dsm_detach(seg);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn give_place_back(_code: i32, _arg: pg_sys::Datum) {
    crate::shmem::release_worker();
}
