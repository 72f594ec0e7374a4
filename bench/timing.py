"""Enumeration timing: for every call that must not reveal whether an address has an
account, the median time with a known address beside the median with an unknown one,
measured alternately in the same run (and, for sign-in, also as a fresh backend's first
call). Prints one row per call; the target is medians within 10% of each other.

Runs against the database in PG* (bench/in-cluster.sh), as a superuser that creates its
own roles and users; times are taken on the client, so both columns include the same
round trip."""

import os
import statistics
import sys
import time
import uuid

import psycopg

RUNS = int(os.environ.get("TIMING_RUNS", "61"))
FRESH_RUNS = int(os.environ.get("TIMING_FRESH_RUNS", "21"))
DB = os.environ.get("PGDATABASE", "auth_bench")
PASSWORD = "timing-password-1"


def connect():
    return psycopg.connect(dbname=DB, autocommit=True)


def setup():
    with connect() as c:
        for s in ("auth.email_rate_limit = 0", "auth.lockout_max_failures = 0", "auth.lockout_ip_max_failures = 0"):
            c.execute(f"alter database {DB} set {s}")
        c.execute("select auth.sign_up('timing-known@example.com', %s)", (PASSWORD,))
        # A pending email change, for resend(email_change).
        c.execute("select auth.sign_up('timing-changer@example.com', %s)", (PASSWORD,))


EXPECTED = {"28P01"}  # a wrong password is the point of the sign-in rows


def timed(conn, sql, args=()):
    t = time.perf_counter()
    try:
        conn.execute(sql, args)
    except psycopg.Error as e:
        if e.sqlstate not in EXPECTED:
            raise
    return (time.perf_counter() - t) * 1000


def pair(name, known_sql, unknown_sql, known_args=(), unknown_args=(), prepare=None):
    """Alternate the two calls on one warm connection; medians of each."""
    with connect() as c:
        if prepare:
            prepare(c)
        for _ in range(3):  # warm both paths
            timed(c, known_sql, known_args() if callable(known_args) else known_args)
            timed(c, unknown_sql, unknown_args() if callable(unknown_args) else unknown_args)
        a, b = [], []
        for _ in range(RUNS):
            a.append(timed(c, known_sql, known_args() if callable(known_args) else known_args))
            b.append(timed(c, unknown_sql, unknown_args() if callable(unknown_args) else unknown_args))
    report(name, a, b)


def fresh_pair(name, known_sql, unknown_sql):
    """The first call of a new backend, known and unknown alternately."""
    a, b = [], []
    for _ in range(FRESH_RUNS):
        for sql, out in ((known_sql, a), (unknown_sql, b)):
            with connect() as c:
                out.append(timed(c, sql))
    report(name, a, b)


def report(name, a, b):
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{name:<44} {ma:9.3f} {mb:9.3f} {100 * (mb - ma) / ma:+8.1f}%", flush=True)


def main():
    setup()
    print(f"{'call (median ms, ' + str(RUNS) + ' alternating runs)':<44} {'known':>9} {'unknown':>9} {'diff':>9}")
    wrong = "select auth.sign_in(%s, 'not-the-password')"
    pair("sign_in, wrong password", wrong, wrong, ("timing-known@example.com",), ("timing-nobody@example.com",))
    fresh_pair(
        "sign_in, first call of a fresh backend",
        "select auth.sign_in('timing-known@example.com', 'not-the-password')",
        "select auth.sign_in('timing-nobody@example.com', 'not-the-password')",
    )
    pair("recover", "select auth.recover(%s)", "select auth.recover(%s)",
         ("timing-known@example.com",), ("timing-nobody@example.com",))
    pair("sign_in_with_otp(create_user => false)",
         "select auth.sign_in_with_otp(%s, false)", "select auth.sign_in_with_otp(%s, false)",
         ("timing-known@example.com",), ("timing-nobody@example.com",))
    pair("sign_in_with_otp (an account is made for a new address)",
         "select auth.sign_in_with_otp(%s)", "select auth.sign_in_with_otp(%s)",
         ("timing-known@example.com",), lambda: (f"timing-{uuid.uuid4().hex}@example.com",))
    with connect() as c:
        c.execute(f"alter database {DB} set auth.require_email_confirmation = on")
        c.execute("select auth.sign_up('timing-unconfirmed@example.com', %s)", (PASSWORD,))
    pair("resend(signup)", "select auth.resend('signup', %s)", "select auth.resend('signup', %s)",
         ("timing-unconfirmed@example.com",), ("timing-nobody@example.com",))
    pair("sign_up, confirmation on (taken vs new address)",
         "select auth.sign_up(%s, %s)", "select auth.sign_up(%s, %s)",
         ("timing-known@example.com", PASSWORD), lambda: (f"timing-{uuid.uuid4().hex}@example.com", PASSWORD))
    with connect() as c:
        c.execute(f"alter database {DB} reset auth.require_email_confirmation")


if __name__ == "__main__":
    sys.exit(main())
