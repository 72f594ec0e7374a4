"""Forged x-forwarded-for entries against the per-IP lockout. Each proxy appends the address
it was connected from, so only the entries that trusted proxies wrote (auth.trusted_proxies
from the right) say who the client is; anything further left is the client's own writing.
A client that rotates a forged first entry is still counted under its real address, and
cannot get a victim's address locked by writing it there."""

import json
import uuid

import psycopg
import pytest

from conftest import admin, api, drop_database, fresh_database

DB = "auth_attack_headers"
PASSWORD = "headers-password-1"
IP_LIMIT = 3


def settings(**values):
    """Database-level settings for the connections opened afterwards."""
    with admin(DB) as c:
        for k, v in values.items():
            if v is None:
                c.execute(f"alter database {DB} reset auth.{k}")
            else:
                c.execute(f"alter database {DB} set auth.{k} = '{v}'")


@pytest.fixture(scope="module", autouse=True)
def headers_database(database):
    fresh_database(DB)
    settings(lockout_ip_max_failures=IP_LIMIT, lockout_max_failures=1000)
    yield
    drop_database(DB)


@pytest.fixture(autouse=True)
def clean():
    with admin(DB) as c:
        c.execute("delete from auth.sign_in_failures")
    yield
    settings(trusted_proxies=None)
    with admin(DB) as c:
        c.execute("delete from auth.sign_in_failures")


def user():
    email = f"h-{uuid.uuid4().hex[:10]}@example.io"
    with admin(DB) as c:
        c.execute("select auth.sign_up(%s, %s)", (email, PASSWORD))
    return email


def forged():
    """A random address the client writes as the first entry."""
    b = uuid.uuid4().bytes
    return f"{b[0] % 223 + 1}.{b[1]}.{b[2]}.{b[3] % 254 + 1}"


def request(sql, args, xff):
    """One PostgREST-style request with the given x-forwarded-for; its result, or the
    (SQLSTATE, message) of the refusal."""
    with api(DB) as c:
        c.execute("select set_config('role', 'anon', true), set_config('request.headers', %s, true)",
                  (json.dumps({"x-forwarded-for": xff, "user-agent": "attack-test"}),))
        try:
            r = c.execute(sql, args).fetchone()["r"]
            c.commit()
            return r
        except psycopg.Error as e:
            return e.sqlstate, e.diag.message_primary


def sign_in(email, password, xff):
    return request("select auth.sign_in(%s, %s) as r", (email, password), xff)


WRONG = ("28P01", "invalid_credentials: Invalid login credentials")
LOCKED = ("53400", "over_request_rate_limit: Too many failed attempts; try again later")


def failures():
    with admin(DB) as c:
        return {r["key"]: r["failures"] for r in
                c.execute("select key, count(*) as failures from auth.sign_in_failures where key like 'ip:%' group by key").fetchall()}


def session_ip(session):
    with admin(DB) as c:
        return c.execute("select host(ip) as ip from auth.sessions where id = "
                         "(auth.verify_jwt(%s) ->> 'session_id')::uuid", (session["access_token"],)).fetchone()["ip"]


def test_a_rotated_forged_first_entry_is_counted_under_the_proxys_entry():
    # Wrong passwords for different accounts, each from a "different" client.
    targets = [user() for _ in range(IP_LIMIT)]
    for email in targets:
        assert sign_in(email, "wrong-password", f"{forged()}, 203.0.113.50") == WRONG
    assert failures() == {"ip:203.0.113.50": IP_LIMIT}
    # The address is locked: a new forged entry and the right password of yet another
    # account are refused before anything is checked.
    assert sign_in(user(), PASSWORD, f"{forged()}, 203.0.113.50") == LOCKED
    # Another client behind the same proxy is not affected, even writing the locked address.
    s = sign_in(user(), PASSWORD, "203.0.113.50, 203.0.113.51")
    assert s["token_type"] == "bearer" and session_ip(s) == "203.0.113.51"
    with admin(DB) as c:
        ips = [r["ip_address"] for r in c.execute(
            "select ip_address from auth.audit_log_entries where payload ->> 'action' = 'login_failed' "
            "and payload ->> 'actor_username' = any(%s)", (targets,)).fetchall()]
    assert ips == ["203.0.113.50"] * IP_LIMIT


def test_a_victims_address_written_first_does_not_lock_the_victim():
    for _ in range(IP_LIMIT + 3):
        assert sign_in(user(), "wrong-password", "198.51.100.9, 203.0.113.60") in (WRONG, LOCKED)
    assert failures() == {"ip:203.0.113.60": IP_LIMIT}
    s = sign_in(user(), PASSWORD, "198.51.100.9")
    assert s["token_type"] == "bearer" and session_ip(s) == "198.51.100.9"


def test_with_two_trusted_proxies_the_second_entry_from_the_right_is_the_client():
    settings(trusted_proxies=2)
    for i in range(IP_LIMIT):
        assert sign_in(user(), "wrong-password", f"{forged()}, 192.0.2.77, 203.0.113.{70 + i}") == WRONG
    assert failures() == {"ip:192.0.2.77": IP_LIMIT}
    assert sign_in(user(), PASSWORD, f"{forged()}, 192.0.2.77, 203.0.113.99") == LOCKED
    s = sign_in(user(), PASSWORD, "192.0.2.77, 192.0.2.78, 203.0.113.70")
    assert s["token_type"] == "bearer" and session_ip(s) == "192.0.2.78"


def test_with_no_trusted_proxy_no_address_is_counted_or_recorded():
    settings(trusted_proxies=0)
    for _ in range(IP_LIMIT + 2):
        assert sign_in(user(), "wrong-password", "203.0.113.80") == WRONG
    assert failures() == {}
    s = sign_in(user(), PASSWORD, "203.0.113.80")
    assert s["token_type"] == "bearer" and session_ip(s) is None


def test_wrong_codes_from_rotated_forged_entries_lock_the_proxys_entry():
    email = user()
    assert request("select auth.sign_in_with_otp(%s) as r", (email,), "203.0.113.1") == {}
    with admin(DB) as c:
        code = c.execute("select message -> 'email_data' ->> 'token' as t from auth.email_outbox "
                         "where recipient = %s order by id desc limit 1", (email,)).fetchone()["t"]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(IP_LIMIT):
        assert request("select auth.verify_otp(%s, %s, 'email') as r", (user(), wrong), f"{forged()}, 203.0.113.90") == (
            "28000", "otp_expired: Token has expired or is invalid")
    assert failures() == {"ip:203.0.113.90": IP_LIMIT}
    verify = "select auth.verify_otp(%s, %s, 'email') as r"
    assert request(verify, (email, code), f"{forged()}, 203.0.113.90") == LOCKED
    s = request(verify, (email, code), "203.0.113.90, 203.0.113.91")
    assert s["token_type"] == "bearer" and session_ip(s) == "203.0.113.91"
