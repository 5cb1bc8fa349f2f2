#!/usr/bin/env python3
"""Restore speed at T (issue 12, item 4): `flashback restore --at T` against a bare load of an
RDB of the state at T, and against Redis's own AOF point-in-time path, on one long steady-state
history that `flashback capture --rolling-bases` records (bases made by the agent while the load
runs).

The source runs with appendonly yes and aof-timestamp-enabled yes. It is populated (DEBUG
POPULATE, then BGREWRITEAOF so the AOF's base holds the keys), then overwritten at a steady rate
while the agent and a real `redis-server --replicaof` replica follow it. At several instants the
writes pause across a whole-second boundary, so that second is an instant both tools can name:
flashback by time, redis-check-aof --truncate-to-timestamp by its second.

Per instant, in the same run: `restore --at T --rdb` and `restore --at T --serve` (timed to the
command's exit, the server then holding the state), a bare redis-server loading the restored RDB
(start to loading:0 and PONG: the first floor) and a SAVE on it (load + SAVE: the floor for an
output that must also write the file), Redis's own path (copy the appendonlydir, truncate to the
second, load in a bare server, SAVE). DEBUG DIGEST of every result must be the same.
Then the agent's CPU (utime+stime from /proc, its warm server included) and peak RSS, against
the replica's over the same load. `--parallel N` is run with 1, 2, 4 when `restore --help` has it.

Python 3 standard library only; needs redis-server, redis-check-aof and target/release/flashback
(FLASHBACK_BIN overrides). Usage: bench/restore_speed.sh [--keys N] [--value-size B]
[--seconds S] [--instants K] [--budget F]
"""
import argparse
import functools
import datetime
import re
import os
import shutil
import subprocess
import sys
import tempfile
import time

print = functools.partial(print, flush=True)  # noqa: A001 (progress shows when piped)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rolling import BIN, Conn, free_port, proc_cpu_rss, start_server, wait_loaded  # noqa: E402


def digest(c):
    return c.call("DEBUG", "DIGEST").decode()


def bare(rdb, d):
    """(load s, SAVE s, digest) of a bare redis-server loading `rdb`."""
    os.makedirs(d)
    shutil.copy(rdb, os.path.join(d, "state.rdb"))
    port = free_port()
    t0 = time.time()
    p = start_server(port, d, ["--dbfilename", "state.rdb", "--enable-debug-command", "yes"])
    c = wait_loaded(port)
    load_s = time.time() - t0
    t0 = time.time()
    c.call("SAVE")
    save_s = time.time() - t0
    dg = digest(c)
    p.terminate()
    p.wait()
    shutil.rmtree(d, ignore_errors=True)
    return load_s, save_s, dg


def aof_pitr(aofdir, second, d):
    """Redis's own path: truncate a copy of the AOF to `second`, load it, SAVE. (s, digest)."""
    os.makedirs(d)
    t0 = time.time()
    shutil.copytree(aofdir, os.path.join(d, "appendonlydir"))
    manifest = [f for f in os.listdir(os.path.join(d, "appendonlydir")) if f.endswith(".manifest")][0]
    r = subprocess.run(["redis-check-aof", "--truncate-to-timestamp", str(second),
                        os.path.join(d, "appendonlydir", manifest)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("redis-check-aof: " + r.stdout + r.stderr)
    port = free_port()
    p = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", "",
         "--appendonly", "yes", "--enable-debug-command", "yes",
         "--logfile", os.path.join(d, "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c = wait_loaded(port)
    c.call("SAVE")
    s = time.time() - t0
    dg = digest(c)
    p.terminate()
    p.wait()
    shutil.rmtree(d, ignore_errors=True)
    return s, dg


def restore(store, at, out_args, extra, binary=BIN):
    t0 = time.time()
    r = subprocess.run([binary, "restore", "--store", store, "--at", at, *out_args, *extra],
                       capture_output=True, text=True)
    s = time.time() - t0
    if r.returncode != 0:
        print(r.stdout, r.stderr, file=sys.stderr)
        sys.exit(1)
    lines = [l for l in r.stdout.splitlines() if l.startswith(("applied:", "restore time"))]
    return s, lines, r.stdout


def served_digest(port, out):
    """DEBUG DIGEST of the served restore, then stops it and removes its data dir."""
    c = Conn(port)
    dg = digest(c)
    try:
        c.call("SHUTDOWN", "NOSAVE")
    except (OSError, EOFError):
        pass
    for l in out.splitlines():
        if l.strip().startswith("data dir: "):
            time.sleep(0.2)
            shutil.rmtree(l.strip()[len("data dir: "):].split(" (log: ")[0], ignore_errors=True)
    return dg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=400000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60, help="length of the steady write load")
    ap.add_argument("--instants", type=int, default=4, help="restore points across the load")
    ap.add_argument("--pause", type=float, default=0.01, help="seconds between 500-SET batches")
    ap.add_argument("--budget", type=float, default=0.25, help="capture --replay-budget")
    ap.add_argument("--compare-bin", help="another flashback binary whose `restore --rdb` is timed too "
                    "on the same store and instants (e.g. a build before a change)")
    ap.add_argument("--serial-only", action="store_true",
                    help="skip the --parallel 2 and 4 rows (faster at large sizes)")
    args = ap.parse_args()
    helptext = subprocess.run([BIN, "restore", "--help"], capture_output=True, text=True).stdout
    parallel = [1, 2, 4] if "--parallel" in helptext else None
    if parallel and args.serial_only:
        parallel = [1]
    splice = "--no-splice" in helptext
    work = tempfile.mkdtemp(prefix="bench-restore-speed-")
    procs = []
    try:
        port = free_port()
        sdir = os.path.join(work, "src")
        os.makedirs(sdir)
        src = start_server(port, sdir, ["--enable-debug-command", "yes"])
        procs.append(src)
        c = wait_loaded(port)
        c.call("DEBUG", "POPULATE", args.keys, "key", args.value_size)
        c.call("CONFIG", "SET", "aof-timestamp-enabled", "yes")
        # One INCR file: redis-check-aof truncates only the last one.
        c.call("CONFIG", "SET", "auto-aof-rewrite-percentage", "0")
        c.call("CONFIG", "SET", "appendonly", "yes")  # rewrites: the AOF base holds the keys
        while b"aof_rewrite_in_progress:0" not in c.call("INFO", "persistence") or \
                b"aof_rewrite_scheduled:0" not in c.call("INFO", "persistence"):
            time.sleep(0.1)
        store = os.path.join(work, "store")
        log = open(os.path.join(work, "agent.log"), "w")
        agent = subprocess.Popen(
            [BIN, "capture", "--source", "redis://127.0.0.1:%d" % port, "--store", store,
             "--segment-mib", "4", "--segment-age", "2s", "--rolling-bases",
             "--replay-budget", str(args.budget)], stdout=log, stderr=log)
        procs.append(agent)
        rport = free_port()
        rdir = os.path.join(work, "replica")
        os.makedirs(rdir)
        replica = start_server(rport, rdir, ["--replicaof", "127.0.0.1", str(port)])
        procs.append(replica)
        while c.call("INFO", "replication").count(b"state=online") < 2:
            time.sleep(0.05)
        time.sleep(1)
        a0, r0 = proc_cpu_rss(agent.pid)[0], proc_cpu_rss(replica.pid)[0]
        a_peak = r_peak = 0
        value = b"x" * args.value_size
        start = time.time()
        marks = [start + args.seconds * (k + 1) / (args.instants + 1) for k in range(args.instants)]
        seconds, i = [], 0
        while time.time() - start < args.seconds:
            c.pipeline([("SET", b"key:%d" % ((i * 7919 + j) % args.keys), value) for j in range(500)])
            i += 1
            if marks and time.time() >= marks[0]:
                marks.pop(0)
                # No write in the whole second T: both tools then mean the same state by it.
                t = int(time.time()) + 1
                time.sleep(t + 1.2 - time.time())
                seconds.append(t)
            if i % 20 == 0:
                a_peak = max(a_peak, proc_cpu_rss(agent.pid)[1])
                r_peak = max(r_peak, proc_cpu_rss(replica.pid)[1])
            time.sleep(args.pause)
        time.sleep(3)  # the agent makes the tail durable
        a1, ar = proc_cpu_rss(agent.pid)
        r1, rr = proc_cpu_rss(replica.pid)
        a_peak, r_peak = max(a_peak, ar), max(r_peak, rr)
        for p in (agent, replica, src):
            p.terminate()
            p.wait(timeout=120)
        procs.clear()
        aofdir = os.path.join(sdir, "appendonlydir")
        alog = open(os.path.join(work, "agent.log")).read()
        nbases = alog.count("rolling base ")
        print("history: %d keys x %d B, %d SETs in %.0f s, %d rolling bases made during it (--replay-budget %s)"
              % (args.keys, args.value_size, i * 500, args.seconds, nbases, args.budget))
        print("parallel: " + ("restore --parallel 1, 2, 4" if parallel else
                              "`restore --parallel` not available in this build: one partition only"))
        rows = []
        # Instants placed by the bases the agent made: just after one, mid-way to the next, just
        # before the next (continuous writes there, so each has a replay); then the paused
        # whole seconds, where Redis's own path can name the same state.
        made = [int(datetime.datetime.strptime(m[:23].replace(" ", "T"), "%Y-%m-%dT%H:%M:%S.%f").replace(
            tzinfo=datetime.timezone.utc).timestamp() * 1000)
            for m in re.findall(r"rolling base \S+ \(\d+ bytes\) at offset \d+ \(([^)]+)\)", alog)]
        made = [t for t in made if start * 1000 < t < (start + args.seconds) * 1000]
        gaps = [(a, b) for a, b in zip(made, made[1:]) if b - a > 500]
        picks = [gaps[len(gaps) // 3], gaps[2 * len(gaps) // 3]] if len(gaps) >= 2 else gaps[:1]
        points = []
        for a, b in picks:
            for name, f in (("just after a base", 0.1), ("mid-budget", 0.5), ("just before the next base", 0.9)):
                points.append((name, int(a + f * (b - a)), None))
        points += [("paused second", sec * 1000 + 500, sec) for sec in seconds]
        for k, (name, t_ms, sec) in enumerate(points):
            at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_ms // 1000)) + ".%03dZ" % (t_ms % 1000)
            for par in parallel or [None]:
                extra = ["--parallel", str(par)] if par else []
                rdb = os.path.join(work, "at%d.rdb" % k)
                if os.path.exists(rdb):
                    os.remove(rdb)
                rdb_s, lines, _ = restore(store, at, ["--rdb", rdb], extra)
                whole_s = wdg = None
                if splice and par in (None, 1):
                    # The same file rebuilt the old way (load the whole base, replay, SAVE).
                    wrdb = rdb + ".whole"
                    whole_s, _, _ = restore(store, at, ["--rdb", wrdb, "--no-splice"], extra)
                    _, _, wdg = bare(wrdb, os.path.join(work, "barew%d" % k))
                    os.remove(wrdb)
                sport = free_port()
                serve_s, _, sout = restore(store, at, ["--serve", str(sport)], extra)
                sdg = served_digest(sport, sout)
                load_s, save_s, bdg = bare(rdb, os.path.join(work, "bare%d" % k))
                aof_s, adg = (None, None)
                if sec is not None and par in (None, 1):
                    aof_s, adg = aof_pitr(aofdir, sec, os.path.join(work, "aof%d" % k))
                rows.append((k, par, rdb_s, serve_s, load_s, save_s, aof_s, sdg == bdg,
                             adg in (None, bdg) and wdg in (None, bdg)))
                print("T%d %s (%s, parallel %s): --rdb %.2f s, --serve %.2f s, bare load %.2f s, bare load+SAVE %.2f s, AOF-PITR %s"
                      % (k, name, at, par or "-", rdb_s, serve_s, load_s, load_s + save_s,
                         "%.2f s" % aof_s if aof_s else "-"))
                print("    ratios: --serve/load %.2f  --rdb/load %.2f  --rdb/(load+SAVE) %.2f%s"
                      % (serve_s / load_s, rdb_s / load_s, rdb_s / (load_s + save_s),
                         "  --rdb/AOF-PITR %.2f" % (rdb_s / aof_s) if aof_s else ""))
                if whole_s:
                    print("    --rdb --no-splice %.2f s: --rdb/load %.2f without the splice; splice/no-splice %.2f"
                          % (whole_s, whole_s / load_s, rdb_s / whole_s))
                if args.compare_bin:
                    os.remove(rdb)
                    cmp_s, clines, _ = restore(store, at, ["--rdb", rdb], extra, args.compare_bin)
                    print("    --rdb with %s: %.2f s (%s)" % (args.compare_bin, cmp_s, clines[-1] if clines else ""))
                print("    digests: serve==rdb %s, AOF-PITR==rdb %s, no-splice==rdb %s"
                      % (sdg == bdg, "-" if adg is None else adg == bdg, "-" if wdg is None else wdg == bdg))
                for l in lines:
                    print("    " + l)
                os.remove(rdb)
        if not rows:
            sys.exit("no instant to restore: no two rolling bases and no pause in the load; raise --seconds")
        worst = lambda f: max(f(r) for r in rows)
        print("worst --serve/load %.2f (goal <= 1.25), worst --rdb/load %.2f, worst --rdb/(load+SAVE) %.2f, worst --rdb/AOF-PITR %.2f (goal <= 0.5)"
              % (worst(lambda r: r[3] / r[4]), worst(lambda r: r[2] / r[4]),
                 worst(lambda r: r[2] / (r[4] + r[5])), worst(lambda r: r[2] / r[6] if r[6] else 0)))
        print("all digests equal: %s" % all(r[7] and r[8] for r in rows))
        print("during the %.0f s load: agent (+ its warm server) CPU %.1f s, peak RSS %.0f MiB; replica CPU %.1f s, peak RSS %.0f MiB"
              % (args.seconds, a1 - a0, a_peak / 2**20, r1 - r0, r_peak / 2**20))
        if not all(r[7] and r[8] for r in rows):
            sys.exit(1)
    finally:
        for p in procs:
            p.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
