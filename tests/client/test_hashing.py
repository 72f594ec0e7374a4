"""Password hashing under a cluster-wide bound (auth.password_hash_concurrency): the bound
is never exceeded, observed from the database; a call that waits too long for a place fails
with the documented error and leaves nothing written; a cancelled, terminated or crashed
backend gives its place back; waiters are served in the order they came; the hash runs in a thread of the lowest priority (the idle
scheduling class when asked), or at the backend's with auth.password_hash_priority =
normal."""

import os
import signal
import threading
import time
import uuid

import psycopg
import pytest

from conftest import DB, admin, api

PASSWORD = "hashing-password-1"


def system(**values):
    with admin() as c:
        c.execute("load 'auth_ext'")
        for k, v in values.items():
            if v is None:
                c.execute(f"alter system reset auth.{k}")
            else:
                c.execute(f"alter system set auth.{k} = {v}")
        c.execute("select pg_reload_conf()")
    time.sleep(0.3)


def running():
    with admin() as c:
        return c.execute("select (auth.password_hash_activity() ->> 'running')::int as n").fetchone()["n"]


def wait_until(cond, seconds=10):
    end = time.time() + seconds
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(autouse=True)
def restore():
    yield
    system(password_hash_concurrency=None, argon2_iterations=None, password_hash_priority=None)


def accounts(n):
    emails = [f"hash-{uuid.uuid4().hex[:8]}@example.io" for _ in range(n)]
    with admin() as c:
        for e in emails:
            c.execute("select auth.sign_up(%s, %s)", (e, PASSWORD))
    return emails


def most_running_during(n_clients, emails):
    """Sign n_clients in at once, several times each, sampling the running hashes."""
    most, stop = [0], threading.Event()

    def sample():
        with admin() as c:
            while not stop.is_set():
                n = c.execute("select (auth.password_hash_activity() ->> 'running')::int as n").fetchone()["n"]
                most[0] = max(most[0], n)

    def client(e):
        with api() as c:
            for _ in range(3):
                c.execute("set local role anon")
                c.execute("select auth.sign_in(%s, %s)", (e, PASSWORD))
                c.commit()

    s = threading.Thread(target=sample)
    s.start()
    threads = [threading.Thread(target=client, args=(e,)) for e in emails[:n_clients]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    s.join()
    return most[0]


def test_the_bound_is_never_exceeded():
    emails = accounts(8)
    system(password_hash_concurrency=-1)
    assert most_running_during(8, emails) > 1, "without a bound, hashes overlap (the sampler sees them)"
    system(password_hash_concurrency=1)
    assert most_running_during(8, emails) == 1
    system(password_hash_concurrency=2)
    assert most_running_during(8, emails) <= 2
    assert running() == 0


def slow_hashes():
    """Hashes of several hundred milliseconds: argon2 passes at their maximum."""
    system(password_hash_concurrency=1, argon2_iterations=64)


def start_slow_sign_up(email):
    """A sign-up whose hash holds the one place; returns its connection and thread."""
    c = api()
    pid = c.execute("select pg_backend_pid() as p").fetchone()["p"]
    result = {}

    def go():
        try:
            c.execute("set local role anon")
            c.execute("select auth.sign_up(%s, %s)", (email, PASSWORD))
            c.commit()
            result["state"] = "ok"
        except psycopg.Error as e:
            result["state"] = e.sqlstate

    t = threading.Thread(target=go)
    t.start()
    assert wait_until(lambda: running() == 1, 5), "the slow hash is computing"
    return c, pid, t, result


def test_a_call_that_waits_too_long_fails_cleanly_and_writes_nothing():
    slow_hashes()
    holder, _, t, _ = start_slow_sign_up(f"holder-{uuid.uuid4().hex[:8]}@example.io")
    late = f"late-{uuid.uuid4().hex[:8]}@example.io"
    with admin() as a:
        a.execute(f"alter database {DB} set auth.password_hash_wait = '50ms'")
    try:
        with api() as c:
            c.execute("set local role anon")
            with pytest.raises(psycopg.Error) as e:
                c.execute("select auth.sign_up(%s, %s)", (late, PASSWORD))
            c.rollback()
    finally:
        with admin() as a:
            a.execute(f"alter database {DB} reset auth.password_hash_wait")
        t.join()
        holder.close()
    assert e.value.sqlstate == "53000"
    assert e.value.diag.message_primary.startswith("over_request_rate_limit: ")
    with admin() as c:
        assert c.execute("select count(*) as n from auth.users where email = %s", (late,)).fetchone()["n"] == 0
    assert running() == 0


def test_waiters_are_served_in_the_order_they_came():
    """A place given back goes to the longest waiter, not to whoever registered in the
    first free waiting slot: A, B, C queue behind a slow hash, A gives up (its slot frees),
    D comes after; the order is B, C, D."""
    slow_hashes()
    holder, _, t, _ = start_slow_sign_up(f"first-{uuid.uuid4().hex[:8]}@example.io")
    done, lock = [], threading.Lock()

    def sign_up(name, wait=None):
        with admin() as c:
            try:
                with c.transaction():
                    if wait:
                        c.execute(f"set local auth.password_hash_wait = '{wait}'")
                    c.execute("select auth.sign_up(%s, %s)", (f"{name}-{uuid.uuid4().hex[:8]}@example.io", PASSWORD))
                outcome = name
            except psycopg.Error as e:
                outcome = f"{name}:{e.sqlstate}"
        with lock:
            done.append(outcome)

    threads = []
    for name, wait, pause in (("A", "250ms", 0.1), ("B", None, 0.1), ("C", None, 0.3), ("D", None, 0)):
        threads.append(threading.Thread(target=sign_up, args=(name, wait)))
        threads[-1].start()
        time.sleep(pause)
    for th in threads:
        th.join()
    t.join()
    holder.close()
    assert done == ["A:53000", "B", "C", "D"]


def hashing_threads(pid):
    """(scheduling policy, nice) of each hashing thread of backend pid."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != "auth_ext hash":
                    continue
            found.append((os.sched_getscheduler(int(tid)), os.getpriority(os.PRIO_PROCESS, int(tid))))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return found


@pytest.mark.parametrize("priority, expected", [
    (None, (os.SCHED_OTHER, 19)),  # the default: low
    ("'normal'", (os.SCHED_OTHER, 0)),
    ("'idle'", (os.SCHED_IDLE, 19)),
])
def test_the_hash_runs_at_the_configured_priority(priority, expected):
    system(password_hash_priority=priority)
    slow_hashes()
    holder, pid, t, result = start_slow_sign_up(f"prio-{uuid.uuid4().hex[:8]}@example.io")
    try:
        seen = hashing_threads(pid)
        # The backend itself keeps its own priority.
        assert os.sched_getscheduler(pid) == os.SCHED_OTHER
        assert os.getpriority(os.PRIO_PROCESS, pid) == 0
    finally:
        t.join()
        holder.close()
    assert result["state"] == "ok"
    assert seen == [expected]


@pytest.mark.parametrize("how", ["cancel", "terminate"])
def test_a_waiter_that_is_cancelled_or_terminated_leaves_the_queue(how):
    """A waiter cut short must not stay queued: a stale entry would count as ahead of every
    later caller for good."""
    slow_hashes()
    holder, _, t, _ = start_slow_sign_up(f"holder-{uuid.uuid4().hex[:8]}@example.io")
    waiter, wpid, wt, wresult = None, None, None, {}
    waiter = api()
    wpid = waiter.execute("select pg_backend_pid() as p").fetchone()["p"]

    def go():
        try:
            waiter.execute("set local role anon")
            waiter.execute("select auth.sign_up(%s, %s)", (f"cut-{uuid.uuid4().hex[:8]}@example.io", PASSWORD))
            waiter.commit()
            wresult["state"] = "ok"
        except psycopg.Error as e:
            wresult["state"] = e.sqlstate

    wt = threading.Thread(target=go)
    wt.start()
    time.sleep(0.3)
    with admin() as c:
        c.execute(f"select pg_{how}_backend(%s)", (wpid,))
    wt.join()
    waiter.close()
    assert wresult.get("state") != "ok"
    t.join()
    holder.close()
    # With the holder done and the waiter gone, a call with no patience at all gets a place.
    system(argon2_iterations=None)
    with admin() as c:
        with c.transaction():
            c.execute("set local auth.password_hash_wait = 0")
            c.execute("select auth.sign_up(%s, %s)", (f"after-{uuid.uuid4().hex[:8]}@example.io", PASSWORD))


def test_a_password_change_that_gets_no_place_compares_and_writes_nothing():
    [e] = accounts(1)
    with api() as c:
        c.execute("set local role anon")
        token = c.execute("select auth.sign_in(%s, %s) ->> 'access_token' as t", (e, PASSWORD)).fetchone()["t"]
        c.commit()
    slow_hashes()
    holder, _, t, _ = start_slow_sign_up(f"holder-{uuid.uuid4().hex[:8]}@example.io")
    try:
        with admin() as c:
            with pytest.raises(psycopg.Error) as err:
                with c.transaction():
                    c.execute("set local auth.password_hash_wait = '50ms'")
                    c.execute("select auth.authenticate(%s)", (token,))
                    c.execute("select auth.update_user('{\"password\": \"a-new-password-1\"}')")
    finally:
        t.join()
        holder.close()
    assert err.value.sqlstate == "53000"
    with admin() as c:
        uid = c.execute("select id from auth.users where email = %s", (e,)).fetchone()["id"]
        assert c.execute("select count(*) as n from auth.audit_log_entries where payload ->> 'action' = "
                         "'user_password_checked' and payload ->> 'actor_id' = %s", (str(uid),)).fetchone()["n"] == 0
        assert c.execute("select count(*) as n from auth.sign_in_failures where key like %s",
                         (f"%{uid}%",)).fetchone()["n"] == 0
    with api() as c:
        c.execute("set local role anon")
        c.execute("select auth.sign_in(%s, %s)", (e, PASSWORD))


@pytest.mark.parametrize("how", ["cancel", "terminate"])
def test_a_cancelled_or_terminated_backend_gives_its_place_back(how):
    slow_hashes()
    holder, pid, t, result = start_slow_sign_up(f"gone-{uuid.uuid4().hex[:8]}@example.io")
    with admin() as c:
        c.execute(f"select pg_{how}_backend(%s)", (pid,))
    t.join()
    holder.close()
    assert result.get("state") != "ok"
    assert wait_until(lambda: running() == 0, 10), "the place came back"
    system(argon2_iterations=None)
    [e] = accounts(1)
    with api() as c:
        c.execute("set local role anon")
        c.execute("select auth.sign_in(%s, %s)", (e, PASSWORD))


def test_a_crashed_backend_frees_its_place():
    """kill -9 of a hashing backend: the server restarts and every place is free."""
    slow_hashes()
    holder, pid, t, _ = start_slow_sign_up(f"crash-{uuid.uuid4().hex[:8]}@example.io")
    os.kill(pid, signal.SIGKILL)
    t.join()
    holder.close()

    def back():
        try:
            return running() == 0
        except psycopg.Error:
            return False

    assert wait_until(back, 30), "the server came back with every place free"
    system(argon2_iterations=None)
    [e] = accounts(1)
    with api() as c:
        c.execute("set local role anon")
        c.execute("select auth.sign_in(%s, %s)", (e, PASSWORD))
