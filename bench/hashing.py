"""Password hashing under load: 0, 2, 8, 16 and 32 clients signing in as fast as they can,
and beside each the latency of an unrelated query (a primary-key lookup on a small table)
from one more client, with the hashing bound off (auth.password_hash_concurrency = -1)
and on (the default: one per core), in the same run. Prints sign-ins per second and the query's
p50/p99, and the ratios the targets speak of.

Runs against the database in PG* (bench/in-cluster.sh) as a superuser: it changes
auth.password_hash_concurrency with ALTER SYSTEM and reloads, and restores it at the end."""

import multiprocessing as mp
import os
import time
import uuid

import psycopg

DB = os.environ.get("PGDATABASE", "auth_bench")
SECONDS = float(os.environ.get("HASHING_SECONDS", "8"))
CLIENTS = [int(n) for n in os.environ.get("HASHING_CLIENTS", "0,2,8,16,32").split(",")]
PASSWORD = "hashing-password-1"
ACCOUNTS = 32


def connect():
    return psycopg.connect(dbname=DB, autocommit=True)


def signer(i, start_at, stop_at, out):
    with connect() as c:
        c.execute("select auth.jwks()")
        n = busy = 0
        while time.time() < start_at:
            time.sleep(0.001)
        while time.time() < stop_at:
            try:
                c.execute("select auth.sign_in(%s, %s)", (f"hash-{i % ACCOUNTS}@example.com", PASSWORD))
                n += 1
            except psycopg.Error as e:
                busy += e.sqlstate == "53000"
        out.put((n, busy))


def prober(start_at, stop_at, out):
    # The probe stands for a client on another machine: its own process must not wait
    # behind this machine's load generators for a core. A session of its own (so a
    # scheduling group of its own where the kernel groups by session) at a higher
    # priority (root only; otherwise it measures at the default).
    try:
        os.setsid()
        with open("/proc/self/autogroup", "w") as f:
            f.write("-10")
    except OSError:
        pass
    try:
        os.nice(-10)
    except OSError:
        pass
    lat = []
    with connect() as c:
        c.execute("select 1")
        while time.time() < start_at:
            time.sleep(0.001)
        while time.time() < stop_at:
            t = time.perf_counter()
            c.execute("select v from bench_probe where k = 42")
            lat.append((time.perf_counter() - t) * 1000)
            time.sleep(0.005)
    out.put(lat)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run(clients):
    out, probe_out = mp.Queue(), mp.Queue()
    start_at = time.time() + 1.5
    stop_at = start_at + SECONDS
    procs = [mp.Process(target=signer, args=(i, start_at, stop_at, out)) for i in range(clients)]
    probe = mp.Process(target=prober, args=(start_at, stop_at, probe_out))
    for p in procs + [probe]:
        p.start()
    results = [out.get() for _ in procs]
    lat = probe_out.get()
    for p in procs + [probe]:
        p.join()
    signed = sum(n for n, _ in results)
    busy = sum(b for _, b in results)
    return signed / SECONDS, busy, pct(lat, 50), pct(lat, 99)


def set_bound(value):
    with connect() as c:
        c.execute("load 'auth_ext'")
        if value is None:
            c.execute("alter system reset auth.password_hash_concurrency")
        else:
            c.execute(f"alter system set auth.password_hash_concurrency = {value}")
        c.execute("select pg_reload_conf()")
    time.sleep(0.5)


def main():
    with connect() as c:
        c.execute(f"alter database {DB} set auth.lockout_max_failures = 0")
        c.execute(f"alter database {DB} set auth.lockout_ip_max_failures = 0")
        c.execute("create table if not exists bench_probe (k int primary key, v text)")
        c.execute("insert into bench_probe select g, md5(g::text) from generate_series(1, 1000) g on conflict do nothing")
        for i in range(ACCOUNTS):
            try:
                c.execute("select auth.sign_up(%s, %s)", (f"hash-{i}@example.com", PASSWORD))
            except psycopg.errors.UniqueViolation:
                pass
        c.execute("load 'auth_ext'")
        default = c.execute("select boot_val from pg_settings where name = 'auth.password_hash_concurrency'").fetchone()[0]
    rows = {}
    try:
        cores = os.cpu_count()
        for label, bound in (("off", -1), (f"on ({cores})" if default == "0" else f"on ({default})", None)):
            set_bound(bound)
            for n in CLIENTS:
                rows[(label, n)] = run(n)
    finally:
        set_bound(None)
        with connect() as c:
            c.execute(f"alter database {DB} reset auth.lockout_max_failures")
            c.execute(f"alter database {DB} reset auth.lockout_ip_max_failures")
    print(f"{'clients':>7} {'bound':>8} {'sign-ins/s':>11} {'busy':>5} {'query p50 ms':>13} {'query p99 ms':>13}")
    for (label, n), (rate, busy, p50, p99) in rows.items():
        print(f"{n:>7} {label:>8} {rate:>11.1f} {busy:>5} {p50:>13.2f} {p99:>13.2f}")
    idle = rows[("off", 0)][3]
    on = [k for k in rows if k[0] != "off"][0][0]
    most = max(CLIENTS)
    print(f"at {most} clients: query p99 {rows[(on, most)][3] / idle:.2f}x idle with the bound "
          f"({rows[('off', most)][3] / idle:.2f}x without); sign-ins/s {rows[(on, most)][0] / rows[('off', most)][0]:.2f}x "
          f"the unbounded figure")


if __name__ == "__main__":
    main()
