#!/usr/bin/env python3
"""Capture benchmark: what attaching the flashback agent costs a primary, next to a real replica.

Not a test: it prints ratios against baselines measured in the same run (the machine is noisy,
absolute numbers are not comparable between runs) and says which goals were met. Python 3
standard library only; needs redis-server, redis-benchmark and a built flashback binary.

Normal mode, per repeat, each on a fresh primary on a free 127.0.0.1 port:
  baseline  no replica
  replica   one `redis-server --replicaof` replica
  agent     `flashback capture` (its ACK offset is its durable offset)
  aof       no replica, --appendonly yes --appendfsync no --aof-use-rdb-preamble no (for the
            bytes-per-write comparison; its throughput is shown for information)
The order is ABBA (baseline, replica, agent, aof, then the reverse), so that the replica and
agent runs are always adjacent in time and no mode always runs first.

--big mode: populates a primary with millions of keys (DEBUG POPULATE, RDB compression off so
the snapshot is hundreds of MB), then attaches a real replica, and then the agent, and compares
the time each needs to be online and the agent's peak RSS.

See docs/benchmarks.md for the figures and how to read them.
"""

import argparse
import atexit
import base64
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Goals (DESIGN / task brief).
GOAL_TPUT = 0.95  # primary throughput with the agent / with a real replica, at least
GOAL_CATCHUP = 1.0  # agent catch-up time / real replica's, at most
GOAL_RSS_MB = 64.0  # agent peak RSS, at most, whatever the dataset
GOAL_BYTES = 0.25  # agent segment bytes / AOF incr bytes for the same load, at most

# The AOF the agent's bytes are compared with: plain commands (no RDB preamble), no fsync cost,
# and no automatic rewrite, which would start a new, smaller incr file in mid-load (the first
# version of this script fell for it: 13 B/write instead of ~100).
AOF_ARGS = ["--appendonly", "yes", "--appendfsync", "no", "--aof-use-rdb-preamble", "no",
            "--auto-aof-rewrite-percentage", "0"]

# ---------------------------------------------------------------------------------------------
# Processes: every one we start is recorded and killed by pid on exit, whatever the exit path.

PROCS = []


def spawn(argv, log_path, env=None):
    log = open(log_path, "ab")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                         start_new_session=True)
    log.close()
    PROCS.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=30.0):
    """Signals one process we started and waits for it; SIGKILL if it does not go."""
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    if p in PROCS:
        PROCS.remove(p)
    return p.returncode


def cleanup():
    for p in list(PROCS):
        try:
            stop(p, signal.SIGKILL, 5)
        except OSError:
            pass


def on_signal(signum, _frame):
    # SystemExit runs atexit (cleanup) and the finally blocks.
    sys.exit(128 + signum)


# ---------------------------------------------------------------------------------------------
# A minimal RESP client: enough for INFO, WAIT, CONFIG and DEBUG POPULATE.


class Redis:
    def __init__(self, port, timeout=300.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def pipeline(self, cmds):
        out = []
        for args in cmds:
            out.append(b"*%d\r\n" % len(args))
            for a in args:
                out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return [self._reply() for _ in cmds]

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by redis-server")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(max(65536, n + 2 - len(self.buf)))
            if not chunk:
                raise ConnectionError("connection closed by redis-server")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError("redis error: " + rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError("unexpected reply %r" % line)

    def info(self, section):
        fields = {}
        for line in self.call("INFO", section).splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                fields[k] = v
        return fields


def slaves(info):
    """The primary's replica lines: [{'ip':…, 'port':…, 'state':…, 'offset':int, …}]."""
    out = []
    for k, v in info.items():
        if k.startswith("slave") and k[5:].isdigit():
            d = dict(kv.split("=", 1) for kv in v.split(","))
            d["offset"] = int(d.get("offset", "0"))
            out.append(d)
    return out


class AckWatch:
    """Samples the primary's replica line every 20 ms during the load: the longest time the
    replica's ACK offset stood still while the primary was ahead of it (the agent promises an
    fsync + ACK at least every 100 ms; a real replica ACKs once a second), and the largest
    distance in bytes between the two."""

    def __init__(self, port):
        self.conn = Redis(port)
        self.gap = 0.0
        self.lag = 0
        self.done = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        last_off, since = None, time.monotonic()
        while not self.done.is_set():
            info = self.conn.info("replication")
            now = time.monotonic()
            s = slaves(info)
            if s:
                master, ack = int(info["master_repl_offset"]), s[0]["offset"]
                self.lag = max(self.lag, master - ack)
                if ack != last_off or ack >= master:
                    last_off, since = ack, now
                self.gap = max(self.gap, now - since)
            time.sleep(0.02)

    def finish(self):
        self.done.set()
        self.t.join()
        self.conn.close()


def primary_cpu(conn):
    i = conn.info("cpu")
    return float(i["used_cpu_user"]) + float(i["used_cpu_sys"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, pred, timeout, interval=0.01):
    end = time.monotonic() + timeout
    while True:
        r = pred()
        if r:
            return r
        if time.monotonic() > end:
            raise TimeoutError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def proc_status(pid):
    """VmHWM / VmRSS in MB and CPU seconds (user + system) of a live process."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024.0
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    out["cpu_s"] = (int(fields[11]) + int(fields[12])) / tick
    return out


# ---------------------------------------------------------------------------------------------
# Servers, replicas, agent, load.


class Bench:
    def __init__(self, args, work):
        self.a = args
        self.work = work
        self.seq = 0

    def dir(self, name):
        self.seq += 1
        d = os.path.join(self.work, "%02d-%s" % (self.seq, name))
        os.makedirs(d)
        return d

    def redis(self, d, extra=()):
        port = free_port()
        argv = [self.a.redis_server, "--port", str(port), "--bind", "127.0.0.1",
                "--dir", d, "--save", "", "--appendonly", "no",
                # Diskless sync starts at once: the default 5 s delay would dominate the
                # time-to-online of both replica kinds.
                "--repl-diskless-sync-delay", "0",
                "--enable-debug-command", "local"] + list(extra)
        p = spawn(argv, os.path.join(d, "redis.log"))
        conn = wait_until("redis-server on port %d" % port, lambda: self._connect(port, p), 20)
        return p, port, conn

    @staticmethod
    def _connect(port, p):
        if p.poll() is not None:
            raise RuntimeError("redis-server exited with %s; see its log" % p.returncode)
        try:
            c = Redis(port)
            c.call("PING")
            return c
        except (OSError, RuntimeError):
            return None

    def replica(self, primary_port):
        d = self.dir("replica")
        p, port, conn = self.redis(d, ["--replicaof", "127.0.0.1", str(primary_port)])
        return p, conn

    def agent(self, primary_port):
        d = self.dir("agent")
        store = os.path.join(d, "store")
        env = dict(os.environ, FLASHBACK_LOG=os.environ.get("FLASHBACK_LOG", "info"))
        p = spawn([self.flashback, "capture", "--source", "redis://127.0.0.1:%d" % primary_port,
                   "--store", store, "--name", "bench"], os.path.join(d, "agent.log"), env)
        return p, store

    def wait_online(self, primary, proc, timeout):
        def online():
            if proc.poll() is not None:
                raise RuntimeError("the replica/agent exited with %s before it was online; "
                                   "see its log under %s" % (proc.returncode, self.work))
            return any(s["state"] == "online" for s in slaves(primary.info("replication")))
        wait_until("the replica to be online", online, timeout, 0.005)

    def load(self, port):
        a = self.a
        argv = [a.redis_benchmark, "-h", "127.0.0.1", "-p", str(port), "-P", str(a.pipeline),
                "-c", str(a.clients), "-n", str(a.requests), "-r", str(a.keyspace),
                "-d", str(a.datasize), "-t", a.tests, "--csv"]
        t0 = time.monotonic()
        r = subprocess.run(argv, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError("redis-benchmark failed (%d): %s" % (r.returncode, r.stderr.strip()))
        rps = {}
        for line in r.stdout.splitlines():
            cells = [c.strip('"') for c in line.split(",")]
            if len(cells) >= 2 and cells[0] != "test":
                rps[cells[0]] = float(cells[1])
        if not rps:
            raise RuntimeError("could not parse redis-benchmark output:\n" + r.stdout)
        return rps, wall

    def catch_up(self, primary, replica_conn, timeout=120.0):
        """After the load: seconds until the primary's replica line reports `offset=` at its
        master_repl_offset (for the agent that is its durable ACK), and, for a real replica,
        until the replica itself has applied that offset (no ACK cadence in the way)."""
        t0 = time.monotonic()
        target = int(primary.info("replication")["master_repl_offset"])
        acked = applied = None
        while time.monotonic() - t0 < timeout:
            now = time.monotonic() - t0
            if acked is None:
                s = slaves(primary.info("replication"))
                if s and s[0]["offset"] >= target:
                    acked = now
            if replica_conn is not None and applied is None:
                if int(replica_conn.info("replication").get("master_repl_offset", 0)) >= target:
                    applied = now
            if acked is not None and (replica_conn is None or applied is not None):
                break
            time.sleep(0.002)
        return target, acked, applied

    # -----------------------------------------------------------------------------------------

    def run_mode(self, mode):
        extra = []
        d = self.dir("primary-" + mode)
        if mode == "aof":
            extra = AOF_ARGS
        pp, port, primary = self.redis(d, extra)
        res = {"mode": mode}
        side = None
        rconn = None
        try:
            if mode == "replica":
                side, rconn = self.replica(port)
            elif mode == "agent":
                side, store = self.agent(port)
            if side is not None:
                self.wait_online(primary, side, 60)
                side_cpu0 = proc_status(side.pid)["cpu_s"]
            res["loadavg"] = float(open("/proc/loadavg").read().split()[0])
            cpu0 = primary_cpu(primary)
            watch = AckWatch(port) if side is not None else None
            try:
                res["rps"], res["wall_s"] = self.load(port)
            finally:
                if watch is not None:
                    watch.finish()
            if watch is not None:
                res["max_ack_gap_s"], res["max_ack_lag_mb"] = watch.gap, watch.lag / 2**20
            res["writes"] = self.a.requests * len(res["rps"])
            # CPU time per write is far less sensitive than req/s to what else the machine runs.
            res["primary_cpu_us"] = (primary_cpu(primary) - cpu0) / res["writes"] * 1e6
            if side is not None:
                target, acked, applied = self.catch_up(primary, rconn)
                res.update(target_offset=target, catchup_s=acked, applied_s=applied)
                st = proc_status(side.pid)
                res.update(peak_rss_mb=st["VmHWM"], rss_mb=st["VmRSS"],
                           cpu_us=(st["cpu_s"] - side_cpu0) / res["writes"] * 1e6)
                stats = primary.info("stats")
                res["full_syncs"] = int(stats.get("sync_full", 0))
            if mode == "agent":
                rc = stop(side, signal.SIGTERM, 60)
                res["agent_exit"] = rc
                res["segment_bytes"] = tree_bytes(store, "segments")
                res["base_bytes"] = tree_bytes(store, "base")
            if mode == "aof":
                res["aof_incr_bytes"] = wait_stable_size(os.path.join(d, "appendonlydir"))
        finally:
            if rconn is not None:
                rconn.close()
            if side is not None:
                stop(side)
            primary.close()
            stop(pp)
        if not self.a.keep:
            shutil.rmtree(d, ignore_errors=True)
        return res

    def run_random(self):
        """Bytes per write when values do not compress: redis-benchmark's values are all 'x',
        which zstd shrinks to almost nothing. One primary with the AOF on and the agent attached
        receives the same stream, so both files hold exactly the same writes."""
        a = self.a
        d = self.dir("primary-random")
        pp, port, primary = self.redis(d, AOF_ARGS)
        side = None
        try:
            side, store = self.agent(port)
            self.wait_online(primary, side, 60)
            rng = random.Random(42)
            n = a.random_writes
            # Paced in 20 ms batches when --random-rate is set: at a low write rate each 100 ms
            # fsync cuts a small block, and small blocks compress worse.
            per_batch = max(1, a.random_rate // 50) if a.random_rate else 1000
            t_start = time.monotonic()
            batch = []
            for i in range(n):
                key = b"key:%012d" % rng.randrange(a.keyspace)
                raw = os.urandom(a.datasize) if a.values == "random" else bytes(a.datasize)
                val = base64.b64encode(raw)[:a.datasize]
                kind = i % 4
                if kind == 0:
                    cmd = [b"SET", key, val]
                elif kind == 1:
                    cmd = [b"HSET", b"myhash", key, val]
                elif kind == 2:
                    cmd = [b"LPUSH", b"mylist", val]
                else:
                    cmd = [b"ZADD", b"myzset", b"%d" % rng.randrange(10**9), val]
                batch.append(cmd)
                if len(batch) == per_batch or i == n - 1:
                    primary.pipeline(batch)
                    batch = []
                    if a.random_rate:
                        ahead = t_start + (i + 1) / a.random_rate - time.monotonic()
                        if ahead > 0:
                            time.sleep(ahead)
            target, acked, _ = self.catch_up(primary, None)
            if acked is None:
                raise RuntimeError("the agent did not catch up after the random-value load")
            rc = stop(side, signal.SIGTERM, 60)
            res = {"writes": n, "agent_exit": rc, "segment_bytes": tree_bytes(store, "segments"),
                   "aof_incr_bytes": wait_stable_size(os.path.join(d, "appendonlydir"))}
        finally:
            if side is not None:
                stop(side)
            primary.close()
            stop(pp)
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)
        return res

    def run_big(self):
        a = self.a
        d = self.dir("primary-big")
        # rdbcompression off: DEBUG POPULATE's zero-padded values would otherwise shrink ~5x
        # under LZF, and the point is a snapshot of hundreds of MB on the wire and on disk.
        pp, port, primary = self.redis(d, ["--rdbcompression", "no"])
        res = {}
        try:
            t0 = time.monotonic()
            primary.call("DEBUG", "POPULATE", a.big_keys, "key", a.big_value)
            res["populate_s"] = time.monotonic() - t0
            res["keys"] = primary.call("DBSIZE")
            res["used_memory_mb"] = int(primary.info("memory")["used_memory"]) / 2**20
            order = ["replica", "agent"] if self.seq % 2 else ["agent", "replica"]
            for kind in order:
                # Start each sync from the same state: the previous one's files written back.
                os.sync()
                time.sleep(1)
                t0 = time.monotonic()
                if kind == "replica":
                    side, rconn = self.replica(port)
                    rconn.close()
                else:
                    side, store = self.agent(port)
                # Redis 7.0 shows a diskless replica `online` as soon as the transfer ends, before
                # a real replica has loaded it (or the agent has fsync'd it). So the snapshot
                # counts as done when the replica answers a WAIT for a write made after it: a
                # real replica answers the GETACK once loaded, the agent once durable.
                self.wait_online(primary, side, 600)
                res[kind + "_transfer_s"] = time.monotonic() - t0
                primary.call("SET", "bench:marker", "after-snapshot")
                acked = primary.call("WAIT", 1, 600000)
                if acked != 1:
                    raise RuntimeError("WAIT after the snapshot returned %r" % acked)
                res[kind + "_online_s"] = time.monotonic() - t0
                st = proc_status(side.pid)
                res[kind + "_peak_rss_mb"] = st["VmHWM"]
                res[kind + "_cpu_s"] = st["cpu_s"]
                if kind == "agent":
                    res["agent_exit"] = stop(side, signal.SIGTERM, 60)
                    res["base_bytes"] = tree_bytes(store, "base")
                    shutil.rmtree(os.path.dirname(store), ignore_errors=True)
                else:
                    stop(side)
                # Let the primary's fork child finish and the link go before the next one.
                wait_until("the replica to be gone",
                           lambda: int(primary.info("replication")["connected_slaves"]) == 0, 30)
        finally:
            primary.close()
            stop(pp)
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)
        return res


def tree_bytes(root, dirname):
    """Apparent bytes of the files under every directory called `dirname` (like `du -b`, but
    without the directories' own 4 KiB entries)."""
    total = 0
    for base, _dirs, files in os.walk(root):
        if dirname in base.split(os.sep):
            total += sum(os.path.getsize(os.path.join(base, f)) for f in files)
    return total


def wait_stable_size(aofdir):
    """Size of Redis 7's `appendonlydir/*.incr.aof` once it stops growing (it is written, not
    fsync'd, in the event loop; with appendfsync no nothing is left in Redis's buffer for long)."""
    incr = [f for f in os.listdir(aofdir) if f.endswith(".incr.aof")]
    if len(incr) != 1:
        raise RuntimeError("%s: expected one .incr.aof, found %r (an AOF rewrite ran?)" % (aofdir, incr))

    def size():
        return os.path.getsize(os.path.join(aofdir, incr[0]))
    last = -1
    while True:
        s = size()
        if s == last:
            return s
        last = s
        time.sleep(0.3)


# ---------------------------------------------------------------------------------------------
# Reporting.


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def total_rps(res):
    """Overall throughput of one load: all requests over the summed per-test times."""
    n = res["writes"] / len(res["rps"])
    return res["writes"] / sum(n / r for r in res["rps"].values())


def fmt(x, spec="{:.3f}"):
    return "n/a" if x is None else spec.format(x)


def verdict(value, goal, at_least):
    if value is None:
        return "NOT MEASURED"
    ok = value >= goal if at_least else value <= goal
    return "met" if ok else "NOT met"


def report(runs, args, rand):
    by = {m: [r for r in runs if r["mode"] == m] for m in ("baseline", "replica", "agent", "aof")}
    reps = len(by["agent"])
    tests = list(by["baseline"][0]["rps"].keys())
    print()
    print("Primary throughput, requests/s (median of %d)" % reps)
    print("  %-8s %12s %12s %12s %12s %9s %9s" %
          ("test", "no replica", "replica", "agent", "aof", "agent/rep", "rep/base"))
    for t in tests + ["ALL"]:
        def col(m):
            return med([total_rps(r) if t == "ALL" else r["rps"].get(t) for r in by[m]])
        ratio = med([(total_rps(a) / total_rps(b)) if t == "ALL" else a["rps"][t] / b["rps"][t]
                     for a, b in zip(by["agent"], by["replica"])])
        base_ratio = med([(total_rps(a) / total_rps(b)) if t == "ALL" else a["rps"][t] / b["rps"][t]
                          for a, b in zip(by["replica"], by["baseline"])])
        print("  %-8s %12.0f %12.0f %12.0f %12.0f %9.3f %9.3f" %
              (t, col("baseline"), col("replica"), col("agent"), col("aof"), ratio, base_ratio))

    print()
    print("Per repeat: req/s (ALL), load average before the run; replica/agent: catch-up, its own "
          "CPU us/write")
    for i, (rb, rr, ra, rf) in enumerate(zip(by["baseline"], by["replica"], by["agent"], by["aof"])):
        print("  #%d  base %7.0f (%.1f)  replica %7.0f (%.1f; ack %s s, applied %s s, %.2f us)  "
              "agent %7.0f (%.1f; ack %s s, %.2f us, rss %.1f MB, exit %s)  aof %7.0f (%.1f)" %
              (i + 1, total_rps(rb), rb["loadavg"], total_rps(rr), rr["loadavg"],
               fmt(rr["catchup_s"]), fmt(rr["applied_s"]), rr["cpu_us"], total_rps(ra),
               ra["loadavg"], fmt(ra["catchup_s"]), ra["cpu_us"], ra["peak_rss_mb"],
               ra["agent_exit"], total_rps(rf), rf["loadavg"]))
        if rr["full_syncs"] > 1 or ra["full_syncs"] > 1:
            print("      WARNING: a replica needed a second full sync during the load "
                  "(output buffer limit?)")

    tput = med([total_rps(a) / total_rps(r) for a, r in zip(by["agent"], by["replica"])])
    worst_test = min(tests, key=lambda t: med([a["rps"][t] / r["rps"][t]
                                               for a, r in zip(by["agent"], by["replica"])]))
    worst = med([a["rps"][worst_test] / r["rps"][worst_test]
                 for a, r in zip(by["agent"], by["replica"])])
    c_agent = med([r["catchup_s"] for r in by["agent"]])
    c_rep = med([r["catchup_s"] for r in by["replica"]])
    c_app = med([r["applied_s"] for r in by["replica"]])
    pairs = [(a["catchup_s"], r["catchup_s"]) for a, r in zip(by["agent"], by["replica"])
             if a["catchup_s"] is not None and r["catchup_s"]]
    c_ratio = med([a / r for a, r in pairs])
    rss = max(r["peak_rss_mb"] for r in by["agent"])
    seg = med([r["segment_bytes"] / r["writes"] for r in by["agent"]])
    aof = med([r["aof_incr_bytes"] / r["writes"] for r in by["aof"]])
    b_ratio = med([a["segment_bytes"] / f["aof_incr_bytes"] for a, f in zip(by["agent"], by["aof"])])

    cpu = {m: med([r["primary_cpu_us"] for r in by[m]]) for m in by}
    print()
    print("Primary CPU per write (median, us): no replica %.2f, replica %.2f, agent %.2f, aof %.2f" %
          (cpu["baseline"], cpu["replica"], cpu["agent"], cpu["aof"]))
    side_rep = med([r["cpu_us"] for r in by["replica"]])
    side_agent = med([r["cpu_us"] for r in by["agent"]])
    print("Replica/agent process CPU per write (median, us): real replica %.2f, agent %.2f" %
          (side_rep, side_agent))
    print("During the load (median of per-run maxima): longest ACK stall replica %.2f s, agent %.2f s; "
          "largest ACK lag replica %.1f MB, agent %.1f MB" %
          (med([r["max_ack_gap_s"] for r in by["replica"]]), med([r["max_ack_gap_s"] for r in by["agent"]]),
           med([r["max_ack_lag_mb"] for r in by["replica"]]), med([r["max_ack_lag_mb"] for r in by["agent"]])))
    spread = sorted(total_rps(a) / total_rps(r) for a, r in zip(by["agent"], by["replica"]))
    print("Throughput ratio agent/replica per repeat: %s" % ", ".join("%.3f" % x for x in spread))
    print("Catch-up after the load (median): real replica ACK %s s (applied %s s), agent durable "
          "ACK %s s" % (fmt(c_rep), fmt(c_app), fmt(c_agent)))
    print("Stored bytes per write (median): agent segments %.2f B, AOF incr %.2f B" % (seg, aof))
    r_ratio = None
    if rand:
        r_ratio = rand["segment_bytes"] / rand["aof_incr_bytes"]
        print("Values of the extra run (%d writes at %s, %d-byte %s values): agent "
              "%.2f B/write, AOF %.2f B/write, ratio %.3f (agent exit %s)" %
              (rand["writes"], "%d/s" % args.random_rate if args.random_rate else "full speed",
               args.datasize, args.values, rand["segment_bytes"] / rand["writes"],
               rand["aof_incr_bytes"] / rand["writes"], r_ratio, rand["agent_exit"]))
    print()
    rows = [
        ("throughput agent/real replica (ALL)", fmt(tput), ">= %.2f" % GOAL_TPUT,
         verdict(tput, GOAL_TPUT, True)),
        ("  worst single test (%s)" % worst_test, fmt(worst), ">= %.2f" % GOAL_TPUT,
         verdict(worst, GOAL_TPUT, True)),
        ("catch-up agent/real replica", fmt(c_ratio), "<= %.2f" % GOAL_CATCHUP,
         verdict(c_ratio, GOAL_CATCHUP, False)),
        ("agent peak RSS, MB (max of repeats)", fmt(rss, "{:.1f}"), "<= %.0f" % GOAL_RSS_MB,
         verdict(rss, GOAL_RSS_MB, False)),
        ("stored bytes agent/AOF", fmt(b_ratio), "<= %.2f" % GOAL_BYTES,
         verdict(b_ratio, GOAL_BYTES, False)),
    ]
    if rand:
        rows.append(("  %s values (extra run)" % args.values, fmt(r_ratio), "<= %.2f" % GOAL_BYTES,
                     verdict(r_ratio, GOAL_BYTES, False)))
    rows.insert(2, ("  (informative) primary CPU/write agent/replica",
                    fmt(cpu["agent"] / cpu["replica"]), "-", "-"))
    rows.insert(3, ("  (informative) own CPU/write agent/replica",
                    fmt(side_agent / side_rep), "-", "-"))
    summary_table(rows)
    return {"primary_cpu_us": cpu, "replica_cpu_us": side_rep, "agent_cpu_us": side_agent,
            "throughput_ratios": spread,
            "throughput_ratio": tput, "worst_test": worst_test, "worst_test_ratio": worst,
            "catchup_agent_s": c_agent, "catchup_replica_ack_s": c_rep,
            "catchup_replica_applied_s": c_app, "catchup_ratio": c_ratio,
            "agent_peak_rss_mb": rss, "segment_bytes_per_write": seg,
            "aof_bytes_per_write": aof, "bytes_ratio": b_ratio,
            "random_bytes_ratio": r_ratio}


def summary_table(rows):
    w = max(len(r[0]) for r in rows)
    print("SUMMARY")
    print("  %-*s %10s %10s  %s" % (w, "metric", "measured", "goal", "verdict"))
    for name, val, goal, ok in rows:
        print("  %-*s %10s %10s  %s" % (w, name, val, goal, ok))


def report_big(runs, args):
    print()
    print("Big snapshot: %d keys of %d-byte values, RDB compression off" %
          (args.big_keys, args.big_value))
    for i, r in enumerate(runs):
        print("  #%d  populate %.1f s, used_memory %.0f MB, base RDB %.0f MB; transfer done / "
              "snapshot usable: replica %.2f / %.2f s, agent %.2f / %.2f s; peak RSS: replica "
              "%.0f MB, agent %.1f MB; agent CPU %.1f s; agent exit %s" %
              (i + 1, r["populate_s"], r["used_memory_mb"], r["base_bytes"] / 2**20,
               r["replica_transfer_s"], r["replica_online_s"], r["agent_transfer_s"],
               r["agent_online_s"], r["replica_peak_rss_mb"], r["agent_peak_rss_mb"],
               r["agent_cpu_s"], r["agent_exit"]))
    ratio = med([r["agent_online_s"] / r["replica_online_s"] for r in runs])
    t_ratio = med([r["agent_transfer_s"] / r["replica_transfer_s"] for r in runs])
    rss = max(r["agent_peak_rss_mb"] for r in runs)
    print()
    summary_table([
        ("snapshot time (to WAIT) agent/real replica", fmt(ratio), "<= %.2f" % GOAL_CATCHUP,
         verdict(ratio, GOAL_CATCHUP, False)),
        ("  (informative) transfer only agent/replica", fmt(t_ratio), "-", "-"),
        ("agent peak RSS, MB (max of repeats)", fmt(rss, "{:.1f}"), "<= %.0f" % GOAL_RSS_MB,
         verdict(rss, GOAL_RSS_MB, False)),
    ])
    return {"online_ratio": ratio, "transfer_ratio": t_ratio, "agent_peak_rss_mb": rss,
            "agent_online_s": med([r["agent_online_s"] for r in runs]),
            "replica_online_s": med([r["replica_online_s"] for r in runs]),
            "base_mb": med([r["base_bytes"] / 2**20 for r in runs])}


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(
        description="Benchmark the flashback capture agent against a real replica and the AOF.",
        epilog="Example: bench/capture.sh --repeat 3        (about 3 minutes on 2 cores)\n"
               "         bench/capture.sh --big --repeat 1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each mode; medians are reported (default 3)")
    ap.add_argument("-n", dest="requests", type=int, default=500000, help="requests per test (default 500000)")
    ap.add_argument("-P", dest="pipeline", type=int, default=16, help="pipelined requests (default 16)")
    ap.add_argument("-c", dest="clients", type=int, default=50, help="parallel clients (default 50)")
    ap.add_argument("-d", dest="datasize", type=int, default=64, help="value size in bytes (default 64)")
    ap.add_argument("-r", dest="keyspace", type=int, default=1000000, help="random key space (default 1000000)")
    ap.add_argument("-t", dest="tests", default="set,lpush,zadd,hset", help="redis-benchmark tests (default set,lpush,zadd,hset)")
    ap.add_argument("--random-writes", type=int, default=200000,
                    help="writes of the extra bytes-per-write run with incompressible values, sent by "
                         "this script (0: skip; default 200000)")
    ap.add_argument("--random-rate", type=int, default=0,
                    help="writes per second for that run (default 0: as fast as possible)")
    ap.add_argument("--values", choices=["random", "repeated"], default="random",
                    help="values of that run: base64 of random bytes (default), or 'AAAA…' (compresses "
                         "like redis-benchmark's 'xxxx…')")
    ap.add_argument("--bytes-only", action="store_true",
                    help="run only the bytes-per-write run (with --random-writes, --random-rate, --values)")
    ap.add_argument("--big", action="store_true", help="snapshot mode: a populated primary instead of the write load")
    ap.add_argument("--big-keys", type=int, default=3000000, help="keys for --big (default 3000000)")
    ap.add_argument("--big-value", type=int, default=100, help="value bytes for --big (default 100)")
    ap.add_argument("--flashback", default=os.path.join(REPO, "target", "release", "flashback"),
                    help="the flashback binary (default target/release/flashback; build it with cargo build --release)")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--redis-benchmark", default=shutil.which("redis-benchmark") or "redis-benchmark")
    ap.add_argument("--workdir", help="where servers and the store live (default: a new directory under $TMPDIR); "
                    "use a real disk, not tmpfs, or fsync costs nothing")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, stores, AOFs)")
    ap.add_argument("--json", help="also write the raw results and the summary to this file")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    for name, path in (("--flashback", args.flashback), ("--redis-server", args.redis_server),
                       ("--redis-benchmark", args.redis_benchmark)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            ap.error("%s %s: not an executable file%s" % (name, path,
                     "; run cargo build --release first" if name == "--flashback" else
                     "; install redis-server / redis-tools"))

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    atexit.register(cleanup)
    work = args.workdir or tempfile.mkdtemp(prefix="flashback-bench-")
    os.makedirs(work, exist_ok=True)
    if not args.keep:
        atexit.register(shutil.rmtree, work, True)
    b = Bench(args, work)
    # A private copy: someone rebuilding target/ mid-run must not swap the binary under us.
    b.flashback = os.path.join(work, "flashback")
    shutil.copy2(args.flashback, b.flashback)

    ver = subprocess.run([args.redis_server, "--version"], capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    print("flashback capture benchmark: %s" % " ".join(sys.argv[1:]))
    print("  nproc %d, %s" % (os.cpu_count(), ver))
    print("  flashback binary %s (built %s); this checkout at git %s; work dir %s" % (
        args.flashback, time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(args.flashback))),
        head or "?", work))
    print("  load average at start: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    t_start = time.monotonic()

    out = {"args": vars(args), "redis": ver, "git": head, "nproc": os.cpu_count(),
           "loadavg_start": open("/proc/loadavg").read().split()[:3]}
    if args.big:
        runs = []
        for i in range(args.repeat):
            r = b.run_big()
            runs.append(r)
            print("  big #%d: replica done %.2f s, agent done %.2f s, agent peak RSS %.1f MB" %
                  (i + 1, r["replica_online_s"], r["agent_online_s"], r["agent_peak_rss_mb"]))
        out["runs"] = runs
        out["summary"] = report_big(runs, args)
    elif args.bytes_only:
        if args.random_writes < 1:
            ap.error("--bytes-only needs --random-writes of at least 1")
        rand = b.run_random()
        ratio = rand["segment_bytes"] / rand["aof_incr_bytes"]
        print()
        print("Bytes per write, %d writes at %s, %s %d-byte values: agent %.2f B, AOF %.2f B" %
              (rand["writes"], "%d/s" % args.random_rate if args.random_rate else "full speed",
               args.values, args.datasize, rand["segment_bytes"] / rand["writes"],
               rand["aof_incr_bytes"] / rand["writes"]))
        summary_table([("stored bytes agent/AOF", fmt(ratio), "<= %.2f" % GOAL_BYTES,
                        verdict(ratio, GOAL_BYTES, False))])
        out["random"] = rand
        out["summary"] = {"bytes_ratio": ratio}
    else:
        modes = ["baseline", "replica", "agent", "aof"]
        runs = []
        for i in range(args.repeat):
            # ABBA: the replica and agent runs are always next to each other in time, and
            # neither mode always runs first.
            order = modes if i % 2 == 0 else modes[::-1]
            for m in order:
                r = b.run_mode(m)
                runs.append(r)
                extra = ""
                if "catchup_s" in r:
                    extra = ", catch-up %s s, peak RSS %.1f MB" % (fmt(r["catchup_s"]), r["peak_rss_mb"])
                print("  repeat %d %-8s %9.0f req/s%s" % (i + 1, m, total_rps(r), extra), flush=True)
        rand = None
        if args.random_writes > 0:
            rand = b.run_random()
            print("  extra run (%s values): agent %d B, AOF %d B" % (args.values,
                  rand["segment_bytes"], rand["aof_incr_bytes"]), flush=True)
        out["runs"] = runs
        out["random"] = rand
        out["summary"] = report(runs, args, rand)
    out["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    print()
    print("load average at end: %s; wall time %.0f s" %
          (" ".join(out["loadavg_end"]), time.monotonic() - t_start))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
