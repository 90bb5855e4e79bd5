# shellcheck shell=bash
# shellcheck disable=SC2034  # the settings below are used by the scripts that source this file
# Shared settings and helpers for the rsiscsi lab scripts. Sourced, never run.
# Every port, IQN, size and credential of the lab is defined here once; lab-up.sh writes them to
# $LAB/lab.env for the integration tests, the other scripts read them from here.

LAB=${LAB:-/tmp/rsiscsi-lab}
LAB_ENV_FILE="$LAB/lab.env"

# --- portals -------------------------------------------------------------------------------------
HOST4=127.0.0.1
HOST6=::1
TGT_PORT=3260
ISTGT_PORT=3261
DCHAP_PORT=3262
REDIRECT_HOST=127.0.0.2   # tgt's redirects point here; see lab-up.sh
ISTGT_UCTL_PORT=3269   # istgt's UnitControl would otherwise take 3261
DCHAP_UCTL_PORT=3270
# tgtd's management socket (/var/run/tgtd/socket.N). A private number keeps us clear of a system tgtd.
TGT_CONTROL_PORT=3260

# --- targets -------------------------------------------------------------------------------------
TGT_BASE=iqn.2024-01.lab.tgt
ISTGT_BASE=iqn.2024-01.lab.istgt
DCHAP_BASE=iqn.2024-01.lab.istgt-dchap
TGT_LUN=1     # tgt's LUN 0 is its "controller" LU (type 0x0c)
ISTGT_LUN=0

MIB=$((1024 * 1024))
RAM1_MIB=1024
CHAP_MIB=256
MUTUAL_MIB=256
DCHAP_MIB=64
SVC_MIB=256    # the service's integration tests (tgt target "svc")
SMALL_MIB=64   # the write-path variants (unsol, noimm) and the redirect target
NBD_MIB=512    # the NBD export's tests (tgt and istgt target "nbd")

# --- credentials (lab-only, not secret in any real sense) ---------------------------------------
CHAP_USER=labuser
CHAP_SECRET=labsecret123
MUTUAL_USER=muser
MUTUAL_SECRET=musersecret1
MUTUAL_TARGET_USER=mtarget
MUTUAL_TARGET_SECRET=mtargetsecret
DISC_USER=discuser
DISC_SECRET=discsecret12
UCTL_USER=ctluser          # istgt UnitControl; nothing in the lab uses it
UCTL_SECRET=ctlsecret1234
UCTL_TARGET_USER=ctlmutual
UCTL_TARGET_SECRET=ctlmutualsecret

# glibc malloc tuning: without it tgtd mmap/munmaps each 1 MiB I/O buffer and runs at about half speed.
MALLOC_ENV=(MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456)

# --- helpers -------------------------------------------------------------------------------------
say() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() {
  printf '%s: ERROR: %s\n' "${0##*/}" "$*" >&2
  exit 1
}

need_root() {
  [ "$(id -u)" = 0 ] || die "must run as root (it starts iSCSI targets and mounts a tmpfs)"
}

# ensure_pkgs PKG...: apt-get install the Debian packages that are not installed yet.
APT_UPDATED=${APT_UPDATED:-}
ensure_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$APT_UPDATED" ]; then
    apt-get update -qq || die "apt-get update failed"
    APT_UPDATED=1
    export APT_UPDATED
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
}

# is_gone PID: true when PID no longer runs. PID 1 here does not reap, so a zombie counts as gone.
is_gone() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 0
  [ -z "$st" ] || [ "${st:0:1}" = Z ]
}

# listening ADDR PORT: true when something listens on exactly ADDR:PORT (ADDR without brackets).
listening() {
  local want=$1:$2
  [[ $1 == *:* ]] && want="[$1]:$2"
  ss -Hltn 2>/dev/null | awk -v w="$want" '$4 == w { found = 1 } END { exit !found }'
}

# port_users PORT: a short description of whatever listens on PORT on any address (for messages).
port_users() {
  ss -Hltnp "sport = :$1" 2>/dev/null | awk '{ print $4, $6 }' | tr '\n' ' '
}

log_tail() { # log_tail FILE: the last lines of a daemon log, indented, for failure messages
  if [ -s "$1" ]; then
    printf '  --- last lines of %s ---\n' "$1" >&2
    tail -n 20 "$1" | sed 's/^/  | /' >&2
  else
    printf '  (log %s is empty or missing)\n' "$1" >&2
  fi
}

# ensure_rust: cargo on PATH, plus rustfmt and clippy (added with rustup when missing).
# The workspace needs a current stable toolchain (edition 2024); Debian 12's own cargo is too old.
ensure_rust() {
  if ! command -v cargo >/dev/null && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    export PATH
  fi
  command -v cargo >/dev/null ||
    die "cargo not found: install a stable Rust toolchain with rustup (Debian 12's cargo is too old for edition 2024)"
  local comp
  for comp in fmt:rustfmt clippy:clippy; do
    if ! cargo "${comp%%:*}" --version >/dev/null 2>&1; then
      command -v rustup >/dev/null || die "cargo ${comp%%:*} is missing and there is no rustup to add ${comp##*:}"
      say "adding the ${comp##*:} component with rustup"
      rustup component add "${comp##*:}" || die "rustup component add ${comp##*:} failed"
    fi
  done
}
