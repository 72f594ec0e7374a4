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


@pytest.fixture(scope="session", autouse=True)
def database():
    fresh_database(DB)
    with admin() as c:
        c.execute(
            f"""do $$ begin
                  if not exists (select from pg_roles where rolname = '{API_ROLE}') then
                    create role {API_ROLE} login noinherit password '{API_PASSWORD}';
                  end if;
                end $$"""
        )
        c.execute(f"grant anon, authenticated to {API_ROLE}")
    return DB


@pytest.fixture()
def secret():
    with admin() as c:
        return c.execute("select secret from auth.signing_keys where state = 'in_use'").fetchone()["secret"]
