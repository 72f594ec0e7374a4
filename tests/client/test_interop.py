"""Tokens against an independent JWT implementation (PyJWT), and PostgREST's per-request
protocol over a real connection as a non-superuser."""

import json
import time
import uuid

import jwt
import psycopg
import pytest

from conftest import admin, api


def sign_up(email, password="correct horse battery", data=None):
    with api() as c:
        c.execute("select set_config('role', 'anon', true)")
        s = c.execute("select auth.sign_up(%s, %s, %s)", (email, password, json.dumps(data or {}))).fetchone()["sign_up"]
        c.commit()
        return s


def call(conn, sql, *args):
    return next(iter(conn.execute(sql, args).fetchone().values()))


def test_extension_tokens_verify_in_pyjwt(secret):
    email = f"interop-{uuid.uuid4().hex[:8]}@example.io"
    s = sign_up(email, data={"name": "Interop"})
    claims = jwt.decode(
        s["access_token"], secret, algorithms=["HS256"], audience="authenticated", issuer="auth_ext"
    )
    assert claims["sub"] == s["user"]["id"]
    assert claims["email"] == email
    assert claims["role"] == "authenticated"
    assert claims["aal"] == "aal1"
    assert claims["amr"][0]["method"] == "password"
    assert claims["user_metadata"] == {"name": "Interop"}
    assert claims["app_metadata"] == {"provider": "email", "providers": ["email"]}
    assert claims["is_anonymous"] is False
    assert claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(s["access_token"])["alg"] == "HS256"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(s["access_token"], secret + "x", algorithms=["HS256"], audience="authenticated")


def test_pyjwt_tokens_verify_and_authenticate_in_the_extension(secret):
    sub = str(uuid.uuid4())
    now = int(time.time())
    token = jwt.encode(
        {"sub": sub, "role": "authenticated", "aud": "authenticated", "email": "py@example.io", "iat": now, "exp": now + 60},
        secret,
        algorithm="HS256",
    )
    with api() as c:
        assert call(c, "select auth.verify_jwt(%s)", token)["sub"] == sub
        c.execute("select auth.authenticate(%s)", (token,))
        row = c.execute("select current_user as who, auth.uid()::text as uid, auth.email() as email").fetchone()
        assert row == {"who": "authenticated", "uid": sub, "email": "py@example.io"}
        c.rollback()
        # The role and claims were transaction-local.
        row = c.execute("select current_user as who, auth.uid() as uid").fetchone()
        assert row == {"who": "client_authenticator", "uid": None}


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda s, now: jwt.encode({"sub": "x", "exp": now - 120}, s, algorithm="HS256"), "bad_jwt: JWT expired"),
        (lambda s, now: jwt.encode({"sub": "x"}, s * 2, algorithm="HS384"), "bad_jwt: algorithm HS384 is not accepted"),
        (lambda s, now: jwt.encode({"sub": "x"}, s * 2, algorithm="HS512"), "bad_jwt: algorithm HS512 is not accepted"),
        (lambda s, now: jwt.encode({"sub": "x"}, None, algorithm="none"), "bad_jwt: unsigned tokens (alg none) are not accepted"),
        (lambda s, now: jwt.encode({"sub": "x"}, "a-different-secret-of-32-characters!", algorithm="HS256"), "bad_jwt: invalid signature"),
        (lambda s, now: jwt.encode({"sub": "x", "nbf": now + 3600}, s, algorithm="HS256"), "bad_jwt: JWT not valid yet (nbf)"),
    ],
)
def test_bad_pyjwt_tokens_are_rejected(secret, make, reason):
    token = make(secret, int(time.time()))
    with api() as c:
        with pytest.raises(psycopg.Error) as e:
            c.execute("select auth.verify_jwt(%s)", (token,))
        assert e.value.sqlstate == "28000"
        assert e.value.diag.message_primary == reason


def test_postgrest_request_protocol_with_rls():
    with admin() as c:
        c.execute(
            """create table if not exists public.notes (
                 id bigint generated always as identity primary key,
                 user_id uuid not null default auth.uid(),
                 body text not null)"""
        )
        c.execute("alter table public.notes enable row level security")
        c.execute("drop policy if exists own on public.notes")
        c.execute("create policy own on public.notes to authenticated using (user_id = auth.uid()) with check (user_id = auth.uid())")
        c.execute("grant select, insert on public.notes to authenticated")
    sessions = [sign_up(f"notes-{i}-{uuid.uuid4().hex[:6]}@example.io") for i in range(2)]

    def request(conn, session, sql, *args):
        claims = jwt.decode(session["access_token"], options={"verify_signature": False})
        conn.execute(
            "select set_config('search_path', 'public', true), set_config('role', %s, true), "
            "set_config('request.jwt.claims', %s, true), set_config('request.method', 'POST', true), "
            "set_config('request.headers', %s, true)",
            (claims["role"], json.dumps(claims), json.dumps({"user-agent": "pytest"})),
        )
        rows = conn.execute(sql, args).fetchall() if sql.lstrip().startswith("select") else conn.execute(sql, args)
        conn.commit()
        return rows

    with api() as c:
        for i, s in enumerate(sessions):
            request(c, s, "insert into notes (body) values (%s)", f"note of user {i}")
        for i, s in enumerate(sessions):
            rows = request(c, s, "select body, user_id::text as uid from notes order by id")
            assert rows == [{"body": f"note of user {i}", "uid": s["user"]["id"]}]


def test_a_new_secret_reaches_backends_that_cached_the_old_one(secret):
    now = int(time.time())
    old = jwt.encode({"sub": "k", "exp": now + 60}, secret, algorithm="HS256")
    new_secret = "rotated-secret-" + uuid.uuid4().hex
    new = jwt.encode({"sub": "k", "exp": now + 60}, new_secret, algorithm="HS256")
    with api() as c:
        assert call(c, "select auth.verify_jwt(%s)", old)["sub"] == "k"  # this backend caches the key
        c.commit()
        try:
            with admin() as a:
                a.execute("select auth.set_jwt_secret(%s)", (new_secret,))
            assert call(c, "select auth.verify_jwt(%s)", new)["sub"] == "k"
            c.commit()
            with pytest.raises(psycopg.Error) as e:
                c.execute("select auth.verify_jwt(%s)", (old,))
            assert e.value.diag.message_primary == "bad_jwt: invalid signature"
            c.rollback()
        finally:
            with admin() as a:
                a.execute("select auth.set_jwt_secret(%s)", (secret,))


def test_sign_in_records_user_agent_and_ip_from_request_headers():
    email = f"headers-{uuid.uuid4().hex[:8]}@example.io"
    sign_up(email)
    with api() as c:
        c.execute(
            "select set_config('role', 'anon', true), set_config('request.headers', %s, true)",
            # The client wrote the first entry; the proxy in front (auth.trusted_proxies = 1)
            # appended the address it saw, which is the one recorded.
            (json.dumps({"user-agent": "Mozilla/5.0 test", "x-forwarded-for": "198.51.100.66, 203.0.113.7"}),),
        )
        s = call(c, "select auth.sign_in(%s, %s)", email, "correct horse battery")
        c.commit()
    sid = jwt.decode(s["access_token"], options={"verify_signature": False})["session_id"]
    with admin() as a:
        row = a.execute("select user_agent, host(ip) as ip from auth.sessions where id = %s", (sid,)).fetchone()
        assert row == {"user_agent": "Mozilla/5.0 test", "ip": "203.0.113.7"}
        audit = a.execute(
            "select ip_address from auth.audit_log_entries where payload->>'action' = 'login' and payload->>'actor_username' = %s",
            (email,),
        ).fetchone()
        assert audit == {"ip_address": "203.0.113.7"}
