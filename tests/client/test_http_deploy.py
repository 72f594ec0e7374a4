"""auth-ext-server as it is deployed: two copies sharing one database, and behind PgBouncer in
transaction pooling mode (where consecutive transactions of one client connection land on
different server connections, and a session-level setting would leak between requests)."""

import os
import shutil
import subprocess
import tempfile
import threading
import time

import httpx
import pytest

from conftest import SERVER_DB, SERVER_PASSWORD, SERVER_ROLE, free_port, server_dsn, start_server

PASSWORD = "correct horse battery staple"


def headers(server, token=None):
    return {"apikey": server.anon, "Authorization": f"Bearer {token or server.anon}"}


def flow(a, b, email):
    """Sign up through one copy, continue through the other, at every step."""
    r = httpx.post(f"{a.url}/signup", headers=headers(a), json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    r = httpx.post(f"{b.url}/token?grant_type=password", headers=headers(b), json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    session = r.json()
    r = httpx.get(f"{a.url}/user", headers=headers(a, session["access_token"]))
    assert r.status_code == 200 and r.json()["email"] == email
    r = httpx.post(f"{a.url}/token?grant_type=refresh_token", headers=headers(a),
                   json={"refresh_token": session["refresh_token"]})
    assert r.status_code == 200, r.text
    refreshed = r.json()
    r = httpx.get(f"{b.url}/user", headers=headers(b, refreshed["access_token"]))
    assert r.status_code == 200
    r = httpx.post(f"{b.url}/logout", headers=headers(b, refreshed["access_token"]))
    assert r.status_code == 204
    r = httpx.post(f"{a.url}/token?grant_type=refresh_token", headers=headers(a),
                   json={"refresh_token": refreshed["refresh_token"]})
    assert r.status_code == 400
    return session


def test_two_copies_share_one_database(http_server):
    other = start_server(server_dsn(), http_server.anon, http_server.service)
    try:
        flow(http_server, other, "two-copies@example.com")
        flow(other, http_server, "two-copies-back@example.com")
        # A refresh token rotated through one copy is already used at the other.
        r = httpx.post(f"{other.url}/token?grant_type=password", headers=headers(other),
                       json={"email": "two-copies@example.com", "password": PASSWORD})
        first = r.json()["refresh_token"]
        assert httpx.post(f"{http_server.url}/token?grant_type=refresh_token", headers=headers(http_server),
                          json={"refresh_token": first}).status_code == 200
    finally:
        other.stop()


@pytest.fixture(scope="module")
def pgbouncer():
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        pytest.fail("pgbouncer is not installed (scripts/deps.sh installs it)")
    state = tempfile.mkdtemp(prefix="auth_pgbouncer_")
    os.chmod(state, 0o755)
    port = free_port()
    host = os.environ.get("PGHOST", "localhost")
    with open(f"{state}/users.txt", "w") as f:
        f.write(f'"{SERVER_ROLE}" "{SERVER_PASSWORD}"\n')
    with open(f"{state}/pgbouncer.ini", "w") as f:
        f.write(f"""[databases]
{SERVER_DB} = host={host} port={os.environ.get('PGPORT', '5432')} dbname={SERVER_DB}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = plain
auth_file = {state}/users.txt
pool_mode = transaction
default_pool_size = 3
max_client_conn = 100
ignore_startup_parameters = extra_float_digits,application_name
""")
    for name in os.listdir(state):
        os.chmod(f"{state}/{name}", 0o644)
    if os.geteuid() == 0:
        shutil.chown(state, "postgres")
    cmd = [binary, f"{state}/pgbouncer.ini"]
    if os.geteuid() == 0:
        cmd = [binary, "-u", "postgres", f"{state}/pgbouncer.ini"]
    proc = subprocess.Popen(cmd)
    for _ in range(100):
        try:
            import socket

            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(state, ignore_errors=True)


def test_through_pgbouncer_in_transaction_mode(http_server, pgbouncer):
    dsn = f"host=127.0.0.1 port={pgbouncer} dbname={SERVER_DB} user={SERVER_ROLE} password={SERVER_PASSWORD}"
    # More server connections than PgBouncer has: requests interleave on its three.
    s = start_server(dsn, http_server.anon, http_server.service, AUTH_POOL_SIZE="8")
    try:
        session = flow(s, s, "bouncer@example.com")
        r = httpx.post(f"{s.url}/token?grant_type=password", headers=headers(s),
                       json={"email": "bouncer@example.com", "password": PASSWORD})
        token = r.json()["access_token"]
        failures = []

        def user_requests():
            with httpx.Client() as c:
                for _ in range(25):
                    r = c.get(f"{s.url}/user", headers=headers(s, token))
                    if r.status_code != 200 or r.json()["email"] != "bouncer@example.com":
                        failures.append(("user", r.status_code, r.text[:200]))

        def anonymous_requests():
            # Nothing of the user's requests (role, claims) may reach an anonymous one.
            with httpx.Client() as c:
                for _ in range(25):
                    r = c.get(f"{s.url}/user", headers=headers(s))
                    if r.status_code < 400:
                        failures.append(("anon", r.status_code, r.text[:200]))

        threads = [threading.Thread(target=user_requests) for _ in range(4)]
        threads += [threading.Thread(target=anonymous_requests) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        assert session["user"]["email"] == "bouncer@example.com"
    finally:
        s.stop()
