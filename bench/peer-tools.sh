#!/bin/bash
# Build the peer baseline for the benchmarks: fio with its libiscsi engine, at
# ${BENCH_DIR:-/tmp/rsiscsi-bench}/fio/fio. Debian's fio package lacks that engine, so this
# rebuilds Debian's own fio source with --enable-libiscsi. Source packages come through a
# private apt configuration under $BENCH_DIR/apt; /etc/apt is left alone. Also qemu-img's
# iscsi:// driver (qemu-block-extra at qemu-utils' version, from backports) and nbdcopy
# (libnbd-bin) and nbdkit (its side Z), for bench/nbd-compare.sh.
# Idempotent: a second run only checks that the engine is there. Needs root (apt-get install).
set -euo pipefail
BENCH_DIR=${BENCH_DIR:-/tmp/rsiscsi-bench}
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$BENCH_DIR"

need=()
for p in libiscsi-bin libiscsi-dev pkg-config zlib1g-dev libaio-dev iperf3 gcc make tgt istgt dpkg-dev nbdkit; do
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

# qemu-img with qemu's own libiscsi driver (iscsi:// URLs), the peer of bench/nbd-compare.sh: the
# driver is block-iscsi.so in qemu-block-extra, which must be exactly qemu-utils' version. The image
# ships qemu-utils 10.0.2 from bookworm-backports, and bookworm's own qemu-block-extra (7.2) would pull
# qemu-utils down to 7.2, so it comes from backports, through a private sources list (bookworm for
# its dependencies, bookworm-backports for it).
QEMU_ISCSI=/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so
dpkg -s qemu-utils >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq --no-install-recommends qemu-utils >/dev/null; }
qemu_v=$(dpkg-query -W -f='${Version}' qemu-utils)
if [ "$(dpkg-query -W -f='${Version}' qemu-block-extra 2>/dev/null)" != "$qemu_v" ] || [ ! -e "$QEMU_ISCSI" ]; then
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  O=$(private_apt bpo deb "$codename $codename-backports")
  # shellcheck disable=SC2086 # the options are meant to split
  apt-get $O update -qq
  # shellcheck disable=SC2086
  apt-get $O install -y -qq --no-install-recommends "qemu-block-extra=$qemu_v" >/dev/null ||
    { echo "cannot install qemu-block-extra=$qemu_v from $codename-backports" >&2; exit 1; }
fi
[ -e "$QEMU_ISCSI" ] || { echo "$QEMU_ISCSI missing after installing qemu-block-extra" >&2; exit 1; }
# nbdcopy and nbdinfo (libnbd), the NBD clients of bench/nbd-compare.sh.
if ! command -v nbdcopy >/dev/null || ! command -v nbdinfo >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends libnbd-bin >/dev/null
fi

echo "peer tools ready: $FIO ($("$FIO" --version)) with the libiscsi engine; iperf3 $(iperf3 --version | head -1 | cut -d' ' -f2);" \
  "qemu-img $qemu_v with $QEMU_ISCSI; $(nbdcopy --version | head -1)"
