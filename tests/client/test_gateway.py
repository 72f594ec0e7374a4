"""auth.authenticate_request over real connections, as an HTTP server makes the call: its login
role is NOINHERIT and a member of the API roles; each request is one transaction whose first
call checks the apikey header and authenticates the bearer. API keys and tokens are made
with PyJWT, an independent implementation."""

import json
import time
import uuid

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import admin, api

ISSUER = "https://idp.gateway-client.example"


def request(conn, apikey, bearer=None):
    """One request's transaction: authenticate_request, then who we are. Rolled back."""
    try:
        with conn.transaction():
            claims = conn.execute("select auth.authenticate_request(%s, %s) as c", (apikey, bearer)).fetchone()["c"]
            # No casts: a hostile session's temporary types would stand in for the test's own.
            who = conn.execute("select current_user as u, auth.uid() as uid, auth.role() as r").fetchone()
            who["uid"] = who["uid"] and str(who["uid"])
            raise Rollback((claims, who))
    except Rollback as r:
        return r.args[0]


class Rollback(Exception):
    pass


def refused(conn, apikey, bearer=None):
    with pytest.raises(psycopg.Error) as e:
        with conn.transaction():
            conn.execute("select auth.authenticate_request(%s, %s)", (apikey, bearer))
    return e.value.sqlstate, e.value.diag.message_primary


def test_api_keys_from_an_independent_implementation(secret):
    now = int(time.time())
    anon = jwt.encode({"role": "anon", "iss": "supabase", "iat": now, "exp": now + 3600 * 24 * 365}, secret, algorithm="HS256")
    email = f"gw-{uuid.uuid4().hex[:8]}@example.io"
    with admin() as a:
        s = a.execute("select auth.sign_up(%s, 'gateway-password-1') as s", (email,)).fetchone()["s"]
    with api() as c:
        claims, who = request(c, anon)
        assert (claims["role"], who["u"], who["uid"], who["r"]) == ("anon", "anon", None, "anon")
        claims, who = request(c, anon, s["access_token"])
        assert (who["u"], who["uid"], claims["email"]) == ("authenticated", s["user"]["id"], email)
        # Refused as a key, whatever the bearer: a user's token, a key with a subject, a
        # key of another secret, a key of another role, none at all.
        invalid = ("28000", "invalid_api_key: Invalid API key")
        assert refused(c, s["access_token"], s["access_token"]) == invalid
        with_sub = jwt.encode({"role": "anon", "sub": s["user"]["id"], "iat": now}, secret, algorithm="HS256")
        assert refused(c, with_sub) == invalid
        other = jwt.encode({"role": "anon", "iat": now}, "another-projects-secret-of-32-chars!!", algorithm="HS256")
        assert refused(c, other, s["access_token"]) == invalid
        authenticated = jwt.encode({"role": "authenticated", "iat": now}, secret, algorithm="HS256")
        assert refused(c, authenticated) == invalid
        assert refused(c, None, s["access_token"]) == invalid
        # A refusal leaves the transaction as it was: the login role, no claims.
        with c.transaction():
            with pytest.raises(psycopg.Error):
                with c.transaction():
                    c.execute("select auth.authenticate_request(%s, %s)", (with_sub, s["access_token"]))
            row = c.execute("select current_user as u, current_setting('request.jwt.claims', true) as claims").fetchone()
            assert (row["u"], row["claims"] or "") == ("client_authenticator", "")


def test_a_trusted_issuers_token_is_never_an_api_key():
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())) | {"kid": "gw-idp", "alg": "ES256"}
    now = int(time.time())
    token = jwt.encode({"iss": ISSUER, "aud": "gw-app", "role": "anon", "iat": now, "exp": now + 600},
                       key, algorithm="ES256", headers={"kid": "gw-idp"})
    with admin() as a:
        a.execute("select auth.set_trusted_issuer(%s, %s, '{gw-app}', '{role}', '{\"anon\": \"anon\"}', 'anon')",
                  (ISSUER, json.dumps({"keys": [jwk]})))
        anon = a.execute("""select auth.sign_jwt('{"role": "anon"}') as k""").fetchone()["k"]
    try:
        with api() as c:
            # A valid token of the issuer, with the role and shape of an API key ...
            assert c.execute("select auth.verify_jwt(%s) ->> 'role' as r", (token,)).fetchone()["r"] == "anon"
            c.rollback()
            # ... is refused as one, but works as the bearer behind this project's key.
            assert refused(c, token) == ("28000", "invalid_api_key: Invalid API key")
            claims, who = request(c, anon, token)
            assert (claims["iss"], who["u"]) == (ISSUER, "anon")
    finally:
        with admin() as a:
            a.execute("select auth.drop_trusted_issuer(%s)", (ISSUER,))


def test_a_hostile_search_path_and_temporary_types_reach_nothing():
    """The caller's temporary types and views come before pg_catalog when its path leaves
    pg_temp out; authenticate_request runs with the caller's rights (it switches the role)
    but none of those objects may run inside it."""
    with admin() as a:
        anon = a.execute("""select auth.sign_jwt('{"role": "anon"}') as k""").fetchone()["k"]
        s = a.execute("select auth.sign_up(%s, 'gateway-password-1') as s",
                      (f"gw-{uuid.uuid4().hex[:8]}@example.io",)).fetchone()["s"]
    with api() as c:
        c.execute("create temp table fired (what pg_catalog.text)")
        c.execute("""create function pg_temp.fire(what pg_catalog.text) returns pg_catalog.bool language plpgsql as $$
                     begin insert into pg_temp.fired values (what); return true; end $$""")
        for t in ("text", "jsonb", "json", "uuid", "bool", "name", "oid", "int4", "int8", "timestamptz"):
            c.execute(f'create domain pg_temp."{t}" as pg_catalog."{t}" check (pg_temp.fire(\'type {t}\'))')
        for v in ("pg_roles", "pg_settings", "pg_class"):
            c.execute(f"create temp view {v} as select *, pg_temp.fire('view {v}') as f from pg_catalog.{v}")
        # pg_temp left out of the path is searched first, before pg_catalog, for types and
        # relations (named in the path it would come after the implicit pg_catalog).
        c.execute("set search_path = public")
        c.commit()
        claims, who = request(c, anon, s["access_token"])
        assert who["uid"] == s["user"]["id"]
        assert refused(c, s["access_token"])[0] == "28000"
        assert c.execute("select count(*) as n from pg_temp.fired").fetchone()["n"] == 0
        # The planted objects are live: the attacker's own statements do use them.
        c.execute("select 'x'::text")
        assert c.execute("select count(*) as n from pg_temp.fired").fetchone()["n"] == 1
