#!/bin/bash
# Build the peer baseline for the benchmarks: fio with its libiscsi engine, at
# ${BENCH_DIR:-/tmp/rsiscsi-bench}/fio/fio. Debian's fio package lacks that engine, so this
# rebuilds Debian's own fio source with --enable-libiscsi. Source packages come through a
# private apt configuration under $BENCH_DIR/apt; /etc/apt is left alone.
# Idempotent: a second run only checks that the engine is there. Needs root (apt-get install).
set -euo pipefail
BENCH_DIR=${BENCH_DIR:-/tmp/rsiscsi-bench}
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$BENCH_DIR"

need=()
for p in libiscsi-bin libiscsi-dev pkg-config zlib1g-dev libaio-dev iperf3 gcc make tgt istgt dpkg-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# private_apt NAME TYPES SUITE: prints apt -o options for a sources list of our own.
private_apt() {
  local dir="$BENCH_DIR/apt/$1" uri
  mkdir -p "$dir/parts" "$dir/lists/partial" "$dir/cache/archives/partial"
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
  uri=${uri:-http://deb.debian.org/debian}
  printf 'Types: %s\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$2" "$uri" "$3" >"$dir/parts/x.sources"
  echo "-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$dir/parts -o Dir::State::Lists=$dir/lists -o Dir::Cache=$dir/cache"
}

FIO="$BENCH_DIR/fio/fio"
if [ ! -x "$FIO" ] || ! "$FIO" --enghelp 2>/dev/null | grep -qw libiscsi; then
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  # shellcheck disable=SC2046 # the options are meant to split
  O=$(private_apt src deb-src "$codename")
  # shellcheck disable=SC2086
  apt-get $O update -qq
  rm -rf "$BENCH_DIR/fio-src" && mkdir -p "$BENCH_DIR/fio-src"
  # shellcheck disable=SC2086
  (cd "$BENCH_DIR/fio-src" && apt-get $O source --download-only fio >/dev/null 2>&1)
  rm -rf "$BENCH_DIR/fio" && mkdir -p "$BENCH_DIR/fio"
  tar -xzf "$BENCH_DIR"/fio-src/fio_*.orig.tar.gz -C "$BENCH_DIR/fio" --strip-components=1
  cd "$BENCH_DIR/fio"
  ./configure --enable-libiscsi >configure.log 2>&1
  grep -q 'iscsi engine *yes' configure.log || { echo "fio configure did not enable libiscsi (see $BENCH_DIR/fio/configure.log)" >&2; exit 1; }
  make -j"$(nproc)" fio >make.log 2>&1 || { echo "fio build failed (see $BENCH_DIR/fio/make.log)" >&2; exit 1; }
fi
if ! "$FIO" --enghelp | grep -qw libiscsi; then
  echo "$FIO has no libiscsi engine" >&2
  exit 1
fi
echo "peer tools ready: $FIO ($("$FIO" --version)) with the libiscsi engine; iperf3 $(iperf3 --version | head -1 | cut -d' ' -f2)"
