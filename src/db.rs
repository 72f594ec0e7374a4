//! SPI with plans kept for the life of the backend. Every statement of the extension is a
//! fixed string, so each is parsed and planned once per backend instead of once per call
//! (a refresh runs about ten of them). Postgres re-plans a kept plan by itself when a table
//! it uses changes, or when it was made under another search_path.
//!
//! Reads go through read-only `select`: pgrx's `Spi::get_*` helpers run as "mutating" and
//! force a transaction id, which fails on a hot standby and costs an XID (and commit WAL)
//! per call.

use crate::error::{AuthError, AuthResult};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, Query, SpiClient, SpiResult, SpiTupleTable};
use pgrx::PgOid;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

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
    Spi::connect(|c| {
        with_plan(c, query, args, false, |stmt| {
            f(c.select(stmt, Some(1), args)?)
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
    Spi::connect(|c| with_plan(c, query, args, true, |stmt| f(stmt.execute(c, None, args)?)))
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
