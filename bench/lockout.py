"""The lockout under a flood: 120 connections send wrong passwords for one account, all
starting at the same moment and going on for a few seconds (threshold 10). Prints how many
guesses were checked against the password, how fast the rest were turned away, and the
sign-in latency of another account meanwhile. Baselines measured in the same run: that
account's latency on the idle server, and during a flood of `select 1` from the same 120
connections (what any flood of cheap requests costs the server).

The flood comes from separate processes, so the measuring client is not slowed by it.
Runs against the database in PG* (bench/in-cluster.sh) as a superuser; needs
max_connections above 130."""

import multiprocessing as mp
import os
import threading
import time
import uuid

import psycopg

DB = os.environ.get("PGDATABASE", "auth_bench")
FLOOD = int(os.environ.get("LOCKOUT_FLOOD", "120"))
SECONDS = float(os.environ.get("LOCKOUT_SECONDS", "5"))
PROCESSES = 4
PASSWORD = "lockout-password-1"


def connect():
    return psycopg.connect(dbname=DB, autocommit=True)


def call(conn, sql, args=()):
    t = time.perf_counter()
    try:
        conn.execute(sql, args)
        state = "ok"
    except psycopg.Error as e:
        state = e.sqlstate
    return state, (time.perf_counter() - t) * 1000


def flooder(n, sql, victim, start_at, stop_at, ready, out):
    """One process: n connections, each sending `sql` from start_at until stop_at."""
    conns = [connect() for _ in range(n)]
    for c in conns:
        c.execute("select auth.jwks()")  # a pooled connection: library and keys loaded
    ready.put(n)
    results = []
    lock = threading.Lock()

    def run(c, i):
        mine, k = [], 0
        while time.time() < start_at:
            time.sleep(0.0005)
        while time.time() < stop_at:
            args = (victim, f"wrong-{os.getpid()}-{i}-{k}") if "%s" in sql else ()
            mine.append(call(c, sql, args))
            k += 1
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=run, args=(c, i)) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    out.put(results)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def flood(sql, victim, bystander):
    """Run the flood in PROCESSES processes; meanwhile time the bystander's sign-ins."""
    ready, out = mp.Queue(), mp.Queue()
    start_at = time.time() + 3 + FLOOD * 0.01
    stop_at = start_at + SECONDS
    procs = [mp.Process(target=flooder, args=(FLOOD // PROCESSES, sql, victim, start_at, stop_at, ready, out))
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get()
    during = []
    with connect() as c:
        c.execute("select auth.jwks()")
        while time.time() < start_at:
            time.sleep(0.001)
        while time.time() < stop_at:
            during.append(call(c, "select auth.sign_in(%s, %s)", (bystander, PASSWORD)))
    results = [r for _ in procs for r in out.get()]
    for p in procs:
        p.join()
    return results, during


def main():
    victim, bystander = f"flood-{uuid.uuid4().hex[:8]}@example.com", f"by-{uuid.uuid4().hex[:8]}@example.com"
    with connect() as c:
        c.execute(f"alter database {DB} set auth.lockout_max_failures = 10")
        c.execute(f"alter database {DB} set auth.lockout_ip_max_failures = 0")
        for e in (victim, bystander):
            c.execute("select auth.sign_up(%s, %s)", (e, PASSWORD))
    with connect() as c:
        c.execute("select auth.jwks()")
        idle = [call(c, "select auth.sign_in(%s, %s)", (bystander, PASSWORD))[1] for _ in range(40)]
    base, base_during = flood("select 1", victim, bystander)
    guesses, during = flood("select auth.sign_in(%s, %s)", victim, bystander)
    with connect() as c:
        c.execute(f"alter database {DB} reset auth.lockout_max_failures")
        c.execute(f"alter database {DB} reset auth.lockout_ip_max_failures")
        written = c.execute("select count(*) from auth.sign_in_failures where key = %s",
                            ("email:" + victim,)).fetchone()[0]

    checked = sum(1 for s, _ in guesses if s == "28P01")
    refused = [ms for s, ms in guesses if s == "53400"]
    other = len(guesses) - checked - len(refused)

    def line(label, xs):
        ok = [ms for s, ms in xs if s == "ok"]
        print(f"  {label:<44} p50 {pct(ok, 50):6.1f} ms  p99 {pct(ok, 99):6.1f} ms"
              f"  ({len(ok)} sign-ins, {len(xs) - len(ok)} refused)")

    print(f"{FLOOD} connections sending wrong passwords for one account for {SECONDS:.0f} s (threshold 10):")
    print(f"  guesses                                  {len(guesses):>8}  ({len(guesses) / SECONDS:.0f}/s)")
    print(f"  checked against the password             {checked:>8}  (failures written: {written})")
    print(f"  refused before any check                 {len(refused):>8}  p50 {pct(refused, 50):.2f} ms  p99 {pct(refused, 99):.2f} ms")
    if other:
        print(f"  other outcomes                           {other:>8}")
    print(f"  same connections sending select 1        {len(base):>8}  ({len(base) / SECONDS:.0f}/s)")
    print("another account signing in meanwhile:")
    line("idle server", [("ok", ms) for ms in idle])
    line(f"during the select 1 flood", base_during)
    line(f"during the wrong-password flood", during)


if __name__ == "__main__":
    main()
