"""ALTER EXTENSION auth_ext UPDATE from the previous version: data and tokens survive,
the new features work, and the upgraded schema is exactly a fresh install's.
scripts/test.sh installs the released scripts kept in sql/archive beside the current version."""

import base64
import hashlib

import psycopg
import pytest

from conftest import admin

OLD, NEW = "auth_upgrade_old", "auth_upgrade_new"

# Everything the extension defines in the auth schema, as comparable text.
FINGERPRINT = """
select string_agg(x, E'\\n' order by x) from (
  select 'function ' || p.oid::regprocedure || ' ' || pg_get_functiondef(p.oid) || ' acl ' || coalesce(p.proacl::text, '')
    from pg_proc p where p.pronamespace = 'auth'::regnamespace
  union all
  select 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' || coalesce(column_default, '')
         || ' ' || is_nullable || ' ' || coalesce(generation_expression, '')
    from information_schema.columns where table_schema = 'auth'
  union all
  select 'index ' || indexdef from pg_indexes where schemaname = 'auth'
  union all
  select 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    from pg_constraint where connamespace = 'auth'::regnamespace
  union all
  select 'trigger ' || pg_get_triggerdef(t.oid)
    from pg_trigger t join pg_class c on c.oid = t.tgrelid
   where c.relnamespace = 'auth'::regnamespace and not t.tgisinternal
  union all
  select 'relation ' || relname || ' ' || relkind::text || ' acl ' || coalesce(relacl::text, '')
    from pg_class where relnamespace = 'auth'::regnamespace
  union all
  select 'comment ' || d.classoid::regclass || ' ' || d.objoid || ' ' || d.description
    from pg_description d
   where (d.classoid = 'pg_class'::regclass and d.objoid in (select oid from pg_class where relnamespace = 'auth'::regnamespace))
      or (d.classoid = 'pg_proc'::regclass and d.objoid in (select oid from pg_proc where pronamespace = 'auth'::regnamespace))
  union all
  select 'dumped ' || c::regclass from pg_extension e, unnest(e.extconfig) c where e.extname = 'auth_ext'
) s(x)
"""


def fresh(name, version=None):
    with psycopg.connect(dbname="postgres", autocommit=True) as c:
        c.execute(f'drop database if exists "{name}" with (force)')
        c.execute(f'create database "{name}"')
    with admin(name) as c:
        c.execute("create extension auth_ext" + (f" version '{version}'" if version else ""))


def fingerprint(db):
    with admin(db) as c:
        text = c.execute(FINGERPRINT).fetchone()["string_agg"]
    # Object ids differ between databases; comments are compared by their text alone.
    return sorted(line.split(" ", 3)[-1] if line.startswith("comment ") else line for line in text.split("\n"))


@pytest.mark.parametrize("old", ["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0"])
def test_update_from_a_previous_version_keeps_everything_and_matches_a_fresh_install(old):
    fresh(OLD, old)
    with admin(OLD) as c:
        assert c.execute("select extversion from pg_extension where extname = 'auth_ext'").fetchone()["extversion"] == old
        c.execute("select auth.set_jwt_secret('upgrade-secret-upgrade-secret-upgrade-0')")
        sessions = [
            c.execute("select auth.sign_up(%s, %s) as s", (f"up{i}@example.io", f"upgrade-password-{i}")).fetchone()["s"]
            for i in range(3)
        ]
    pending = None
    if old == "0.4.0":
        # A code sent before the update (stored as a plain SHA-256 then) still works after it.
        with admin(OLD) as c:
            c.execute("select auth.sign_in_with_otp('up1@example.io')")
            pending = c.execute("select message -> 'email_data' ->> 'token' as t from auth.email_outbox "
                                "order by id desc limit 1").fetchone()["t"]
    with admin(OLD) as c:
        c.execute("alter extension auth_ext update")
        assert c.execute("select extversion from pg_extension where extname = 'auth_ext'").fetchone()["extversion"] == "0.8.0"
    if pending:
        with admin(OLD) as c:
            row = c.execute("select o.code_hash <> encode(sha256(convert_to(o.id::text || ':' || %s, 'UTF8')), 'hex') as keyed "
                            "from auth.one_time_tokens o", (pending,)).fetchone()
            assert row["keyed"], "the stored code is a keyed hash after the update"
            s = c.execute("select auth.verify_otp('up1@example.io', %s, 'email') as s", (pending,)).fetchone()["s"]
            assert s["user"]["email"] == "up1@example.io"
    with admin(OLD) as c:
        for i, s in enumerate(sessions):
            assert c.execute("select auth.sign_in(%s, %s) as s", (f"up{i}@example.io", f"upgrade-password-{i}")).fetchone()["s"]
            assert c.execute("select auth.verify_jwt(%s) ->> 'email' as e", (s["access_token"],)).fetchone()["e"] == f"up{i}@example.io"
            assert c.execute("select auth.refresh(%s) ->> 'token_type' as t", (s["refresh_token"],)).fetchone()["t"] == "bearer"
        # 0.2.0's lockout works on the upgraded database.
        c.execute("set auth.lockout_max_failures = 2")
        for _ in range(2):
            with pytest.raises(psycopg.Error) as e:
                c.execute("select auth.sign_in('up0@example.io', 'wrong-password')")
            assert e.value.sqlstate == "28P01"
        with pytest.raises(psycopg.Error) as e:
            c.execute("select auth.sign_in('up0@example.io', 'upgrade-password-0')")
        assert e.value.sqlstate == "53400"
        c.execute("reset auth.lockout_max_failures")
        # 0.3.0's keys: the old HS256 key got a kid, tokens issued before the update (no
        # kid) still verify after a rotation to ES256, and new tokens name the new key.
        assert c.execute("select count(*) as n from auth.signing_keys where kid is null").fetchone()["n"] == 0
        kid = c.execute("select auth.create_signing_key('ES256') ->> 'kid' as k").fetchone()["k"]
        c.execute("select auth.promote_signing_key(%s)", (kid,))
        assert c.execute("select auth.verify_jwt(%s) ->> 'email' as e", (sessions[1]["access_token"],)).fetchone()["e"] == "up1@example.io"
        assert c.execute("select auth.jwks() -> 'keys' -> 0 ->> 'kid' as k").fetchone()["k"] == kid
        # 0.4.0's account flows on a user from before the update: recovery through the
        # outbox, then the new password.
        c.execute("select auth.recover('up2@example.io')")
        link = c.execute("select message -> 'email_data' ->> 'token_hash' as t from auth.email_outbox "
                         "where recipient = 'up2@example.io' order by id desc limit 1").fetchone()["t"]
        s = c.execute("select auth.verify_otp(null, %s, 'recovery') as s", (link,)).fetchone()["s"]
        c.execute("select set_config('request.jwt.claims', auth.verify_jwt(%s)::text, false)", (s["access_token"],))
        c.execute("""select auth.update_user('{"password": "upgraded-password-2"}')""")
        assert c.execute("select auth.sign_in('up2@example.io', 'upgraded-password-2') ->> 'token_type' as t").fetchone()["t"] == "bearer"
        # 0.6.0's PKCE flow on a user from before the update: a magic link with a challenge,
        # opened for a code, exchanged with the verifier.
        verifier = "upgrade-verifier-" + "v" * 40
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        c.execute("select auth.sign_in_with_otp('up0@example.io', code_challenge => %s, code_challenge_method => 's256')",
                  (challenge,))
        link = c.execute("select message -> 'email_data' ->> 'token_hash' as t from auth.email_outbox "
                         "where recipient = 'up0@example.io' order by id desc limit 1").fetchone()["t"]
        assert link.startswith("pkce_")
        code = c.execute("select auth.verify_link(%s, 'magiclink') ->> 'code' as c", (link,)).fetchone()["c"]
        s = c.execute("select auth.exchange_code_for_session(%s, %s) as s", (code, verifier)).fetchone()["s"]
        assert s["user"]["email"] == "up0@example.io"
    fresh(NEW)
    assert fingerprint(OLD) == fingerprint(NEW)
