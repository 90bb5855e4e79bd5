#!/bin/bash
# The iSNS lab (issue 21): an open-isns server on 127.0.0.1:3205 with targets registered two ways.
#   scripts/isns-lab.sh up     installs open-isns-server and open-isns-utils (apt-get) when missing, starts
#                              isnsd (own config, in-memory database, state under $ISNS_LAB; not /etc, no
#                              systemd), registers the lab targets and writes $ISNS_LAB/isns.env
#   scripts/isns-lab.sh down   stops what `up` started and removes $ISNS_LAB
#
# What `up` registers:
#   - with isnsadm (entity lab.isns.disks): iqn.2026-12.lab.isns:disk1 (alias disk1) and :disk2 behind
#     portal 127.0.0.1:3260, portal group tags 1 and 2; nobody logs in to them, the portal is only data
#   - with isnsadm (entity lab.isns.hidden): iqn.2026-12.lab.isns:hidden at 127.0.0.1:3267, put in the
#     discovery domain "private" together with the initiator iqn.2026-12.rs.rsiscsi:isns-private only,
#     so that every other initiator (in the default discovery domain) does not see it
#   - by tgt's own iSNS client: a tgtd of this lab (iSCSI port 3266, control port 3265; the target lab's
#     tgtd on 3260 is not touched) with target iqn.2026-12.lab.isns:tgt-own, after
#     `tgtadm --op update --mode sys --name iSNS --value On` (tgt 1.0.85 registers it with portal group
#     tag 1 and takes SCNs on a TCP port of its own)
# isnsd runs with DefaultDiscoveryDomain=1 (nodes in no domain see each other), RegistrationPeriod=0 (no
# expiry: the lab's registrations are not refreshed) and Security=0 (no DSA auth blocks).
set -Eeuo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lab-lib.sh
. "$HERE/lab-lib.sh"

ISNS_LAB=${ISNS_LAB:-/tmp/rsiscsi-isns}
ISNS_HOST=127.0.0.1
ISNS_PORT=3205
ISNS_ENV_FILE="$ISNS_LAB/isns.env"
ISNS_BASE=iqn.2026-12.lab.isns
ISNS_DISK1=$ISNS_BASE:disk1
ISNS_DISK2=$ISNS_BASE:disk2
ISNS_HIDDEN=$ISNS_BASE:hidden
ISNS_TGT_OWN=$ISNS_BASE:tgt-own
ISNS_PRIVATE_INITIATOR=iqn.2026-12.rs.rsiscsi:isns-private
ISNS_TGT_PORT=3266
ISNS_TGT_CONTROL_PORT=3265
ISNS_HIDDEN_PORT=3267

# stop_pidfile NAME FILE: TERM (then KILL) the process whose id FILE holds.
stop_pidfile() {
  local name=$1 file=$2 pid i
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  if ! is_gone "$pid"; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 50); do
      is_gone "$pid" && break
      sleep 0.1
    done
    is_gone "$pid" || kill -9 "$pid" 2>/dev/null || true
  fi
  is_gone "$pid" || die "$name (pid $pid) does not stop"
  rm -f "$file"
}

# stop_tgt: tgtd ignores SIGTERM; take it down through its management socket, then by its pid.
stop_tgt() {
  # tgt's iSNS client can block tgtd on a read from isnsd: every tgtadm call is bounded, and a tgtd
  # that does not answer is killed by its pid below.
  if timeout 5 tgtadm -C "$ISNS_TGT_CONTROL_PORT" --mode sys --op show >/dev/null 2>&1; then
    timeout 5 tgtadm -C "$ISNS_TGT_CONTROL_PORT" --op update --mode sys --name State -v offline >/dev/null 2>&1 || true
    timeout 5 tgtadm -C "$ISNS_TGT_CONTROL_PORT" --lld iscsi --mode target --op delete --force --tid 1 >/dev/null 2>&1 || true
    timeout 5 tgtadm -C "$ISNS_TGT_CONTROL_PORT" --op delete --mode system >/dev/null 2>&1 ||
      say "warning: tgtadm --op delete --mode system failed on control port $ISNS_TGT_CONTROL_PORT"
  fi
  stop_pidfile tgtd "$ISNS_LAB/tgt/tgtd.pid"
}

down() {
  stop_tgt
  stop_pidfile isnsd "$ISNS_LAB/isnsd.run.pid"
  if listening "$ISNS_HOST" "$ISNS_PORT"; then
    die "something still listens on $ISNS_HOST:$ISNS_PORT: $(port_users "$ISNS_PORT")"
  fi
  rm -rf "$ISNS_LAB"
}

# wait_up NAME PID LOG PORT: wait (10 s) until PID listens on 127.0.0.1:PORT.
wait_up() {
  local i
  for i in $(seq 100); do
    listening "$ISNS_HOST" "$4" && return 0
    if is_gone "$2"; then
      log_tail "$3"
      die "$1 exited before listening on $ISNS_HOST:$4"
    fi
    sleep 0.1
  done
  log_tail "$3"
  die "$1 does not listen on $ISNS_HOST:$4 after 10 s"
}

adm() { # adm ARGS...: isnsadm as the lab's administrator, logged
  printf '+ isnsadm %s\n' "$*" >>"$ISNS_LAB/isnsadm.log"
  isnsadm -c "$ISNS_LAB/isnsadm.conf" "$@" >>"$ISNS_LAB/isnsadm.log" 2>&1 ||
    {
      log_tail "$ISNS_LAB/isnsadm.log"
      die "isnsadm $* failed"
    }
}

tgt() { # tgt ARGS...: tgtadm on this lab's own tgtd
  timeout 10 tgtadm -C "$ISNS_TGT_CONTROL_PORT" "$@" >>"$ISNS_LAB/tgt/tgtadm.log" 2>&1 ||
    {
      log_tail "$ISNS_LAB/tgt/tgtadm.log"
      die "tgtadm $* failed"
    }
}

# registered NAME: true once isnsd lists the storage node NAME.
registered() {
  isnsadm -c "$ISNS_LAB/isnsadm.conf" --query iscsi-name="$1" 2>/dev/null | grep -q "\"$1\""
}

up() {
  need_root
  ensure_pkgs open-isns-server open-isns-utils tgt iproute2 procps
  local tool
  for tool in isnsd isnsadm tgtd tgtadm ss; do
    command -v "$tool" >/dev/null || die "$tool not found"
  done
  down
  if listening "$ISNS_HOST" "$ISNS_PORT"; then
    die "$ISNS_HOST:$ISNS_PORT is taken by another iSNS server ($(port_users "$ISNS_PORT")); stop it first"
  fi
  mkdir -p "$ISNS_LAB/tgt"

  # No Database line: an in-memory database, fresh at each start.
  cat >"$ISNS_LAB/isnsd.conf" <<EOF
SourceName = iqn.2026-12.rs.rsiscsi:isnsd
BindAddress = $ISNS_HOST
ControlSocket = $ISNS_LAB/isnsctl
PIDFile = $ISNS_LAB/isnsd.pid
RegistrationPeriod = 0
DefaultDiscoveryDomain = 1
SLPRegister = 0
Security = 0
EOF
  cat >"$ISNS_LAB/isnsadm.conf" <<EOF
SourceName = iqn.2026-12.rs.rsiscsi:isns-admin
ServerAddress = $ISNS_HOST:$ISNS_PORT
Security = 0
EOF

  say "starting isnsd on $ISNS_HOST:$ISNS_PORT (log $ISNS_LAB/isnsd.log)"
  setsid isnsd -f -4 -c "$ISNS_LAB/isnsd.conf" -d scn >"$ISNS_LAB/isnsd.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$ISNS_LAB/isnsd.run.pid"
  wait_up isnsd "$pid" "$ISNS_LAB/isnsd.log" "$ISNS_PORT"

  say "registering $ISNS_DISK1, $ISNS_DISK2 and $ISNS_HIDDEN with isnsadm"
  adm --register entity=lab.isns.disks "target=$ISNS_DISK1,alias=disk1" "portal=$ISNS_HOST:3260" pg,pgt=1
  adm --register entity=lab.isns.disks "target=$ISNS_DISK2" "portal=$ISNS_HOST:3260" pg,pgt=2
  adm --register entity=lab.isns.hidden "target=$ISNS_HIDDEN" "portal=$ISNS_HOST:$ISNS_HIDDEN_PORT" pg,pgt=1
  adm --dd-register dd-name=private "dd-member-name=$ISNS_HIDDEN" "dd-member-name=$ISNS_PRIVATE_INITIATOR"

  say "starting a tgtd of its own (iSCSI $ISNS_HOST:$ISNS_TGT_PORT, control port $ISNS_TGT_CONTROL_PORT) that registers itself"
  setsid tgtd -f -C "$ISNS_TGT_CONTROL_PORT" --iscsi "portal=$ISNS_HOST:$ISNS_TGT_PORT" \
    >"$ISNS_LAB/tgt/tgtd.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$ISNS_LAB/tgt/tgtd.pid"
  wait_up tgtd "$pid" "$ISNS_LAB/tgt/tgtd.log" "$ISNS_TGT_PORT"
  tgt --lld iscsi --mode target --op new --tid 1 --targetname "$ISNS_TGT_OWN"
  tgt --lld iscsi --mode target --op bind --tid 1 -I ALL
  tgt --op update --mode sys --name iSNSServerIP --value "$ISNS_HOST"
  tgt --op update --mode sys --name iSNSServerPort --value "$ISNS_PORT"
  tgt --op update --mode sys --name iSNS --value On
  local i
  for i in $(seq 50); do
    registered "$ISNS_TGT_OWN" && break
    sleep 0.1
  done
  registered "$ISNS_TGT_OWN" || {
    log_tail "$ISNS_LAB/tgt/tgtd.log"
    die "tgt's iSNS client did not register $ISNS_TGT_OWN within 5 s"
  }

  cat >"$ISNS_ENV_FILE.tmp" <<EOF
# rsiscsi iSNS lab, written by scripts/isns-lab.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ).
# Format: lines \`export NAME='value'\`; values contain no quote.
export ISNS_SERVER='$ISNS_HOST:$ISNS_PORT'
# Visible to every initiator in the default discovery domain: TARGET PORTAL,TPGT (space separated pairs).
export ISNS_VISIBLE='$ISNS_DISK1 $ISNS_HOST:3260,1 $ISNS_DISK2 $ISNS_HOST:3260,2 $ISNS_TGT_OWN $ISNS_HOST:$ISNS_TGT_PORT,1'
# Registered by tgt's own iSNS client (the others by isnsadm).
export ISNS_TGT_OWN='$ISNS_TGT_OWN'
# In discovery domain "private" with ISNS_PRIVATE_INITIATOR only.
export ISNS_HIDDEN='$ISNS_HIDDEN $ISNS_HOST:$ISNS_HIDDEN_PORT,1'
export ISNS_PRIVATE_INITIATOR='$ISNS_PRIVATE_INITIATOR'
# For tests that register and deregister targets of their own.
export ISNS_ADM_CONF='$ISNS_LAB/isnsadm.conf'
export ISNS_LOG='$ISNS_LAB/isnsd.log'
EOF
  mv "$ISNS_ENV_FILE.tmp" "$ISNS_ENV_FILE"
  say "iSNS lab up: $ISNS_ENV_FILE"
}

case "${1:-}" in
up) up ;;
down)
  need_root
  down
  say "iSNS lab down"
  ;;
*) die "usage: ${0##*/} up|down" ;;
esac
