#!/usr/bin/env python3
"""Soak benchmark: an agent's days of maintenance compressed into minutes, its resources sampled.

An agent runs for months; what it must not do is grow. This script runs one `flashback capture`
against a primary under a steady write load with compaction and retention at a fast cadence
(`--base-every` of seconds, a `--keep` of seconds, small segments), so that an hour's base and
ten minutes' prune of a real agent happen every few seconds, and samples the agent every
--sample-every seconds:

  /proc/PID/status   VmRSS, VmHWM (peak), Threads
  /proc/PID/fd       open file descriptors
  children           redis-servers the agent started (compaction's), alive right now
  spool files        files under the agent's local directory (the store itself for a local
                     store, the spool for a remote one): bounded by retention / by uploading
  work dirs          entries of the agent's private TMPDIR (compaction's scratch directories)
  remote objects     (--store s3) objects in the bucket: bounded by retention deleting them

and counts compactions ("new base" lines of its log) and prunes ("retention:" lines). It prints
a timeline, the RSS after compaction 1, 2, 5, 10, …, the growth per compaction (least-squares
slope over the samples after the first --warmup compactions) and per hour of stream, and says
which goals were met; the exit code is 1 when one was not.

Modes (flags, combinable):
  --store local   (default) a directory store
  --store s3      a moto server (FLASHBACK_TEST_MOTO; scripts/install-s3-test-server.sh): the
                  agent spools locally and uploads each second; retention deletes remote objects
  --drill-every S `flashback verify` (integrity of every object + a restore drill) against the
                  same store every S seconds while capture runs (a "restore-heavy day"); every
                  drill must pass; their wall time and peak RSS are reported

The machine is noisy and shared: the goals are about shape (a plateau), not speed.
See docs/benchmarks.md for the figures and how to read them.
"""

import argparse
import atexit
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import capture as cb  # noqa: E402  (process/RESP helpers)
import restore_history as rh  # noqa: E402  (the fixed-rate writer)
import upload as ub  # noqa: E402  (moto)

REPO = cb.REPO

# Goals (DESIGN's memory goal, issue 14).
GOAL_RSS_MB = 64.0  # agent peak RSS (VmHWM), at most, whatever the data
# A plateau: at most this many MB per compaction after the first few. 0.04 MB is about 1 MB a
# day at the default --base-every 1h, and under 1 MB over this benchmark's 100 compactions,
# which the noise of sampling a process that allocates and frees megabytes per pass allows.
GOAL_SLOPE_MB = 0.04
# Bounded counts: the later half's maximum at most this much above the earlier half's.
SLACK_FDS = 8
SLACK_THREADS = 4
SLACK_FILES = 8  # spool files and remote objects: retention deletes in steps

NEW_BASE = "new base "
RETENTION = "retention: "
LOG_PROBLEM = re.compile(r"\b(ERROR|WARN)\b")


def proc_sample(pid):
    """VmRSS/VmHWM in MB, Threads, open fds, CPU s; None once the process is gone."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k = line.split(":", 1)[0]
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(line.split()[1]) / 1024.0
                elif k == "Threads":
                    out[k] = int(line.split()[1])
        out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, ProcessLookupError):
        return None
    return out


def children_of(pid):
    n = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    n += 1
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            pass
    return n


def processes_mentioning(text):
    """Live processes whose command line mentions `text` (a leftover private redis-server)."""
    out = []
    needle = text.encode()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if needle in f.read():
                    out.append(int(d))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return out


def count_files(root):
    n = 0
    for _dir, _sub, files in os.walk(root):
        n += len(files)
    return n


def slope(xs, ys):
    """Least-squares slope of ys over xs (None with fewer than 3 distinct xs)."""
    if len(set(xs)) < 3:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


class LogWatch:
    """Follows the agent's log: compactions and prunes (with their sample time), warnings."""

    def __init__(self, path):
        self.path, self.pos = path, 0
        self.compactions, self.prunes = 0, 0
        self.problems = []

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                chunk = f.read()
        except FileNotFoundError:
            return
        cut = chunk.rfind(b"\n") + 1
        self.pos += cut
        for line in chunk[:cut].decode(errors="replace").splitlines():
            if NEW_BASE in line:
                self.compactions += 1
            elif RETENTION in line and "failed" not in line:
                self.prunes += 1
            if LOG_PROBLEM.search(line):
                self.problems.append(line.strip())


class S3Lister:
    """Counts the objects under a prefix of moto's bucket (ListObjectsV2, every page)."""

    def __init__(self, endpoint, bucket, prefix):
        self.endpoint, self.bucket, self.prefix = endpoint, bucket, prefix

    def count(self):
        n, token = 0, None
        while True:
            q = "list-type=2&max-keys=1000&prefix=%s" % urllib.request.quote(self.prefix)
            if token:
                q += "&continuation-token=" + urllib.request.quote(token)
            req = urllib.request.Request("%s/%s?%s" % (self.endpoint, self.bucket, q))
            # moto checks no signature but refuses anonymous reads of private objects.
            req.add_header("Authorization", "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/"
                           "s3/aws4_request, SignedHeaders=host, Signature=0000")
            try:
                body = urllib.request.urlopen(req, timeout=10).read().decode(errors="replace")
            except (urllib.error.URLError, OSError):
                return None
            n += body.count("<Key>")
            m = re.search(r"<NextContinuationToken>([^<]+)</NextContinuationToken>", body)
            if "<IsTruncated>true</IsTruncated>" not in body or not m:
                return n
            token = m.group(1)


class Drills:
    """`flashback verify` every `every` seconds against the store while capture runs."""

    def __init__(self, argv, env, every, logdir):
        self.argv, self.env, self.every, self.logdir = argv, env, every, logdir
        self.runs = []
        self.done = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        n = 0
        while not self.done.wait(self.every):
            n += 1
            out = os.path.join(self.logdir, "verify-%03d.txt" % n)
            t0 = time.monotonic()
            with open(out, "wb") as f:
                p = subprocess.Popen(self.argv, stdout=f, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
                cb.PROCS.append(p)
                # wait4: the drill's own peak RSS comes with its exit status.
                _pid, status, ru = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                cb.PROCS.remove(p)
            r = {"n": n, "rc": p.returncode, "s": time.monotonic() - t0,
                 "peak_rss_mb": ru.ru_maxrss / 1024.0, "out": out}
            if r["rc"] == 0:
                os.remove(out)
            self.runs.append(r)

    def close(self):
        self.done.set()
        self.t.join()


class Soak:
    def __init__(self, args, work):
        self.a = args
        self.work = work
        self.flashback = args.flashback

    def run(self):
        a = self.a
        d = os.path.join(self.work, "primary")
        os.makedirs(d)
        pp, port, primary = cb.Bench(argparse.Namespace(redis_server=a.redis_server),
                                     self.work).redis(d)
        if a.populate:
            t0 = time.monotonic()
            primary.call("DEBUG", "POPULATE", a.populate, "key", a.populate_bytes)
            print("  source: DEBUG POPULATE %d keys of %d bytes in %.1f s, used_memory %.0f MB" % (
                a.populate, a.populate_bytes, time.monotonic() - t0,
                int(primary.info("memory")["used_memory"]) / 2**20), flush=True)

        tmp = os.path.join(self.work, "agent-tmp")
        os.makedirs(tmp)
        env = dict(os.environ, TMPDIR=tmp,
                   FLASHBACK_LOG=os.environ.get("FLASHBACK_LOG", "info"))
        moto = None
        lister = None
        if a.store == "s3":
            mdir = os.path.join(self.work, "moto")
            os.makedirs(mdir)
            mb = ub.Bench(argparse.Namespace(moto=a.moto), self.work)
            moto, endpoint = mb.moto(mdir)
            env.update(ub.ENV_S3)
            store = "s3://%s/soak" % ub.BUCKET
            local = os.path.join(self.work, "spool")
            store_args = ["--store", store, "--s3-endpoint", endpoint, "--spool", local]
            lister = S3Lister(endpoint, ub.BUCKET, "soak/")
        else:
            local = os.path.join(self.work, "store")
            store_args = ["--store", local]
        log = os.path.join(self.work, "agent.log")
        argv = [self.flashback, "capture", "--source", "redis://127.0.0.1:%d" % port,
                "--name", "bench", "--segment-mib", str(a.segment_mib),
                "--base-every", "%gs" % a.base_every, "--keep", "%gs" % a.keep] + store_args
        agent = cb.spawn(argv, log, env)
        watch = LogWatch(log)

        def online():
            if agent.poll() is not None:
                raise RuntimeError("the agent exited with %s; see %s" % (agent.returncode, log))
            return any(s["state"] == "online" for s in cb.slaves(primary.info("replication")))
        cb.wait_until("the agent to be online", online, 300, 0.05)
        off0 = int(primary.info("replication")["master_repl_offset"])

        writer = rh.Writer(port, a.rate, a.keys, a.value_bytes)
        writer.running.set()
        drills = None
        if a.drill_every:
            vargv = [self.flashback, "verify", "--name", "bench"] + store_args[:2] + \
                (store_args[2:4] if a.store == "s3" else [])
            # Their own TMPDIR: the agent's counts only the agent's scratch directories.
            dtmp = os.path.join(self.work, "drill-tmp")
            os.makedirs(dtmp)
            drills = Drills(vargv, dict(env, TMPDIR=dtmp), a.drill_every, self.work)
        samples = []
        after = {}  # compaction count -> first sample at or after it
        t0 = time.monotonic()
        last_print = -1e9
        deadline = t0 + a.max_minutes * 60
        ok_end = False
        try:
            while True:
                if agent.poll() is not None:
                    raise RuntimeError("the agent exited with %s; see %s" %
                                       (agent.returncode, log))
                if writer.error:
                    raise RuntimeError("the writer failed: %s" % writer.error)
                watch.poll()
                st = proc_sample(agent.pid)
                if st is None:
                    continue
                now = time.monotonic() - t0
                s = dict(st, t=now, compactions=watch.compactions, prunes=watch.prunes,
                         children=children_of(agent.pid), files=count_files(local),
                         workdirs=len(os.listdir(tmp)),
                         stream_mb=(int(primary.info("replication")["master_repl_offset"]) -
                                    off0) / 1e6)
                if lister is not None:
                    s["objects"] = lister.count()
                samples.append(s)
                if s["compactions"] not in after:
                    after[s["compactions"]] = s
                if now - last_print >= a.print_every:
                    last_print = now
                    print("  %6.0f s  bases %4d  prunes %4d  rss %5.1f MB (peak %5.1f)  threads "
                          "%3d  fds %3d  servers %d  files %4d%s  workdirs %d  stream %7.0f MB" % (
                              now, s["compactions"], s["prunes"], s["VmRSS"], s["VmHWM"],
                              s["Threads"], s["fds"], s["children"], s["files"],
                              "  objects %4s" % s.get("objects") if lister else "",
                              s["workdirs"], s["stream_mb"]), flush=True)
                if watch.compactions >= a.compactions:
                    ok_end = True
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(a.sample_every)
        finally:
            if drills is not None:
                drills.close()
            writer.close()
            rc = cb.stop(agent, signal.SIGTERM, 120)
            primary.close()
            cb.stop(pp)
        watch.poll()
        # What a stopped agent left behind: scratch directories, private servers.
        left_dirs = sorted(os.listdir(tmp))
        left_procs = processes_mentioning(tmp)
        if moto is not None:
            cb.stop(moto)
        return {"samples": samples, "after": {str(k): v for k, v in after.items()},
                "compactions": watch.compactions, "prunes": watch.prunes,
                "problems": watch.problems, "agent_exit": rc, "reached": ok_end,
                "left_dirs": left_dirs, "left_procs": left_procs,
                "writes": writer.writes, "behind_s": writer.behind_s,
                "drills": drills.runs if drills else None,
                "wall_s": time.monotonic() - t0}


def report(res, args):
    samples = res["samples"]
    if not samples:
        raise SystemExit("no samples taken")
    n = res["compactions"]
    print()
    print("RSS after compaction k (first sample at or after it), MB:")
    marks = [k for k in (0, 1, 2, 3, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300) if k <= n]
    if n not in marks:
        marks.append(n)
    after = res["after"]
    print("  " + "  ".join("%d: %.1f" % (k, after[str(k)]["VmRSS"]) for k in marks
                           if str(k) in after))
    fit = [s for s in samples if s["compactions"] >= args.warmup]
    # Growth is what stays: the fit is over each compaction's floor (the lowest RSS sampled
    # between it and the next), not over every sample, where a pass or a drill caught
    # mid-flight is a transient spike that the peak goal covers.
    floors = {}
    for s in fit:
        k = s["compactions"]
        if k not in floors or s["VmRSS"] < floors[k]["VmRSS"]:
            floors[k] = s
    fl = sorted(floors.values(), key=lambda s: s["compactions"])
    per_comp = slope([s["compactions"] for s in fl], [s["VmRSS"] for s in fl]) if fl else None
    per_s = slope([s["t"] for s in fl], [s["VmRSS"] for s in fl]) if fl else None
    all_comp = slope([s["compactions"] for s in fit], [s["VmRSS"] for s in fit]) if fit else None
    stream_rate = samples[-1]["stream_mb"] / max(1e-9, samples[-1]["t"])  # MB/s of stream
    per_stream_gb = (per_s / stream_rate * 1000) if per_s is not None and stream_rate else None
    peak = max(s["VmHWM"] for s in samples)
    half = len(fit) // 2
    early, late = fit[:half], fit[half:]

    def bound(key, slack):
        if not early or not late or any(s.get(key) is None for s in fit):
            return None, None, "NOT MEASURED"
        e, lt = max(s[key] for s in early), max(s[key] for s in late)
        return e, lt, ("met" if lt <= e + slack else "NOT met")

    wall_h = samples[-1]["t"] / 3600
    print()
    print("%d compactions, %d prunes in %.0f s; %.0f MB of stream (%.1f MB/s), %d writes; agent "
          "CPU %.0f s" % (n, res["prunes"], samples[-1]["t"], samples[-1]["stream_mb"],
                         stream_rate, res["writes"], samples[-1]["cpu_s"]))
    if per_comp is not None:
        print("RSS growth after the first %d compactions (fit over each compaction's floor): "
              "%+.4f MB per compaction, %+.1f MB per hour of this run (%+.2f MB per GB of "
              "stream); at --base-every 1h that is %+.1f MB a day" % (
                  args.warmup, per_comp, per_s * 3600, per_stream_gb or 0, per_comp * 24))
        print("  (over every sample, spikes included: %+.4f MB per compaction)" % all_comp)
    print("RSS: first sample %.1f MB, last %.1f MB, min/median/max after warm-up %.1f / %.1f / "
          "%.1f MB; peak (VmHWM) %.1f MB" % (
              samples[0]["VmRSS"], samples[-1]["VmRSS"], min(s["VmRSS"] for s in fit or samples),
              statistics.median(s["VmRSS"] for s in fit or samples),
              max(s["VmRSS"] for s in fit or samples), peak))
    if res["behind_s"] > 0:
        print("the writer fell more than 1 s behind its rate for %.1f s in all" % res["behind_s"])
    drills = res["drills"]
    if drills is not None:
        failed = [r for r in drills if r["rc"] != 0]
        if drills:
            print("verify drills: %d, %d failed; wall median %.2f s, max %.2f s; their peak RSS "
                  "max %.1f MB" % (len(drills), len(failed),
                                   statistics.median(r["s"] for r in drills),
                                   max(r["s"] for r in drills),
                                   max(r["peak_rss_mb"] for r in drills)))
        for r in failed[:3]:
            print("  drill %d exited %d; its output: %s" % (r["n"], r["rc"], r["out"]))
    problems = res["problems"]
    errors = [p for p in problems if " ERROR " in p or "ERROR" in p.split()[1:2]]
    print("agent log: %d warnings or errors%s" % (len(problems), "; first: " + problems[0]
                                                  if problems else ""))
    print("agent exit code %s; left behind: %d work dirs %s, %d processes %s" % (
        res["agent_exit"], len(res["left_dirs"]), res["left_dirs"][:3], len(res["left_procs"]),
        res["left_procs"][:3]))
    print()
    rows = [
        ("compactions reached", str(n), ">= %d" % args.compactions,
         "met" if n >= args.compactions else "NOT met"),
        ("agent peak RSS (VmHWM), MB", cb.fmt(peak, "{:.1f}"), "<= %.0f" % GOAL_RSS_MB,
         cb.verdict(peak, GOAL_RSS_MB, False)),
        ("RSS growth per compaction, MB (after %d)" % args.warmup, cb.fmt(per_comp, "{:+.4f}"),
         "<= %.2f" % GOAL_SLOPE_MB, cb.verdict(per_comp, GOAL_SLOPE_MB, False)),
        ("  (informative) RSS growth per hour of this run, MB",
         cb.fmt(per_s * 3600 if per_s is not None else None, "{:+.1f}"), "-", "-"),
    ]
    for key, label, slack in (("fds", "open fds", SLACK_FDS), ("Threads", "threads", SLACK_THREADS),
                              ("files", "spool files", SLACK_FILES),
                              ("objects", "remote objects", SLACK_FILES)):
        if key == "objects" and args.store != "s3":
            continue
        e, lt, v = bound(key, slack)
        rows.append(("%s max, later half vs earlier (+%d)" % (label, slack),
                     "%s vs %s" % (lt, e), "bounded", v))
    wd = max(s["workdirs"] for s in samples)
    ch = max(s["children"] for s in samples)
    rows.append(("work dirs / private servers at once, max", "%d / %d" % (wd, ch), "<= 2 / 2",
                 "met" if wd <= 2 and ch <= 2 else "NOT met"))
    rows.append(("left after stop: work dirs + processes",
                 str(len(res["left_dirs"]) + len(res["left_procs"])), "0",
                 "met" if not res["left_dirs"] and not res["left_procs"] else "NOT met"))
    rows.append(("agent exit code", str(res["agent_exit"]), "0",
                 "met" if res["agent_exit"] == 0 else "NOT met"))
    rows.append(("agent ERROR lines", str(len(errors)), "0", "met" if not errors else "NOT met"))
    if drills is not None:
        rows.append(("verify drills passed", "%d/%d" % (len(drills) - len(failed), len(drills)),
                     "all", "met" if drills and not failed else "NOT met"))
    cb.summary_table(rows)
    summary = {"compactions": n, "peak_rss_mb": peak, "rss_per_compaction_mb": per_comp,
               "rss_per_compaction_all_samples_mb": all_comp,
               "rss_per_hour_mb": per_s * 3600 if per_s is not None else None,
               "rss_per_stream_gb_mb": per_stream_gb, "wall_h": wall_h,
               "rss_after": {k: after[str(k)]["VmRSS"] for k in marks if str(k) in after},
               "verdicts": {r[0]: r[3] for r in rows}}
    return summary, all(r[3] in ("met", "-") for r in rows)


def main():
    ap = argparse.ArgumentParser(
        description="Soak: compaction, retention (and uploads, verify drills) at a fast cadence "
                    "under a steady load; the agent's RSS, fds, threads, files over time.",
        epilog="Examples:\n"
               "  bench/soak.sh                                  # short: 40 compactions, ~4 min\n"
               "  bench/soak.sh --long                           # >= 100 compactions\n"
               "  bench/soak.sh --store s3                       # remote store on moto\n"
               "  bench/soak.sh --drill-every 60                 # a verify drill every minute\n"
               "  bench/soak.sh --report run.json                # a saved run's report again\n"
               "  bench/soak.sh --populate 1000000 --populate-bytes 1000 --base-every 20",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compactions", type=int, default=40,
                    help="stop after this many bases were made (default 40; --long: 110)")
    ap.add_argument("--max-minutes", type=float, default=10,
                    help="stop after this long in any case (default 10; --long: 40)")
    ap.add_argument("--long", action="store_true", help="--compactions 110 --max-minutes 40")
    ap.add_argument("--base-every", type=float, default=3,
                    help="capture --base-every, seconds (default 3)")
    ap.add_argument("--keep", type=float, default=20, help="capture --keep, seconds (default 20)")
    ap.add_argument("--segment-mib", type=int, default=1, help="capture --segment-mib (default 1)")
    ap.add_argument("--populate", type=int, default=100000,
                    help="DEBUG POPULATE this many keys before the agent attaches, so every base "
                         "has this much data (default 100000)")
    ap.add_argument("--populate-bytes", type=int, default=200,
                    help="value size of the populated keys (default 200)")
    ap.add_argument("--rate", type=int, default=3000, help="SET/s during the soak (default 3000)")
    ap.add_argument("--keys", type=int, default=100000,
                    help="key space of the writes, key:0.. as DEBUG POPULATE names them, so the "
                         "dataset stays bounded (default 100000)")
    ap.add_argument("--value-bytes", type=int, default=100,
                    help="value size of the writes, base64 of random bytes (default 100)")
    ap.add_argument("--store", choices=["local", "s3"], default="local",
                    help="local directory, or s3 on a moto server (default local)")
    ap.add_argument("--drill-every", type=float, default=0,
                    help="run flashback verify against the store every this many seconds "
                         "(default 0: no drills)")
    ap.add_argument("--sample-every", type=float, default=2, help="seconds (default 2)")
    ap.add_argument("--print-every", type=float, default=15, help="seconds (default 15)")
    ap.add_argument("--warmup", type=int, default=5,
                    help="compactions left out of the growth fit (default 5)")
    ap.add_argument("--flashback", default=os.path.join(REPO, "target", "release", "flashback"),
                    help="the flashback binary (default target/release/flashback)")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--moto", default=ub.default_moto(),
                    help="moto_server for --store s3 (default $FLASHBACK_TEST_MOTO or the "
                         "cache of scripts/install-s3-test-server.sh)")
    ap.add_argument("--workdir", help="where the primary and the store live (default: a new "
                    "directory under $TMPDIR); use a real disk, not tmpfs")
    ap.add_argument("--keep-workdir", action="store_true", help="keep the work directory")
    ap.add_argument("--json", help="also write the samples and the summary to this file")
    ap.add_argument("--report", metavar="JSON", help="print the report of a run saved with "
                    "--json again (with this script's current analysis), run nothing")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        old = argparse.Namespace(**saved["args"])
        print("report of %s (git %s, %s)" % (args.report, saved.get("git"), saved.get("redis")))
        _summary, ok = report(saved["result"], old)
        sys.exit(0 if ok else 1)
    if args.long:
        args.compactions = max(args.compactions, 110)
        args.max_minutes = max(args.max_minutes, 40)
    if min(args.compactions, args.rate, args.keys, args.segment_mib) < 1 or \
            min(args.base_every, args.keep, args.sample_every, args.max_minutes) <= 0:
        ap.error("--compactions, --rate, --keys, --segment-mib, --base-every, --keep, "
                 "--sample-every and --max-minutes must be positive")
    if args.warmup >= args.compactions:
        ap.error("--warmup must be below --compactions")
    for name, path in (("--flashback", args.flashback), ("--redis-server", args.redis_server)) + \
            ((("--moto", args.moto),) if args.store == "s3" else ()):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            ap.error("%s %s: not an executable file%s" % (
                name, path, {"--flashback": "; run cargo build --release first",
                             "--moto": "; run scripts/install-s3-test-server.sh"}.get(
                    name, "; install redis-server")))

    signal.signal(signal.SIGINT, cb.on_signal)
    signal.signal(signal.SIGTERM, cb.on_signal)
    atexit.register(cb.cleanup)
    work = args.workdir or tempfile.mkdtemp(prefix="flashback-soak-")
    os.makedirs(work, exist_ok=True)
    if not args.keep_workdir:
        atexit.register(shutil.rmtree, work, True)
    b = Soak(args, work)
    # A private copy: someone rebuilding target/ mid-run must not swap the binary under us.
    b.flashback = os.path.join(work, "flashback")
    shutil.copy2(args.flashback, b.flashback)
    # compaction and verify start redis-server from PATH: make it the one given.
    os.environ["PATH"] = os.path.dirname(os.path.abspath(args.redis_server)) + os.pathsep + \
        os.environ.get("PATH", "")

    ver = subprocess.run([args.redis_server, "--version"], capture_output=True,
                         text=True).stdout.strip()
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    print("flashback soak benchmark: %s" % " ".join(sys.argv[1:]))
    print("  nproc %d, %s" % (os.cpu_count(), ver))
    print("  flashback binary %s (built %s); this checkout at git %s; work dir %s" % (
        args.flashback, time.strftime("%Y-%m-%d %H:%M",
                                      time.localtime(os.path.getmtime(args.flashback))),
        head or "?", work))
    print("  store %s; --base-every %gs --keep %gs --segment-mib %d; load %d SET/s of %d-byte "
          "random values over %d keys; drills %s" % (
              args.store, args.base_every, args.keep, args.segment_mib, args.rate,
              args.value_bytes, args.keys,
              "every %g s" % args.drill_every if args.drill_every else "off"))
    print("  load average at start: %s" % " ".join(open("/proc/loadavg").read().split()[:3]),
          flush=True)
    out = {"args": vars(args), "redis": ver, "git": head, "nproc": os.cpu_count(),
           "loadavg_start": open("/proc/loadavg").read().split()[:3]}
    res = b.run()
    out["result"] = res
    summary, ok = report(res, args)
    out["summary"] = summary
    out["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    print()
    print("load average at end: %s; wall time %.0f s" % (" ".join(out["loadavg_end"]),
                                                         res["wall_s"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
