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
