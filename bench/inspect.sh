#!/usr/bin/env bash
# `flashback inspect` read rate against `redis-check-rdb` on the same RDB, in the same run
# (docs/benchmarks.md). Builds an RDB of at least --mb MB (default 200) with a mix of types in a
# private redis-server (Lua writes: strings, listpack and hashtable hashes, listpack and
# quicklist lists, intset/listpack/hashtable sets, listpack and skiplist zsets, streams, TTLs),
# then times each tool --repeats times (default 3, order alternating, the file in the page
# cache), and prints MB/s of each and the ratio of the medians. Needs redis-server and
# redis-check-rdb (the same version: the checker must read the file) and a release build.
#
#   bench/inspect.sh [--mb N] [--repeats N] [--keep FILE | --file FILE]
# --keep saves the generated RDB; --file times an existing RDB instead of generating one.
#   FLASHBACK=target/release/flashback REDIS_SERVER=redis-server REDIS_CHECK_RDB=redis-check-rdb
set -euo pipefail
cd "$(dirname "$0")/.."

mb=200 repeats=3 keep="" file=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --mb) mb=$2; shift 2 ;;
        --repeats) repeats=$2; shift 2 ;;
        --keep) keep=$2; shift 2 ;;
        --file) file=$2; shift 2 ;;
        *) echo "usage: bench/inspect.sh [--mb N] [--repeats N] [--keep FILE | --file FILE]" >&2; exit 2 ;;
    esac
done
flashback=${FLASHBACK:-${CARGO_TARGET_DIR:-target}/release/flashback}
server=${REDIS_SERVER:-redis-server}
checker=${REDIS_CHECK_RDB:-redis-check-rdb}
for b in "$flashback" "$server" "$checker"; do
    command -v "$b" >/dev/null || { echo "error: $b not found (cargo build --release -p flashback; apt install redis-server)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/flashback-bench-inspect.XXXXXX")
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
generate() {
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$server" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --dbfilename dump.rdb --logfile "$work/server.log" --daemonize no &
pid=$!
cli() { redis-cli -p "$port" "$@"; }
for _ in $(seq 100); do cli PING >/dev/null 2>&1 && break; sleep 0.05; done

# One call writes a batch of groups; every 100th group also gets the big encodings.
script='
local from, to = tonumber(ARGV[1]), tonumber(ARGV[2])
local pad = string.rep("v", 150)
for i = from, to do
  local k = "k" .. i
  redis.call("SET", "s:" .. k, pad .. i)
  redis.call("SET", "n:" .. k, i)
  local h = {}
  for f = 1, 12 do h[#h+1] = "field" .. f; h[#h+1] = "value-" .. i .. "-" .. f end
  redis.call("HSET", "h:" .. k, unpack(h))
  local l = {}
  for e = 1, 16 do l[#l+1] = "item-" .. i .. "-" .. e end
  redis.call("RPUSH", "l:" .. k, unpack(l))
  redis.call("SADD", "si:" .. k, i, i + 1, i + 2, i * 7)
  redis.call("SADD", "ss:" .. k, "a" .. i, "b" .. i, "c" .. i)
  redis.call("ZADD", "z:" .. k, 1, "one" .. i, 2.5, "two" .. i, -3, "three" .. i)
  if i % 3 == 0 then redis.call("PEXPIRE", "s:" .. k, 86400000 + i) end
  if i % 100 == 0 then
    local bh = {}
    for f = 1, 600 do bh[#bh+1] = "f" .. f; bh[#bh+1] = "value-" .. f .. "-" .. i end
    redis.call("HSET", "bh:" .. k, unpack(bh))
    for c = 1, 4 do
      local bl = {}
      for e = 1, 500 do bl[#bl+1] = "element-" .. e .. "-" .. i end
      redis.call("RPUSH", "bl:" .. k, unpack(bl))
    end
    local bz = {}
    for e = 1, 300 do bz[#bz+1] = e * 1.5; bz[#bz+1] = "member-" .. e .. "-" .. i end
    redis.call("ZADD", "bz:" .. k, unpack(bz))
    local bs = {}
    for e = 1, 600 do bs[#bs+1] = "m" .. e .. "-" .. i end
    redis.call("SADD", "bs:" .. k, unpack(bs))
    for e = 1, 40 do redis.call("XADD", "x:" .. k, "*", "event", e, "payload", pad) end
  end
end
return to'
sha=$(cli SCRIPT LOAD "$script")
batch=2000 next=1
while :; do
    cli EVALSHA "$sha" 0 "$next" $((next + batch - 1)) >/dev/null
    next=$((next + batch))
    used=$(cli INFO memory | tr -d '\r' | awk -F: '/^used_memory:/{print $2}')
    # The RDB comes to about a quarter of used memory for this mix; the file itself decides.
    if (( used > mb * 1000000 * 7 / 2 )); then
        cli SAVE >/dev/null
        size=$(stat -c %s "$work/dump.rdb")
        (( size >= mb * 1000000 )) && break
    fi
done
keys=$(cli DBSIZE)
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
rdb="$work/dump.rdb"
size=$(stat -c %s "$rdb")
[[ -n "$keep" ]] && cp "$rdb" "$keep"
}
if [[ -n "$file" ]]; then
    rdb=$file
    size=$(stat -c %s "$rdb")
    keys="?"
else
    generate
fi
cat "$rdb" >/dev/null   # into the page cache: both tools read from memory
echo "RDB: $size bytes, $keys keys, $(head -c 9 "$rdb") ($("$server" --version | awk '{print $3}'))"

# "wall cpu": elapsed seconds and the child's user+system CPU seconds. On a shared machine the
# CPU time is the steadier figure (the wall time includes waiting for a core).
time_of() {
    python3 - "$@" <<'PY'
import os, resource, subprocess, sys, time
t0 = time.monotonic()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.monotonic() - t0
if r.returncode != 0:
    sys.exit("error: %s failed: %s" % (" ".join(sys.argv[1:]), r.stderr.decode()[-300:]))
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print("%.4f %.4f" % (wall, u.ru_utime + u.ru_stime))
PY
}
declare -a ow oc tw tc
for r in $(seq "$repeats"); do
    if (( r % 2 )); then
        read -r a b <<<"$(time_of "$flashback" inspect "$rdb" --json)"; ow+=("$a"); oc+=("$b")
        read -r a b <<<"$(time_of "$checker" "$rdb")"; tw+=("$a"); tc+=("$b")
    else
        read -r a b <<<"$(time_of "$checker" "$rdb")"; tw+=("$a"); tc+=("$b")
        read -r a b <<<"$(time_of "$flashback" inspect "$rdb" --json)"; ow+=("$a"); oc+=("$b")
    fi
    printf 'run %d: flashback inspect %.3f s (cpu %.3f s), redis-check-rdb %.3f s (cpu %.3f s)\n' \
        "$r" "${ow[-1]}" "${oc[-1]}" "${tw[-1]}" "${tc[-1]}"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
mb_s() { echo "$size / 1000000 / $1" | bc -l; }
mo=$(median "${ow[@]}") mt=$(median "${tw[@]}") co=$(median "${oc[@]}") ct=$(median "${tc[@]}")
printf 'median wall: flashback inspect %.3f s = %.0f MB/s; redis-check-rdb %.3f s = %.0f MB/s; ratio %.2fx\n' \
    "$mo" "$(mb_s "$mo")" "$mt" "$(mb_s "$mt")" "$(echo "$mt / $mo" | bc -l)"
printf 'median cpu:  flashback inspect %.3f s = %.0f MB/s; redis-check-rdb %.3f s = %.0f MB/s; ratio %.2fx\n' \
    "$co" "$(mb_s "$co")" "$ct" "$(mb_s "$ct")" "$(echo "$ct / $co" | bc -l)"
if (( $(echo "$mo < $mt" | bc -l) )); then echo "goal met: faster than redis-check-rdb"; else echo "goal NOT met: slower than redis-check-rdb"; fi
