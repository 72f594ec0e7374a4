"""Crash safety: kill -9 the postmaster during a burst of concurrent sign-ups. After
crash recovery every sign-up that was acknowledged signs in, and no user is half-made
(each has its identity and its first session). A dedicated throwaway cluster."""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import psycopg
import pytest

from conftest import pg_bindir
from test_replica import as_postgres, free_port


@pytest.fixture()
def cluster():
    bindir = pg_bindir()
    root = tempfile.mkdtemp(prefix="auth_ext_crash_")
    shutil.chown(root, "postgres")
    data = os.path.join(root, "data")
    as_postgres(f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust")
    port = free_port()

    def start():
        as_postgres(f"{bindir}/pg_ctl", "-D", data, "-o", f"-p {port} -k {root} -c listen_addresses=''",
                    "-l", f"{root}/log", "start", "-w")

    start()
    try:
        yield {"host": root, "port": port, "data": data, "start": start}
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", f"{bindir}/pg_ctl", "-D", data, "stop", "-m", "immediate"]
                       if os.geteuid() == 0 else ["sudo", "-u", "postgres", f"{bindir}/pg_ctl", "-D", data, "stop", "-m", "immediate"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def connect(c, **kw):
    return psycopg.connect(host=c["host"], port=c["port"], user="postgres", dbname="postgres", **kw)


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_kill_9_during_concurrent_sign_ups_loses_no_acknowledged_user(cluster):
    with connect(cluster, autocommit=True) as c:
        c.execute("create extension auth_ext")
    acknowledged = []
    stop = threading.Event()

    def sign_ups(worker):
        try:
            with connect(cluster, autocommit=True) as c:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    email = f"crash-{worker}-{i}@example.io"
                    c.execute("select auth.sign_up(%s, %s)", (email, f"password-{worker}-{i}"))
                    acknowledged.append((email, f"password-{worker}-{i}"))  # committed: autocommit
        except psycopg.Error:
            return  # the crash

    threads = [threading.Thread(target=sign_ups, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.time() + 30
    while len(acknowledged) < 20 and time.time() < deadline:
        time.sleep(0.05)
    with open(os.path.join(cluster["data"], "postmaster.pid")) as f:
        postmaster = int(f.readline())
    backends = children(postmaster)
    os.kill(postmaster, signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    # Backends notice the postmaster's death and exit; any straggler goes the same way,
    # so that no process still holds the old shared memory when the cluster restarts.
    deadline = time.time() + 10
    while any(alive(p) for p in backends) and time.time() < deadline:
        time.sleep(0.1)
    for pid in backends:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    cluster["start"]()  # crash recovery

    assert len(acknowledged) >= 20
    with connect(cluster, autocommit=True) as c:
        half_made = c.execute(
            "select count(*) from auth.users u "
            "where not exists (select 1 from auth.identities i where i.user_id = u.id) "
            "   or not exists (select 1 from auth.sessions s where s.user_id = u.id) "
            "   or not exists (select 1 from auth.refresh_tokens t where t.user_id = u.id::text)"
        ).fetchone()[0]
        assert half_made == 0
        for email, password in acknowledged:
            s = c.execute("select auth.sign_in(%s, %s)", (email, password)).fetchone()[0]
            assert s["user"]["email"] == email
