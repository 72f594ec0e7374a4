"""Account flows over real connections: a mailer process LISTENs on auth_email, reads the
sign-up confirmation from the outbox as service_role, and the client completes the
confirmation with the token from it, each call in a PostgREST-style transaction."""

import importlib.util
import pathlib
import threading

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import API_PASSWORD, API_ROLE, admin, fresh_database

DB = "auth_flows"
MAILER_ROLE = "client_mailer"
MAILER_PASSWORD = "client-mailer-password"
MAILER_DSN = f"dbname={DB} user={MAILER_ROLE} password={MAILER_PASSWORD}"

spec = importlib.util.spec_from_file_location(
    "mailer", pathlib.Path(__file__).resolve().parents[2] / "examples" / "mailer.py"
)
mailer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mailer)


@pytest.fixture(scope="module", autouse=True)
def flows_database():
    fresh_database(DB)
    with admin(DB) as c:
        c.execute(f"alter database {DB} set auth.require_email_confirmation = on")
        c.execute(
            f"""do $$ begin
                  if not exists (select from pg_roles where rolname = '{MAILER_ROLE}') then
                    create role {MAILER_ROLE} login noinherit password '{MAILER_PASSWORD}';
                  end if;
                end $$"""
        )
        c.execute(f"grant service_role to {MAILER_ROLE}")


def call(sql, args=(), role="anon", claims=None):
    """One PostgREST-style request: a transaction with the role and claims set locally."""
    with psycopg.connect(dbname=DB, user=API_ROLE, password=API_PASSWORD, row_factory=dict_row) as c:
        c.execute("select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                  (role, claims or '{"role": "anon"}'))
        return c.execute(sql, args).fetchone()


def test_a_listening_mailer_delivers_the_confirmation_and_the_client_completes_it():
    sent = []
    worker = threading.Thread(target=mailer.run, args=(MAILER_DSN, sent.append),
                              kwargs={"stop_after": 1, "timeout": 20})
    worker.start()
    # The mailer is listening once it has drained the (empty) outbox.
    with admin(DB) as c:
        for _ in range(100):
            if c.execute("select count(*) as n from pg_stat_activity where query = 'listen auth_email'").fetchone()["n"]:
                break
            threading.Event().wait(0.05)
    user = call("select auth.sign_up('listen@example.io', 'listen-password-1') as u")["u"]
    assert "access_token" not in user and user["email"] == "listen@example.io"
    worker.join(30)
    assert not worker.is_alive()
    assert len(sent) == 1 and sent[0]["To"] == "listen@example.io"
    body = sent[0].get_content()
    token_hash = body.split("token_hash=")[1].split("&")[0]
    code = body.split("code: ")[1].strip()
    assert len(code) == 6 and code.isdigit()
    with admin(DB) as c:
        row = c.execute("select sent_at, message -> 'email_data' ->> 'token_hash' as t from auth.email_outbox").fetchone()
        assert row["sent_at"] is not None and row["t"] == token_hash

    # Not confirmed yet: the right password is refused with email_not_confirmed.
    with pytest.raises(psycopg.Error) as e:
        call("select auth.sign_in('listen@example.io', 'listen-password-1')")
    assert e.value.sqlstate == "28000" and "email_not_confirmed" in str(e.value)
    # The link token from the message confirms the address and signs in (single use).
    session = call("select auth.verify_otp(null, %s, 'signup') as s", (token_hash,))["s"]
    assert session["token_type"] == "bearer" and session["user"]["email_confirmed_at"]
    with pytest.raises(psycopg.Error) as e:
        call("select auth.verify_otp(null, %s, 'signup')", (token_hash,))
    assert e.value.sqlstate == "28000" and "otp_expired" in str(e.value)
    assert call("select auth.sign_in('listen@example.io', 'listen-password-1') ->> 'token_type' as t")["t"] == "bearer"
    # auth.user() with the new session's claims.
    claims = call("select auth.verify_jwt(%s)::text as c", (session["access_token"],))["c"]
    assert call("select auth.user() ->> 'email' as e", role="authenticated", claims=claims)["e"] == "listen@example.io"


def test_a_rolled_back_call_notifies_nothing_and_leaves_no_message():
    with psycopg.connect(MAILER_DSN, autocommit=True) as listener:
        listener.execute("listen auth_email")
        with psycopg.connect(dbname=DB, user=API_ROLE, password=API_PASSWORD) as c:
            c.execute("set local role anon")
            c.execute("select auth.sign_up('rolled-back@example.io', 'rolled-back-password')")
            c.rollback()
        assert list(listener.notifies(timeout=1)) == []
    with admin(DB) as c:
        assert c.execute("select count(*) as n from auth.email_outbox where recipient = 'rolled-back@example.io'").fetchone()["n"] == 0


def test_the_mailer_role_reads_the_outbox_but_not_the_token_hashes():
    with psycopg.connect(MAILER_DSN, autocommit=True) as c:
        c.execute("set role service_role")
        c.execute("select count(*) from auth.email_outbox")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("select * from auth.one_time_tokens")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        call("select * from auth.email_outbox", role="authenticated")
