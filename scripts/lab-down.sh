#!/bin/bash
# Stop the rsiscsi lab started by lab-up.sh: tgtd, both istgt instances, and the RAM disk.
# Safe to run when nothing (or only part of the lab) is up. Stops daemons by the PIDs lab-up.sh
# recorded (and, for a lab whose PID files were lost, by tgtd's private control socket or by istgt's
# config path under $LAB), never by a broad process name.
# Exit status: 0 when nothing of the lab is left running, 1 otherwise.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lab-lib.sh
. "$HERE/lab-lib.sh"
need_root

# pid_is PID NAME: true when PID is a live process whose command is NAME (guards against PID reuse).
pid_is() {
  [ -n "$1" ] && ! is_gone "$1" && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

# wait_gone PID SECONDS: wait for PID to exit (or turn zombie).
wait_gone() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    is_gone "$1" && return 0
    sleep 0.1
  done
  is_gone "$1"
}

stop_tgt() {
  local pidf="$LAB/tgt/tgtd.pid" pid="" tid
  [ -f "$pidf" ] && pid=$(cat "$pidf")
  # tgtd's SIGTERM handler does nothing: take it down through its management socket instead.
  if tgtadm -C "$TGT_CONTROL_PORT" --mode sys --op show >/dev/null 2>&1; then
    tgtadm -C "$TGT_CONTROL_PORT" --op update --mode sys --name State -v offline >/dev/null 2>&1
    for tid in $(tgtadm -C "$TGT_CONTROL_PORT" --lld iscsi --mode target --op show 2>/dev/null |
      sed -n 's/^Target \([0-9]*\):.*/\1/p'); do
      tgtadm -C "$TGT_CONTROL_PORT" --lld iscsi --mode target --op delete --force --tid "$tid" >/dev/null 2>&1 ||
        say "warning: could not delete tgt target $tid"
    done
    tgtadm -C "$TGT_CONTROL_PORT" --op delete --mode system >/dev/null 2>&1 ||
      say "warning: tgtadm --op delete --mode system failed"
  fi
  if pid_is "$pid" tgtd; then
    if ! wait_gone "$pid" 5; then
      say "tgtd (pid $pid) did not exit through tgtadm; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null
      wait_gone "$pid" 5 || say "warning: tgtd (pid $pid) still alive after SIGKILL"
    fi
  fi
  rm -f "$pidf"
}

# stop_istgt NAME: stop the istgt instance whose files live in $LAB/NAME.
stop_istgt() {
  local name=$1 dir="$LAB/$1" pid="" pids p
  [ -f "$dir/istgt.launch.pid" ] && pid=$(cat "$dir/istgt.launch.pid")
  pids=()
  pid_is "$pid" istgt && pids+=("$pid")
  # An instance whose PID file was lost is still recognised by its config path, which is ours alone.
  for p in $(pgrep -x istgt 2>/dev/null); do
    [ "$p" = "$pid" ] && continue
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "-c $dir/istgt.conf " && pids+=("$p")
  done
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null # istgt exits on SIGTERM within about 1.5 s
  done
  for p in "${pids[@]}"; do
    if ! wait_gone "$p" 10; then
      say "istgt $name (pid $p) ignored SIGTERM for 10 s; sending SIGKILL"
      kill -KILL "$p" 2>/dev/null
      wait_gone "$p" 5 || say "warning: istgt $name (pid $p) still alive after SIGKILL"
    fi
  done
  rm -f "$dir/istgt.launch.pid" "$dir/istgt.pid"
}

# Tests must not pick up the settings of a lab that is going away.
rm -f "$LAB_ENV_FILE"

stop_tgt
stop_istgt istgt
stop_istgt dchap

if mountpoint -q "$LAB/ram" 2>/dev/null; then
  umount "$LAB/ram" 2>/dev/null || {
    sleep 1
    umount "$LAB/ram" 2>/dev/null
  } || {
    say "warning: $LAB/ram busy; detaching it lazily"
    umount -l "$LAB/ram"
  }
fi

left=()
for port in "$TGT_PORT" "$ISTGT_PORT" "$DCHAP_PORT" "$ISTGT_UCTL_PORT" "$DCHAP_UCTL_PORT"; do
  if listening "$HOST4" "$port" || listening "$HOST6" "$port"; then
    left+=("port $port: $(port_users "$port")")
  fi
done
if ((${#left[@]})); then
  say "ERROR: still listening after lab-down:"
  printf '  %s\n' "${left[@]}" >&2
  exit 1
fi
say "lab down ($LAB)"
exit 0
