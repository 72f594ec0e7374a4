"""Fake social-login providers for the tests: a GitHub-shaped OAuth 2 provider and an OpenID
Connect provider with its own RS256 key, each on 127.0.0.1 with an ephemeral port. No login
page: the authorization endpoint redirects straight back to redirect_uri with a code.

From pytest:

    from fake_providers import FakeGitHub, FakeOIDC

    with FakeGitHub() as github, FakeOIDC() as oidc:
        # configure the server with AUTH_EXTERNAL_GITHUB_URL=github.url,
        # AUTH_EXTERNAL_<NAME>_ISSUER=oidc.url, client id/secret CLIENT_ID/CLIENT_SECRET
        github.control(user={"id": 7, "email": "a@example.com", "email_verified": True})
        oidc.control(mode="bad_nonce")
        ...
        github.requests()  # what the fake received, for assertions

From another process (the JS client tests): `python tests/client/fake_providers.py` prints
one JSON line {"github": "http://127.0.0.1:PORT", "oidc": "http://127.0.0.1:PORT"} and serves
until killed; drive it with POST /_control (the JSON body of `control`) and read
GET /_requests.

Control (persists until the next control; {"reset": true} restores the defaults and clears
the request log):
  user    the next user to sign in: id/sub, email, email_verified, name, login, picture
          (avatar_url), emails (GitHub's /user/emails list, else derived from email),
          claims (extra ID-token claims), id_token_email (false: email only in /userinfo)
  mode    None, or one of: deny (authorize redirects back with error=access_denied),
          token_error (the token endpoint refuses the code), and for OIDC bad_nonce,
          bad_signature (signed by a key not in the JWKS), wrong_aud
  code_ttl  seconds a code stays valid (default 60)
Codes are single-use; client_id, client_secret and redirect_uri are checked at the token
endpoint as the real providers do.
"""

import base64
import json
import secrets
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret"

DEFAULT_USER = {
    "id": 1001,
    "sub": "fake-user-1001",
    "login": "fakeuser",
    "email": "fake.user@example.com",
    "email_verified": True,
    "name": "Fake User",
    "picture": "https://avatars.example.com/fake-user.png",
}
MODES = {None, "deny", "token_error", "bad_nonce", "bad_signature", "wrong_aud"}


def with_query(url, params):
    """`url` with `params` appended to its query."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: pytest shows failures, not traffic
        pass

    def _answer(self, status, body, headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _dispatch(self, method):
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        body = self._body() if method == "POST" else b""
        fake = self.server.fake
        if parts.path == "/_control" and method == "POST":
            try:
                fake.control(**json.loads(body or b"{}"))
            except (TypeError, ValueError) as e:
                return self._answer(400, {"error": str(e)})
            return self._answer(200, {"ok": True})
        if parts.path == "/_requests" and method == "GET":
            return self._answer(200, fake.requests())
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        status, answer, headers = fake.handle(method, parts.path, query, form, self.headers)
        self._answer(status, answer, headers)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")


class _Fake:
    """What both fakes share: the server thread, the control state, codes and tokens."""

    kind = None

    def __init__(self, client_id=CLIENT_ID, client_secret=CLIENT_SECRET):
        self.client_id = client_id
        self.client_secret = client_secret
        self._lock = threading.Lock()
        self._httpd = None
        self._thread = None
        self._reset()

    def _reset(self):
        self.user = dict(DEFAULT_USER)
        self.mode = None
        self.code_ttl = 60
        self._codes = {}  # code -> {redirect_uri, nonce, user, expires}
        self._tokens = {}  # access token -> user
        self._log = []

    # -- life cycle --

    def start(self):
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- control --

    def control(self, user=None, mode=None, code_ttl=None, reset=False):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {sorted(m for m in MODES if m)}")
        with self._lock:
            if reset:
                self._reset()
            if user is not None:
                if not isinstance(user, dict):
                    raise TypeError("user must be an object")
                self.user = dict(user)
            self.mode = mode
            if code_ttl is not None:
                self.code_ttl = float(code_ttl)

    def requests(self, endpoint=None):
        """The requests received, oldest first: {endpoint, method, query, form, auth}."""
        with self._lock:
            return [dict(r) for r in self._log if endpoint is None or r["endpoint"] == endpoint]

    def _record(self, endpoint, method, query, form, headers):
        with self._lock:
            self._log.append(
                {
                    "endpoint": endpoint,
                    "method": method,
                    "query": query,
                    "form": form,
                    "authorization": headers.get("Authorization"),
                }
            )

    # -- the OAuth 2 parts --

    def _authorize(self, query):
        redirect_uri = query.get("redirect_uri")
        if query.get("client_id") != self.client_id or not redirect_uri:
            error = {"error": "invalid_request", "error_description": "unknown client or no redirect_uri"}
            return 400, error, {}
        with self._lock:
            mode, user = self.mode, dict(self.user)
            if mode != "deny":
                code = secrets.token_urlsafe(16)
                self._codes[code] = {
                    "redirect_uri": redirect_uri,
                    "nonce": query.get("nonce"),
                    "scope": query.get("scope", ""),
                    "user": user,
                    "expires": time.time() + self.code_ttl,
                }
        if mode == "deny":
            params = {
                "error": "access_denied",
                "error_description": "The user has denied your application access.",
            }
        else:
            params = {"code": code}
        if "state" in query:
            params["state"] = query["state"]
        return 302, b"", {"Location": with_query(redirect_uri, params)}

    def _client(self, form, headers):
        """(client_id, secret) from HTTP Basic or the form (client_secret_post)."""
        auth = headers.get("Authorization") or ""
        if auth.startswith("Basic "):
            try:
                raw = base64.b64decode(auth[6:], validate=True).decode()
            except ValueError:
                return None, None
            cid, _, sec = raw.partition(":")
            return unquote_plus(cid), unquote_plus(sec)
        return form.get("client_id"), form.get("client_secret")

    def _redeem(self, form, headers):
        """The code's grant, or (error, description)."""
        cid, sec = self._client(form, headers)
        if cid != self.client_id or sec != self.client_secret:
            return None, ("incorrect_client_credentials", "The client_id and/or client_secret are incorrect.")
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)  # single-use
            mode = self.mode
        if mode == "token_error":
            return None, ("bad_verification_code", "The code passed is incorrect or expired.")
        if grant is None or grant["expires"] < time.time():
            return None, ("bad_verification_code", "The code passed is incorrect or expired.")
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return None, ("redirect_uri_mismatch", "The redirect_uri does not match the authorization request's.")
        return grant, None

    def _issue(self, grant):
        access = "fake_at_" + secrets.token_urlsafe(16)
        with self._lock:
            self._tokens[access] = grant["user"]
        return access, "fake_rt_" + secrets.token_urlsafe(16)

    def _bearer_user(self, headers):
        auth = headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        with self._lock:
            return self._tokens.get(token)


class FakeGitHub(_Fake):
    """GitHub's web flow and REST API: /login/oauth/authorize, /login/oauth/access_token
    (errors answered with 200, as GitHub does), /api/v3/user, /api/v3/user/emails."""

    kind = "github"

    def handle(self, method, path, query, form, headers):
        if path == "/login/oauth/authorize" and method == "GET":
            self._record("authorize", method, query, form, headers)
            return self._authorize(query)
        if path == "/login/oauth/access_token" and method == "POST":
            self._record("token", method, query, form, headers)
            grant, error = self._redeem(form, headers)
            if error:
                return 200, {"error": error[0], "error_description": error[1], "error_uri": "https://docs.github.com/"}, {}
            access, refresh = self._issue(grant)
            answer = {"access_token": access, "token_type": "bearer", "scope": grant["scope"], "refresh_token": refresh}
            return 200, answer, {}
        if path in ("/api/v3/user", "/api/v3/user/emails") and method == "GET":
            endpoint = "user" if path.endswith("/user") else "emails"
            self._record(endpoint, method, query, form, headers)
            user = self._bearer_user(headers)
            if user is None:
                return 401, {"message": "Bad credentials"}, {}
            if endpoint == "user":
                return 200, {
                    "id": user.get("id", user.get("sub")),
                    "login": user.get("login"),
                    "name": user.get("name"),
                    "email": user.get("email"),
                    "avatar_url": user.get("avatar_url", user.get("picture")),
                }, {}
            emails = user.get("emails")
            if emails is None:
                emails = []
                if user.get("email"):
                    verified = bool(user.get("email_verified"))
                    emails.append({"email": user["email"], "primary": True, "verified": verified, "visibility": "public"})
            return 200, emails, {}
        return 404, {"message": "Not Found"}, {}


class FakeOIDC(_Fake):
    """An OpenID Connect provider: discovery, /jwks, /authorize, /token (client_secret_basic
    or _post), /userinfo; ID tokens signed RS256 with its own key (kid fake-key-1)."""

    kind = "oidc"
    KID = "fake-key-1"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        # Signs bad_signature tokens under the published kid; never published.
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def discovery(self):
        base = self.url
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "userinfo_endpoint": f"{base}/userinfo",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }

    def jwks(self):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update({"kid": self.KID, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def id_token(self, grant, mode):
        user, now = grant["user"], int(time.time())
        claims = {
            "iss": self.url,
            "sub": str(user.get("sub", user.get("id"))),
            "aud": "another-client" if mode == "wrong_aud" else self.client_id,
            "exp": now + 300,
            "iat": now,
            "name": user.get("name"),
            "picture": user.get("picture", user.get("avatar_url")),
        }
        if user.get("email") and user.get("id_token_email", True):
            claims["email"] = user["email"]
            claims["email_verified"] = bool(user.get("email_verified"))
        if grant["nonce"] is not None:
            claims["nonce"] = "not-the-nonce" if mode == "bad_nonce" else grant["nonce"]
        claims.update(user.get("claims") or {})
        claims = {k: v for k, v in claims.items() if v is not None}
        key = self.other_key if mode == "bad_signature" else self.key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.KID})

    def handle(self, method, path, query, form, headers):
        if path == "/.well-known/openid-configuration" and method == "GET":
            self._record("discovery", method, query, form, headers)
            return 200, self.discovery(), {}
        if path == "/jwks" and method == "GET":
            self._record("jwks", method, query, form, headers)
            return 200, self.jwks(), {}
        if path == "/authorize" and method == "GET":
            self._record("authorize", method, query, form, headers)
            return self._authorize(query)
        if path == "/token" and method == "POST":
            self._record("token", method, query, form, headers)
            if form.get("grant_type") != "authorization_code":
                return 400, {"error": "unsupported_grant_type"}, {}
            grant, error = self._redeem(form, headers)
            if error:
                bad_client = error[0] == "incorrect_client_credentials"
                status, code = (401, "invalid_client") if bad_client else (400, "invalid_grant")
                return status, {"error": code, "error_description": error[1]}, {}
            with self._lock:
                mode = self.mode
            access, refresh = self._issue(grant)
            return 200, {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": refresh,
                "scope": grant["scope"],
                "id_token": self.id_token(grant, mode),
            }, {}
        if path == "/userinfo" and method in ("GET", "POST"):
            self._record("userinfo", method, query, form, headers)
            user = self._bearer_user(headers)
            if user is None:
                return 401, {"error": "invalid_token"}, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            info = {
                "sub": str(user.get("sub", user.get("id"))),
                "email": user.get("email"),
                "email_verified": bool(user.get("email_verified")) if user.get("email") else None,
                "name": user.get("name"),
                "picture": user.get("picture", user.get("avatar_url")),
            }
            return 200, {k: v for k, v in info.items() if v is not None}, {}
        return 404, {"error": "not_found"}, {}


def main():
    github, oidc = FakeGitHub().start(), FakeOIDC().start()
    print(json.dumps({"github": github.url, "oidc": oidc.url}), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    github.stop()
    oidc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
