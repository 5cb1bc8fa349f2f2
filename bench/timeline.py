#!/usr/bin/env python3
"""Timeline benchmark: `flashback timeline` over a long capture from the segment summaries,
against the same timeline with the summaries moved away (every segment read and summarised:
the full log scan a store without summaries costs).

Not a test: it prints the ratio against the baseline measured in the same run, and checks that
both runs report the same events and buckets. Python 3 standard library only; needs
redis-server, redis-benchmark and a built flashback binary.

The capture: a fresh primary on a free 127.0.0.1 port, `flashback capture --segment-age`
short so the history has many segments, a redis-benchmark load of SET/HSET/LPUSH/DEL with a
FLUSHDB every few seconds, then SIGTERM. Each timeline run is repeated and the median taken.

See docs/benchmarks.md for the figures.
"""

import argparse
import json
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True).stdout


def summaries(store):
    out = []
    for root, _, files in os.walk(store):
        out += [os.path.join(root, f) for f in files if f.endswith(".sum")]
    return sorted(out)


def run_timeline(fb, store, repeat):
    times, doc = [], None
    for _ in range(repeat):
        t = time.monotonic()
        p = subprocess.run([fb, "timeline", "--store", store, "--json"], capture_output=True, text=True)
        times.append(time.monotonic() - t)
        if p.returncode != 0:
            sys.exit(f"flashback timeline failed:\n{p.stderr}")
        doc = json.loads(p.stdout)
    return statistics.median(times), doc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flashback", default=os.path.join(REPO, "target", "release", "flashback"))
    ap.add_argument("--seconds", type=float, default=60, help="how long the load runs")
    ap.add_argument("--segment-age", default="250ms")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the store directory")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="fb-timeline-bench-")
    store = os.path.join(work, "store")
    port = free_port()
    srv = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--repl-diskless-sync-delay", "0", "--dir", work],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agent = None
    try:
        time.sleep(0.5)
        agent = subprocess.Popen([a.flashback, "capture", "--source", f"redis://127.0.0.1:{port}",
                                  "--store", store, "--segment-age", a.segment_age],
                                 stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "agent.log"), "w"))
        time.sleep(2)
        end = time.monotonic() + a.seconds
        flushes = 0
        while time.monotonic() < end:
            subprocess.run(["redis-benchmark", "-p", str(port), "-q", "-P", "16", "-c", "8", "-n", "200000",
                            "-r", "100000", "-d", "32", "-t", "set,hset,lpush"],
                           stdout=subprocess.DEVNULL, check=True)
            cli(port, "DEL", *[f"key:{i:012d}" for i in range(2000)])
            cli(port, "FLUSHDB")
            flushes += 1
        time.sleep(1)
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
        agent = None

        n = len(summaries(store))
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(store) for f in fs if f.endswith(".seg"))
        sum_bytes = sum(os.path.getsize(s) for s in summaries(store))
        fast, doc = run_timeline(a.flashback, store, a.repeat)
        aside = os.path.join(work, "aside")
        os.makedirs(aside)
        for i, s in enumerate(summaries(store)):
            shutil.move(s, os.path.join(aside, f"{i}.sum"))
        slow, doc2 = run_timeline(a.flashback, store, a.repeat)
        same = all(doc[k] == doc2[k] for k in ("events", "buckets", "totals"))
        print(f"capture: {a.seconds:.0f} s of load, {flushes} FLUSHDBs, {n} segments ({size / 1e6:.1f} MB), "
              f"{sum_bytes / 1e3:.0f} kB of summaries ({sum_bytes / max(size, 1) * 100:.2f} % of the log)")
        print(f"timeline from summaries:      {fast * 1000:8.0f} ms (median of {a.repeat}; read {doc['segments']})")
        print(f"timeline reading every segment: {slow * 1000:6.0f} ms (median of {a.repeat}; read {doc2['segments']})")
        print(f"ratio (summaries / full scan): {fast / slow:.3f}  ({slow / fast:.1f}x faster)")
        print(f"same events, buckets and totals: {'yes' if same else 'NO'}  ({len(doc['events'])} events)")
        if not same:
            sys.exit(1)
    finally:
        if agent:
            agent.kill()
        srv.kill()
        if a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
