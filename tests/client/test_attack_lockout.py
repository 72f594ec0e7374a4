"""The brute-force lockout under attack: floods of parallel guesses at one account, guesses
from transactions holding old snapshots, and guesses while no background worker can write
the failures down. However the guesses arrive, at most the threshold of them are checked;
an attempt that cannot be counted is refused, not checked; other accounts keep signing
in; and the extension never runs more background workers than auth.autonomous_workers.

Needs max_connections above 120 (scripts/test.sh starts the cluster with 200)."""

import threading
import time
import uuid

import psycopg
import pytest

from conftest import DB, admin, api

PASSWORD = "the-right-password-1"


def sign_up(email):
    with admin() as c:
        c.execute("select auth.sign_up(%s, %s)", (email, PASSWORD))


def settings(**values):
    """Database-level settings for the connections opened afterwards."""
    with admin() as c:
        for k, v in values.items():
            if v is None:
                c.execute(f"alter database {DB} reset auth.{k}")
            else:
                c.execute(f"alter database {DB} set auth.{k} = '{v}'")


@pytest.fixture(autouse=True)
def clean():
    with admin() as c:
        c.execute("delete from auth.sign_in_failures")
    yield
    settings(lockout_max_failures=None, lockout_ip_max_failures=None)
    with admin() as c:
        c.execute("delete from auth.sign_in_failures")


def attempt(conn, email, password, sql="select auth.sign_in(%s, %s)"):
    """One PostgREST-style request; its SQLSTATE, or 'ok'."""
    try:
        conn.execute("set local role anon")
        conn.execute(sql, (email, password))
        conn.commit()
        return "ok"
    except psycopg.Error as e:
        conn.rollback()
        return e.sqlstate


def flood(n, email, guess, sql="select auth.sign_in(%s, %s)", during=None):
    """n connections fire one guess each at the same moment; `during` runs meanwhile."""
    conns = [api() for _ in range(n)]
    barrier = threading.Barrier(n + 1)
    results = [None] * n

    def one(i):
        barrier.wait()
        results[i] = attempt(conns[i], email, guess(i), sql)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    side = during() if during else None
    barrier.wait()
    for t in threads:
        t.join(timeout=120)
    if side:
        side.join(timeout=120)
    for c in conns:
        c.close()
    return results


class Sampler(threading.Thread):
    """Meanwhile: how many of our background workers run at once, at most."""

    def __init__(self):
        super().__init__()
        self.most, self.stop = 0, threading.Event()

    def run(self):
        with admin() as c:
            while not self.stop.is_set():
                n = c.execute("select count(*) as n from pg_stat_activity where backend_type = 'auth_ext'").fetchone()["n"]
                self.most = max(self.most, n)
                time.sleep(0.002)


def test_120_parallel_wrong_passwords_check_at_most_the_threshold():
    victim, bystander = f"flood-{uuid.uuid4().hex[:8]}@example.io", f"by-{uuid.uuid4().hex[:8]}@example.io"
    sign_up(victim)
    sign_up(bystander)
    settings(lockout_max_failures=10, lockout_ip_max_failures=0)
    sampler, others = Sampler(), []

    def bystanders():
        # Another account signs in while the flood runs.
        def run():
            with api() as c:
                for _ in range(5):
                    others.append(attempt(c, bystander, PASSWORD))
        t = threading.Thread(target=run)
        t.start()
        return t

    sampler.start()
    try:
        results = flood(120, victim, lambda i: f"wrong-password-{i}", during=bystanders)
    finally:
        sampler.stop.set()
        sampler.join()
    checked = results.count("28P01")  # invalid_credentials: the password was checked
    assert checked <= 10, f"{checked} guesses were checked"
    assert checked >= 1
    assert set(results) <= {"28P01", "53400"}, results
    assert results.count("53400") == 120 - checked
    # Now locked, even for the right password; the bystander was never refused.
    with api() as c:
        assert attempt(c, victim, PASSWORD) == "53400"
    assert others == ["ok"] * 5, others
    with admin() as c:
        logged = c.execute(
            "select count(*) as n from auth.audit_log_entries where payload ->> 'action' = 'login_failed' "
            "and payload ->> 'actor_username' = %s", (victim,)).fetchone()["n"]
        written = c.execute("select count(*) as n from auth.sign_in_failures where key = %s",
                            ("email:" + victim,)).fetchone()["n"]
        c.execute("load 'auth_ext'")  # defines the setting in this session
        limit = c.execute("show auth.autonomous_workers").fetchone()["auth.autonomous_workers"]
    assert logged == checked and written == checked
    assert sampler.most <= int(limit), f"{sampler.most} workers at once (limit {limit})"


def test_120_parallel_wrong_codes_check_at_most_the_threshold():
    victim = f"codes-{uuid.uuid4().hex[:8]}@example.io"
    sign_up(victim)
    settings(lockout_max_failures=10, lockout_ip_max_failures=0)
    with api() as c:
        assert attempt(c, victim, None, "select auth.sign_in_with_otp(%s, false, %s)") == "ok"
    with admin() as c:
        code = c.execute("select message -> 'email_data' ->> 'token' as t from auth.email_outbox "
                         "where recipient = %s order by id desc limit 1", (victim,)).fetchone()["t"]
    wrong = [f"{(int(code) + 1 + i) % 1000000:06d}" for i in range(120)]
    results = flood(120, victim, lambda i: wrong[i], "select auth.verify_otp(%s, %s, 'email')")
    checked = results.count("28000")  # otp_expired: the code was looked at
    assert 1 <= checked <= 10, f"{checked} codes were checked"
    assert results.count("53400") == 120 - checked
    with api() as c:
        assert attempt(c, victim, code, "select auth.verify_otp(%s, %s, 'email')") == "53400"


def test_old_snapshots_hide_no_failure():
    """Repeatable-read transactions that took their snapshot before any failure was
    written still see every failure: the count is read through a fresh snapshot."""
    victim = f"snap-{uuid.uuid4().hex[:8]}@example.io"
    sign_up(victim)
    settings(lockout_max_failures=3, lockout_ip_max_failures=0)
    conns = [api() for _ in range(10)]
    for c in conns:
        c.execute("begin isolation level repeatable read")
        c.execute("select 1")  # the snapshot is taken now
    results = []
    for i, c in enumerate(conns):
        results.append(attempt(c, victim, f"wrong-{i}"))
        c.close()
    assert results.count("28P01") == 3, results
    assert results[3:] == ["53400"] * 7


def test_a_guess_cut_short_gives_its_place_back():
    """An attempt that ends before its check finished (an error, a cancel, a rolled-back
    savepoint) leaves no count behind; nor does one left open at commit."""
    victim = f"cut-{uuid.uuid4().hex[:8]}@example.io"
    sign_up(victim)
    settings(lockout_max_failures=3, lockout_ip_max_failures=0)
    with admin() as c:
        for _ in range(10):
            c.execute("begin")
            c.execute("select auth._attempt_begin(%s)", (victim,))
            with pytest.raises(psycopg.errors.DivisionByZero):
                c.execute("select 1 / 0")
            c.execute("rollback")
        for _ in range(10):
            c.execute("begin")
            c.execute("savepoint s")
            c.execute("select auth._attempt_begin(%s)", (victim,))
            c.execute("rollback to savepoint s")
            c.execute("commit")
        for _ in range(10):
            c.execute("begin")
            c.execute("select auth._attempt_begin(%s)", (victim,))
            c.execute("commit")
    with api() as c:
        assert attempt(c, victim, PASSWORD) == "ok"


def test_an_attempt_that_cannot_be_written_down_is_refused_not_checked():
    """With the only worker place taken (a worker stuck behind a lock), a failure cannot be
    written: it is kept in shared memory and locks its account for the window (how many
    came before it is not known), so nothing more is checked."""
    blocker, victim = f"blk-{uuid.uuid4().hex[:8]}@example.io", f"nowk-{uuid.uuid4().hex[:8]}@example.io"
    sign_up(blocker)
    sign_up(victim)
    settings(lockout_max_failures=3, lockout_ip_max_failures=0)
    with admin() as c:
        c.execute("load 'auth_ext'")
        c.execute("alter system set auth.autonomous_workers = 1")
        c.execute("select pg_reload_conf()")
    time.sleep(0.5)
    hold = admin()
    hold.autocommit = False
    try:
        # A lock on the failures table (only its owner can take one): the worker writing
        # the blocker's failure waits on it, holding the one place.
        hold.execute("lock table auth.sign_in_failures in exclusive mode")
        stuck = threading.Thread(target=lambda: attempt(api(), blocker, "wrong-blocker"))
        stuck.start()
        time.sleep(0.5)
        results = []
        with api() as c:
            for i in range(4):
                t = time.perf_counter()
                results.append((attempt(c, victim, f"wrong-{i}"), time.perf_counter() - t))
            right = attempt(c, victim, PASSWORD)
        assert [r for r, _ in results] == ["28P01", "53400", "53400", "53400"], results
        assert right == "53400"
        with admin() as c:
            written = c.execute("select count(*) as n from auth.sign_in_failures where key = %s",
                                ("email:" + victim,)).fetchone()["n"]
        assert written == 0, "no failure of the victim could be written down"
    finally:
        hold.rollback()
        hold.close()
        stuck.join(timeout=30)
        with admin() as c:
            c.execute("load 'auth_ext'")
            c.execute("alter system reset auth.autonomous_workers")
            c.execute("select pg_reload_conf()")


def test_cancelled_guesses_do_not_fill_the_shared_counters():
    """A cancel that lands while a failure is being written down must not leave it in
    shared memory for the whole window: 1,024 such would refuse every sign-in of the
    cluster. The write finishes first (the cancel waits for it), so the failure is in the
    table, counted once, and nothing stays behind."""
    victim, other = f"slow-{uuid.uuid4().hex[:8]}@example.io", f"other-{uuid.uuid4().hex[:8]}@example.io"
    sign_up(victim)
    sign_up(other)
    settings(lockout_max_failures=2, lockout_ip_max_failures=0)
    # The worker's write waits 0.4 s for a lock on the audit table; the statement timeout
    # (0.1 s) fires meanwhile, while the failure is being written.
    hold = admin()
    hold.autocommit = False
    hold.execute("lock table auth.audit_log_entries in exclusive mode")
    release = threading.Timer(0.4, hold.rollback)
    release.start()
    with api() as c:
        c.execute("set statement_timeout = '100ms'")
        c.commit()
        started = time.perf_counter()
        slow = attempt(c, victim, "wrong-password")
        waited = time.perf_counter() - started
    release.join()
    hold.close()
    assert slow in ("28P01", "57014") and waited > 0.3, (slow, waited)
    with admin() as c:
        written = c.execute("select count(*) as n from auth.sign_in_failures where key = %s",
                            ("email:" + victim,)).fetchone()["n"]
    assert written == 1
    # Counted once: one failure below the threshold of two, so the right password works.
    with api() as c:
        assert attempt(c, victim, PASSWORD) == "ok"
    # And a spray of guesses cut by short timeouts leaves every failure in the table.
    settings(lockout_max_failures=1000)
    with api() as c:
        c.execute("set statement_timeout = '35ms'")
        c.commit()
        states = [attempt(c, f"spray-{i}-{uuid.uuid4().hex[:6]}@example.io", "wrong-password") for i in range(30)]
    assert set(states) <= {"57014", "28P01"}, states
    # Every answered failure is written; a guess cancelled before its check finished is not
    # a guess (no answer) and leaves nothing behind.
    with admin() as c:
        written = c.execute("select count(*) as n from auth.sign_in_failures where key like 'email:spray-%'").fetchone()["n"]
    assert states.count("28P01") <= written <= 30, (written, states)
    with api() as c:
        assert attempt(c, other, PASSWORD) == "ok"


def test_the_same_password_check_is_a_counted_guess():
    """auth.update_user compares a new password with the current one (same_password): with a
    stolen access token and a rollback after each call, that is a password oracle. Each
    comparison counts on a counter of its own, so the oracle closes at the threshold while
    the account's own sign-ins stay open."""
    email = f"oracle-{uuid.uuid4().hex[:8]}@example.io"
    with admin() as c:
        s = c.execute("select auth.sign_up(%s, %s) as s", (email, PASSWORD)).fetchone()["s"]
    settings(lockout_max_failures=5, lockout_ip_max_failures=0)
    results = []
    with api() as c:
        for guess in [f"guess-password-{i}" for i in range(6)] + [PASSWORD]:
            try:
                c.execute("select auth.authenticate(%s)", (s["access_token"],))
                c.execute("select auth.update_user(%s)", ('{"password": "%s"}' % guess,))
                results.append("changed")
            except psycopg.Error as e:
                results.append(e.sqlstate)
            c.rollback()  # nothing the guesses did stays
    assert results[:5] == ["changed"] * 5, results
    assert results[5:] == ["53400", "53400"], results  # the right password is not revealed
    with api() as c:
        assert attempt(c, email, PASSWORD) == "ok"


def test_a_refresh_reuse_whose_revocation_cannot_be_written_still_ends_the_session():
    """Reuse detection with no worker free: the revocation cannot be committed, so the
    session is marked in shared memory and every refresh of it is refused until the
    revocation is written, at the next attempt, once a worker is free."""
    email = f"reuse-{uuid.uuid4().hex[:8]}@example.io"
    with admin() as c:
        s = c.execute("select auth.sign_up(%s, %s) as s", (email, PASSWORD)).fetchone()["s"]
        c.execute(f"alter database {DB} set auth.refresh_reuse_interval = 0")
        c.execute("load 'auth_ext'")
        c.execute("alter system set auth.autonomous_workers = 1")
        c.execute("select pg_reload_conf()")
    time.sleep(0.5)
    with admin() as c:
        fresh = c.execute("select auth.refresh(%s) as s", (s["refresh_token"],)).fetchone()["s"]
    time.sleep(1.1)
    hold = admin()
    hold.autocommit = False
    try:
        hold.execute("lock table auth.sign_in_failures in exclusive mode")
        blocker = f"blk-{uuid.uuid4().hex[:8]}@example.io"
        stuck = threading.Thread(target=lambda: attempt(api(), blocker, "wrong"))
        stuck.start()
        time.sleep(0.5)
        with api() as c:
            assert refresh(c, s["refresh_token"]) == "28000"  # the reuse
            assert refresh(c, fresh["refresh_token"]) == "28000"
    finally:
        hold.rollback()
        hold.close()
        stuck.join(timeout=30)
    with api() as c:
        # Now a worker is free: the next attempt writes the revocation.
        assert refresh(c, fresh["refresh_token"]) == "28000"
    with admin() as c:
        ended = c.execute("select not_after is not null as ended from auth.sessions where id = %s",
                          (jwt_session(s),)).fetchone()["ended"]
        c.execute(f"alter database {DB} reset auth.refresh_reuse_interval")
        c.execute("load 'auth_ext'")
        c.execute("alter system reset auth.autonomous_workers")
        c.execute("select pg_reload_conf()")
    assert ended


def refresh(conn, token):
    try:
        conn.execute("set local role anon")
        conn.execute("select auth.refresh(%s)", (token,))
        conn.commit()
        return "ok"
    except psycopg.Error as e:
        conn.rollback()
        return e.sqlstate


def jwt_session(session):
    import jwt
    return jwt.decode(session["access_token"], options={"verify_signature": False})["session_id"]


def test_a_synchronous_standby_that_is_down_does_not_hold_a_failed_sign_in():
    """The worker commits with synchronous_commit = local: a configured synchronous standby
    that does not answer must not leave failed sign-ins waiting, uninterruptible."""
    victim = f"sync-{uuid.uuid4().hex[:8]}@example.io"
    sign_up(victim)
    with admin() as c:
        c.execute("alter system set synchronous_standby_names = 'nobody_home'")
        c.execute("select pg_reload_conf()")
    time.sleep(0.5)
    try:
        with api() as c:
            started = time.perf_counter()
            assert attempt(c, victim, "wrong-password") == "28P01"
            took = time.perf_counter() - started
        with admin() as c:
            written = c.execute("select count(*) as n from auth.sign_in_failures where key = %s",
                                ("email:" + victim,)).fetchone()["n"]
    finally:
        with admin() as c:
            c.execute("alter system reset synchronous_standby_names")
            c.execute("select pg_reload_conf()")
    assert written == 1
    assert took < 5, took


def test_password_checks_are_counted_per_user():
    """Users without an address (anonymous ones that set a password) each have their own
    counter."""
    with admin() as c:
        c.execute(f"alter database {DB} set auth.anonymous_sign_ins = on")
    settings(lockout_max_failures=3, lockout_ip_max_failures=0)
    try:
        sessions = []
        for _ in range(2):
            with api() as c:
                c.execute("set local role anon")
                sessions.append(c.execute("select auth.sign_in_anonymously() as s").fetchone()["s"])
                c.commit()
                c.execute("select auth.authenticate(%s)", (sessions[-1]["access_token"],))
                c.execute("""select auth.update_user('{"password": "anon-first-password"}')""")
                c.commit()
        settings(lockout_max_failures=3)
        results = {0: [], 1: []}
        for who in (0, 0, 0, 0, 1):
            with api() as c:
                try:
                    c.execute("select auth.authenticate(%s)", (sessions[who]["access_token"],))
                    c.execute("""select auth.update_user('{"password": "anon-password-%s"}')""" % uuid.uuid4().hex[:6])
                    results[who].append("changed")
                except psycopg.Error as e:
                    results[who].append(e.sqlstate)
                c.rollback()
        assert results[0] == ["changed", "changed", "changed", "53400"], results
        assert results[1] == ["changed"], results
    finally:
        with admin() as c:
            c.execute(f"alter database {DB} reset auth.anonymous_sign_ins")
