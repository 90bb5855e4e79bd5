#!/bin/bash
# Throughput over time while one link of an MC/S session is lost and comes back (issue 19 point 5).
#
#   bench/link-loss.sh [--target tgt|istgt] [--link K] [--time S] [--down-at S] [--up-at S]
#                      [--rw "read write"] [--iodepth N] [--policy P] [--rate R]
#
# On the links lab (bench/links.sh; started with its defaults when it is not up, and then taken down
# at the end), one `rsiscsi bench` per --rw (1 MiB, default 40 s, no warm-up) over one session of one
# connection per link, the leading one from link 1 (--from rsl-i1), the others from theirs
# (--add-portal 198.19.K.2@rsl-iK). Its per-second timeline (--timeline) drives the link: at
# --down-at seconds (default 10) link K (default 2; 1 is the leading connection's) goes down
# (`links.sh link K down`: the initiator's end), at --up-at (default 25) it comes back.
# Each run's JSON (the bench's own, with the moments the link went down and up on the bench's
# clock, and the links' rates) goes to bench/results/<date>-link-loss-<target>-<rw>.json, and
# bench/plot_link_loss.py draws them into bench/results/<date>-link-loss.png.
#
# --rate R sets every link to R for the run (`links.sh rate`) and puts the rates found back after;
# without it the lab's rates are used as they are.
# Holds the links lab's lock (links.sh locked) for the whole run: nothing else flips links or
# measures meanwhile. Needs root and a release build (built here unless RSISCSI names a binary);
# installs python3-matplotlib with apt-get for the plot when /usr/bin/python3 lacks it.
set -Eeuo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=scripts/lab-lib.sh
. "$ROOT/scripts/lab-lib.sh"
need_root

TARGET=tgt
LINK=2
TIME=40
DOWN_AT=10
UP_AT=25
RWS="read write"
IODEPTH=16
POLICY=round-robin
RATE=""
ARGS=("$@")
while (($#)); do
  case "$1" in
    --target) TARGET=${2:?}; shift 2 ;;
    --link) LINK=${2:?}; shift 2 ;;
    --time) TIME=${2:?}; shift 2 ;;
    --down-at) DOWN_AT=${2:?}; shift 2 ;;
    --up-at) UP_AT=${2:?}; shift 2 ;;
    --rw) RWS=${2:?}; shift 2 ;;
    --iodepth) IODEPTH=${2:?}; shift 2 ;;
    --policy) POLICY=${2:?}; shift 2 ;;
    --rate) RATE=${2:?}; shift 2 ;;
    -h | --help) sed -n '2,/^set -Eeuo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ $TARGET == tgt || $TARGET == istgt ]] || die "--target takes tgt or istgt"
for v in LINK TIME DOWN_AT UP_AT IODEPTH; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "--${v,,} takes a whole number, not '${!v}'"
done
((DOWN_AT < UP_AT && UP_AT < TIME)) || die "need --down-at < --up-at < --time (got $DOWN_AT, $UP_AT, $TIME)"
for rw in $RWS; do [[ $rw =~ ^(read|write|randread|randwrite)$ ]] || die "--rw takes read, write, randread, randwrite"; done

# The whole run under the lab's lock (taken once: the re-executed script has LINKS_LOCKED set).
if [ -z "${LINKS_LOCKED:-}" ]; then
  export LINKS_LOCKED=1
  exec "$HERE/links.sh" locked "$0" "${ARGS[@]}"
fi

DATE=$(date +%F)
RESULTS="$HERE/results"
WORK=$(mktemp -d /tmp/rsiscsi-link-loss.XXXXXX)
mkdir -p "$RESULTS"
LINK_IS_DOWN=""
LINKS_STARTED=""
RATE_SET=""
OLD_RATES=()
BENCH_PID=""
# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
  local rc=$?
  [ -n "$BENCH_PID" ] && kill "$BENCH_PID" 2>/dev/null
  [ -n "$LINK_IS_DOWN" ] && "$HERE/links.sh" link "$LINK" up >/dev/null 2>&1
  if [ -n "$RATE_SET" ] && [ -z "$LINKS_STARTED" ]; then
    local k
    for ((k = 1; k <= ${#OLD_RATES[@]}; k++)); do
      "$HERE/links.sh" rate "$k" "${OLD_RATES[k - 1]}" >/dev/null 2>&1 || say "could not put link $k back to ${OLD_RATES[k - 1]}"
    done
  fi
  [ -n "$LINKS_STARTED" ] && "$HERE/links.sh" down
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------- the lab and the binary ----------
if "$HERE/links.sh" status >/dev/null 2>&1; then
  say "using the links lab that is up"
else
  "$HERE/links.sh" up || die "the links lab did not start"
  LINKS_STARTED=1
fi
ENV_FILE=/tmp/rsiscsi-links/links.env
envv() { sed -n "s/^export $1='\(.*\)'$/\1/p" "$ENV_FILE"; }
N=$(envv RSISCSI_LINKS_COUNT)
((LINK >= 1 && LINK <= N)) || die "--link $LINK: the lab has links 1 to $N"
if [ -z "${RSISCSI:-}" ]; then
  ensure_rust
  (cd "$ROOT" && cargo build --release -p rsiscsi) || die "cargo build --release -p rsiscsi failed"
  RSISCSI=$ROOT/target/release/rsiscsi
fi
[ -x "$RSISCSI" ] || die "no rsiscsi binary at $RSISCSI"
"$RSISCSI" bench --help | grep -q -- '--timeline' || die "$RSISCSI has no bench --timeline (too old a build)"

KEY=${TARGET^^}
IQN=$(envv "RSISCSI_LINKS_${KEY}_IQN")
LUN=$(envv "RSISCSI_LINKS_${KEY}_LUN")
URL="iscsi://$(envv RSISCSI_LINK_1_${KEY}_PORTAL)/$IQN/$LUN"
MCS=(--connections "$N" --policy "$POLICY" --from "$(envv RSISCSI_LINK_1_IFACE)")
for ((k = 2; k <= N; k++)); do
  MCS+=(--add-portal "$(envv "RSISCSI_LINK_${k}_${KEY}_PORTAL")@$(envv "RSISCSI_LINK_${k}_IFACE")")
done
for ((k = 1; k <= N; k++)); do OLD_RATES+=("$(envv "RSISCSI_LINK_${k}_RATE")"); done
if [ -n "$RATE" ]; then
  RATE_SET=1
  for ((k = 1; k <= N; k++)); do
    "$HERE/links.sh" rate "$k" "$RATE" >/dev/null 2>&1 || die "links.sh rate $k $RATE failed"
  done
fi
RATES=$(envv RSISCSI_LINKS_RATES_BITS)


# last_t FILE: the bench's latest timeline second from its --timeline lines ("t=12.0s run ...").
last_t() { sed -n 's/^t=\([0-9.]*\)s .*/\1/p' "$1" | tail -n 1; }

OUTS=()
for rw in $RWS; do
  out="$RESULTS/$DATE-link-loss-$TARGET-$rw.json"
  say "$rw on $TARGET over $N links ($RATES bit/s): link $LINK down at ${DOWN_AT}s, up at ${UP_AT}s, ${TIME}s in all"
  "$RSISCSI" bench "$URL" --rw "$rw" --bs 1M --iodepth "$IODEPTH" --time "$TIME" --warmup 0 "${MCS[@]}" \
    --json --timeline >"$WORK/$rw.json" 2>"$WORK/$rw.err" &
  BENCH_PID=$!
  # Follow the timeline: the link's moments are taken on the bench's own clock (its t plus the time
  # since that line appeared, to a tenth of a second).
  t_down="" t_up="" seen="" seen_at=0
  while kill -0 "$BENCH_PID" 2>/dev/null; do
    t=$(last_t "$WORK/$rw.err")
    if [ -n "$t" ] && [ "$t" != "$seen" ]; then
      seen=$t
      seen_at=$EPOCHREALTIME
    fi
    if [ -n "$seen" ]; then
      now=$(awk -v t="$seen" -v a="$seen_at" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", t + (b - a) }')
      if [ -z "$t_down" ] && awk -v n="$now" -v d="$DOWN_AT" 'BEGIN { exit !(n >= d) }'; then
        "$HERE/links.sh" link "$LINK" down >/dev/null 2>&1 || die "links.sh link $LINK down failed"
        LINK_IS_DOWN=1
        t_down=$now
        say "  t=${now}s: link $LINK down"
      elif [ -n "$t_down" ] && [ -z "$t_up" ] && awk -v n="$now" -v u="$UP_AT" 'BEGIN { exit !(n >= u) }'; then
        "$HERE/links.sh" link "$LINK" up >/dev/null 2>&1 || die "links.sh link $LINK up failed"
        LINK_IS_DOWN=""
        t_up=$now
        say "  t=${now}s: link $LINK up"
      fi
    fi
    sleep 0.1
  done
  rc=0
  wait "$BENCH_PID" || rc=$?
  BENCH_PID=""
  if [ -n "$LINK_IS_DOWN" ]; then
    "$HERE/links.sh" link "$LINK" up >/dev/null
    LINK_IS_DOWN=""
  fi
  [ "$rc" = 0 ] || { log_tail "$WORK/$rw.err"; die "rsiscsi bench ($rw) failed with exit $rc"; }
  [ -n "$t_down" ] && [ -n "$t_up" ] || die "the bench ($rw) ended before the link went down and up"
  # The lab is shared: a rate changed under the run (links.sh rate by someone without the lock)
  # makes it worthless; say so, in the JSON too.
  RATES_AFTER=$(envv RSISCSI_LINKS_RATES_BITS)
  [ "$RATES_AFTER" = "$RATES" ] || say "WARNING: the link rates changed during the run ($RATES -> $RATES_AFTER bit/s): someone else used the lab; run again"
  python3 - "$WORK/$rw.json" "$out" "$TARGET" "$rw" "$LINK" "$t_down" "$t_up" "$RATES" "$URL" "$POLICY" "$N" \
    "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)" "$RATES_AFTER" <<'PY'
import json, subprocess, sys
src, out, target, rw, link, t_down, t_up, rates, url, policy, n, commit, after = sys.argv[1:14]
bench = json.load(open(src))
json.dump({
    "what": "rsiscsi bench during the loss of one link (bench/link-loss.sh)",
    "date": subprocess.run(["date", "-u", "+%FT%TZ"], capture_output=True, text=True).stdout.strip(),
    "commit": commit,
    "target": target, "rw": rw, "url": url, "policy": policy, "links": int(n),
    "link_rates_bits": [int(r) for r in rates.split(",")],
    "link_rates_bits_after": [int(r) for r in after.split(",")],
    "link": int(link), "link_down_t": float(t_down), "link_up_t": float(t_up),
    "bench": bench,
}, open(out, "w"), indent=1)
PY
  OUTS+=("$out")
  say "  -> $out ($(python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))["bench"]; print("%.0f MiB/s average, %d errors" % (b["bw_mib_s"], b["errors"]))' "$out"))"
done

# ---------- the plot ----------
if ! /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  ensure_pkgs python3-matplotlib
fi
PNG="$RESULTS/$DATE-link-loss.png"
/usr/bin/python3 "$HERE/plot_link_loss.py" -o "$PNG" "${OUTS[@]}" || die "plot_link_loss.py failed"
say "plot: $PNG"
