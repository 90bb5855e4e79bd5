#!/bin/bash
# NBD export benchmark: 1 GiB copies to and from a LUN through `rsiscsi nbd` (A) against qemu's own
# libiscsi driver (B), on the loopback targets of bench/targets.sh (tgt-ram on 3300, istgt on 3301).
#   write  a 1 GiB random file (on /dev/shm) -> the LUN
#   read   the LUN -> a pre-filled 1 GiB file on /dev/shm (qemu-img cannot convert to /dev/null)
#   A: rsiscsi nbd URL --socket S &   (ready when it prints its "serving" line)
#      nbdcopy SRC nbd+unix:///?socket=S   or   nbdcopy nbd+unix:///?socket=S DST   (defaults)
#      kill -INT: requests finish, SYNCHRONIZE CACHE, logout
#   B: qemu-img convert -n -f raw -O raw SRC iscsi://...   or   ... iscsi://... DST (defaults)
# A is timed twice: nbdcopy alone (its login left out) and from the start of `rsiscsi nbd` to its
# exit (login, copy, flush, logout), which is what B's one command does. CPU: user+system seconds of
# every process of a side (A: rsiscsi nbd + nbdcopy; B: qemu-img), from GNU time.
# Usage: bench/nbd-compare.sh [--runs N] [--targets "tgt-ram istgt"] [--nbd-args "--connections 2"]
#                             [--nbdcopy-args "-C 1"]
# Runs alternate A B / B A; each read is checked against the file the writes put on the LUN. Prints a
# Markdown table of medians and writes it to bench/results/<date>-nbd.md (RESULT=FILE: elsewhere).
# Needs root, bench/peer-tools.sh done (qemu-block-extra, libnbd-bin) and a release build:
# cargo build --release -p rsiscsi. The targets are stopped on exit.
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
MIB=1024
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    --nbd-args) NBD_ARGS=$2; shift 2 ;;
    --nbdcopy-args) NBDCOPY_ARGS=$2; shift 2 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "nbd-compare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
say() { printf 'nbd-compare.sh: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
[ -x "$RSISCSI" ] || die "no $RSISCSI: cargo build --release -p rsiscsi"
"$RSISCSI" nbd --help >/dev/null 2>&1 || die "$RSISCSI has no nbd command"
[ -e /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so ] || die "qemu-img has no iscsi driver: run bench/peer-tools.sh"
for t in nbdcopy qemu-img python3 cmp; do command -v "$t" >/dev/null || die "$t missing: run bench/peer-tools.sh"; done
[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) is needed for the CPU figures"

OUT="$BENCH_DIR/nbd-compare-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
RAW="$OUT/raw.jsonl"
: >"$RAW"
# The copies' files live on a tmpfs, away from the LUNs' own (2200 MiB, full).
FILES=$(mktemp -d /dev/shm/rsiscsi-nbd-compare.XXXXXX) || die "cannot make a directory on /dev/shm"
SRC=$FILES/src.raw
DST=$FILES/dst.raw
SOCK=$FILES/nbd.sock
NBD_PID=""
cleanup() {
  # A server still running (a failed run) is stopped by its own process group, which setsid made.
  if [ -n "$NBD_PID" ] && kill -0 "$NBD_PID" 2>/dev/null; then
    kill -INT -- "-$NBD_PID" 2>/dev/null
    wait "$NBD_PID" 2>/dev/null
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
# record TARGET OP SIDE RUN OK LOGIN COPY TOTAL CPU_SERVER CPU_CLIENT
record() {
  printf '{"target":"%s","op":"%s","side":"%s","run":%s,"ok":%s,"login":%s,"copy":%s,"total":%s,"cpu_server":%s,"cpu_client":%s}\n' \
    "$@" >>"$RAW"
}
# check OP: after a read, the destination must be the source the writes put on the LUN.
check() {
  [ "$1" = read ] || return 0
  cmp -s "$SRC" "$DST" || { say "  the read gave other data than was written"; return 1; }
}

# side_a TARGET URL OP RUN: rsiscsi nbd + nbdcopy.
side_a() {
  local t=$1 url=$2 op=$3 r=$4 log="$OUT/$1.$3.$4.nbd" t0 t1 t2 t3 i ok=true
  local nbd="nbd+unix:///?socket=$SOCK"
  rm -f "$SOCK"
  t0=$(now)
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
    record "$t" "$op" ours "$r" false null null null null null
    return
  fi
  if [ "$op" = write ]; then
    # shellcheck disable=SC2086 # NBDCOPY_ARGS are meant to split
    gnu_time "$log.copy.time" nbdcopy $NBDCOPY_ARGS "$SRC" "$nbd" 2>"$log.copy.err" || ok=false
  else
    # shellcheck disable=SC2086
    gnu_time "$log.copy.time" nbdcopy $NBDCOPY_ARGS "$nbd" "$DST" 2>"$log.copy.err" || ok=false
  fi
  t2=$(now)
  kill -INT -- "-$NBD_PID"
  wait "$NBD_PID" || { ok=false; say "  rsiscsi nbd exited with $?: $(tail -1 "$log.err")"; }
  NBD_PID=""
  t3=$(now)
  [ "$ok" = true ] || say "  nbdcopy failed: $(tail -1 "$log.copy.err")"
  check "$op" || ok=false
  record "$t" "$op" ours "$r" "$ok" "$(minus "$t1" "$t0")" "$(minus "$t2" "$t1")" "$(minus "$t3" "$t0")" \
    "$(cpu_of "$log.time")" "$(cpu_of "$log.copy.time")"
}

# side_b TARGET URL OP RUN: qemu-img convert with qemu's libiscsi driver.
side_b() {
  local t=$1 url=$2 op=$3 r=$4 log="$OUT/$1.$3.$4.qemu" t0 t1 ok=true
  t0=$(now)
  if [ "$op" = write ]; then
    gnu_time "$log.time" qemu-img convert -n -f raw -O raw "$SRC" "$url" 2>"$log.err" || ok=false
  else
    gnu_time "$log.time" qemu-img convert -n -f raw -O raw "$url" "$DST" 2>"$log.err" || ok=false
  fi
  t1=$(now)
  [ "$ok" = true ] || say "  qemu-img failed: $(tail -1 "$log.err")"
  check "$op" || ok=false
  record "$t" "$op" qemu "$r" "$ok" null null "$(minus "$t1" "$t0")" null "$(cpu_of "$log.time")"
}

for t in $TARGETS; do
  url=$(url_of "$t")
  [ -n "$url" ] || { say "unknown target $t"; continue; }
  for ((r = 1; r <= RUNS; r++)); do
    # Writes first: the reads then check the data the writes left.
    for op in write read; do
      sides="side_a side_b"
      ((r % 2 == 0)) && sides="side_b side_a"
      for side in $sides; do
        say "$t $op run $r: $([ "$side" = side_a ] && echo "rsiscsi nbd + nbdcopy" || echo "qemu-img")"
        [ "$op" = read ] && spoil
        "$side" "$t" "$url" "$op" "$r"
      done
    done
  done
done

mkdir -p "$HERE/results"
RESULT=${RESULT:-$HERE/results/$(date +%F)-nbd.md}
python3 - "$RAW" "$RUNS" "$MIB" "$RSISCSI" "$ROOT" "$NBD_ARGS" "$NBDCOPY_ARGS" >"$RESULT.tmp" <<'PY'
import json, os, platform, statistics, subprocess, sys
raw, runs, mib, rsiscsi, root, nbd_args, nbdcopy_args = sys.argv[1:8]
mib = int(mib)
rows, order = {}, []
for line in open(raw):
    r = json.loads(line)
    key = (r["target"], r["op"])
    if key not in rows:
        rows[key] = {"ours": [], "qemu": [], "failed": 0}
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

rev = subprocess.getoutput(f"git -C {root} rev-parse --short HEAD")
if subprocess.run(["git", "-C", root, "diff", "--quiet", "HEAD", "--", "crates"]).returncode != 0:
    rev += " with uncommitted changes in crates/"
print(f"# rsiscsi nbd + nbdcopy vs qemu-img with qemu's libiscsi driver, {subprocess.getoutput('date -u +%FT%TZ')}\n")
print(f"Host: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}; loopback 127.0.0.1; "
      f"{mib} MiB per copy, between the LUN and a file on /dev/shm; {runs} runs per side, alternating "
      f"(A B, then B A); medians. rsiscsi {rev} (release build); {ver('nbdcopy --version')}; "
      f"{ver('qemu-img --version')} with block-iscsi.so (qemu-block-extra, libiscsi). Both tools with "
      f"their default options (nbdcopy: 4 connections, 64 requests of 256 KiB each; qemu-img convert: "
      f"8 coroutines, cache=unsafe); `rsiscsi nbd URL --socket S{' ' + nbd_args if nbd_args else ''}`"
      f"{'; nbdcopy ' + nbdcopy_args if nbdcopy_args else ''}.\n")
print("| target | copy | ours: nbdcopy alone MiB/s | ours: start to exit MiB/s | qemu-img MiB/s | ratio (nbdcopy alone) | ratio (start to exit) "
      "| ours: login s | CPU s ours (rsiscsi nbd + nbdcopy) | CPU s qemu-img | CPU ratio | runs ours/qemu (failed) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for (t, op) in order:
    o, q = rows[(t, op)]["ours"], rows[(t, op)]["qemu"]
    copy_a = rate(med(o, lambda v: v["copy"]))
    whole_a = rate(med(o, lambda v: v["total"]))
    whole_b = rate(med(q, lambda v: v["total"]))
    login_a = med(o, lambda v: v["login"])
    cpu_a = med(o, lambda v: (v["cpu_server"] or 0) + (v["cpu_client"] or 0))
    cpu_s, cpu_c = med(o, lambda v: v["cpu_server"]), med(o, lambda v: v["cpu_client"])
    cpu_b = med(q, lambda v: v["cpu_client"])
    print(f"| {t} | {op} | {fmt(copy_a)} | {fmt(whole_a)} | {fmt(whole_b)} | {ratio(copy_a, whole_b)} | {ratio(whole_a, whole_b)} "
          f"| {fmt(login_a, 3)} | {fmt(cpu_a, 2)} ({fmt(cpu_s, 2)} + {fmt(cpu_c, 2)}) | {fmt(cpu_b, 2)} | {ratio(cpu_a, cpu_b)} | {len(o)}/{len(q)} ({rows[(t, op)]['failed']}) |")

print("\nRatios are ours / qemu-img: above 1 means ours is faster; the CPU ratio below 1 means ours uses less CPU. "
      "\"nbdcopy alone\" leaves out our login (and flush and logout), which qemu-img's figure includes: "
      "\"start to exit\" is the like-for-like comparison.\n")
print("Per-run seconds (ours nbdcopy alone / ours start to exit | qemu-img):\n")
for (t, op) in order:
    o, q = rows[(t, op)]["ours"], rows[(t, op)]["qemu"]
    print(f"- {t} {op}: " + ", ".join(f"{v['copy']:.2f}/{v['total']:.2f}" for v in o) + " | "
          + ", ".join(f"{v['total']:.2f}" for v in q))
PY
mv "$RESULT.tmp" "$RESULT"
cat "$RESULT"
say "table written to $RESULT; raw output in $OUT"
