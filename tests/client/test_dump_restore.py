"""pg_dump and pg_restore keep every account, session and key: users sign in with the same
password afterwards, and tokens issued before the dump still verify."""

import os
import subprocess
import tempfile

import pytest

from conftest import admin, fresh_database, pg_bindir

SOURCE = "auth_dump_source"
TARGET = "auth_dump_target"


@pytest.mark.parametrize("custom_secret", [False, True], ids=["generated-secret", "set-secret"])
def test_dump_and_restore_keeps_accounts_and_keys(custom_secret):
    fresh_database(SOURCE)
    with admin(SOURCE) as c:
        if custom_secret:
            c.execute("select auth.set_jwt_secret('a-secret-shared-with-postgrest-0123456789')")
        tokens = {}
        for i in range(3):
            s = c.execute("select auth.sign_up(%s, %s) as s", (f"dump{i}@example.io", f"password-number-{i}")).fetchone()["s"]
            tokens[i] = s["access_token"]
        before = c.execute("select count(*) as users, (select count(*) from auth.sessions) as sessions, "
                           "(select count(*) from auth.identities) as identities from auth.users").fetchone()
        keys_before = c.execute("select secret, state from auth.signing_keys order by secret").fetchall()

    bindir = pg_bindir()
    with tempfile.TemporaryDirectory() as d:
        dump = os.path.join(d, "db.dump")
        subprocess.run([f"{bindir}/pg_dump", "-Fc", "-d", SOURCE, "-f", dump], check=True)
        with admin("postgres") as c:
            c.execute(f'drop database if exists "{TARGET}" with (force)')
            c.execute(f'create database "{TARGET}"')
        r = subprocess.run([f"{bindir}/pg_restore", "-d", TARGET, dump], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

    with admin(TARGET) as c:
        after = c.execute("select count(*) as users, (select count(*) from auth.sessions) as sessions, "
                          "(select count(*) from auth.identities) as identities from auth.users").fetchone()
        assert after == before
        # Exactly the dumped keys: the key CREATE EXTENSION generated during the restore
        # is gone, not kept beside them.
        keys = c.execute("select secret, state from auth.signing_keys order by secret").fetchall()
        assert keys == keys_before
        for i in range(3):
            s = c.execute("select auth.sign_in(%s, %s) as s", (f"dump{i}@example.io", f"password-number-{i}")).fetchone()["s"]
            assert s["user"]["email"] == f"dump{i}@example.io"
            claims = c.execute("select auth.verify_jwt(%s) as c", (tokens[i],)).fetchone()["c"]
            assert claims["email"] == f"dump{i}@example.io"
        # The restored refresh-token sequence continues past the dumped rows.
        c.execute("select auth.sign_in('dump0@example.io', 'password-number-0')")
