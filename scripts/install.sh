#!/bin/bash
# Installs rsiscsi and rsiscsid, as root, from the repository: the release binaries in $PREFIX/bin, the
# manual pages of dist/man (generated from the command-line definitions) in $PREFIX/share/man/man1 and
# man8, and the shell completions: bash always (in $BASH_COMPLETION_DIR), zsh and fish when that shell
# is installed. Running it again replaces what it installed.
#
#   PREFIX               default /usr/local
#   BASH_COMPLETION_DIR  default /usr/share/bash-completion/completions (read by the bash-completion
#                        package; without it, `source` the file from ~/.bashrc)
#
# The systemd unit is not installed (see the end of the output for the two commands).
set -Eeuo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
BASH_COMPLETION_DIR=${BASH_COMPLETION_DIR:-/usr/share/bash-completion/completions}
say() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}
[ "$(id -u)" = 0 ] || die "must run as root (it writes to $PREFIX and $BASH_COMPLETION_DIR)"
cd "$ROOT"

if ! command -v cargo >/dev/null && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
  PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null ||
  die "cargo not found: install a stable Rust toolchain with rustup (Debian 12's cargo is too old for edition 2024)"

say "building the release binaries"
cargo build --release -p rsiscsi -p rsiscsid
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"

# put MODE SRC DST: install one file, creating its directory, and say where it went.
put() {
  install -D -m "$1" "$2" "$3"
  printf '  %s\n' "$3"
}

say "installing"
put 0755 "$BIN/rsiscsi" "$PREFIX/bin/rsiscsi"
put 0755 "$BIN/rsiscsid" "$PREFIX/bin/rsiscsid"
for page in "$ROOT"/dist/man/*.1; do
  put 0644 "$page" "$PREFIX/share/man/man1/${page##*/}"
done
for page in "$ROOT"/dist/man/*.8; do
  put 0644 "$page" "$PREFIX/share/man/man8/${page##*/}"
done
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$BIN/rsiscsi" completions bash >"$TMP/rsiscsi"
put 0644 "$TMP/rsiscsi" "$BASH_COMPLETION_DIR/rsiscsi"
put 0644 "$ROOT/dist/completions/rsiscsid.bash" "$BASH_COMPLETION_DIR/rsiscsid"
if command -v zsh >/dev/null; then
  "$BIN/rsiscsi" completions zsh >"$TMP/_rsiscsi"
  put 0644 "$TMP/_rsiscsi" "$PREFIX/share/zsh/site-functions/_rsiscsi"
fi
if command -v fish >/dev/null; then
  "$BIN/rsiscsi" completions fish >"$TMP/rsiscsi.fish"
  put 0644 "$TMP/rsiscsi.fish" "$PREFIX/share/fish/vendor_completions.d/rsiscsi.fish"
fi
# man -k / apropos find the new pages once the index is rebuilt (man itself finds them at once).
if command -v mandb >/dev/null; then
  mandb -q 2>/dev/null || true
fi

say "done: try \`man rsiscsi\`, \`man rsiscsi-cp\`, \`man 8 rsiscsid\`, and \`rsiscsi <TAB>\` in a new bash"
say "to run the service under systemd: install -m 0644 dist/rsiscsid.service /etc/systemd/system/ && systemctl enable --now rsiscsid"
