"""Sign-in with OAuth / OpenID Connect providers through auth-ext-server, against fake
providers on loopback (fake_providers.py: a GitHub-shaped one and an OIDC one with its own
keys): the browser's redirects are followed by hand, as a browser would, and every step's
answer is checked. The supabase-js side (signInWithOAuth, PKCE, linkIdentity) is in
tests/js/oauth.test.js, run from here against the same server."""

import base64
import hashlib
import json
import os
import secrets
import subprocess
import threading
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import psycopg
import pytest

import fake_providers
from conftest import admin, server_database, server_dsn, start_server

DB = "auth_oauth_http"
SITE = "http://localhost:3000"
PASSWORD = "correct horse battery staple"


class Fakes:
    """The two fake providers; control(name, {"user": ...} | {mode: True/False})."""

    def __init__(self):
        self.gh, self.op = fake_providers.FakeGitHub().start(), fake_providers.FakeOIDC().start()
        self.github, self.oidc = self.gh.url, self.op.url

    def control(self, which, body):
        fake = self.gh if which == "github" else self.op
        if "user" in body:
            fake.control(user=body["user"])
        else:
            [(mode, on)] = body.items()
            fake.control(user=fake.user, mode=mode if on else None)

    def stop(self):
        self.gh.stop()
        self.op.stop()


@pytest.fixture(scope="module")
def fakes():
    f = Fakes()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def oauth_server(fakes):
    anon, service = server_database(DB)
    with admin(DB) as c:
        c.execute(f'alter database "{DB}" set auth.manual_linking_enabled = on')
        c.execute(f'alter database "{DB}" set auth.redirect_allow_list = \'myapp://callback\'')
    env = {
        "AUTH_EXTERNAL_GITHUB_CLIENT_ID": fake_providers.CLIENT_ID,
        "AUTH_EXTERNAL_GITHUB_SECRET": fake_providers.CLIENT_SECRET,
        "AUTH_EXTERNAL_GITHUB_URL": fakes.github,
        "AUTH_EXTERNAL_ACME_CLIENT_ID": fake_providers.CLIENT_ID,
        "AUTH_EXTERNAL_ACME_SECRET": fake_providers.CLIENT_SECRET,
        "AUTH_EXTERNAL_ACME_ISSUER": fakes.oidc,
        "AUTH_EXTERNAL_GOOGLE_CLIENT_ID": fake_providers.CLIENT_ID,
        "AUTH_EXTERNAL_GOOGLE_SECRET": fake_providers.CLIENT_SECRET,
        "AUTH_EXTERNAL_GOOGLE_ISSUER": fakes.oidc,
        "AUTH_EXTERNAL_GOOGLE_ENABLED": "false",
    }
    server = start_server(server_dsn(DB), anon, service, **env)
    server.db = DB
    yield server
    server.stop()


def keyed(server, token=None):
    return {"apikey": server.anon, "Authorization": f"Bearer {token or server.anon}"}


def next_user(fakes, provider, **user):
    fakes.control(provider, {"user": user})


def location(r):
    assert r.status_code in (302, 303), f"{r.status_code} {r.text}"
    return r.headers["location"]


def fragment(url):
    return {k: v[0] for k, v in parse_qs(urlsplit(url).fragment, keep_blank_values=True).items()}


def query(url):
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def start(server, provider, redirect_to=SITE + "/welcome", **params):
    r = httpx.get(f"{server.url}/auth/v1/authorize",
                  params={"provider": provider, "redirect_to": redirect_to, **params})
    return location(r)


def through_provider(server, provider_url):
    """The browser at the provider (which signs in at once) and back at /callback: the
    callback URL the provider sent the browser to."""
    back = location(httpx.get(provider_url))
    assert back.startswith(server.url + "/callback"), back
    return back


def sign_in(server, fakes, provider, **params):
    """A whole implicit-flow sign-in; the final redirect's URL."""
    return location(httpx.get(through_provider(server, start(server, provider, **params))))


def session_of(url):
    f = fragment(url)
    assert "access_token" in f, url
    return f


def get_user(server, token):
    r = httpx.get(f"{server.url}/auth/v1/user", headers=keyed(server, token))
    assert r.status_code == 200, r.text
    return r.json()


def claims(token):
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def github_user(fakes, n, email=None, verified=True):
    email = email or f"gh{n}-{secrets.token_hex(4)}@example.com"
    next_user(fakes, "github", id=n, login=f"octo{n}", name=f"Octo {n}", email=email, email_verified=verified,
              picture=f"https://avatars.example/{n}")
    return email


def test_settings_list_the_enabled_providers(oauth_server):
    s = httpx.get(f"{oauth_server.url}/auth/v1/settings").json()["external"]
    assert s["github"] is True and s["acme"] is True
    assert s["google"] is False, "a configured but disabled provider is off"
    assert s["email"] is True


def test_authorize_sends_the_browser_to_the_provider_with_a_state(oauth_server, fakes):
    url = start(oauth_server, "github", scopes="read:org", login="octo")
    assert url.startswith(fakes.github + "/login/oauth/authorize?")
    q = query(url)
    assert q["client_id"] == fake_providers.CLIENT_ID
    assert q["redirect_uri"] == oauth_server.url + "/callback"
    assert set(q["scope"].split()) == {"user:email", "read:org"}
    assert q["login"] == "octo", "other parameters go on to the provider"
    assert len(q["state"]) >= 43
    with admin(DB) as c:
        row = c.execute("select * from auth.oauth_states where state_hash = encode(sha256(%s::bytea), 'hex')",
                        (q["state"].encode(),)).fetchone()
        assert row and row["provider"] == "github" and row["redirect_to"] == SITE + "/welcome"
        assert not c.execute("select from auth.oauth_states where state_hash = %s", (q["state"],)).fetchone(), \
            "only the state's hash is stored"
    # skip_http_redirect: the URL as JSON (what linkIdentity asks for).
    r = httpx.get(f"{oauth_server.url}/auth/v1/authorize",
                  params={"provider": "github", "skip_http_redirect": "true"})
    assert r.status_code == 200 and r.json()["url"].startswith(fakes.github)


@pytest.mark.parametrize("provider", ["", "twitter", "google", "email", "../x", "a" * 300])
def test_unknown_or_disabled_providers_are_refused(oauth_server, provider):
    r = httpx.get(f"{oauth_server.url}/auth/v1/authorize", params={"provider": provider})
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "validation_failed"
    assert "Unsupported provider" in r.json()["msg"]


def test_a_new_github_user_signs_in_and_comes_back_as_the_same_user(oauth_server, fakes):
    email = github_user(fakes, 1001)
    final = sign_in(oauth_server, fakes, "github")
    assert final.startswith(SITE + "/welcome#")
    s = session_of(final)
    assert s["token_type"] == "bearer" and int(s["expires_in"]) > 0 and s["refresh_token"]
    assert s["provider_token"], "the provider's access token, as GoTrue hands it to the app"
    c = claims(s["access_token"])
    assert c["amr"][0]["method"] == "oauth" and c["aal"] == "aal1"
    assert c["app_metadata"] == {"provider": "github", "providers": ["github"]}
    user = get_user(oauth_server, s["access_token"])
    assert user["email"] == email and user["email_confirmed_at"]
    [identity] = user["identities"]
    assert identity["provider"] == "github" and identity["id"] == "1001"
    assert identity["identity_data"]["user_name"] == "octo1001"
    assert identity["identity_data"]["avatar_url"] == "https://avatars.example/1001"
    with admin(DB) as c:
        assert c.execute("select provider_access_token from auth.flow_state where user_id = %s",
                         (user["id"],)).fetchone() is None, "an implicit flow stores no provider token"
    # Returning: the same user, the same one identity, fresh data.
    github_user(fakes, 1001, email=email)
    again = session_of(sign_in(oauth_server, fakes, "github"))
    assert claims(again["access_token"])["sub"] == user["id"]
    assert len(get_user(oauth_server, again["access_token"])["identities"]) == 1
    with admin(DB) as c:
        actions = [r["a"] for r in c.execute(
            "select payload ->> 'action' as a from auth.audit_log_entries "
            "where payload ->> 'actor_id' = %s order by created_at", (user["id"],))]
    assert actions.count("user_signedup") == 1 and actions.count("login") == 1, actions


def test_an_oidc_sign_in_links_to_the_user_with_the_same_verified_email(oauth_server, fakes):
    email = f"linked-{secrets.token_hex(4)}@example.com"
    r = httpx.post(f"{oauth_server.url}/auth/v1/signup", headers=keyed(oauth_server),
                   json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    uid = r.json()["user"]["id"]
    fakes.control("oidc", {"user": {"sub": "acme-7", "email": email, "email_verified": True, "name": "Linked"}})
    s = session_of(sign_in(oauth_server, fakes, "acme"))
    assert claims(s["access_token"])["sub"] == uid
    user = get_user(oauth_server, s["access_token"])
    assert sorted(i["provider"] for i in user["identities"]) == ["acme", "email"]
    assert sorted(user["app_metadata"]["providers"]) == ["acme", "email"]
    acme = next(i for i in user["identities"] if i["provider"] == "acme")
    assert acme["identity_data"]["iss"] == fakes.oidc and acme["identity_data"]["sub"] == "acme-7"
    assert "nonce" not in acme["identity_data"] and "aud" not in acme["identity_data"]


def test_an_unverified_provider_email_is_not_linked_nor_given(oauth_server, fakes):
    """An address the provider did not verify could be anyone's: it neither joins the account
    that has it (nor says that one exists) nor becomes the new user's address."""
    email = f"victim-{secrets.token_hex(4)}@example.com"
    r = httpx.post(f"{oauth_server.url}/auth/v1/signup", headers=keyed(oauth_server),
                   json={"email": email, "password": PASSWORD})
    victim = r.json()["user"]["id"]
    github_user(fakes, 2002, email=email, verified=False)
    s = session_of(sign_in(oauth_server, fakes, "github"))
    user = get_user(oauth_server, s["access_token"])
    assert user["id"] != victim
    assert not user.get("email") and not user["email_confirmed_at"]
    assert user["identities"][0]["identity_data"]["email"] == email, "kept as the provider said it"
    with admin(DB) as c:
        assert c.execute("select count(*) from auth.identities where user_id = %s", (victim,)).fetchone()["count"] == 1
    # The address's owner still signs in to the account that has it.
    r = httpx.post(f"{oauth_server.url}/auth/v1/token?grant_type=password", headers=keyed(oauth_server),
                   json={"email": email, "password": PASSWORD})
    assert r.status_code == 200 and r.json()["user"]["id"] == victim


def test_linking_by_email_to_an_unconfirmed_account_drops_its_password(oauth_server, fakes):
    email = f"squat-{secrets.token_hex(4)}@example.com"
    with admin(DB) as c:
        c.execute("set auth.require_email_confirmation = on")
        c.execute("select auth.sign_up(%s, %s)", (email, PASSWORD))
    github_user(fakes, 2003, email=email, verified=True)
    s = session_of(sign_in(oauth_server, fakes, "github"))
    user = get_user(oauth_server, s["access_token"])
    assert user["email"] == email and user["email_confirmed_at"]
    r = httpx.post(f"{oauth_server.url}/auth/v1/token?grant_type=password", headers=keyed(oauth_server),
                   json={"email": email, "password": PASSWORD})
    assert r.status_code == 400, "whoever set that password never proved the address"


@pytest.mark.parametrize("change", ["tampered", "missing", "huge"])
def test_a_bad_state_goes_back_to_the_site_with_bad_oauth_state(oauth_server, fakes, change):
    github_user(fakes, 3001)
    back = through_provider(oauth_server, start(oauth_server, "github"))
    q = query(back)
    state = {"tampered": q["state"][:-2] + ("AA" if not q["state"].endswith("AA") else "BB"),
             "missing": "", "huge": "x" * 5_000}[change]
    final = location(httpx.get(f"{oauth_server.url}/callback", params={"code": q["code"], "state": state}))
    assert final.startswith(SITE + "?") or final.startswith(SITE + "/?"), final
    assert query(final)["error"] == "invalid_request"
    assert query(final)["error_code"] == "bad_oauth_state"


def test_a_state_works_once(oauth_server, fakes):
    github_user(fakes, 3002)
    back = through_provider(oauth_server, start(oauth_server, "github"))
    first = location(httpx.get(back))
    assert "access_token" in first
    replay = location(httpx.get(back))
    assert query(replay)["error_code"] == "bad_oauth_state" and "access_token" not in replay


def test_two_callbacks_with_one_state_at_once_give_one_session(oauth_server, fakes):
    github_user(fakes, 3003)
    back = through_provider(oauth_server, start(oauth_server, "github"))
    results = []

    def go():
        results.append(location(httpx.get(back)))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum("access_token" in r for r in results) == 1, results


def test_an_expired_state_is_refused(oauth_server, fakes):
    github_user(fakes, 3004)
    back = through_provider(oauth_server, start(oauth_server, "github"))
    with admin(DB) as c:
        c.execute("update auth.oauth_states set created_at = now() - interval '11 minutes' "
                  "where state_hash = encode(sha256(%s::bytea), 'hex')", (query(back)["state"].encode(),))
    final = location(httpx.get(back))
    assert final.startswith(SITE + "/welcome?"), "the flow's own redirect_to"
    assert query(final)["error_code"] == "bad_oauth_state" and "expired" in query(final)["error_description"]


def test_the_user_denies_at_the_provider(oauth_server, fakes):
    fakes.control("github", {"deny": True})
    try:
        final = location(httpx.get(through_provider(oauth_server, start(oauth_server, "github"))))
    finally:
        fakes.control("github", {"deny": False})
    q = query(final)
    assert final.startswith(SITE + "/welcome?")
    assert q["error"] == "access_denied" and q["error_description"]
    assert "access_token" not in final


@pytest.mark.parametrize("mode", ["token_error", "bad_nonce", "bad_signature", "wrong_aud"])
def test_a_provider_failure_comes_back_as_an_error_and_signs_nobody_in(oauth_server, fakes, mode):
    provider, fake = ("github", "github") if mode == "token_error" else ("acme", "oidc")
    sub = f"fail-{mode}"
    if fake == "github":
        github_user(fakes, 4000)
    else:
        fakes.control("oidc", {"user": {"sub": sub, "email": f"{sub}@example.com", "email_verified": True}})
    fakes.control(fake, {mode: True})
    try:
        final = location(httpx.get(through_provider(oauth_server, start(oauth_server, provider))))
    finally:
        fakes.control(fake, {mode: False})
    q = query(final)
    assert final.startswith(SITE + "/welcome?"), final
    assert q["error_code"] in ("bad_oauth_callback", "unexpected_failure"), final
    assert "access_token" not in final
    with admin(DB) as c:
        assert not c.execute("select from auth.identities where provider = 'acme' and provider_id = %s", (sub,)).fetchone()


def test_a_redirect_outside_the_allow_list_goes_to_the_site(oauth_server, fakes):
    github_user(fakes, 5001)
    final = sign_in(oauth_server, fakes, "github", redirect_to="https://evil.example/steal")
    assert final.startswith(SITE + "/#"), final
    github_user(fakes, 5001)
    final = sign_in(oauth_server, fakes, "github", redirect_to="myapp://callback/done")
    assert final.startswith("myapp://callback/done#"), "an allow-listed redirect is kept"


def verifier_and_challenge():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def test_pkce_gives_a_code_that_works_once_with_its_verifier(oauth_server, fakes):
    verifier, challenge = verifier_and_challenge()
    github_user(fakes, 6001)
    final = sign_in(oauth_server, fakes, "github", code_challenge=challenge, code_challenge_method="s256")
    assert final.startswith(SITE + "/welcome?code=")
    assert "#" not in final and "access_token" not in final
    code = query(final)["code"]
    token = f"{oauth_server.url}/auth/v1/token?grant_type=pkce"
    wrong = httpx.post(token, headers=keyed(oauth_server), json={"auth_code": code, "code_verifier": "x" * 50})
    assert wrong.status_code == 400 and wrong.json()["error_code"] == "bad_code_verifier"
    # A wrong verifier ends the flow: the right one no longer works either.
    again = httpx.post(token, headers=keyed(oauth_server), json={"auth_code": code, "code_verifier": verifier})
    assert again.status_code == 404 and again.json()["error_code"] == "flow_state_not_found"
    # A new flow, exchanged right.
    github_user(fakes, 6001)
    code = query(sign_in(oauth_server, fakes, "github", code_challenge=challenge, code_challenge_method="s256"))["code"]
    ok = httpx.post(token, headers=keyed(oauth_server), json={"auth_code": code, "code_verifier": verifier})
    assert ok.status_code == 200, ok.text
    s = ok.json()
    assert s["user"]["identities"][0]["provider"] == "github"
    assert claims(s["access_token"])["amr"][0]["method"] == "oauth"
    assert "provider_token" not in s, "not kept unless auth.keep_provider_tokens asks"
    twice = httpx.post(token, headers=keyed(oauth_server), json={"auth_code": code, "code_verifier": verifier})
    assert twice.status_code == 404


def test_pkce_keeps_the_provider_token_sealed_when_asked(oauth_server, fakes):
    verifier, challenge = verifier_and_challenge()
    with admin(DB) as c:
        c.execute(f'alter role auth_server in database "{DB}" set auth.keep_provider_tokens = on')
    # A fresh server: pool connections read role settings when they open.
    server = start_server(server_dsn(DB), oauth_server.anon, oauth_server.service,
                          AUTH_EXTERNAL_GITHUB_CLIENT_ID=fake_providers.CLIENT_ID,
                          AUTH_EXTERNAL_GITHUB_SECRET=fake_providers.CLIENT_SECRET,
                          AUTH_EXTERNAL_GITHUB_URL=fakes.github)
    try:
        github_user(fakes, 6002)
        code = query(sign_in(server, fakes, "github", code_challenge=challenge, code_challenge_method="s256"))["code"]
        with admin(DB) as c:
            row = c.execute("select provider_access_token from auth.flow_state where auth_code = encode(sha256(%s::bytea), 'hex')",
                            (code.encode(),)).fetchone()
        assert row["provider_access_token"].startswith("v1:"), "sealed, not plain"
        s = httpx.post(f"{server.url}/auth/v1/token?grant_type=pkce", headers=keyed(server),
                       json={"auth_code": code, "code_verifier": verifier}).json()
        assert s["provider_token"] and not s["provider_token"].startswith("v1:")
    finally:
        server.stop()
        with admin(DB) as c:
            c.execute(f'alter role auth_server in database "{DB}" reset auth.keep_provider_tokens')


def test_link_and_unlink_an_identity(oauth_server, fakes):
    email = f"linker-{secrets.token_hex(4)}@example.com"
    s = httpx.post(f"{oauth_server.url}/auth/v1/signup", headers=keyed(oauth_server),
                   json={"email": email, "password": PASSWORD}).json()
    token, uid = s["access_token"], s["user"]["id"]
    # Another address at GitHub: linked because the signed-in user asked, not by email.
    github_user(fakes, 7001, email=f"other-{secrets.token_hex(4)}@example.com")
    r = httpx.get(f"{oauth_server.url}/auth/v1/user/identities/authorize",
                  params={"provider": "github", "skip_http_redirect": "true", "redirect_to": SITE + "/linked"},
                  headers=keyed(oauth_server, token))
    assert r.status_code == 200, r.text
    final = location(httpx.get(through_provider(oauth_server, r.json()["url"])))
    assert final.startswith(SITE + "/linked#"), final
    linked = session_of(final)
    assert claims(linked["access_token"])["sub"] == uid
    user = get_user(oauth_server, linked["access_token"])
    assert sorted(i["provider"] for i in user["identities"]) == ["email", "github"]
    assert user["email"] == email, "the user's own address stays"
    # The same GitHub account cannot be linked to a second user.
    other = httpx.post(f"{oauth_server.url}/auth/v1/signup", headers=keyed(oauth_server),
                       json={"email": f"second-{secrets.token_hex(4)}@example.com", "password": PASSWORD}).json()
    github_user(fakes, 7001)
    r = httpx.get(f"{oauth_server.url}/auth/v1/user/identities/authorize",
                  params={"provider": "github", "skip_http_redirect": "true"},
                  headers=keyed(oauth_server, other["access_token"]))
    final = location(httpx.get(through_provider(oauth_server, r.json()["url"])))
    assert query(final)["error_code"] == "identity_already_exists", final
    # Unlink: the GitHub identity goes; the last one cannot.
    gh = next(i for i in user["identities"] if i["provider"] == "github")
    r = httpx.delete(f"{oauth_server.url}/auth/v1/user/identities/{gh['identity_id']}",
                     headers=keyed(oauth_server, linked["access_token"]))
    assert r.status_code == 200, r.text
    user = get_user(oauth_server, linked["access_token"])
    assert [i["provider"] for i in user["identities"]] == ["email"]
    assert user["app_metadata"]["providers"] == ["email"]
    em = user["identities"][0]
    r = httpx.delete(f"{oauth_server.url}/auth/v1/user/identities/{em['identity_id']}",
                     headers=keyed(oauth_server, linked["access_token"]))
    assert r.status_code == 422 and r.json()["error_code"] == "single_identity_not_deletable"
    # Someone else's identity is not found; neither is nonsense.
    r = httpx.delete(f"{oauth_server.url}/auth/v1/user/identities/{em['identity_id']}",
                     headers=keyed(oauth_server, other["access_token"]))
    assert r.status_code == 404 and r.json()["error_code"] == "identity_not_found"
    r = httpx.delete(f"{oauth_server.url}/auth/v1/user/identities/not-a-uuid",
                     headers=keyed(oauth_server, other["access_token"]))
    assert r.status_code == 404
    # Without a user: 401.
    r = httpx.get(f"{oauth_server.url}/auth/v1/user/identities/authorize", params={"provider": "github"},
                  headers={"apikey": oauth_server.anon})
    assert r.status_code == 401


def test_an_anonymous_user_becomes_permanent_by_linking(oauth_server, fakes):
    s = httpx.post(f"{oauth_server.url}/auth/v1/signup", headers=keyed(oauth_server), json={}).json()
    assert claims(s["access_token"])["is_anonymous"] is True
    email = github_user(fakes, 7002)
    r = httpx.get(f"{oauth_server.url}/auth/v1/user/identities/authorize",
                  params={"provider": "github", "skip_http_redirect": "true"},
                  headers=keyed(oauth_server, s["access_token"]))
    final = location(httpx.get(through_provider(oauth_server, r.json()["url"])))
    linked = session_of(final)
    c = claims(linked["access_token"])
    assert c["sub"] == s["user"]["id"] and c["is_anonymous"] is False
    assert get_user(oauth_server, linked["access_token"])["email"] == email


def test_provider_data_is_validated_like_any_input(oauth_server, fakes):
    # A name of 40 KiB: over the 16 KiB limit of stored metadata.
    next_user(fakes, "github", id=8001, login="big", name="n" * 40_000, email="big@example.com", email_verified=True)
    final = location(httpx.get(through_provider(oauth_server, start(oauth_server, "github"))))
    assert query(final)["error_code"] in ("validation_failed", "bad_oauth_callback"), final
    with admin(DB) as c:
        assert not c.execute("select from auth.identities where provider = 'github' and provider_id = '8001'").fetchone()


def test_only_the_servers_role_may_finish_a_sign_in(oauth_server):
    """A login role of the API (PostgREST's authenticator, as anon or authenticated) cannot
    claim a provider identity: the callback's functions are auth_oauth's alone, and a
    trusted issuer cannot map its tokens to that role (auth._role_refusal)."""
    with admin(DB) as c:
        c.execute("""do $$ begin
                       if not exists (select from pg_roles where rolname = 'oauth_probe') then
                         create role oauth_probe login password 'probe';
                       end if; end $$""")
        c.execute("grant anon, authenticated to oauth_probe")
    host, port = os.environ.get("PGHOST", "localhost"), os.environ.get("PGPORT", "5432")
    with psycopg.connect(host=host, port=port, dbname=DB, user="oauth_probe", password="probe", autocommit=True) as c:
        for role in ("anon", "authenticated"):
            c.execute(f"set role {role}")
            for sql in ("select auth.oauth_sign_in(gen_random_uuid(), '{}')", "select auth.oauth_callback('x')"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(sql)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("select * from auth.oauth_states")
    with admin(DB) as c:
        refusal = c.execute("select auth._role_refusal('auth_oauth') as r").fetchone()["r"]
        assert refusal and "oauth" in refusal, refusal


def test_supabase_js_sign_in_with_oauth(oauth_server, fakes):
    env = {**os.environ, "AUTH_URL": oauth_server.url, "ANON_KEY": oauth_server.anon,
           "FAKE_GITHUB": fakes.github, "FAKE_OIDC": fakes.oidc, "SITE_URL": SITE}
    r = subprocess.run(["node", "--test", "--test-concurrency=1", "--test-reporter=spec", "oauth.test.js"],
                       cwd="tests/js", env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-20000:] + r.stderr[-5000:]


def test_a_verified_identity_takes_an_unconfirmed_account_over_alone(oauth_server, fakes):
    """Pre-account takeover: an unconfirmed account with someone else's address (a password
    sign-up with confirmations on; a provider's unverified address never makes one). When
    the owner of the address signs in with a verified identity and is linked to that
    account by email, whoever made it loses every way in: its other identities, its
    sessions and its password (GoTrue's RemoveUnconfirmedIdentities), not just the last."""
    email = f"pre-{secrets.token_hex(4)}@example.com"
    with admin(DB) as c:
        c.execute("set auth.require_email_confirmation = on")
        uid = c.execute("select (auth.sign_up(%s, %s) ->> 'id')::text as id", (email, PASSWORD)).fetchone()["id"]
        c.execute("update auth.users set email_confirmed_at = null where id = %s", (uid,))
        # As if its maker had signed in otherwise too: a session and another identity.
        c.execute("insert into auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at) "
                  "values ('9101', %s, '{\"sub\": \"9101\"}', 'github', now(), now())", (uid,))
        c.execute("select auth._start_session(%s, 'password')", (uid,))
    # An unverified GitHub address of the same owner signs in to an account of its own.
    github_user(fakes, 9102, email=email, verified=False)
    other = session_of(sign_in(oauth_server, fakes, "github"))
    assert claims(other["access_token"])["sub"] != uid
    fakes.control("oidc", {"user": {"sub": f"acme-{uid}", "email": email, "email_verified": True}})
    victim = session_of(sign_in(oauth_server, fakes, "acme"))
    assert claims(victim["access_token"])["sub"] == uid, "linked by the verified email"
    user = get_user(oauth_server, victim["access_token"])
    assert [i["provider"] for i in user["identities"]] == ["acme"], user["identities"]
    assert user["app_metadata"]["providers"] == ["acme"] and user["email_confirmed_at"]
    with admin(DB) as c:
        assert c.execute("select count(*) from auth.sessions where user_id = %s", (uid,)).fetchone()["count"] == 1
    r = httpx.post(f"{oauth_server.url}/auth/v1/token?grant_type=password", headers=keyed(oauth_server),
                   json={"email": email, "password": PASSWORD})
    assert r.status_code == 400, "the maker's password leads nowhere"


def test_unlinking_never_moves_the_user_to_an_address_nobody_verified(oauth_server, fakes):
    """A user whose address came from the identity being unlinked gets another identity's
    address, but only one that identity's provider verified: otherwise a GitHub account with
    someone else's unverified address, linked and then left alone, would give its holder a
    confirmed account with that address (and every later verified sign-in with it)."""
    mine, theirs = (f"{w}-{secrets.token_hex(4)}@example.com" for w in ("mine", "theirs"))
    fakes.control("oidc", {"user": {"sub": f"acme-{mine}", "email": mine, "email_verified": True}})
    s = session_of(sign_in(oauth_server, fakes, "acme"))
    github_user(fakes, 9201, email=theirs, verified=False)
    r = httpx.get(f"{oauth_server.url}/auth/v1/user/identities/authorize",
                  params={"provider": "github", "skip_http_redirect": "true"}, headers=keyed(oauth_server, s["access_token"]))
    linked = session_of(location(httpx.get(through_provider(oauth_server, r.json()["url"]))))
    user = get_user(oauth_server, linked["access_token"])
    assert user["email"] == mine and sorted(i["provider"] for i in user["identities"]) == ["acme", "github"]
    acme = next(i for i in user["identities"] if i["provider"] == "acme")
    r = httpx.delete(f"{oauth_server.url}/auth/v1/user/identities/{acme['identity_id']}",
                     headers=keyed(oauth_server, linked["access_token"]))
    assert r.status_code == 200, r.text
    user = get_user(oauth_server, linked["access_token"])
    assert user["email"] != theirs, "an address only GitHub's unverified list had"
    assert not user["email_confirmed_at"]
    # The address is still free for whoever owns it.
    r = httpx.post(f"{oauth_server.url}/auth/v1/signup", headers=keyed(oauth_server),
                   json={"email": theirs, "password": PASSWORD})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("redirect_to", [
    "http://localhost:3000@evil.example/", "http://localhost:3000\\@evil.example/", "http://localhost:3000.evil.example/",
    "http://localhost:30001/", "http://localhost:3000%2F@evil.example/", "http://localhost:3000%40evil.example/",
    "javascript:alert(1)//http://localhost:3000", "//evil.example/http://localhost:3000", "http://localhost:3000\t.evil.example",
    "myapp://callback@evil.example", "myapp://callback.evil.example/",
])
def test_redirect_tricks_end_at_the_site_or_within_it(oauth_server, fakes, redirect_to):
    github_user(fakes, 5002)
    final = urlsplit(sign_in(oauth_server, fakes, "github", redirect_to=redirect_to))
    assert (final.scheme, final.hostname, final.port) == ("http", "localhost", 3000) or \
        (final.scheme, final.netloc) == ("myapp", "callback"), final.geturl()


def test_a_state_of_one_provider_does_not_take_another_providers_code(oauth_server, fakes):
    """Provider mix-up: the callback exchanges the code at the provider the state was issued
    for, never at the one the code came from."""
    github_user(fakes, 5003)
    gh = query(through_provider(oauth_server, start(oauth_server, "github")))
    fakes.control("oidc", {"user": {"sub": "mixup", "email": "mixup@example.com", "email_verified": True}})
    acme = query(through_provider(oauth_server, start(oauth_server, "acme")))
    final = location(httpx.get(f"{oauth_server.url}/callback", params={"code": acme["code"], "state": gh["state"]}))
    assert "access_token" not in final and query(final)["error_code"] == "bad_oauth_callback", final
    with admin(DB) as c:
        assert not c.execute("select from auth.identities where provider_id = 'mixup'").fetchone()


def test_a_nul_in_the_providers_user_ends_at_the_app_with_an_error(oauth_server, fakes):
    next_user(fakes, "github", id=5004, login="nul", name="a\u0000b", email="nul@example.com", email_verified=True)
    r = httpx.get(through_provider(oauth_server, start(oauth_server, "github")))
    final = location(r)
    assert final.startswith(SITE + "/welcome?") and "access_token" not in final, final
