#!/usr/bin/env python3
"""Upload throughput of the capture agent's uploader against raw object_store PUTs of the same
bytes, on a local S3-protocol server (moto).

Not a test: it prints ratios against a baseline measured in the same run and says whether the
goal was met. Python 3 standard library only (it reuses bench/capture.py's helpers); needs
redis-server, moto_server (scripts/install-s3-test-server.sh), a built flashback binary and the
baseline example (cargo build --release -p flashback --example upload_bench).

1. A primary gets incompressible writes while an agent captures them into a local store with
   `--segment-mib S`, until it holds --segments sealed segments; SIGTERM seals the tail. The
   keys (base, manifest, segments by offset: the uploader's order) are the upload set.
2. Per repeat, each mode on a fresh moto server with a fresh bucket:
     agent     the local store is copied into a spool directory, and
               `flashback capture --store s3://flashbench/… --spool DIR` (against the same, now
               quiet, primary) drains it; the "uploaded <key>" lines of its log are timed
     raw       crates/flashback/examples/upload_bench.rs: one plain object_store PUT per file,
               sequential, same order, same client settings (the baseline)
     raw-proto (informative) the requests the uploader makes per object: create-only PUT +
               HEAD, sequential
     raw-cN    (informative) plain PUTs with N in flight, completed in order (--concurrency)
     agent-c1  (informative, --agent-c1) the agent with --upload-concurrency 1
   The order of modes is reversed every other repeat.
Throughput is "steady": the bytes of objects 2..N over the time from the first completion to
the last, for both sides (the agent's log cannot show when its first PUT began, so neither side
counts its first object). The time from the agent's start to its last upload is shown too.

See docs/benchmarks.md for the figures and how to read them.
"""

import argparse
import atexit
import base64
import datetime
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import capture as cb  # noqa: E402  (the shared process/RESP helpers of the capture benchmark)

REPO = cb.REPO
BUCKET = "flashbench"
GOAL_RATIO = 0.8  # agent MB/s / raw sequential object_store PUT MB/s, at least

UPLOADED = re.compile(r"^(\S+Z)\s+\S+\s+uploaded (\S+) \((\d+) bytes\)")
ENV_S3 = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_REGION": "us-east-1"}


def default_moto():
    env = os.environ.get("FLASHBACK_TEST_MOTO")
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "flashback-moto", "bin", "moto_server")


def log_time(stamp):
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


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

    def fb_env(self):
        return dict(os.environ, FLASHBACK_LOG=os.environ.get("FLASHBACK_LOG", "info"))

    # -----------------------------------------------------------------------------------------

    def fill(self):
        """Captures incompressible writes into a local store until it holds --segments sealed
        segments; returns (primary process, port, store dir, upload order, sizes)."""
        a = self.a
        d = self.dir("primary")
        pp, port, primary = cb.Bench(argparse.Namespace(redis_server=a.redis_server),
                                     self.work).redis(d)
        store = os.path.join(self.work, "source-store")
        argv = [self.flashback, "capture", "--source", "redis://127.0.0.1:%d" % port, "--store",
                store, "--name", "bench", "--segment-mib", str(a.segment_mib)] + self.no_compaction
        agent = cb.spawn(argv, store + ".log", self.fb_env())

        def online():
            if agent.poll() is not None:
                raise RuntimeError("the agent exited with %s; see %s.log" % (agent.returncode, store))
            return any(s["state"] == "online" for s in cb.slaves(primary.info("replication")))
        cb.wait_until("the agent to be online", online, 60, 0.01)
        raw = max(1, a.value_bytes * 3 // 4)
        writes = 0
        t0 = time.monotonic()
        while sealed_count(store) < a.segments:
            if agent.poll() is not None:
                raise RuntimeError("the agent exited with %s; see %s.log" % (agent.returncode, store))
            blob = os.urandom(raw * 200)
            primary.pipeline([[b"SET", b"key:%d" % random.randrange(a.keys),
                               base64.b64encode(blob[i * raw:(i + 1) * raw])] for i in range(200)])
            writes += 200
            if time.monotonic() - t0 > 600:
                raise RuntimeError("the store has only %d sealed segments after 10 minutes" %
                                   sealed_count(store))
        # Durable, then stop: SIGTERM seals the tail, so every object is sealed and immutable.
        target = int(primary.info("replication")["master_repl_offset"])
        cb.wait_until("the agent's ACK", lambda: any(
            s["offset"] >= target for s in cb.slaves(primary.info("replication"))), 120, 0.02)
        rc = cb.stop(agent, signal.SIGTERM, 60)
        if rc != 0:
            raise RuntimeError("the agent exited with %s; see %s.log" % (rc, store))
        primary.close()
        keys = upload_order(store)
        sizes = {k: os.path.getsize(os.path.join(store, k)) for k in keys}
        segs = [sizes[k] for k in keys if k.endswith(".seg")]
        print("  filled %s: %d writes of %d-byte values, %d objects, %.1f MB (%d segments, "
              "%.1f-%.1f MB, median %.1f MB) in %.1f s" % (
                  store, writes, a.value_bytes, len(keys), sum(sizes.values()) / 1e6, len(segs),
                  min(segs) / 1e6, max(segs) / 1e6, cb.med(segs) / 1e6, time.monotonic() - t0),
              flush=True)
        return pp, port, store, keys, sizes

    def moto(self, d):
        port = cb.free_port()
        p = cb.spawn([self.a.moto, "-H", "127.0.0.1", "-p", str(port)],
                     os.path.join(d, "moto.log"))
        url = "http://127.0.0.1:%d" % port

        def bucket():
            if p.poll() is not None:
                raise RuntimeError("moto_server exited with %s; see %s/moto.log" % (p.returncode, d))
            try:
                req = urllib.request.Request("%s/%s" % (url, BUCKET), method="PUT")
                urllib.request.urlopen(req, timeout=5).read()
                return True
            except (urllib.error.URLError, ConnectionError, OSError):
                return False
        cb.wait_until("moto_server on port %d" % port, bucket, 60, 0.1)
        return p, url

    def run_agent(self, port, store, keys, sizes, endpoint, d, extra=()):
        spool = os.path.join(d, "spool")
        shutil.copytree(store, spool, ignore=shutil.ignore_patterns("*.lock"))
        # The copy's dirty pages must not be written back while the agent reads and deletes
        # them: the raw side reads files that are long clean.
        os.sync()
        log = os.path.join(d, "agent.log")
        env = dict(self.fb_env(), **ENV_S3)
        argv = [self.flashback, "capture", "--source", "redis://127.0.0.1:%d" % port,
                "--store", "s3://%s/agent" % BUCKET, "--s3-endpoint", endpoint, "--spool", spool,
                "--name", "bench", "--segment-mib", str(self.a.segment_mib)] + self.no_compaction \
            + shlex.split(self.a.agent_args) + list(extra)
        t_start = time.time()
        p = cb.spawn(argv, log, env)
        want = set(keys)
        seen = {}
        pos = 0
        deadline = time.monotonic() + self.a.timeout
        try:
            while len(seen) < len(want):
                if p.poll() is not None:
                    raise RuntimeError("the agent exited with %s before uploading everything; "
                                       "see %s" % (p.returncode, log))
                if time.monotonic() > deadline:
                    raise RuntimeError("the agent uploaded %d of %d objects in %d s; see %s" %
                                       (len(seen), len(want), self.a.timeout, log))
                with open(log, errors="replace") as f:
                    f.seek(pos)
                    chunk = f.read()
                # Only whole lines; the rest is read again next time.
                cut = chunk.rfind("\n") + 1
                pos += len(chunk[:cut].encode())
                for line in chunk[:cut].splitlines():
                    m = UPLOADED.match(line)
                    if m and m.group(2) in want:
                        seen[m.group(2)] = (log_time(m.group(1)), int(m.group(3)))
                time.sleep(0.02)
        finally:
            cb.stop(p, signal.SIGTERM, 60)
        for k in keys:
            if seen[k][1] != sizes[k]:
                raise RuntimeError("%s: the agent uploaded %d bytes, the file has %d" %
                                   (k, seen[k][1], sizes[k]))
        done = sorted(seen.values())
        first, last = done[0][0], done[-1][0]
        steady_bytes = sum(sizes.values()) - done[0][1]
        return {"mode": "agent", "objects": len(done), "bytes": sum(sizes.values()),
                "steady_bytes": steady_bytes, "steady_s": last - first,
                "elapsed_s": last - t_start, "done_s": [t - t_start for t, _ in done]}

    def run_raw(self, store, keylist, endpoint, mode, concurrency, prefix):
        env = dict(os.environ, **ENV_S3)
        argv = [self.example, "--endpoint", endpoint, "--bucket", BUCKET, "--prefix", prefix,
                "--root", store, "--list", keylist, "--mode", mode,
                "--concurrency", str(concurrency)]
        r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=self.a.timeout)
        if r.returncode != 0:
            raise RuntimeError("upload_bench failed (%d): %s" % (r.returncode, r.stderr.strip()))
        return json.loads(r.stdout.strip().splitlines()[-1])

    def run(self):
        a = self.a
        help_text = subprocess.run([self.flashback, "capture", "--help"], capture_output=True,
                                   text=True).stdout
        # No compaction pass in the middle of a timing (the agent's default is every hour anyway).
        self.no_compaction = ["--base-every", "0s"] if "--base-every" in help_text else []
        pp, port, store, keys, sizes = self.fill()
        keylist = os.path.join(self.work, "keys.txt")
        with open(keylist, "w") as f:
            f.write("\n".join(keys) + "\n")
        modes = ["raw", "agent", "raw-proto"] + ["raw-c%d" % c for c in a.concurrency] + \
            (["agent-c1"] if a.agent_c1 else [])
        runs = []
        try:
            for rep in range(a.repeat):
                order = modes if rep % 2 == 0 else modes[::-1]
                for m in order:
                    d = self.dir("%s-%d" % (m, rep + 1))
                    mp, endpoint = self.moto(d)
                    try:
                        load = float(open("/proc/loadavg").read().split()[0])
                        if m == "agent":
                            r = self.run_agent(port, store, keys, sizes, endpoint, d)
                        elif m == "agent-c1":
                            r = self.run_agent(port, store, keys, sizes, endpoint, d,
                                               ["--upload-concurrency", "1"])
                        elif m == "raw":
                            r = self.run_raw(store, keylist, endpoint, "put", 1, "raw")
                        elif m == "raw-proto":
                            r = self.run_raw(store, keylist, endpoint, "uploader", 1, "proto")
                        else:
                            c = int(m[len("raw-c"):])
                            r = self.run_raw(store, keylist, endpoint, "put", c, m)
                    finally:
                        cb.stop(mp)
                    r.update(name=m, repeat=rep + 1, loadavg=load,
                             mbps=r["steady_bytes"] / r["steady_s"] / 1e6)
                    runs.append(r)
                    print("  repeat %d %-9s %7.1f MB/s steady; %.2f s for %d objects (%.1f MB) "
                          "from start; load %.1f" % (rep + 1, m, r["mbps"], r["elapsed_s"],
                                                     r["objects"], r["bytes"] / 1e6, load),
                          flush=True)
                    if not a.keep:
                        shutil.rmtree(d, ignore_errors=True)
        finally:
            cb.stop(pp)
        return {"objects": len(keys), "bytes": sum(sizes.values()), "runs": runs}


def upload_order(store):
    """Base, manifest, then sealed segments by offset, generation by generation: the
    uploader's order. Names are zero-padded hex, so sorting them sorts by offset."""
    root = os.path.join(store, "sources", "bench", "generations")
    out = []
    for g in sorted(os.listdir(root)):
        rel = "sources/bench/generations/%s" % g
        gd = os.path.join(root, g)
        out += ["%s/base/%s" % (rel, n) for n in sorted(os.listdir(os.path.join(gd, "base")))
                if n.endswith(".rdb")]
        if os.path.exists(os.path.join(gd, "generation.meta")):
            out.append("%s/generation.meta" % rel)
        out += ["%s/segments/%s" % (rel, n) for n in sorted(os.listdir(os.path.join(gd, "segments")))
                if n.endswith(".seg")]
    return out


def sealed_count(store):
    root = os.path.join(store, "sources", "bench", "generations")
    if not os.path.isdir(root):
        return 0
    n = 0
    for g in os.listdir(root):
        seg = os.path.join(root, g, "segments")
        if os.path.isdir(seg):
            n += sum(1 for x in os.listdir(seg) if x.endswith(".seg"))
    return n


def report(res, args):
    runs = res["runs"]
    names = []
    for r in runs:
        if r["name"] not in names:
            names.append(r["name"])
    by = {n: [r for r in runs if r["name"] == n] for n in names}
    print()
    print("Upload of %d objects, %.1f MB (median of %d repeats; steady = objects 2..N, first to "
          "last completion):" % (res["objects"], res["bytes"] / 1e6, args.repeat))
    print("  %-10s %12s %14s %14s" % ("mode", "MB/s steady", "s from start", "vs raw"))
    raw = cb.med([r["mbps"] for r in by["raw"]])
    for n in names:
        m = cb.med([r["mbps"] for r in by[n]])
        print("  %-10s %12.1f %14.2f %14.3f" % (n, m, cb.med([r["elapsed_s"] for r in by[n]]),
                                                m / raw))
    # The goal is on the median of per-repeat ratios: each repeat's agent and raw runs are
    # adjacent in time, so the machine's load swings cancel better than in a ratio of medians.
    ratios = [a["mbps"] / r["mbps"] for a, r in zip(by["agent"], by["raw"])]
    ratio = cb.med(ratios)
    rows = [("uploader / raw sequential PUT, MB/s", cb.fmt(ratio), ">= %.2f" % GOAL_RATIO,
             cb.verdict(ratio, GOAL_RATIO, True)),
            ("  per repeat", ", ".join(cb.fmt(x) for x in ratios), "-", "-"),
            ("  (informative) raw create-only PUT + HEAD / raw PUT",
             cb.fmt(cb.med([r["mbps"] for r in by["raw-proto"]]) / raw), "-", "-")]
    for n in names:
        if n.startswith("raw-c"):
            rows.append(("  (informative) raw, %s in flight / raw" % n[len("raw-c"):],
                         cb.fmt(cb.med([r["mbps"] for r in by[n]]) / raw), "-", "-"))
    if "agent-c1" in by:
        per = [a["mbps"] / r["mbps"] for a, r in zip(by["agent-c1"], by["raw"])]
        rows.append(("  (informative) uploader with --upload-concurrency 1 / raw (per repeat: %s)"
                     % ", ".join(cb.fmt(x) for x in per), cb.fmt(cb.med(per)), "-", "-"))
        per = [a["mbps"] / r["mbps"] for a, r in zip(by["agent"], by["agent-c1"])]
        rows.append(("  (informative) uploader / the same with --upload-concurrency 1 (per repeat: "
                     "%s)" % ", ".join(cb.fmt(x) for x in per), cb.fmt(cb.med(per)), "-", "-"))
    # An uploader with N in flight is fairly compared with raw PUTs with N in flight too.
    for n in names:
        if n.startswith("raw-c"):
            per = [a["mbps"] / r["mbps"] for a, r in zip(by["agent"], by[n])]
            rows.append(("  (informative) uploader / raw, %s in flight (per repeat: %s)" % (
                n[len("raw-c"):], ", ".join(cb.fmt(x) for x in per)), cb.fmt(cb.med(per)),
                "-", "-"))
    print()
    cb.summary_table(rows)
    return {"ratio": ratio, "ratios": ratios,
            "mbps": {n: cb.med([r["mbps"] for r in by[n]]) for n in names},
            "ratios_vs_in_flight": {n: [a["mbps"] / r["mbps"] for a, r in zip(by["agent"], by[n])]
                                    for n in names if n.startswith("raw-c")}}


def main():
    ap = argparse.ArgumentParser(
        description="Upload throughput of the capture agent's uploader against raw object_store PUTs.",
        epilog="Example: bench/upload.sh                          (about 1 minute on 2 cores)\n"
               "         bench/upload.sh --segment-mib 1 --segments 128",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=32,
                    help="sealed segments to upload, at least (default 32)")
    ap.add_argument("--segment-mib", type=int, default=4,
                    help="capture --segment-mib for the upload set (default 4)")
    ap.add_argument("--value-bytes", type=int, default=1024,
                    help="value size of the filling writes, base64 of random bytes (default 1024)")
    ap.add_argument("--keys", type=int, default=100000, help="key space of the filling writes")
    ap.add_argument("--concurrency", default="4",
                    help="informative raw runs with this many PUTs in flight, comma-separated "
                         "(default 4; empty: none)")
    ap.add_argument("--agent-args", default="",
                    help="more arguments for the agent's capture, e.g. '--upload-concurrency 1'")
    ap.add_argument("--agent-c1", action="store_true",
                    help="also run the agent with --upload-concurrency 1 (mode agent-c1)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each mode (default 3)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds one upload run may take")
    ap.add_argument("--flashback", default=os.path.join(REPO, "target", "release", "flashback"),
                    help="the flashback binary (default target/release/flashback)")
    ap.add_argument("--example", default=os.path.join(REPO, "target", "release", "examples",
                                                      "upload_bench"),
                    help="the baseline (cargo build --release -p flashback --example upload_bench)")
    ap.add_argument("--moto", default=default_moto(),
                    help="moto_server (default $FLASHBACK_TEST_MOTO, else the venv "
                         "scripts/install-s3-test-server.sh makes)")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--workdir", help="where the store, spools and servers live (default: a new "
                    "directory under $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json", help="also write the raw results and the summary to this file")
    args = ap.parse_args()
    try:
        args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        ap.error("--concurrency: give numbers separated by commas, e.g. 4,8")
    if args.segments < 2 or args.segment_mib < 1 or args.repeat < 1 or \
            any(c < 2 for c in args.concurrency):
        ap.error("--segments must be at least 2, --segment-mib and --repeat at least 1, "
                 "--concurrency values at least 2")
    for name, path, fix in (
            ("--flashback", args.flashback, "run cargo build --release first"),
            ("--example", args.example, "run cargo build --release -p flashback --example upload_bench"),
            ("--moto", args.moto, "run scripts/install-s3-test-server.sh"),
            ("--redis-server", args.redis_server, "install redis-server")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            ap.error("%s %s: not an executable file; %s" % (name, path, fix))

    signal.signal(signal.SIGINT, cb.on_signal)
    signal.signal(signal.SIGTERM, cb.on_signal)
    atexit.register(cb.cleanup)
    work = args.workdir or tempfile.mkdtemp(prefix="flashback-upload-bench-")
    os.makedirs(work, exist_ok=True)
    if not args.keep:
        atexit.register(shutil.rmtree, work, True)
    b = Bench(args, work)
    # Private copies: someone rebuilding target/ mid-run must not swap the binaries under us.
    b.flashback = os.path.join(work, "flashback")
    shutil.copy2(args.flashback, b.flashback)
    b.example = os.path.join(work, "upload_bench")
    shutil.copy2(args.example, b.example)

    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    print("flashback upload benchmark: %s" % " ".join(sys.argv[1:]))
    print("  nproc %d; moto %s; flashback binary %s (built %s); this checkout at git %s; work dir %s" % (
        os.cpu_count(), args.moto, args.flashback,
        time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(args.flashback))),
        head or "?", work))
    print("  load average at start: %s" % " ".join(open("/proc/loadavg").read().split()[:3]), flush=True)
    t_start = time.monotonic()
    out = {"args": vars(args), "git": head, "nproc": os.cpu_count(),
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
