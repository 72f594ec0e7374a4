"""A login role plants objects that shadow built-in ones, of every kind it can create, then
calls every function it may call. None of its objects may ever be used by a statement the
extension runs: much of that SQL runs with the extension owner's rights, and a temporary
domain named `text` whose check function ran there made the caller a superuser.

What the attacker plants:
- in pg_temp (searched before pg_catalog for types and relations when the path does not
  list it): a domain for every built-in type our SQL names, and views named like the
  catalog views;
- in a schema of its own, put ahead of pg_catalog: functions with the names and argument
  types of the built-in functions our SQL calls, an aggregate, and operators for the
  operators it uses.
Each object calls fire(), which writes who ran it and tries to make the attacker a
superuser; after every round the log must be empty and the role still no superuser."""

import json
import time
import uuid

import jwt
import pyotp
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from psycopg.rows import dict_row

from conftest import admin, drop_database, fresh_database

DB = "auth_hostile"
ROLES = ["attack_plain", "attack_api"]  # no grants at all; an API login role
PASSWORD = "attack-role-password"
ISSUER = "https://idp.hostile.example"

# Types our SQL names (casts, declarations, function signatures).
# (integer, bigint, boolean and the like are keywords, never looked up by name.)
TYPES = ["text", "uuid", "jsonb", "json", "int2", "int4", "int8", "bool", "timestamptz", "timestamp",
         "inet", "interval", "bytea", "oid", "name", "numeric", "float8", "varchar", "regclass",
         "regproc", "regprocedure", "regrole", "regnamespace", "char", "date"]
# Catalog relations our SQL reads.
VIEWS = ["pg_roles", "pg_class", "pg_namespace", "pg_proc", "pg_settings", "pg_extension", "pg_description"]
# Built-in functions our SQL calls: name, argument types, the real call.
FUNCTIONS = [
    ("lower", "text", "pg_catalog.lower($1)"),
    ("upper", "text", "pg_catalog.upper($1)"),
    ("now", "", "pg_catalog.now()"),
    ("clock_timestamp", "", "pg_catalog.clock_timestamp()"),
    ("gen_random_uuid", "", "pg_catalog.gen_random_uuid()"),
    ("to_regclass", "text", "pg_catalog.to_regclass($1)"),
    ("to_regprocedure", "text", "pg_catalog.to_regprocedure($1)"),
    ("set_config", "text, text, boolean", "pg_catalog.set_config($1, $2, $3)"),
    ("current_setting", "text, boolean", "pg_catalog.current_setting($1, $2)"),
    ("current_setting", "text", "pg_catalog.current_setting($1)"),
    ("encode", "bytea, text", "pg_catalog.encode($1, $2)"),
    ("sha256", "bytea", "pg_catalog.sha256($1)"),
    ("convert_to", "text, name", "pg_catalog.convert_to($1, $2)"),
    ("jsonb_typeof", "jsonb", "pg_catalog.jsonb_typeof($1)"),
    ("jsonb_build_array", "", "pg_catalog.jsonb_build_array()"),
    ("jsonb_strip_nulls", "jsonb", "pg_catalog.jsonb_strip_nulls($1)"),
    ("to_jsonb", "anyelement", "pg_catalog.to_jsonb($1)"),
    ("octet_length", "text", "pg_catalog.octet_length($1)"),
    ("length", "text", "pg_catalog.length($1)"),
    ("left", "text, integer", "pg_catalog.left($1, $2)"),
    ("btrim", "text", "pg_catalog.btrim($1)"),
    ("replace", "text, text, text", "pg_catalog.replace($1, $2, $3)"),
    ("array_to_json", "anyarray", "pg_catalog.array_to_json($1)"),
    ("array_position", "anycompatiblearray, anycompatible", "pg_catalog.array_position($1, $2)"),
    ("cardinality", "anyarray", "pg_catalog.cardinality($1)"),
    ("pg_has_role", "name, oid, text", "pg_catalog.pg_has_role($1, $2, $3)"),
    ("pg_has_role", "oid, oid, text", "pg_catalog.pg_has_role($1, $2, $3)"),
    ("has_table_privilege", "oid, oid, text", "pg_catalog.has_table_privilege($1, $2, $3)"),
    ("session_user", "", "pg_catalog.session_user()"),
    ("current_user", "", "pg_catalog.current_user()"),
    ("make_interval", "integer, integer, integer, integer, integer, integer, double precision",
     "pg_catalog.make_interval($1, $2, $3, $4, $5, $6, $7)"),
    ("date_part", "text, timestamptz", "pg_catalog.date_part($1, $2)"),
    ("floor", "double precision", "pg_catalog.floor($1)"),
    ("pg_notify", "text, text", "pg_catalog.pg_notify($1, $2)"),
    ("to_char", "timestamp, text", "pg_catalog.to_char($1, $2)"),
    ("jsonb_array_elements_text", "jsonb", "pg_catalog.jsonb_array_elements_text($1)"),
    ("jsonb_object_keys", "jsonb", "pg_catalog.jsonb_object_keys($1)"),
    ("jsonb_each_text", "jsonb", "pg_catalog.jsonb_each_text($1)"),
]
SETOF = {"jsonb_array_elements_text": "pg_catalog.text", "jsonb_object_keys": "pg_catalog.text",
         "jsonb_each_text": "table(key pg_catalog.text, value pg_catalog.text)"}
# Operators our SQL uses: symbol, left type, right type, real function.
OPERATORS = [
    ("=", "text", "text", "texteq"), ("=", "uuid", "uuid", "uuid_eq"), ("<>", "text", "text", "textne"),
    ("=", "oid", "oid", "oideq"), ("=", "name", "name", "nameeq"), ("=", "boolean", "boolean", "booleq"),
    ("=", "integer", "integer", "int4eq"), ("<", "integer", "integer", "int4lt"),
    ("<=", "integer", "integer", "int4le"), (">=", "integer", "integer", "int4ge"),
    ("=", "jsonb", "jsonb", "jsonb_eq"), ("<>", "jsonb", "jsonb", "jsonb_ne"),
    ("||", "jsonb", "jsonb", "jsonb_concat"), ("||", "text", "text", "textcat"),
    ("->>", "jsonb", "text", "jsonb_object_field_text"), ("->", "jsonb", "text", "jsonb_object_field"),
    ("?", "jsonb", "text", "jsonb_exists"), ("-", "jsonb", "text", "jsonb_delete"),
    (">", "timestamptz", "timestamptz", "timestamptz_gt"), ("<", "timestamptz", "timestamptz", "timestamptz_lt"),
    ("<=", "timestamptz", "timestamptz", "timestamptz_le"),
    ("-", "timestamptz", "interval", "timestamptz_mi_interval"),
    ("+", "timestamptz", "interval", "timestamptz_pl_interval"),
]


def connect(user=None, **kw):
    if user:
        return psycopg.connect(dbname=DB, user=user, password=PASSWORD, row_factory=dict_row, **kw)
    return admin(DB)


@pytest.fixture(scope="module")
def hostile():
    fresh_database(DB)
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="hostile-idp", alg="ES256", use="sig")
    with admin(DB) as c:
        for r in ROLES:
            c.execute(f"""do $$ begin
                  if not exists (select from pg_roles where rolname = '{r}') then
                    create role {r} login noinherit password '{PASSWORD}';
                  end if; end $$""")
            c.execute(f"alter role {r} nosuperuser")
            # The claim helpers with the session check on: they then read auth.sessions.
            c.execute(f"alter role {r} in database {DB} set auth.session_check = on")
        # auth_oauth too: the provider callback's steps run under the hostile path as well.
        c.execute("grant anon, authenticated, service_role, auth_oauth to attack_api")
        # A schema of each attacker's own, which it will put ahead of pg_catalog.
        for r in ROLES:
            c.execute(f"create schema evil_{r} authorization {r}")
        c.execute(f"alter database {DB} set auth.anonymous_sign_ins = on")
        c.execute(f"alter database {DB} set auth.email_rate_limit = 0")
        c.execute(f"alter database {DB} set auth.lockout_max_failures = 0")
        c.execute(f"alter database {DB} set auth.lockout_ip_max_failures = 0")
        c.execute(f"alter database {DB} set auth.manual_linking_enabled = on")
        c.execute(f"alter database {DB} set auth.keep_provider_tokens = on")
        c.execute("select auth.set_trusted_issuer(%s, %s, '{hostile-app}')",
                  (ISSUER, json.dumps({"keys": [jwk]})))
        c.execute("select auth.sign_up('victim@hostile.example', 'victim-password-1')")
    yield key
    drop_database(DB)
    with psycopg.connect(dbname="postgres", autocommit=True) as c:
        for r in ROLES:
            c.execute(f"drop role if exists {r}")


def q(types):
    """Argument types by their catalog names: the planted domains must not stand in for them."""
    poly = {"anyelement", "anyarray", "anycompatible", "anycompatiblearray"}
    alias = {"double precision": "float8", "integer": "int4", "boolean": "bool"}
    return ", ".join(t if t in poly else f"pg_catalog.{alias.get(t, t)}" for t in types.split(", ")) if types else ""


def plant(c, role):
    """The attacker's objects, committed so that they outlive every failed call; the
    schema-level ones replaced on every call, in the role's own schema."""
    ns = f"evil_{role}"
    c.execute(f"create table if not exists {ns}.log (who pg_catalog.text, what pg_catalog.text)")
    c.execute(f"grant insert on {ns}.log to public")
    c.execute(f"""create or replace function {ns}.fire(what pg_catalog.text) returns pg_catalog.bool
                  language plpgsql as $$
                  begin
                    insert into {ns}.log values (current_user::pg_catalog.text, what);
                    begin execute 'alter role {role} superuser'; exception when others then null; end;
                    return true;
                  end $$""")
    c.execute(f"grant execute on function {ns}.fire(pg_catalog.text) to public")
    for t in TYPES:
        c.execute(f'create domain pg_temp."{t}" as pg_catalog."{t}" check ({ns}.fire(\'type {t}\'))')
    for v in VIEWS:
        c.execute(f"create temp view {v} as select *, {ns}.fire('view {v}') as fired from pg_catalog.{v}")
    for name, args, real in FUNCTIONS:
        ret = SETOF.get(name)
        params = q(args)
        if ret:
            setof = ret if ret.startswith("table") else f"setof {ret}"
            c.execute(f"""create or replace function {ns}."{name}"({params}) returns {setof}
                          language sql as $$ select * from {real} where {ns}.fire('function {name}') $$""")
        else:
            c.execute(f"""create or replace function {ns}."{name}"({params})
                          returns {q(_ret_type(name)) if _ret_type(name) != "void" else "void"} language sql
                          as $$ select case when {ns}.fire('function {name}') then {real} end $$""")
    # An aggregate shadowing one our SQL uses.
    c.execute(f"drop aggregate if exists {ns}.jsonb_agg(anyelement)")
    c.execute(f"""create or replace function {ns}.agg_step(s pg_catalog.jsonb, v anyelement) returns pg_catalog.jsonb
                 language sql as $$ select case when {ns}.fire('aggregate jsonb_agg')
                 then coalesce(s, '[]'::pg_catalog.jsonb) || pg_catalog.jsonb_build_array(v) end $$""")
    c.execute(f"create aggregate {ns}.jsonb_agg(anyelement) (sfunc = {ns}.agg_step, stype = pg_catalog.jsonb)")
    for i, (op, left, right, real) in enumerate(OPERATORS):
        left, right = q(left), q(right)
        c.execute(f"""create or replace function {ns}.op{i}(a {left}, b {right}) returns {q(_op_ret(real))}
                      language sql as $$ select case when {ns}.fire('operator {op}') then pg_catalog.{real}(a, b) end $$""")
        c.execute(f"drop operator if exists {ns}.{op} ({left}, {right})")
        c.execute(f"create operator {ns}.{op} (leftarg = {left}, rightarg = {right}, function = {ns}.op{i})")
    c.commit()


def _ret_type(name):
    return {
        "lower": "text", "upper": "text", "now": "timestamptz", "clock_timestamp": "timestamptz",
        "gen_random_uuid": "uuid", "to_regclass": "regclass", "to_regprocedure": "regprocedure",
        "set_config": "text", "current_setting": "text", "encode": "text", "sha256": "bytea",
        "convert_to": "bytea", "jsonb_typeof": "text", "jsonb_build_array": "jsonb",
        "jsonb_strip_nulls": "jsonb", "to_jsonb": "jsonb", "octet_length": "integer",
        "length": "integer", "left": "text", "btrim": "text", "replace": "text",
        "array_to_json": "json", "array_position": "integer", "cardinality": "integer",
        "pg_has_role": "boolean", "has_table_privilege": "boolean", "session_user": "name",
        "current_user": "name", "make_interval": "interval", "date_part": "double precision",
        "floor": "double precision", "pg_notify": "void", "to_char": "text",
    }[name]


def _op_ret(real):
    return {"jsonb_concat": "jsonb", "textcat": "text", "jsonb_object_field_text": "text",
            "jsonb_object_field": "jsonb", "jsonb_delete": "jsonb",
            "timestamptz_mi_interval": "timestamptz", "timestamptz_pl_interval": "timestamptz"}.get(real, "boolean")


class Caller:
    """Runs each call in its own transaction (as PostgREST does), under a role, with the
    request's claims; records which functions it reached."""

    def __init__(self, conn):
        self.c = conn
        self.called = set()

    def call(self, fn, sql, args=(), role=None, claims=None):
        self.called.add(fn)
        try:
            if role:
                self.c.execute(f"set local role {role}")
            if claims is not None:
                self.c.execute("select pg_catalog.set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
            row = self.c.execute(sql, args).fetchone()
            self.c.commit()
            return row
        except psycopg.Error:
            self.c.rollback()
            return None


def outbox_code(email):
    with admin(DB) as c:
        m = c.execute("select message -> 'email_data' as d from auth.email_outbox where recipient = %s "
                      "order by id desc limit 1", (email,)).fetchone()
    return m["d"] if m else None


def api_key():
    with admin(DB) as c:
        return c.execute("""select auth.sign_jwt('{"role": "anon"}') as k""").fetchone()["k"]


def every_call(k, key):
    """Every function the attacker's roles may execute, with arguments that reach its SQL."""
    e = f"a-{uuid.uuid4().hex[:10]}@hostile.example"
    s = k.call("sign_up", "select auth.sign_up(%s, 'attacker-password-1') as s", (e,), role="anon")
    assert s, "sign_up must work under the hostile path"
    s = s["s"]
    claims = k.call("verify_jwt", "select auth.verify_jwt(%s) as c", (s["access_token"],))["c"]
    k.call("authenticate", "select auth.authenticate(%s)", (s["access_token"],))
    anon_key = api_key()
    r = k.call("authenticate_request", "select auth.authenticate_request(%s, %s)", (anon_key, s["access_token"]))
    assert r, "authenticate_request must work under the hostile path"
    k.call("authenticate_request", "select auth.authenticate_request(%s, null)", (s["access_token"],))
    k.call("settings", "select auth.settings()", role="anon")
    for fn in ("uid", "role", "email", "jwt"):
        k.call(fn, f"select auth.{fn}() as v", claims=claims)
    k.call("jwks", "select auth.jwks()")
    k.call("sign_in", "select auth.sign_in(%s, 'attacker-password-1')", (e,), role="anon")
    k.call("sign_in", "select auth.sign_in(%s, 'wrong-password-1')", (e,), role="anon")
    k.call("sign_in", "select auth.sign_in('nobody@hostile.example', 'wrong-password-1')", role="anon")
    s2 = k.call("refresh", "select auth.refresh(%s) as s", (s["refresh_token"],), role="anon")
    assert s2, "refresh must work under the hostile path"
    k.call("refresh", "select auth.refresh(%s)", (s["refresh_token"],), role="anon")  # reuse
    k.call("recover", "select auth.recover(%s)", (e,), role="anon")
    k.call("recover", "select auth.recover('nobody@hostile.example')", role="anon")
    k.call("sign_in_with_otp", "select auth.sign_in_with_otp(%s)", (e,), role="anon")
    code = outbox_code(e)
    k.call("verify_otp", "select auth.verify_otp(%s, '000000', 'email')", (e,), role="anon")
    v = k.call("verify_otp", "select auth.verify_otp(%s, %s, 'email')", (e, code["token"]), role="anon")
    assert v, "verify_otp must work under the hostile path"
    k.call("sign_in_with_otp", "select auth.sign_in_with_otp('nobody@hostile.example', false)", role="anon")
    # PKCE: a link with a challenge, opened for a code; a wrong verifier (written down by an
    # autonomous transaction), then a second flow exchanged with the right one.
    verifier = "hostile-verifier-" + "v" * 30
    for right in (False, True):
        k.call("sign_in_with_otp", "select auth.sign_in_with_otp(%s, code_challenge => %s, code_challenge_method => 'plain')",
               (e, verifier), role="anon")
        link = outbox_code(e)["token_hash"]
        v = k.call("verify_link", "select auth.verify_link(%s, 'magiclink') as v", (link,), role="anon")
        assert v and "code" in v["v"], f"verify_link must work under the hostile path: {v}"
        x = k.call("exchange_code_for_session", "select auth.exchange_code_for_session(%s, %s) as s",
                   (v["v"]["code"], verifier if right else "wrong-" + verifier), role="anon")
        assert bool(x) == right, "exchange_code_for_session must work under the hostile path"
    k.call("verify_link", "select auth.verify_link('pkce_nothing', 'magiclink')", role="anon")
    k.call("resend", "select auth.resend('signup', %s)", (e,), role="anon")
    k.call("sign_in_anonymously", "select auth.sign_in_anonymously('{}')", role="anon")
    now = int(time.time())
    id_token = jwt.encode({"iss": ISSUER, "aud": "hostile-app", "sub": "idp-user-1", "email": "idp@hostile.example",
                           "email_verified": True, "iat": now, "exp": now + 300},
                          key, algorithm="ES256", headers={"kid": "hostile-idp"})
    k.call("sign_in_with_id_token", "select auth.sign_in_with_id_token(%s, %s)", (ISSUER, id_token), role="anon")
    c = s2["s"]
    cl = k.call("verify_jwt", "select auth.verify_jwt(%s) as c", (c["access_token"],))["c"]
    # Provider sign-in: a flow started, its state taken and the provider's user signed in as
    # the server's role (auth_oauth), implicit and PKCE (whose provider token is sealed);
    # then linking an identity to the signed-in user and unlinking it.
    who = {"subject": "gh-hostile", "email": "gh-" + e, "email_verified": True, "identity_data": {"name": "x"},
           "provider_token": "gho_hostile"}
    for challenge in (None, "hostile-challenge-" + "c" * 30):
        st = k.call("oauth_authorize", "select auth.oauth_authorize('github', 'http://localhost:3000/x', %s, %s) as s",
                    (challenge, challenge and "plain"), role="anon")
        assert st, "oauth_authorize must work under the hostile path"
        fl = k.call("oauth_callback", "select auth.oauth_callback(%s) as f", (st["s"]["state"],), role="auth_oauth")
        assert fl and "flow" in fl["f"], f"oauth_callback must work under the hostile path: {fl}"
        si = k.call("oauth_sign_in", "select auth.oauth_sign_in(%s, %s) as s", (fl["f"]["flow"], json.dumps(who)),
                    role="auth_oauth")
        assert si and ("code" if challenge else "session") in si["s"], f"oauth_sign_in: {si}"
        if challenge:
            x = k.call("exchange_code_for_session", "select auth.exchange_code_for_session(%s, %s) as s",
                       (si["s"]["code"], challenge), role="anon")
            assert x and x["s"]["provider_token"] == "gho_hostile", f"the kept token must open: {x}"
    k.call("oauth_callback", "select auth.oauth_callback('no-such-state', 'access_denied', 'no')", role="auth_oauth")
    ln = k.call("link_identity", "select auth.link_identity('gitlab') as s", role="authenticated", claims=cl)
    assert ln, "link_identity must work under the hostile path"
    fl = k.call("oauth_callback", "select auth.oauth_callback(%s) as f", (ln["s"]["state"],), role="auth_oauth")
    si = k.call("oauth_sign_in", "select auth.oauth_sign_in(%s, %s) as s",
                (fl["f"]["flow"], json.dumps({"subject": "gl-hostile", "email": "gl-" + e})), role="auth_oauth")
    assert si and "session" in si["s"], f"linking must work under the hostile path: {si}"
    with admin(DB) as a:
        gl = a.execute("select id::text from auth.identities where provider = 'gitlab' and provider_id = 'gl-hostile'"
                       ).fetchone()["id"]
    assert k.call("unlink_identity", "select auth.unlink_identity(%s)", (gl,), role="authenticated", claims=cl), \
        "unlink_identity must work under the hostile path"
    k.call("user", 'select auth."user"()', role="authenticated", claims=cl)
    k.call("update_user", """select auth.update_user('{"data": {"x": 1}}')""", role="authenticated", claims=cl)
    k.call("update_user", """select auth.update_user('{"password": "attacker-password-2"}')""",
           role="authenticated", claims=cl)
    k.call("update_user", "select auth.update_user(%s)", (json.dumps({"email": "b-" + e}),),
           role="authenticated", claims=cl)
    k.call("sign_out", "select auth.sign_out('others')", role="authenticated", claims=cl)
    # MFA: enroll, challenge, a wrong and a right code (pyotp), list, levels, unenroll at aal2.
    a = "authenticated"
    f = k.call("mfa_enroll", "select auth.mfa_enroll() as f", role=a, claims=cl)
    assert f, "mfa_enroll must work under the hostile path"
    fid, secret = f["f"]["id"], f["f"]["totp"]["secret"]
    ch = k.call("mfa_challenge", "select auth.mfa_challenge(%s) as c", (fid,), role=a, claims=cl)
    assert ch, "mfa_challenge must work under the hostile path"
    k.call("mfa_verify", "select auth.mfa_verify(%s, %s, 'x00000')", (fid, ch["c"]["id"]), role=a, claims=cl)
    up = k.call("mfa_challenge_and_verify", "select auth.mfa_challenge_and_verify(%s, %s) as s",
                (fid, pyotp.TOTP(secret).now()), role=a, claims=cl)
    assert up, "mfa_challenge_and_verify must work under the hostile path"
    cl2 = k.call("verify_jwt", "select auth.verify_jwt(%s) as c", (up["s"]["access_token"],))["c"]
    k.call("mfa_list_factors", "select auth.mfa_list_factors()", role=a, claims=cl2)
    k.call("mfa_get_authenticator_assurance_level", "select auth.mfa_get_authenticator_assurance_level()",
           role=a, claims=cl2)
    k.call("mfa_enrolled", "select auth.mfa_enrolled()", role=a, claims=cl2)
    assert k.call("reauthenticate", "select auth.reauthenticate()", role=a, claims=cl2), \
        "reauthenticate must work under the hostile path"
    k.call("admin_mfa_list_factors", "select auth.admin_mfa_list_factors(%s)", (cl2["sub"],), role="service_role")
    rc = k.call("mfa_generate_recovery_codes", "select auth.mfa_generate_recovery_codes() as r", role=a, claims=cl2)
    assert rc, "mfa_generate_recovery_codes must work under the hostile path"
    k.call("mfa_verify_recovery_code", "select auth.mfa_verify_recovery_code('wrong-code')", role=a, claims=cl2)
    assert k.call("mfa_verify_recovery_code", "select auth.mfa_verify_recovery_code(%s)",
                  (rc["r"]["recovery_codes"][0],), role=a, claims=cl2), "mfa_verify_recovery_code must work"
    assert k.call("mfa_unenroll", "select auth.mfa_unenroll(%s)", (fid,), role=a, claims=cl2), \
        "mfa_unenroll must work under the hostile path"
    f = k.call("mfa_enroll", "select auth.mfa_enroll() as f", role=a, claims=cl2)
    k.call("admin_mfa_delete_factor", "select auth.admin_mfa_delete_factor(%s, %s)", (cl2["sub"], f["f"]["id"]),
           role="service_role")
    # service_role: the admin API, keys and issuers.
    sr = "service_role"
    u = k.call("admin_create_user", "select auth.admin_create_user(%s) ->> 'id' as id",
               (json.dumps({"email": "c-" + e, "password": "attacker-password-3", "user_metadata": {"a": 1}}),), role=sr)
    assert u, "admin_create_user must work under the hostile path"
    uid = u["id"]
    k.call("admin_get_user", "select auth.admin_get_user(%s)", (uid,), role=sr)
    k.call("admin_list_users", "select auth.admin_list_users(1, 10, 'hostile')", role=sr)
    k.call("admin_update_user", "select auth.admin_update_user(%s, %s)",
           (uid, json.dumps({"user_metadata": {"b": 2}, "ban_duration": "1h", "email_confirm": True})), role=sr)
    k.call("admin_generate_link", "select auth.admin_generate_link('magiclink', %s)", ("c-" + e,), role=sr)
    k.call("admin_invite_user", "select auth.admin_invite_user(%s)", ("d-" + e,), role=sr)
    k.call("admin_delete_user", "select auth.admin_delete_user(%s, true)", (uid,), role=sr)
    k.call("sign_jwt", """select auth.sign_jwt('{"role": "anon"}')""", role=sr)
    k.call("cleanup", "select auth.cleanup(100)", role=sr)
    k.call("password_hash_activity", "select auth.password_hash_activity()", role=sr)
    kid = k.call("create_signing_key", "select auth.create_signing_key('ES256') ->> 'kid' as kid", role=sr)["kid"]
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    k.call("import_signing_key", "select auth.import_signing_key(%s)", (pem,), role=sr)
    k.call("list_signing_keys", "select auth.list_signing_keys()", role=sr)
    k.call("promote_signing_key", "select auth.promote_signing_key(%s)", (kid,), role=sr)
    k.call("revoke_signing_key", "select auth.revoke_signing_key(%s)", (kid,), role=sr)
    jwk = {"keys": [json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())) | {"kid": "k2"}]}
    k.call("set_trusted_issuer", "select auth.set_trusted_issuer('https://other.hostile.example', %s, '{a}')",
           (json.dumps(jwk),), role=sr)
    k.call("drop_trusted_issuer", "select auth.drop_trusted_issuer('https://other.hostile.example')", role=sr)


def assert_untouched(role):
    with admin(DB) as c:
        fired = c.execute(f"select who, what from evil_{role}.log").fetchall()
        c.execute(f"truncate evil_{role}.log")
        superuser = c.execute("select rolsuper from pg_roles where rolname = %s", (role,)).fetchone()["rolsuper"]
        c.execute(f"alter role {role} nosuperuser")
    assert not superuser, f"{role} became a superuser: {fired}"
    assert fired == [], f"the extension used the attacker's objects: {fired}"


@pytest.mark.parametrize("path", ["default", "evil first"])
def test_an_api_role_with_shadow_objects_reaches_none_of_them(hostile, path):
    with connect("attack_api") as c:
        plant(c, "attack_api")
        if path == "evil first":
            c.execute("set search_path = evil_attack_api, pg_catalog")
        else:
            c.execute("reset search_path")  # "$user", public: pg_temp is searched first
        c.commit()
        k = Caller(c)
        every_call(k, hostile)
        # Every function these roles may execute was called.
        with admin(DB) as a:
            callable_ = {r["proname"] for r in a.execute(
                """select distinct p.proname::text as proname from pg_proc p
                    where p.pronamespace = 'auth'::regnamespace
                      and (has_function_privilege('anon', p.oid, 'execute')
                           or has_function_privilege('authenticated', p.oid, 'execute')
                           or has_function_privilege('service_role', p.oid, 'execute'))""").fetchall()}
        assert callable_ - k.called == set(), f"not attacked: {callable_ - k.called}"
    assert_untouched("attack_api")


@pytest.mark.parametrize("path", ["default", "evil first"])
def test_sign_jwt_loads_the_keys_under_a_hostile_path(hostile, path):
    """auth.sign_jwt is not SECURITY DEFINER: in a new backend its first call is the one that
    reads the signing keys, with the owner's rights, under the caller's path."""
    with connect("attack_api") as c:
        plant(c, "attack_api")
        if path == "evil first":
            c.execute("set search_path = evil_attack_api, pg_catalog")
        else:
            c.execute("reset search_path")
        c.commit()
        k = Caller(c)
        r = k.call("sign_jwt", """select auth.sign_jwt('{"role": "anon", "n": 1}') as t""", role="service_role")
        assert r and r["t"].count(".") == 2, "sign_jwt must work under the hostile path"
        # The backend's keys were loaded by that call; the token verifies with them.
        v = k.call("verify_jwt", "select auth.verify_jwt(%s) operator(pg_catalog.->>) 'n' as n", (r["t"],))
        assert v == {"n": "1"}
        # Not for a role without the grant, whatever its path.
        assert k.call("sign_jwt", """select auth.sign_jwt('{"role": "anon"}')""", role="anon") is None
    assert_untouched("attack_api")


def test_a_role_without_grants_reaches_none_of_them(hostile):
    with admin(DB) as c:
        s = c.execute("select auth.sign_up(%s, 'attacker-password-1') as s",
                      (f"p-{uuid.uuid4().hex[:8]}@hostile.example",)).fetchone()["s"]
    with connect("attack_plain") as c:
        plant(c, "attack_plain")
        c.execute("set search_path = evil_attack_plain, pg_catalog")
        c.commit()
        k = Caller(c)
        claims = k.call("verify_jwt", "select auth.verify_jwt(%s) as c", (s["access_token"],))["c"]
        for fn in ("uid", "role", "email", "jwt"):
            k.call(fn, f"select auth.{fn}() as v", claims=claims)
        k.call("jwks", "select auth.jwks()")
        k.call("authenticate", "select auth.authenticate(%s)", (s["access_token"],))
        k.call("authenticate_request", "select auth.authenticate_request(%s, %s)", (api_key(), s["access_token"]))
        k.call("mfa_enrolled", "select auth.mfa_enrolled()", claims=claims)
        # Everything PUBLIC may execute was called.
        with admin(DB) as a:
            public = {r["proname"] for r in a.execute(
                """select p.proname::text as proname from pg_proc p
                    where p.pronamespace = 'auth'::regnamespace
                      and has_function_privilege('attack_plain', p.oid, 'execute')""").fetchall()}
        assert public - k.called == set(), f"not attacked: {public - k.called}"
    assert_untouched("attack_plain")


def test_the_planted_objects_do_fire_for_the_attackers_own_sql(hostile):
    """The test's own check: the planted objects are live and found by name."""
    with connect("attack_api") as c:
        plant(c, "attack_api")
        c.execute("reset search_path")
        c.execute("select 'x'::text")
        c.execute("set search_path = evil_attack_api, pg_catalog")
        c.execute("select lower('X'), now(), 'a'::pg_catalog.text = 'a'::pg_catalog.text")
        c.commit()
    with admin(DB) as a:
        fired = {r["what"] for r in a.execute("select what from evil_attack_api.log").fetchall()}
        a.execute("truncate evil_attack_api.log")
    assert {"type text", "function lower", "function now", "operator ="} <= fired, fired
