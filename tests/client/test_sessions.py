"""Sessions over real connections: concurrent refreshes, reuse after the interval (with
its committed revocation), sign-out reaching RLS with auth.session_check, and audit rows
that survive a failing call."""

import hashlib
import json
import threading
import time
import uuid

import jwt
import psycopg
import pytest

from conftest import API_ROLE, DB, admin, api


def rpc(sql, *args, role="anon", claims=None, headers=None):
    """One PostgREST-style request in its own transaction on a fresh connection."""
    with api() as c:
        c.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true), "
            "set_config('request.headers', %s, true)",
            (role, json.dumps(claims) if claims else "", json.dumps(headers or {})),
        )
        row = c.execute(sql, args).fetchone()
        c.commit()
        return next(iter(row.values())) if row else None


def new_user():
    email = f"s-{uuid.uuid4().hex[:10]}@example.io"
    return rpc("select auth.sign_up(%s, %s)", email, "password-sessions-1")


def claims_of(session):
    return jwt.decode(session["access_token"], options={"verify_signature": False})


def rpc_error(sql, *args, **kw):
    with pytest.raises(psycopg.Error) as e:
        rpc(sql, *args, **kw)
    return e.value.sqlstate, e.value.diag.message_primary


def test_twenty_concurrent_refreshes_of_one_token_all_succeed_and_the_session_continues():
    s = new_user()
    sid = claims_of(s)["session_id"]
    barrier = threading.Barrier(20)
    results, errors = [], []

    def worker():
        try:
            with api() as c:
                c.execute("select set_config('role', 'anon', true)")
                barrier.wait()
                r = c.execute("select auth.refresh(%s) as r", (s["refresh_token"],)).fetchone()["r"]
                c.commit()
                results.append(r)
        except Exception as e:  # noqa: BLE001 - every failure is reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(results) == 20
    with admin() as a:
        for r in results:
            claims = a.execute("select auth.verify_jwt(%s) as c", (r["access_token"],)).fetchone()["c"]
            assert claims["session_id"] == sid
    # Every client holds a refresh token that works, and they are all different.
    assert len({r["refresh_token"] for r in results}) == 20
    again = rpc("select auth.refresh(%s)", results[7]["refresh_token"])
    assert claims_of(again)["session_id"] == sid


def test_reuse_after_the_interval_kills_the_session_and_every_token_in_it():
    s = new_user()
    sid = claims_of(s)["session_id"]
    r1 = rpc("select auth.refresh(%s)", s["refresh_token"])
    r2 = rpc("select auth.refresh(%s)", r1["refresh_token"])
    # Age the rotation past the 10 s reuse interval instead of sleeping.
    with admin() as a:
        a.execute(
            "update auth.refresh_tokens set updated_at = now() - interval '1 minute' where token = %s",
            (hashlib.sha256(s["refresh_token"].encode()).hexdigest(),),
        )
    assert rpc_error("select auth.refresh(%s)", s["refresh_token"]) == (
        "28000",
        "refresh_token_already_used: Invalid Refresh Token: Already Used; the session has been revoked",
    )
    # The revocation was committed although the call failed.
    with admin() as a:
        row = a.execute(
            "select not_after <= now() as ended, "
            "(select bool_and(revoked) from auth.refresh_tokens where session_id = s.id) as all_revoked "
            "from auth.sessions s where id = %s",
            (sid,),
        ).fetchone()
        assert row == {"ended": True, "all_revoked": True}
        audit = a.execute(
            "select count(*) as n from auth.audit_log_entries where payload->>'action' = 'token_revoked' "
            "and payload->'traits'->>'session_id' = %s",
            (sid,),
        ).fetchone()["n"]
        assert audit == 1
    # Every token of the session is dead, including the newest one.
    for t in (r1["refresh_token"], r2["refresh_token"]):
        assert rpc_error("select auth.refresh(%s)", t)[1].startswith("refresh_token_already_used")


def test_reuse_after_a_real_interval():
    with admin() as a:
        a.execute(f"alter role {API_ROLE} in database {DB} set auth.refresh_reuse_interval = '1s'")
    try:
        s = new_user()
        r1 = rpc("select auth.refresh(%s)", s["refresh_token"])
        assert rpc("select auth.refresh(%s)", s["refresh_token"])["token_type"] == "bearer"  # inside 1 s
        time.sleep(1.5)
        assert rpc_error("select auth.refresh(%s)", s["refresh_token"])[1].startswith("refresh_token_already_used")
        assert rpc_error("select auth.refresh(%s)", r1["refresh_token"])[1].startswith("refresh_token_already_used")
    finally:
        with admin() as a:
            a.execute(f"alter role {API_ROLE} in database {DB} reset auth.refresh_reuse_interval")


def test_sign_out_reaches_rls_with_session_check():
    s = new_user()
    claims = claims_of(s)
    with admin() as a:
        a.execute(f"alter role {API_ROLE} in database {DB} set auth.session_check = on")
    try:
        assert rpc("select auth.uid()::text", role="authenticated", claims=claims) == claims["sub"]
        rpc("select auth.sign_out('local')", role="authenticated", claims=claims)
        # The access token is still unexpired and well signed, but its session is gone.
        assert rpc("select auth.verify_jwt(%s) ->> 'sub'", s["access_token"]) == claims["sub"]
        assert rpc("select auth.uid()", role="authenticated", claims=claims) is None
        assert rpc("select auth.jwt()", role="authenticated", claims=claims) is None
    finally:
        with admin() as a:
            a.execute(f"alter role {API_ROLE} in database {DB} reset auth.session_check")
    assert rpc("select auth.uid()::text", role="authenticated", claims=claims) == claims["sub"]


def test_failed_sign_ins_are_audited_even_though_the_call_fails():
    email = f"fail-{uuid.uuid4().hex[:8]}@example.io"
    rpc("select auth.sign_up(%s, %s)", email, "password-right-1")
    headers = {"x-forwarded-for": "198.51.100.23"}
    assert rpc_error("select auth.sign_in(%s, %s)", email, "wrong-password", headers=headers)[0] == "28P01"
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.io"
    assert rpc_error("select auth.sign_in(%s, %s)", unknown, "wrong-password", headers=headers)[0] == "28P01"
    with admin() as a:
        rows = a.execute(
            "select payload->>'actor_username' as who, payload->>'actor_id' is not null as known_user, ip_address "
            "from auth.audit_log_entries where payload->>'action' = 'login_failed' "
            "and payload->>'actor_username' in (%s, %s) order by created_at",
            (email, unknown),
        ).fetchall()
    assert rows == [
        {"who": email, "known_user": True, "ip_address": "198.51.100.23"},
        {"who": unknown, "known_user": False, "ip_address": "198.51.100.23"},
    ]
