#!/bin/bash
# Start the rsiscsi lab: userspace iSCSI targets on loopback with RAM-backed (tmpfs) LUNs.
#
#   tgt    127.0.0.1:3260 and [::1]:3260   ram1 (1 GiB), chap (256 MiB), mutual (256 MiB)   disk LUN 1
#   istgt  127.0.0.1:3261 and [::1]:3261   ram1 (1 GiB), chap (256 MiB), mutual (256 MiB)   disk LUN 0
#   istgt  127.0.0.1:3262 (discovery CHAP) ram1 (64 MiB)                                    disk LUN 0
#   and, each on its own: tgt svc (256 MiB, the service's tests), tgt and istgt nbd (512 MiB, the NBD tests)
#
# Writes $LAB/lab.env (shell exports read by the integration tests). LAB defaults to /tmp/rsiscsi-lab.
# Idempotent: a lab that is already up is stopped first (lab-down.sh) and started afresh.
# Needs root; installs tgt, istgt, libiscsi-bin, iproute2 and procps with apt-get when missing.
# Exits non-zero, naming the daemon and showing the end of its log, when a target does not come up.
set -Eeuo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lab-lib.sh
. "$HERE/lab-lib.sh"
need_root
T0=$EPOCHREALTIME
# The path goes into istgt's config files and tgtadm arguments unquoted.
[[ $LAB =~ ^/[A-Za-z0-9._/+-]+$ ]] || die "LAB must be an absolute path made of letters, digits and ._/+- (got '$LAB')"

ensure_pkgs tgt istgt libiscsi-bin iproute2 procps util-linux
for tool in tgtd tgtadm istgt ss ps mountpoint; do
  command -v "$tool" >/dev/null || die "$tool not found even after installing the packages"
done

# --- start from nothing --------------------------------------------------------------------------
# lab-down.sh fails when something still listens on a lab port; the check below names that something.
"$HERE/lab-down.sh" >/dev/null 2>&1 || true

# On a Debian machine with systemd, installing tgt starts its own service on 0.0.0.0:3260.
for svc in tgt istgt; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    say "stopping the system's $svc service: it holds the lab's ports"
    systemctl stop "$svc" || die "systemctl stop $svc failed"
  fi
done
for port in "$TGT_PORT" "$ISTGT_PORT" "$DCHAP_PORT" "$ISTGT_UCTL_PORT" "$DCHAP_UCTL_PORT"; do
  if [ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]; then
    die "TCP port $port is already in use ($(port_users "$port")); the lab needs ports $TGT_PORT, $ISTGT_PORT, $DCHAP_PORT, $ISTGT_UCTL_PORT and $DCHAP_UCTL_PORT"
  fi
done
if tgtadm -C "$TGT_CONTROL_PORT" --mode sys --op show >/dev/null 2>&1; then
  die "a tgtd already answers on control port $TGT_CONTROL_PORT and lab-down.sh could not stop it"
fi

# From here on, any failure stops whatever was started.
FAILED_DAEMON=""
on_error() {
  local rc=$?
  trap - ERR
  say "ERROR: lab start failed (exit $rc${FAILED_DAEMON:+, $FAILED_DAEMON}); stopping what was started"
  "$HERE/lab-down.sh" >/dev/null 2>&1 || true
  exit "$rc"
}
trap on_error ERR

# daemon_fail NAME LOG MESSAGE: report a daemon that did not come up, with the tail of its log.
daemon_fail() {
  FAILED_DAEMON=$1
  printf '%s: ERROR: %s: %s\n' "${0##*/}" "$1" "$3" >&2
  log_tail "$2"
  return 1
}

# wait_listen NAME PID LOG ADDR PORT: wait up to 10 s for ADDR:PORT; fail early if the daemon dies.
wait_listen() {
  local i
  for ((i = 0; i < 100; i++)); do
    listening "$4" "$5" && return 0
    is_gone "$2" && { daemon_fail "$1" "$3" "exited (pid $2) before listening on $4 port $5"; return 1; }
    sleep 0.1
  done
  daemon_fail "$1" "$3" "not listening on $4 port $5 after 10 s (pid $2 still running)"
}

# --- RAM disk ------------------------------------------------------------------------------------
mkdir -p "$LAB/ram" "$LAB/tgt" "$LAB/istgt" "$LAB/dchap"
ram_mib=$((2 * (RAM1_MIB + CHAP_MIB + MUTUAL_MIB + NBD_MIB) + DCHAP_MIB + 3 * SMALL_MIB + SVC_MIB + 64))
mount -t tmpfs -o "size=${ram_mib}m,mode=0700" rsiscsi-lab "$LAB/ram"
# Pre-fill every LUN file: the first touch of fresh tmpfs pages is slow (down to 200 MB/s on a new VM),
# and that cost must not land in a test or a benchmark.
for spec in tgt-ram1:$RAM1_MIB tgt-chap:$CHAP_MIB tgt-mutual:$MUTUAL_MIB \
  istgt-ram1:$RAM1_MIB istgt-chap:$CHAP_MIB istgt-mutual:$MUTUAL_MIB dchap-ram1:$DCHAP_MIB \
  tgt-unsol:$SMALL_MIB tgt-noimm:$SMALL_MIB istgt-moved:$SMALL_MIB tgt-svc:$SVC_MIB \
  tgt-nbd:$NBD_MIB istgt-nbd:$NBD_MIB; do
  dd if=/dev/zero of="$LAB/ram/${spec%%:*}.img" bs=1M count="${spec##*:}" status=none
done

# --- tgt -----------------------------------------------------------------------------------------
TGT_LOG="$LAB/tgt/tgtd.log"
: >"$LAB/tgt/tgtadm.log"
# -f: foreground, log on stderr (it writes no PID file then, so keep $!). portal= keeps it off 0.0.0.0.
env "${MALLOC_ENV[@]}" setsid tgtd -f -C "$TGT_CONTROL_PORT" --iscsi "portal=$HOST4:$TGT_PORT" \
  >"$TGT_LOG" 2>&1 </dev/null &
TGT_PID=$!
echo "$TGT_PID" >"$LAB/tgt/tgtd.pid"
wait_listen tgtd "$TGT_PID" "$TGT_LOG" "$HOST4" "$TGT_PORT"

# tgta ARGS...: tgtadm on our private control socket; a failure names the step (never a password).
tgta() {
  if ! tgtadm -C "$TGT_CONTROL_PORT" --lld iscsi "$@" >>"$LAB/tgt/tgtadm.log" 2>&1; then
    local shown="$*"
    shown=${shown%%--password*}
    daemon_fail tgtd "$LAB/tgt/tgtadm.log" "tgtadm $shown failed"
    return 1
  fi
}
tid=0
for name in ram1 chap mutual; do
  tid=$((tid + 1))
  tgta --mode target --op new --tid "$tid" --targetname "$TGT_BASE:$name"
  tgta --mode logicalunit --op new --tid "$tid" --lun "$TGT_LUN" \
    --backing-store "$LAB/ram/tgt-$name.img" --bstype rdwr
  tgta --mode target --op bind --tid "$tid" --initiator-address ALL
  # RFC 7143 §13.1, §13.2: offer CRC32C, accept None; tgt's default is None only.
  tgta --mode target --op update --tid "$tid" --name HeaderDigest --value CRC32C,None
  tgta --mode target --op update --tid "$tid" --name DataDigest --value CRC32C,None
  tgta --mode target --op update --tid "$tid" --name MaxConnections --value 8
  tgta --mode target --op update --tid "$tid" --name MaxRecvDataSegmentLength --value 262144
done
tgta --mode account --op new --user "$CHAP_USER" --password "$CHAP_SECRET"
tgta --mode account --op bind --tid 2 --user "$CHAP_USER"
tgta --mode account --op new --user "$MUTUAL_USER" --password "$MUTUAL_SECRET"
tgta --mode account --op new --user "$MUTUAL_TARGET_USER" --password "$MUTUAL_TARGET_SECRET"
tgta --mode account --op bind --tid 3 --user "$MUTUAL_USER"
tgta --mode account --op bind --tid 3 --user "$MUTUAL_TARGET_USER" --outgoing
# Write-path variants (RFC 7143 §13.10-13.14): "unsol" makes the initiator send unsolicited Data-Out
# (InitialR2T=No) in PDUs no larger than a small MaxRecvDataSegmentLength; "noimm" forbids immediate
# data and keeps bursts short, so every write is driven by many R2Ts.
for name in unsol noimm; do
  tid=$((tid + 1))
  tgta --mode target --op new --tid "$tid" --targetname "$TGT_BASE:$name"
  tgta --mode logicalunit --op new --tid "$tid" --lun "$TGT_LUN" \
    --backing-store "$LAB/ram/tgt-$name.img" --bstype rdwr
  tgta --mode target --op bind --tid "$tid" --initiator-address ALL
  tgta --mode target --op update --tid "$tid" --name HeaderDigest --value CRC32C,None
  tgta --mode target --op update --tid "$tid" --name DataDigest --value CRC32C,None
done
tgta --mode target --op update --tid 4 --name InitialR2T --value No
tgta --mode target --op update --tid 4 --name ImmediateData --value Yes
tgta --mode target --op update --tid 4 --name FirstBurstLength --value 65536
tgta --mode target --op update --tid 4 --name MaxBurstLength --value 262144
tgta --mode target --op update --tid 4 --name MaxRecvDataSegmentLength --value 16384
# tgt pings initiators of "unsol" every second with NOP-In (a real TTT) and drops one that leaves three
# unanswered (RFC 7143 §11.19): the tests hold idle sessions there to prove we answer.
tgta --mode target --op update --tid 4 --name nop_interval --value 1
tgta --mode target --op update --tid 4 --name nop_count --value 3
tgta --mode target --op update --tid 5 --name ImmediateData --value No
tgta --mode target --op update --tid 5 --name InitialR2T --value Yes
tgta --mode target --op update --tid 5 --name MaxBurstLength --value 65536
tgta --mode target --op update --tid 5 --name MaxRecvDataSegmentLength --value 32768
# Login redirection (RFC 7143 §11.13.5, status class 1): "moved" sends initiators to istgt, which
# serves a target of the same name; "loop" redirects to itself forever. tgt redirects only initiators
# whose own address differs from the redirect address, so both point at 127.0.0.2 (a second loopback
# address both daemons also listen on) while initiators connect from 127.0.0.1.
tgta --mode target --op new --tid 6 --targetname "$TGT_BASE:moved"
tgta --mode target --op bind --tid 6 --initiator-address ALL
tgta --mode target --op update --tid 6 --name RedirectAddress --value "$REDIRECT_HOST"
tgta --mode target --op update --tid 6 --name RedirectPort --value "$ISTGT_PORT"
tgta --mode target --op update --tid 6 --name RedirectReason --value Temporary
tgta --mode target --op new --tid 7 --targetname "$TGT_BASE:loop"
tgta --mode target --op bind --tid 7 --initiator-address ALL
tgta --mode target --op update --tid 7 --name RedirectAddress --value "$REDIRECT_HOST"
tgta --mode target --op update --tid 7 --name RedirectPort --value "$TGT_PORT"
tgta --mode target --op update --tid 7 --name RedirectReason --value Permanent
# "svc" belongs to the service's integration tests (crates/rsiscsid), so that they never write where
# the initiator's and the CLI's tests do.
tgta --mode target --op new --tid 8 --targetname "$TGT_BASE:svc"
tgta --mode logicalunit --op new --tid 8 --lun "$TGT_LUN" --backing-store "$LAB/ram/tgt-svc.img" --bstype rdwr
tgta --mode target --op bind --tid 8 --initiator-address ALL
tgta --mode target --op update --tid 8 --name MaxConnections --value 8
tgta --mode target --op update --tid 8 --name MaxRecvDataSegmentLength --value 262144
# "nbd" belongs to the NBD export's tests (crates/rsiscsi/tests/nbd.rs), which copy whole LUNs.
# Thin provisioned: tgt answers UNMAP (NBD trim) by punching holes in the tmpfs file.
tgta --mode target --op new --tid 9 --targetname "$TGT_BASE:nbd"
tgta --mode logicalunit --op new --tid 9 --lun "$TGT_LUN" --backing-store "$LAB/ram/tgt-nbd.img" --bstype rdwr
tgta --mode logicalunit --op update --tid 9 --lun "$TGT_LUN" --params thin_provisioning=1
tgta --mode target --op bind --tid 9 --initiator-address ALL
tgta --mode target --op update --tid 9 --name MaxConnections --value 8
tgta --mode target --op update --tid 9 --name MaxRecvDataSegmentLength --value 262144
tgta --mode portal --op new --param "portal=[$HOST6]:$TGT_PORT"
tgta --mode portal --op new --param "portal=$REDIRECT_HOST:$TGT_PORT"
wait_listen tgtd "$TGT_PID" "$TGT_LOG" "$HOST6" "$TGT_PORT"

# --- istgt ---------------------------------------------------------------------------------------
# write_istgt_global DIR NODEBASE UCTL_PORT DISCOVERY_METHOD DISCOVERY_GROUP
write_istgt_global() {
  cat <<CONF
# Generated by rsiscsi scripts/lab-up.sh; rewritten on every start.
[Global]
  NodeBase "$2"
  PidFile $1/istgt.pid
  AuthFile $1/auth.conf
  MediaDirectory $LAB/ram
  LogFacility "local7"
  Timeout 30
  NopInInterval 20
  DiscoveryAuthMethod $4
  DiscoveryAuthGroup $5
  MaxSessions 16
  MaxConnections 8
  MaxR2T 32
  MaxOutstandingR2T 16
  DefaultTime2Wait 2
  DefaultTime2Retain 60
  FirstBurstLength 262144
  MaxBurstLength 1048576
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
  Portal UC1 $HOST4:$3
  Netmask $HOST4

[InitiatorGroup1]
  InitiatorName "ALL"
  Netmask 127.0.0.0/8
  Netmask [$HOST6]
CONF
}

# write_istgt_lu NUM NAME AUTH GROUP IMAGE MIB
write_istgt_lu() {
  cat <<CONF

[LogicalUnit$1]
  TargetName $2
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod $3
  AuthGroup $4
  UseDigest Auto
  UnitType Disk
  QueueDepth 32
  LUN$ISTGT_LUN Storage $LAB/ram/$5 $6MB
CONF
}

# start_istgt NAME PORT: start the instance configured in $LAB/NAME and wait for its portals.
start_istgt() {
  local name=$1 port=$2 dir="$LAB/$1" pid
  chmod 600 "$dir/auth.conf"
  # -D: stay in the foreground, log on stderr (there is no /dev/log for its syslog copy).
  env "${MALLOC_ENV[@]}" setsid istgt -c "$dir/istgt.conf" -p "$dir/istgt.pid" -D \
    >"$dir/istgt.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/istgt.launch.pid"
  wait_listen "istgt ($name)" "$pid" "$dir/istgt.log" "$HOST4" "$port"
}

{
  write_istgt_global "$LAB/istgt" "$ISTGT_BASE" "$ISTGT_UCTL_PORT" None None
  printf '\n[PortalGroup1]\n  Portal DA1 %s:%s\n  Portal DA2 [%s]:%s\n  Portal DA3 %s:%s\n' \
    "$HOST4" "$ISTGT_PORT" "$HOST6" "$ISTGT_PORT" "$REDIRECT_HOST" "$ISTGT_PORT"
  write_istgt_lu 1 ram1 None None istgt-ram1.img "$RAM1_MIB"
  write_istgt_lu 2 chap CHAP AuthGroup1 istgt-chap.img "$CHAP_MIB"
  write_istgt_lu 3 mutual "CHAP Mutual" AuthGroup2 istgt-mutual.img "$MUTUAL_MIB"
  # The destination of tgt's "moved" redirect: a full IQN is used as is, without NodeBase.
  write_istgt_lu 4 "$TGT_BASE:moved" None None istgt-moved.img "$SMALL_MIB"
  write_istgt_lu 5 nbd None None istgt-nbd.img "$NBD_MIB"
} >"$LAB/istgt/istgt.conf"
cat >"$LAB/istgt/auth.conf" <<CONF
[AuthGroup1]
  Auth "$CHAP_USER" "$CHAP_SECRET"
[AuthGroup2]
  Auth "$MUTUAL_USER" "$MUTUAL_SECRET" "$MUTUAL_TARGET_USER" "$MUTUAL_TARGET_SECRET"
[AuthGroup10000]
  Auth "$UCTL_USER" "$UCTL_SECRET" "$UCTL_TARGET_USER" "$UCTL_TARGET_SECRET"
CONF
start_istgt istgt "$ISTGT_PORT"
wait_listen "istgt (istgt)" "$(cat "$LAB/istgt/istgt.launch.pid")" "$LAB/istgt/istgt.log" "$HOST6" "$ISTGT_PORT"

# Second instance: discovery sessions need CHAP (RFC 7143 §12.1 SessionType=Discovery; istgt's
# [Global] DiscoveryAuthMethod / DiscoveryAuthGroup). Its one target needs no authentication.
{
  write_istgt_global "$LAB/dchap" "$DCHAP_BASE" "$DCHAP_UCTL_PORT" CHAP AuthGroup3
  printf '\n[PortalGroup1]\n  Portal DA1 %s:%s\n' "$HOST4" "$DCHAP_PORT"
  write_istgt_lu 1 ram1 None None dchap-ram1.img "$DCHAP_MIB"
} >"$LAB/dchap/istgt.conf"
cat >"$LAB/dchap/auth.conf" <<CONF
[AuthGroup3]
  Auth "$DISC_USER" "$DISC_SECRET"
[AuthGroup10000]
  Auth "$UCTL_USER" "$UCTL_SECRET" "$UCTL_TARGET_USER" "$UCTL_TARGET_SECRET"
CONF
start_istgt dchap "$DCHAP_PORT"

# --- lab.env -------------------------------------------------------------------------------------
# Format: comment lines and lines `export NAME='value'`; values never contain a quote or a newline.
tmp_env="$LAB_ENV_FILE.tmp"
{
  echo "# rsiscsi lab settings, written by scripts/lab-up.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ)."
  echo "# Format: lines \`export NAME='value'\`; values contain no quote. Credentials are lab-only."
  e() { printf "export %s='%s'\n" "$1" "$2"; }
  e RSISCSI_LAB_DIR "$LAB"
  e RSISCSI_LAB_HOST4 "$HOST4"
  e RSISCSI_LAB_HOST6 "$HOST6"
  e RSISCSI_LAB_BLOCK_SIZE 512
  echo "# tgt (stgt): disk at LUN 1 (LUN 0 is its controller LU); CRC32C digests offered; MaxConnections 8."
  e RSISCSI_TGT_HOST "$HOST4"
  e RSISCSI_TGT_PORT "$TGT_PORT"
  e RSISCSI_TGT_PORTAL "$HOST4:$TGT_PORT"
  e RSISCSI_TGT_PORTAL6 "[$HOST6]:$TGT_PORT"
  e RSISCSI_TGT_LUN "$TGT_LUN"
  e RSISCSI_TGT_CONTROL_PORT "$TGT_CONTROL_PORT"
  e RSISCSI_TGT_IQN_RAM1 "$TGT_BASE:ram1"
  e RSISCSI_TGT_IQN_CHAP "$TGT_BASE:chap"
  e RSISCSI_TGT_IQN_MUTUAL "$TGT_BASE:mutual"
  echo "# tgt write-path variants: unsol (InitialR2T=No, FirstBurstLength 64 KiB, MRDSL 16 KiB, NOP-In every 1 s), noimm (ImmediateData=No, MaxBurstLength 64 KiB)."
  e RSISCSI_TGT_IQN_UNSOL "$TGT_BASE:unsol"
  e RSISCSI_TGT_IQN_NOIMM "$TGT_BASE:noimm"
  echo "# tgt redirects: moved -> istgt (same name, LUN 0), loop -> itself."
  e RSISCSI_TGT_IQN_MOVED "$TGT_BASE:moved"
  e RSISCSI_TGT_IQN_LOOP "$TGT_BASE:loop"
  echo "# tgt target of the service tests (MaxConnections 8)."
  e RSISCSI_TGT_IQN_SVC "$TGT_BASE:svc"
  e RSISCSI_SVC_BYTES $((SVC_MIB * MIB))
  e RSISCSI_REDIRECT_HOST "$REDIRECT_HOST"
  echo "# targets of the NBD export's tests: tgt nbd (LUN 1, thin provisioned: UNMAP) and istgt nbd (LUN 0)."
  e RSISCSI_TGT_IQN_NBD "$TGT_BASE:nbd"
  e RSISCSI_ISTGT_IQN_NBD "$ISTGT_BASE:nbd"
  e RSISCSI_NBD_BYTES $((NBD_MIB * MIB))
  echo "# istgt: disk at LUN 0; MaxConnections 8 (enforced); ErrorRecoveryLevel 0; UseDigest Auto."
  e RSISCSI_ISTGT_HOST "$HOST4"
  e RSISCSI_ISTGT_PORT "$ISTGT_PORT"
  e RSISCSI_ISTGT_PORTAL "$HOST4:$ISTGT_PORT"
  e RSISCSI_ISTGT_PORTAL6 "[$HOST6]:$ISTGT_PORT"
  e RSISCSI_ISTGT_LUN "$ISTGT_LUN"
  e RSISCSI_ISTGT_IQN_RAM1 "$ISTGT_BASE:ram1"
  e RSISCSI_ISTGT_IQN_CHAP "$ISTGT_BASE:chap"
  e RSISCSI_ISTGT_IQN_MUTUAL "$ISTGT_BASE:mutual"
  echo "# istgt with discovery CHAP (SendTargets needs discuser/discsecret12); its target needs no auth."
  e RSISCSI_DCHAP_HOST "$HOST4"
  e RSISCSI_DCHAP_PORT "$DCHAP_PORT"
  e RSISCSI_DCHAP_PORTAL "$HOST4:$DCHAP_PORT"
  e RSISCSI_DCHAP_LUN "$ISTGT_LUN"
  e RSISCSI_DCHAP_IQN_RAM1 "$DCHAP_BASE:ram1"
  echo "# LUN sizes in bytes (the same on tgt and istgt)."
  e RSISCSI_RAM1_BYTES $((RAM1_MIB * MIB))
  e RSISCSI_CHAP_BYTES $((CHAP_MIB * MIB))
  e RSISCSI_MUTUAL_BYTES $((MUTUAL_MIB * MIB))
  e RSISCSI_DCHAP_BYTES $((DCHAP_MIB * MIB))
  echo "# Credentials: one-way CHAP (chap targets), mutual CHAP (mutual targets), discovery CHAP (port $DCHAP_PORT)."
  e RSISCSI_CHAP_USER "$CHAP_USER"
  e RSISCSI_CHAP_SECRET "$CHAP_SECRET"
  e RSISCSI_MUTUAL_USER "$MUTUAL_USER"
  e RSISCSI_MUTUAL_SECRET "$MUTUAL_SECRET"
  e RSISCSI_MUTUAL_TARGET_USER "$MUTUAL_TARGET_USER"
  e RSISCSI_MUTUAL_TARGET_SECRET "$MUTUAL_TARGET_SECRET"
  e RSISCSI_DISCOVERY_USER "$DISC_USER"
  e RSISCSI_DISCOVERY_SECRET "$DISC_SECRET"
} >"$tmp_env"
chmod 600 "$tmp_env"
mv -f "$tmp_env" "$LAB_ENV_FILE"

trap - ERR
printf '%s: lab up in %.1f s: tgt pid %s (%s:%s, [%s]:%s), istgt pid %s (%s:%s, [%s]:%s), istgt-dchap pid %s (%s:%s)\n' \
  "${0##*/}" "$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')" \
  "$TGT_PID" "$HOST4" "$TGT_PORT" "$HOST6" "$TGT_PORT" \
  "$(cat "$LAB/istgt/istgt.launch.pid")" "$HOST4" "$ISTGT_PORT" "$HOST6" "$ISTGT_PORT" \
  "$(cat "$LAB/dchap/istgt.launch.pid")" "$HOST4" "$DCHAP_PORT" >&2
say "settings for the tests: export RSISCSI_LAB_ENV=$LAB_ENV_FILE"
