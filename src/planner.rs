//! The planner support function of the claim helpers. A direct `auth.uid()` in a policy
//! or WHERE clause would be called once per row; Supabase's advice is to write
//! `(select auth.uid())` instead, which the planner runs once per execution as an InitPlan.
//! This support function makes that rewrite itself: during expression simplification it
//! replaces the call by an uncorrelated scalar sub-select of the same call.
//!
//! Never a constant: a plan can be cached (prepared statements, PL/pgSQL, PostgREST's
//! prepared queries) and re-executed under other claims; an InitPlan is evaluated again at
//! every execution, so each execution sees its own claims, exactly as the hand-written form.
//!
//! It leaves the call alone where a rewrite could not help or is not safe: no planner
//! context (constraint and default expression planning pass none), or a query that reads
//! no relation (`select auth.uid()` itself, PL/pgSQL simple expressions, and the inner
//! sub-select this rewrite creates, which also ends the recursion).

use pgrx::pg_sys;
use pgrx::prelude::*;

/// SQL: the SUPPORT function of auth.uid(), auth.role(), auth.email() and auth.jwt().
#[pg_extern(immutable, parallel_safe)]
fn _claims_support(request: pgrx::Internal) -> pgrx::Internal {
    let replacement = request
        .unwrap() // ok: Internal::unwrap returns the Option<Datum>, it cannot panic
        .map(|d| unsafe { simplify(d.cast_mut_ptr::<pg_sys::Node>()) })
        .unwrap_or(std::ptr::null_mut());
    // A NULL pointer (not an SQL NULL) means "no simplification".
    pgrx::Internal::from(Some(pg_sys::Datum::from(replacement)))
}

/// Whether the query has a range-table entry other than the dummy RTE_RESULT the planner
/// gives a query without FROM (so `select auth.uid()`, and the sub-select made below, do not).
///
/// # Safety
/// `parse` is a valid Query.
unsafe fn reads_a_relation(parse: *mut pg_sys::Query) -> bool {
    let rtable = pgrx::PgList::<pg_sys::RangeTblEntry>::from_pg((*parse).rtable);
    let found = rtable
        .iter_ptr()
        .any(|rte| !rte.is_null() && (*rte).rtekind != pg_sys::RTEKind::RTE_RESULT);
    found
}

/// # Safety
/// `node` is the request node the planner passes to a support function.
unsafe fn simplify(node: *mut pg_sys::Node) -> *mut pg_sys::Node {
    if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_SupportRequestSimplify {
        return std::ptr::null_mut();
    }
    let req = node as *mut pg_sys::SupportRequestSimplify;
    let root = (*req).root;
    let fcall = (*req).fcall;
    if root.is_null() || fcall.is_null() || (*root).parse.is_null() {
        return std::ptr::null_mut();
    }
    let parse = (*root).parse;
    if !reads_a_relation(parse) || !(*fcall).args.is_null() {
        return std::ptr::null_mut();
    }

    // select <the same call>
    let target = pg_sys::makeTargetEntry(
        pg_sys::copyObjectImpl(fcall.cast()).cast(),
        1,
        c"auth".as_ptr().cast_mut(),
        false,
    );
    let query = pg_sys::palloc0(std::mem::size_of::<pg_sys::Query>()).cast::<pg_sys::Query>();
    (*query).type_ = pg_sys::NodeTag::T_Query;
    (*query).commandType = pg_sys::CmdType::CMD_SELECT;
    (*query).querySource = pg_sys::QuerySource::QSRC_ORIGINAL;
    (*query).canSetTag = true;
    (*query).jointree = pg_sys::makeFromExpr(std::ptr::null_mut(), std::ptr::null_mut());
    (*query).targetList = pg_sys::lappend(std::ptr::null_mut(), target.cast());
    (*query).stmt_location = -1;

    let sublink = pg_sys::palloc0(std::mem::size_of::<pg_sys::SubLink>()).cast::<pg_sys::SubLink>();
    (*sublink).xpr.type_ = pg_sys::NodeTag::T_SubLink;
    (*sublink).subLinkType = pg_sys::SubLinkType::EXPR_SUBLINK;
    (*sublink).subselect = query.cast();
    (*sublink).location = -1;

    // The planner turns SubLinks into SubPlans only for queries flagged as having them.
    (*parse).hasSubLinks = true;
    sublink.cast()
}
