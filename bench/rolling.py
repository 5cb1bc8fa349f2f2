#!/usr/bin/env python3
"""Rolling bases (issue 12): restore at T against a bare load of an RDB of the state at T.

A source is populated (DEBUG POPULATE), then overwritten at a steady rate (the dataset stays
the same size) while `flashback capture` records it: once with --rolling-bases, once without
(the default: scheduled rebuilds at --base-every 1h, none within the run). For the rolling run,
at several instants T: `flashback restore --at T --rdb` is timed, then a bare redis-server
loading that RDB (start to loading:0 and PONG) is timed in the same run; the ratio per instant
is printed (goal <= 1.25). The agent's CPU seconds and peak RSS (its warm redis-server included)
are printed for both runs.

Python 3 standard library only; needs redis-server on PATH and target/release/flashback
(FLASHBACK_BIN overrides). Usage: bench/rolling.sh [--keys N] [--value-size B] [--seconds S]
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("FLASHBACK_BIN", os.path.join(ROOT, "target/release/flashback"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def enc(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(1 << 16)
            if not d:
                raise EOFError
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t in (b"+", b"-", b":"):
            return rest
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(1 << 16)
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if t == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise ValueError(line)

    def call(self, *args):
        self.s.sendall(enc(*args))
        return self.reply()

    def pipeline(self, cmds):
        self.s.sendall(b"".join(enc(*c) for c in cmds))
        return [self.reply() for _ in cmds]


def start_server(port, d, extra=()):
    p = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
         "--save", "", "--appendonly", "no", "--logfile", os.path.join(d, "redis.log"), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p


def wait_loaded(port, deadline=300):
    end = time.time() + deadline
    while time.time() < end:
        try:
            c = Conn(port)
            if c.call("PING") == b"PONG":
                info = c.call("INFO", "persistence").decode()
                if "loading:0" in info:
                    return c
        except (OSError, EOFError, ValueError):
            pass
        time.sleep(0.005)
    raise RuntimeError("server on %d never loaded" % port)


def proc_cpu_rss(pid):
    """(cpu seconds, rss bytes) of pid and its children (the warm redis-server)."""
    tick = os.sysconf("SC_CLK_TCK")
    total_cpu, total_rss = 0.0, 0
    pids = [pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        pids += [int(x) for x in out.split()]
    except OSError:
        pass
    for p in pids:
        try:
            f = open("/proc/%d/stat" % p).read().rsplit(")", 1)[1].split()
            total_cpu += (int(f[11]) + int(f[12])) / tick
            total_rss += int(f[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError):
            pass
    return total_cpu, total_rss


def run_capture(args, rolling, work):
    port = free_port()
    sdir = os.path.join(work, "src-%s" % rolling)
    os.makedirs(sdir)
    src = start_server(port, sdir, ["--enable-debug-command", "yes"])
    c = wait_loaded(port)
    c.call("DEBUG", "POPULATE", args.keys, "key", args.value_size)
    store = os.path.join(work, "store-%s" % rolling)
    log = open(os.path.join(work, "agent-%s.log" % rolling), "w")
    cmd = [BIN, "capture", "--source", "redis://127.0.0.1:%d" % port, "--store", store,
           "--segment-mib", "4", "--segment-age", "2s"]
    if rolling:
        cmd += ["--rolling-bases", "--replay-budget", str(args.budget)]
    agent = subprocess.Popen(cmd, stdout=log, stderr=log)
    # Online: the source lists a replica at its offset.
    while b"state=online" not in c.call("INFO", "replication"):
        time.sleep(0.05)
    cpu0, _ = proc_cpu_rss(agent.pid)
    value = b"x" * args.value_size
    instants, peak_rss = [], 0
    start = time.time()
    marks = [start + args.seconds * f for f in (0.3, 0.5, 0.7, 0.9)]
    i = 0
    while time.time() - start < args.seconds:
        batch = [("SET", b"key:%d" % ((i * 7919 + j) % args.keys), value) for j in range(500)]
        i += 1
        c.pipeline(batch)
        if marks and time.time() >= marks[0]:
            marks.pop(0)
            time.sleep(1.5)  # let the agent take it in (it acks what it made durable)
            instants.append(int(time.time() * 1000))
            time.sleep(0.01)
        if i % 20 == 0:
            peak_rss = max(peak_rss, proc_cpu_rss(agent.pid)[1])
        time.sleep(args.pause)
    time.sleep(2)
    cpu1, rss = proc_cpu_rss(agent.pid)
    peak_rss = max(peak_rss, rss)
    agent.terminate()
    agent.wait(timeout=120)
    src.terminate()
    src.wait()
    return store, instants, cpu1 - cpu0, peak_rss, i * 500


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=400000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--pause", type=float, default=0.01, help="seconds between 500-SET batches")
    ap.add_argument("--budget", type=float, default=0.25)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-rolling-")
    try:
        off = run_capture(args, False, work)
        on = run_capture(args, True, work)
        store, instants = on[0], on[1]
        nbases = sum(len(os.listdir(os.path.join(g, "base")))
                     for g in (os.path.join(r, "generations", x)
                               for r in [os.path.join(store, "sources", s) for s in os.listdir(os.path.join(store, "sources"))]
                               for x in os.listdir(os.path.join(r, "generations"))))
        alog = open(os.path.join(work, "agent-True.log")).read().splitlines()
        made = [l for l in alog if "rolling base " in l]
        print("last rolling base: " + (made[-1][made[-1].find("rolling base"):] if made else "none"))
        print("rolling run: %d writes in %.0f s, %d bases stored" % (on[4], args.seconds, nbases))
        print("instant  restore_s  bare_load_s  ratio  rdb_bytes")
        ratios = []
        for k, t in enumerate(instants):
            rdb = os.path.join(work, "at%d.rdb" % k)
            at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t / 1000)) + ".%03dZ" % (t % 1000)
            t0 = time.time()
            r = subprocess.run([BIN, "restore", "--store", store, "--at", at, "--rdb", rdb],
                               capture_output=True, text=True)
            restore_s = time.time() - t0
            if r.returncode != 0:
                print(r.stdout, r.stderr, file=sys.stderr)
                sys.exit(1)
            d = os.path.join(work, "bare%d" % k)
            os.makedirs(d)
            shutil.copy(rdb, os.path.join(d, "state.rdb"))
            port = free_port()
            t0 = time.time()
            p = start_server(port, d, ["--dbfilename", "state.rdb"])
            wait_loaded(port)
            bare_s = time.time() - t0
            p.terminate()
            p.wait()
            ratio = restore_s / bare_s
            ratios.append(ratio)
            print("T%d       %.2f       %.2f         %.2f   %d" % (k, restore_s, bare_s, ratio, os.path.getsize(rdb)))
            for line in r.stdout.splitlines():
                if line.startswith(("applied:", "restore time", "estimate:")):
                    print("    " + line)
        print("max ratio %.2f (goal <= %.2f)" % (max(ratios), 1 + args.budget))
        print("agent CPU s during the load: off %.1f, rolling %.1f (+%.1f)" % (off[2], on[2], on[2] - off[2]))
        print("agent peak RSS MiB (with its warm server): off %.0f, rolling %.0f (+%.0f)" % (
            off[3] / 2**20, on[3] / 2**20, (on[3] - off[3]) / 2**20))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
