"""Tokens as a hostile client uses them: a trusted third party's token whose subject is a
local user's id, legacy claim settings left over in a pooled session, issuer
registrations that would hand out dangerous roles, and a flood of large distinct tokens
aimed at one backend's memory. Each refusal is checked for its SQLSTATE and its code."""

import json
import time
import uuid

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from conftest import API_ROLE, admin, api, drop_database, fresh_database

DB = "auth_attack_tokens"
MEMORY_DB = "auth_attack_memory"
AUDIENCE = "client-attack"
PASSWORD = "victim-password-1"
# Cluster-wide roles made here; dropped at the end.
ROLE_PREFIX = "attack_tok_"


@pytest.fixture(scope="module", autouse=True)
def tokens_database(database):
    fresh_database(DB)
    with admin(DB) as c:
        c.execute("create table public.victim_notes (user_id uuid not null, body text not null)")
        c.execute("alter table public.victim_notes enable row level security")
        c.execute("create policy own_notes on public.victim_notes for select to authenticated "
                  "using (user_id = auth.uid())")
        c.execute("grant select on public.victim_notes to authenticated")
    yield
    drop_database(DB, MEMORY_DB)
    with psycopg.connect(dbname="postgres", autocommit=True) as c:
        for r in c.execute("select rolname from pg_roles where rolname like %s", (ROLE_PREFIX + "%",)).fetchall():
            c.execute(f'drop role "{r[0]}"')


def one(conn, sql, *args):
    return next(iter(conn.execute(sql, args).fetchone().values()))


def sign_up(email=None, password=PASSWORD):
    email = email or f"tok-{uuid.uuid4().hex[:10]}@example.io"
    with api(DB) as c:
        c.execute("select set_config('role', 'anon', true)")
        return one(c, "select auth.sign_up(%s, %s)", email, password)


def claims_of(session):
    return jwt.decode(session["access_token"], options={"verify_signature": False})


def rpc(sql, *args, role="anon", claims=None, dbname=DB):
    """One PostgREST-style request on a fresh connection, committed."""
    with api(dbname) as c:
        c.execute("select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                  (role, json.dumps(claims) if claims else ""))
        row = c.execute(sql, args).fetchone()
        c.commit()
        return next(iter(row.values())) if row else None


def refusal(conn, sql, *args):
    """Run sql, expect an error; roll back and return (sqlstate, message)."""
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql, args)
    conn.rollback()
    return e.value.sqlstate, e.value.diag.message_primary


class Issuer:
    """An outside OIDC provider with one ES256 key."""

    def __init__(self, name=None):
        self.iss = name or f"https://idp-{uuid.uuid4().hex[:8]}.example"
        self.kid = "es256-" + uuid.uuid4().hex[:6]
        self.key = ec.generate_private_key(ec.SECP256R1())

    def jwks(self):
        jwk = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update(kid=self.kid, alg="ES256", use="sig")
        return {"keys": [jwk]}

    def register(self, conn, role_map=None, default_role="authenticated"):
        return one(conn, "select auth.set_trusted_issuer(%s, %s, %s, '{role}', %s, %s)",
                   self.iss, json.dumps(self.jwks()), [AUDIENCE], json.dumps(role_map or {}), default_role)

    def token(self, sub, **claims):
        now = int(time.time())
        body = {"iss": self.iss, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300, **claims}
        return jwt.encode(body, self.key, algorithm="ES256", headers={"kid": self.kid})


@pytest.fixture()
def issuer():
    i = Issuer()
    with admin(DB) as c:
        i.register(c)
    yield i
    with admin(DB) as c:
        c.execute("select auth.drop_trusted_issuer(%s)", (i.iss,))


# a) A third party's token never acts as a local account -----------------------------------

def test_a_third_party_token_whose_sub_is_a_local_id_is_not_that_user(issuer):
    victim = sign_up()
    vid = victim["user"]["id"]
    with admin(DB) as c:
        c.execute("insert into public.victim_notes values (%s, 'victim secret')", (vid,))
    # The victim's own token sees the row: the policy works.
    with api(DB) as c:
        c.execute("select auth.authenticate(%s)", (victim["access_token"],))
        assert one(c, "select count(*) from public.victim_notes") == 1
        c.rollback()

    forged = issuer.token(vid, email=victim["user"]["email"], role="authenticated")
    with api(DB) as c:
        claims = one(c, "select auth.authenticate(%s)", forged)
        assert claims["sub"] == vid and claims["role"] == "authenticated"
        row = c.execute("select current_user as who, auth.uid() as uid, auth.jwt() ->> 'sub' as sub, "
                        "(select count(*) from public.victim_notes) as notes").fetchone()
        # The subject is the issuer's, readable from auth.jwt(), but it is nobody here.
        assert row == {"who": "authenticated", "uid": None, "sub": vid, "notes": 0}
        c.rollback()
        for sql, args in [
            ('select auth."user"()', ()),
            ("select auth.update_user(%s)", (json.dumps({"password": "attacker-password-1"}),)),
            ("select auth.update_user(%s)", (json.dumps({"data": {"owned": True}}),)),
            ("select auth.sign_out()", ()),
        ]:
            c.execute("select auth.authenticate(%s)", (forged,))
            state, msg = refusal(c, sql, *args)
            assert state == "28000" and msg.startswith("bad_jwt: "), (sql, state, msg)
            assert issuer.iss in msg

    # Nothing of the victim's changed: the old password works, the session lives.
    with api(DB) as c:
        c.execute("select set_config('role', 'anon', true)")
        assert one(c, "select auth.sign_in(%s, %s) ->> 'token_type'", victim["user"]["email"], PASSWORD) == "bearer"
        c.commit()
    with admin(DB) as c:
        row = c.execute("select raw_user_meta_data, (select count(*) from auth.sessions s where s.user_id = u.id) as n "
                        "from auth.users u where id = %s", (vid,)).fetchone()
        assert row == {"raw_user_meta_data": {}, "n": 2}


def test_a_linked_identity_gives_uid_but_the_account_functions_still_refuse(issuer):
    other = Issuer()
    with admin(DB) as c:
        other.register(c)
    try:
        sub = f"idp-subject-{uuid.uuid4().hex[:8]}"
        # An ID-token sign-in creates the local user and links it to (issuer, sub).
        session = rpc("select auth.sign_in_with_id_token(%s, %s)", issuer.iss, issuer.token(sub))
        local_id = session["user"]["id"]
        with admin(DB) as c:
            row = c.execute("select provider_id, identity_data ->> 'iss' as iss from auth.identities where user_id = %s",
                            (local_id,)).fetchone()
            assert row == {"provider_id": sub, "iss": issuer.iss}
        tok = issuer.token(sub)
        with api(DB) as c:
            c.execute("select auth.authenticate(%s)", (tok,))
            assert str(one(c, "select auth.uid()")) == local_id
            c.rollback()
            for sql, args in [
                ('select auth."user"()', ()),
                ("select auth.update_user(%s)", (json.dumps({"password": "attacker-password-1"}),)),
                ("select auth.sign_out('global')", ()),
            ]:
                c.execute("select auth.authenticate(%s)", (tok,))
                state, msg = refusal(c, sql, *args)
                assert state == "28000" and msg.startswith("bad_jwt: "), (sql, state, msg)
            # The same subject from another trusted issuer is not linked to anyone.
            c.execute("select auth.authenticate(%s)", (other.token(sub),))
            assert one(c, "select auth.uid()") is None
            c.rollback()
        # The linked user's own session still works as usual.
        assert rpc('select auth."user"() ->> \'id\'', role="authenticated", claims=claims_of(session)) == local_id
    finally:
        with admin(DB) as c:
            c.execute("select auth.drop_trusted_issuer(%s)", (other.iss,))


# b) Legacy claim settings cannot outvote newer facts ---------------------------------------

def test_stale_legacy_claims_do_not_outvote_the_token_authenticate_verified():
    a, b = sign_up(), sign_up()
    ca, cb = claims_of(a), claims_of(b)
    with api(DB) as c:
        c.autocommit = True
        # Left over in a pooled session by an earlier request (session level, not local).
        for name, value in [("request.jwt.claim.sub", ca["sub"]), ("request.jwt.claim.email", ca["email"]),
                            ("request.jwt.claim.role", "service_role"),
                            ("request.jwt.claim.session_id", ca["session_id"]),
                            ("request.jwt.claim", json.dumps(ca))]:
            c.execute("select set_config(%s, %s, false)", (name, value))
        assert str(one(c, "select auth.uid()")) == ca["sub"]  # they are honoured on their own
        helpers = ("select auth.uid()::text as uid, auth.email() as email, auth.role() as role, "
                   "auth.jwt() ->> 'sub' as sub, current_user as who")
        with c.transaction():
            c.execute("select auth.authenticate(%s)", (b["access_token"],))
            assert c.execute(helpers).fetchone() == {
                "uid": cb["sub"], "email": cb["email"], "role": "authenticated", "sub": cb["sub"], "who": "authenticated"}
        # Emptied for that transaction only.
        assert str(one(c, "select auth.uid()")) == ca["sub"]


def test_legacy_claims_of_a_signed_out_session_give_no_uid():
    with admin(DB) as c:
        c.execute(f"alter database {DB} set auth.session_check = on")
    try:
        a = sign_up()
        ca = claims_of(a)
        legacy = ("select set_config('role', 'authenticated', true), set_config('request.jwt.claim.sub', %s, true), "
                  "set_config('request.jwt.claim.session_id', %s, true), set_config('request.jwt.claim.email', %s, true), "
                  "set_config('request.jwt.claim.role', 'authenticated', true), set_config('request.jwt.claim', %s, true)")
        probe = "select auth.uid()::text as uid, auth.email() as email, auth.role() as role, auth.jwt() ->> 'sub' as sub"
        with api(DB) as c:
            c.execute(legacy, (ca["sub"], ca["session_id"], ca["email"], json.dumps(ca)))
            assert c.execute(probe).fetchone() == {"uid": ca["sub"], "email": ca["email"], "role": "authenticated",
                                                   "sub": ca["sub"]}
            c.rollback()
        rpc("select auth.sign_out('local')", role="authenticated", claims=ca)
        with api(DB) as c:
            c.execute(legacy, (ca["sub"], ca["session_id"], ca["email"], json.dumps(ca)))
            assert c.execute(probe).fetchone() == {"uid": None, "email": None, "role": None, "sub": None}
            c.rollback()
    finally:
        with admin(DB) as c:
            c.execute(f"alter database {DB} reset auth.session_check")


# c) Issuer registration abuse ---------------------------------------------------------------

def fresh_admin_refusal(sql, *args):
    """In a session that has not called any auth function yet."""
    with admin(DB) as c:
        with pytest.raises(psycopg.Error) as e:
            c.execute(sql, args)
    return e.value.sqlstate, e.value.diag.message_primary


def set_issuer_sql(i, role_map, default_role):
    return ("select auth.set_trusted_issuer(%s, %s, %s, '{role}', %s, %s)",
            i.iss, json.dumps(i.jwks()), [AUDIENCE], json.dumps(role_map), default_role)


def test_the_databases_own_issuer_cannot_be_registered():
    with admin(DB) as c:
        own = one(c, "select auth._jwt_issuer()")
        c.execute("select auth.uid()")
        assert one(c, "show auth.jwt_issuer") == own == "auth_ext"
    state, msg = fresh_admin_refusal(*set_issuer_sql(Issuer(own), {}, "authenticated"))
    assert (state, msg.split(":")[0]) == ("22023", "validation_failed") and "own issuer" in msg, msg
    # Also when the database names itself differently.
    mine = "https://project.example/auth/v1"
    with admin(DB) as c:
        c.execute(f"alter database {DB} set auth.jwt_issuer = '{mine}'")
    try:
        state, msg = fresh_admin_refusal(*set_issuer_sql(Issuer(mine), {}, "authenticated"))
        assert (state, msg.split(":")[0]) == ("22023", "validation_failed") and "own issuer" in msg, msg
    finally:
        with admin(DB) as c:
            c.execute(f"alter database {DB} reset auth.jwt_issuer")
    with admin(DB) as c:
        assert one(c, "select count(*) from auth.trusted_issuers where issuer in (%s, %s)", own, mine) == 0


def dangerous_roles():
    """name -> the statements that make it dangerous."""
    with admin(DB) as c:
        owner = one(c, "select relowner::regrole::text from pg_class where oid = 'auth.users'::regclass")
    s = uuid.uuid4().hex[:6]
    return {
        f"{ROLE_PREFIX}readall_{s}": ["create role {r} nologin", "grant pg_read_all_data to {r}"],
        f"{ROLE_PREFIX}owner_member_{s}": ["create role {r} nologin", f'grant "{owner}" to {{r}}'],
        f"{ROLE_PREFIX}createrole_{s}": ["create role {r} nologin createrole"],
        f"{ROLE_PREFIX}super_{s}": ["create role {r} nologin superuser"],
        f"{ROLE_PREFIX}bypass_{s}": ["create role {r} nologin bypassrls"],
        f"{ROLE_PREFIX}reader_{s}": ["create role {r} nologin", "grant select on auth.audit_log_entries to {r}"],
        f"{ROLE_PREFIX}colreader_{s}": ["create role {r} nologin", "grant select (email) on auth.users to {r}"],
        # Members, even without inheriting, of roles that read all data or the server's
        # files (where the keys are), or of a BYPASSRLS role.
        f"{ROLE_PREFIX}readall_noinh_{s}": ["create role {r} nologin noinherit", "grant pg_read_all_data to {r}"],
        f"{ROLE_PREFIX}program_{s}": ["create role {r} nologin", "grant pg_execute_server_program to {r}"],
        f"{ROLE_PREFIX}files_{s}": ["create role {r} nologin", "grant pg_read_server_files to {r}"],
        f"{ROLE_PREFIX}svc_member_{s}": ["create role {r} nologin noinherit", "grant service_role to {r}"],
        # A replication slot reads every change, private keys included; statistics show
        # other sessions' statements; CREATE on the auth schema.
        f"{ROLE_PREFIX}repl_{s}": ["create role {r} nologin replication"],
        f"{ROLE_PREFIX}stats_{s}": ["create role {r} nologin", "grant pg_read_all_stats to {r}"],
        f"{ROLE_PREFIX}create_auth_{s}": ["create role {r} nologin", "grant create on schema auth to {r}"],
        # Server functions that read the data files (the keys are in them), the database's
        # owner, a foreign server.
        f"{ROLE_PREFIX}readfile_{s}": ["create role {r} nologin",
                                       "grant execute on function pg_read_binary_file(text) to {r}"],
        f"{ROLE_PREFIX}dbowner_{s}": ["create role {r} nologin", f"alter database {DB} owner to {{r}}"],
        f"{ROLE_PREFIX}fdw_{s}": ["create role {r} nologin",
                                  f"create foreign data wrapper fdw_{s}",
                                  f"create server srv_{s} foreign data wrapper fdw_{s}",
                                  f"grant usage on foreign server srv_{s} to {{r}}"],
        # A role that may call the admin API.
        f"{ROLE_PREFIX}admin_api_{s}": ["create role {r} nologin",
                                        "grant execute on function auth.admin_update_user(uuid, jsonb) to {r}"],
    }


def test_roles_that_reach_the_auth_tables_cannot_be_given_to_third_party_tokens():
    roles = dangerous_roles()
    with admin(DB) as c:
        for r, stmts in roles.items():
            for s in stmts:
                c.execute(s.format(r=r))
    i = Issuer()
    for r in roles:
        for role_map, default_role in [({"admin": r}, "authenticated"), ({}, r)]:
            state, msg = fresh_admin_refusal(*set_issuer_sql(i, role_map, default_role))
            assert state == "22023" and msg.startswith("validation_failed: "), (r, state, msg)
            assert f'role "{r}"' in msg, msg
    with admin(DB) as c:
        assert one(c, "select count(*) from auth.trusted_issuers where issuer = %s", i.iss) == 0


def test_a_role_that_gains_rights_after_registration_is_refused_at_use():
    r = f"{ROLE_PREFIX}editor_{uuid.uuid4().hex[:6]}"
    i = Issuer()
    with admin(DB) as c:
        c.execute(f"create role {r} nologin")
        c.execute(f"grant {r} to {API_ROLE}")
        i.register(c, role_map={"editor": r})
    try:
        tok = i.token(str(uuid.uuid4()), role="editor")
        with api(DB) as c:
            assert one(c, "select auth.authenticate(%s) ->> 'role'", tok) == r
            assert one(c, "select current_user") == r
            c.rollback()
        with admin(DB) as c:
            c.execute(f"grant pg_read_all_data to {r}")
        with api(DB) as c:
            state, msg = refusal(c, "select auth.authenticate(%s)", tok)
            assert state == "42501" and msg.startswith("insufficient_privilege: "), (state, msg)
            assert r in msg
            assert one(c, "select current_user") == API_ROLE
    finally:
        with admin(DB) as c:
            c.execute("select auth.drop_trusted_issuer(%s)", (i.iss,))


# d) Per-backend memory is bounded ------------------------------------------------------------

N_TOKENS = 5000


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def big_tokens():
    """Distinct ES256 tokens of about 22 kB each (16 kB of user_metadata)."""
    fresh_database(MEMORY_DB)
    with admin(MEMORY_DB) as c:
        kid = one(c, "select auth.create_signing_key('ES256') ->> 'kid'")
        c.execute("select auth.promote_signing_key(%s)", (kid,))
        rows = c.execute(
            """select auth.sign_jwt(jsonb_build_object(
                        'sub', gen_random_uuid(), 'role', 'authenticated', 'exp', extract(epoch from now())::bigint + 3600,
                        'user_metadata', jsonb_build_object('blob', repeat(md5(i::text), 500)))) as t
                 from generate_series(1, %s) i""", (N_TOKENS,)).fetchall()
    tokens = [r["t"] for r in rows]
    assert len(set(tokens)) == N_TOKENS and all(len(t) > 21000 for t in tokens)
    return tokens


def verify_all(conn, tokens):
    """One statement per token on this connection (pipelined), as a client would send them."""
    with conn.pipeline():
        curs = [conn.execute("select auth.verify_jwt(%s) is not null as ok", (t,)) for t in tokens]
    return sum(cur.fetchone()["ok"] for cur in curs)


def test_thousands_of_large_distinct_tokens_do_not_grow_a_backend_without_bound(big_tokens):
    with api(MEMORY_DB) as c:
        c.autocommit = True
        pid = one(c, "select pg_backend_pid()")
        verify_all(c, big_tokens[:50])  # library, keys and caches in place
        before = rss_kib(pid)
        assert verify_all(c, big_tokens) == N_TOKENS
        grown = rss_kib(pid) - before
    assert grown < 64 * 1024, f"one backend grew by {grown // 1024} MB verifying {N_TOKENS} tokens"


def test_a_small_token_cache_still_verifies_every_token(big_tokens):
    with admin(MEMORY_DB) as c:
        c.execute(f"alter database {MEMORY_DB} set auth.token_cache_size = '256kB'")
    try:
        with api(MEMORY_DB) as c:
            c.autocommit = True
            assert one(c, "show auth.token_cache_size") == "256kB"
            # Each token is larger than a quarter of the cache: kept by none, verified afresh
            # every time.
            assert verify_all(c, big_tokens) == N_TOKENS
            assert verify_all(c, big_tokens[:200]) == 200
    finally:
        with admin(MEMORY_DB) as c:
            c.execute(f"alter database {MEMORY_DB} reset auth.token_cache_size")


def test_a_revoked_key_fails_at_once_even_in_a_backend_inside_an_old_snapshot():
    """A backend whose key cache is (re)loaded inside a repeatable-read transaction that
    began before a revocation must not load the revoked key and keep it: the keys are read
    through a fresh snapshot after every pending invalidation is taken in."""
    fresh_database(MEMORY_DB)
    with admin(MEMORY_DB) as c:
        kid = one(c, "select auth.create_signing_key('ES256') ->> 'kid'")
        c.execute("select auth.promote_signing_key(%s)", (kid,))
        token = one(c, """select auth.sign_jwt('{"sub": "a", "role": "authenticated"}')""")
        spare = one(c, "select auth.create_signing_key('EdDSA') ->> 'kid'")
    a = psycopg.connect(dbname=MEMORY_DB, autocommit=False)
    try:
        a.execute("begin isolation level repeatable read")
        a.execute("select 1")  # the snapshot is taken before the revocation
        with admin(MEMORY_DB) as c:
            c.execute("select auth.promote_signing_key(%s)", (spare,))
            c.execute("select auth.revoke_signing_key(%s)", (kid,))
        with pytest.raises(psycopg.Error) as e:
            a.execute("select auth.verify_jwt(%s)", (token,))
        assert e.value.sqlstate == "28000" and "has been revoked" in e.value.diag.message_primary
        a.rollback()
        for _ in range(3):
            with pytest.raises(psycopg.Error) as e:
                a.execute("select auth.verify_jwt(%s)", (token,))
            assert e.value.sqlstate == "28000"
            a.rollback()
        # Inside a transaction that had already checked the token: the next check fails.
        with admin(MEMORY_DB) as c:
            kid2 = one(c, "select auth.create_signing_key('ES256') ->> 'kid'")
            c.execute("select auth.promote_signing_key(%s)", (kid2,))
            token2 = one(c, """select auth.sign_jwt('{"sub": "b", "role": "authenticated"}')""")
        a.execute("begin")
        assert a.execute("select auth.verify_jwt(%s) ->> 'sub'", (token2,)).fetchone()[0] == "b"
        with admin(MEMORY_DB) as c:
            c.execute("select auth.promote_signing_key(%s)", (spare,))
            c.execute("select auth.revoke_signing_key(%s)", (kid2,))
        with pytest.raises(psycopg.Error) as e:
            a.execute("select auth.verify_jwt(%s)", (token2,))
        assert e.value.sqlstate == "28000" and "has been revoked" in e.value.diag.message_primary
        a.rollback()
    finally:
        a.close()
