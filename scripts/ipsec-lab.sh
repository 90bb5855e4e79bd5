#!/bin/bash
# The IPsec lab (issue 22): an iSCSI target reachable only through an IKEv2/ESP tunnel set up by strongSwan.
#   scripts/ipsec-lab.sh up     installs strongswan-charon, strongswan-swanctl, libcharon-extra-plugins and
#                               tcpdump (apt-get) when missing, builds the namespaces below, starts tgtd and
#                               one charon per namespace, and writes $IPSEC_LAB/ipsec.env
#   scripts/ipsec-lab.sh down   stops what `up` started and removes the namespaces and $IPSEC_LAB
#
# Layout (198.18.0.0/15 is only ever used inside the two namespaces; the root namespace gets
# `unreachable 198.18.0.0/15` first, so nothing of it can leak out of this host):
#
#   rsiscsi-ipsec-i (initiator)                         rsiscsi-ipsec-t (target)
#   rsi-inner 198.18.9.1/32 (inner address, its own     lo 198.18.9.2/32 (inner address)
#     interface: an initiator port for the tests)       tgtd: 198.18.9.2:3260 and 198.18.8.2:3260 (plain),
#   rsi-ipsec-i 198.18.8.1/24 ==== veth ====           rsi-ipsec-t 198.18.8.2/24
#   charon (VICI at $IPSEC_LAB/i/charon.vici,           charon (responder, loaded with swanctl: IKEv2 PSK,
#     nothing loaded: rsiscsi loads its own)             tunnel 198.18.8.x, selectors 198.18.9.1/32[tcp] <->
#                                                         198.18.9.2/32[tcp/3260])
#
# The kernel here has xfrm but no ESP and loads no modules, so both charons use kernel-libipsec (ESP in user
# space over a TUN device, tunnel mode only, ESP in UDP); charon puts the route to the peer's inner address on
# ipsec0 in table 220. Each charon runs in its own mount namespace with a private /run and its own
# STRONGSWAN_CONF, run directly (/usr/lib/ipsec/charon; charon-systemd needs systemd).
# tgtd ignores SIGTERM: `down` stops it with SIGKILL.
set -Eeuo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lab-lib.sh
. "$HERE/lab-lib.sh"

IPSEC_LAB=${IPSEC_LAB:-/tmp/rsiscsi-ipsec}
IPSEC_ENV_FILE="$IPSEC_LAB/ipsec.env"
NS_I=rsiscsi-ipsec-i
NS_T=rsiscsi-ipsec-t
VETH_I=rsi-ipsec-i
VETH_T=rsi-ipsec-t
INNER_IF=rsi-inner      # a veth end of its own in the initiator namespace: its index is an initiator port
INNER_PEER=rsi-inner-p
LAB_NET=198.18.0.0/15
OUTER_I=198.18.8.1
OUTER_T=198.18.8.2
INNER_I=198.18.9.1
INNER_T=198.18.9.2
ISCSI_PORT=3260
TGT_CTL=3290            # tgtd's control port (socket /var/run/tgtd/socket.3290): clear of the loopback lab
TARGET_IQN=iqn.2026-12.lab.ipsec:disk
LUN_MIB=160
CHARON=/usr/lib/ipsec/charon

# ns NAME CMD...: run CMD in namespace NAME.
ns() {
  local n=$1
  shift
  ip netns exec "$n" "$@"
}

# stop_pidfile NAME FILE SIGNAL: send SIGNAL (then KILL) to the process whose id FILE holds.
stop_pidfile() {
  local pid i
  [ -s "$2" ] || return 0
  pid=$(cat "$2")
  if ! is_gone "$pid"; then
    kill "-$3" "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      is_gone "$pid" && break
      sleep 0.1
    done
    is_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$2"
}

down() {
  need_root
  stop_pidfile charon-i "$IPSEC_LAB/i/charon.pid" TERM
  stop_pidfile charon-t "$IPSEC_LAB/t/charon.pid" TERM
  stop_pidfile tgtd "$IPSEC_LAB/tgt/tgtd.pid" KILL
  rm -f "/var/run/tgtd/socket.$TGT_CTL" "/var/run/tgtd/socket.$TGT_CTL.lock"
  local n
  for n in "$NS_I" "$NS_T"; do
    ip netns del "$n" 2>/dev/null || true
  done
  if mountpoint -q "$IPSEC_LAB/ram" 2>/dev/null; then
    umount "$IPSEC_LAB/ram"
  fi
  rm -rf "$IPSEC_LAB"
  say "IPsec lab stopped"
}

# ns_listening NS ADDR PORT: something listens on ADDR:PORT inside NS.
ns_listening() {
  ns "$1" ss -Hltn 2>/dev/null | awk -v w="$2:$3" '$4 == w { found = 1 } END { exit !found }'
}

# start_charon SIDE NS: charon for side i or t, in NS, own mount namespace and /run, own strongswan.conf.
start_charon() {
  local side=$1 n=$2 dir="$IPSEC_LAB/$1"
  cat >"$dir/strongswan.conf" <<EOF
# rsiscsi IPsec lab, $side side: only what the lab needs, nothing from /etc/strongswan.d.
charon {
  load = random nonce aes sha1 sha2 hmac gmp kdf pem pkcs1 x509 pubkey kernel-libipsec kernel-netlink socket-default vici
  port = 500
  port_nat_t = 4500
  install_routes = yes
  routing_table = 220
  routing_table_prio = 220
  plugins {
    vici {
      socket = unix://$dir/charon.vici
    }
  }
  filelog {
    lab {
      path = $dir/charon.log
      time_format = %T
      default = 1
      ike = 1
      knl = 1
      cfg = 1
      append = no
      flush_line = yes
    }
  }
}
EOF
  rm -f "$dir/charon.vici"
  # unshare -m: a private /run (charon's pid file and default sockets) that no other charon sees.
  # Not through ns(): a shell function would run in a subshell, and $! would not be charon's pid.
  ip netns exec "$n" env STRONGSWAN_CONF="$dir/strongswan.conf" setsid unshare -m --propagation private \
    sh -c 'mount -t tmpfs -o mode=0755 rsiscsi-ipsec-run /run && exec "$0"' "$CHARON" \
    >"$dir/charon.out" 2>&1 </dev/null &
  echo $! >"$dir/charon.pid"
  local i
  for ((i = 0; i < 100; i++)); do
    [ -S "$dir/charon.vici" ] && return 0
    is_gone "$(cat "$dir/charon.pid")" && break
    sleep 0.1
  done
  log_tail "$dir/charon.out"
  log_tail "$dir/charon.log"
  die "charon ($side) did not open its VICI socket $dir/charon.vici"
}

up() {
  need_root
  # Mandatory first step: the lab's addresses can never be routed out of this host.
  if ! ip route show type unreachable | grep -q "^unreachable $LAB_NET"; then
    ip route add unreachable "$LAB_NET"
  fi
  ensure_pkgs strongswan-charon strongswan-swanctl libcharon-extra-plugins tcpdump tgt
  [ -x "$CHARON" ] || die "$CHARON not found after installing strongswan-charon"
  [ -c /dev/net/tun ] || die "/dev/net/tun is missing: kernel-libipsec needs a TUN device"
  if [ -d "$IPSEC_LAB" ] || ip netns list | grep -q "^$NS_I\b"; then
    say "an earlier IPsec lab is still there: taking it down first"
    down
  fi
  mkdir -p "$IPSEC_LAB/i" "$IPSEC_LAB/t" "$IPSEC_LAB/tgt" "$IPSEC_LAB/ram"
  chmod 0700 "$IPSEC_LAB"

  # --- namespaces and links -----------------------------------------------------------------------
  ip netns add "$NS_I"
  ip netns add "$NS_T"
  ip link add "$VETH_I" type veth peer name "$VETH_T"
  ip link set "$VETH_I" netns "$NS_I"
  ip link set "$VETH_T" netns "$NS_T"
  ns "$NS_I" ip link set lo up
  ns "$NS_T" ip link set lo up
  ns "$NS_I" ip addr add "$OUTER_I/24" dev "$VETH_I"
  ns "$NS_T" ip addr add "$OUTER_T/24" dev "$VETH_T"
  ns "$NS_I" ip link set "$VETH_I" up
  ns "$NS_T" ip link set "$VETH_T" up
  # The initiator's inner address on an interface of its own (no dummy driver here: a veth pair).
  ns "$NS_I" ip link add "$INNER_IF" type veth peer name "$INNER_PEER"
  ns "$NS_I" ip addr add "$INNER_I/32" dev "$INNER_IF"
  ns "$NS_I" ip link set "$INNER_PEER" up
  ns "$NS_I" ip link set "$INNER_IF" up
  ns "$NS_T" ip addr add "$INNER_T/32" dev lo
  # No route to the other side's inner address: only charon's (table 220, via ipsec0) reaches it, so a
  # connection without a security association fails instead of going out in clear text.

  # --- secrets ------------------------------------------------------------------------------------
  umask 077
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$IPSEC_LAB/psk"
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$IPSEC_LAB/psk.wrong"
  chmod 0600 "$IPSEC_LAB/psk" "$IPSEC_LAB/psk.wrong"
  umask 022

  # --- tgtd in the target namespace ---------------------------------------------------------------
  mount -t tmpfs -o "size=$((LUN_MIB + 16))m,mode=0700" rsiscsi-ipsec-ram "$IPSEC_LAB/ram"
  dd if=/dev/zero of="$IPSEC_LAB/ram/disk.img" bs=1M count="$LUN_MIB" status=none
  ip netns exec "$NS_T" env "${MALLOC_ENV[@]}" setsid tgtd -f -C "$TGT_CTL" --iscsi "portal=$INNER_T:$ISCSI_PORT" \
    >"$IPSEC_LAB/tgt/tgtd.log" 2>&1 </dev/null &
  echo $! >"$IPSEC_LAB/tgt/tgtd.pid"
  local i
  for ((i = 0; i < 100; i++)); do
    ns_listening "$NS_T" "$INNER_T" "$ISCSI_PORT" && break
    is_gone "$(cat "$IPSEC_LAB/tgt/tgtd.pid")" && { log_tail "$IPSEC_LAB/tgt/tgtd.log"; die "tgtd exited"; }
    sleep 0.1
  done
  ns_listening "$NS_T" "$INNER_T" "$ISCSI_PORT" || die "tgtd does not listen on $INNER_T:$ISCSI_PORT"
  tgta() { tgtadm -C "$TGT_CTL" --lld iscsi "$@" >>"$IPSEC_LAB/tgt/tgtadm.log" 2>&1 || die "tgtadm $* failed"; }
  # The outer address too: the plain connection of the MC/S test (no IPsec there).
  tgta --mode portal --op new --param "portal=$OUTER_T:$ISCSI_PORT"
  tgta --mode target --op new --tid 1 --targetname "$TARGET_IQN"
  tgta --mode logicalunit --op new --tid 1 --lun 1 --backing-store "$IPSEC_LAB/ram/disk.img" --bstype rdwr
  tgta --mode target --op bind --tid 1 --initiator-address ALL
  tgta --mode target --op update --tid 1 --name MaxConnections --value 8

  # --- charon, target side (responder) ------------------------------------------------------------
  start_charon t "$NS_T"
  local psk
  psk=$(cat "$IPSEC_LAB/psk")
  (
    umask 077
    cat >"$IPSEC_LAB/t/swanctl.conf" <<EOF
connections {
  rsiscsi-lab-target {
    version = 2
    local_addrs = $OUTER_T
    remote_addrs = $OUTER_I
    encap = yes
    proposals = default
    local {
      auth = psk
      id = $OUTER_T
    }
    remote {
      auth = psk
      id = $OUTER_I
    }
    children {
      rsiscsi-lab-target {
        mode = tunnel
        local_ts = $INNER_T/32[tcp/$ISCSI_PORT]
        remote_ts = $INNER_I/32[tcp]
        esp_proposals = aes256-sha256,aes128-sha256,aes256-sha256-modp2048,aes256-sha256-modp3072
      }
    }
  }
}
secrets {
  ike-rsiscsi-lab {
    id-i = $OUTER_I
    id-t = $OUTER_T
    secret = "$psk"
  }
}
EOF
  )
  swanctl --load-all --noprompt --uri "unix://$IPSEC_LAB/t/charon.vici" --file "$IPSEC_LAB/t/swanctl.conf" \
    >"$IPSEC_LAB/t/swanctl.out" 2>&1 || { log_tail "$IPSEC_LAB/t/swanctl.out"; die "swanctl --load-all failed"; }

  # --- charon, initiator side: nothing loaded, rsiscsi brings its own connection and key ----------------
  start_charon i "$NS_I"
  local port
  port=$(ns "$NS_I" cat "/sys/class/net/$INNER_IF/ifindex")

  cat >"$IPSEC_ENV_FILE" <<EOF
# Written by scripts/ipsec-lab.sh up; read by crates/iscsi-initiator/tests/ipsec.rs.
IPSEC_NS_I=$NS_I
IPSEC_NS_T=$NS_T
IPSEC_VETH_T=$VETH_T
IPSEC_OUTER_I=$OUTER_I
IPSEC_OUTER_T=$OUTER_T
IPSEC_INNER_I=$INNER_I
IPSEC_INNER_T=$INNER_T
IPSEC_INNER_PORT=$port
IPSEC_ISCSI_PORT=$ISCSI_PORT
IPSEC_TARGET=$TARGET_IQN
IPSEC_LUN=1
IPSEC_LUN_MIB=$LUN_MIB
IPSEC_VICI_SOCKET=$IPSEC_LAB/i/charon.vici
IPSEC_TARGET_VICI_SOCKET=$IPSEC_LAB/t/charon.vici
IPSEC_CHARON_PIDFILE=$IPSEC_LAB/i/charon.pid
IPSEC_PSK_FILE=$IPSEC_LAB/psk
IPSEC_WRONG_PSK_FILE=$IPSEC_LAB/psk.wrong
IPSEC_LAB_SCRIPT=$HERE/ipsec-lab.sh
EOF
  say "IPsec lab up: target $TARGET_IQN at $INNER_T:$ISCSI_PORT through a tunnel $OUTER_I <-> $OUTER_T" \
    "(initiator namespace $NS_I, VICI $IPSEC_LAB/i/charon.vici); env in $IPSEC_ENV_FILE"
}

# restart-charon: start the initiator's charon again (a test stops it to check the error).
restart_charon_i() {
  need_root
  stop_pidfile charon-i "$IPSEC_LAB/i/charon.pid" TERM
  start_charon i "$NS_I"
}

case "${1:-}" in
up) up ;;
down) down ;;
restart-charon-i) restart_charon_i ;;
*) die "usage: ${0##*/} up|down|restart-charon-i" ;;
esac
