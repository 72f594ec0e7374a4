"""A streaming hot standby on loopback: token checks and the claim helpers work there;
calls that write refuse at once with a clear read-only error (and never wait for a
background worker that cannot start during recovery)."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import psycopg
import pytest

from conftest import DB, admin, pg_bindir


def as_postgres(*cmd, **kw):
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else ["sudo", "-u", "postgres"]
    return subprocess.run(prefix + list(cmd), check=True, capture_output=True, text=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def standby():
    bindir = pg_bindir()
    root = tempfile.mkdtemp(prefix="auth_ext_standby_")
    shutil.chown(root, "postgres")
    data = os.path.join(root, "data")
    env = {**os.environ}
    as_postgres("env", f"PGPASSWORD={env.get('PGPASSWORD', '')}", f"{bindir}/pg_basebackup",
                "-h", env.get("PGHOST", "localhost"), "-p", env.get("PGPORT", "5432"), "-U", "postgres",
                "-D", data, "-R", "-X", "stream", "-c", "fast")
    port = free_port()
    # A hot standby needs at least the primary's max_connections (the tests' cluster has 200).
    with admin("postgres") as c:
        conns = c.execute("show max_connections").fetchone()["max_connections"]
    as_postgres("sh", "-c", f"printf \"listen_addresses = ''\\nhot_standby = on\\nmax_connections = {conns}\\n\" > {data}/postgresql.conf && "
                            f"printf 'local all all trust\\n' > {data}/pg_hba.conf")
    as_postgres(f"{bindir}/pg_ctl", "-D", data, "-o", f"-p {port} -k {root}", "-l", f"{root}/log", "start", "-w")
    try:
        yield {"host": root, "port": port}
    finally:
        as_postgres(f"{bindir}/pg_ctl", "-D", data, "stop", "-m", "fast")
        shutil.rmtree(root, ignore_errors=True)


def standby_conn(sb):
    return psycopg.connect(host=sb["host"], port=sb["port"], user="postgres", dbname=DB, autocommit=True)


def wait_for_replay(sb, email):
    deadline = time.time() + 30
    while time.time() < deadline:
        with standby_conn(sb) as c:
            if c.execute("select count(*) from auth.users where email = %s", (email,)).fetchone()[0]:
                return
        time.sleep(0.1)
    raise AssertionError("the standby never replayed the sign-up")


def test_reads_work_and_writes_refuse_cleanly_on_a_hot_standby(standby):
    email = f"replica-{uuid.uuid4().hex[:8]}@example.io"
    with admin() as a:
        session = a.execute("select auth.sign_up(%s, %s) as s", (email, "replica-password-1")).fetchone()["s"]
        anon_key = a.execute("""select auth.sign_jwt('{"role": "anon"}') as k""").fetchone()["k"]
    wait_for_replay(standby, email)
    with standby_conn(standby) as c:
        assert c.execute("select pg_is_in_recovery()").fetchone()[0] is True
        claims = c.execute("select auth.verify_jwt(%s)", (session["access_token"],)).fetchone()[0]
        assert claims["email"] == email
        with c.transaction():
            c.execute("select auth.authenticate(%s)", (session["access_token"],))
            who, uid = c.execute("select current_user, auth.uid()::text").fetchone()
            assert (who, uid) == ("authenticated", session["user"]["id"])
        # What the HTTP server asks per request: the API key and the bearer, and /settings.
        with c.transaction():
            c.execute("select auth.authenticate_request(%s, %s)", (anon_key, session["access_token"]))
            who, uid = c.execute("select current_user, auth.uid()::text").fetchone()
            assert (who, uid) == ("authenticated", session["user"]["id"])
        with pytest.raises(psycopg.Error) as e:
            c.execute("select auth.authenticate_request(%s, null)", (session["access_token"],))
        assert e.value.sqlstate == "28000"
        assert c.execute("select auth.settings() -> 'external' -> 'email'").fetchone()[0] is True
        for sql, args in [
            ("select auth.sign_in(%s, %s)", (email, "replica-password-1")),
            ("select auth.sign_in(%s, %s)", (email, "a-wrong-password")),
            ("select auth.sign_up(%s, %s)", ("new-" + email, "replica-password-1")),
            ("select auth.refresh(%s)", (session["refresh_token"],)),
        ]:
            started = time.time()
            with pytest.raises(psycopg.Error) as e:
                c.execute(sql, args)
            assert e.value.sqlstate == "25006", e.value.diag.message_primary
            assert e.value.diag.message_primary.startswith("read_only: ")
            assert time.time() - started < 5


def test_a_key_change_on_the_primary_reaches_a_standby_backend_that_cached_the_old_key(standby, secret):
    import jwt

    now = int(time.time())
    old = jwt.encode({"sub": "k", "exp": now + 60}, secret, algorithm="HS256")
    new_secret = "replica-rotated-" + uuid.uuid4().hex
    new = jwt.encode({"sub": "k", "exp": now + 60}, new_secret, algorithm="HS256")
    with standby_conn(standby) as c:
        assert c.execute("select auth.verify_jwt(%s) ->> 'sub'", (old,)).fetchone()[0] == "k"  # cached
        try:
            with admin() as a:
                a.execute("select auth.set_jwt_secret(%s)", (new_secret,))
            deadline = time.time() + 30
            while True:
                try:
                    c.execute("select auth.verify_jwt(%s)", (new,))
                    break
                except psycopg.Error:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.05)
            with pytest.raises(psycopg.Error) as e:
                c.execute("select auth.verify_jwt(%s)", (old,))
            assert e.value.diag.message_primary == "bad_jwt: invalid signature"
        finally:
            with admin() as a:
                a.execute("select auth.set_jwt_secret(%s)", (secret,))
