#!/bin/bash
# NBD export benchmark: 1 GiB copies to and from a LUN through `rsiscsi nbd` (A) against qemu's own
# libiscsi driver, run by qemu-img (B) and exported over NBD by qemu-nbd (C), on the loopback targets
# of bench/targets.sh (tgt-ram on 3300, istgt on 3301).
#   write  a 1 GiB random file (on /dev/shm) -> the LUN
#   read   the LUN -> a pre-filled 1 GiB file on /dev/shm (qemu-img cannot convert to /dev/null)
#   A:  rsiscsi nbd URL --socket S &   (ready when it prints its "serving" line)
#       nbdcopy SRC nbd+unix:///?socket=S   or   nbdcopy nbd+unix:///?socket=S DST   (defaults: our
#       export offers multi-conn, so nbdcopy opens 4 connections)
#       kill -INT: requests finish, SYNCHRONIZE CACHE, logout
#   A1: A with nbdcopy -C 1, the one connection nbdcopy opens to C (like for like with C)
#   B:  qemu-img convert -n -f raw -O raw SRC iscsi://...   or   ... iscsi://... DST (defaults)
#   C:  qemu-nbd -f raw -t -k S --pid-file P iscsi://... &   (qemu-nbd's defaults otherwise:
#       --cache=writeback, --aio=threads, --shared=1, so no multi-conn and nbdcopy opens 1 connection;
#       ready when S exists: qemu-nbd logs in before it listens), the same nbdcopy, kill -TERM
#       (flush, logout)
#   Z:  the ceiling of the NBD hop, no iSCSI at all: nbdkit -f -U S file F & (a server that costs
#       almost nothing: pread/pwrite of a file on /dev/shm; multi-conn, so nbdcopy opens 4
#       connections like A) + the same nbdcopy. F is the source file itself for reads (so the check
#       holds) and a scratch file for writes. A does all Z does plus the target and the iSCSI hop
#       on the same CPUs, so A cannot beat Z; Z/B shows whether A/B >= 1 is reachable at all.
#   F:  nbdcopy SRC DST (file to file on /dev/shm, no server): nbdcopy's own floor.
# A, A1 and C are timed twice: nbdcopy alone (login left out) and from the start of the server to
# its exit (login, copy, flush, logout), which is what B's one command does. CPU: user+system
# seconds of every process of a side (A, C: the server + nbdcopy; B: qemu-img), from GNU time.
# Usage: bench/nbd-compare.sh [--runs N] [--targets "tgt-ram istgt"] [--nbd-args "--connections 2"]
#                             [--nbdcopy-args "--requests 16"] [--sides "A A1 B C Z F"]
# Runs alternate A A1 B C Z F / F Z C B A1 A (the sides given); each read is checked against the
# file the writes put on the LUN. Prints Markdown tables of medians and writes them to bench/results/<date>-nbd.md
# (RESULT=FILE: elsewhere).
# Needs root, bench/peer-tools.sh done (qemu-block-extra, qemu-utils, libnbd-bin, nbdkit for Z) and
# a release build: cargo build --release -p rsiscsi. The targets are stopped on exit.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/rsiscsi-bench}
export BENCH_DIR
RSISCSI=${RSISCSI:-$ROOT/target/release/rsiscsi}
RUNS=5
TARGETS="tgt-ram istgt"
NBD_ARGS=""
NBDCOPY_ARGS=""
SIDES="A A1 B C Z F"
MIB=1024
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    --nbd-args) NBD_ARGS=$2; shift 2 ;;
    --nbdcopy-args) NBDCOPY_ARGS=$2; shift 2 ;;
    --sides) SIDES=$2; shift 2 ;;
    -h | --help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "nbd-compare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
say() { printf 'nbd-compare.sh: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
[ -x "$RSISCSI" ] || die "no $RSISCSI: cargo build --release -p rsiscsi"
"$RSISCSI" nbd --help >/dev/null 2>&1 || die "$RSISCSI has no nbd command"
[ -e /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so ] || die "qemu-img has no iscsi driver: run bench/peer-tools.sh"
for t in nbdcopy qemu-img qemu-nbd python3 cmp; do command -v "$t" >/dev/null || die "$t missing: run bench/peer-tools.sh"; done
[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) is needed for the CPU figures"
case " $SIDES " in *" Z "*) command -v nbdkit >/dev/null || die "nbdkit missing (side Z): run bench/peer-tools.sh" ;; esac

# The tree the binary is taken to be built from, noted at the start (others may commit meanwhile).
REV=$(git -C "$ROOT" rev-parse --short HEAD)
git -C "$ROOT" diff --quiet HEAD -- crates || REV="$REV with uncommitted changes in crates/"
OUT="$BENCH_DIR/nbd-compare-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
RAW="$OUT/raw.jsonl"
: >"$RAW"
# The copies' files live on a tmpfs, away from the LUNs' own (2200 MiB, full).
FILES=$(mktemp -d /dev/shm/rsiscsi-nbd-compare.XXXXXX) || die "cannot make a directory on /dev/shm"
SRC=$FILES/src.raw
DST=$FILES/dst.raw
SOCK=$FILES/nbd.sock
SCRATCH=$FILES/scratch.raw
NBD_PID=""
QNBD_PID=""
KIT_PID=""
cleanup() {
  # A server still running (a failed run) is stopped by its own process group, which setsid made.
  if [ -n "$NBD_PID" ] && kill -0 "$NBD_PID" 2>/dev/null; then
    kill -INT -- "-$NBD_PID" 2>/dev/null
    wait "$NBD_PID" 2>/dev/null
  fi
  if [ -n "$KIT_PID" ] && kill -0 "$KIT_PID" 2>/dev/null; then
    kill -TERM "$KIT_PID" 2>/dev/null
  fi
  if [ -n "$QNBD_PID" ] && kill -0 "$QNBD_PID" 2>/dev/null; then
    kill -TERM "$QNBD_PID" 2>/dev/null
    wait 2>/dev/null
  fi
  rm -rf "$FILES"
  "$HERE/targets.sh" down
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$HERE/targets.sh" up >/dev/null || exit 1
url_of() { "$HERE/targets.sh" urls | awk -v t="$1" '$1 == t {print $2}'; }
now() { date +%s.%N; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a - b}'; }

say "making a ${MIB} MiB random source and a pre-filled destination on $FILES"
dd if=/dev/urandom of="$SRC" bs=1M count="$MIB" status=none || die "cannot write $SRC"
dd if=/dev/zero of="$DST" bs=1M count="$MIB" status=none || die "cannot write $DST"
case " $SIDES " in *" Z "* | *" F "*)
  dd if=/dev/zero of="$SCRATCH" bs=1M count="$MIB" status=none || die "cannot write $SCRATCH" ;;
esac
# Each rsiscsi nbd run uses one config directory (its initiator name is generated once).
export RSISCSI_CONFIG_DIR="$OUT/config"

# gnu_time FILE CMD...: runs CMD; FILE gets "wall user system" seconds.
gnu_time() {
  local f=$1
  shift
  /usr/bin/time -f '%e %U %S' -o "$f" "$@"
}
# cpu_of FILE: user+system seconds from a gnu_time FILE (whose last line has the figures), or null.
cpu_of() {
  local v
  v=$(tail -n 1 "$1" 2>/dev/null | awk 'NF == 3 {printf "%.2f", $2 + $3}')
  echo "${v:-null}"
}
# spoil: overwrite three MiB of the destination, so that a read that did nothing fails the check.
spoil() {
  local at
  for at in 0 $((MIB / 2)) $((MIB - 1)); do
    dd if=/dev/zero of="$DST" bs=1M count=1 seek="$at" conv=notrunc status=none
  done
}
# TARGET_PID: the running target's process (tgtd or istgt, from targets.sh's pid files), whose CPU
# each run also records: on 2 CPUs the target competes with the initiator and the NBD client.
TARGET_PID=""
HZ=$(getconf CLK_TCK)
# target_ticks: user+system clock ticks of the target so far (0 when unknown).
target_ticks() {
  awk '{print $14 + $15}' "/proc/$TARGET_PID/stat" 2>/dev/null || echo 0
}
# target_cpu TICKS-BEFORE: the target's CPU seconds since.
target_cpu() {
  awk -v a="$1" -v b="$(target_ticks)" -v hz="$HZ" 'BEGIN {printf "%.2f", (b - a) / hz}'
}
# record TARGET OP SIDE RUN OK LOGIN COPY TOTAL CPU_SERVER CPU_CLIENT [CPU_TARGET]
record() {
  (($# < 11)) && set -- "$@" null
  printf '{"target":"%s","op":"%s","side":"%s","run":%s,"ok":%s,"login":%s,"copy":%s,"total":%s,"cpu_server":%s,"cpu_client":%s,"cpu_target":%s}\n' \
    "$@" >>"$RAW"
}
# check OP: after a read, the destination must be the source the writes put on the LUN.
check() {
  [ "$1" = read ] || return 0
  cmp -s "$SRC" "$DST" || { say "  the read gave other data than was written"; return 1; }
}

# copy_args OP NBD-URI [ARGS...]: sets COPY to nbdcopy's arguments for the copy of one run, between
# the NBD export and the files.
copy_args() {
  local op=$1 nbd=$2
  shift 2
  # shellcheck disable=SC2206 # NBDCOPY_ARGS are meant to split
  COPY=($NBDCOPY_ARGS "$@")
  if [ "$op" = write ]; then COPY+=("$SRC" "$nbd"); else COPY+=("$nbd" "$DST"); fi
}

# side_a TARGET URL OP RUN SIDE [NBDCOPY-ARGS...]: rsiscsi nbd + nbdcopy.
side_a() {
  local k0 t=$1 url=$2 op=$3 r=$4 side=$5 log="$OUT/$1.$3.$4.$5" t0 t1 t2 t3 i ok=true
  shift 5
  local nbd="nbd+unix:///?socket=$SOCK"
  rm -f "$SOCK"
  t0=$(now)
  k0=$(target_ticks)
  # setsid: its own process group, so that SIGINT reaches rsiscsi (GNU time ignores SIGINT).
  # shellcheck disable=SC2086 # NBD_ARGS are meant to split
  setsid /usr/bin/time -f '%e %U %S' -o "$log.time" "$RSISCSI" nbd "$url" --socket "$SOCK" $NBD_ARGS >"$log.out" 2>"$log.err" &
  NBD_PID=$!
  for ((i = 0; i < 3000; i++)); do
    [ -S "$SOCK" ] && grep -q '^rsiscsi: serving' "$log.err" && break
    kill -0 "$NBD_PID" 2>/dev/null || break
    sleep 0.005
  done
  t1=$(now)
  if ! [ -S "$SOCK" ] || ! grep -q '^rsiscsi: serving' "$log.err"; then
    say "  rsiscsi nbd did not get ready: $(tail -1 "$log.err")"
    kill -INT -- "-$NBD_PID" 2>/dev/null
    wait "$NBD_PID" 2>/dev/null
    NBD_PID=""
    record "$t" "$op" "$side" "$r" false null null null null null
    return
  fi
  copy_args "$op" "$nbd" "$@"
  gnu_time "$log.copy.time" nbdcopy "${COPY[@]}" 2>"$log.copy.err" || ok=false
  t2=$(now)
  kill -INT -- "-$NBD_PID"
  wait "$NBD_PID" || { ok=false; say "  rsiscsi nbd exited with $?: $(tail -1 "$log.err")"; }
  NBD_PID=""
  t3=$(now)
  [ "$ok" = true ] || say "  nbdcopy failed: $(tail -1 "$log.copy.err")"
  check "$op" || ok=false
  record "$t" "$op" "$side" "$r" "$ok" "$(minus "$t1" "$t0")" "$(minus "$t2" "$t1")" "$(minus "$t3" "$t0")" \
    "$(cpu_of "$log.time")" "$(cpu_of "$log.copy.time")" "$(target_cpu "$k0")"
}

# side_c TARGET URL OP RUN: qemu-nbd (qemu's libiscsi driver exported over NBD) + nbdcopy.
side_c() {
  local k0 t=$1 url=$2 op=$3 r=$4 log="$OUT/$1.$3.$4.C" t0 t1 t2 t3 i ok=true pid
  local nbd="nbd+unix:///?socket=$SOCK"
  rm -f "$SOCK" "$log.pid"
  t0=$(now)
  k0=$(target_ticks)
  /usr/bin/time -f '%e %U %S' -o "$log.time" qemu-nbd -f raw -t -k "$SOCK" --pid-file "$log.pid" "$url" \
    >"$log.out" 2>"$log.err" &
  QNBD_PID=$!
  for ((i = 0; i < 3000; i++)); do
    [ -S "$SOCK" ] && [ -s "$log.pid" ] && break
    kill -0 "$QNBD_PID" 2>/dev/null || break
    sleep 0.005
  done
  t1=$(now)
  pid=$(cat "$log.pid" 2>/dev/null)
  if ! [ -S "$SOCK" ] || [ -z "$pid" ]; then
    say "  qemu-nbd did not get ready: $(tail -1 "$log.err")"
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
    wait "$QNBD_PID" 2>/dev/null
    QNBD_PID=""
    record "$t" "$op" C "$r" false null null null null null
    return
  fi
  copy_args "$op" "$nbd"
  gnu_time "$log.copy.time" nbdcopy "${COPY[@]}" 2>"$log.copy.err" || ok=false
  t2=$(now)
  # TERM to qemu-nbd itself (its pid file), not to GNU time, which would die without its figures.
  kill -TERM "$pid"
  wait "$QNBD_PID" || { ok=false; say "  qemu-nbd exited with $?: $(tail -1 "$log.err")"; }
  QNBD_PID=""
  t3=$(now)
  [ "$ok" = true ] || say "  nbdcopy failed: $(tail -1 "$log.copy.err")"
  check "$op" || ok=false
  record "$t" "$op" C "$r" "$ok" "$(minus "$t1" "$t0")" "$(minus "$t2" "$t1")" "$(minus "$t3" "$t0")" \
    "$(cpu_of "$log.time")" "$(cpu_of "$log.copy.time")" "$(target_cpu "$k0")"
}

# side_z TARGET OP RUN: nbdkit's file plugin on /dev/shm (no iSCSI) + nbdcopy: the NBD hop alone.
side_z() {
  local k0 t=$1 op=$2 r=$3 log="$OUT/$1.$2.$3.Z" t0 t1 t2 t3 i ok=true pid kit=()
  local nbd="nbd+unix:///?socket=$SOCK"
  # Reads serve the source read-only (what the LUN holds, so the check applies); writes a scratch file.
  if [ "$op" = read ]; then kit=(-r file "$SRC"); else kit=(file "$SCRATCH"); fi
  rm -f "$SOCK" "$log.pid"
  t0=$(now)
  k0=$(target_ticks)
  /usr/bin/time -f '%e %U %S' -o "$log.time" nbdkit -f -U "$SOCK" -P "$log.pid" "${kit[@]}" \
    >"$log.out" 2>"$log.err" &
  KIT_PID=$!
  for ((i = 0; i < 3000; i++)); do
    [ -S "$SOCK" ] && [ -s "$log.pid" ] && break
    kill -0 "$KIT_PID" 2>/dev/null || break
    sleep 0.005
  done
  t1=$(now)
  pid=$(cat "$log.pid" 2>/dev/null)
  if ! [ -S "$SOCK" ] || [ -z "$pid" ]; then
    say "  nbdkit did not get ready: $(tail -1 "$log.err")"
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
    wait "$KIT_PID" 2>/dev/null
    KIT_PID=""
    record "$t" "$op" Z "$r" false null null null null null
    return
  fi
  copy_args "$op" "$nbd"
  gnu_time "$log.copy.time" nbdcopy "${COPY[@]}" 2>"$log.copy.err" || ok=false
  t2=$(now)
  kill -TERM "$pid"
  wait "$KIT_PID" || { ok=false; say "  nbdkit exited with $?: $(tail -1 "$log.err")"; }
  KIT_PID=""
  t3=$(now)
  [ "$ok" = true ] || say "  nbdcopy failed: $(tail -1 "$log.copy.err")"
  check "$op" || ok=false
  record "$t" "$op" Z "$r" "$ok" "$(minus "$t1" "$t0")" "$(minus "$t2" "$t1")" "$(minus "$t3" "$t0")" \
    "$(cpu_of "$log.time")" "$(cpu_of "$log.copy.time")" "$(target_cpu "$k0")"
}

# side_f TARGET OP RUN: nbdcopy from the source file to a file (reads: DST, writes: the scratch).
side_f() {
  local t=$1 op=$2 r=$3 log="$OUT/$1.$2.$3.F" t0 t1 ok=true to=$DST
  [ "$op" = write ] && to=$SCRATCH
  t0=$(now)
  # shellcheck disable=SC2086 # NBDCOPY_ARGS are meant to split
  gnu_time "$log.time" nbdcopy $NBDCOPY_ARGS "$SRC" "$to" 2>"$log.err" || ok=false
  t1=$(now)
  [ "$ok" = true ] || say "  nbdcopy failed: $(tail -1 "$log.err")"
  check "$op" || ok=false
  record "$t" "$op" F "$r" "$ok" null "$(minus "$t1" "$t0")" "$(minus "$t1" "$t0")" null "$(cpu_of "$log.time")"
}

# side_b TARGET URL OP RUN: qemu-img convert with qemu's libiscsi driver.
side_b() {
  local t=$1 url=$2 op=$3 r=$4 log="$OUT/$1.$3.$4.qemu" t0 t1 k0 ok=true
  t0=$(now)
  k0=$(target_ticks)
  if [ "$op" = write ]; then
    gnu_time "$log.time" qemu-img convert -n -f raw -O raw "$SRC" "$url" 2>"$log.err" || ok=false
  else
    gnu_time "$log.time" qemu-img convert -n -f raw -O raw "$url" "$DST" 2>"$log.err" || ok=false
  fi
  t1=$(now)
  [ "$ok" = true ] || say "  qemu-img failed: $(tail -1 "$log.err")"
  check "$op" || ok=false
  record "$t" "$op" B "$r" "$ok" null null "$(minus "$t1" "$t0")" null "$(cpu_of "$log.time")" "$(target_cpu "$k0")"
}

for t in $TARGETS; do
  url=$(url_of "$t")
  [ -n "$url" ] || { say "unknown target $t"; continue; }
  case $t in
    istgt) TARGET_PID=$(cat "$BENCH_DIR/istgt/istgt.launch.pid" 2>/dev/null) ;;
    *) TARGET_PID=$(cat "$BENCH_DIR/tgt/tgtd.pid" 2>/dev/null) ;;
  esac
  for ((r = 1; r <= RUNS; r++)); do
    # Writes first: the reads then check the data the writes left.
    for op in write read; do
      sides=$SIDES
      ((r % 2 == 0)) && sides=$(echo "$SIDES" | tr ' ' '\n' | tac | tr '\n' ' ')
      for side in $sides; do
        say "$t $op run $r: $side"
        [ "$op" = read ] && spoil
        case $side in
          A) side_a "$t" "$url" "$op" "$r" A ;;
          A1) side_a "$t" "$url" "$op" "$r" A1 -C 1 ;;
          B) side_b "$t" "$url" "$op" "$r" ;;
          C) side_c "$t" "$url" "$op" "$r" ;;
          Z) side_z "$t" "$op" "$r" ;;
          F) side_f "$t" "$op" "$r" ;;
          *) die "unknown side $side" ;;
        esac
      done
    done
  done
done

mkdir -p "$HERE/results"
RESULT=${RESULT:-$HERE/results/$(date +%F)-nbd.md}
python3 - "$RAW" "$RUNS" "$MIB" "$RSISCSI" "$REV" "$NBD_ARGS" "$NBDCOPY_ARGS" "$SIDES" >"$RESULT.tmp" <<'PY'
import json, os, platform, statistics, subprocess, sys
raw, runs, mib, rsiscsi, rev, nbd_args, nbdcopy_args, sides_run = sys.argv[1:9]
mib = int(mib)
SIDES = ["A", "A1", "B", "C", "Z", "F"]
rows, order = {}, []
for line in open(raw):
    r = json.loads(line)
    key = (r["target"], r["op"])
    if key not in rows:
        rows[key] = {s: [] for s in SIDES} | {"failed": 0}
        order.append(key)
    if r["ok"]:
        rows[key][r["side"]].append(r)
    else:
        rows[key]["failed"] += 1

def med(vals, f):
    xs = [f(v) for v in vals]
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def rate(secs):
    return None if not secs else mib / secs

def fmt(x, nd=0):
    return "n/a" if x is None else f"{x:,.{nd}f}"

def ratio(a, b):
    return "n/a" if a is None or not b else f"{a / b:.2f}"

def ver(cmd):
    lines = subprocess.getoutput(cmd).splitlines()
    return lines[0] if lines else "?"

def copy_rate(vs):
    return rate(med(vs, lambda v: v["copy"]))

def whole_rate(vs):
    return rate(med(vs, lambda v: v["total"]))

def cpu(vs):
    return med(vs, lambda v: (v["cpu_server"] or 0) + (v["cpu_client"] or 0))

def cpu_split(vs):
    tot = cpu(vs)
    if tot is None:
        return "n/a"
    s, c = med(vs, lambda v: v["cpu_server"]), med(vs, lambda v: v["cpu_client"])
    return f"{fmt(tot, 2)} ({fmt(s, 2)} + {fmt(c, 2)})"

print(f"# rsiscsi nbd + nbdcopy vs qemu's libiscsi driver (qemu-img, qemu-nbd + nbdcopy), {subprocess.getoutput('date -u +%FT%TZ')}\n")
print(f"Host: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}; loopback 127.0.0.1; "
      f"{mib} MiB per copy, between the LUN and a file on /dev/shm; {runs} runs per side, alternating "
      f"({sides_run}, then the reverse); medians; load average at the end: {os.getloadavg()[0]:.2f}. rsiscsi {rev} (release build); {ver('nbdcopy --version')}; "
      f"{ver('qemu-img --version')} and {ver('qemu-nbd --version')} with block-iscsi.so (qemu-block-extra, libiscsi).\n")
print(f"- A: `rsiscsi nbd URL --socket S{' ' + nbd_args if nbd_args else ''}` + `nbdcopy{' ' + nbdcopy_args if nbdcopy_args else ''}` "
      "(defaults: our export offers multi-conn, so 4 connections × 64 requests of 256 KiB)")
print(f"- A1: A with `nbdcopy -C 1{' ' + nbdcopy_args if nbdcopy_args else ''}`: one connection, as nbdcopy opens to C")
print("- B: `qemu-img convert -n -f raw -O raw` to or from `iscsi://…` (defaults: 8 coroutines, cache=unsafe)")
print(f"- C: `qemu-nbd -f raw -t -k S iscsi://…` + `nbdcopy{' ' + nbdcopy_args if nbdcopy_args else ''}` (qemu-nbd's "
      "defaults: --cache=writeback, --aio=threads, --shared=1; with one client allowed it offers no multi-conn, "
      "so nbdcopy opens 1 connection × 64 requests)")
print(f"- Z (ceiling, no iSCSI): `nbdkit -f -U S file F` + `nbdcopy{' ' + nbdcopy_args if nbdcopy_args else ''}`, F on /dev/shm "
      "(the source for reads, a scratch file for writes): the NBD hop with a server that costs almost nothing; "
      "multi-conn, so 4 connections like A. A does what Z does plus the target and the iSCSI hop on the same CPUs")
print(f"- F (floor): `nbdcopy{' ' + nbdcopy_args if nbdcopy_args else ''} SRC DST`, file to file on /dev/shm, no server\n")
print("MiB/s; \"copy\" is nbdcopy alone (the server's login left out), \"whole\" is from the start of the "
      "server to its exit (login, copy, flush, logout), which is what B's one command does. Ratios above 1: A is faster.\n")
print("| target | copy | A copy | A whole | A1 copy | A1 whole | B whole | C copy | C whole "
      "| A/B whole | A1/C copy | A1/C whole | A/C whole | Z copy | F copy | Z/B | A/Z copy | runs A/A1/B/C/Z/F (failed) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for (t, op) in order:
    R = rows[(t, op)]
    a, a1, b, c, z, f = (R[s] for s in SIDES)
    print(f"| {t} | {op} | {fmt(copy_rate(a))} | {fmt(whole_rate(a))} | {fmt(copy_rate(a1))} | {fmt(whole_rate(a1))} "
          f"| {fmt(whole_rate(b))} | {fmt(copy_rate(c))} | {fmt(whole_rate(c))} "
          f"| {ratio(whole_rate(a), whole_rate(b))} | {ratio(copy_rate(a1), copy_rate(c))} "
          f"| {ratio(whole_rate(a1), whole_rate(c))} | {ratio(whole_rate(a), whole_rate(c))} "
          f"| {fmt(copy_rate(z))} | {fmt(copy_rate(f))} | {ratio(copy_rate(z), whole_rate(b))} "
          f"| {ratio(copy_rate(a), copy_rate(z))} "
          f"| {len(a)}/{len(a1)}/{len(b)}/{len(c)}/{len(z)}/{len(f)} ({R['failed']}) |")
print("\nCPU seconds per copy (user + system, medians): server + nbdcopy for A, A1, C and Z; qemu-img for B; "
      "nbdcopy for F. The target's own CPU is not in these figures.\n")
print("| target | copy | A | A1 | B | C | A1/C | Z | F |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for (t, op) in order:
    R = rows[(t, op)]
    a, a1, b, c, z, f = (R[s] for s in SIDES)
    print(f"| {t} | {op} | {cpu_split(a)} | {cpu_split(a1)} | {fmt(cpu(b), 2)} | {cpu_split(c)} | {ratio(cpu(a1), cpu(c))} "
          f"| {cpu_split(z)} | {fmt(cpu(f), 2)} |")
print("\nCPU seconds per copy with the target's own (tgtd or istgt, from /proc during the run), medians: "
      "what the two CPUs had to do. Z and F have no target.\n")
print("| target | copy | A all (target + server + nbdcopy) | B all (target + qemu-img) | Z (server + nbdcopy) | F | A/B CPU | Z/B CPU |")
print("|---|---|---:|---:|---:|---:|---:|---:|")

def cpu_all(vs):
    return med(vs, lambda v: (v.get("cpu_target") or 0) + (v["cpu_server"] or 0) + (v["cpu_client"] or 0))

def tgt_split(vs):
    tot = cpu_all(vs)
    if tot is None:
        return "n/a"
    parts = [med(vs, lambda v: v.get("cpu_target")), med(vs, lambda v: v["cpu_server"]), med(vs, lambda v: v["cpu_client"])]
    return f"{fmt(tot, 2)} (" + " + ".join(fmt(x, 2) for x in parts if x is not None) + ")"

for (t, op) in order:
    R = rows[(t, op)]
    a, a1, b, c, z, f = (R[s] for s in SIDES)
    print(f"| {t} | {op} | {tgt_split(a)} | {tgt_split(b)} | {cpu_split(z)} | {fmt(cpu(f), 2)} "
          f"| {ratio(cpu_all(a), cpu_all(b))} | {ratio(cpu(z), cpu_all(b))} |")
print("\nPer-run seconds (nbdcopy alone/whole for A, A1, C, Z; whole for B; nbdcopy for F), in run order:\n")
for (t, op) in order:
    R = rows[(t, op)]
    parts = []
    for s in SIDES:
        if not R[s]:
            continue
        if s in ("B", "F"):
            parts.append(s + " " + ", ".join(f"{v['total']:.2f}" for v in R[s]))
        else:
            parts.append(s + " " + ", ".join(f"{v['copy']:.2f}/{v['total']:.2f}" for v in R[s]))
    print(f"- {t} {op}: " + " | ".join(parts))
PY
mv "$RESULT.tmp" "$RESULT"
cat "$RESULT"
say "table written to $RESULT; raw output in $OUT"
