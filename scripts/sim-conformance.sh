#!/bin/bash
# Run libiscsi's iscsi-test-cu against the simulated target (crates/iscsi-target-sim) by hand:
#   scripts/sim-conformance.sh [PORT] [TEST...]
# PORT defaults to 3270 (loopback only); TESTs default to the whole iSCSI family. Tests that
# write are allowed (--dataloss): the sim's LUN is its own RAM. Needs libiscsi-bin. The automatic
# version, with the full list of tests that must pass, is
# `cargo test -p iscsi-target-sim --test conformance`. Exit status: non-zero if any run failed.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PORT=${1:-3270}
shift $(( $# > 0 ? 1 : 0 ))
TESTS=("$@")
[ ${#TESTS[@]} -gt 0 ] || TESTS=(iSCSI)
IQN=iqn.2026-11.rs.rsiscsi:sim
command -v iscsi-test-cu >/dev/null || { echo "iscsi-test-cu missing: apt-get install libiscsi-bin" >&2; exit 2; }

cd "$HERE/.." || exit 2
cargo build -q -p iscsi-target-sim --bin iscsi-sim-target || exit 2
target/debug/iscsi-sim-target --listen "127.0.0.1:$PORT" --target "$IQN" --lun-size 64M &
SIM=$!
trap 'kill "$SIM" 2>/dev/null; wait "$SIM" 2>/dev/null' EXIT
sleep 0.5
kill -0 "$SIM" 2>/dev/null || { echo "the sim did not start on port $PORT" >&2; exit 2; }

rc=0
for t in "${TESTS[@]}"; do
  echo "=== $t"
  out=$(timeout -k 5 300 iscsi-test-cu -n --dataloss --test "$t" "iscsi://127.0.0.1:$PORT/$IQN/0" 2>&1)
  echo "$out" | grep -E '^Suite .*had failures|^ +[0-9]+\. test_|\[SKIPPED\]|^ +(suites|tests|asserts) ' | sort | uniq -c
  echo "$out" | grep -qE '^ +tests +[0-9]+ +[0-9]+ +[0-9]+ +0 ' || rc=1
done
exit $rc
