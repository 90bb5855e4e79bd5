#!/bin/bash
# MC/S across separate network paths: does one session carry more over several connections when
# each connection's path, not the target, is the limit? (On loopback tgtd's one thread is the limit
# before any link is; see bench/README.md.)
# Usage: bench/paths.sh [--paths "1 2 4"] [--rate 2gbit] [--runs 3] [--time 5] [--warmup 1]
# Creates two network namespaces (rsb-ini, rsb-tgt) joined by one veth pair per path, each end
# limited to RATE by tbf (a NIC of that speed), starts tgtd (null backing store, 10.77.K.2:3260 for
# path K) in rsb-tgt, and runs 1 MiB reads at iodepth 16 per connection from rsb-ini:
#   ours      one session, P connections, the added ones over paths 2..P (bench --add-portal)
#   libiscsi  P sessions (fio jobs), one per path: what an initiator without MC/S can do
#   iperf3    P streams, one per path (the links' ceiling)
# alternating ours/libiscsi RUNS times per P. Writes a Markdown table to results/<date>-paths.md
# (RESULT=FILE: elsewhere). Everything is removed on exit. Needs root, iproute2, tgt, iperf3,
# bench/peer-tools.sh done and a release build (RSISCSI=binary to use another).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/rsiscsi-bench}
RSISCSI=${RSISCSI:-$ROOT/target/release/rsiscsi}
FIO=${FIO:-$BENCH_DIR/fio/fio}
PATHS="1 2 4"
RATE=2gbit
RUNS=3
TIME=5
WARMUP=1
while (($#)); do
  case "$1" in
    --paths) PATHS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --time) TIME=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "paths.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
say() { printf 'paths.sh: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, tgtd)"
for t in ip tc tgtd tgtadm iperf3 python3; do command -v "$t" >/dev/null || die "$t missing: run bench/peer-tools.sh"; done
[ -x "$RSISCSI" ] || die "no $RSISCSI: cargo build --release -p rsiscsi"
"$FIO" --enghelp 2>/dev/null | grep -qw libiscsi || die "no fio with libiscsi at $FIO: run bench/peer-tools.sh"
MAXP=0
for p in $PATHS; do
  [[ "$p" =~ ^[1-8]$ ]] || die "--paths takes numbers from 1 to 8, not $p"
  ((p > MAXP)) && MAXP=$p
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive number"

INI=rsb-ini
TGT=rsb-tgt
CTL=3302 # tgtd's management socket (/var/run/tgtd/socket.3302); bench/targets.sh uses 3300
IQN=iqn.2024-01.bench.paths:null
OUT="$BENCH_DIR/paths-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
TGTD_PID=""
IPERF_PIDS=()
cleanup() {
  local p
  for p in "${IPERF_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  if [ -n "$TGTD_PID" ] && kill -0 "$TGTD_PID" 2>/dev/null; then
    # tgtd ignores SIGTERM: shut it down through its management socket.
    tgtadm -C "$CTL" --lld iscsi --mode target --op delete --force --tid 1 >/dev/null 2>&1
    tgtadm -C "$CTL" --op delete --mode system >/dev/null 2>&1
    for _ in $(seq 50); do kill -0 "$TGTD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$TGTD_PID" 2>/dev/null
  fi
  ip netns del "$INI" 2>/dev/null
  ip netns del "$TGT" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------- the paths ----------
for ns in "$INI" "$TGT"; do
  ip netns list | grep -qw "$ns" && die "network namespace $ns exists (another run, or left over: ip netns del $ns)"
  ip netns add "$ns" || die "cannot create network namespace $ns"
  ip -n "$ns" link set lo up
done
for ((k = 1; k <= MAXP; k++)); do
  ip link add "rsbi$k" netns "$INI" type veth peer name "rsbt$k" netns "$TGT" || die "cannot create veth pair $k"
  ip -n "$INI" addr add "10.77.$k.1/24" dev "rsbi$k"
  ip -n "$TGT" addr add "10.77.$k.2/24" dev "rsbt$k"
  for end in "$INI rsbi$k" "$TGT rsbt$k"; do
    # shellcheck disable=SC2086  # split into namespace and device on purpose
    set -- $end
    ip -n "$1" link set "$2" up
    # A link of RATE each way: tbf with room for a 64 KiB TSO burst and 20 ms of queue.
    tc -n "$1" qdisc add dev "$2" root tbf rate "$RATE" burst 256kb latency 20ms || die "tc tbf $RATE on $2"
  done
done

# ---------- the target ----------
ip netns exec "$TGT" env MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456 \
  setsid tgtd -f -C "$CTL" --iscsi portal=0.0.0.0:3260 >"$OUT/tgtd.log" 2>&1 </dev/null &
TGTD_PID=$!
for _ in $(seq 100); do
  ip netns exec "$TGT" ss -ltnH 'sport = :3260' | grep -q . && break
  kill -0 "$TGTD_PID" 2>/dev/null || die "tgtd exited at start: $(tail -3 "$OUT/tgtd.log")"
  sleep 0.1
done
ip netns exec "$TGT" ss -ltnH 'sport = :3260' | grep -q . || die "tgtd is not listening after 10 s"
A="tgtadm -C $CTL --lld iscsi"
$A --mode target --op new --tid 1 --targetname "$IQN" || die "tgtadm target"
$A --mode logicalunit --op new --tid 1 --lun 1 --backing-store null-1g --bstype null || die "tgtadm lun"
$A --mode target --op bind --tid 1 --initiator-address ALL || die "tgtadm bind"
for kv in MaxRecvDataSegmentLength=262144 MaxBurstLength=16776192 FirstBurstLength=1048576 MaxConnections=8; do
  $A --mode target --op update --tid 1 --name "${kv%=*}" --value "${kv#*=}" || die "tgtadm $kv"
done
for ((k = 1; k <= MAXP; k++)); do
  ip netns exec "$TGT" iperf3 -s -B "10.77.$k.2" -p 5201 >"$OUT/iperf3-server-$k.log" 2>&1 &
  IPERF_PIDS+=($!)
done
sleep 0.5

url() { echo "iscsi://10.77.$1.2:3260/$IQN/1"; }
LIMIT=$((${TIME%.*} + ${WARMUP%.*} + 30))
RAW="$OUT/raw.jsonl"
: >"$RAW"
note() { python3 -c 'import json,sys; print(json.dumps({"paths": int(sys.argv[1]), "side": sys.argv[2], "file": sys.argv[3], "tgtd": sys.argv[4]}))' "$@" >>"$RAW"; }
for p in $PATHS; do
  adds=()
  for ((k = 2; k <= p; k++)); do adds+=(--add-portal "10.77.$k.2:3260"); done
  jobfile="$OUT/fio-$p.ini"
  printf '[global]\nioengine=libiscsi\nsize=1g\nrw=read\nbs=1M\niodepth=16\nruntime=%s\nramp_time=%s\ntime_based\ngroup_reporting\n' \
    "$TIME" "$WARMUP" >"$jobfile"
  for ((k = 1; k <= p; k++)); do printf '[path%d]\nfilename=%s\n' "$k" "$(url "$k" | sed 's/:/\\:/g')" >>"$jobfile"; done
  for ((r = 1; r <= RUNS; r++)); do
    f="$OUT/ours-$p-$r.json"
    say "$p path(s), run $r: rsiscsi"
    python3 "$HERE/threads.py" snap "$TGTD_PID" >"$OUT/t0" 2>/dev/null
    t0=$(date +%s.%N)
    ip netns exec "$INI" timeout -k 5 "$LIMIT" "$RSISCSI" bench "$(url 1)" --rw read --bs 1M --iodepth $((16 * p)) \
      --connections "$p" "${adds[@]}" --time "$TIME" --warmup "$WARMUP" --size 1G --json >"$f" 2>"$f.err" ||
      say "  rsiscsi failed: $(tail -1 "$f.err")"
    t1=$(date +%s.%N)
    python3 "$HERE/threads.py" snap "$TGTD_PID" >"$OUT/t1" 2>/dev/null
    python3 "$HERE/threads.py" diff "$OUT/t0" "$OUT/t1" "$(python3 -c "print($t1 - $t0)")" >"$f.tgtd" 2>/dev/null ||
      echo '{}' >"$f.tgtd"
    note "$p" ours "$f" "$f.tgtd"
    f="$OUT/fio-$p-$r.json"
    say "$p path(s), run $r: fio/libiscsi, $p session(s)"
    ip netns exec "$INI" timeout -k 5 "$LIMIT" "$FIO" --output-format=json "$jobfile" >"$f" 2>"$f.err" ||
      say "  fio failed: $(tail -1 "$f.err")"
    note "$p" fio "$f" ""
  done
  say "$p path(s): iperf3, one stream per path"
  cpids=()
  for ((k = 1; k <= p; k++)); do
    ip netns exec "$INI" timeout -k 5 "$LIMIT" iperf3 -c "10.77.$k.2" -p 5201 -R -l 1M -t "$TIME" -J \
      >"$OUT/iperf3-$p-$k.json" 2>/dev/null &
    cpids+=($!)
  done
  for c in "${cpids[@]}"; do wait "$c" || say "  an iperf3 client failed"; done
  for ((k = 1; k <= p; k++)); do note "$p" iperf3 "$OUT/iperf3-$p-$k.json" ""; done
done

mkdir -p "$HERE/results"
RESULT=${RESULT:-$HERE/results/$(date +%F)-paths.md}
python3 - "$RAW" "$RUNS" "$TIME" "$WARMUP" "$RATE" "$HERE" >"$RESULT.tmp" <<'PY'
import json, statistics, sys, os, platform, subprocess
raw, runs, secs, warm, rate, here = sys.argv[1:7]
sys.path.insert(0, here)
from fio_json import figures

def load(path):
    try:
        text = open(path).read()
        return json.loads(text[text.index("{"):])  # fio may print notes before its JSON
    except Exception:
        return None

res = {}
for line in open(raw):
    r = json.loads(line)
    p, side, d = r["paths"], r["side"], load(r["file"])
    slot = res.setdefault(p, {"ours": [], "fio": [], "iperf3": 0.0, "tgtd": []})
    if d is None:
        continue
    if side == "ours":
        if d.get("bw_mib_s") and d.get("errors", 0) == 0:
            slot["ours"].append((d["bw_mib_s"], d["cpu_s_per_gib"]))
            t = load(r["tgtd"]) or {}
            if t.get("busiest_pct") is not None:
                slot["tgtd"].append(t["busiest_pct"])
    elif side == "fio":
        f = figures(d, jobs=p)  # one job section per path, in one group
        if f is not None:
            slot["fio"].append((f["bw"], f["cpu"]))
    else:
        try:
            slot["iperf3"] += d["end"]["sum_received"]["bits_per_second"] / 8 / (1 << 20)
        except (KeyError, TypeError):
            pass

def med(xs, i):
    return statistics.median(x[i] for x in xs) if xs else None

def fmt(x, nd=0):
    return "n/a" if x is None else f"{x:,.{nd}f}"

def ratio(a, b):
    return "n/a" if a is None or not b else f"{a / b:.2f}"

print(f"# MC/S across separate paths: rsiscsi against libiscsi (fio 3.33), {subprocess.getoutput('date -u +%FT%TZ')}\n")
print(f"Host: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}. One veth pair per path "
      f"between two network namespaces, each end limited to {rate} (tbf); tgtd with the null backing store. "
      f"1 MiB reads, iodepth 16 per connection, {runs} runs per side alternating, {secs} s after {warm} s "
      f"warm-up. Medians.\n")
print("| paths | iperf3, one stream per path, MiB/s | ours: one session, one connection per path, MiB/s | ours / iperf3 | ours / ours over 1 path | libiscsi: one session per path, MiB/s | ours / libiscsi | CPU s/GiB ours | CPU s/GiB libiscsi | tgtd's busiest thread % (ours) | runs ours/libiscsi |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
base = med(res.get(min(res), {}).get("ours", []), 0) if res and min(res) == 1 else None
for p in sorted(res):
    s = res[p]
    o, f = med(s["ours"], 0), med(s["fio"], 0)
    tb = statistics.median(s["tgtd"]) if s["tgtd"] else None
    print(f"| {p} | {fmt(s['iperf3'] or None)} | {fmt(o)} | {ratio(o, s['iperf3'])} | {ratio(o, base)} | {fmt(f)} | "
          f"{ratio(o, f)} | {fmt(med(s['ours'], 1), 3)} | {fmt(med(s['fio'], 1), 3)} | {fmt(tb)} | {len(s['ours'])}/{len(s['fio'])} |")
print("\nPer-run MiB/s (ours | libiscsi):\n")
for p in sorted(res):
    s = res[p]
    print(f"- {p} path(s): " + ", ".join(f"{x[0]:,.0f}" for x in s["ours"]) + " | " + ", ".join(f"{x[0]:,.0f}" for x in s["fio"]))
PY
mv "$RESULT.tmp" "$RESULT"
cat "$RESULT"
say "table written to $RESULT; raw output in $OUT"
