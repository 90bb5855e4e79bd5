#!/bin/bash
# Check the lab with peer tools only (libiscsi's utilities and scripts/iscsi-discovery-probe.py), so
# a failure here is the lab's fault, never rsiscsi's. Run after lab-up.sh; LAB as for lab-up.sh.
# Every tool runs under `timeout`: iscsi-ls hangs and spins against istgt (see targets-lab notes, P1),
# so istgt discovery is checked with the probe instead. Exit status 0 when every check passed.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lab-lib.sh
. "$HERE/lab-lib.sh"

[ -f "$LAB_ENV_FILE" ] || die "no $LAB_ENV_FILE: start the lab first (scripts/lab-up.sh)"
if ! command -v iscsi-inq >/dev/null || ! command -v python3 >/dev/null; then
  need_root
  command -v iscsi-inq >/dev/null || ensure_pkgs libiscsi-bin
  command -v python3 >/dev/null || ensure_pkgs python3
fi

OUT="$LAB/smoke.out"
PROBE="$HERE/iscsi-discovery-probe.py"
pass=0 fail=0

# chk LABEL WANT CMD...: WANT is ok (exit 0), fail (a non-zero exit other than timeout's 124/137)
# or a number (that exact exit status; the probe exits 2 when the target rejects the login).
# The label, not the command, is printed: the URLs carry the CHAP secrets.
chk() {
  local label=$1 want=$2 rc
  shift 2
  timeout -k 5 20 "$@" >"$OUT" 2>&1
  rc=$?
  if { [ "$want" = ok ] && [ "$rc" = 0 ]; } || [ "$want" = "$rc" ] ||
    { [ "$want" = fail ] && [ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$rc" != 137 ]; }; then
    printf 'ok    %s\n' "$label"
    pass=$((pass + 1))
  else
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      printf 'FAIL  %s (timed out after 20 s; wanted %s)\n' "$label" "$want"
    else
      printf 'FAIL  %s (exit %s; wanted %s)\n' "$label" "$rc" "$want"
    fi
    tail -n 4 "$OUT" | sed 's/^/      | /'
    fail=$((fail + 1))
  fi
}

# chk_size LABEL BYTES URL: READ CAPACITY(16) reports exactly BYTES.
chk_size() {
  local label=$1 bytes=$2 url=$3 got
  if timeout -k 5 20 iscsi-readcapacity16 "$url" >"$OUT" 2>&1 &&
    got=$(sed -n 's/^Total size:\([0-9]*\)$/\1/p' "$OUT") && [ "$got" = "$bytes" ]; then
    printf 'ok    %s\n' "$label"
    pass=$((pass + 1))
  else
    printf 'FAIL  %s (wanted %s bytes, got %s)\n' "$label" "$bytes" "${got:-nothing}"
    tail -n 4 "$OUT" | sed 's/^/      | /'
    fail=$((fail + 1))
  fi
}

T="$HOST4:$TGT_PORT"
I="$HOST4:$ISTGT_PORT"
D="$HOST4:$DCHAP_PORT"
C1="$CHAP_USER%$CHAP_SECRET@"
M1="$MUTUAL_USER%$MUTUAL_SECRET@"
MT="target_user=$MUTUAL_TARGET_USER&target_password=$MUTUAL_TARGET_SECRET"
MTBAD="target_user=$MUTUAL_TARGET_USER&target_password=wrongtarget99"

echo "== tgt ($T, [$HOST6]:$TGT_PORT, disk LUN $TGT_LUN)"
chk "tgt discovery (iscsi-ls)" ok iscsi-ls "iscsi://$T/"
chk "tgt discovery (probe) lists 3 targets" ok "$PROBE" "$T" \
  --expect "$TGT_BASE:ram1" --expect "$TGT_BASE:chap" --expect "$TGT_BASE:mutual"
chk "tgt ram1 INQUIRY" ok iscsi-inq "iscsi://$T/$TGT_BASE:ram1/$TGT_LUN"
chk_size "tgt ram1 capacity" $((RAM1_MIB * MIB)) "iscsi://$T/$TGT_BASE:ram1/$TGT_LUN"
chk_size "tgt ram1 capacity over IPv6" $((RAM1_MIB * MIB)) "iscsi://[$HOST6]:$TGT_PORT/$TGT_BASE:ram1/$TGT_LUN"
chk_size "tgt chap, good secret" $((CHAP_MIB * MIB)) "iscsi://$C1$T/$TGT_BASE:chap/$TGT_LUN"
chk "tgt chap, wrong secret refused" fail iscsi-readcapacity16 "iscsi://$CHAP_USER%wrongsecret1@$T/$TGT_BASE:chap/$TGT_LUN"
chk "tgt chap, no credentials refused" fail iscsi-readcapacity16 "iscsi://$T/$TGT_BASE:chap/$TGT_LUN"
chk_size "tgt mutual, good secrets" $((MUTUAL_MIB * MIB)) "iscsi://$M1$T/$TGT_BASE:mutual/$TGT_LUN?$MT"
chk "tgt mutual, wrong initiator secret refused" fail iscsi-readcapacity16 "iscsi://$MUTUAL_USER%wrongsecret1@$T/$TGT_BASE:mutual/$TGT_LUN?$MT"
chk "tgt mutual, wrong target secret detected" fail iscsi-readcapacity16 "iscsi://$M1$T/$TGT_BASE:mutual/$TGT_LUN?$MTBAD"

echo "== istgt ($I, [$HOST6]:$ISTGT_PORT, disk LUN $ISTGT_LUN)"
chk "istgt discovery (probe) lists 3 targets" ok "$PROBE" "$I" \
  --expect "$ISTGT_BASE:ram1" --expect "$ISTGT_BASE:chap" --expect "$ISTGT_BASE:mutual"
chk "istgt discovery over IPv6 (probe)" ok "$PROBE" "[$HOST6]:$ISTGT_PORT" --expect "$ISTGT_BASE:ram1"
chk "istgt ram1 INQUIRY" ok iscsi-inq "iscsi://$I/$ISTGT_BASE:ram1/$ISTGT_LUN"
chk_size "istgt ram1 capacity" $((RAM1_MIB * MIB)) "iscsi://$I/$ISTGT_BASE:ram1/$ISTGT_LUN"
chk_size "istgt ram1 capacity over IPv6" $((RAM1_MIB * MIB)) "iscsi://[$HOST6]:$ISTGT_PORT/$ISTGT_BASE:ram1/$ISTGT_LUN"
chk_size "istgt chap, good secret" $((CHAP_MIB * MIB)) "iscsi://$C1$I/$ISTGT_BASE:chap/$ISTGT_LUN"
chk "istgt chap, wrong secret refused" fail iscsi-readcapacity16 "iscsi://$CHAP_USER%wrongsecret1@$I/$ISTGT_BASE:chap/$ISTGT_LUN"
chk_size "istgt mutual, good secrets" $((MUTUAL_MIB * MIB)) "iscsi://$M1$I/$ISTGT_BASE:mutual/$ISTGT_LUN?$MT"
chk "istgt mutual, initiator that skips target auth refused" fail iscsi-readcapacity16 "iscsi://$M1$I/$ISTGT_BASE:mutual/$ISTGT_LUN"
chk "istgt mutual, wrong target secret detected" fail iscsi-readcapacity16 "iscsi://$M1$I/$ISTGT_BASE:mutual/$ISTGT_LUN?$MTBAD"

echo "== istgt with discovery CHAP ($D, disk LUN $ISTGT_LUN)"
chk "dchap discovery without CHAP refused" 2 "$PROBE" "$D"
chk "dchap discovery, good secret lists the target" ok env PROBE_CHAP_SECRET="$DISC_SECRET" \
  "$PROBE" "$D" --user "$DISC_USER" --expect "$DCHAP_BASE:ram1"
chk "dchap discovery, wrong secret refused" 2 env PROBE_CHAP_SECRET=wrongsecret1 "$PROBE" "$D" --user "$DISC_USER"
chk_size "dchap ram1 capacity (normal session, no auth)" $((DCHAP_MIB * MIB)) "iscsi://$D/$DCHAP_BASE:ram1/$ISTGT_LUN"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
