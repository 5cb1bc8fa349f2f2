#!/usr/bin/env python3
"""Restore time at the end of a long history, with compaction against without.

Not a test: it prints ratios between measurements of the same run (the machine is noisy) and
says which goals were met. Python 3 standard library only (it reuses bench/capture.py's helpers);
needs redis-server and a built flashback binary.

One primary (redis-server on a free 127.0.0.1 port) receives a steady write load from this
script: SET of random keys from a bounded key space (so the dataset, and with it every base,
stays the same size however long the history) with incompressible values, at a fixed rate.
Two agents capture it at once into two stores (`--segment-mib 1`):

  plain      --base-every 0s      no compaction: a restore replays the whole history
  compacted  --base-every <K>s    the agent makes a new base off the primary every K s
             (or, with --compaction command, this script runs `flashback compact --force`
             every K s of history; that is the default for a binary without --base-every)

When the history reaches L, 2L, 4L, … seconds of writes the load pauses, both agents' durable
ACKs reach the primary's offset, and `flashback restore --latest --rdb` runs on each store,
alternating which goes first, --repeat times; the median wall time is reported, with the base it
started from and the records it replayed (from restore's own report). Goal: with compaction the
restore time stays roughly flat (bounded by the base interval); without, it grows with history.

See docs/benchmarks.md for the figures and how to read them.
"""

import argparse
import atexit
import base64
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import capture as cb  # noqa: E402  (the shared process/RESP helpers of the capture benchmark)

REPO = cb.REPO

# Goals. "Roughly flat": from L to 4L of history the compacted restore may grow by half (the
# replayed log is anywhere between 0 and about two base intervals, whatever the history).
GOAL_FLAT = 1.5  # compacted restore time at the longest history / at the shortest, at most

APPLIED = re.compile(r"applied: base (\d+) bytes .*?\+ (\d+) records \((\d+) bytes\)")


class Writer:
    """SETs at a fixed rate in 10 ms pipelined batches; pausable. `history()` counts only the
    time spent writing, so pauses for measurements do not count as history."""

    def __init__(self, port, rate, keys, value_bytes):
        self.conn = cb.Redis(port)
        self.rate, self.keys = rate, keys
        # base64 of random bytes: zstd cannot shrink the values, so segments roll at
        # --segment-mib after a realistic number of writes (redis-benchmark's 'xxx' values
        # would compress ~20x and make the log look much smaller than a real one).
        self.raw = max(1, value_bytes * 3 // 4)
        self.writes = 0
        self.written_s = 0.0  # closed writing periods
        self.active_since = None  # monotonic start of the current period, None when paused
        self.behind_s = 0.0
        self.error = None
        self.running = threading.Event()
        self.idle = threading.Event()
        self.idle.set()
        self.done = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def history(self):
        since = self.active_since
        return self.written_s + (time.monotonic() - since if since is not None else 0.0)

    def _run(self):
        tick = 0.01
        per_tick = self.rate * tick
        owed = 0.0
        try:
            while not self.done.is_set():
                if not self.running.is_set():
                    self.idle.set()
                    self.running.wait(0.05)
                    continue
                self.idle.clear()
                nxt = self.active_since = time.monotonic()
                while self.running.is_set() and not self.done.is_set():
                    owed += per_tick
                    n = int(owed)
                    owed -= n
                    if n:
                        blob = os.urandom(self.raw * n)
                        cmds = [[b"SET", b"key:%d" % random.randrange(self.keys),
                                 base64.b64encode(blob[i * self.raw:(i + 1) * self.raw])]
                                for i in range(n)]
                        self.conn.pipeline(cmds)
                        self.writes += n
                    nxt += tick
                    now = time.monotonic()
                    if nxt > now:
                        time.sleep(nxt - now)
                    elif now - nxt > 1.0:
                        # More than a second behind (the machine is busy): do not burst to
                        # catch up, record it.
                        self.behind_s += now - nxt
                        nxt = now
                self.written_s += time.monotonic() - self.active_since
                self.active_since = None
        except Exception as e:  # reported by the main thread
            self.error = e
            self.active_since = None
            self.idle.set()

    def run_until(self, history_s):
        self.running.set()
        while self.history() < history_s:
            if self.error:
                raise RuntimeError("the writer failed: %s" % self.error)
            time.sleep(0.02)
        self.running.clear()
        while not self.idle.wait(0.05) or self.active_since is not None:
            if self.error:
                break
        if self.error:
            raise RuntimeError("the writer failed: %s" % self.error)

    def close(self):
        self.done.set()
        self.running.set()
        self.t.join()
        self.conn.close()


class Compactor:
    """--compaction command: `flashback compact --force` every K seconds of history, like an
    operator's cron job would; K is counted in history so pauses do not add passes."""

    def __init__(self, b, store, every, writer):
        self.b, self.store, self.every, self.writer = b, store, every, writer
        self.passes = []
        self.done = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        nxt = self.every
        while not self.done.is_set():
            h = self.writer.history()
            if h < nxt:
                time.sleep(0.1)
                continue
            nxt = h + self.every
            t0 = time.monotonic()
            r = subprocess.run([self.b.flashback, "compact", "--store", self.store, "--name",
                                "bench", "--force"], capture_output=True, text=True)
            self.passes.append({"history_s": h, "s": time.monotonic() - t0, "rc": r.returncode,
                                "created": "new base" in (r.stdout + r.stderr)})

    def close(self):
        self.done.set()
        self.t.join()


class Bench:
    def __init__(self, args, work):
        self.a = args
        self.work = work
        self.flashback = args.flashback

    def agent(self, port, store, every):
        log = store + ".log"
        argv = [self.flashback, "capture", "--source", "redis://127.0.0.1:%d" % port,
                "--store", store, "--name", "bench", "--segment-mib", str(self.a.segment_mib)]
        if self.base_every_flag:
            argv += ["--base-every", every]
        env = dict(os.environ, FLASHBACK_LOG=os.environ.get("FLASHBACK_LOG", "info"))
        return cb.spawn(argv, log, env)

    def restore(self, store):
        out = os.path.join(self.work, "restored.rdb")
        argv = [self.flashback, "restore", "--store", store, "--name", "bench", "--latest",
                "--rdb", out, "--force"]
        t0 = time.monotonic()
        r = subprocess.run(argv, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError("restore from %s failed (%d): %s" % (store, r.returncode,
                                                                   (r.stderr or r.stdout).strip()))
        m = APPLIED.search(r.stdout + r.stderr)
        if not m:
            raise RuntimeError("could not find restore's 'applied:' line in:\n" + r.stdout + r.stderr)
        try:
            os.remove(out)
        except FileNotFoundError:
            pass
        return {"s": wall, "base_bytes": int(m.group(1)), "records": int(m.group(2)),
                "log_bytes": int(m.group(3))}

    def wait_durable(self, primary, procs, timeout=120.0):
        target = int(primary.info("replication")["master_repl_offset"])

        def acked():
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError("an agent exited with %s; see its log under %s" %
                                       (p.returncode, self.work))
            s = cb.slaves(primary.info("replication"))
            return len(s) == len(procs) and all(x["offset"] >= target for x in s)
        cb.wait_until("both agents to ACK offset %d" % target, acked, timeout, 0.02)
        return target

    def run(self):
        a = self.a
        help_text = subprocess.run([self.flashback, "capture", "--help"], capture_output=True,
                                   text=True).stdout
        self.base_every_flag = "--base-every" in help_text
        mode = a.compaction
        if mode == "auto":
            mode = "agent" if self.base_every_flag else "command"
        if mode == "agent" and not self.base_every_flag:
            raise SystemExit("--compaction agent: this flashback has no capture --base-every; "
                             "use --compaction command")
        print("  compaction: %s every %d s (%s)" % (
            mode, a.base_every, "capture --base-every %ds" % a.base_every if mode == "agent"
            else "flashback compact --force from this script"), flush=True)

        d = os.path.join(self.work, "primary")
        os.makedirs(d)
        pp, port, primary = cb.Bench(argparse.Namespace(redis_server=a.redis_server),
                                     self.work).redis(d)
        plain = os.path.join(self.work, "plain")
        compacted = os.path.join(self.work, "compacted")
        agents = [self.agent(port, plain, "0s"),
                  self.agent(port, compacted, "%ds" % a.base_every if mode == "agent" else "0s")]

        def online():
            for p in agents:
                if p.poll() is not None:
                    raise RuntimeError("an agent exited with %s; see its log under %s" %
                                       (p.returncode, self.work))
            s = cb.slaves(primary.info("replication"))
            return len(s) == 2 and all(x["state"] == "online" for x in s)
        cb.wait_until("both agents to be online", online, 60, 0.02)

        writer = Writer(port, a.rate, a.keys, a.value_bytes)
        compactor = Compactor(self, compacted, a.base_every, writer) if mode == "command" else None
        steps = []
        try:
            for mult in a.steps:
                target = a.history * mult
                t0 = time.monotonic()
                writer.run_until(target)
                offset = self.wait_durable(primary, agents)
                load = float(open("/proc/loadavg").read().split()[0])
                step = {"history_s": writer.history(), "writes": writer.writes, "offset": offset,
                        "loadavg": load, "write_wall_s": time.monotonic() - t0,
                        "bases": len(os.listdir(os.path.join(
                            gen_dir(compacted), "base"))),
                        "plain": [], "compacted": []}
                for rep in range(a.repeat):
                    order = [("plain", plain), ("compacted", compacted)]
                    if rep % 2:
                        order.reverse()
                    for name, store in order:
                        step[name].append(self.restore(store))
                steps.append(step)
                pm = med([r["s"] for r in step["plain"]])
                cm = med([r["s"] for r in step["compacted"]])
                print("  history %5.0f s (%d writes, offset %d, load %.1f): restore plain %.2f s "
                      "(%d records), compacted %.2f s (%d records, %d bases)" % (
                          step["history_s"], step["writes"], offset, load, pm,
                          step["plain"][0]["records"], cm, step["compacted"][0]["records"],
                          step["bases"]), flush=True)
        finally:
            if compactor is not None:
                compactor.close()
            writer.close()
            for p in agents:
                cb.stop(p, signal.SIGTERM, 60)
            primary.close()
            cb.stop(pp)
        return {"mode": mode, "steps": steps, "behind_s": writer.behind_s,
                "segment_bytes_max": segment_span_max(plain),
                "compactions": compactor.passes if compactor else None,
                "agent_compactions": count_lines(compacted + ".log", "new base ")}


def gen_dir(store):
    g = os.path.join(store, "sources", "bench", "generations")
    gens = sorted(os.listdir(g))
    if len(gens) != 1:
        raise RuntimeError("%s holds %d generations, expected 1 (did the agent resync?)" %
                           (store, len(gens)))
    return os.path.join(g, gens[0])


def segment_span_max(store):
    """The most replication bytes one sealed segment of the store holds (from its name:
    `<start hex>-<end hex>-<t0>-<t1>.seg`): the last term of the compacted bound. Bytes, not
    the name's times, because a segment that stayed open over a measurement pause would
    stretch its time span without holding more log."""
    seg = os.path.join(gen_dir(store), "segments")
    longest = 0
    for name in os.listdir(seg):
        parts = name[:-len(".seg")].split("-") if name.endswith(".seg") else []
        if len(parts) == 4:
            longest = max(longest, int(parts[1], 16) - int(parts[0], 16))
    return longest


def count_lines(path, needle):
    try:
        with open(path, errors="replace") as f:
            return sum(1 for line in f if needle in line)
    except FileNotFoundError:
        return 0


def med(xs):
    return statistics.median(xs)


def report(res, args):
    steps = res["steps"]
    print()
    print("Restore --latest --rdb, wall time (median of %d), at the end of each history:" % args.repeat)
    print("  %9s %9s %12s | %9s %10s | %9s %10s %6s | %8s" % (
        "history", "writes", "log MB", "plain s", "records", "compact s", "records", "bases",
        "comp/plain"))
    for s in steps:
        pm = med([r["s"] for r in s["plain"]])
        cm = med([r["s"] for r in s["compacted"]])
        print("  %8.0fs %9d %12.1f | %9.2f %10d | %9.2f %10d %6d | %8.3f" % (
            s["history_s"], s["writes"], s["offset"] / 1e6, pm, s["plain"][0]["records"], cm,
            s["compacted"][0]["records"], s["bases"], cm / pm))
    first, last = steps[0], steps[-1]
    span = last["history_s"] / first["history_s"]
    p_growth = med([r["s"] for r in last["plain"]]) / med([r["s"] for r in first["plain"]])
    c_growth = med([r["s"] for r in last["compacted"]]) / med([r["s"] for r in first["compacted"]])
    # A base is made at most every 2K of history (a pass skips when the cut is less than K past
    # the newest base, and the next runs K later) and cuts at the end of the latest sealed
    # segment, so a restore replays at most 2K of log plus one sealed segment's worth.
    per_record = last["offset"] / max(1, last["writes"])
    seg_records = int(res["segment_bytes_max"] / per_record)
    rec_bound = int(args.rate * 2 * args.base_every) + seg_records
    c_rec_max = max(s["compacted"][0]["records"] for s in steps)
    p_rec = last["plain"][0]["records"] / max(1, first["plain"][0]["records"])
    print()
    if res["compactions"] is not None:
        made = sum(1 for p in res["compactions"] if p["created"])
        print("compaction passes (flashback compact --force): %d, %d made a base; median %.2f s" % (
            len(res["compactions"]), made,
            med([p["s"] for p in res["compactions"]]) if res["compactions"] else 0))
    else:
        print("bases made by the agent's --base-every: %d (see compacted.log)" % res["agent_compactions"])
    print("largest sealed segment: %.1f MB of stream = %d records; bound on replayed records "
          "with compaction: 2 x %d s x %d/s + %d = %d" % (
              res["segment_bytes_max"] / 1e6, seg_records, args.base_every, args.rate,
              seg_records, rec_bound))
    if res["behind_s"] > 0:
        print("the writer fell more than 1 s behind its rate for %.1f s in all" % res["behind_s"])
    print()
    cb.summary_table([
        ("history span (longest / shortest)", "%.1fx" % span, "-", "-"),
        ("  (informative) plain records replayed, growth", cb.fmt(p_rec), "-", "-"),
        ("plain restore time growth over that span", cb.fmt(p_growth),
         "> %.3f" % c_growth, "met" if p_growth > c_growth else "NOT met"),
        ("compacted restore time growth over that span", cb.fmt(c_growth), "<= %.1f" % GOAL_FLAT,
         cb.verdict(c_growth, GOAL_FLAT, False)),
        ("compacted records replayed, max over steps", str(c_rec_max), "<= %d" % rec_bound,
         cb.verdict(c_rec_max, rec_bound, False)),
        ("compacted / plain at the longest history", cb.fmt(
            med([r["s"] for r in last["compacted"]]) / med([r["s"] for r in last["plain"]])),
         "-", "-"),
    ])
    return {"plain_growth": p_growth, "compacted_growth": c_growth, "span": span,
            "compacted_records_max": c_rec_max, "records_bound": rec_bound}


def main():
    ap = argparse.ArgumentParser(
        description="Restore time at the end of a long history, with compaction against without.",
        epilog="Example: bench/restore_history.sh                    (about 2.5 minutes on 2 cores)\n"
               "         bench/restore_history.sh --history 60 --steps 1,2,4,8 --base-every 20",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--history", type=float, default=30.0,
                    help="L: seconds of writes at the first measurement (default 30)")
    ap.add_argument("--steps", default="1,2,4",
                    help="measure at these multiples of L (default 1,2,4)")
    ap.add_argument("--rate", type=int, default=10000, help="writes per second (default 10000)")
    ap.add_argument("--keys", type=int, default=100000,
                    help="key space: the dataset stays at most this many keys (default 100000)")
    ap.add_argument("--value-bytes", type=int, default=64,
                    help="value size, base64 of random bytes (default 64)")
    ap.add_argument("--base-every", type=int, default=10,
                    help="K: seconds between bases in the compacted store (default 10)")
    ap.add_argument("--compaction", choices=["auto", "agent", "command"], default="auto",
                    help="agent: capture --base-every K; command: this script runs flashback "
                         "compact --force every K s of history; auto: agent when the binary "
                         "has --base-every (default)")
    ap.add_argument("--segment-mib", type=int, default=1, help="capture --segment-mib (default 1)")
    ap.add_argument("--repeat", type=int, default=3, help="restores per store and step; medians "
                    "are reported (default 3)")
    ap.add_argument("--flashback", default=os.path.join(REPO, "target", "release", "flashback"),
                    help="the flashback binary (default target/release/flashback)")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--workdir", help="where the primary and the stores live (default: a new "
                    "directory under $TMPDIR); use a real disk, not tmpfs")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json", help="also write the raw results and the summary to this file")
    args = ap.parse_args()
    try:
        args.steps = sorted({float(x) for x in args.steps.split(",") if x.strip()})
    except ValueError:
        ap.error("--steps: give multiples of --history separated by commas, e.g. 1,2,4")
    if len(args.steps) < 2 or args.steps[0] <= 0:
        ap.error("--steps needs at least two positive multiples, e.g. 1,2,4")
    if args.history <= 0 or args.rate < 1 or args.keys < 1 or args.repeat < 1 or args.base_every < 1:
        ap.error("--history, --rate, --keys, --repeat and --base-every must be positive")
    for name, path in (("--flashback", args.flashback), ("--redis-server", args.redis_server)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            ap.error("%s %s: not an executable file%s" % (
                name, path, "; run cargo build --release first" if name == "--flashback"
                else "; install redis-server"))

    signal.signal(signal.SIGINT, cb.on_signal)
    signal.signal(signal.SIGTERM, cb.on_signal)
    atexit.register(cb.cleanup)
    work = args.workdir or tempfile.mkdtemp(prefix="flashback-restore-bench-")
    os.makedirs(work, exist_ok=True)
    if not args.keep:
        atexit.register(shutil.rmtree, work, True)
    b = Bench(args, work)
    # A private copy: someone rebuilding target/ mid-run must not swap the binary under us.
    b.flashback = os.path.join(work, "flashback")
    shutil.copy2(args.flashback, b.flashback)
    # restore and compact start redis-server from PATH: make it the one given.
    os.environ["PATH"] = os.path.dirname(os.path.abspath(args.redis_server)) + os.pathsep + \
        os.environ.get("PATH", "")

    ver = subprocess.run([args.redis_server, "--version"], capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    print("flashback restore-history benchmark: %s" % " ".join(sys.argv[1:]))
    print("  nproc %d, %s" % (os.cpu_count(), ver))
    print("  flashback binary %s (built %s); this checkout at git %s; work dir %s" % (
        args.flashback, time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(args.flashback))),
        head or "?", work))
    print("  load: %d SET/s of %d-byte random values over %d keys; history L = %.0f s, measured at "
          "%s x L; --segment-mib %d" % (args.rate, args.value_bytes, args.keys, args.history,
                                         ",".join("%g" % s for s in args.steps), args.segment_mib))
    print("  load average at start: %s" % " ".join(open("/proc/loadavg").read().split()[:3]), flush=True)
    t_start = time.monotonic()
    out = {"args": vars(args), "redis": ver, "git": head, "nproc": os.cpu_count(),
           "loadavg_start": open("/proc/loadavg").read().split()[:3]}
    res = b.run()
    out["result"] = res
    out["summary"] = report(res, args)
    out["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    print()
    print("load average at end: %s; wall time %.0f s" %
          (" ".join(out["loadavg_end"]), time.monotonic() - t_start))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
