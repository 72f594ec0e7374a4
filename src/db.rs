//! SPI with plans kept for the life of the backend. Every statement of the extension is a
//! fixed string, so each is parsed and planned once per backend instead of once per call
//! (a refresh runs about ten of them). Postgres re-plans a kept plan by itself when a table
//! it uses changes, or when it was made under another search_path.
//!
//! Reads go through read-only `select`: pgrx's `Spi::get_*` helpers run as "mutating" and
//! force a transaction id, which fails on a hot standby and costs an XID (and commit WAL)
//! per call.
//!
//! Every statement runs with `search_path` pinned to `pg_catalog, pg_temp` (see [`pinned`]),
//! whoever calls and whatever path they set: much of our SQL runs with the extension
//! owner's rights, and an unpinned path would let a caller's temporary type, or a function
//! or operator in a schema the caller puts first, run inside it with those rights. Names
//! are qualified as well; the pin is what makes a missed qualification harmless.

use crate::error::{AuthError, AuthResult};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, Query, SpiClient, SpiResult, SpiTupleTable};
use pgrx::PgOid;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;

/// The only search_path our statements run under: the catalog first, the session's
/// temporary schema last (listed, so that its types come after the catalog's; functions
/// and operators are never looked up there).
const PINNED_PATH: &CStr = c"pg_catalog, pg_temp";

/// Is the current search_path already exactly the pinned one (as inside our SECURITY
/// DEFINER functions, whose SET clause gives this very string)?
fn path_is_pinned() -> bool {
    // SAFETY: GetConfigOption returns NULL or a NUL-terminated string owned by the GUC
    // machinery, valid until the setting changes; it is only compared here.
    unsafe {
        let p = pg_sys::GetConfigOption(c"search_path".as_ptr(), true, false);
        !p.is_null() && CStr::from_ptr(p) == PINNED_PATH
    }
}

/// Run `f` with `search_path` set to `pg_catalog, pg_temp`, the way a function's
/// `SET search_path` clause does it: a new GUC nesting level, popped afterwards. An error
/// inside `f` aborts the (sub)transaction, and the abort pops the level and restores the
/// caller's path by itself.
pub fn pinned<R>(f: impl FnOnce() -> R) -> R {
    if path_is_pinned() {
        return f();
    }
    // SAFETY: the same calls fmgr_security_definer makes around a function with a SET
    // clause; search_path may be set in any context, including security-restricted ones.
    let level = unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            PINNED_PATH.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        level
    };
    let r = f();
    unsafe { pg_sys::AtEOXact_GUC(true, level) };
    r
}

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

/// Make sure a kept plan for `query` exists, then hand it to `f`.
fn with_plan<R>(
    client: &SpiClient<'_>,
    query: &'static str,
    args: &[DatumWithOid],
    mutating: bool,
    f: impl FnOnce(&OwnedPreparedStatement) -> SpiResult<R>,
) -> SpiResult<R> {
    PLANS.with(|plans| {
        if !plans.borrow().contains_key(query) {
            let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
            let stmt = if mutating {
                client.prepare_mut(query, &types)?
            } else {
                client.prepare(query, &types)?
            };
            plans.borrow_mut().insert(query, Rc::new(stmt.keep()));
        }
        // The map is not borrowed while the statement runs: it may call a function of
        // ours that runs statements of its own.
        let stmt = plans.borrow().get(query).cloned();
        match stmt {
            Some(stmt) => f(&stmt),
            None => Err(pgrx::spi::Error::NoTupleTable), // ok: inserted just above
        }
    })
}

fn read_with<R>(
    query: &'static str,
    args: &[DatumWithOid],
    f: impl FnOnce(SpiTupleTable<'_>) -> SpiResult<R>,
) -> SpiResult<R> {
    pinned(|| {
        Spi::connect(|c| {
            with_plan(c, query, args, false, |stmt| {
                f(c.select(stmt, Some(1), args)?)
            })
        })
    })
}

fn write_with<R>(
    query: &'static str,
    args: &[DatumWithOid],
    f: impl FnOnce(SpiTupleTable<'_>) -> SpiResult<R>,
) -> SpiResult<R> {
    // A plan made with prepare_mut executes read-write; the statement itself assigns the
    // transaction id it needs.
    pinned(|| {
        Spi::connect(|c| with_plan(c, query, args, true, |stmt| f(stmt.execute(c, None, args)?)))
    })
}

/// The first row's first column of a statement built at run time (a hook call), run with
/// the pinned search_path and no kept plan. The statement may write: hooks may.
pub fn read_dynamic_one<A: FromDatum + IntoDatum>(
    query: &str,
    args: &[DatumWithOid],
) -> AuthResult<Option<A>> {
    first_row(pinned(|| {
        Spi::connect_mut(|c| c.update(query, Some(1), args)?.first().get_one::<A>())
    }))
}

thread_local! {
    /// Plans of the statements read through a fresh snapshot (raw SPI: pgrx's statements
    /// always use the active snapshot).
    static RAW_PLANS: RefCell<HashMap<&'static str, usize>> = RefCell::new(HashMap::new());
}

/// Run a read-only query through a snapshot taken now (GetLatestSnapshot), not the
/// statement's or the transaction's: what other sessions have committed up to this
/// instant, even inside a repeatable-read transaction (the way Postgres' own foreign-key
/// checks read). Every row (up to `max_rows`, 0 for all) is read by `row` before the
/// connection ends.
fn read_latest<R>(
    query: &'static str,
    args: &[DatumWithOid],
    max_rows: i64,
    mut row: impl FnMut(pg_sys::HeapTuple, pg_sys::TupleDesc) -> R,
) -> AuthResult<Vec<R>> {
    let fail = |what: &str| AuthError::Unexpected(format!("internal query failed: {what}"));
    pinned(|| {
        Spi::connect(|_c| {
            // SAFETY: raw SPI inside Spi::connect: the plan is prepared under the pinned
            // path and kept; the arguments are the caller's datums with their types; the
            // rows are read before the connection ends. Errors raise as Postgres ERRORs.
            unsafe {
                let plan = match RAW_PLANS.with(|p| p.borrow().get(query).copied()) {
                    Some(plan) => plan as pg_sys::SPIPlanPtr,
                    None => {
                        let mut types: Vec<pg_sys::Oid> = args.iter().map(|a| a.oid()).collect();
                        let text = std::ffi::CString::new(query).map_err(|_| fail("query"))?;
                        let plan = pg_sys::SPI_prepare(
                            text.as_ptr(),
                            types.len() as i32,
                            types.as_mut_ptr(),
                        );
                        if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
                            return Err(fail("prepare"));
                        }
                        RAW_PLANS.with(|p| p.borrow_mut().insert(query, plan as usize));
                        plan
                    }
                };
                let mut values: Vec<pg_sys::Datum> = args
                    .iter()
                    .map(|a| {
                        a.datum()
                            .map_or(pg_sys::Datum::from(0), |d| d.sans_lifetime())
                    })
                    .collect();
                let nulls: Vec<std::ffi::c_char> = args
                    .iter()
                    .map(|a| if a.datum().is_some() { b' ' } else { b'n' } as std::ffi::c_char)
                    .collect();
                let rc = pg_sys::SPI_execute_snapshot(
                    plan,
                    values.as_mut_ptr(),
                    nulls.as_ptr(),
                    pg_sys::GetLatestSnapshot(),
                    std::ptr::null_mut(),
                    true,
                    false,
                    max_rows,
                );
                if rc != pg_sys::SPI_OK_SELECT as i32 {
                    return Err(fail("execute"));
                }
                let table = pg_sys::SPI_tuptable;
                if table.is_null() {
                    return Ok(Vec::new());
                }
                let n = pg_sys::SPI_processed as usize;
                Ok((0..n)
                    .map(|i| row(*(*table).vals.add(i), (*table).tupdesc))
                    .collect())
            }
        })
    })
}

/// The first row of a read-only query whose columns are all int4, read through a snapshot
/// taken now (see [`read_latest`]). None for NULL columns; all None when there is no row.
pub fn read_latest_ints(
    query: &'static str,
    args: &[DatumWithOid],
    columns: usize,
) -> AuthResult<Vec<Option<i32>>> {
    let rows = read_latest(query, args, 1, |tuple, desc| {
        (1..=columns as i32)
            .map(|col| {
                let mut isnull = false;
                // SAFETY: a row of the result being read, a column within its width.
                unsafe {
                    let d = pg_sys::SPI_getbinval(tuple, desc, col, &mut isnull);
                    i32::from_datum(d, isnull)
                }
            })
            .collect::<Vec<_>>()
    })?;
    Ok(rows
        .into_iter()
        .next()
        .unwrap_or_else(|| vec![None; columns]))
}

/// Every column of every row of a read-only query, as text, read through a snapshot taken
/// now (see [`read_latest`]): the key tables, whose cache must never be older than an
/// invalidation this backend has already seen.
pub fn read_latest_text(query: &'static str) -> AuthResult<Vec<Vec<Option<String>>>> {
    read_latest(query, &[], 0, |tuple, desc| {
        // SAFETY: as above; the text is copied out before the connection ends.
        unsafe {
            (1..=(*desc).natts)
                .map(|col| {
                    let mut isnull = false;
                    let d = pg_sys::SPI_getbinval(tuple, desc, col, &mut isnull);
                    String::from_datum(d, isnull)
                })
                .collect()
        }
    })
}

fn first_row<T: Default>(r: SpiResult<T>) -> AuthResult<T> {
    match r {
        Ok(v) => Ok(v),
        // No row at all reads as None.
        Err(pgrx::spi::Error::InvalidPosition) => Ok(T::default()),
        Err(e) => Err(AuthError::from(e)),
    }
}

/// A read-only query's first row, first column; None when there is no row.
pub fn read_one<A: FromDatum + IntoDatum>(
    query: &'static str,
    args: &[DatumWithOid],
) -> AuthResult<Option<A>> {
    first_row(read_with(query, args, |t| t.first().get_one::<A>()))
}

pub fn read_two<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum>(
    query: &'static str,
    args: &[DatumWithOid],
) -> AuthResult<(Option<A>, Option<B>)> {
    first_row(read_with(query, args, |t| t.first().get_two::<A, B>()))
}

/// A read-only query's first row, read by `f` (for rows of more than three columns).
pub fn read_row<R: Default>(
    query: &'static str,
    args: &[DatumWithOid],
    f: impl FnOnce(SpiTupleTable<'_>) -> SpiResult<R>,
) -> AuthResult<R> {
    first_row(read_with(query, args, f))
}

/// A writing statement's first returned row, read by `f` (`select ... for update`).
pub fn write_row<R: Default>(
    query: &'static str,
    args: &[DatumWithOid],
    f: impl FnOnce(SpiTupleTable<'_>) -> SpiResult<R>,
) -> AuthResult<R> {
    first_row(write_with(query, args, f))
}

/// A writing statement's first returned row, first column (`insert ... returning`).
pub fn write_one<A: FromDatum + IntoDatum>(
    query: &'static str,
    args: &[DatumWithOid],
) -> AuthResult<Option<A>> {
    first_row(write_with(query, args, |t| t.first().get_one::<A>()))
}

/// A writing statement's first returned row, first two columns.
pub fn write_two<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum>(
    query: &'static str,
    args: &[DatumWithOid],
) -> AuthResult<(Option<A>, Option<B>)> {
    first_row(write_with(query, args, |t| t.first().get_two::<A, B>()))
}

/// A writing statement, its result ignored.
pub fn exec(query: &'static str, args: &[DatumWithOid]) -> AuthResult<()> {
    write_with(query, args, |_| Ok(())).map_err(AuthError::from)
}

/// A writing statement that returns one JSON value as text (a SQL function of ours),
/// parsed with our own error rather than pgrx's.
pub fn write_json(query: &'static str, args: &[DatumWithOid]) -> AuthResult<serde_json::Value> {
    let text = write_one::<String>(query, args)?
        .ok_or_else(|| AuthError::Unexpected(format!("no result from: {query}")))?;
    serde_json::from_str(&text).map_err(|e| AuthError::Unexpected(format!("bad JSON result: {e}")))
}
