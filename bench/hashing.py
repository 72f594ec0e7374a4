"""Password hashing under load: 0, 2, 8, 16 and 32 clients signing in as fast as they can,
and beside each the latency of an unrelated query (a primary-key lookup on a small table)
from one more client, with the hashing bound off (auth.password_hash_concurrency = -1),
at half the cores, at the default bound (one per core) with the hashing threads at each
auth.password_hash_priority (normal, idle, and low, the default), in the same run. Prints sign-ins
per second and the query's p50/p99, and the ratios the targets speak of. A control runs the
same argon2id outside the database (argon2-cffi, 0, 1 and one-per-core processes in the idle
scheduling class, no sign-ins): what memory-hard hashing itself costs the machine's other
work, whatever the scheduler does.

Runs against the database in PG* (bench/in-cluster.sh) as a superuser: it changes
the hashing settings with ALTER SYSTEM and reloads, and restores them at the end."""

import multiprocessing as mp
import os
import signal
import statistics
import sys
import time
import uuid

import psycopg

DB = os.environ.get("PGDATABASE", "auth_bench")
SECONDS = float(os.environ.get("HASHING_SECONDS", "10"))
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


def outside_hasher(stop_at):
    """argon2id with auth_ext's parameters in a process outside the database, in the idle
    scheduling class: the control that shows what the hashing itself costs the machine."""
    from argon2.low_level import Type, hash_secret_raw

    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    while time.time() < stop_at:
        hash_secret_raw(PASSWORD.encode(), b"control-salt-0001", 2, 19456, 1, 32, Type.ID)


def control(hashers):
    """The query's p50/p99 while `hashers` processes hash outside the database."""
    probe_out = mp.Queue()
    start_at = time.time() + 1.5
    stop_at = start_at + SECONDS
    procs = [mp.Process(target=outside_hasher, args=(stop_at,)) for _ in range(hashers)]
    probe = mp.Process(target=prober, args=(start_at, stop_at, probe_out))
    for p in procs + [probe]:
        p.start()
    lat = probe_out.get()
    for p in procs + [probe]:
        p.join()
    return pct(lat, 50), pct(lat, 99)


AUTOGROUP = "/proc/sys/kernel/sched_autogroup_enabled"


def autogroup(on=None):
    """The kernel's grouping by session: with no argument, whether it is on; otherwise set
    it, answering whether that worked."""
    try:
        if on is None:
            with open(AUTOGROUP) as f:
                return f.read().strip() == "1"
        with open(AUTOGROUP, "w") as f:
            f.write("1" if on else "0")
        return True
    except OSError:
        return False


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


def configure(bound, priority):
    """ALTER SYSTEM the hashing settings (None: the default) and reload."""
    with connect() as c:
        c.execute("load 'auth_ext'")
        for name, value in (("password_hash_concurrency", bound), ("password_hash_priority", priority)):
            if value is None:
                c.execute(f"alter system reset auth.{name}")
            else:
                c.execute(f"alter system set auth.{name} = '{value}'")
        c.execute("select pg_reload_conf()")
    time.sleep(0.5)


def main():
    # A SIGTERM (an interrupted run) must still restore what the run changed (the finally
    # clauses below): make it an exception.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
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
    cores = os.cpu_count()
    default_label = f"{cores if default == '0' else default}, low (default)"
    # Without the bound (the baseline); half the cores; the default bound at the priority
    # of queries (normal) and in the idle class, to show what each priority gives; the
    # defaults (low).
    configs = [("off", -1, None), (f"{max(1, cores // 2)}", max(1, cores // 2), None),
               (f"{cores}, normal", None, "normal"), (f"{cores}, idle", None, "idle"),
               (default_label, None, None)]
    most = max(CLIENTS)
    grouped = autogroup()
    rows, grouped_rows = {}, {}
    try:
        # The main table stands for clients on other machines. Here they share the server's
        # cores, and where the kernel groups processes by session (autogroup), the load
        # generator and the probe compete with the whole server as groups, which no
        # priority inside the server changes. So the grouping is off for it (root only).
        changed = grouped and autogroup(False)
        try:
            for label, bound, priority in configs:
                configure(bound, priority)
                for n in CLIENTS:
                    rows[(label, n)] = run(n)
            controls = {n: control(n) for n in (0, 1, cores)}
        finally:
            if changed:
                autogroup(True)
        if grouped:
            # The same machine as the kernel groups it: the unbounded and the default figure
            # at the most clients, and the control.
            for label, bound, priority in (configs[0], configs[-1]):
                configure(bound, priority)
                grouped_rows[(label, 0)] = run(0)
                grouped_rows[(label, most)] = run(most)
            grouped_rows[("control", cores)] = (0.0, 0) + control(cores)
    finally:
        configure(None, None)
        with connect() as c:
            c.execute(f"alter database {DB} reset auth.lockout_max_failures")
            c.execute(f"alter database {DB} reset auth.lockout_ip_max_failures")
    header = f"{'clients':>7} {'bound':>16} {'sign-ins/s':>11} {'busy':>5} {'query p50 ms':>13} {'query p99 ms':>13}"

    def line(n, label, rate, busy, p50, p99):
        print(f"{n:>7} {label:>16} {rate:>11.1f} {busy:>5} {p50:>13.2f} {p99:>13.2f}")

    print("scheduler grouping by session (autogroup): "
          + ("off for this table, restored after" if changed else "as the kernel has it"))
    print(header)
    for (label, n), r in rows.items():
        line(n, label, *r)
    print("control, no sign-ins: argon2id (the same parameters) in processes outside the database,")
    print("in the idle scheduling class:")
    for n, (p50, p99) in controls.items():
        print(f"{n:>7} {'hashing':>16} {'':>11} {'':>5} {p50:>13.2f} {p99:>13.2f}")
    # Idle: the median of the runs without sign-ins (each configuration has one; one p99
    # alone is noisy).
    idle = statistics.median([r[3] for (_, n), r in rows.items() if n == 0] + [controls[0][1]])
    print(f"idle query p99 (median of the runs without sign-ins): {idle:.2f} ms")
    for label, _, _ in configs[1:]:
        print(f"at {most} clients, bound {label}: query p99 {rows[(label, most)][3] / idle:.2f}x idle "
              f"({rows[('off', most)][3] / idle:.2f}x without the bound); sign-ins/s "
              f"{rows[(label, most)][0] / max(rows[('off', most)][0], 1e-9):.2f}x the unbounded figure")
    if grouped_rows:
        print("with the kernel's grouping by session on (load generator and probe on this machine):")
        print(header)
        for (label, n), r in grouped_rows.items():
            line(n, label, *r)


if __name__ == "__main__":
    main()
