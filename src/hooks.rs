//! Hooks: SQL functions a deployment names in a setting (auth.hook_custom_access_token,
//! auth.hook_send_email). auth._call_hook (sql/flows.sql) calls one with its errors caught
//! and a time limit armed here; the custom access token hook's answer is validated here
//! before any token is signed with it.

use crate::config;
use crate::db;
use crate::error::{AuthError, AuthResult, OrRaise};
use pgrx::prelude::*;
use serde_json::{json, Map, Value};
use std::ffi::c_int;

// Postgres's timeout API (utils/timeout.h), not in pgrx's bindings. STATEMENT_TIMEOUT is
// the fourth TimeoutId in every supported major (after STARTUP_PACKET, DEADLOCK, LOCK).
const STATEMENT_TIMEOUT: c_int = 3;

// They raise no error in normal operation (only on a corrupt timeout table), so no guard.
unsafe extern "C-unwind" {
    fn enable_timeout_after(id: c_int, delay_ms: c_int);
    fn enable_timeout_at(id: c_int, fin_time: pg_sys::TimestampTz);
    fn disable_timeout(id: c_int, keep_indicator: bool);
    fn get_timeout_active(id: c_int) -> bool;
    fn get_timeout_finish_time(id: c_int) -> pg_sys::TimestampTz;
}

/// SQL: arm the statement timeout to fire within `ms` (a sooner one already armed is
/// kept); returns what _hook_timer_restore needs to put back the caller's (0: none).
#[pg_extern(volatile)]
fn _hook_timer(ms: i32) -> i64 {
    unsafe {
        let previous = if get_timeout_active(STATEMENT_TIMEOUT) {
            get_timeout_finish_time(STATEMENT_TIMEOUT)
        } else {
            0
        };
        let ours = pg_sys::GetCurrentTimestamp() + i64::from(ms) * 1000;
        if previous == 0 || ours < previous {
            enable_timeout_after(STATEMENT_TIMEOUT, ms.max(1));
        }
        previous
    }
}

/// SQL: disarm the hook's time limit, restoring the caller's statement timeout if any.
#[pg_extern(volatile)]
fn _hook_timer_restore(previous: i64) {
    unsafe {
        if previous == 0 {
            disable_timeout(STATEMENT_TIMEOUT, false);
        } else {
            enable_timeout_at(STATEMENT_TIMEOUT, previous);
        }
    }
}

/// The role hooks run as: Supabase's name for it, so that the grants of Supabase's hook
/// documentation (`grant execute on function ... to supabase_auth_admin`, a policy for it on
/// the tables a hook reads) work unchanged. Unlike Supabase's, it owns nothing here.
const HOOK_ROLE: &str = "supabase_auth_admin";

/// SQL (behind auth._call_hook): call the hook function `hook` with `event`, as the hook
/// role, never with the extension owner's rights (a hook is code its owner chose; run as
/// the owner, an unprivileged role that owns a hook function would become superuser when it
/// fires). The role is vetted first (auth._role_refusal: no superuser, no owner membership,
/// no access to the auth tables and keys). Returns the hook's answer as jsonb text.
#[pg_extern(volatile)]
fn _run_hook(hook: pg_sys::Oid, event: &str) -> Option<String> {
    run_hook(hook, event).or_raise()
}

fn run_hook(hook: pg_sys::Oid, event: &str) -> AuthResult<Option<String>> {
    let role = db::read_one::<pg_sys::Oid>(
        "select r.oid from pg_catalog.pg_roles r where r.rolname = $1",
        &[HOOK_ROLE.into()],
    )?
    .ok_or_else(|| {
        AuthError::InsufficientPrivilege(format!(
            "hooks run as the role {HOOK_ROLE}, which does not exist (create role {HOOK_ROLE} nologin noinherit)"
        ))
    })?;
    if let Some(why) = db::read_one::<String>("select auth._role_refusal($1)", &[HOOK_ROLE.into()])?
    {
        return Err(AuthError::InsufficientPrivilege(format!(
            "hooks run as the role {HOOK_ROLE}, which {why}; a hook must not run with such rights"
        )));
    }
    // The function by its qualified, quoted name: the call below is planned under the
    // pinned search_path, where a caller's objects cannot stand in for it.
    let name = db::read_one::<String>(
        "select pg_catalog.format('%I.%I', n.nspname, p.proname) \
           from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace \
          where p.oid = $1",
        &[hook.into()],
    )?
    .ok_or_else(|| AuthError::Hook(format!("the hook function {} vanished", hook.to_u32())))?;
    // The hook runs in the caller's session: the caller's temporary tables, views and types
    // would be found before the hook's own unqualified names (a temporary table standing in
    // for a hook's roles table injects claims into the tokens we sign). A session that has
    // any runs no hook.
    if db::read_one::<bool>(
        "select pg_catalog.pg_my_temp_schema() operator(pg_catalog.<>) 0 \
            and (exists (select from pg_catalog.pg_class c \
                          where c.relnamespace operator(pg_catalog.=) pg_catalog.pg_my_temp_schema()) \
                 or exists (select from pg_catalog.pg_type t \
                             where t.typnamespace operator(pg_catalog.=) pg_catalog.pg_my_temp_schema()))",
        &[],
    )? == Some(true)
    {
        return Err(AuthError::InsufficientPrivilege(
            "a hook cannot run in a session that has temporary tables or types: they would stand in for the hook's own names".into(),
        ));
    }
    let call = format!("select pg_catalog.to_jsonb({name}($1::pg_catalog.jsonb))::pg_catalog.text");
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_ctx: i32 = 0;
    // SAFETY: the switch a SECURITY DEFINER function makes, as a security-restricted
    // operation (no SET ROLE, no temporary objects, no session state left behind), inside
    // a GUC nesting level of its own that is thrown away afterwards: whatever the hook sets
    // (a search_path, claims) never reaches the code that runs after it. An error in the
    // hook aborts the caller's subtransaction (auth._call_hook runs it in one), which
    // restores the user and the settings by itself.
    let level = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_ctx);
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::SetUserIdAndSecContext(
            role,
            saved_ctx
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
        level
    };
    let answer = db::read_dynamic_one::<String>(&call, &[event.into()]);
    unsafe {
        pg_sys::AtEOXact_GUC(false, level);
        pg_sys::SetUserIdAndSecContext(saved_user, saved_ctx);
    }
    answer
}

/// Claims every access token keeps, with the JSON type each must have.
const REQUIRED: [(&str, &str); 10] = [
    ("aud", "string or array"),
    ("exp", "number"),
    ("iat", "number"),
    ("sub", "string"),
    ("email", "string"),
    ("phone", "string"),
    ("role", "string"),
    ("aal", "string"),
    ("session_id", "string"),
    ("is_anonymous", "boolean"),
];

fn has_type(v: &Value, ty: &str) -> bool {
    match ty {
        "string or array" => v.is_string() || v.is_array(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        _ => v.is_boolean(),
    }
}

/// Check a custom access token hook's answer against the claims it was given: an object
/// with `claims` (every required claim present with its type; `sub` and `session_id`
/// unchanged; a non-empty `role`), or an object with `error`.
pub fn validate(
    hook: &str,
    given: &Map<String, Value>,
    answer: Value,
) -> AuthResult<Map<String, Value>> {
    let bad = |why: String| {
        AuthError::Hook(format!(
            "the custom access token hook {hook} returned {why}"
        ))
    };
    let Value::Object(mut answer) = answer else {
        return Err(bad("something that is not a JSON object".into()));
    };
    if let Some(e) = answer.get("error") {
        let message = e
            .get("message")
            .and_then(Value::as_str)
            .or(e.as_str())
            .unwrap_or("no message");
        return Err(AuthError::HookDenied(message.chars().take(500).collect()));
    }
    let Some(Value::Object(claims)) = answer.remove("claims") else {
        return Err(bad("no claims object".into()));
    };
    for (name, ty) in REQUIRED {
        match claims.get(name) {
            Some(v) if has_type(v, ty) => {}
            Some(_) => return Err(bad(format!("claim {name} that is not a {ty}"))),
            None => return Err(bad(format!("claims without the required claim {name}"))),
        }
    }
    for name in ["sub", "session_id"] {
        if claims.get(name) != given.get(name) {
            return Err(bad(format!("a changed {name} claim")));
        }
    }
    if claims.get("role").and_then(Value::as_str) == Some("") {
        return Err(bad("an empty role claim".into()));
    }
    Ok(claims)
}

/// Run the custom access token hook, when one is set, on the claims of a token about to be
/// signed; return the claims to sign.
pub fn access_token_claims(
    user_id: pgrx::Uuid,
    claims: Map<String, Value>,
    method: &str,
) -> AuthResult<Map<String, Value>> {
    let Some(hook) = config::hook_custom_access_token() else {
        return Ok(claims);
    };
    let event = json!({
        "user_id": user_id.to_string(),
        "claims": claims,
        "authentication_method": method,
    });
    let answer = db::write_json(
        "select coalesce(auth._call_hook($1, $2::pg_catalog.jsonb, $3), 'null')::pg_catalog.text",
        &[
            hook.as_str().into(),
            event.to_string().into(),
            config::HOOK_TIMEOUT.get().into(),
        ],
    )?;
    validate(&hook, &claims, answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given() -> Map<String, Value> {
        let Value::Object(m) = json!({"aud": "authenticated", "exp": 2, "iat": 1, "sub": "u",
            "email": "", "phone": "", "role": "authenticated", "aal": "aal1",
            "session_id": "s", "is_anonymous": false, "user_metadata": {}})
        else {
            unreachable!()
        };
        m
    }

    #[test]
    fn a_hook_may_add_and_drop_optional_claims() {
        let mut c = given();
        c.remove("user_metadata");
        c.insert("user_role".into(), json!("admin"));
        let out = validate("h", &given(), json!({"claims": c})).unwrap();
        assert_eq!(out["user_role"], json!("admin"));
        assert!(!out.contains_key("user_metadata"));
    }

    #[test]
    fn malformed_answers_are_refused_by_name() {
        let cases = [
            (json!(null), "not a JSON object"),
            (json!({}), "no claims object"),
            (json!({"claims": []}), "no claims object"),
            (json!({"claims": {"sub": "u"}}), "required claim aud"),
        ];
        for (answer, why) in cases {
            let e = validate("h", &given(), answer).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
        for (name, value, why) in [
            ("exp", json!("soon"), "exp that is not a number"),
            ("sub", json!("other"), "changed sub"),
            ("session_id", json!("t"), "changed session_id"),
            ("role", json!(""), "empty role"),
            ("is_anonymous", json!("no"), "not a boolean"),
        ] {
            let mut c = given();
            c.insert(name.into(), value);
            let e = validate("h", &given(), json!({"claims": c})).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
    }

    #[test]
    fn an_error_object_denies_with_its_message() {
        let e = validate(
            "h",
            &given(),
            json!({"error": {"http_code": 403, "message": "no"}}),
        )
        .unwrap_err();
        assert_eq!(e, AuthError::HookDenied("no".into()));
    }
}
