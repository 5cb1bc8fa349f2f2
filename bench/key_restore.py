#!/usr/bin/env python3
"""Key-level restore against a full restore, in the same run (docs/benchmarks.md).

A primary gets KEYS keys of VALUE bytes (DEBUG POPULATE: ~1 GB at the defaults) before the
agent starts, so they are the base; then WRITES SETs (redis-benchmark, random keys) and a few
multi-key commands go into the log. Then `flashback restore --latest --rdb` of everything, and
of 10 keys (`--keys key:1 … key:10`), each timed, with the peak RSS of flashback plus its
private redis-server (VmHWM of each, sampled from /proc while it runs; summed). Prints both and
the ratios. Python 3 standard library only; needs redis-server, redis-cli, redis-benchmark.

Usage: bench/key_restore.py [--keys 1000000] [--value 1000] [--writes 300000]
"""
import argparse, os, shutil, socket, subprocess, sys, tempfile, time

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None

def children(pid):
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out

def measured(cmd):
    """Runs cmd; returns (seconds, peak MB of it + its descendants (sum of each one's VmHWM), stdout)."""
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = {}
    while p.poll() is None:
        todo = [p.pid]
        while todo:
            pid = todo.pop()
            h = hwm_kb(pid)
            if h is not None:
                peaks[pid] = max(peaks.get(pid, 0), h)
            todo += children(pid)
        time.sleep(0.05)
    out, err = p.communicate()
    secs = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out}\n{err}")
    return secs, sum(peaks.values()) / 1024, out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value", type=int, default=1000)
    ap.add_argument("--writes", type=int, default=300_000)
    a = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    fb = os.environ.get("FLASHBACK_BIN", os.path.join(repo, "target/release/flashback"))
    work = tempfile.mkdtemp(prefix="fb-keys-")
    port = free_port()
    procs = []
    try:
        procs.append(subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--enable-debug-command", "local", "--dir", work, "--repl-backlog-size", "256mb",
            "--logfile", f"{work}/redis.log"]))
        cli = lambda *args: subprocess.run(["redis-cli", "-p", str(port), *args],
                                           capture_output=True, text=True, check=True).stdout
        while True:
            try:
                if "PONG" in cli("ping"): break
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.1)
        r = cli("debug", "populate", str(a.keys), "key", str(a.value))
        if "OK" not in r:
            sys.exit(f"DEBUG POPULATE: {r}")
        used = int([l for l in cli("info", "memory").splitlines() if l.startswith("used_memory:")][0].split(":")[1])
        agent = subprocess.Popen([fb, "capture", "--source", f"redis://127.0.0.1:{port}",
                                  "--store", f"{work}/store", "--name", "bench"],
                                 stderr=open(f"{work}/agent.log", "w"))
        procs.append(agent)
        while "state=online" not in cli("info", "replication"):
            time.sleep(0.2)
        subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set", "-n", str(a.writes),
                        "-d", "100", "-r", str(a.keys), "-P", "16", "-q"], check=True,
                       stdout=subprocess.DEVNULL)
        # History crossing the selection: the selected keys take values from unselected ones.
        cli("rename", "key:11", "key:1")
        cli("sadd", "set:a", "x", "y")
        cli("sadd", "set:b", "y", "z")
        cli("sunionstore", "key:2", "set:a", "set:b")
        cli("copy", "key:14", "key:3", "replace")
        off = [l for l in cli("info", "replication").splitlines() if l.startswith("master_repl_offset:")][0].split(":")[1]
        while f"offset={off}," not in cli("info", "replication"):
            time.sleep(0.2)
        agent.terminate(); agent.wait()
        base = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(f"{work}/store") for f in fs)
        restore = [fb, "restore", "--store", f"{work}/store", "--latest", "--progress", "none", "--rdb"]
        full_s, full_mb, _ = measured(restore + [f"{work}/full.rdb"])
        keys = [f"key:{i}" for i in range(1, 11)]
        key_s, key_mb, out = measured(restore + [f"{work}/keys.rdb", "--keys", *keys])
        line = next((l for l in out.splitlines() if l.startswith("key-level:")), "(no key-level line!)")
        print(f"dataset: {a.keys:,} keys of {a.value} B (used_memory {used/1e9:.2f} GB), {a.writes:,} SETs after the base; store {base/1e6:.0f} MB")
        print(f"full restore:      {full_s:7.2f} s, peak RSS {full_mb:8.0f} MB (flashback + its redis-server)")
        print(f"10-key restore:    {key_s:7.2f} s, peak RSS {key_mb:8.0f} MB")
        print(f"  {line}")
        print(f"ratios: memory {100*key_mb/full_mb:.1f} % of the full restore's, {full_s/key_s:.1f}x faster")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill(); p.wait()
        shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
