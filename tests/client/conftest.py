"""Client tests over real connections. They run inside pg_virtualenv, whose PG* variables
point at a throwaway cluster as a superuser; API traffic uses a non-superuser login role
that plays PostgREST's authenticator."""

import os
import subprocess

import psycopg
import pytest
from psycopg.rows import dict_row

DB = "auth_client"
API_ROLE = "client_authenticator"
API_PASSWORD = "client-authenticator-password"


def admin(dbname=DB):
    return psycopg.connect(dbname=dbname, autocommit=True, row_factory=dict_row)


def api(dbname=DB):
    """A connection as the authenticator role: not a superuser, NOINHERIT, granted anon and
    authenticated, like PostgREST's."""
    return psycopg.connect(dbname=dbname, user=API_ROLE, password=API_PASSWORD, row_factory=dict_row)


def pg_bindir():
    pg_config = os.environ.get("PG_CONFIG", "/usr/lib/postgresql/15/bin/pg_config")
    return subprocess.run([pg_config, "--bindir"], check=True, capture_output=True, text=True).stdout.strip()


def drop_database(*names):
    with psycopg.connect(dbname="postgres", autocommit=True) as c:
        for name in names:
            c.execute(f'drop database if exists "{name}" with (force)')


def fresh_database(name):
    drop_database(name)
    with psycopg.connect(dbname="postgres", autocommit=True) as c:
        c.execute(f'create database "{name}"')
    with admin(name) as c:
        c.execute("create extension auth_ext")


def login_role(c, name, password):
    """A NOINHERIT login role, as an API layer's authenticator is (roles are cluster-wide)."""
    c.execute(
        f"""do $$ begin
              if not exists (select from pg_roles where rolname = '{name}') then
                create role {name} login noinherit password '{password}';
              end if;
            end $$"""
    )


@pytest.fixture(scope="session", autouse=True)
def database():
    fresh_database(DB)
    with admin() as c:
        login_role(c, API_ROLE, API_PASSWORD)
        c.execute(f"grant anon, authenticated to {API_ROLE}")
    return DB


@pytest.fixture()
def secret():
    with admin() as c:
        return c.execute("select secret from auth.signing_keys where state = 'in_use'").fetchone()["secret"]


SERVER_DB = "auth_http"
SERVER_ROLE = "auth_server"
SERVER_PASSWORD = "auth-server-password"
SERVER_BIN = os.environ.get("AUTH_SERVER_BIN", "target/debug/auth-ext-server")


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_dsn(dbname=SERVER_DB, user=SERVER_ROLE, password=SERVER_PASSWORD, port=None):
    host = os.environ.get("PGHOST", "localhost")
    return f"host={host} port={port or os.environ.get('PGPORT', '5432')} dbname={dbname} user={user} password={password}"


class Server:
    """A running auth-ext-server."""

    def __init__(self, url, anon, service, proc):
        self.url, self.anon, self.service, self.proc = url, anon, service, proc

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_server(dsn, anon, service, log=None, **env):
    import time
    import urllib.request

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {
        **os.environ,
        "AUTH_DATABASE_URL": dsn,
        "AUTH_LISTEN": f"127.0.0.1:{port}",
        "AUTH_LOG_FORMAT": "text",
        "AUTH_LOG": "warn",
        **env,
    }
    proc = subprocess.Popen([SERVER_BIN], env=environment, stdout=log, stderr=log)
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                if r.status == 200:
                    return Server(url, anon, service, proc)
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"auth-ext-server exited with {proc.returncode}")
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("auth-ext-server did not become healthy")


def server_database(name=SERVER_DB):
    """A database for the server: the extension, the server's login role (NOINHERIT, granted
    the API roles, trusting the one hop the server writes), anonymous sign-ins on. Returns
    (anon key, service key)."""
    fresh_database(name)
    with admin(name) as c:
        login_role(c, SERVER_ROLE, SERVER_PASSWORD)
        c.execute(f"grant anon, authenticated, service_role, auth_oauth to {SERVER_ROLE}")
        c.execute(f"alter role {SERVER_ROLE} set auth.trusted_proxies = 1")
        c.execute(f'alter database "{name}" set auth.anonymous_sign_ins = on')
        c.execute(f'alter database "{name}" set auth.site_url = \'http://localhost:3000\'')
        anon = c.execute("""select auth.sign_jwt('{"role": "anon"}')""").fetchone()["sign_jwt"]
        service = c.execute("""select auth.sign_jwt('{"role": "service_role"}')""").fetchone()["sign_jwt"]
    return anon, service


@pytest.fixture(scope="session")
def http_server():
    anon, service = server_database()
    server = start_server(server_dsn(), anon, service)
    server.db = SERVER_DB
    yield server
    server.stop()
