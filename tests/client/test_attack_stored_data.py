"""What the extension stores, attacked: a copy of auth.one_time_tokens must not give away a
live code, no API path may store metadata that a later call cannot read back, rows
written around the API (before the checks existed) must fail cleanly rather
than internally, and a stored password hash cannot make a backend allocate gigabytes."""

import hashlib
import hmac
import json
import time
import uuid

import jwt
import psycopg
import pytest

from conftest import admin, api, drop_database, fresh_database

DB = "auth_attack_stored"
PASSWORD = "stored-password-1"


@pytest.fixture(scope="module", autouse=True)
def stored_database(database):
    fresh_database(DB)
    with admin(DB) as c:
        c.execute(f"alter database {DB} set auth.anonymous_sign_ins = on")
    yield
    drop_database(DB)


def new_email(tag):
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.io"


def rpc(sql, *args, role="anon", claims=None):
    """One PostgREST-style request on a fresh connection, committed."""
    with api(DB) as c:
        c.execute("select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                  (role, json.dumps(claims) if claims else ""))
        row = c.execute(sql, args).fetchone()
        c.commit()
        return next(iter(row.values())) if row else None


def svc(sql, *args):
    """A call as service_role (the admin API)."""
    with admin(DB) as c:
        with c.transaction():
            c.execute("select set_config('role', 'service_role', true)")
            row = c.execute(sql, args).fetchone()
        return next(iter(row.values())) if row else None


def q(sql, *args):
    with admin(DB) as c:
        row = c.execute(sql, args).fetchone()
        return next(iter(row.values())) if row else None


def claims_of(session):
    return jwt.decode(session["access_token"], options={"verify_signature": False})


# a) A copy of auth.one_time_tokens does not give away a live code ---------------------------

def test_a_copy_of_the_one_time_tokens_table_does_not_reveal_the_code():
    email = new_email("otp")
    assert rpc("select auth.sign_in_with_otp(%s)", email) == {}
    with admin(DB) as c:
        sent = c.execute("select message -> 'email_data' ->> 'token' as code, message -> 'email_data' ->> 'token_hash' as link "
                         "from auth.email_outbox where recipient = %s order by id desc limit 1", (email,)).fetchone()
        row = c.execute("select o.id::text as id, o.code_hash, o.token_hash from auth.one_time_tokens o "
                        "join auth.users u on u.id = o.user_id where u.email = %s", (email,)).fetchone()
        secret = c.execute("select secret from auth.secret_keys where purpose = 'otp'").fetchone()["secret"]
    code, link = sent["code"], sent["link"]
    assert len(code) == 6 and code.isdigit()

    # Everything an attacker holding only the row could try, for all 10^6 codes.
    with_id = hashlib.sha256(f"{row['id']}:".encode())
    with_email = hashlib.sha256(email.encode())
    found = []
    for n in range(1_000_000):
        guess = b"%06d" % n
        for h in (with_id.copy(), with_email.copy(), hashlib.sha256()):
            h.update(guess)
            if h.hexdigest() == row["code_hash"]:
                found.append(guess)
    assert found == [], "an unkeyed hash of the stored row gives the code away"
    assert hashlib.sha256(link.encode()).hexdigest() != row["token_hash"]

    # With the key, the stored values are exactly the keyed hashes of the live code and link.
    def keyed(text):
        digest = hashlib.sha256(text.encode()).hexdigest()
        return hmac.new(secret.encode(), digest.encode(), hashlib.sha256).hexdigest()

    assert keyed(f"{row['id']}:{code}") == row["code_hash"]
    assert keyed(link) == row["token_hash"]
    # And that code is live.
    session = rpc("select auth.verify_otp(%s, %s, 'email')", email, code)
    assert session["user"]["email"] == email


# b) Nothing stored can break a later call ----------------------------------------------------

def nest(levels):
    """An object nested `levels` deep: {"a": {"a": ... 1}}."""
    s = "1"
    for _ in range(levels):
        s = '{"a": ' + s + "}"
    return s


REFUSED = {
    "1e400": '{"n": 1e400}',
    "-1e400": '{"n": -1e400}',
    "200 levels": nest(200),
    "65 levels": nest(65),
}
ACCEPTED = nest(64)


def with_key(key, data):
    return '{"%s": %s}' % (key, data)


def depth(v):
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    return 0


def magic_link_session(email):
    """A later call that builds a session for the user of an address."""
    link = svc("select auth.admin_generate_link('magiclink', %s)", email)["properties"]["hashed_token"]
    return rpc("select auth.verify_otp(null, %s, 'magiclink')", link)


def metadata_paths():
    """name -> (call(data) storing data as metadata, stored() the JSON text it stored,
    later() a later call that builds a session for that user)."""
    owner_email = new_email("meta-owner")
    claims = claims_of(rpc("select auth.sign_up(%s, %s)", owner_email, PASSWORD))
    target_email = new_email("meta-target")
    target = svc("select auth.admin_create_user(%s)", json.dumps({"email": target_email}))["id"]
    paths = {}

    def new_user_path(name, sql, args, service=False):
        """A path that creates the user of a new address with the data."""
        last = {}
        column = "raw_app_meta_data" if "app_metadata" in name else "raw_user_meta_data"

        def call(data):
            last["email"] = new_email("meta")
            return (svc if service else rpc)(sql, *args(last["email"], data))

        paths[name] = (call, lambda: q(f"select {column}::text from auth.users where email = %s", last["email"]),
                       lambda: magic_link_session(last["email"]))

    new_user_path("sign_up", "select auth.sign_up(%s, %s, %s::jsonb)", lambda e, d: (e, PASSWORD, d))
    new_user_path("sign_in_with_otp", "select auth.sign_in_with_otp(%s, true, %s::jsonb)", lambda e, d: (e, d))
    for key in ("user_metadata", "app_metadata"):
        new_user_path(f"admin_create_user {key}", "select auth.admin_create_user(%s::jsonb)",
                      lambda e, d, key=key: ('{"email": "%s", "%s": %s}' % (e, key, d),), service=True)
    new_user_path("admin_generate_link signup", "select auth.admin_generate_link('signup', %s, %s, %s::jsonb)",
                  lambda e, d: (e, PASSWORD, d), service=True)
    new_user_path("admin_generate_link invite", "select auth.admin_generate_link('invite', %s, null, %s::jsonb)",
                  lambda e, d: (e, d), service=True)
    new_user_path("admin_invite_user", "select auth.admin_invite_user(%s, %s::jsonb)", lambda e, d: (e, d), service=True)

    paths["update_user"] = (
        lambda d: rpc("select auth.update_user(%s::jsonb)", with_key("data", d), role="authenticated", claims=claims),
        lambda: q("select raw_user_meta_data::text from auth.users where id = %s", claims["sub"]),
        lambda: rpc("select auth.sign_in(%s, %s)", owner_email, PASSWORD))
    for key, column in [("user_metadata", "raw_user_meta_data"), ("app_metadata", "raw_app_meta_data")]:
        paths[f"admin_update_user {key}"] = (
            lambda d, key=key: svc("select auth.admin_update_user(%s, %s::jsonb)", target, with_key(key, d)),
            lambda column=column: q(f"select {column}::text from auth.users where id = %s", target),
            lambda: magic_link_session(target_email))

    anon = {}

    def anonymous(data):
        anon["session"] = None
        anon["session"] = rpc("select auth.sign_in_anonymously(%s::jsonb)", data)

    paths["sign_in_anonymously"] = (
        anonymous,
        lambda: q("select raw_user_meta_data::text from auth.users where id = %s", anon["session"]["user"]["id"]),
        lambda: rpc("select auth.refresh(%s)", anon["session"]["refresh_token"]))
    return paths


# Everything a call could have written.
SNAPSHOT = """select (select md5(coalesce(string_agg(concat_ws('|', id, email, raw_user_meta_data, raw_app_meta_data,
                                                               updated_at), ',' order by id), '')) from auth.users) as users,
                     (select count(*) from auth.identities) as identities,
                     (select count(*) from auth.one_time_tokens) as otps,
                     (select count(*) from auth.email_outbox) as outbox,
                     (select count(*) from auth.sessions) as sessions,
                     (select count(*) from auth.audit_log_entries) as audit"""


def snapshot():
    with admin(DB) as c:
        return c.execute(SNAPSHOT).fetchone()


def test_every_path_that_stores_metadata_refuses_what_cannot_be_read_back():
    problems = []
    for name, (call, stored, later) in metadata_paths().items():
        for label, data in REFUSED.items():
            before = snapshot()
            try:
                call(data)
                problems.append(f"{name}: {label} was accepted")
                continue
            except psycopg.Error as e:
                if e.sqlstate != "22023" or not e.diag.message_primary.startswith("validation_failed: "):
                    problems.append(f"{name}: {label} failed with {e.sqlstate} {e.diag.message_primary}")
            if snapshot() != before:
                problems.append(f"{name}: {label} was refused but something was written")
        # The documented limit itself is stored on every path, and breaks no later call.
        try:
            call(ACCEPTED)
        except psycopg.Error as e:
            problems.append(f"{name}: 64 levels refused: {e.sqlstate} {e.diag.message_primary}")
            continue
        value = stored()
        if value is None or depth(json.loads(value)) != 64:
            problems.append(f"{name}: 64 levels accepted but stored as {value and value[:60]}")
        try:
            assert later()["token_type"] == "bearer"
        except psycopg.Error as e:
            problems.append(f"{name}: 64 levels stored, then a session for that user failed: "
                            f"{e.sqlstate} {e.diag.message_primary}")
    assert problems == [], "\n".join(problems)


def test_direct_writes_by_the_owner_are_refused_by_the_tables():
    s = rpc("select auth.sign_up(%s, %s)", new_email("direct"), PASSWORD)
    uid = s["user"]["id"]
    writes = [
        ("update auth.users set raw_user_meta_data = %s::jsonb where id = %s", "users_raw_user_meta_data_storable"),
        ("update auth.users set raw_app_meta_data = %s::jsonb where id = %s", "users_raw_app_meta_data_storable"),
        ("update auth.identities set identity_data = %s::jsonb where user_id = %s", "identities_identity_data_storable"),
    ]
    with admin(DB) as c:
        for sql, constraint in writes:
            for label, data in REFUSED.items():
                with pytest.raises(psycopg.Error) as e:
                    c.execute(sql, (data, uid))
                assert e.value.sqlstate == "23514", (sql, label, e.value.sqlstate)
                assert e.value.diag.constraint_name == constraint, (sql, label)
            c.execute(sql, (ACCEPTED, uid))


def outcome(fn, uid):
    """None when the call works or fails with 22000 naming the stored data (what a row that
    cannot be used must give); otherwise what happened instead."""
    try:
        fn()
        return None
    except psycopg.Error as e:
        state, msg = e.sqlstate, e.diag.message_primary
        if state == "22000" and msg.startswith("unexpected_failure: ") and "stored data" in msg and uid in msg:
            return None
        return f"{state} {msg}"


def request_code(email):
    assert rpc("select auth.sign_in_with_otp(%s, false)", email) == {}
    return q("select message -> 'email_data' ->> 'token' from auth.email_outbox where recipient = %s "
             "order by id desc limit 1", email)


def test_a_row_poisoned_before_the_checks_fails_cleanly_and_can_be_repaired():
    email = new_email("poisoned")
    s = rpc("select auth.sign_up(%s, %s)", email, PASSWORD)
    uid, early_refresh = s["user"]["id"], s["refresh_token"]
    code = request_code(email)
    try:
        # The row as a version without the checks could have left it.
        with admin(DB) as c:
            with c.transaction():
                c.execute("alter table auth.users disable trigger users_metadata_storable")
                c.execute("""update auth.users set raw_user_meta_data = '{"n": 1e400}' where id = %s""", (uid,))
                c.execute("alter table auth.users enable trigger users_metadata_storable")
        calls = {
            "sign_in": lambda: rpc("select auth.sign_in(%s, %s)", email, PASSWORD),
            "verify_otp": lambda: rpc("select auth.verify_otp(%s, %s, 'email')", email, code),
            "refresh": lambda: rpc("select auth.refresh(%s)", early_refresh),
            "admin_get_user": lambda: svc("select auth.admin_get_user(%s)::text", uid),
            "user": lambda: rpc('select auth."user"()::text', role="authenticated", claims=claims_of(s)),
            "sign_in_with_otp": lambda: rpc("select auth.sign_in_with_otp(%s, false)", email),
        }
        outcomes = {what: outcome(fn, uid) for what, fn in calls.items()}

        # The admin API repairs the row, after which the user signs in as before.
        repaired = svc("select auth.admin_update_user(%s, %s)", uid, json.dumps({"user_metadata": {"n": None}}))
        assert repaired["user_metadata"] == {}
        assert rpc("select auth.sign_in(%s, %s)", email, PASSWORD)["user"]["id"] == uid
        assert rpc("select auth.refresh(%s)", early_refresh)["user"]["id"] == uid
        assert rpc("select auth.verify_otp(%s, %s, 'email')", email, request_code(email))["user"]["id"] == uid

        # While poisoned: every call worked or failed with 22000 naming the stored data.
        assert outcomes == dict.fromkeys(calls)
    finally:
        with admin(DB) as c:
            c.execute("update auth.users set raw_user_meta_data = '{}' "
                      "where not auth._storable_json(raw_user_meta_data::text)")
            assert c.execute("select tgenabled from pg_trigger "
                             "where tgname = 'users_metadata_storable'").fetchone() == {"tgenabled": "O"}


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_stored_hash_with_absurd_argon2_parameters_is_refused_quickly():
    email = new_email("argon")
    rpc("select auth.sign_up(%s, %s)", email, PASSWORD)
    with admin(DB) as c:
        stored = c.execute("update auth.users set encrypted_password = regexp_replace(encrypted_password, 'm=[0-9]+', 'm=4194304') "
                           "where email = %s returning encrypted_password", (email,)).fetchone()["encrypted_password"]
    assert stored.startswith("$argon2id$v=19$m=4194304,")
    for password in (PASSWORD, "any-other-password"):
        with api(DB) as c:
            pid = c.execute("select pg_backend_pid() as p").fetchone()["p"]
            c.execute("select set_config('role', 'anon', true)")
            started = time.monotonic()
            with pytest.raises(psycopg.Error) as e:
                c.execute("select auth.sign_in(%s, %s)", (email, password))
            elapsed = time.monotonic() - started
            peak = peak_rss_kib(pid)
        assert (e.value.sqlstate, e.value.diag.message_primary) == ("28P01", "invalid_credentials: Invalid login credentials")
        # The hash asks for 4 GiB of memory: computing it would take seconds and show in
        # the backend's peak resident size.
        assert elapsed < 2, elapsed
        assert peak < 512 * 1024, f"peak resident size {peak // 1024} MB"
