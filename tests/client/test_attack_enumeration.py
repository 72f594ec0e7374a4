"""What a caller can learn about whether an address has an account, besides the answer
itself (the timing is in bench/timing.py): the notifications any role may LISTEN to, an
email change to a taken address, and the user a repeated sign-up returns. With
confirmation on, known and unknown addresses must look alike in each."""

import json
import time
import uuid

import psycopg
import pytest

from conftest import DB, admin, api

PASSWORD = "enumeration-password-1"


def settings(**values):
    with admin() as c:
        for k, v in values.items():
            c.execute(f"alter database {DB} {'reset auth.' + k if v is None else f'set auth.{k} = {v!r}'}")


@pytest.fixture()
def confirmation():
    settings(require_email_confirmation="on", email_rate_limit="0")
    yield
    settings(require_email_confirmation=None, email_rate_limit=None)


def confirmed_user():
    email = f"known-{uuid.uuid4().hex[:8]}@example.io"
    with admin() as c:
        c.execute(f"set auth.require_email_confirmation = off")
        s = c.execute("select auth.sign_up(%s, %s) as s", (email, PASSWORD)).fetchone()["s"]
    return email, s


def notifications(call, *args):
    """What a listener on auth_email hears while `call` runs as anon."""
    with psycopg.connect(dbname=DB, autocommit=True) as listener, api() as c:
        listener.execute("listen auth_email")
        c.execute("set local role anon")
        c.execute(call, args)
        c.commit()
        time.sleep(0.2)
        return [n.payload for n in listener.notifies(timeout=0.5, stop_after=5)]


def test_a_listener_hears_the_same_for_known_and_unknown_addresses(confirmation):
    known, _ = confirmed_user()
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.io"
    for call in ("select auth.recover(%s)", "select auth.sign_in_with_otp(%s, false)",
                 "select auth.resend('signup', %s)"):
        heard_known = notifications(call, known)
        heard_unknown = notifications(call, unknown)
        assert len(heard_unknown) == 1 and heard_unknown[0].isdigit(), (call, heard_unknown)
        assert len(heard_known) == len(heard_unknown), (call, heard_known, heard_unknown)
    # A repeated sign-up of a confirmed address and a new one.
    assert len(notifications("select auth.sign_up(%s, %s)", known, PASSWORD)) == 1
    assert len(notifications("select auth.sign_up(%s, %s)", unknown, PASSWORD)) == 1


def test_a_repeated_sign_up_returns_a_user_like_a_new_one(confirmation):
    known, _ = confirmed_user()
    unconfirmed = f"pending-{uuid.uuid4().hex[:8]}@example.io"
    with admin() as c:
        first = c.execute("select auth.sign_up(%s, %s) as s", (unconfirmed, PASSWORD)).fetchone()["s"]
        time.sleep(0.01)
        answers = {
            "confirmed": c.execute("select auth.sign_up(%s, %s) as s", (known, PASSWORD)).fetchone()["s"],
            "unconfirmed": c.execute("select auth.sign_up(%s, %s) as s", (unconfirmed, PASSWORD)).fetchone()["s"],
            "new": c.execute("select auth.sign_up(%s, %s) as s",
                             (f"new-{uuid.uuid4().hex[:8]}@example.io", PASSWORD)).fetchone()["s"],
        }
    new = answers["new"]
    for what, u in answers.items():
        assert sorted(u) == sorted(new), what
        assert u["created_at"] == u["updated_at"], what
        assert len(u["identities"]) == 1, what
        assert sorted(u["identities"][0]) == sorted(new["identities"][0]), what
        assert sorted(u["identities"][0]["identity_data"]) == sorted(new["identities"][0]["identity_data"]), what
    # The unconfirmed account's real id is not given away by a second sign-up.
    assert answers["unconfirmed"]["id"] != first["id"]


def test_an_email_change_to_a_taken_address_looks_like_any_other(confirmation):
    known, _ = confirmed_user()
    me, s = confirmed_user()
    answers = {}
    for target in (known, f"free-{uuid.uuid4().hex[:8]}@example.io"):
        with api() as c:
            c.execute("select auth.authenticate(%s)", (s["access_token"],))
            u = c.execute("select auth.update_user(%s) as u", (json.dumps({"email": target}),)).fetchone()["u"]
            c.commit()
        answers[target] = u
    taken, free = answers.values()
    assert taken["new_email"] == known and free["new_email"] != known
    assert sorted(taken) == sorted(free)
    with admin() as c:
        sent = c.execute("select count(*) as n from auth.email_outbox where recipient = %s "
                         "and email_action_type = 'email_change'", (known,)).fetchone()["n"]
    assert sent == 0, "nothing goes to an address that has an account"


def test_without_confirmation_a_taken_address_is_still_refused():
    """As sign-up reveals a taken address when confirmation is off (GoTrue's behaviour)."""
    known, _ = confirmed_user()
    _, s = confirmed_user()
    with api() as c:
        c.execute("select auth.authenticate(%s)", (s["access_token"],))
        with pytest.raises(psycopg.Error) as e:
            c.execute("select auth.update_user(%s)", (json.dumps({"email": known}),))
        assert e.value.sqlstate == "23505" and e.value.diag.message_primary.startswith("email_exists: ")
