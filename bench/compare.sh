#!/bin/bash
# Side-by-side benchmark: rsiscsi bench (A) against fio's libiscsi engine (B) on loopback targets.
# Usage: bench/compare.sh [--runs N] [--time S] [--warmup S] [--targets "tgt-ram tgt-null istgt"]
#                         [--workloads "seq-read ..."]
# Starts bench/targets.sh (ports 3300/3301/3309), runs every workload A B A B ... N times per
# target, prints a Markdown table of medians and ratios (ours/libiscsi) and writes it to
# bench/results/<date>.md. The targets are stopped on exit. Needs root, bench/peer-tools.sh done,
# and a release build: cargo build --release -p rsiscsi. RESULT=FILE writes the table elsewhere.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/rsiscsi-bench}
export BENCH_DIR
RSISCSI=${RSISCSI:-$ROOT/target/release/rsiscsi}
FIO=${FIO:-$BENCH_DIR/fio/fio}
RUNS=3
TIME=10
WARMUP=2
TARGETS="tgt-ram tgt-null istgt"
# name:rw:bs:iodepth:connections. For N connections ours runs iodepth*N commands over one
# N-connection session; libiscsi (no MC/S) runs N sessions (fio numjobs=N) of iodepth each.
ALL_WORKLOADS="seq-read:read:1M:16:1 seq-write:write:1M:16:1 rand-read-qd32:randread:4k:32:1
rand-write-qd32:randwrite:4k:32:1 rand-read-qd1:randread:4k:1:1 rand-write-qd1:randwrite:4k:1:1
read-2conn:read:1M:16:2 read-4conn:read:1M:16:4"
WORKLOADS=""
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --time) TIME=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    -h | --help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
say() { printf 'compare.sh: %s\n' "$*" >&2; }
[ -x "$RSISCSI" ] || { say "no $RSISCSI: cargo build --release -p rsiscsi"; exit 1; }
"$FIO" --enghelp 2>/dev/null | grep -qw libiscsi || { say "no fio with libiscsi at $FIO: run bench/peer-tools.sh"; exit 1; }
command -v python3 >/dev/null || { say "python3 is needed for the table"; exit 1; }

OUT="$BENCH_DIR/compare-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
RAW="$OUT/raw.jsonl"
: >"$RAW"
IPERF_PID=""
cleanup() {
  if [ -n "$IPERF_PID" ] && kill -0 "$IPERF_PID" 2>/dev/null; then kill "$IPERF_PID"; fi
  "$HERE/targets.sh" down
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$HERE/targets.sh" up >/dev/null || exit 1

url_of() { "$HERE/targets.sh" urls | awk -v t="$1" '$1 == t {print $2}'; }
# fio wants the colons of its filename escaped.
fio_name() { printf '%s' "$1" | sed 's/:/\\:/g'; }
# The daemon serving a target: tgtd (one main thread does all the iSCSI work) or istgt.
target_pid() {
  case "$1" in
    tgt-*) cat "$BENCH_DIR/tgt/tgtd.pid" ;;
    istgt) cat "$BENCH_DIR/istgt/istgt.launch.pid" ;;
  esac 2>/dev/null
}
# measured PID COMMAND...: runs COMMAND and writes, to $MEASURED, the CPU the target's threads
# used meanwhile (bench/threads.py: all threads and the busiest, as % of one core), and inside the
# measured window (sampled from 1.5 s after warm-up, by then both sides have logged in and warmed
# up, to 1.5 s before the end) the host's idle share and the cores the target used.
measured() {
  local pid=$1 t0 t1 sampler
  shift
  rm -f "$OUT/host.before" "$OUT/host.after" "$OUT/window.before" "$OUT/window.after"
  python3 "$HERE/threads.py" snap "$pid" >"$OUT/threads.before" 2>/dev/null
  (
    sleep "$(python3 -c "print($WARMUP + 1.5)")" && python3 "$HERE/threads.py" host >"$OUT/host.before" &&
      python3 "$HERE/threads.py" snap "$pid" >"$OUT/window.before" &&
      sleep "$(python3 -c "print(max($TIME - 3, 0.5))")" && python3 "$HERE/threads.py" host >"$OUT/host.after" &&
      python3 "$HERE/threads.py" snap "$pid" >"$OUT/window.after"
  ) 2>/dev/null &
  sampler=$!
  t0=$(date +%s.%N)
  "$@"
  local rc=$?
  t1=$(date +%s.%N)
  wait "$sampler"
  python3 "$HERE/threads.py" snap "$pid" >"$OUT/threads.after" 2>/dev/null
  python3 "$HERE/threads.py" diff "$OUT/threads.before" "$OUT/threads.after" \
    "$(python3 -c "print($t1 - $t0)")" "$OUT/host.before" "$OUT/host.after" \
    "$OUT/window.before" "$OUT/window.after" >"$MEASURED" 2>/dev/null ||
    echo '{}' >"$MEASURED"
  return $rc
}
MEASURED="$OUT/threads.json"
# record TARGET WORKLOAD SIDE RUN JSON-FILE
record() {
  python3 - "$@" "$MEASURED" >>"$RAW" <<'PY'
import json, sys
t, w, side, run, path, measured = sys.argv[1:7]
try:
    text = open(path).read()
    # fio may print "note: ..." lines on stdout before its JSON.
    d = json.loads(text[text.index("{"):])
except Exception as e:
    d = {"error": "no JSON: %s" % e}
try:
    tcpu = json.load(open(measured))
except Exception:
    tcpu = {}
print(json.dumps({"target": t, "workload": w, "side": side, "run": int(run), "data": d, "target_cpu": tcpu}))
PY
}

# Does this build of rsiscsi do MC/S? A refused --connections 2 means no.
MCS=yes
if ! timeout -k 5 30 "$RSISCSI" bench "$(url_of tgt-null)" --connections 2 --time 0.2 --warmup 0 --size 1G \
  --json >/dev/null 2>"$OUT/mcs-probe.err"; then
  MCS=no
  say "rsiscsi bench --connections 2 refused ($(head -c 200 "$OUT/mcs-probe.err")): multi-connection rows are n/a for ours"
fi

[ -n "$WORKLOADS" ] || WORKLOADS=$ALL_WORKLOADS
LIMIT=$((${TIME%.*} + ${WARMUP%.*} + 30))
for t in $TARGETS; do
  url=$(url_of "$t")
  [ -n "$url" ] || { say "unknown target $t"; continue; }
  tpid=$(target_pid "$t")
  for wl in $ALL_WORKLOADS; do
    IFS=: read -r name rw bs qd conns <<<"$wl"
    case " ${WORKLOADS//$'\n'/ } " in *" $name "* | *" $wl "*) ;; *) continue ;; esac
    for ((r = 1; r <= RUNS; r++)); do
      # A: ours
      f="$OUT/$t.$name.$r.ours.json"
      if [ "$conns" = 1 ] || [ "$MCS" = yes ]; then
        say "$t $name run $r: rsiscsi"
        measured "$tpid" timeout -k 5 "$LIMIT" "$RSISCSI" bench "$url" --rw "$rw" --bs "$bs" --iodepth $((qd * conns)) \
          --connections "$conns" --time "$TIME" --warmup "$WARMUP" --size 1G --json >"$f" 2>"$f.err" ||
          say "  rsiscsi failed: $(tail -1 "$f.err")"
        record "$t" "$name" ours "$r" "$f"
      fi
      # B: libiscsi through fio
      f="$OUT/$t.$name.$r.fio.json"
      say "$t $name run $r: fio/libiscsi"
      measured "$tpid" timeout -k 5 "$LIMIT" "$FIO" --name=J --ioengine=libiscsi --filename="$(fio_name "$url")" --size=1g \
        --rw="$rw" --bs="$bs" --iodepth="$qd" --numjobs="$conns" --group_reporting \
        --runtime="$TIME" --ramp_time="$WARMUP" --time_based --output-format=json >"$f" 2>"$f.err" ||
        say "  fio failed: $(tail -1 "$f.err")"
      record "$t" "$name" fio "$r" "$f"
    done
  done
done

# Loopback ceiling: iperf3 with 1 MiB writes, 1 and 2 streams.
IPERF_PORT=5299
iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT" >"$OUT/iperf3-server.log" 2>&1 &
IPERF_PID=$!
sleep 0.5
for p in 1 2; do
  timeout -k 5 $((${TIME%.*} + 20)) iperf3 -c 127.0.0.1 -p "$IPERF_PORT" -t "$TIME" -l 1M -P "$p" -J \
    >"$OUT/iperf3-P$p.json" 2>/dev/null || say "iperf3 -P $p failed"
done
kill "$IPERF_PID" 2>/dev/null
IPERF_PID=""

mkdir -p "$HERE/results"
RESULT=${RESULT:-$HERE/results/$(date +%F).md}
python3 - "$RAW" "$OUT" "$RUNS" "$TIME" "$WARMUP" "$MCS" "$HERE" >"$RESULT.tmp" <<'PY'
import json, statistics, sys, os, platform, subprocess
raw, out, runs, secs, warm, mcs, here = sys.argv[1:8]

def ours(d):
    if "bw_mib_s" not in d or d.get("errors", 1) and d.get("iops", 0) == 0:
        return None
    cpu = d["cpu_s_per_gib"]
    user = d.get("cpu_user_s_per_gib")
    return {"bw": d["bw_mib_s"], "iops": d["iops"], "cpu": cpu, "p99": d["lat_us"]["p99"],
            "errors": d.get("errors", 0), "user": 100 * user / cpu if user is not None and cpu else None}

sys.path.insert(0, here)
from fio_json import figures as fio

rows = {}
order = []
for line in open(raw):
    r = json.loads(line)
    key = (r["workload"], r["target"])
    if key not in rows:
        rows[key] = {"ours": [], "fio": []}
        order.append(key)
    v = ours(r["data"]) if r["side"] == "ours" else fio(r["data"])
    if v is not None:
        v["tbusy"] = r.get("target_cpu", {}).get("busiest_pct")
        v["idle"] = r.get("target_cpu", {}).get("host_idle_pct")
        # The target's CPU seconds per GiB moved: what it cost the host to serve this initiator.
        cores, mib = r.get("target_cpu", {}).get("window_cores"), v.get("bw")
        v["tcpu"] = cores * 1024 / mib if cores is not None and mib else None
        # CPU s/GiB spent in the kernel (system time): copies, TCP and wake-ups, which only fewer
        # or larger system calls lower. Over 0.7 of libiscsi's whole CPU, the CPU goal is out of
        # reach with these calls (bench/README "Round 10").
        v["kern"] = v["cpu"] * (1 - v["user"] / 100) if v.get("user") is not None else None
        rows[key][r["side"]].append(v)

def med(vals, k):
    xs = [v[k] for v in vals if v.get(k) is not None]
    return statistics.median(xs) if xs else None

def fmt(x, nd=0):
    return "n/a" if x is None else f"{x:,.{nd}f}"

def ratio(a, b):
    return "n/a" if a is None or b in (None, 0) else f"{a / b:.2f}"

print(f"# rsiscsi bench vs libiscsi (fio 3.33 libiscsi engine), {subprocess.getoutput('date -u +%FT%TZ')}\n")
print(f"Host: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}; loopback 127.0.0.1; "
      f"{runs} runs per side, alternating ours/libiscsi; {secs} s measured after {warm} s warm-up; "
      f"first 1 GiB of each LUN. Medians. MC/S in this rsiscsi build: {mcs}.\n")
print("| workload | target | ours | libiscsi | ratio | CPU s/GiB ours | CPU s/GiB libiscsi | CPU ratio | our kernel CPU ÷ libiscsi's CPU | user-space % of CPU ours/libiscsi | p99 µs ours | p99 µs libiscsi | target's busiest thread % ours/libiscsi | target CPU s/GiB ours/libiscsi | host idle % ours/libiscsi | runs ours/libiscsi |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for (w, t) in order:
    o, f = rows[(w, t)]["ours"], rows[(w, t)]["fio"]
    unit_k, unit, nd = ("bw", "MiB/s", 0) if ("read" == w.split("-")[0] or w.startswith("seq")) else ("iops", "IOPS", 0)
    a, b = med(o, unit_k), med(f, unit_k)
    ca, cb = med(o, "cpu"), med(f, "cpu")
    pa, pb = med(o, "p99"), med(f, "p99")
    ta, tb = med(o, "tbusy"), med(f, "tbusy")
    ua, ub = med(o, "user"), med(f, "user")
    ia, ib = med(o, "idle"), med(f, "idle")
    xa, xb = med(o, "tcpu"), med(f, "tcpu")
    ka = med(o, "kern")
    # The target's busiest thread at >= 95 % of a core during our runs: our figure is the target's
    # limit, not ours.
    bound = " **target-bound**" if ta is not None and ta >= 95 else ""
    # Under 5 % of the host idle inside our runs' measured window: initiator, target and the
    # kernel's work for both filled the CPUs they share.
    host_bound = " **host-bound**" if ia is not None and ia < 5 else ""
    print(f"| {w} | {t} | {fmt(a)} {unit if a is not None else ''} | {fmt(b)} {unit if b is not None else ''} | {ratio(a, b)} "
          f"| {fmt(ca, 3)} | {fmt(cb, 3)} | {ratio(ca, cb)} | {ratio(ka, cb)} | {fmt(ua)}/{fmt(ub)} | {fmt(pa)} | {fmt(pb)} | {fmt(ta)}/{fmt(tb)}{bound} | {fmt(xa, 3)}/{fmt(xb, 3)} | {fmt(ia)}/{fmt(ib)}{host_bound} | {len(o)}/{len(f)} |")

print("\nLoopback ceiling (iperf3 -l 1M):\n")
print("| streams | Gbit/s | MiB/s |")
print("|---:|---:|---:|")
for p in (1, 2):
    try:
        d = json.load(open(os.path.join(out, f"iperf3-P{p}.json")))
        bps = d["end"]["sum_received"]["bits_per_second"]
        print(f"| {p} | {bps / 1e9:.2f} | {bps / 8 / (1 << 20):,.0f} |")
    except Exception:
        print(f"| {p} | n/a | n/a |")

print("\nPer-run values (ours | libiscsi), in the table's unit:\n")
for (w, t) in order:
    o, f = rows[(w, t)]["ours"], rows[(w, t)]["fio"]
    k = "bw" if ("read" == w.split("-")[0] or w.startswith("seq")) else "iops"
    print(f"- {w} / {t}: " + ", ".join(f"{v[k]:,.0f}" for v in o) + " | " + ", ".join(f"{v[k]:,.0f}" for v in f))
PY
mv "$RESULT.tmp" "$RESULT"
cat "$RESULT"
say "table written to $RESULT; raw output in $OUT"
