#!/bin/bash
# THE test command for rsiscsi (CI runs it through .ci/run, as root, from a fresh clone).
#   1. installs what is missing: tgt istgt libiscsi-bin libnbd-bin qemu-utils open-isns-server open-isns-utils
#      iproute2 procps util-linux python3 (apt-get), rustfmt and clippy (rustup)
#   2. cargo fmt --all -- --check
#   3. cargo clippy --workspace --all-targets -- -D warnings, and a build of the fuzz targets
#   4. starts the target lab (scripts/lab-up.sh) and exports RSISCSI_LAB_ENV=$LAB/lab.env, and the
#      iSNS lab (scripts/isns-lab.sh up: isnsd on 127.0.0.1:3205) with RSISCSI_ISNS_ENV, and the IPsec
#      lab (scripts/ipsec-lab.sh up: two namespaces, a charon in each, tgtd behind the tunnel) with
#      RSISCSI_IPSEC_ENV; the IPsec lab installs strongSwan and tcpdump itself; and the links lab
#      (bench/links.sh up: a namespace joined by 4 rate-limited veth links, tgt and istgt on each) with
#      RSISCSI_LINKS_ENV (a links lab that was already up is used as it is and left up)
#   5. cargo test --workspace (the integration tests read RSISCSI_LAB_ENV and fail without it);
#      on failure, the targets' last errors and warnings from their logs
#   6. always stops the labs again (lab-down.sh, isns-lab.sh down, ipsec-lab.sh down, links.sh down), keeping
#      cargo test's exit status.
# Extra arguments are passed to `cargo test` (e.g. `scripts/test.sh -- --nocapture`).
set -Eeuo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=scripts/lab-lib.sh
. "$HERE/lab-lib.sh"
cd "$ROOT"
need_root

step() { printf '\n===== %s =====\n' "$*" >&2; }

step "prerequisites"
ensure_pkgs tgt istgt libiscsi-bin libnbd-bin qemu-utils open-isns-server open-isns-utils iproute2 procps util-linux python3
ensure_rust
cargo --version >&2

step "cargo fmt --all -- --check"
cargo fmt --all -- --check || die "formatting differs: run 'cargo fmt --all' (see the diff above)"

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings || die "clippy found problems (see above)"

step "cargo build --manifest-path fuzz/Cargo.toml (the fuzz targets must keep compiling)"
cargo build --manifest-path fuzz/Cargo.toml --bins || die "the fuzz targets do not build (see above)"

step "lab up ($LAB)"
LAB_STARTED=""
ISNS_STARTED=""
IPSEC_STARTED=""
LINKS_STARTED=""
# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
  local rc=$?
  if [ -n "$LAB_STARTED" ]; then
    step "lab down"
    "$HERE/lab-down.sh" || say "WARNING: lab-down.sh reported leftovers (see above)"
  fi
  if [ -n "$ISNS_STARTED" ]; then
    "$HERE/isns-lab.sh" down || say "WARNING: isns-lab.sh down reported leftovers (see above)"
  fi
  if [ -n "$IPSEC_STARTED" ]; then
    "$HERE/ipsec-lab.sh" down || say "WARNING: ipsec-lab.sh down reported leftovers (see above)"
  fi
  if [ -n "$LINKS_STARTED" ]; then
    "$ROOT/bench/links.sh" down || say "WARNING: bench/links.sh down reported leftovers (see above)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
LAB_STARTED=1
"$HERE/lab-up.sh" || die "the target lab did not start (see the messages above); no tests were run"
[ -s "$LAB_ENV_FILE" ] || die "lab-up.sh succeeded but wrote no $LAB_ENV_FILE"
export RSISCSI_LAB_ENV="$LAB_ENV_FILE"

step "iSNS lab up (/tmp/rsiscsi-isns)"
ISNS_STARTED=1
"$HERE/isns-lab.sh" up || die "the iSNS lab did not start (see the messages above); no tests were run"
export RSISCSI_ISNS_ENV=/tmp/rsiscsi-isns/isns.env
[ -s "$RSISCSI_ISNS_ENV" ] || die "isns-lab.sh succeeded but wrote no $RSISCSI_ISNS_ENV"

step "IPsec lab up (/tmp/rsiscsi-ipsec)"
IPSEC_STARTED=1
"$HERE/ipsec-lab.sh" up || die "the IPsec lab did not start (see the messages above); no tests were run"
export RSISCSI_IPSEC_ENV=/tmp/rsiscsi-ipsec/ipsec.env
[ -s "$RSISCSI_IPSEC_ENV" ] || die "ipsec-lab.sh succeeded but wrote no $RSISCSI_IPSEC_ENV"

step "links lab up (/tmp/rsiscsi-links)"
# A links lab that is already up (someone's benchmark or a shared session) is used and left alone.
if "$ROOT/bench/links.sh" status >/dev/null 2>&1; then
  say "the links lab is already up: using it as it is"
else
  LINKS_STARTED=1
  "$ROOT/bench/links.sh" up || die "the links lab did not start (see the messages above); no tests were run"
fi
export RSISCSI_LINKS_ENV=/tmp/rsiscsi-links/links.env
[ -s "$RSISCSI_LINKS_ENV" ] || die "bench/links.sh up succeeded but wrote no $RSISCSI_LINKS_ENV"

step "cargo test --workspace (RSISCSI_LAB_ENV=$RSISCSI_LAB_ENV)"
set +e
cargo test --workspace "$@"
rc=$?
set -e
if [ "$rc" = 0 ]; then
  say "all tests passed"
else
  say "cargo test failed (exit $rc)"
  # What the targets complained about, for a failure that involved them
  # (the logs go with the lab).
  for log in "$LAB/tgt/tgtd.log" "$LAB/istgt/istgt.log" /tmp/rsiscsi-isns/isnsd.log /tmp/rsiscsi-isns/tgt/tgtd.log \
    /tmp/rsiscsi-ipsec/i/charon.log /tmp/rsiscsi-ipsec/t/charon.log /tmp/rsiscsi-ipsec/tgt/tgtd.log \
    /tmp/rsiscsi-links/tgt/tgtd.log /tmp/rsiscsi-links/istgt/istgt.log; do
    lines=$(grep -aiE 'error|warn|fail' "$log" 2>/dev/null | tail -n 40 | cut -c1-400) || true
    [ -n "$lines" ] || continue
    say "last errors and warnings in $log:"
    printf '%s\n' "$lines" >&2
  done
fi
exit "$rc"
