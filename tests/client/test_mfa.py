"""MFA over real connections, with codes from an independent TOTP implementation (pyotp):
verification to aal2, replay, a concurrent flood of wrong codes at one factor, and what a
copy of the factors table gives away."""

import threading
import time

import psycopg
import pyotp
import pytest

from conftest import admin, api

PASSWORD = "correct horse battery staple"


def as_user(c, token, sql, *args):
    with c.transaction():
        c.execute("select auth.authenticate(%s)", (token,))
        return c.execute(sql, args).fetchone()["r"]


@pytest.fixture()
def enrolled():
    with api() as c:
        with c.transaction():
            c.execute("set local role anon")
            email = f"mfa-{threading.get_ident()}-{id(c)}@example.com"
            s = c.execute("select auth.sign_up(%s, %s) as s", (email, PASSWORD)).fetchone()["s"]
        f = as_user(c, s["access_token"], "select auth.mfa_enroll() as r")
    return s, f


def code_error(e):
    return e.diag.message_primary.split(":")[0]


def test_verify_reaches_aal2_once_per_code(enrolled):
    session, factor = enrolled
    totp = pyotp.TOTP(factor["totp"]["secret"])
    assert factor["totp"]["uri"].startswith("otpauth://totp/")
    assert f"secret={factor['totp']['secret']}" in factor["totp"]["uri"]
    with api() as c:
        code = totp.now()
        v = as_user(c, session["access_token"], "select auth.mfa_challenge_and_verify(%s, %s) as r", factor["id"], code)
        claims = c.execute("select auth.verify_jwt(%s) as c", (v["access_token"],)).fetchone()["c"]
        assert claims["aal"] == "aal2"
        assert [a["method"] for a in claims["amr"]] == ["totp", "password"]
        with pytest.raises(psycopg.Error) as e:
            as_user(c, v["access_token"], "select auth.mfa_challenge_and_verify(%s, %s) as r", factor["id"], code)
        assert code_error(e.value) == "mfa_verification_failed"
        # The aal1 refresh token of the session was replaced.
        with pytest.raises(psycopg.Error) as e, c.transaction():
            c.execute("set local role anon")
            c.execute("select auth.refresh(%s)", (session["refresh_token"],))
        assert code_error(e.value) == "refresh_token_not_found"


def test_a_flood_of_wrong_codes_checks_at_most_the_threshold(enrolled):
    session, factor = enrolled
    totp = pyotp.TOTP(factor["totp"]["secret"])
    now = time.time()
    right = {totp.at(now, -1), totp.at(now), totp.at(now, 1)}
    wrong = next(f"{n:06d}" for n in range(1000000) if f"{n:06d}" not in right)
    answers = []

    def guess():
        with api() as c:
            try:
                as_user(c, session["access_token"], "select auth.mfa_challenge_and_verify(%s, %s) as r",
                        factor["id"], wrong)
                answers.append("accepted")
            except psycopg.Error as e:
                answers.append(code_error(e))

    threads = [threading.Thread(target=guess) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    checked = answers.count("mfa_verification_failed")
    assert "accepted" not in answers
    with admin() as c:
        c.execute("select auth.uid()")  # loads the library, which defines the setting
        threshold = int(c.execute("select current_setting('auth.lockout_max_failures') as n").fetchone()["n"])
    # Counted before the check: at most the threshold reach the code; the rest are refused.
    assert 0 < checked <= threshold, answers
    assert answers.count("over_request_rate_limit") == len(answers) - checked
    # Locked: even the right code is refused now.
    with api() as c, pytest.raises(psycopg.Error) as e:
        as_user(c, session["access_token"], "select auth.mfa_challenge_and_verify(%s, %s) as r",
                factor["id"], totp.now())
    assert code_error(e.value) == "over_request_rate_limit"


def test_a_copy_of_the_factors_table_generates_no_code(enrolled):
    session, factor = enrolled
    with admin() as c:
        stored = c.execute("select secret from auth.mfa_factors where id = %s", (factor["id"],)).fetchone()["secret"]
    assert factor["totp"]["secret"] not in stored
    assert stored.startswith("v1:")
    # A sealed secret moved to another factor's row does not open there.
    with api() as c:
        other = as_user(c, session["access_token"], "select auth.mfa_enroll('totp', 'second') as r")
    with admin() as c:
        c.execute("update auth.mfa_factors set secret = %s where id = %s", (stored, other["id"]))
    with api() as c, pytest.raises(psycopg.Error) as e:
        as_user(c, session["access_token"], "select auth.mfa_challenge_and_verify(%s, %s) as r",
                other["id"], pyotp.TOTP(factor["totp"]["secret"]).now())
    assert code_error(e.value) == "unexpected_failure"


def test_recovery_codes(enrolled):
    session, factor = enrolled
    totp = pyotp.TOTP(factor["totp"]["secret"])
    with api() as c:
        # Not before a factor is verified, and only from an aal2 session.
        with pytest.raises(psycopg.Error) as e:
            as_user(c, session["access_token"], "select auth.mfa_generate_recovery_codes() as r")
        assert code_error(e.value) == "mfa_factor_not_found"
        aal2 = as_user(c, session["access_token"], "select auth.mfa_challenge_and_verify(%s, %s) as r",
                       factor["id"], totp.now())
        codes = as_user(c, aal2["access_token"], "select auth.mfa_generate_recovery_codes() as r")["recovery_codes"]
        assert len(codes) == 10 and len(set(codes)) == 10
        assert all(len(x) == 19 and x.count("-") == 3 for x in codes)
        with c.transaction():
            c.execute("set local role anon")
            aal1 = c.execute("select auth.sign_in(%s, %s) as s", (session["user"]["email"], PASSWORD)).fetchone()["s"]
        with pytest.raises(psycopg.Error) as e:
            as_user(c, aal1["access_token"], "select auth.mfa_generate_recovery_codes() as r")
        assert code_error(e.value) == "insufficient_aal"
        # One code (in upper case, without dashes: as a user types it) gives aal2 with amr recovery.
        up = as_user(c, aal1["access_token"], "select auth.mfa_verify_recovery_code(%s) as r",
                     codes[0].replace("-", "").upper())
        claims = c.execute("select auth.verify_jwt(%s) as c", (up["access_token"],)).fetchone()["c"]
        assert claims["aal"] == "aal2" and claims["amr"][0]["method"] == "recovery"
        # Used once.
        with c.transaction():
            c.execute("set local role anon")
            again = c.execute("select auth.sign_in(%s, %s) as s", (session["user"]["email"], PASSWORD)).fetchone()["s"]
        with pytest.raises(psycopg.Error) as e:
            as_user(c, again["access_token"], "select auth.mfa_verify_recovery_code(%s) as r", codes[0])
        assert code_error(e.value) == "mfa_verification_failed"
        # A new set replaces the old one.
        fresh = as_user(c, up["access_token"], "select auth.mfa_generate_recovery_codes() as r")["recovery_codes"]
        with pytest.raises(psycopg.Error) as e:
            as_user(c, again["access_token"], "select auth.mfa_verify_recovery_code(%s) as r", codes[1])
        assert code_error(e.value) == "mfa_verification_failed"
        assert as_user(c, again["access_token"], "select auth.mfa_verify_recovery_code(%s) as r", fresh[1])
    with admin() as c:
        stored = [r["code_hash"] for r in c.execute("select code_hash from auth.mfa_recovery_codes")]
    assert not any(code.replace("-", "") in h or code in h for code in fresh for h in stored)


def outbox(email, action):
    with admin() as c:
        m = c.execute("select message from auth.email_outbox where recipient = %s and email_action_type = %s "
                      "order by id desc limit 1", (email, action)).fetchone()
    return m["message"]["email_data"] if m else None


@pytest.fixture()
def strict_password_changes():
    from conftest import DB

    with admin() as c:
        c.execute(f'alter database "{DB}" set auth.update_password_require_reauthentication = on')
        c.execute(f'alter database "{DB}" set auth.update_password_require_current_password = on')
    yield
    with admin() as c:
        c.execute(f'alter database "{DB}" reset auth.update_password_require_reauthentication')
        c.execute(f'alter database "{DB}" reset auth.update_password_require_current_password')


def test_password_change_proofs(strict_password_changes):
    email = f"proofs-{threading.get_ident()}@example.com"
    with api() as c:
        with c.transaction():
            c.execute("set local role anon")
            s = c.execute("select auth.sign_up(%s, %s) as s", (email, PASSWORD)).fetchone()["s"]
        token = s["access_token"]

        def change(attrs):
            try:
                as_user(c, token, "select auth.update_user(%s::jsonb) as r", __import__("json").dumps(attrs))
                return "ok"
            except psycopg.Error as e:
                return code_error(e)

        new = "a brand new passphrase"
        assert change({"password": new}) == "current_password_required"
        assert change({"password": new, "current_password": "not it at all"}) == "current_password_mismatch"
        assert change({"password": new, "current_password": PASSWORD}) == "reauthentication_needed"
        assert change({"password": new, "current_password": PASSWORD, "nonce": "123456"}) == "reauthentication_not_valid"
        assert as_user(c, token, "select auth.reauthenticate() as r") == {}
        nonce = outbox(email, "reauthentication")["token"]
        assert change({"password": new, "current_password": PASSWORD, "nonce": nonce}) == "ok"
        # The nonce works once, and the reauthentication code is no sign-in code.
        assert change({"password": "yet another passphrase", "current_password": new, "nonce": nonce}) == \
            "reauthentication_not_valid"
        with pytest.raises(psycopg.Error) as e, c.transaction():
            c.execute("set local role anon")
            c.execute("select auth.verify_otp(%s, %s, 'email')", (email, nonce))
        assert code_error(e.value) == "otp_expired"
        # Metadata changes need neither.
        assert change({"data": {"theme": "dark"}}) == "ok"


def test_challenges_are_rate_limited_per_user(enrolled):
    session, factor = enrolled
    with admin() as c:
        c.execute("select auth.uid()")  # loads the library, which defines the setting
        limit = int(c.execute("select current_setting('auth.mfa_rate_limit') as n").fetchone()["n"])
    answers = []
    with api() as c:
        for _ in range(limit + 3):
            try:
                as_user(c, session["access_token"], "select auth.mfa_challenge(%s) as r", factor["id"])
                answers.append("ok")
            except psycopg.Error as e:
                answers.append(code_error(e))
    assert answers == ["ok"] * limit + ["over_request_rate_limit"] * 3


# Found by an adversarial review; each failed before its fix.


def test_a_refresh_racing_the_verification_mints_no_aal2(enrolled):
    session, factor = enrolled
    result = {}
    with api() as verifier:
        verifier.execute("select auth.authenticate(%s)", (session["access_token"],))
        verifier.execute("select auth.mfa_challenge_and_verify(%s, %s)",
                         (factor["id"], pyotp.TOTP(factor["totp"]["secret"]).now()))

        def refresh():
            with api() as c:
                try:
                    with c.transaction():
                        c.execute("set local role anon")
                        result["r"] = c.execute("select auth.refresh(%s) as r", (session["refresh_token"],)).fetchone()["r"]
                except psycopg.Error as e:
                    result["e"] = code_error(e)

        t = threading.Thread(target=refresh)
        t.start()
        time.sleep(0.5)  # the refresh now waits for the session's row lock
        verifier.commit()
        t.join()
    assert result == {"e": "refresh_token_not_found"}, result


def test_removing_the_last_factor_ends_every_aal2_even_by_recovery_code(enrolled):
    session, factor = enrolled
    with api() as c:
        aal2 = as_user(c, session["access_token"], "select auth.mfa_challenge_and_verify(%s, %s) as r",
                       factor["id"], pyotp.TOTP(factor["totp"]["secret"]).now())
        codes = as_user(c, aal2["access_token"], "select auth.mfa_generate_recovery_codes() as r")["recovery_codes"]
        with c.transaction():
            c.execute("set local role anon")
            aal1 = c.execute("select auth.sign_in(%s, %s) as s", (session["user"]["email"], PASSWORD)).fetchone()["s"]
        by_code = as_user(c, aal1["access_token"], "select auth.mfa_verify_recovery_code(%s) as r", codes[0])
    with admin() as c:
        c.execute("set role service_role")
        c.execute("select auth.admin_mfa_delete_factor(%s, %s)", (session["user"]["id"], factor["id"]))
    with api() as c, c.transaction():
        c.execute("set local role anon")
        r = c.execute("select auth.refresh(%s) as r", (by_code["refresh_token"],)).fetchone()["r"]
        claims = c.execute("select auth.verify_jwt(%s) as c", (r["access_token"],)).fetchone()["c"]
    assert claims["aal"] == "aal1"


def test_a_banned_user_gets_no_tokens_from_a_code(enrolled):
    session, factor = enrolled
    with admin() as c:
        c.execute("set role service_role")
        c.execute("""select auth.admin_update_user(%s, '{"ban_duration": "24h"}')""", (session["user"]["id"],))
    with api() as c, pytest.raises(psycopg.Error) as e:
        as_user(c, session["access_token"], "select auth.mfa_challenge_and_verify(%s, %s) as r",
                factor["id"], pyotp.TOTP(factor["totp"]["secret"]).now())
    assert code_error(e.value) == "user_banned"
