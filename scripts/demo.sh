#!/bin/bash
# The first thing to run (as root, on a fresh Debian 12 machine with a stable Rust toolchain):
# installs the targets and peer tools, builds rsiscsi in release mode, starts the target lab and
# drives the main job against tgt: discovery, listing, INQUIRY, capacity, and a 64 MiB write and
# read-back compared byte for byte. Every command is printed before it runs.
# The lab stays up afterwards; stop it with scripts/lab-down.sh.
set -Eeuo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=scripts/lab-lib.sh
. "$HERE/lab-lib.sh"
cd "$ROOT"
need_root

CURRENT="setup"
LAB_UP=""
on_error() {
  say "ERROR: demo failed during: $CURRENT"
  [ -z "$LAB_UP" ] || say "the lab is left running for a look (logs under $LAB); stop it with: LAB=$LAB $HERE/lab-down.sh"
}
trap on_error ERR

# run CMD...: print the command, then run it.
run() {
  CURRENT="$*"
  printf '\n$ %s\n' "$*"
  "$@"
}

# run_to FILE CMD...: the same, with the command's standard output going to FILE.
run_to() {
  local file=$1
  shift
  CURRENT="$* > $file"
  printf '\n$ %s > %s\n' "$*" "$file"
  "$@" >"$file"
}

say "installing prerequisites (if missing)"
ensure_pkgs tgt istgt libiscsi-bin iproute2 procps util-linux
ensure_rust

run cargo build --release -p rsiscsi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/rsiscsi"
[ -x "$BIN" ] || die "no binary at $BIN after the build"

CURRENT="scripts/lab-up.sh"
"$HERE/lab-up.sh"
LAB_UP=1

PORTAL="$HOST4:$TGT_PORT"
LUN_URL="iscsi://$PORTAL/$TGT_BASE:ram1/$TGT_LUN"
LEN=$((64 * MIB))
WORK="$LAB/demo"
mkdir -p "$WORK"
IN="$WORK/random-64MiB.bin"
OUT="$WORK/readback-64MiB.bin"
rm -f "$IN" "$OUT"

run "$BIN" discover "$PORTAL"
# One target of the portal (the whole portal also lists the lab's deliberate redirect loop, an error).
run "$BIN" ls "iscsi://$PORTAL/$TGT_BASE:ram1"
run "$BIN" inquiry "$LUN_URL"
run "$BIN" capacity "$LUN_URL"
run_to "$IN" head -c "$LEN" /dev/urandom
run "$BIN" cp "$IN" "$LUN_URL"
run "$BIN" cp "$LUN_URL" "$OUT" --length "$LEN"
run cmp "$IN" "$OUT"
# The same over one session of four TCP connections (MC/S) on istgt.
MCS_URL="iscsi://$HOST4:$ISTGT_PORT/$ISTGT_BASE:ram1/$ISTGT_LUN"
OUT4="$WORK/readback-4conn-64MiB.bin"
rm -f "$OUT4"
run "$BIN" cp --connections 4 --policy round-robin "$IN" "$MCS_URL"
run "$BIN" cp --connections 4 --policy least-queue-depth "$MCS_URL" "$OUT4" --length "$LEN"
run cmp "$IN" "$OUT4"

CURRENT="done"
printf '\nDemo passed: 64 MiB written to %s and to %s over 4 connections, and read back identical.\n' "$LUN_URL" "$MCS_URL"
if [ "$LAB" = /tmp/rsiscsi-lab ]; then
  printf 'The lab is still running (settings in %s). Stop it with: scripts/lab-down.sh\n' "$LAB_ENV_FILE"
else
  printf 'The lab is still running (settings in %s). Stop it with: LAB=%s scripts/lab-down.sh\n' "$LAB_ENV_FILE" "$LAB"
fi
