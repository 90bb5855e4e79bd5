#!/bin/bash
# The links lab (issue 19): one iSCSI session over several slow network links, where the links and
# not the CPUs are the limit, and links that can be lost and brought back while I/O runs.
#
#   bench/links.sh up [--links N] [--rate R | --rates R1,R2,...] [--lun-size SIZE]
#   bench/links.sh down              stop everything `up` started and report leftovers
#   bench/links.sh status            the links (state, rate) and the daemons; exit 0 when fully up
#   bench/links.sh link K down|up [--side ini|tgt|both]
#                                    take link K down or up (default side: ini, see below)
#   bench/links.sh rate K R          change link K's rate in both directions, live
#   bench/links.sh locked CMD ARGS...
#                                    run CMD holding the lab's lock (flock on $LINKS_DIR/lock, also
#                                    RSISCSI_LINKS_LOCK in links.env): whatever flips links or rates
#                                    or measures takes it, so that two such users never overlap
#
# Layout (defaults: 4 links of 1gbit, 1 GiB LUNs). The initiator side is the ROOT namespace, so the
# library tests, the CLI and rsiscsid use the links without `ip netns exec`:
#
#   root namespace                                  rsiscsi-links-t (target namespace)
#   rsl-iK 198.19.K.1/24  ======= veth K =======    rsl-tK 198.19.K.2/24          (K = 1..N)
#     tbf RATE_K (root -> target: writes)             tbf RATE_K (target -> root: reads)
#                                                   tgtd  198.19.K.2:3260 for every K (control -C 3292)
#                                                         iqn.2026-12.lab.links:tgt    LUN 1
#                                                   istgt 198.19.K.2:3261 for every K (UnitControl
#                                                         127.0.0.1:3279 in the namespace)
#                                                         iqn.2026-12.lab.links:istgt  LUN 0
#                                                   iperf3 -s on 198.19.K.2:5201 (when installed)
#
# The index of rsl-iK is link K's "initiator port" (InitiatorPortNumber = interface index in this
# project: iscsi_initiator::session::initiator_port_address). 198.18.0.0/15 is the RFC 2544
# benchmarking range; the root namespace gets `unreachable 198.18.0.0/15` first, so none of it can
# leave this host (a link that is down makes its target address unreachable, not routed elsewhere).
#
# `link K down --side ini` (the default) is `ip link set rsl-iK down` in the root namespace: the
# initiator's NIC goes down, its routes go, sends fail at once. `--side tgt` downs rsl-tK in the
# target namespace: the root side only loses carrier (a cable pulled at the far end), packets vanish
# and only timeouts tell. `both` does both. `link K up` brings up both ends.
#
# State in ${LINKS_DIR:-/tmp/rsiscsi-links}: logs, PIDs, the LUN tmpfs (ram/) and links.env, lines
# `export NAME='value'` (RSISCSI_LINKS_ENV for the tests; every name is listed in write_env below).
# LUNs are files on a tmpfs, pre-filled with zeros. Daemons start with the glibc malloc environment of
# the test lab and stop by their recorded PIDs (tgtd through tgtadm, then SIGKILL: it ignores SIGTERM).
# `up` on a lab that is fully up with the same settings does nothing; with other settings it refuses
# (run `down` first); a half lab (left over from a crash) is taken down first, saying so.
set -Eeuo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=scripts/lab-lib.sh
. "$ROOT/scripts/lab-lib.sh"

LINKS_DIR=${LINKS_DIR:-/tmp/rsiscsi-links}
LINKS_ENV_FILE="$LINKS_DIR/links.env"
NS=rsiscsi-links-t
IF_I=rsl-i   # + K: root side
IF_T=rsl-t   # + K: target side
NET_PREFIX=198.19
LAB_NET=198.18.0.0/15
TGT_PORT=3260
ISTGT_PORT=3261
ISTGT_UCTL_PORT=3279 # on 127.0.0.1 inside the namespace
IPERF_PORT=5201
TGT_CTL=3292         # tgtd's management socket /var/run/tgtd/socket.3292: clear of every other lab
TGT_IQN=iqn.2026-12.lab.links:tgt
ISTGT_BASE=iqn.2026-12.lab.links
ISTGT_NAME=istgt
ISTGT_IQN=$ISTGT_BASE:$ISTGT_NAME
TGT_LUN=1
ISTGT_LUN=0
MAX_LINKS=8
# tbf: 256 KiB of burst holds a few 64 KiB GSO segments; 20 ms of queue. See tbf_args.
TBF_BURST=256kb
TBF_LATENCY=20ms

ns() { ip netns exec "$NS" "$@"; }

# rate_bits R: tc's rate R (e.g. 1gbit, 200mbit, 500kbit, 1000000bit or a plain number of bits/s)
# as bits per second; tc's k/m/g are powers of 1000. Fails on anything else (never bytes/s: "bps").
rate_bits() {
  local r=${1,,}
  [[ $r =~ ^([0-9]+(\.[0-9]+)?)(bit|kbit|mbit|gbit)?$ ]] || return 1
  awk -v n="${BASH_REMATCH[1]}" -v u="${BASH_REMATCH[3]}" 'BEGIN {
    m = 1; if (u == "kbit") m = 1e3; if (u == "mbit") m = 1e6; if (u == "gbit") m = 1e9
    v = n * m; if (v < 8000) exit 1; printf "%.0f\n", v }'
}

# size_mib SIZE: 512M, 1G, 1GiB, 300MiB, or a number of MiB.
size_mib() {
  local s=${1^^}
  [[ $s =~ ^([0-9]+)(M|MB|MIB|G|GB|GIB)?$ ]] || return 1
  case "${BASH_REMATCH[2]}" in
    G | GB | GIB) echo $((BASH_REMATCH[1] * 1024)) ;;
    *) echo "${BASH_REMATCH[1]}" ;;
  esac
}

tbf_args() { echo "root tbf rate $1 burst $TBF_BURST latency $TBF_LATENCY"; }

# pid_alive FILE COMM: the PID recorded in FILE runs, as the program COMM.
pid_alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  ! is_gone "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

ns_exists() { [ -e "/var/run/netns/$NS" ]; }

# ns_listening ADDR PORT
ns_listening() {
  ns ss -Hltn 2>/dev/null | awk -v w="$1:$2" '$4 == w { found = 1 } END { exit !found }'
}

# Links that exist in the root namespace, by number.
root_links() {
  local d
  for d in /sys/class/net/"$IF_I"*; do
    [ -e "$d" ] || continue
    d=${d##*/}
    [[ ${d#"$IF_I"} =~ ^[0-9]+$ ]] && echo "${d#"$IF_I"}"
  done | sort -n
}

# --------------------------------------------------------------------------------------------------
stop_pid() { # FILE COMM SIGNAL SECONDS: SIGNAL, then SIGKILL after SECONDS
  local pid i
  [ -s "$1" ] || { rm -f "$1"; return 0; }
  pid=$(cat "$1")
  if pid_alive "$1" "$2"; then
    kill "-$3" "$pid" 2>/dev/null || true
    for ((i = 0; i < $4 * 10; i++)); do
      is_gone "$pid" && break
      sleep 0.1
    done
    if ! is_gone "$pid"; then
      [ "$3" = KILL ] || say "$2 (pid $pid) still up after SIG$3; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do is_gone "$pid" && break; sleep 0.1; done
    fi
  fi
  rm -f "$1"
}

stop_tgtd() {
  local tid
  if pid_alive "$LINKS_DIR/tgt/tgtd.pid" tgtd; then
    # tgtd's SIGTERM handler does nothing: offline, delete the target, delete the system; then KILL.
    timeout 5 tgtadm -C "$TGT_CTL" --op update --mode sys --name State -v offline >/dev/null 2>&1 || true
    for tid in $(timeout 5 tgtadm -C "$TGT_CTL" --lld iscsi --mode target --op show 2>/dev/null |
      sed -n 's/^Target \([0-9]*\):.*/\1/p'); do
      timeout 5 tgtadm -C "$TGT_CTL" --lld iscsi --mode target --op delete --force --tid "$tid" >/dev/null 2>&1 || true
    done
    timeout 5 tgtadm -C "$TGT_CTL" --op delete --mode system >/dev/null 2>&1 || true
  fi
  stop_pid "$LINKS_DIR/tgt/tgtd.pid" tgtd KILL 3
  rm -f "/var/run/tgtd/socket.$TGT_CTL" "/var/run/tgtd/socket.$TGT_CTL.lock"
}

down() {
  need_root
  local k f left=()
  # Tests must not pick up the settings of a lab that is going away.
  rm -f "$LINKS_ENV_FILE"
  for f in "$LINKS_DIR"/iperf3/iperf3-*.pid; do
    [ -e "$f" ] && stop_pid "$f" iperf3 TERM 3
  done
  stop_pid "$LINKS_DIR/istgt/istgt.launch.pid" istgt TERM 10
  rm -f "$LINKS_DIR/istgt/istgt.pid"
  stop_tgtd
  # Whatever else still runs in the namespace was started by this lab (nothing else uses it).
  if ns_exists; then
    for f in $(ip netns pids "$NS" 2>/dev/null); do
      say "process $f ($(cat "/proc/$f/comm" 2>/dev/null)) still in $NS; SIGKILL"
      kill -KILL "$f" 2>/dev/null || true
    done
    ip netns del "$NS" || left+=("namespace $NS")
  fi
  # Deleting the namespace deletes the target ends, and with them the root ends; sweep what is left.
  for k in $(root_links); do
    ip link del "$IF_I$k" 2>/dev/null || true
  done
  if mountpoint -q "$LINKS_DIR/ram" 2>/dev/null; then
    umount "$LINKS_DIR/ram" 2>/dev/null || { sleep 1; umount "$LINKS_DIR/ram"; } || left+=("tmpfs $LINKS_DIR/ram (busy)")
  fi
  # Leftovers: anything of ours that survived.
  sleep 0.2
  ns_exists && left+=("namespace $NS")
  for k in $(root_links); do left+=("interface $IF_I$k"); done
  pid_alive "$LINKS_DIR/tgt/tgtd.pid" tgtd && left+=("tgtd pid $(cat "$LINKS_DIR/tgt/tgtd.pid")")
  [ -S "/var/run/tgtd/socket.$TGT_CTL" ] && left+=("/var/run/tgtd/socket.$TGT_CTL")
  if ((${#left[@]})); then
    say "ERROR: left over after down:"
    printf '  %s\n' "${left[@]}" >&2
    return 1
  fi
  say "links lab down ($LINKS_DIR; logs kept there)"
}

# --------------------------------------------------------------------------------------------------
# full_up: 0 when every piece of the lab described by links.env runs.
full_up() {
  [ -s "$LINKS_ENV_FILE" ] && ns_exists || return 1
  pid_alive "$LINKS_DIR/tgt/tgtd.pid" tgtd && pid_alive "$LINKS_DIR/istgt/istgt.launch.pid" istgt || return 1
  local n k
  n=$(sed -n "s/^export RSISCSI_LINKS_COUNT='\([0-9]*\)'$/\1/p" "$LINKS_ENV_FILE")
  [ -n "$n" ] || return 1
  for ((k = 1; k <= n; k++)); do
    [ -e "/sys/class/net/$IF_I$k" ] || return 1
    ns_listening "$NET_PREFIX.$k.2" "$TGT_PORT" && ns_listening "$NET_PREFIX.$k.2" "$ISTGT_PORT" || return 1
  done
}

# anything_up: some piece of a links lab exists.
anything_up() {
  ns_exists || [ -n "$(root_links)" ] || [ -s "$LINKS_ENV_FILE" ] || mountpoint -q "$LINKS_DIR/ram" 2>/dev/null ||
    pid_alive "$LINKS_DIR/tgt/tgtd.pid" tgtd || pid_alive "$LINKS_DIR/istgt/istgt.launch.pid" istgt ||
    [ -S "/var/run/tgtd/socket.$TGT_CTL" ]
}

env_get() { sed -n "s/^export $1='\(.*\)'$/\1/p" "$LINKS_ENV_FILE" 2>/dev/null; }

# wait_listen NAME PIDFILE LOG ADDR PORT: up to 10 s for ADDR:PORT in the namespace.
wait_listen() {
  local i pid
  pid=$(cat "$2")
  for ((i = 0; i < 100; i++)); do
    ns_listening "$4" "$5" && return 0
    if is_gone "$pid"; then
      log_tail "$3"
      die "$1 exited (pid $pid) before listening on $4:$5 (log $3)"
    fi
    sleep 0.1
  done
  log_tail "$3"
  die "$1 (pid $pid) is not listening on $4:$5 after 10 s (log $3)"
}

up() {
  need_root
  local n=4 rate=1gbit rates="" lun_size=1G k links_given=0
  while (($#)); do
    case "$1" in
      --links) n=${2:?--links takes a number}; links_given=1; shift 2 ;;
      --rate) rate=${2:?--rate takes a rate}; shift 2 ;;
      --rates) rates=${2:?--rates takes a comma-separated list}; shift 2 ;;
      --lun-size) lun_size=${2:?--lun-size takes a size}; shift 2 ;;
      *) die "up: unknown argument '$1' (see: $0 --help)" ;;
    esac
  done
  [[ $n =~ ^[1-9]$ ]] && ((n <= MAX_LINKS)) || die "--links takes a number from 1 to $MAX_LINKS, not '$n'"
  local -a rate_tc=() rate_bps=()
  if [ -n "$rates" ]; then
    IFS=, read -r -a rate_tc <<<"$rates"
    # --rates sets the number of links; a --links that says otherwise is a mistake.
    ((links_given == 0 || ${#rate_tc[@]} == n)) || die "--links $n but --rates lists ${#rate_tc[@]} rate(s)"
    n=${#rate_tc[@]}
    ((n >= 1 && n <= MAX_LINKS)) || die "--rates lists $n rates; 1 to $MAX_LINKS links are possible"
  else
    for ((k = 0; k < n; k++)); do rate_tc+=("$rate"); done
  fi
  for ((k = 0; k < n; k++)); do
    rate_bps+=("$(rate_bits "${rate_tc[k]}")") || die "not a rate: '${rate_tc[k]}' (use e.g. 1gbit, 200mbit, 500kbit)"
  done
  local lun_mib
  lun_mib=$(size_mib "$lun_size") || die "not a LUN size: '$lun_size' (use e.g. 1G, 512M)"
  ((lun_mib >= 16)) || die "--lun-size must be at least 16 MiB"
  local want="links=$n rates=${rate_bps[*]} lun_mib=$lun_mib"

  # Mandatory first step: the lab's addresses can never be routed out of this host.
  ip route add unreachable "$LAB_NET" 2>/dev/null || ip route show type unreachable | grep -q "^unreachable $LAB_NET" ||
    die "cannot add 'unreachable $LAB_NET' to the root namespace"

  if full_up; then
    if [ "$(env_get RSISCSI_LINKS_SETTINGS)" = "$want" ]; then
      say "the links lab is already up with these settings ($want); nothing to do"
      return 0
    fi
    die "the links lab is up with other settings ($(env_get RSISCSI_LINKS_SETTINGS)); run '$0 down' first"
  fi
  if anything_up; then
    say "part of a links lab is left over (no complete lab); taking it down first"
    down || die "could not clean up the half lab (see above)"
  fi

  ensure_pkgs tgt istgt iproute2 procps util-linux
  local tool
  for tool in tgtd tgtadm istgt ss tc ip mountpoint; do
    command -v "$tool" >/dev/null || die "$tool not found even after installing the packages"
  done
  local have_iperf=0
  command -v iperf3 >/dev/null && have_iperf=1

  # From here on, a failure takes down what was started.
  trap 'rc=$?; trap - ERR; say "ERROR: links lab start failed (exit $rc); taking down what was started"; down >/dev/null 2>&1 || true; exit $rc' ERR

  mkdir -p "$LINKS_DIR"/{tgt,istgt,iperf3,ram}
  touch "$LINKS_DIR/lock"
  # ---------- links ----------
  ip netns add "$NS"
  ns ip link set lo up
  for ((k = 1; k <= n; k++)); do
    ip link add "$IF_I$k" type veth peer name "$IF_T$k" netns "$NS"
    ip addr add "$NET_PREFIX.$k.1/24" dev "$IF_I$k"
    ns ip addr add "$NET_PREFIX.$k.2/24" dev "$IF_T$k"
    # No IPv6 on the links: nothing but the lab's IPv4 traffic, no DAD or router solicitations.
    sysctl -qw "net.ipv6.conf.$IF_I$k.disable_ipv6=1" 2>/dev/null || true
    ns sysctl -qw "net.ipv6.conf.$IF_T$k.disable_ipv6=1" 2>/dev/null || true
    # shellcheck disable=SC2046  # tbf_args is split into words on purpose
    tc qdisc add dev "$IF_I$k" $(tbf_args "${rate_tc[k - 1]}")
    # shellcheck disable=SC2046
    ns tc qdisc add dev "$IF_T$k" $(tbf_args "${rate_tc[k - 1]}")
    ip link set "$IF_I$k" up
    ns ip link set "$IF_T$k" up
  done

  # ---------- LUNs: files on a tmpfs, pre-filled (first touch of fresh pages is slow) ----------
  mount -t tmpfs -o "size=$((2 * lun_mib + 64))m,mode=0700" rsiscsi-links "$LINKS_DIR/ram"
  local f
  for f in tgt istgt; do
    dd if=/dev/zero of="$LINKS_DIR/ram/$f.img" bs=1M count="$lun_mib" status=none
  done

  # ---------- tgt ----------
  local tlog="$LINKS_DIR/tgt/tgtd.log"
  : >"$LINKS_DIR/tgt/tgtadm.log"
  # -f: foreground, log on stderr, no PID file (so keep $!: ip netns exec, env and setsid all exec).
  ip netns exec "$NS" env "${MALLOC_ENV[@]}" setsid tgtd -f -C "$TGT_CTL" \
    --iscsi "portal=$NET_PREFIX.1.2:$TGT_PORT" >"$tlog" 2>&1 </dev/null &
  echo $! >"$LINKS_DIR/tgt/tgtd.pid"
  wait_listen tgtd "$LINKS_DIR/tgt/tgtd.pid" "$tlog" "$NET_PREFIX.1.2" "$TGT_PORT"
  tgta() {
    timeout 10 tgtadm -C "$TGT_CTL" --lld iscsi "$@" >>"$LINKS_DIR/tgt/tgtadm.log" 2>&1 || {
      log_tail "$LINKS_DIR/tgt/tgtadm.log"
      die "tgtadm $* failed"
    }
  }
  for ((k = 2; k <= n; k++)); do
    tgta --mode portal --op new --param "portal=$NET_PREFIX.$k.2:$TGT_PORT"
  done
  tgta --mode target --op new --tid 1 --targetname "$TGT_IQN"
  tgta --mode logicalunit --op new --tid 1 --lun "$TGT_LUN" --backing-store "$LINKS_DIR/ram/tgt.img" --bstype rdwr
  tgta --mode target --op bind --tid 1 --initiator-address ALL
  # As bench/targets.sh; ErrorRecoveryLevel stays at tgt's 0, as in the test lab (§ pitfall 11: tgt
  # negotiates 2 but cannot do it).
  local kv
  for kv in MaxRecvDataSegmentLength=262144 MaxXmitDataSegmentLength=262144 MaxBurstLength=16776192 \
    FirstBurstLength=1048576 MaxConnections=8; do
    tgta --mode target --op update --tid 1 --name "${kv%=*}" --value "${kv#*=}"
  done
  for ((k = 2; k <= n; k++)); do
    wait_listen tgtd "$LINKS_DIR/tgt/tgtd.pid" "$tlog" "$NET_PREFIX.$k.2" "$TGT_PORT"
  done

  # ---------- istgt ----------
  local d="$LINKS_DIR/istgt"
  {
    cat <<CONF
# Generated by rsiscsi bench/links.sh; rewritten on every start.
[Global]
  NodeBase "$ISTGT_BASE"
  PidFile $d/istgt.pid
  AuthFile $d/auth.conf
  MediaDirectory $LINKS_DIR/ram
  LogFacility "local7"
  Timeout 30
  NopInInterval 20
  DiscoveryAuthMethod None
  MaxSessions 16
  MaxConnections 8
  MaxR2T 32
  MaxOutstandingR2T 16
  DefaultTime2Wait 2
  DefaultTime2Retain 60
  FirstBurstLength 262144
  MaxBurstLength 16776192
  MaxRecvDataSegmentLength 262144
  InitialR2T Yes
  ImmediateData Yes
  DataPDUInOrder Yes
  DataSequenceInOrder Yes
  # istgt refuses to start with ErrorRecoveryLevel 1 or 2.
  ErrorRecoveryLevel 0

[UnitControl]
  AuthMethod CHAP Mutual
  AuthGroup AuthGroup10000
  Portal UC1 127.0.0.1:$ISTGT_UCTL_PORT
  Netmask 127.0.0.1

[PortalGroup1]
CONF
    for ((k = 1; k <= n; k++)); do printf '  Portal DA%d %s:%s\n' "$k" "$NET_PREFIX.$k.2" "$ISTGT_PORT"; done
    cat <<CONF

[InitiatorGroup1]
  InitiatorName "ALL"
  Netmask $NET_PREFIX.0.0/16

[LogicalUnit1]
  TargetName $ISTGT_NAME
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  UseDigest Auto
  UnitType Disk
  QueueDepth 64
  LUN$ISTGT_LUN Storage $LINKS_DIR/ram/istgt.img ${lun_mib}MB
CONF
  } >"$d/istgt.conf"
  # UnitControl is unused; its group only has to exist. A fresh random secret each start.
  (umask 077 && printf '[AuthGroup10000]\n  Auth "linksctl" "%s" "linksctlm" "%s"\n' \
    "$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')" "$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')" >"$d/auth.conf")
  # -D: foreground, log on stderr (there is no /dev/log for its syslog copy).
  ip netns exec "$NS" env "${MALLOC_ENV[@]}" setsid istgt -c "$d/istgt.conf" -p "$d/istgt.pid" -D \
    >"$d/istgt.log" 2>&1 </dev/null &
  echo $! >"$d/istgt.launch.pid"
  for ((k = 1; k <= n; k++)); do
    wait_listen istgt "$d/istgt.launch.pid" "$d/istgt.log" "$NET_PREFIX.$k.2" "$ISTGT_PORT"
  done

  # ---------- iperf3, one server per link (for the comparison's ceiling) ----------
  if ((have_iperf)); then
    for ((k = 1; k <= n; k++)); do
      ip netns exec "$NS" setsid iperf3 -s -B "$NET_PREFIX.$k.2" -p "$IPERF_PORT" \
        >"$LINKS_DIR/iperf3/iperf3-$k.log" 2>&1 </dev/null &
      echo $! >"$LINKS_DIR/iperf3/iperf3-$k.pid"
    done
    for ((k = 1; k <= n; k++)); do
      wait_listen iperf3 "$LINKS_DIR/iperf3/iperf3-$k.pid" "$LINKS_DIR/iperf3/iperf3-$k.log" "$NET_PREFIX.$k.2" "$IPERF_PORT"
    done
  fi

  write_env "$n" "$have_iperf" "$lun_mib" "$want" "${rate_tc[*]}"
  trap - ERR
  say "links lab up: $n link(s) ($(IFS=,; echo "${rate_tc[*]}")), tgt pid $(cat "$LINKS_DIR/tgt/tgtd.pid"), istgt pid $(cat "$d/istgt.launch.pid")$( ((have_iperf)) && echo ", iperf3 on :$IPERF_PORT")"
  say "settings for the tests: export RSISCSI_LINKS_ENV=$LINKS_ENV_FILE"
}

# write_env N HAVE_IPERF LUN_MIB SETTINGS "RATE_TC..." : links.env from what runs now.
write_env() {
  local n=$1 k tmp="$LINKS_ENV_FILE.tmp" ifx
  local -a rtc
  read -r -a rtc <<<"$5"
  {
    echo "# rsiscsi links lab, written by bench/links.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ)."
    echo "# Format: lines \`export NAME='value'\`; values contain no quote. Link K = 1..COUNT."
    echo "# The root namespace is the initiator side; a link's IFINDEX is its initiator port."
    e() { printf "export %s='%s'\n" "$1" "$2"; }
    e RSISCSI_LINKS_DIR "$LINKS_DIR"
    e RSISCSI_LINKS_SCRIPT "$HERE/links.sh"
    e RSISCSI_LINKS_NS "$NS"
    e RSISCSI_LINKS_COUNT "$n"
    e RSISCSI_LINKS_SETTINGS "$4"
    echo "# Advisory lock (flock, exclusive) of whoever flips links, changes rates or measures: bench/links.sh locked CMD."
    e RSISCSI_LINKS_LOCK "$LINKS_DIR/lock"
    e RSISCSI_LINKS_TGT_IQN "$TGT_IQN"
    e RSISCSI_LINKS_TGT_LUN "$TGT_LUN"
    e RSISCSI_LINKS_TGT_PORT "$TGT_PORT"
    e RSISCSI_LINKS_TGT_CONTROL_PORT "$TGT_CTL"
    e RSISCSI_LINKS_ISTGT_IQN "$ISTGT_IQN"
    e RSISCSI_LINKS_ISTGT_LUN "$ISTGT_LUN"
    e RSISCSI_LINKS_ISTGT_PORT "$ISTGT_PORT"
    e RSISCSI_LINKS_LUN_BYTES $(($3 * MIB))
    e RSISCSI_LINKS_BLOCK_SIZE 512
    e RSISCSI_LINKS_IPERF3_PORT "$( (($2)) && echo "$IPERF_PORT")"
    local all_if="" all_ix="" all_ini="" all_tgt="" all_rate=""
    for ((k = 1; k <= n; k++)); do
      ifx=$(cat "/sys/class/net/$IF_I$k/ifindex")
      local bps
      bps=$(rate_bits "${rtc[k - 1]}")
      echo "# link $k: ${rtc[k - 1]}"
      e "RSISCSI_LINK_${k}_IFACE" "$IF_I$k"
      e "RSISCSI_LINK_${k}_IFINDEX" "$ifx"
      e "RSISCSI_LINK_${k}_INITIATOR_ADDR" "$NET_PREFIX.$k.1"
      e "RSISCSI_LINK_${k}_TARGET_IFACE" "$IF_T$k"
      e "RSISCSI_LINK_${k}_TARGET_ADDR" "$NET_PREFIX.$k.2"
      e "RSISCSI_LINK_${k}_RATE_BITS" "$bps"
      e "RSISCSI_LINK_${k}_RATE" "${rtc[k - 1]}"
      e "RSISCSI_LINK_${k}_TGT_PORTAL" "$NET_PREFIX.$k.2:$TGT_PORT"
      e "RSISCSI_LINK_${k}_ISTGT_PORTAL" "$NET_PREFIX.$k.2:$ISTGT_PORT"
      all_if+="${all_if:+,}$IF_I$k"
      all_ix+="${all_ix:+,}$ifx"
      all_ini+="${all_ini:+,}$NET_PREFIX.$k.1"
      all_tgt+="${all_tgt:+,}$NET_PREFIX.$k.2"
      all_rate+="${all_rate:+,}$bps"
    done
    echo "# The same, as comma-separated lists in link order."
    e RSISCSI_LINKS_IFACES "$all_if"
    e RSISCSI_LINKS_IFINDEXES "$all_ix"
    e RSISCSI_LINKS_INITIATOR_ADDRS "$all_ini"
    e RSISCSI_LINKS_TARGET_ADDRS "$all_tgt"
    e RSISCSI_LINKS_RATES_BITS "$all_rate"
  } >"$tmp"
  chmod 644 "$tmp"
  mv -f "$tmp" "$LINKS_ENV_FILE"
}

# --------------------------------------------------------------------------------------------------
link_count() {
  local n
  n=$(env_get RSISCSI_LINKS_COUNT)
  [ -n "$n" ] || die "the links lab is not up (no $LINKS_ENV_FILE): run '$0 up'"
  echo "$n"
}

link_cmd() {
  need_root
  local k=${1:-} what=${2:-} side=ini n
  shift 2 || die "usage: $0 link K down|up [--side ini|tgt|both]"
  while (($#)); do
    case "$1" in
      --side) side=${2:?--side takes ini, tgt or both}; shift 2 ;;
      *) die "link: unknown argument '$1'" ;;
    esac
  done
  n=$(link_count)
  [[ $k =~ ^[0-9]+$ ]] && ((k >= 1 && k <= n)) || die "no link '$k' (links 1 to $n)"
  case "$what" in
    down)
      case "$side" in
        ini) ip link set "$IF_I$k" down ;;
        tgt) ns ip link set "$IF_T$k" down ;;
        both) ip link set "$IF_I$k" down; ns ip link set "$IF_T$k" down ;;
        *) die "--side takes ini, tgt or both, not '$side'" ;;
      esac
      say "link $k down ($side side)"
      ;;
    up)
      # Both ends, whichever went down. The addresses and the tbf qdiscs survive a down/up.
      ip link set "$IF_I$k" up
      ns ip link set "$IF_T$k" up
      # Neighbour entries that failed while the link was down would refuse connects ("No route to
      # host") for a while after it returns; a NIC that comes back starts with none.
      ip neigh flush dev "$IF_I$k" 2>/dev/null || true
      ns ip neigh flush dev "$IF_T$k" 2>/dev/null || true
      # Return once both ends have carrier (the kernel's link watch takes up to about a second).
      local i
      for ((i = 0; i < 50; i++)); do
        [ "$(cat "/sys/class/net/$IF_I$k/carrier" 2>/dev/null)" = 1 ] &&
          [ "$(ns cat "/sys/class/net/$IF_T$k/carrier" 2>/dev/null)" = 1 ] && break
        sleep 0.1
      done
      say "link $k up"
      ;;
    *) die "usage: $0 link K down|up [--side ini|tgt|both]" ;;
  esac
}

rate_cmd() {
  need_root
  local k=${1:-} r=${2:-} n bps
  n=$(link_count)
  [[ $k =~ ^[0-9]+$ ]] && ((k >= 1 && k <= n)) || die "no link '$k' (links 1 to $n)"
  bps=$(rate_bits "$r") || die "not a rate: '$r' (use e.g. 1gbit, 200mbit)"
  # shellcheck disable=SC2046
  tc qdisc change dev "$IF_I$k" $(tbf_args "$r")
  # shellcheck disable=SC2046
  ns tc qdisc change dev "$IF_T$k" $(tbf_args "$r")
  # Keep links.env true: this link's rate, the list and the settings line.
  local tmp="$LINKS_ENV_FILE.tmp" rates
  sed -e "s/^export RSISCSI_LINK_${k}_RATE_BITS='.*'$/export RSISCSI_LINK_${k}_RATE_BITS='$bps'/" \
    -e "s/^export RSISCSI_LINK_${k}_RATE='.*'$/export RSISCSI_LINK_${k}_RATE='$r'/" \
    -e "s/^# link $k: .*/# link $k: $r/" "$LINKS_ENV_FILE" >"$tmp"
  rates=$(for ((i = 1; i <= n; i++)); do sed -n "s/^export RSISCSI_LINK_${i}_RATE_BITS='\(.*\)'$/\1/p" "$tmp"; done | paste -sd,)
  sed -i -e "s/^export RSISCSI_LINKS_RATES_BITS='.*'$/export RSISCSI_LINKS_RATES_BITS='$rates'/" \
    -e "s/^export RSISCSI_LINKS_SETTINGS='links=\([0-9]*\) rates=[^l]* lun_mib=/export RSISCSI_LINKS_SETTINGS='links=\1 rates=${rates//,/ } lun_mib=/" "$tmp"
  mv -f "$tmp" "$LINKS_ENV_FILE"
  say "link $k: $r each way"
}

status() {
  local n k st rc=0
  if ! anything_up; then
    echo "links lab: down"
    return 3
  fi
  if full_up; then echo "links lab: up ($LINKS_ENV_FILE)"; else echo "links lab: PARTIAL (run '$0 down', then up)"; rc=4; fi
  n=$(env_get RSISCSI_LINKS_COUNT)
  for k in $(root_links); do
    st=$(ip -br link show "$IF_I$k" 2>/dev/null | awk '{ print $2 }')
    printf '  link %s: %s %s/%s (index %s) -> %s  %s  %s\n' "$k" "$IF_I$k" "$NET_PREFIX.$k.1" "$st" \
      "$(cat "/sys/class/net/$IF_I$k/ifindex")" "$NET_PREFIX.$k.2/$(ns ip -br link show "$IF_T$k" 2>/dev/null | awk '{ print $2 }')" \
      "$(tc qdisc show dev "$IF_I$k" | awk '/tbf/ { for (i = 1; i <= NF; i++) if ($i == "rate") print "rate " $(i + 1) }')" \
      "$(ns ss -Htn state established "( sport = :$TGT_PORT or sport = :$ISTGT_PORT )" 2>/dev/null | grep -c "$NET_PREFIX.$k.2:" || true) iSCSI connection(s)"
  done
  printf '  tgtd: %s   istgt: %s   links in links.env: %s\n' \
    "$(pid_alive "$LINKS_DIR/tgt/tgtd.pid" tgtd && echo "pid $(cat "$LINKS_DIR/tgt/tgtd.pid")" || echo down)" \
    "$(pid_alive "$LINKS_DIR/istgt/istgt.launch.pid" istgt && echo "pid $(cat "$LINKS_DIR/istgt/istgt.launch.pid")" || echo down)" \
    "${n:-none}"
  return $rc
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  link) shift; link_cmd "$@" ;;
  rate) shift; rate_cmd "$@" ;;
  locked)
    shift
    (($#)) || die "usage: $0 locked CMD ARGS..."
    mkdir -p "$LINKS_DIR"
    touch "$LINKS_DIR/lock"
    exec flock "$LINKS_DIR/lock" "$@"
    ;;
  -h | --help | help) sed -n '2,/^set -Eeuo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) echo "usage: $0 up [--links N] [--rate R | --rates R1,...] [--lun-size SIZE] | down | status | link K down|up | rate K R | locked CMD..." >&2; exit 2 ;;
esac
