#!/bin/bash
# MC/S where the links, not the CPUs, are the limit (issue 19 point 2): one rsiscsi session over N
# rate-limited links against libiscsi's one session and N sessions, on the links lab (bench/links.sh).
# Usage: bench/links-compare.sh [--links N] [--setups "equal unequal"] [--runs 3] [--time 5]
#          [--warmup 1] [--targets "tgt istgt"] [--workloads "seq-read seq-write rand-read-qd32"]
#          [--rows "libiscsi-1 libiscsi-N rsiscsi-1 rsiscsi-N"] [--policies "failover-only ..."]
#          [--equal-rate 1gbit] [--unequal-rates 1gbit,1gbit,200mbit,200mbit]
# Rows, on each target and workload (1 MiB sequential read / write at iodepth 16 per connection or
# session, 4 KiB random read at iodepth 32 per connection or session):
#   libiscsi-1  fio's libiscsi engine, one session on link 1
#   libiscsi-N  fio, N sessions, one per link (one job section per portal): the multipath-style peer
#   rsiscsi-1   rsiscsi bench, one connection on link 1
#   rsiscsi-N   rsiscsi bench, one session of N connections, one per link, once per policy
# alternating the rows' order run by run (forward, backward). Medians of MiB/s, IOPS, the
# initiator's CPU s/GiB, each row as a fraction of the links' sum (the link rates as TCP payload
# MiB/s), beside iperf3 one stream per link when the lab runs iperf3 servers. Setups: "equal" (N x
# --equal-rate) and "unequal" (--unequal-rates; weighted gets weights from the rates, e.g. 5,5,1,1).
# Prints a verdict line per goal of issue 19. Writes a Markdown table to
# bench/results/<date>-links.md (RESULT=FILE to override), raw JSON to $BENCH_DIR/links-<timestamp>/.
# The lab: used as found when it is up with N links (the rates of a lab it did not start are set
# per block of runs with `links.sh rate` and put back after it), brought up (and down at exit)
# otherwise. Each block of runs holds the lab's lock (links.sh locked), as the link-loss tests do.
# Needs root, bench/peer-tools.sh done, a release build (RSISCSI=binary to use another).
# Environment: RETRIES (3) attempts more for a run disturbed by another user of the lab,
# QUIET_WAIT (60) s to wait for quiet links before a run, LOCK_WAIT (900) s for the lab's lock.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/rsiscsi-bench}
RSISCSI=${RSISCSI:-$ROOT/target/release/rsiscsi}
FIO=${FIO:-$BENCH_DIR/fio/fio}
LINKS_SH=${LINKS_SH:-$HERE/links.sh}
LINKS_ENV=${RSISCSI_LINKS_ENV:-/tmp/rsiscsi-links/links.env}
LINKS=4
SETUPS="equal unequal"
RUNS=3
TIME=5
WARMUP=1
TARGETS="tgt istgt"
WORKLOADS="seq-read seq-write rand-read-qd32"
ROWS="libiscsi-1 libiscsi-N rsiscsi-1 rsiscsi-N"
RETRIES=${RETRIES:-3}
POLICIES="failover-only round-robin round-robin-subset least-queue-depth weighted"
EQUAL_RATE=1gbit
UNEQUAL_RATES=""
while (($#)); do
  case "$1" in
    --links) LINKS=$2; shift 2 ;;
    --setups) SETUPS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --time) TIME=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    --policies) POLICIES=$2; shift 2 ;;
    --equal-rate) EQUAL_RATE=$2; shift 2 ;;
    --unequal-rates) UNEQUAL_RATES=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "links-compare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
say() { printf 'links-compare.sh: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (the links lab, tc)"
for t in ip tc python3 timeout ss; do command -v "$t" >/dev/null || die "$t missing"; done
[ -x "$RSISCSI" ] || die "no $RSISCSI: cargo build --release -p rsiscsi"
[ -x "$LINKS_SH" ] || die "no links lab script at $LINKS_SH"
"$FIO" --enghelp 2>/dev/null | grep -qw libiscsi || die "no fio with libiscsi at $FIO: run bench/peer-tools.sh"
[[ "$LINKS" =~ ^[1-8]$ ]] || die "--links takes a number from 1 to 8, not $LINKS"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive number, not $RUNS"
[[ "$TIME" =~ ^[0-9]+(\.[0-9]+)?$ && "$WARMUP" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--time and --warmup take seconds"
for s in $SETUPS; do case "$s" in equal | unequal) ;; *) die "--setups takes equal and/or unequal, not $s" ;; esac; done
for t in $TARGETS; do case "$t" in tgt | istgt) ;; *) die "--targets takes tgt and/or istgt, not $t" ;; esac; done
for w in $WORKLOADS; do case "$w" in seq-read | seq-write | rand-read-qd32) ;; *) die "unknown workload $w" ;; esac; done
for r in $ROWS; do case "$r" in libiscsi-1 | libiscsi-N | rsiscsi-1 | rsiscsi-N) ;; *) die "unknown row $r" ;; esac; done
for p in $POLICIES; do
  case "$p" in failover-only | round-robin | round-robin-subset | least-queue-depth | weighted) ;; *) die "unknown policy $p" ;; esac
done
# The unequal setup's default: the first half of the links at 1gbit, the rest at 200mbit.
if [ -z "$UNEQUAL_RATES" ]; then
  for ((k = 1; k <= LINKS; k++)); do
    if ((k <= (LINKS + 1) / 2)); then r=1gbit; else r=200mbit; fi
    UNEQUAL_RATES+="${UNEQUAL_RATES:+,}$r"
  done
fi
IFS=, read -r -a _u <<<"$UNEQUAL_RATES"
((${#_u[@]} == LINKS)) || die "--unequal-rates needs $LINKS rates, got ${#_u[@]}"

OUT="$BENCH_DIR/links-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT" || die "cannot create $OUT"
RAW="$OUT/raw.jsonl"
: >"$RAW"
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
STARTED_AT=$(date -u +%FT%TZ)

# ---------- the lab ----------
LAB_STARTED=no
ORIG_RATES=""   # rates of a lab found up, put back at exit if changed: "K=bits K=bits ..."
RATES_CHANGED=no
CHILD_PIDS=()
cleanup() {
  local p
  for p in "${CHILD_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  if [ "$LAB_STARTED" = yes ]; then
    say "taking the links lab down (this script brought it up)"
    "$LINKS_SH" down >"$OUT/lab-down.log" 2>&1 || say "links.sh down failed: $(tail -2 "$OUT/lab-down.log")"
  else
    restore_rates
  fi
}
# restore_rates: the rates of a lab this script found up, back as they were before use_setup.
restore_rates() {
  local kv
  [ "$RATES_CHANGED" = yes ] || return 0
  for kv in $ORIG_RATES; do
    "$LINKS_SH" rate "${kv%%=*}" "${kv#*=}bit" >>"$OUT/lab-rate.log" 2>&1 ||
      say "could not put link ${kv%%=*}'s rate back to ${kv#*=} bit/s"
  done
  RATES_CHANGED=no
}
# The lab's advisory lock (links.sh locked, RSISCSI_LINKS_LOCK): held for one block of runs (a
# target and workload of one setup, or the iperf3 pass), with that setup's rates set inside it and
# put back before it is released, so that the link-loss tests and link-loss.sh, which take it too,
# never run during a measurement nor see this script's rates. Waits up to LOCK_WAIT (900) s.
LOCK_FD=""
lock_lab() {
  local f=${RSISCSI_LINKS_LOCK:-$LAB_DIR/lock}
  mkdir -p "$(dirname "$f")" && touch "$f" || return 1
  exec {LOCK_FD}>>"$f" || return 1
  flock -w "${LOCK_WAIT:-900}" "$LOCK_FD" && return 0
  exec {LOCK_FD}>&-
  LOCK_FD=""
  return 1
}
unlock_lab() {
  [ -n "$LOCK_FD" ] || return 0
  flock -u "$LOCK_FD"
  exec {LOCK_FD}>&-
  LOCK_FD=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# rate_bits RATE: tc's rate spelling (1gbit, 200mbit, 500kbit, 1000000bit) in bits per second.
rate_bits() {
  python3 - "$1" <<'PY'
import re, sys
m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmgt]?)(bit|bps)?", sys.argv[1].strip().lower())
if not m:
    sys.exit("bad rate " + sys.argv[1])
n = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[m.group(2)]
print(int(n * (8 if m.group(3) == "bps" else 1)))
PY
}
load_env() {
  [ -r "$LINKS_ENV" ] || return 1
  # shellcheck disable=SC1090  # the lab's env file: export NAME='value' lines
  . "$LINKS_ENV"
}
# tbf_rate NETNS DEV: the tbf rate (bits/s) on DEV (NETNS "" = the root namespace), empty if none.
tbf_rate() {
  local ns=()
  [ -n "$1" ] && ns=(-n "$1")
  tc "${ns[@]}" -j qdisc show dev "$2" 2>/dev/null | python3 -c '
import json, sys
try:
    for q in json.load(sys.stdin):
        if q.get("kind") == "tbf":
            print(int(q["options"]["rate"]) * 8)  # tc -j gives bytes per second
            break
except Exception:
    pass'
}
TNS=rsiscsi-links-t
LAB_DIR=/tmp/rsiscsi-links
# link_rates: the tbf rates now on every link, "K=bits" for K=1..LINKS, from both ends (the lower).
link_rates() {
  local k a b
  for ((k = 1; k <= LINKS; k++)); do
    a=$(tbf_rate "" "rsl-i$k")
    b=$(tbf_rate "$TNS" "rsl-t$k")
    [ -n "$a" ] && [ -n "$b" ] || return 1
    ((a < b)) && b=$a
    printf '%s=%s ' "$k" "$b"
  done
}
lab_links() { # how many links the running lab has (rsl-iK in the root namespace)
  local k=0
  while ip link show "rsl-i$((k + 1))" >/dev/null 2>&1; do k=$((k + 1)); done
  echo "$k"
}
# use_setup RATES: the lab up with LINKS links at RATES (comma separated), whatever it was before.
use_setup() {
  local want=() k have bits cur
  IFS=, read -r -a want <<<"$1"
  have=$(lab_links)
  if ((have == 0)); then
    say "bringing the links lab up: $LINKS links at $1"
    "$LINKS_SH" up --links "$LINKS" --rates "$1" >"$OUT/lab-up.log" 2>&1 || {
      tail -5 "$OUT/lab-up.log" >&2
      die "bench/links.sh up failed (log: $OUT/lab-up.log)"
    }
    LAB_STARTED=yes
  elif ((have != LINKS)); then
    if [ "$LAB_STARTED" = yes ]; then
      "$LINKS_SH" down >"$OUT/lab-down.log" 2>&1
      LAB_STARTED=no
      use_setup "$1"
      return
    fi
    die "the links lab is up with $have links, not $LINKS (someone else's: take it down or use --links $have)"
  fi
  cur=$(link_rates) || die "cannot read the links' tbf rates (tc qdisc show dev rsl-iK / in $TNS rsl-tK)"
  [ "$LAB_STARTED" = yes ] || ORIG_RATES=$cur
  for ((k = 1; k <= LINKS; k++)); do
    bits=$(rate_bits "${want[$((k - 1))]}") || die "bad rate ${want[$((k - 1))]}"
    if [[ " $cur " != *" $k=$bits "* ]]; then
      say "link $k: rate -> ${want[$((k - 1))]}"
      [ "$LAB_STARTED" = yes ] || RATES_CHANGED=yes
      "$LINKS_SH" rate "$k" "${want[$((k - 1))]}" >>"$OUT/lab-rate.log" 2>&1 ||
        die "bench/links.sh rate $k ${want[$((k - 1))]} failed: $(tail -2 "$OUT/lab-rate.log")"
    fi
  done
  cur=$(link_rates) || die "cannot read the links' tbf rates"
  for ((k = 1; k <= LINKS; k++)); do
    bits=$(rate_bits "${want[$((k - 1))]}")
    [[ " $cur " == *" $k=$bits "* ]] || die "link $k runs at ${cur}, not ${want[$((k - 1))]}"
  done
  load_env || die "no lab env file at $LINKS_ENV"
  TNS=${RSISCSI_LINKS_NS:-$TNS}
  LAB_DIR=${RSISCSI_LINKS_DIR:-$LAB_DIR}
}
load_env || true # the lock's path, before the first block takes it
# The target daemons' PIDs (for their threads' CPU), from the lab's PID files.
target_pid() {
  local f
  case "$1" in
    tgt) f=$LAB_DIR/tgt/tgtd.pid ;;
    istgt) f=$LAB_DIR/istgt/istgt.launch.pid ;;
  esac
  cat "$f" 2>/dev/null
}
port_of() { case "$1" in tgt) echo "${RSISCSI_LINKS_TGT_PORT:-3260}" ;; istgt) echo "${RSISCSI_LINKS_ISTGT_PORT:-3261}" ;; esac; }
iqn_of() { case "$1" in tgt) echo "${RSISCSI_LINKS_TGT_IQN:-iqn.2026-12.lab.links:tgt}" ;; istgt) echo "${RSISCSI_LINKS_ISTGT_IQN:-iqn.2026-12.lab.links:istgt}" ;; esac; }
lun_of() { case "$1" in tgt) echo "${RSISCSI_LINKS_TGT_LUN:-1}" ;; istgt) echo "${RSISCSI_LINKS_ISTGT_LUN:-0}" ;; esac; }
# Link K's addresses: from the env file's lists, else the lab's layout.
nth() { local a; IFS=, read -r -a a <<<"$1"; echo "${a[$(($2 - 1))]:-}"; }
taddr() { local v; v=$(nth "${RSISCSI_LINKS_TARGET_ADDRS:-}" "$1"); echo "${v:-198.19.$1.2}"; }
iaddr() { local v; v=$(nth "${RSISCSI_LINKS_INITIATOR_ADDRS:-}" "$1"); echo "${v:-198.19.$1.1}"; }
url_of() { echo "iscsi://$(taddr "$2"):$(port_of "$1")/$(iqn_of "$1")/$(lun_of "$1")"; }

# ---------- what this rsiscsi build offers ----------
# A copy of the binary: others' rebuilds of target/release during the runs must not change it.
cp "$RSISCSI" "$OUT/rsiscsi" || die "cannot copy $RSISCSI"
RSISCSI_BUILT=$(date -u -r "$RSISCSI" +%FT%TZ)
RSISCSI="$OUT/rsiscsi"
HELP=$("$RSISCSI" bench --help 2>&1)
HAS_FROM=no HAS_LOCAL=no HAS_WEIGHTS=no
grep -q -- '--from' <<<"$HELP" && HAS_FROM=yes
grep -q -- '--add-portal <HOST\[:PORT\]\[@' <<<"$HELP" && HAS_LOCAL=yes
grep -q -- '@LOCAL' <<<"$HELP" && HAS_LOCAL=yes
grep -q -- '--weights' <<<"$HELP" && HAS_WEIGHTS=yes
say "rsiscsi bench: --from $HAS_FROM, --add-portal ...@LOCAL $HAS_LOCAL, --weights $HAS_WEIGHTS"

# ---------- measuring ----------
# measured PID COMMAND...: runs COMMAND; writes to $MEASURED the target's threads' CPU (threads.py:
# busiest thread, % of one core) and, inside the measured window (1.5 s after the warm-up to 1.5 s
# before the end), the host's idle share and the cores the target used (as bench/compare.sh).
MEASURED="$OUT/threads.json"
measured() {
  local pid=$1 t0 t1 sampler rc cmd
  shift
  rm -f "$OUT/host.before" "$OUT/host.after" "$OUT/window.before" "$OUT/window.after" "$OUT/foreign.mid"
  python3 "$HERE/threads.py" snap "$pid" >"$OUT/threads.before" 2>/dev/null
  t0=$(date +%s.%N)
  "$@" &
  cmd=$!
  (
    sleep "$(python3 -c "print($WARMUP + 1.5)")" && python3 "$HERE/threads.py" host >"$OUT/host.before" &&
      python3 "$HERE/threads.py" snap "$pid" >"$OUT/window.before" && foreign "$cmd" >"$OUT/foreign.mid" &&
      sleep "$(python3 -c "print(max($TIME - 3, 0.5))")" && python3 "$HERE/threads.py" host >"$OUT/host.after" &&
      python3 "$HERE/threads.py" snap "$pid" >"$OUT/window.after"
  ) 2>/dev/null &
  sampler=$!
  wait "$cmd"
  rc=$?
  t1=$(date +%s.%N)
  wait "$sampler"
  python3 "$HERE/threads.py" snap "$pid" >"$OUT/threads.after" 2>/dev/null
  python3 "$HERE/threads.py" diff "$OUT/threads.before" "$OUT/threads.after" \
    "$(python3 -c "print($t1 - $t0)")" "$OUT/host.before" "$OUT/host.after" \
    "$OUT/window.before" "$OUT/window.after" >"$MEASURED" 2>/dev/null || echo '{}' >"$MEASURED"
  return $rc
}
# Other iSCSI connections over the links when a run starts (a test using the lab at the same time
# shares the links and the targets' CPU): counted and kept with the run, flagged in the table.
# foreign [PID]: how many, leaving out those of PID's process tree (the run being measured).
tree_pids() { local c; echo "$1"; for c in $(pgrep -P "$1"); do tree_pids "$c"; done; }
foreign() {
  local mine=" "
  [ -n "${1:-}" ] && mine=" $(tree_pids "$1" | tr '\n' ' ')"
  ss -Htnp state established '( dport = :3260 or dport = :3261 )' 2>/dev/null | grep ' 198\.19\.' |
    python3 -c '
import re, sys
mine = set(sys.argv[1].split())
n = 0
for line in sys.stdin:
    pids = set(re.findall(r"pid=(\d+)", line))
    if not pids & mine:
        n += 1
print(n)' "$mine"
}
# links_state: one character per link, 1 = both ends up (a link another user took down shows as 0).
# After a colon, the links' carrier changes so far (a link taken down and up during a run moves
# it), after another the root side's tbf rates (someone's `links.sh rate` during a run changes them).
links_state() {
  local k st="" c=0 n rates=""
  for ((k = 1; k <= LINKS; k++)); do
    if [ "$(cat "/sys/class/net/rsl-i$k/operstate" 2>/dev/null)" = up ]; then st+=1; else st+=0; fi
    n=$(cat "/sys/class/net/rsl-i$k/carrier_changes" 2>/dev/null || echo 0)
    c=$((c + n))
    rates+="$(tc qdisc show dev "rsl-i$k" 2>/dev/null | awk '/tbf/ { for (i = 1; i <= NF; i++) if ($i == "rate") print $(i + 1) }'),"
  done
  echo "$st:$c:$rates"
}
# wait_quiet: up to QUIET_WAIT (60) s for the links to be free of other iSCSI connections and all up (another
# user of the lab, e.g. the link-loss tests, shares the links and the targets' CPU).
wait_quiet() {
  local i st
  for ((i = 0; i < ${QUIET_WAIT:-60}; i++)); do
    st=$(links_state)
    [ "$(foreign)" = 0 ] && [[ "${st%%:*}" != *0* ]] && return 0
    ((i == 0)) && say "  waiting for the links to be quiet (other iSCSI connections or a link down)"
    sleep 1
  done
  return 1
}
ATTEMPT=1
# record SETUP TARGET WORKLOAD ROW POLICY CONNS RUN KIND FILE FOREIGN LINKS-BEFORE LINKS-AFTER;
# returns 3 when the run was disturbed (other connections before or after it, a link down).
record() {
  local fa fm
  fa=$(foreign)
  fm=$(cat "$OUT/foreign.mid" 2>/dev/null || echo 0)
  ((fm > fa)) && fa=$fm
  python3 - "$@" "$fa" "$ATTEMPT" "$MEASURED" >>"$RAW" <<'PY'
import json, sys
setup, target, wl, row, policy, conns, run, kind, path, foreign, before, after, fa, attempt, measured = sys.argv[1:16]
try:
    text = open(path).read()
    d = json.loads(text[text.index("{"):])  # fio may print notes before its JSON
except Exception as e:
    d = {"error": "no JSON: %s" % e}
try:
    tcpu = json.load(open(measured))
except Exception:
    tcpu = {}
load = open("/proc/loadavg").read().split()[0]
print(json.dumps({"setup": setup, "target": target, "workload": wl, "row": row, "policy": policy,
                  "conns": int(conns), "run": int(run), "kind": kind, "data": d, "target_cpu": tcpu,
                  "foreign": int(foreign or 0) + int(fa or 0), "links_before": before, "links_after": after,
                  "attempt": int(attempt),
                  "load1": float(load), "file": path}))
PY
  local st=${11}
  [ "${10}" = 0 ] && [ "$fa" = 0 ] && [ "${11}" = "${12}" ] && [[ "${st%%:*}" != *0* ]] || return 3
}
note_setup() { # SETUP RATES-AS-BITS IPERF-READ-FILES IPERF-WRITE-FILES
  python3 - "$@" >>"$RAW" <<'PY'
import json, sys
setup, rates, reads, writes = sys.argv[1:5]
mtu = {}
for k in range(1, len(rates.split(",")) + 1):
    try:
        mtu[k] = int(open(f"/sys/class/net/rsl-i{k}/mtu").read())
    except OSError:
        mtu[k] = 1500
print(json.dumps({"setup": setup, "kind": "setup", "rates_bits": [int(x) for x in rates.split(",")],
                  "mtu": [mtu[k] for k in sorted(mtu)], "iperf_read": reads.split(), "iperf_write": writes.split()}))
PY
}

# iperf3, one stream per link at once, each direction: the links' ceiling as TCP sees it. Uses the
# lab's iperf3 servers (198.19.K.2, port RSISCSI_LINKS_IPERF3_PORT) when it runs them.
iperf_links() { # SETUP -> prints "READ-FILES|WRITE-FILES"
  local setup=$1 dir k p pids files r="" w="" try bad f rev
  local port=${RSISCSI_LINKS_IPERF3_PORT:-5201}
  command -v iperf3 >/dev/null || { echo "|"; return; }
  ip netns exec "$TNS" ss -ltnH "sport = :$port" 2>/dev/null | grep -q . || { echo "|"; return; }
  for dir in read write; do
    for try in 1 2 3; do
      wait_quiet
      pids=() files="" bad=0
      for ((k = 1; k <= LINKS; k++)); do
        f="$OUT/$setup.iperf3-$dir-$k.json" rev=()
        [ "$dir" = read ] && rev=(-R) # the target side sends: the direction of a read
        timeout -k 5 $((${TIME%.*} + 20)) iperf3 -c "$(taddr "$k")" -B "$(iaddr "$k")" -p "$port" "${rev[@]}" \
          -l 1M -t "$TIME" -O "${WARMUP%.*}" -J >"$f" 2>/dev/null &
        pids+=($!)
        files+=" $f"
      done
      for p in "${pids[@]}"; do wait "$p" || bad=1; done
      sleep 1 # the servers take a moment before they accept the next test
      ((bad == 0)) && break
      say "  an iperf3 client ($dir) failed (try $try of 3)"
    done
    if [ "$dir" = read ]; then r=$files; else w=$files; fi
  done
  echo "$r|$w"
}

# ---------- the runs ----------
LIMIT=$((${TIME%.*} + ${WARMUP%.*} + 40))
fio_name() { printf '%s' "$1" | sed 's/:/\\:/g'; }
declare -A RW=([seq-read]=read [seq-write]=write [rand-read-qd32]=randread)
declare -A BS=([seq-read]=1M [seq-write]=1M [rand-read-qd32]=4k)
declare -A QD=([seq-read]=16 [seq-write]=16 [rand-read-qd32]=32)
SIZE=1G

# weights_of RATES: one weight per link in proportion to its rate, the slowest 1 (1gbit,200mbit -> 5,1).
weights_of() {
  python3 - "$1" <<'PY'
import sys
r = [int(x) for x in sys.argv[1].split(",")]
low = min(r)
print(",".join(str(max(1, round(x / low))) for x in r))
PY
}

# run_one SETUP TARGET WORKLOAD ROW POLICY RUN WEIGHTS
run_one() {
  local setup=$1 t=$2 wl=$3 row=$4 policy=$5 r=$6 weights=$7
  local rw=${RW[$wl]} bs=${BS[$wl]} qd=${QD[$wl]} tpid k f n
  tpid=$(target_pid "$t")
  local fc lb sfx=""
  ((ATTEMPT > 1)) && sfx=".a$ATTEMPT"
  wait_quiet
  fc=$(foreign)
  [ "$fc" = 0 ] || say "  note: $fc other iSCSI connection(s) over the links at the start of this run"
  lb=$(links_state)
  [[ "${lb%%:*}" != *0* ]] || say "  note: a link is down at the start of this run (links $lb)"
  case "$row" in
    libiscsi-1 | libiscsi-N)
      n=1
      [ "$row" = libiscsi-N ] && n=$LINKS
      f="$OUT/$setup.$t.$wl.$row.$r$sfx.fio.json"
      local job="$OUT/$setup.$t.$wl.$row.ini"
      printf '[global]\nioengine=libiscsi\nsize=%s\nrw=%s\nbs=%s\niodepth=%s\nruntime=%s\nramp_time=%s\ntime_based\ngroup_reporting\n' \
        1g "$rw" "$bs" "$qd" "$TIME" "$WARMUP" >"$job"
      for ((k = 1; k <= n; k++)); do printf '[link%d]\nfilename=%s\n' "$k" "$(fio_name "$(url_of "$t" "$k")")" >>"$job"; done
      say "$setup $t $wl run $r: $row (fio/libiscsi, $n session(s))"
      measured "$tpid" timeout -k 5 "$LIMIT" "$FIO" --output-format=json "$job" >"$f" 2>"$f.err" ||
        say "  fio failed: $(tail -1 "$f.err")"
      record "$setup" "$t" "$wl" "$row" "" "$n" "$r" fio "$f" "$fc" "$lb" "$(links_state)"
      ;;
    rsiscsi-1 | rsiscsi-N)
      n=1
      [ "$row" = rsiscsi-N ] && n=$LINKS
      local args=(bench "$(url_of "$t" 1)" --rw "$rw" --bs "$bs" --iodepth $((qd * n)) --time "$TIME"
        --warmup "$WARMUP" --size "$SIZE" --json --no-progress)
      [ "$HAS_FROM" = yes ] && args+=(--from "$(iaddr 1)")
      if ((n > 1)); then
        args+=(--connections "$n" --policy "$policy")
        for ((k = 2; k <= n; k++)); do
          if [ "$HAS_LOCAL" = yes ]; then
            args+=(--add-portal "$(taddr "$k"):$(port_of "$t")@$(iaddr "$k")")
          else
            args+=(--add-portal "$(taddr "$k"):$(port_of "$t")")
          fi
        done
        [ "$policy" = weighted ] && [ "$HAS_WEIGHTS" = yes ] && args+=(--weights "$weights")
      fi
      f="$OUT/$setup.$t.$wl.$row${policy:+.$policy}.$r$sfx.ours.json"
      say "$setup $t $wl run $r: $row${policy:+ $policy}"
      printf '%q ' "$RSISCSI" "${args[@]}" >"$f.cmd"
      measured "$tpid" timeout -k 5 "$LIMIT" "$RSISCSI" "${args[@]}" >"$f" 2>"$f.err" ||
        say "  rsiscsi failed: $(tail -1 "$f.err")"
      record "$setup" "$t" "$wl" "$row" "$policy" "$n" "$r" ours "$f" "$fc" "$lb" "$(links_state)"
      ;;
  esac
}

for setup in $SETUPS; do
  if [ "$setup" = equal ]; then
    rates=$EQUAL_RATE
    for ((k = 2; k <= LINKS; k++)); do rates+=",$EQUAL_RATE"; done
  else
    rates=$UNEQUAL_RATES
  fi
  bits=""
  for x in ${rates//,/ }; do bits+="${bits:+,}$(rate_bits "$x")"; done
  weights=$(weights_of "$bits")
  say "setup $setup: rates $rates (weights for weighted: $weights)"
  lock_lab || die "could not take the lab's lock in ${LOCK_WAIT:-900} s"
  use_setup "$rates"
  say "$setup: iperf3, one stream per link"
  io=$(iperf_links "$setup")
  note_setup "$setup" "$bits" "${io%%|*}" "${io#*|}"
  restore_rates
  unlock_lab
  # The row list of one (target, workload): every row, rsiscsi-N once per policy.
  list=()
  for row in $ROWS; do
    if [ "$row" = rsiscsi-N ]; then
      ((LINKS > 1)) || continue
      for p in $POLICIES; do list+=("$row:$p"); done
    elif [ "$row" = libiscsi-N ] && ((LINKS == 1)); then
      continue
    else
      list+=("$row:")
    fi
  done
  for t in $TARGETS; do
    for wl in $WORKLOADS; do
      if ! lock_lab; then
        say "could not take the lab's lock in ${LOCK_WAIT:-900} s: $setup $t $wl left out"
        continue
      fi
      use_setup "$rates"
      for ((r = 1; r <= RUNS; r++)); do
        # Alternate the order run by run so that no row always runs first (or after the same one).
        order=("${list[@]}")
        if ((r % 2 == 0)); then
          order=()
          for ((i = ${#list[@]} - 1; i >= 0; i--)); do order+=("${list[$i]}"); done
        fi
        for item in "${order[@]}"; do
          # A run disturbed by another user of the lab is done again (RETRIES times at most); the
          # table keeps the last attempt and says how many were disturbed.
          for ((ATTEMPT = 1; ATTEMPT <= RETRIES + 1; ATTEMPT++)); do
            run_one "$setup" "$t" "$wl" "${item%%:*}" "${item#*:}" "$r" "$weights" && break
            ((ATTEMPT <= RETRIES)) && say "  disturbed: again"
          done
        done
      done
      restore_rates
      unlock_lab
    done
  done
done

mkdir -p "$HERE/results"
RESULT=${RESULT:-$HERE/results/$(date +%F)-links.md}
python3 "$HERE/links_table.py" "$RAW" --runs "$RUNS" --time "$TIME" --warmup "$WARMUP" --links "$LINKS" \
  --commit "$COMMIT" --dirty "$DIRTY" --started "$STARTED_AT" \
  --features "from=$HAS_FROM local=$HAS_LOCAL weights=$HAS_WEIGHTS" --built "$RSISCSI_BUILT" >"$RESULT.tmp" ||
  die "the table could not be made (raw data in $OUT)"
mv "$RESULT.tmp" "$RESULT"
cat "$RESULT"
say "table written to $RESULT; raw output in $OUT"
