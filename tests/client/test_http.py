"""auth-ext-server: GoTrue's HTTP API over the extension. Raw HTTP for the protocol's
details (shapes, statuses, headers, bad input), the official supabase-js client (tests/js)
and the official Python client (supabase-auth) for what apps call."""

import json
import os
import subprocess
import threading

import httpx
import pytest
from supabase_auth import SyncGoTrueAdminAPI, SyncGoTrueClient
from supabase_auth.errors import AuthApiError, AuthWeakPasswordError

from conftest import admin

PASSWORD = "correct horse battery staple"
NEW = {"X-Supabase-Api-Version": "2024-01-01"}


def keyed(server, token=None, **extra):
    return {"apikey": server.anon, "Authorization": f"Bearer {token or server.anon}", **extra}


def sign_up(server, email):
    r = httpx.post(f"{server.url}/auth/v1/signup", headers=keyed(server), json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()


def test_supabase_js(http_server):
    env = {
        **os.environ,
        "AUTH_URL": http_server.url,
        "ANON_KEY": http_server.anon,
        "SERVICE_KEY": http_server.service,
        "ADMIN_DSN": f"postgresql://{os.environ.get('PGUSER', 'postgres')}:{os.environ.get('PGPASSWORD', '')}"
        f"@{os.environ.get('PGHOST', 'localhost')}:{os.environ.get('PGPORT', '5432')}/{http_server.db}",
    }
    r = subprocess.run(
        ["node", "--test", "--test-concurrency=1", "--test-reporter=spec", "auth.test.js"],
        cwd="tests/js",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-20000:] + r.stderr[-5000:]


def test_error_shapes(http_server):
    url = f"{http_server.url}/auth/v1/token?grant_type=password"
    body = {"email": "nobody@example.com", "password": "wrong password"}
    legacy = httpx.post(url, headers=keyed(http_server), json=body)
    assert legacy.status_code == 400
    assert legacy.json() == {"code": 400, "error_code": "invalid_credentials", "msg": "Invalid login credentials"}
    assert legacy.headers["x-sb-error-code"] == "invalid_credentials"
    assert "x-supabase-api-version" not in legacy.headers
    new = httpx.post(url, headers=keyed(http_server, **NEW), json=body)
    assert new.status_code == 400
    assert new.json() == {"code": "invalid_credentials", "message": "Invalid login credentials"}
    assert new.headers["x-supabase-api-version"] == "2024-01-01"
    # The OAuth-shaped error of a missing refresh token.
    r = httpx.post(f"{http_server.url}/token?grant_type=refresh_token", headers=keyed(http_server), json={})
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_request", "error_description": "refresh_token required"}


def test_bad_input_writes_nothing_and_the_server_keeps_serving(http_server):
    s = http_server
    users_before = count_users(s)
    cases = [
        ("post", "/signup", {"content": b"{not json"}, 400, "bad_json"),
        ("post", "/signup", {"json": {"email": 5, "password": PASSWORD}}, 400, "bad_json"),
        ("post", "/signup", {"json": {"email": "x@example.com", "password": ["a"]}}, 400, "bad_json"),
        ("post", "/token?grant_type=nonsense", {"json": {}}, 400, "invalid_credentials"),
        ("post", "/token", {"json": {}}, 400, "invalid_credentials"),
        ("post", "/signup", {"content": b"{" + b" " * (2 << 20) + b"}"}, 413, "request_too_large"),
        ("get", "/no/such/path", {}, 404, "not_found"),
        ("delete", "/signup", {}, 405, "method_not_allowed"),
        ("post", "/verify", {"json": {"type": "signup"}}, 400, "validation_failed"),
        ("post", "/verify", {"json": {"type": "signup", "token_hash": "x", "email": "a@b.c"}}, 400, "validation_failed"),
        ("post", "/signup", {"json": {"phone": "+15555550100", "password": PASSWORD}}, 400, "phone_provider_disabled"),
        ("get", "/admin/users/not-a-uuid", {"service": True}, 404, "validation_failed"),
        ("get", "/admin/users?page=x", {"service": True}, 400, "validation_failed"),
    ]
    for method, path, kw, status, code in cases:
        headers = keyed(s, s.service) if kw.pop("service", False) else keyed(s)
        headers["apikey"] = s.service if headers["Authorization"].endswith(s.service) else s.anon
        r = httpx.request(method, f"{s.url}/auth/v1{path}", headers=headers, **kw)
        assert (r.status_code, r.json().get("error_code")) == (status, code), (method, path, r.text[:300])
    assert count_users(s) == users_before
    assert httpx.get(f"{s.url}/health").status_code == 200


def count_users(server):
    with admin(server.db) as c:
        return c.execute("select count(*) as n from auth.users").fetchone()["n"]


def test_keys_as_the_gateway_checks_them(http_server):
    s = http_server
    url = f"{s.url}/auth/v1/signup"
    body = {"email": "keys@example.com", "password": PASSWORD}
    r = httpx.post(url, json=body)
    assert (r.status_code, r.json()["error_code"]) == (401, "no_api_key")
    r = httpx.post(url, json=body, headers={"apikey": "not.a.key"})
    assert (r.status_code, r.json()["error_code"]) == (401, "invalid_api_key")
    # A user's access token is not an API key.
    session = sign_up(s, "keys-owner@example.com")
    r = httpx.get(f"{s.url}/user", headers={"apikey": session["access_token"],
                                            "Authorization": f"Bearer {session['access_token']}"})
    assert (r.status_code, r.json()["error_code"]) == (401, "invalid_api_key")
    # A key signed with another secret.
    forged = s.anon.rsplit(".", 1)[0] + ".c2lnbmF0dXJl"
    r = httpx.post(url, json=body, headers={"apikey": forged})
    assert (r.status_code, r.json()["error_code"]) == (401, "invalid_api_key")
    # The anon key cannot reach the admin API; a user's token with the anon key neither.
    r = httpx.get(f"{s.url}/admin/users", headers=keyed(s))
    assert (r.status_code, r.json()["error_code"]) == (403, "not_admin")
    r = httpx.get(f"{s.url}/admin/users", headers=keyed(s, session["access_token"]))
    assert (r.status_code, r.json()["error_code"]) == (403, "not_admin")
    assert count_users(s) >= 1
    with admin(s.db) as c:
        assert c.execute("select count(*) as n from auth.users where email = 'keys@example.com'").fetchone()["n"] == 0


def test_forged_forwarded_for_is_not_the_client(http_server):
    s = http_server
    session = sign_up(s, "xff@example.com")
    r = httpx.get(f"{s.url}/user", headers=keyed(s, session["access_token"], **{"X-Forwarded-For": "203.0.113.9"}))
    assert r.status_code == 200
    with admin(s.db) as c:
        ips = [row["ip"] for row in c.execute(
            "select host(ip) as ip from auth.sessions s join auth.users u on u.id = s.user_id "
            "where u.email = 'xff@example.com'")]
    assert ips == ["127.0.0.1"]


def test_logout_is_204_and_ends_the_session(http_server):
    s = http_server
    session = sign_up(s, "logout@example.com")
    r = httpx.post(f"{s.url}/logout?scope=local", headers=keyed(s, session["access_token"]))
    assert r.status_code == 204 and r.content == b""
    r = httpx.post(f"{s.url}/token?grant_type=refresh_token", headers=keyed(s),
                   json={"refresh_token": session["refresh_token"]})
    assert r.status_code == 400
    r = httpx.post(f"{s.url}/logout?scope=everything", headers=keyed(s, session["access_token"]))
    assert r.status_code in (400, 403)


def test_verify_link_redirects_with_the_session(http_server):
    s = http_server
    email = "link@example.com"
    sign_up(s, email)
    link = httpx.post(f"{s.url}/admin/generate_link", headers={"apikey": s.service, "Authorization": f"Bearer {s.service}"},
                      json={"type": "magiclink", "email": email, "redirect_to": "http://localhost:3000/in"})
    assert link.status_code == 200, link.text
    action = link.json()["action_link"]
    r = httpx.get(action, follow_redirects=False)
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith("http://localhost:3000/in#access_token=")
    assert "refresh_token=" in location and "type=magiclink" in location
    # The link works once; the second time the browser is sent back with the error.
    r = httpx.get(action, follow_redirects=False)
    assert r.status_code == 303
    assert "#error=access_denied&error_code=otp_expired" in r.headers["location"]


def test_admin_paging_headers(http_server):
    s = http_server
    for i in range(3):
        sign_up(s, f"page{i}@example.com")
    h = {"apikey": s.service, "Authorization": f"Bearer {s.service}"}
    r = httpx.get(f"{s.url}/auth/v1/admin/users?per_page=2&page=1", headers=h)
    assert r.status_code == 200
    total = int(r.headers["x-total-count"])
    assert total >= 3 and len(r.json()["users"]) == 2 and r.json()["aud"] == "authenticated"
    last = (total + 1) // 2
    assert r.headers["link"] == (f'</auth/v1/admin/users?page=2&per_page=2>; rel="next", '
                                 f'</auth/v1/admin/users?page={last}&per_page=2>; rel="last"')


def test_cors_preflight(http_server):
    r = httpx.options(f"{http_server.url}/auth/v1/token", headers={
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "apikey, authorization, content-type, x-client-info, x-supabase-api-version",
    })
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "apikey" in r.headers["access-control-allow-headers"].lower()


def test_health_settings_jwks(http_server):
    s = http_server
    h = httpx.get(f"{s.url}/health").json()
    assert h["name"] == "GoTrue"
    settings = httpx.get(f"{s.url}/auth/v1/settings", headers=keyed(s)).json()
    assert settings["external"]["email"] is True and settings["external"]["anonymous_users"] is True
    jwks = httpx.get(f"{s.url}/auth/v1/.well-known/jwks.json")
    assert jwks.status_code == 200 and "keys" in jwks.json()
    assert jwks.headers["cache-control"] == "public, max-age=600"


def test_parallel_requests_through_the_pool(http_server):
    s = http_server
    sessions = [sign_up(s, f"par{i}@example.com") for i in range(4)]
    errors = []

    def worker(session):
        with httpx.Client() as c:
            for _ in range(20):
                r = c.get(f"{s.url}/user", headers=keyed(s, session["access_token"]))
                if r.status_code != 200:
                    errors.append(r.text)

    threads = [threading.Thread(target=worker, args=(x,)) for x in sessions * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_python_client(http_server):
    s = http_server
    headers = {"apikey": s.anon, "Authorization": f"Bearer {s.anon}"}
    client = SyncGoTrueClient(url=f"{s.url}/auth/v1", headers=headers, auto_refresh_token=False, persist_session=False)
    email = "py@example.com"
    r = client.sign_up({"email": email, "password": PASSWORD, "options": {"data": {"lang": "py"}}})
    assert r.user.email == email and r.session.access_token
    r = client.sign_in_with_password({"email": email, "password": PASSWORD})
    assert r.user.user_metadata["lang"] == "py"
    assert client.get_user(r.session.access_token).user.id == r.user.id
    refreshed = client.refresh_session(r.session.refresh_token)
    assert refreshed.session.refresh_token != r.session.refresh_token
    with pytest.raises(AuthApiError) as e:
        client.sign_in_with_password({"email": email, "password": "not the password"})
    assert e.value.code == "invalid_credentials" and e.value.status == 400
    with pytest.raises(AuthWeakPasswordError) as e:
        client.sign_up({"email": "py-weak@example.com", "password": "abc"})
    assert e.value.code == "weak_password"
    client.sign_out()
    service = {"apikey": s.service, "Authorization": f"Bearer {s.service}"}
    admin_api = SyncGoTrueAdminAPI(url=f"{s.url}/auth/v1", headers=service)
    created = admin_api.create_user({"email": "py-admin@example.com", "password": PASSWORD, "email_confirm": True})
    assert admin_api.get_user_by_id(created.user.id).user.email == "py-admin@example.com"
    assert any(u.email == "py-admin@example.com" for u in admin_api.list_users(page=1, per_page=1000))
    updated = admin_api.update_user_by_id(created.user.id, {"user_metadata": {"plan": "pro"}})
    assert updated.user.user_metadata["plan"] == "pro"
    link = admin_api.generate_link({"type": "magiclink", "email": "py-admin@example.com"})
    assert link.properties.email_otp and "type=magiclink" in link.properties.action_link
    invited = admin_api.invite_user_by_email("py-invited@example.com")
    assert invited.user.invited_at
    admin_api.delete_user(created.user.id)
    with pytest.raises(AuthApiError) as e:
        admin_api.get_user_by_id(created.user.id)
    assert e.value.status == 404

    # The message flows, with the code or token from the outbox.
    def last_message(address):
        with admin(s.db) as c:
            return c.execute("select message from auth.email_outbox where recipient = %s order by id desc limit 1",
                             (address,)).fetchone()["message"]["email_data"]

    client.sign_in_with_otp({"email": "py-otp@example.com"})
    code = last_message("py-otp@example.com")["token"]
    with pytest.raises(AuthApiError) as e:
        client.verify_otp({"email": "py-otp@example.com", "token": "000000" if code != "000000" else "111111", "type": "email"})
    assert e.value.code == "otp_expired"
    verified = client.verify_otp({"email": "py-otp@example.com", "token": code, "type": "email"})
    assert verified.user.email == "py-otp@example.com"
    client.reset_password_for_email("py@example.com")
    recovered = client.verify_otp({"email": "py@example.com", "token": last_message("py@example.com")["token"], "type": "recovery"})
    assert recovered.session
    set_ = client.set_session(recovered.session.access_token, recovered.session.refresh_token)
    assert set_.user.email == "py@example.com"
    changed = client.update_user({"data": {"lang": "python"}})
    assert changed.user.user_metadata["lang"] == "python"
    client.sign_out()
    anonymous = client.sign_in_anonymously()
    assert anonymous.user.is_anonymous

    # PKCE: the link through GET /verify, then the code.
    import supabase_auth

    class Memory(supabase_auth.SyncMemoryStorage):
        pass

    pkce = SyncGoTrueClient(url=f"{s.url}/auth/v1", headers=headers, flow_type="pkce", storage=Memory(),
                            auto_refresh_token=False, persist_session=True)
    pkce.sign_in_with_otp({"email": "py-pkce@example.com", "options": {"email_redirect_to": "http://localhost:3000/cb"}})
    hashed = last_message("py-pkce@example.com")["token_hash"]
    assert hashed.startswith("pkce_")
    r = httpx.get(f"{s.url}/auth/v1/verify", params={"token": hashed, "type": "magiclink",
                                                      "redirect_to": "http://localhost:3000/cb"}, follow_redirects=False)
    code = httpx.URL(r.headers["location"]).params["code"]
    exchanged = pkce.exchange_code_for_session({"auth_code": code})
    assert exchanged.user.email == "py-pkce@example.com"


def test_logs_never_hold_secrets(http_server, tmp_path):
    from conftest import server_dsn, start_server

    log = tmp_path / "server.log"
    with open(log, "w") as out:
        s = start_server(server_dsn(), http_server.anon, http_server.service, log=out,
                         AUTH_LOG="debug", AUTH_LOG_FORMAT="json")
        try:
            session = sign_up(s, "logs@example.com")
            httpx.post(f"{s.url}/token?grant_type=password", headers=keyed(s),
                       json={"email": "logs@example.com", "password": PASSWORD})
            httpx.get(f"{s.url}/verify?token=secret-link-token&type=magiclink", follow_redirects=False)
        finally:
            s.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("fields", {}).get("path") == "/auth/v1/signup" for line in lines)
    text = log.read_text()
    for secret in (PASSWORD, session["access_token"], session["refresh_token"], s.anon, "secret-link-token"):
        assert secret not in text


VOLATILE = {"id", "sub", "session_id", "identity_id", "user_id", "iat", "exp", "created_at", "updated_at",
            "last_sign_in_at", "email_confirmed_at", "confirmed_at", "confirmation_sent_at", "timestamp"}


def stable(value):
    """What an app sees, without the values that differ by nature (ids, times)."""
    if isinstance(value, dict):
        return {k: ("<volatile>" if k in VOLATILE and v is not None else stable(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def sql_flow(email):
    """The flow of tests/js/flow.mjs, over SQL as a PostgREST RPC client would make it."""
    import base64

    import psycopg

    from conftest import api

    def claims(token):
        part = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    def call(c, sql, args=(), token=None):
        try:
            with c.transaction():
                if token:
                    c.execute("select auth.authenticate(%s)", (token,))
                else:
                    c.execute("set local role anon")
                return c.execute(sql, args).fetchone()["r"], None
        except psycopg.Error as e:
            return None, e.diag.message_primary.split(":")[0]

    out = {}
    with api(SERVER_DB_NAME) as c:
        up, _ = call(c, "select auth.sign_up(%s, %s, '{\"name\": \"Flow\"}') as r", (email, PASSWORD))
        out["sign_up"] = {"user": up["user"], "claims": claims(up["access_token"]), "error": None}
        out["sign_up_again"] = call(c, "select auth.sign_up(%s, %s) as r", (email, PASSWORD))[1]
        out["wrong_password"] = call(c, "select auth.sign_in(%s, %s) as r", (email, "not the password"))[1]
        s, _ = call(c, "select auth.sign_in(%s, %s) as r", (email, PASSWORD))
        out["sign_in"] = {"user": s["user"], "claims": claims(s["access_token"])}
        out["get_user"] = call(c, "select auth.user() as r", token=s["access_token"])[0]
        out["update_user"] = call(c, "select auth.update_user('{\"data\": {\"theme\": \"dark\"}}') as r",
                                  token=s["access_token"])[0]
        out["same_password"] = call(c, "select auth.update_user(jsonb_build_object('password', %s::text)) as r",
                                    (PASSWORD,), token=s["access_token"])[1]
        r, _ = call(c, "select auth.refresh(%s) as r", (s["refresh_token"],))
        out["refresh"] = {"user": r["user"], "claims": claims(r["access_token"])}
    return out


SERVER_DB_NAME = "auth_http"


def test_the_same_flow_through_supabase_js_and_over_sql(http_server):
    from conftest import API_PASSWORD, API_ROLE

    with admin(http_server.db) as c:
        c.execute(f"grant anon, authenticated to {API_ROLE}")
    env = {**os.environ, "AUTH_URL": http_server.url, "ANON_KEY": http_server.anon, "FLOW_EMAIL": "flow-js@example.com"}
    r = subprocess.run(["node", "flow.mjs"], cwd="tests/js", env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    through_http = json.loads(r.stdout)
    over_sql = sql_flow("flow-sql@example.com")
    normalize = lambda flow: json.loads(json.dumps(stable(flow)).replace("flow-js@", "flow@").replace("flow-sql@", "flow@"))
    assert normalize(through_http) == normalize(over_sql)
    assert through_http["wrong_password"] == "invalid_credentials"
    assert through_http["same_password"] == "same_password"
    assert API_PASSWORD


# What an attacker tried against the server (each of these worked before its fix).


class running:
    """A server of its own, with settings for one test."""

    def __init__(self, base, **env):
        from conftest import server_dsn, start_server

        self.server = start_server(server_dsn(), base.anon, base.service, **env)

    def __enter__(self):
        return self.server

    def __exit__(self, *exc):
        self.server.stop()


def session_ips(db, email):
    with admin(db) as c:
        return [r["ip"] for r in c.execute(
            "select host(s.ip) as ip from auth.sessions s join auth.users u on u.id = s.user_id "
            "where u.email = %s order by s.created_at", (email,))]


def test_forwarded_for_behind_a_trusted_proxy(http_server):
    with running(http_server, AUTH_TRUSTED_PROXIES="1") as s:
        # The proxy (here: the test) appended 10.1.1.1 to what the client wrote.
        r = httpx.post(f"{s.url}/signup", headers={**keyed(s), "X-Forwarded-For": "6.6.6.6, 10.1.1.1"},
                       json={"email": "xff-one@example.com", "password": PASSWORD})
        assert r.status_code == 200
        assert session_ips(http_server.db, "xff-one@example.com") == ["10.1.1.1"]
        # A proxy that adds a header line of its own: the lines are one list.
        h = httpx.Headers([("apikey", s.anon), ("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "10.1.1.2")])
        r = httpx.post(f"{s.url}/signup", headers=h, json={"email": "xff-two@example.com", "password": PASSWORD})
        assert r.status_code == 200
        assert session_ips(http_server.db, "xff-two@example.com") == ["10.1.1.2"]
        # Bytes that are not text are still an entry, not a reason to fall back to the proxy.
        h = httpx.Headers([("apikey", s.anon), ("X-Forwarded-For", b"\xff, 10.1.1.3")])
        r = httpx.post(f"{s.url}/signup", headers=h, json={"email": "xff-three@example.com", "password": PASSWORD})
        assert r.status_code == 200
        assert session_ips(http_server.db, "xff-three@example.com") == ["10.1.1.3"]


def test_a_timed_out_request_writes_nothing_and_frees_its_connection(http_server):
    with running(http_server, AUTH_REQUEST_TIMEOUT_MS="1500", AUTH_POOL_SIZE="2") as s:
        with admin(http_server.db) as locker:
            locker.execute("begin")
            locker.execute("lock table auth.users in exclusive mode")
            r = httpx.post(f"{s.url}/signup", headers=keyed(s), timeout=10,
                           json={"email": "timeout@example.com", "password": PASSWORD})
            assert (r.status_code, r.json()["error_code"]) == (504, "request_timeout")
            # The connection came back to the pool: the server still answers.
            assert httpx.get(f"{s.url}/health", timeout=5).status_code == 200
            locker.execute("rollback")
        with admin(http_server.db) as c:
            assert c.execute("select count(*) as n from auth.users where email = 'timeout@example.com'").fetchone()["n"] == 0


def test_no_free_connection_is_503(http_server):
    with running(http_server, AUTH_POOL_SIZE="1", AUTH_POOL_WAIT_MS="300") as s:
        with admin(http_server.db) as locker:
            locker.execute("begin")
            locker.execute("lock table auth.users in exclusive mode")
            slow = threading.Thread(target=lambda: httpx.post(
                f"{s.url}/signup", headers=keyed(s), timeout=60,
                json={"email": "pool@example.com", "password": PASSWORD}))
            slow.start()
            import time

            time.sleep(0.5)
            r = httpx.get(f"{s.url}/settings", headers=keyed(s), timeout=10)
            assert r.status_code == 503
            locker.execute("rollback")
            slow.join()


def test_database_refusals_of_bad_bytes_are_400(http_server):
    r = httpx.post(f"{http_server.url}/token?grant_type=password", headers=keyed(http_server),
                   json={"email": "nul@example.com", "password": "abc\u0000def"})
    assert r.status_code == 400, r.text


def test_public_endpoints_ignore_a_stale_bearer(http_server):
    s = http_server
    session = sign_up(s, "stale@example.com")
    for bearer in ("garbage", session["access_token"][:-4] + "AAAA"):
        r = httpx.post(f"{s.url}/token?grant_type=password", headers={"apikey": s.anon, "Authorization": f"Bearer {bearer}"},
                       json={"email": "stale@example.com", "password": PASSWORD})
        assert r.status_code == 200, r.text
    r = httpx.post(f"{s.url}/logout", headers={"apikey": s.anon})
    assert (r.status_code, r.json()["error_code"]) == (401, "no_authorization")
    r = httpx.post(f"{s.url}/token?grant_type=id_token", headers=keyed(s),
                   json={"provider": "google", "id_token": "x", "link_identity": True})
    assert (r.status_code, r.json()["error_code"]) == (422, "manual_linking_disabled")


def test_protocol_details(http_server):
    s = http_server
    body = {"email": "nobody@example.com", "password": "wrong password"}
    r = httpx.post(f"{s.url}/token?grant_type=password", headers=keyed(s, **{"X-Supabase-Api-Version": "banana"}), json=body)
    assert r.json()["error_code"] == "invalid_credentials" and "x-supabase-api-version" not in r.headers
    r = httpx.get(f"{s.url}/admin/users/%FF%FE", headers={"apikey": s.service, "Authorization": f"Bearer {s.service}"})
    assert (r.status_code, r.json()["error_code"]) == (404, "validation_failed")
    r = httpx.post(f"{s.url}/recover", headers=keyed(s), content=b"null")
    assert r.status_code in (200, 400) and r.json().get("error_code") != "bad_json"
    r = httpx.post(f"{s.url}/token?grant_type=refresh_token", headers=keyed(s), json={})
    assert "x-sb-error-code" not in r.headers
    session = sign_up(s, "nostore@example.com")
    assert session and httpx.post(f"{s.url}/token?grant_type=password", headers=keyed(s),
                                  json={"email": "nostore@example.com", "password": PASSWORD}).headers["cache-control"] == "no-store"


def test_pkce_email_change_through_put_user(http_server):
    s = http_server
    session = sign_up(s, "pkce-change@example.com")
    challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    r = httpx.put(f"{s.url}/user", headers=keyed(s, session["access_token"]),
                  json={"email": "pkce-changed@example.com", "code_challenge": challenge, "code_challenge_method": "s256"})
    assert r.status_code == 200, r.text
    with admin(s.db) as c:
        m = c.execute("select message from auth.email_outbox where recipient = 'pkce-changed@example.com' "
                      "order by id desc limit 1").fetchone()["message"]
        assert m["email_data"]["token_hash"].startswith("pkce_")
        assert c.execute("select count(*) as n from auth.flow_state f join auth.users u on u.id = f.user_id "
                         "where u.email = 'pkce-change@example.com'").fetchone()["n"] == 1


def test_verify_link_errors_keep_the_redirects_query(http_server):
    s = http_server
    r = httpx.get(f"{s.url}/verify", params={"token": "pkce_nothing", "type": "magiclink",
                                              "redirect_to": "http://localhost:3000/in?next=/dash"}, follow_redirects=False)
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith("http://localhost:3000/in?next=/dash&error=access_denied&error_code=otp_expired")
    assert "#error=access_denied" in location
    r = httpx.get(f"{s.url}/verify", params={"token": "nothing", "type": "magiclink",
                                              "redirect_to": "http://localhost:3000/in?next=/dash"}, follow_redirects=False)
    assert r.headers["location"].startswith("http://localhost:3000/in?next=/dash#error=access_denied")


def test_cors_with_a_list_of_origins(http_server):
    with running(http_server, AUTH_CORS_ORIGINS="http://app.example") as s:
        pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "apikey"}
        ok = httpx.options(f"{s.url}/token", headers={"Origin": "http://app.example", **pre})
        assert ok.headers.get("access-control-allow-origin") == "http://app.example"
        other = httpx.options(f"{s.url}/token", headers={"Origin": "http://evil.example", **pre})
        assert "access-control-allow-origin" not in other.headers


def test_slow_clients_and_shutdown(http_server):
    import socket
    import time

    with running(http_server, AUTH_HEADER_TIMEOUT_MS="500", AUTH_SHUTDOWN_GRACE_MS="2000") as s:
        port = int(s.url.rsplit(":", 1)[1])
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for c in slow:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        time.sleep(1.5)
        for c in slow:
            c.settimeout(2)
            try:
                data = c.recv(100)
            except OSError:
                data = b""
            # Closed (or answered with an error) once the header time is over, never served.
            assert b"200 OK" not in data
            c.close()
        hanging = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        for c in hanging:
            c.sendall(b"POST /signup HTTP/1.1\r\nHost: x\r\napikey: k\r\ncontent-length: 100\r\n\r\n{")
        started = time.monotonic()
        s.proc.terminate()
        s.proc.wait(10)
        assert time.monotonic() - started < 5
        for c in hanging:
            c.close()


def test_mfa_over_http_with_recovery_codes(http_server):
    import pyotp

    s = http_server
    session = sign_up(s, "http-mfa@example.com")
    user = keyed(s, session["access_token"], **NEW)
    f = httpx.post(f"{s.url}/auth/v1/factors", headers=user, json={"factor_type": "totp", "friendly_name": "app"}).json()
    ch = httpx.post(f"{s.url}/auth/v1/factors/{f['id']}/challenge", headers=user, json={}).json()
    r = httpx.post(f"{s.url}/auth/v1/factors/{f['id']}/verify", headers=user,
                   json={"challenge_id": ch["id"], "code": pyotp.TOTP(f["totp"]["secret"]).now()})
    assert r.status_code == 200, r.text
    aal2 = keyed(s, r.json()["access_token"], **NEW)
    codes = httpx.post(f"{s.url}/auth/v1/factors/recovery-codes/regenerate", headers=aal2).json()["recovery_codes"]
    assert len(codes) == 10
    aal1 = httpx.post(f"{s.url}/token?grant_type=password", headers=keyed(s),
                      json={"email": "http-mfa@example.com", "password": PASSWORD}).json()
    wrong = httpx.post(f"{s.url}/auth/v1/factors/recovery-codes/verify", headers=keyed(s, aal1["access_token"], **NEW),
                       json={"code": "aaaa-bbbb-cccc-dddd"})
    assert (wrong.status_code, wrong.json()["code"]) == (422, "mfa_verification_failed")
    ok = httpx.post(f"{s.url}/auth/v1/factors/recovery-codes/verify", headers=keyed(s, aal1["access_token"], **NEW),
                    json={"code": codes[3]})
    assert ok.status_code == 200, ok.text
    r = httpx.get(f"{s.url}/auth/v1/admin/users/{session['user']['id']}/factors",
                  headers={"apikey": s.service, "Authorization": f"Bearer {s.service}"})
    assert r.status_code == 200 and [x["id"] for x in r.json()] == [f["id"]]
    missing = httpx.post(f"{s.url}/auth/v1/factors/not-a-uuid/challenge", headers=user, json={})
    assert (missing.status_code, missing.json()["code"]) == (404, "mfa_factor_not_found")


def test_reauthentication_over_http(http_server):
    s = http_server
    with admin(s.db) as c:
        c.execute(f'alter database "{s.db}" set auth.update_password_require_reauthentication = on')
    try:
        with running(s) as strict:
            session = sign_up(strict, "reauth-http@example.com")
            user = keyed(strict, session["access_token"], **NEW)
            r = httpx.put(f"{strict.url}/user", headers=user, json={"password": "a brand new passphrase"})
            assert (r.status_code, r.json()["code"]) == (400, "reauthentication_needed")
            assert httpx.get(f"{strict.url}/reauthenticate", headers=user).status_code == 200
            with admin(s.db) as c:
                nonce = c.execute("select message -> 'email_data' ->> 'token' as t from auth.email_outbox "
                                  "where recipient = 'reauth-http@example.com' and email_action_type = 'reauthentication' "
                                  "order by id desc limit 1").fetchone()["t"]
            r = httpx.put(f"{strict.url}/user", headers=user, json={"password": "a brand new passphrase", "nonce": "000000"
                                                                   if nonce != "000000" else "111111"})
            assert (r.status_code, r.json()["code"]) == (422, "reauthentication_not_valid")
            r = httpx.put(f"{strict.url}/user", headers=user, json={"password": "a brand new passphrase", "nonce": nonce})
            assert r.status_code == 200, r.text
    finally:
        with admin(s.db) as c:
            c.execute(f'alter database "{s.db}" reset auth.update_password_require_reauthentication')
