"""Two sign-ups of one email at the same time: one user, one clean user_already_exists."""

import threading
import time
import uuid

import psycopg
import pytest

from conftest import admin, api

PASSWORD = "password-for-races-1"


def sign_up_as_anon(conn, email):
    """One PostgREST-style RPC: set local role anon, then the call."""
    conn.execute("select set_config('role', 'anon', true)")
    return conn.execute("select auth.sign_up(%s, %s)", (email, PASSWORD)).fetchone()["sign_up"]


def user_count(email):
    with admin() as c:
        return c.execute("select count(*) as n from auth.users where lower(email) = lower(%s)", (email,)).fetchone()["n"]


@pytest.mark.parametrize("round_", range(5))
def test_simultaneous_sign_ups_make_one_user(round_):
    email = f"race-{uuid.uuid4().hex[:8]}@example.io"
    barrier = threading.Barrier(2)
    results = []

    def worker(spelling):
        with api() as conn:
            barrier.wait()
            try:
                s = sign_up_as_anon(conn, spelling)
                conn.commit()
                results.append(("ok", s["user"]["id"]))
            except psycopg.Error as e:
                conn.rollback()
                results.append((e.sqlstate, e.diag.message_primary))

    # Two spellings of one address: the uniqueness is case-insensitive.
    threads = [threading.Thread(target=worker, args=(e,)) for e in (email, email.upper())]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(r[0] for r in results) == ["23505", "ok"], results
    failure = next(r for r in results if r[0] == "23505")
    assert failure[1] == "user_already_exists: User already registered"
    assert user_count(email) == 1


def test_second_sign_up_waits_for_the_first_and_then_fails_cleanly():
    """Deterministic interleaving: B's insert provably waits on A's open transaction."""
    email = f"wait-{uuid.uuid4().hex[:8]}@example.io"
    a = api()
    sign_up_as_anon(a, email)  # A's transaction stays open
    pid_a = a.info.backend_pid
    outcome = {}

    def b_worker():
        with api() as b:
            outcome["pid"] = b.info.backend_pid
            try:
                sign_up_as_anon(b, email)
                b.commit()
                outcome["result"] = "ok"
            except psycopg.Error as e:
                b.rollback()
                outcome["result"] = (e.sqlstate, e.diag.message_primary)

    t = threading.Thread(target=b_worker)
    t.start()
    deadline = time.time() + 30
    waiting = False
    with admin() as mon:
        while time.time() < deadline and not waiting:
            row = mon.execute(
                "select count(*) as n from pg_stat_activity where wait_event_type = 'Lock' and %s = any(pg_blocking_pids(pid))",
                (pid_a,),
            ).fetchone()
            waiting = row["n"] == 1
            time.sleep(0.02)
    assert waiting, "the second sign-up never waited on the first"
    a.commit()
    a.close()
    t.join(timeout=60)
    assert outcome["result"] == ("23505", "user_already_exists: User already registered")
    assert user_count(email) == 1


def test_if_the_first_rolls_back_the_second_succeeds():
    email = f"rollback-{uuid.uuid4().hex[:8]}@example.io"
    a = api()
    sign_up_as_anon(a, email)
    outcome = {}

    def b_worker():
        with api() as b:
            outcome["user"] = sign_up_as_anon(b, email)["user"]["email"]
            b.commit()

    t = threading.Thread(target=b_worker)
    t.start()
    time.sleep(0.3)
    a.rollback()
    a.close()
    t.join(timeout=60)
    assert outcome["user"] == email
    assert user_count(email) == 1
