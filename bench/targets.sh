#!/bin/bash
# Start or stop the benchmark targets, apart from the test lab (which uses ports 3260-3262/3269/3270):
#   tgt    127.0.0.1:3300 (management socket -C 3300)
#            iqn.2024-01.bench.tgt:ram   LUN 1: 1 GiB file on a tmpfs, pre-filled
#            iqn.2024-01.bench.tgt:null  LUN 1: --bstype null (no data kept; takes the target's
#                                        storage cost out of the figures)
#   istgt  127.0.0.1:3301 (UnitControl 127.0.0.1:3309)
#            iqn.2024-01.bench.istgt:ram LUN 0: 1 GiB file on the same tmpfs, pre-filled
# Usage: targets.sh up|down|urls     (root; state lives under ${BENCH_DIR:-/tmp/rsiscsi-bench})
# Daemons are started with a glibc malloc environment (without it tgtd mmaps and unmaps every 1 MiB
# buffer and runs at half speed) and stopped by the PIDs recorded here, never by process name.
set -uo pipefail
BENCH_DIR=${BENCH_DIR:-/tmp/rsiscsi-bench}
HOST=127.0.0.1
TGT_PORT=3300
TGT_CTL=3300
ISTGT_PORT=3301
ISTGT_UCTL_PORT=3309
LUN_MIB=1024
MALLOC_ENV=(MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456)
R="$BENCH_DIR/ram"

say() { printf 'targets.sh: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
# gone PID: the process has exited (PID 1 here does not reap, so a zombie counts as gone).
gone() { ! kill -0 "$1" 2>/dev/null || [ "$(ps -o stat= -p "$1" | cut -c1)" = Z ]; }
pid_is() { [ -n "$1" ] && ! gone "$1" && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }
wait_gone() { local i; for ((i = 0; i < $2 * 10; i++)); do gone "$1" && return 0; sleep 0.1; done; gone "$1"; }
listening() { ss -ltnH "sport = :$2" 2>/dev/null | grep -q "$1:$2"; }
wait_listen() { # NAME PID LOG PORT
  local i
  for ((i = 0; i < 100; i++)); do
    listening "$HOST" "$4" && return 0
    gone "$2" && { tail -5 "$3" >&2; die "$1 exited at start (log: $3)"; }
    sleep 0.1
  done
  die "$1 is not listening on $HOST:$4 after 10 s (log: $3)"
}

urls() {
  echo "tgt-ram  iscsi://$HOST:$TGT_PORT/iqn.2024-01.bench.tgt:ram/1"
  echo "tgt-null iscsi://$HOST:$TGT_PORT/iqn.2024-01.bench.tgt:null/1"
  echo "istgt    iscsi://$HOST:$ISTGT_PORT/iqn.2024-01.bench.istgt:ram/0"
}

up() {
  [ "$(id -u)" = 0 ] || die "must run as root (mounts a tmpfs, starts targets)"
  for t in tgtd tgtadm istgt ss; do command -v "$t" >/dev/null || die "$t missing: run bench/peer-tools.sh"; done
  mkdir -p "$R" "$BENCH_DIR/tgt" "$BENCH_DIR/istgt"
  mountpoint -q "$R" || mount -t tmpfs -o size=2200m tmpfs "$R" || die "cannot mount a tmpfs on $R"
  # Pre-filled: the first touch of fresh guest memory is slow and would distort the first runs.
  for f in tgt-ram istgt-ram; do
    [ "$(stat -c %s "$R/$f.img" 2>/dev/null)" = $((LUN_MIB << 20)) ] ||
      dd if=/dev/zero of="$R/$f.img" bs=1M count="$LUN_MIB" status=none || die "cannot fill $R/$f.img"
  done

  # ---------- tgt ----------
  if pid_is "$(cat "$BENCH_DIR/tgt/tgtd.pid" 2>/dev/null)" tgtd; then
    say "tgtd already running (pid $(cat "$BENCH_DIR/tgt/tgtd.pid"))"
  else
    listening "$HOST" "$TGT_PORT" && die "port $TGT_PORT is taken by another process"
    env "${MALLOC_ENV[@]}" setsid tgtd -f -C "$TGT_CTL" --iscsi portal="$HOST:$TGT_PORT" \
      >"$BENCH_DIR/tgt/tgtd.log" 2>&1 </dev/null &
    echo $! >"$BENCH_DIR/tgt/tgtd.pid"
    wait_listen tgtd $! "$BENCH_DIR/tgt/tgtd.log" "$TGT_PORT"
    local A="tgtadm -C $TGT_CTL --lld iscsi"
    $A --mode target --op new --tid 1 --targetname iqn.2024-01.bench.tgt:ram || die "tgtadm target 1"
    $A --mode logicalunit --op new --tid 1 --lun 1 --backing-store "$R/tgt-ram.img" --bstype rdwr || die "tgtadm lun 1"
    $A --mode target --op new --tid 2 --targetname iqn.2024-01.bench.tgt:null || die "tgtadm target 2"
    # bs_null ignores the path (it must only be non-empty) and reports a fixed size of 1 TiB.
    $A --mode logicalunit --op new --tid 2 --lun 1 --backing-store null-1g --bstype null || die "tgtadm lun 2"
    for t in 1 2; do
      $A --mode target --op bind --tid $t --initiator-address ALL
      $A --mode target --op update --tid $t --name MaxRecvDataSegmentLength --value 262144
      $A --mode target --op update --tid $t --name MaxXmitDataSegmentLength --value 262144 2>/dev/null
      $A --mode target --op update --tid $t --name MaxBurstLength --value 16776192
      $A --mode target --op update --tid $t --name FirstBurstLength --value 1048576
      $A --mode target --op update --tid $t --name MaxConnections --value 8
    done
  fi

  # ---------- istgt ----------
  local d="$BENCH_DIR/istgt"
  if pid_is "$(cat "$d/istgt.launch.pid" 2>/dev/null)" istgt; then
    say "istgt already running (pid $(cat "$d/istgt.launch.pid"))"
  else
    listening "$HOST" "$ISTGT_PORT" && die "port $ISTGT_PORT is taken by another process"
    cat >"$d/istgt.conf" <<CONF
[Global]
  NodeBase "iqn.2024-01.bench.istgt"
  PidFile $d/istgt.pid
  AuthFile $d/auth.conf
  MediaDirectory $R
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
  ErrorRecoveryLevel 0
[UnitControl]
  AuthMethod CHAP Mutual
  AuthGroup AuthGroup10000
  Portal UC1 $HOST:$ISTGT_UCTL_PORT
  Netmask $HOST
[PortalGroup1]
  Portal DA1 $HOST:$ISTGT_PORT
[InitiatorGroup1]
  InitiatorName "ALL"
  Netmask 127.0.0.0/8
[LogicalUnit1]
  TargetName ram
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  UseDigest Auto
  UnitType Disk
  QueueDepth 64
  LUN0 Storage $R/istgt-ram.img ${LUN_MIB}MB
CONF
    # UnitControl is unused; its group only has to exist. A fresh random secret each start.
    local s1 s2
    s1=$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')
    s2=$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')
    (umask 077 && printf '[AuthGroup10000]\n  Auth "benchctl" "%s" "benchctlm" "%s"\n' "$s1" "$s2" >"$d/auth.conf")
    env "${MALLOC_ENV[@]}" setsid istgt -c "$d/istgt.conf" -p "$d/istgt.pid" -D \
      >"$d/istgt.log" 2>&1 </dev/null &
    echo $! >"$d/istgt.launch.pid"
    wait_listen istgt $! "$d/istgt.log" "$ISTGT_PORT"
  fi
  say "up: tgt pid $(cat "$BENCH_DIR/tgt/tgtd.pid"), istgt pid $(cat "$d/istgt.launch.pid")"
  urls
}

down() {
  local rc=0 pid tid A="tgtadm -C $TGT_CTL --lld iscsi"
  pid=$(cat "$BENCH_DIR/tgt/tgtd.pid" 2>/dev/null)
  if pid_is "$pid" tgtd; then
    # tgtd's SIGTERM handler does nothing: shut it down through its own management socket.
    tgtadm -C "$TGT_CTL" --op update --mode sys --name State -v offline >/dev/null 2>&1
    for tid in $($A --mode target --op show 2>/dev/null | sed -n 's/^Target \([0-9]*\):.*/\1/p'); do
      $A --mode target --op delete --force --tid "$tid" >/dev/null 2>&1
    done
    tgtadm -C "$TGT_CTL" --op delete --mode system >/dev/null 2>&1
    wait_gone "$pid" 5 || { say "tgtd (pid $pid) still up; SIGKILL"; kill -KILL "$pid"; wait_gone "$pid" 5 || rc=1; }
  fi
  rm -f "$BENCH_DIR/tgt/tgtd.pid"
  pid=$(cat "$BENCH_DIR/istgt/istgt.launch.pid" 2>/dev/null)
  if pid_is "$pid" istgt; then
    kill -TERM "$pid" 2>/dev/null   # istgt exits on SIGTERM in about 1.5 s
    wait_gone "$pid" 10 || { say "istgt (pid $pid) still up; SIGKILL"; kill -KILL "$pid"; wait_gone "$pid" 5 || rc=1; }
  fi
  rm -f "$BENCH_DIR/istgt/istgt.launch.pid"
  if mountpoint -q "$R"; then umount "$R" || rc=1; fi
  return $rc
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  urls) urls ;;
  *) echo "usage: $0 up|down|urls" >&2; exit 2 ;;
esac
