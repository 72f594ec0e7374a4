"""Hooks owned by an unprivileged role: when they fire they run as supabase_auth_admin (or
as their owner, for a SECURITY DEFINER hook), never with the extension owner's rights. The
previous release ran them as the owner, so the role that wrote the hook became a superuser
the first time anyone signed in."""

import uuid

import psycopg
import pytest

from conftest import DB, admin, api

OWNER = "hook_writer"
PASSWORD = "hook-user-password-1"


@pytest.fixture()
def hook_writer():
    with admin() as c:
        c.execute(f"""do $$ begin
              if not exists (select from pg_roles where rolname = '{OWNER}') then
                create role {OWNER} login password 'x';
              end if; end $$""")
        c.execute(f"alter role {OWNER} nosuperuser")
        c.execute(f"create schema if not exists {OWNER} authorization {OWNER}")
        c.execute(f"grant usage on schema {OWNER} to supabase_auth_admin")
        c.execute(f"create table if not exists {OWNER}.fired (who text, superuser boolean)")
        c.execute(f"alter table {OWNER}.fired owner to {OWNER}")
        c.execute(f"grant insert on {OWNER}.fired to public")
        c.execute(f"truncate {OWNER}.fired")
    yield
    with admin() as c:
        c.execute("load 'auth_ext'")
        c.execute(f"alter database {DB} reset auth.hook_custom_access_token")
        c.execute(f"alter database {DB} reset auth.hook_send_email")
        c.execute(f"drop schema {OWNER} cascade")
        c.execute(f"alter role {OWNER} nosuperuser")


def create_as_writer(sql):
    with psycopg.connect(dbname=DB, user=OWNER, password="x", autocommit=True) as c:
        c.execute(sql)


ESCALATE = f"""
  insert into {OWNER}.fired select current_user, rolsuper from pg_catalog.pg_roles where rolname = current_user;
  begin
    execute 'alter role {OWNER} superuser';
  exception when others then null;
  end;"""


def is_superuser():
    with admin() as c:
        return c.execute("select rolsuper from pg_roles where rolname = %s", (OWNER,)).fetchone()["rolsuper"]


def fired():
    with admin() as c:
        return [(r["who"], r["superuser"]) for r in c.execute(f"select * from {OWNER}.fired").fetchall()]


@pytest.mark.parametrize("definer", [False, True])
def test_a_custom_access_token_hook_runs_without_the_owners_rights(hook_writer, definer):
    create_as_writer(f"""create function {OWNER}.claims_hook(event jsonb) returns jsonb
        language plpgsql {'security definer' if definer else ''} as $$
        begin {ESCALATE}
          return jsonb_build_object('claims', event -> 'claims');
        end $$""")
    email = f"hooked-{uuid.uuid4().hex[:8]}@example.io"
    with admin() as c:
        c.execute("select auth.sign_up(%s, %s)", (email, PASSWORD))
        c.execute(f"alter database {DB} set auth.hook_custom_access_token = '{OWNER}.claims_hook'")
    with admin() as c:
        s = c.execute("select auth.sign_in(%s, %s) as s", (email, PASSWORD)).fetchone()["s"]
    assert s["access_token"]
    assert fired() == [(OWNER if definer else "supabase_auth_admin", False)]
    assert not is_superuser()


def test_a_send_email_hook_runs_without_the_owners_rights(hook_writer):
    create_as_writer(f"""create function {OWNER}.mail_hook(event jsonb) returns jsonb
        language plpgsql as $$
        begin {ESCALATE}
          return '{{}}'::jsonb;
        end $$""")
    email = f"mailed-{uuid.uuid4().hex[:8]}@example.io"
    with admin() as c:
        c.execute("select auth.sign_up(%s, %s)", (email, PASSWORD))
        c.execute(f"alter database {DB} set auth.hook_send_email = '{OWNER}.mail_hook'")
    with admin() as c:
        c.execute("select auth.recover(%s)", (email,))
    assert fired() == [("supabase_auth_admin", False)]
    assert not is_superuser()


def test_a_hook_role_with_too_many_rights_runs_no_hook(hook_writer):
    """Vetted before every call: a hook role that could reach the auth tables is refused."""
    create_as_writer(f"""create function {OWNER}.claims_hook(event jsonb) returns jsonb
        language plpgsql as $$ begin {ESCALATE} return jsonb_build_object('claims', event -> 'claims'); end $$""")
    email = f"strong-{uuid.uuid4().hex[:8]}@example.io"
    with admin() as c:
        c.execute("select auth.sign_up(%s, %s)", (email, PASSWORD))
        c.execute(f"alter database {DB} set auth.hook_custom_access_token = '{OWNER}.claims_hook'")
    for grant, revoke in [("grant pg_read_all_data to supabase_auth_admin", "revoke pg_read_all_data from supabase_auth_admin"),
                          ("alter role supabase_auth_admin createrole", "alter role supabase_auth_admin nocreaterole")]:
        with admin() as c:
            c.execute(grant)
        try:
            with admin() as c, pytest.raises(psycopg.Error) as e:
                c.execute("select auth.sign_in(%s, %s)", (email, PASSWORD))
            assert e.value.sqlstate == "39000"
            assert "hooks run as the role supabase_auth_admin, which" in e.value.diag.message_primary
        finally:
            with admin() as c:
                c.execute(revoke)
    assert fired() == []


def test_what_a_hook_sets_does_not_outlive_it(hook_writer):
    """A hook that changes the session's search_path to put its own operator first: the
    setting is thrown away when the hook returns, so the extension's SQL that runs after it
    (with the owner's rights) never reaches the operator. The previous release kept it."""
    create_as_writer(f"""create function {OWNER}.send_hook(event jsonb) returns jsonb language plpgsql as $$
        begin
          perform pg_catalog.set_config('search_path', '{OWNER}, pg_catalog', false);
          perform pg_catalog.set_config('request.jwt.claims', '{{"sub": "planted"}}', false);
          return '{{}}';
        end $$""")
    create_as_writer(f"""create function {OWNER}.evil_eq(a text, b text) returns boolean language plpgsql as $$
        begin {ESCALATE}
          return a operator(pg_catalog.=) b;
        end $$""")
    create_as_writer(f"create operator {OWNER}.= (leftarg = text, rightarg = text, function = {OWNER}.evil_eq)")
    email = f"leak-{uuid.uuid4().hex[:8]}@example.io"
    with admin() as c:
        c.execute("select auth.sign_up(%s, %s)", (email, PASSWORD))
        c.execute(f"alter database {DB} set auth.hook_send_email = '{OWNER}.send_hook'")
    with admin() as c:
        before = c.execute("select current_setting('search_path') as p").fetchone()["p"]
        c.execute("select auth.recover(%s)", (email,))
        c.execute("select auth.sign_in_with_otp(%s, false)", (email,))
        after = c.execute("select current_setting('search_path') as p, "
                          "current_setting('request.jwt.claims', true) as claims").fetchone()
    assert after["p"] == before
    assert after["claims"] in (None, "")
    assert fired() == []
    assert not is_superuser()


def test_a_session_with_temporary_tables_runs_no_hook(hook_writer):
    """The hook runs in the caller's session: a temporary table named like the one a hook
    reads would feed it the caller's rows (claims in the tokens we sign)."""
    create_as_writer(f"""create function {OWNER}.claims_hook(event jsonb) returns jsonb
        language plpgsql as $$
        declare r text;
        begin
          set local search_path = {OWNER};
          select role into r from user_roles where user_id = (event ->> 'user_id')::uuid;
          return jsonb_build_object('claims', (event -> 'claims') || jsonb_build_object('user_role', coalesce(r, 'none')));
        end $$""")
    with admin() as c:
        c.execute(f"create table {OWNER}.user_roles (user_id uuid, role text)")
        c.execute(f"grant select on {OWNER}.user_roles to supabase_auth_admin")
    email = f"temp-{uuid.uuid4().hex[:8]}@example.io"
    with admin() as c:
        uid = c.execute("select auth.sign_up(%s, %s) -> 'user' ->> 'id' as id", (email, PASSWORD)).fetchone()["id"]
        c.execute(f"alter database {DB} set auth.hook_custom_access_token = '{OWNER}.claims_hook'")
    with api() as c:
        c.execute("create temporary table user_roles (user_id uuid, role text)")
        c.execute("insert into pg_temp.user_roles values (%s, 'admin')", (uid,))
        c.execute("grant select on pg_temp.user_roles to public")
        c.commit()
        c.execute("set local role anon")
        with pytest.raises(psycopg.Error) as e:
            c.execute("select auth.sign_in(%s, %s)", (email, PASSWORD))
        c.rollback()
        assert e.value.sqlstate == "39000"
        assert "temporary tables or types" in e.value.diag.message_primary
        c.execute("drop table pg_temp.user_roles")
        c.commit()
        c.execute("set local role anon")
        s = c.execute("select auth.sign_in(%s, %s) as s", (email, PASSWORD)).fetchone()["s"]
        c.commit()
    with admin() as c:
        role = c.execute("select auth.verify_jwt(%s) ->> 'user_role' as r", (s["access_token"],)).fetchone()["r"]
    assert role == "none"
