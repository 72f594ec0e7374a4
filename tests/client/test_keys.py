"""Signing keys against an independent JOSE implementation (PyJWT on pyca/cryptography,
i.e. OpenSSL; the extension uses RustCrypto): tokens the extension signs verify there from
auth.jwks() alone; keys made there import as PEM or JWK; tokens signed there verify in the
extension once it is registered as a trusted issuer. Runs in a database of its own, since
it changes which key signs."""

import hashlib
import hmac
import json
import time
import uuid

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from conftest import admin, api, drop_database, fresh_database

DB = "auth_keys"
ALGS = ["ES256", "RS256", "EdDSA"]


@pytest.fixture(scope="module", autouse=True)
def keys_database(database):
    fresh_database(DB)
    with admin(DB) as c:
        c.execute("create role keys_editor nologin")
        c.execute("grant keys_editor to client_authenticator")
    yield
    drop_database(DB)
    with psycopg.connect(dbname="postgres", autocommit=True) as c:
        c.execute("drop role if exists keys_editor")


def one(conn, sql, *args):
    return next(iter(conn.execute(sql, args).fetchone().values()))


def jwks_as_anon():
    with api(DB) as c:
        c.execute("set role anon")
        return one(c, "select auth.jwks()")


def sign_up(email):
    with admin(DB) as c:
        return one(c, "select auth.sign_up(%s, 'correct horse battery')", email)


def private_key(alg):
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate()


def public_jwk(alg, key, kid):
    algo = {"ES256": ECAlgorithm, "RS256": RSAAlgorithm, "EdDSA": OKPAlgorithm}[alg]
    jwk = algo.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=kid, alg=alg, use="sig")
    return jwk


@pytest.mark.parametrize("alg", ALGS)
def test_extension_tokens_verify_in_pyjwt_from_the_jwks_alone(alg):
    with admin(DB) as c:
        kid = one(c, "select auth.create_signing_key(%s) ->> 'kid'", alg)
        c.execute("select auth.promote_signing_key(%s)", (kid,))
    session = sign_up(f"jwks-{alg.lower()}-{uuid.uuid4().hex[:6]}@example.io")
    token = session["access_token"]
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "kid": kid, "typ": "JWT"}
    jwks = jwks_as_anon()
    for k in jwks["keys"]:
        assert not set(k) & {"d", "p", "q", "dp", "dq", "qi", "k"}, k
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    claims = jwt.decode(token, key.key, algorithms=[alg], audience="authenticated", issuer="auth_ext")
    assert claims["sub"] == session["user"]["id"]
    assert claims["role"] == "authenticated"
    # A changed payload does not verify there either.
    h, p, s = token.split(".")
    forged = ".".join([h, jwt.utils.base64url_encode(json.dumps({**claims, "role": "service_role"}).encode()).decode(), s])
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, key.key, algorithms=[alg], audience="authenticated")


def pem(key, fmt):
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


@pytest.mark.parametrize(
    "alg,form",
    [
        ("ES256", "pkcs8"), ("ES256", "sec1"), ("ES256", "jwk"),
        ("RS256", "pkcs8"), ("RS256", "pkcs1"), ("RS256", "jwk"),
        ("EdDSA", "pkcs8"), ("EdDSA", "jwk"),
    ],
)
def test_keys_made_elsewhere_import_and_sign_tokens_they_verify(alg, form):
    key = private_key(alg)
    if form == "pkcs8":
        text = pem(key, serialization.PrivateFormat.PKCS8)
    elif form in ("sec1", "pkcs1"):
        text = pem(key, serialization.PrivateFormat.TraditionalOpenSSL)
    else:
        algo = {"ES256": ECAlgorithm, "RS256": RSAAlgorithm, "EdDSA": OKPAlgorithm}[alg]
        text = algo.to_jwk(key)
    kid = f"imported-{alg}-{form}-{uuid.uuid4().hex[:6]}"
    with admin(DB) as c:
        info = one(c, "select auth.import_signing_key(%s, null, %s)", text, kid)
        assert info["algorithm"] == alg and info["state"] == "standby"
        # The published public key is the one we imported.
        assert {k: v for k, v in info["public_jwk"].items() if k in ("x", "y", "n", "e", "crv")} == {
            k: v for k, v in public_jwk(alg, key, kid).items() if k in ("x", "y", "n", "e", "crv")
        }
        c.execute("select auth.promote_signing_key(%s)", (kid,))
        token = one(c, "select auth.sign_jwt(%s)", json.dumps({"sub": "s1", "exp": int(time.time()) + 60}))
    claims = jwt.decode(token, key.public_key(), algorithms=[alg])
    assert claims["sub"] == "s1"


@pytest.fixture()
def issuer():
    """An outside issuer with one key of each algorithm, registered as trusted."""
    iss = f"https://issuer-{uuid.uuid4().hex[:6]}.example"
    keys = {alg: (f"{alg.lower()}-1", private_key(alg)) for alg in ALGS}
    jwks = {"keys": [public_jwk(alg, k, kid) for alg, (kid, k) in keys.items()]}
    with admin(DB) as c:
        c.execute(
            "select auth.set_trusted_issuer(%s, %s, '{client-123}', '{org_role}', %s)",
            (iss, json.dumps(jwks), json.dumps({"editor": "keys_editor"})),
        )
    yield iss, keys
    with admin(DB) as c:
        c.execute("select auth.drop_trusted_issuer(%s)", (iss,))


def outside_token(iss, keys, alg, **claims):
    kid, key = keys[alg]
    now = int(time.time())
    body = {"iss": iss, "aud": "client-123", "sub": str(uuid.uuid4()), "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid}), body


@pytest.mark.parametrize("alg", ALGS)
def test_tokens_signed_elsewhere_verify_after_registering_the_issuer(issuer, alg):
    iss, keys = issuer
    token, body = outside_token(iss, keys, alg, org_role="editor", role="service_role")
    with api(DB) as c:
        claims = one(c, "select auth.verify_jwt(%s)", token)
        assert claims["sub"] == body["sub"] and claims["role"] == "keys_editor"
        c.execute("select auth.authenticate(%s)", (token,))
        # Its subject is the issuer's, not a local user's: auth.uid() is NULL and the
        # subject is read from auth.jwt().
        row = c.execute(
            "select current_user as who, auth.uid()::text as uid, auth.jwt() ->> 'sub' as sub, auth.role() as role"
        ).fetchone()
        assert row == {"who": "keys_editor", "uid": None, "sub": body["sub"], "role": "keys_editor"}
        c.rollback()
        plain, _ = outside_token(iss, keys, alg)
        assert one(c, "select auth.verify_jwt(%s) ->> 'role'", plain) == "authenticated"


def hs256_forgery(header, claims, key):
    """By hand: PyJWT itself refuses to use a public key as an HMAC secret."""
    b64 = jwt.utils.base64url_encode
    signing_input = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(claims).encode())
    return (signing_input + b"." + b64(hmac.new(key, signing_input, hashlib.sha256).digest())).decode()


def test_outside_tokens_that_must_fail(issuer):
    iss, keys = issuer
    cases = {
        "wrong audience": outside_token(iss, keys, "ES256", aud="another-client")[0],
        "expired": outside_token(iss, keys, "ES256", exp=int(time.time()) - 3600)[0],
        # Signed by a key the issuer never published, under a published kid.
        "foreign key": jwt.encode({"iss": iss, "aud": "client-123", "exp": int(time.time()) + 60},
                                  private_key("ES256"), algorithm="ES256", headers={"kid": "es256-1"}),
        # An issuer nobody registered.
        "unknown issuer": outside_token("https://nobody.example", keys, "RS256")[0],
        # Algorithm confusion: HS256 with the RSA public key as the secret.
        "alg confusion": hs256_forgery(
            {"alg": "HS256", "kid": "rs256-1"},
            {"iss": iss, "aud": "client-123", "exp": int(time.time()) + 60},
            json.dumps(public_jwk("RS256", keys["RS256"][1], "rs256-1")).encode()),
    }
    want = {
        "wrong audience": "audience is not accepted",
        "expired": "JWT expired",
        "foreign key": "invalid signature",
        "unknown issuer": "is not trusted",
        "alg confusion": "is RS256 but the token says HS256",
    }
    with api(DB) as c:
        for name, token in cases.items():
            with pytest.raises(psycopg.Error) as e:
                c.execute("select auth.verify_jwt(%s)", (token,))
            assert e.value.sqlstate == "28000", name
            assert want[name] in e.value.diag.message_primary, (name, e.value.diag.message_primary)
            c.rollback()


@pytest.mark.parametrize("alg,autocommit", [("ES256", True), ("HS256", True), ("HS256", False)])
def test_revocation_reaches_a_backend_that_already_verified_the_token(alg, autocommit):
    with admin(DB) as c:
        old = one(c, "select auth.create_signing_key(%s) ->> 'kid'", alg)
        c.execute("select auth.promote_signing_key(%s)", (old,))
        token = one(c, "select auth.sign_jwt(%s)", json.dumps({"sub": "r", "exp": int(time.time()) + 60}))
        new = one(c, "select auth.create_signing_key('EdDSA') ->> 'kid'")
        c.execute("select auth.promote_signing_key(%s)", (new,))
    with api(DB) as other:
        # Without autocommit the checks and the refusal are in one transaction that began
        # before the revocation.
        other.autocommit = autocommit
        for _ in range(3):  # verified, then remembered by this backend (HS256 from the second)
            assert one(other, "select auth.verify_jwt(%s) ->> 'sub'", token) == "r"
        with admin(DB) as c:
            c.execute("select auth.revoke_signing_key(%s)", (old,))
        with pytest.raises(psycopg.Error) as e:
            other.execute("select auth.verify_jwt(%s)", (token,))
        assert e.value.sqlstate == "28000"
        assert "has been revoked" in e.value.diag.message_primary
