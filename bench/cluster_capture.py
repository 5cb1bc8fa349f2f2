#!/usr/bin/env python3
"""Cluster capture benchmark: what `flashback capture --cluster` costs a Redis Cluster's
primaries, next to one real replica per shard (issue 11 item 6).

Not a test: it prints ratios against a baseline measured in the same run (the machine is noisy,
absolute numbers are not comparable between runs) and says which goals were met. Python 3
standard library only; needs redis-server, redis-cli, redis-benchmark (Debian's redis-tools)
and a built flashback binary.

Per repeat, each on a fresh cluster of SHARDS primaries on free 127.0.0.1 ports:
  replicas  SHARDS primaries + one real replica each (`redis-cli --cluster create
            --cluster-replicas 1`)
  agent     SHARDS primaries, no replicas, and one `flashback capture --cluster` (it links to
            every primary: there is no replica to prefer)
The order is ABBA so neither mode always runs first. The load is `redis-benchmark --cluster`
(SET/INCR/LPUSH/HSET, pipelined) against the cluster. Measured: the load's total requests per
second (the primaries' throughput), and the CPU seconds (utime+stime from /proc) the replicas or
the agent spent from the load's start until every link had caught up with its primary, divided by
the writes: CPU per write.

Goals: primaries' throughput with the agent >= 0.95 x with replicas; agent CPU per write
<= 0.5 x the replicas'.
"""

import argparse
import atexit
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOAL_TPUT = 0.95
GOAL_CPU = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROCS = []


def spawn(argv, log_path):
    log = open(log_path, "ab")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    PROCS.append(p)
    return p


def stop(p, timeout=30.0):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cleanup():
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()


atexit.register(cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def free_port():
    # Cluster nodes also take port+10000 for the bus: check both are free.
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def cli(port, *args, timeout=30):
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                         text=True, timeout=timeout)
    return out.stdout


def wait_until(what, pred, timeout, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout} s waiting for {what}")


def info(port, section):
    d = {}
    for line in cli(port, "INFO", section).splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            d[k.strip()] = v.strip()
    return d


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime, stime are fields 14 and 15 of stat (1-based), 12 and 13 after the ")".
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start_cluster(work, shards, replicas, server):
    ports = [free_port() for _ in range(shards * (1 + replicas))]
    procs = {}
    for port in ports:
        d = os.path.join(work, f"node-{port}")
        os.makedirs(d)
        procs[port] = spawn([server, "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                             "--save", "", "--appendonly", "no",
                             "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"],
                            os.path.join(d, "log"))
    for port in ports:
        wait_until(f"node {port}", lambda p=port: cli(p, "PING").strip() == "PONG", 20)
    subprocess.run(["redis-cli", "--cluster", "create",
                    *[f"127.0.0.1:{p}" for p in ports],
                    "--cluster-replicas", str(replicas), "--cluster-yes"],
                   check=True, capture_output=True, timeout=60)
    wait_until("cluster_state:ok on every node",
               lambda: all(info(p, "cluster") and "cluster_state:ok" in cli(p, "CLUSTER", "INFO")
                           for p in ports), 60)
    primaries = [p for p in ports if info(p, "replication").get("role") == "master"]
    return ports, primaries, procs


def links_caught_up(primaries, want_links):
    for p in primaries:
        r = info(p, "replication")
        off = int(r.get("master_repl_offset", "0"))
        slaves = [v for k, v in r.items() if k.startswith("slave") and k[5:].isdigit()]
        ok = [s for s in slaves if "state=online" in s and f"offset={off}," in s + ","]
        if len(ok) < want_links:
            return False
    return True


def run_one(mode, args, work):
    d = tempfile.mkdtemp(dir=work, prefix=f"{mode}-")
    replicas = 1 if mode == "replicas" else 0
    ports, primaries, procs = start_cluster(d, args.shards, replicas, args.redis_server)
    watched = []
    if mode == "agent":
        agent = spawn([args.flashback, "capture", "--cluster",
                       "--source", f"redis://127.0.0.1:{primaries[0]}",
                       "--store", os.path.join(d, "store"),
                       "--spool", os.path.join(d, "spool")],
                      os.path.join(d, "agent.log"))
        watched = [agent.pid]
    else:
        watched = [procs[p].pid for p in ports if p not in primaries]
    wait_until(f"{mode} links online", lambda: links_caught_up(primaries, 1), 120)
    cpu0 = sum(cpu_seconds(pid) for pid in watched)
    t0 = time.time()
    out = subprocess.run(["redis-benchmark", "--cluster", "-h", "127.0.0.1",
                          "-p", str(primaries[0]), "-t", "set,incr,lpush,hset",
                          "-n", str(args.requests), "-c", str(args.clients),
                          "-P", str(args.pipeline), "-d", str(args.value_size),
                          "-r", "100000", "--csv", "-q"],
                         capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        raise SystemExit(f"redis-benchmark failed: {out.stderr.strip()}")
    rps = 0.0
    writes = 0
    for line in out.stdout.splitlines():
        cols = [c.strip('"') for c in line.split(",")]
        if len(cols) >= 2 and cols[0] != "test":
            try:
                rps += float(cols[1])
                writes += args.requests
            except ValueError:
                pass
    # The load's rps per test is what the primaries sustained; summed over tests weighs each
    # equally (same request count each).
    wait_until(f"{mode} links caught up", lambda: links_caught_up(primaries, 1), 300)
    cpu = sum(cpu_seconds(pid) for pid in watched) - cpu0
    elapsed = time.time() - t0
    if mode == "agent":
        stop(agent)
        if agent.returncode not in (0, None):
            raise SystemExit(f"the agent exited {agent.returncode}: see {d}/agent.log")
    for p in procs.values():
        stop(p)
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)
    return {"mode": mode, "rps": rps, "writes": writes, "cpu_s": cpu,
            "cpu_us_per_write": cpu / max(writes, 1) * 1e6, "elapsed_s": elapsed}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flashback", default=os.path.join(REPO, "target/release/flashback"))
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--requests", type=int, default=300000, help="per test (4 tests)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--pipeline", type=int, default=16)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2, help="ABBA pairs")
    ap.add_argument("--keep", action="store_true", help="keep the work directories")
    args = ap.parse_args()
    for tool in ("redis-cli", "redis-benchmark"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install redis-tools")
    if not os.access(args.flashback, os.X_OK):
        raise SystemExit(f"{args.flashback}: not built; run cargo build --release")
    work = tempfile.mkdtemp(prefix="fb-cluster-bench-")
    runs = []
    for i in range(args.repeats):
        order = ["replicas", "agent"] if i % 2 == 0 else ["agent", "replicas"]
        for mode in order + order[::-1]:
            r = run_one(mode, args, work)
            runs.append(r)
            print(f"{r['mode']:9} rps {r['rps']:10.0f}  cpu {r['cpu_s']:6.2f} s  "
                  f"{r['cpu_us_per_write']:6.2f} us/write  ({r['elapsed_s']:.1f} s)", flush=True)
    med = lambda mode, k: statistics.median(r[k] for r in runs if r["mode"] == mode)
    tput = med("agent", "rps") / med("replicas", "rps")
    cpu = med("agent", "cpu_us_per_write") / med("replicas", "cpu_us_per_write")
    print(f"\n{args.shards} shards, {args.requests} requests x 4 tests, -P {args.pipeline} "
          f"-c {args.clients}, {len(runs) // 2} runs per mode (medians)")
    print(f"primaries' throughput, agent / replicas: {tput:.3f}  "
          f"(goal >= {GOAL_TPUT}: {'met' if tput >= GOAL_TPUT else 'NOT met'})")
    print(f"CPU per write, agent / replicas:        {cpu:.3f}  "
          f"(goal <= {GOAL_CPU}: {'met' if cpu <= GOAL_CPU else 'NOT met'})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
