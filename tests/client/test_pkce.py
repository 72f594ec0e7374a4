"""PKCE over real connections, as the HTTP server's requests make the calls (one transaction
each, as anon): one code exchanged by many requests at once gives one session; a wrong
verifier uses the code up even though its call fails, also when many arrive at once; wrong
verifiers and wrong links count toward the lockout of the client address."""

import base64
import hashlib
import threading
import time
import uuid

import psycopg
import pytest

from conftest import admin, api


def s256(verifier):
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def rpc(conn, sql, args=(), ip=None):
    """One request: a transaction as anon (with the client address PostgREST would pass)."""
    with conn.transaction():
        conn.execute("select set_config('role', 'anon', true)")
        if ip:
            conn.execute("select set_config('request.headers', %s, true)", (f'{{"x-forwarded-for": "{ip}"}}',))
        return conn.execute(sql, args).fetchone()


def attempt(conn, sql, args=(), ip=None):
    try:
        return ("ok", rpc(conn, sql, args, ip))
    except psycopg.Error as e:
        return (e.sqlstate, e.diag.message_primary)


def last_link(email):
    with admin() as a:
        return a.execute("select message -> 'email_data' ->> 'token_hash' as t from auth.email_outbox "
                         "where recipient = %s order by id desc limit 1", (email,)).fetchone()["t"]


def new_code(verifier, ip=None):
    """A magic link of a PKCE flow for a new address, opened: its auth code."""
    email = f"pkce-{uuid.uuid4().hex[:10]}@example.io"
    with api() as c:
        rpc(c, "select auth.sign_in_with_otp(%s, code_challenge => %s, code_challenge_method => 's256')",
            (email, s256(verifier)))
        link = last_link(email)
        assert link.startswith("pkce_")
        v = rpc(c, "select auth.verify_link(%s, 'magiclink') as v", (link,), ip)["v"]
    assert "code" in v, v
    return email, v["code"]


def sessions_of(email):
    with admin() as a:
        return a.execute("select count(*) as n from auth.sessions s join auth.users u on u.id = s.user_id "
                         "where u.email = %s", (email,)).fetchone()["n"]


EXCHANGE = "select auth.exchange_code_for_session(%s, %s) as s"
NOT_FOUND = ("P0002", "flow_state_not_found: invalid flow state, no valid flow state found")


@pytest.mark.parametrize("round_", range(3))
def test_one_code_exchanged_at_once_by_many_gives_one_session(round_):
    verifier = "v-" + uuid.uuid4().hex * 2
    email, code = new_code(verifier)
    n = 8
    barrier = threading.Barrier(n)
    results = []

    def worker():
        with api() as c:
            barrier.wait()
            results.append(attempt(c, EXCHANGE, (code, verifier)))

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(r[0] for r in results) == ["P0002"] * (n - 1) + ["ok"], results
    assert all(r == NOT_FOUND for r in results if r[0] != "ok")
    assert sessions_of(email) == 1


def test_a_second_exchange_waits_for_the_first_and_finds_nothing_or_takes_over_after_a_rollback():
    verifier = "v-" + uuid.uuid4().hex * 2
    for first_commits in (True, False):
        email, code = new_code(verifier)
        a = api()
        a.execute("select set_config('role', 'anon', true)")
        a.execute(EXCHANGE, (code, verifier))  # A's transaction stays open
        outcome = {}

        def b_worker():
            with api() as b:
                outcome["b"] = attempt(b, EXCHANGE, (code, verifier))

        t = threading.Thread(target=b_worker)
        t.start()
        deadline = time.time() + 30
        with admin() as mon:
            while time.time() < deadline:
                if mon.execute("select count(*) as n from pg_stat_activity where %s = any(pg_blocking_pids(pid))",
                               (a.info.backend_pid,)).fetchone()["n"]:
                    break
                time.sleep(0.02)
            else:
                pytest.fail("the second exchange never waited for the first")
        if first_commits:
            a.commit()
        else:
            a.rollback()
        a.close()
        t.join(timeout=60)
        if first_commits:
            assert outcome["b"] == NOT_FOUND
        else:
            assert outcome["b"][0] == "ok"
        assert sessions_of(email) == 1


def test_wrong_verifiers_at_once_use_the_code_up():
    verifier = "v-" + uuid.uuid4().hex * 2
    email, code = new_code(verifier)
    n = 6
    barrier = threading.Barrier(n)
    results = []

    def worker(i):
        with api() as c:
            barrier.wait()
            results.append(attempt(c, EXCHANGE, (code, f"wrong-{i}-" + verifier)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    states = {r[0] for r in results}
    assert "ok" not in states and states <= {"28000", "P0002"}, results
    assert ("28000", "bad_code_verifier: code challenge does not match previously saved code verifier") in results
    with api() as c:
        # Gone, although every call that used it failed: the right verifier is too late.
        assert attempt(c, EXCHANGE, (code, verifier)) == NOT_FOUND
    with admin() as a:
        assert a.execute("select count(*) as n from auth.flow_state f join auth.users u on u.id = f.user_id "
                         "where u.email = %s", (email,)).fetchone()["n"] == 0
    assert sessions_of(email) == 0


def test_wrong_verifiers_and_wrong_links_count_toward_the_address_lockout():
    ip, other_ip = "198.51.100.61", "198.51.100.62"
    verifier = "v-" + uuid.uuid4().hex * 2
    with admin() as a:
        a.execute("alter role client_authenticator set auth.lockout_ip_max_failures = 3")
    try:
        codes = [new_code(verifier) for _ in range(4)]
        with api() as c:
            for _, code in codes[:3]:
                assert attempt(c, EXCHANGE, (code, "wrong-" + verifier), ip)[0] == "28000"
            # The address is locked: even the right verifier is refused before it is checked,
            # and the code is not used up by the refusal.
            locked = attempt(c, EXCHANGE, (codes[3][1], verifier), ip)
            assert locked[0] == "53400" and locked[1].startswith("over_request_rate_limit: "), locked
            assert attempt(c, EXCHANGE, (codes[3][1], verifier), other_ip)[0] == "ok"
        # Wrong links are counted the same way; verify_link answers the lockout, it does not
        # raise it, and a refused link is not used up.
        email = f"pkce-{uuid.uuid4().hex[:10]}@example.io"
        with api() as c:
            rpc(c, "select auth.sign_in_with_otp(%s, code_challenge => %s, code_challenge_method => 'plain')",
                (email, verifier))
            link = last_link(email)
            link_ip = "198.51.100.63"
            for i in range(3):
                v = rpc(c, "select auth.verify_link(%s, 'magiclink') as v", ("pkce_" + "w" * 42 + str(i),), link_ip)["v"]
                assert v["error"]["code"] == "otp_expired"
            v = rpc(c, "select auth.verify_link(%s, 'magiclink') as v", (link,), link_ip)["v"]
            assert (v["error"]["code"], v["error"]["sqlstate"]) == ("over_request_rate_limit", "53400")
            v = rpc(c, "select auth.verify_link(%s, 'magiclink') as v", (link,), other_ip)["v"]
            assert rpc(c, EXCHANGE, (v["code"], verifier))["s"]["user"]["email"] == email
    finally:
        with admin() as a:
            a.execute("alter role client_authenticator reset auth.lockout_ip_max_failures")
            a.execute("delete from auth.sign_in_failures where key like 'ip:198.51.100.6_' or key like 'pkce:%'")
