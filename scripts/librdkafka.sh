#!/usr/bin/env bash
# Builds the librdkafka the service ships with, from source, at the version pinned below: a shared library
# with TLS (the system's OpenSSL), SASL PLAIN, SCRAM and OAUTHBEARER (librdkafka's own), and zlib, zstd and lz4
# compression (the system's libraries). Built without Cyrus SASL (no GSSAPI/Kerberos) and without libcurl (no
# OIDC token fetching): neither is tested, and each would pull a chain of libraries into the image.
# Why not Debian 12's librdkafka1 (2.0.2): against Kafka 4.x, SCRAM needs librdkafka 2.6.1 or newer.
#
#   bash scripts/librdkafka.sh          builds into .tools/librdkafka-<version>/ (lib/librdkafka.so.1 and
#                                       include/librdkafka/rdkafka.h) and writes the library's path to
#                                       .tools/librdkafka-path; a second run finds it there and does nothing
#   bash scripts/librdkafka.sh --deps   prints the Debian packages the build needs (scripts/setup.sh and the
#                                       Dockerfile install them)
#
# The source archive is cached in ${KA_CACHE_DIR:-~/.cache/kafka-ambassador}; it is checked against the pinned
# sha256 before anything is built from it. The build is found by its version alone: after changing the options
# below, remove .tools/librdkafka-<version>/ to build again.
set -euo pipefail

LIBRDKAFKA_VERSION=2.12.1
# The crate rdkafka-sys bundles librdkafka's source tree at the release tag (its version says which: +2.12.1).
# crates.io is reachable where GitHub's release archives may not be.
LIBRDKAFKA_SOURCE_URL="https://static.crates.io/crates/rdkafka-sys/rdkafka-sys-4.10.0%2B${LIBRDKAFKA_VERSION}.crate"
LIBRDKAFKA_SOURCE_SHA256=e234cf318915c1059d4921ef7f75616b5219b10b46e9f3a511a15eb4b56a3f77
# configure insists on a C++ compiler although only the C library is built.
BUILD_DEPS=(gcc g++ make libc6-dev binutils pkg-config curl ca-certificates libssl-dev zlib1g-dev libzstd-dev liblz4-dev)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
CACHE_DIR="${KA_CACHE_DIR:-$HOME/.cache/kafka-ambassador}"
PREFIX="$TOOLS/librdkafka-$LIBRDKAFKA_VERSION"
LIBRARY="$PREFIX/lib/librdkafka.so.1"

die() {
  echo "librdkafka: $*" >&2
  exit 1
}

if [ "${1:-}" = "--deps" ]; then
  echo "${BUILD_DEPS[*]}"
  exit 0
fi
[ "$#" -eq 0 ] || die "usage: scripts/librdkafka.sh [--deps]"

# Downloads the source archive once into the cache and checks its digest (every time: the cache is shared).
source_archive() {
  local archive="$CACHE_DIR/librdkafka-$LIBRDKAFKA_VERSION-source.tar.gz"
  if [ ! -f "$archive" ]; then
    mkdir -p "$CACHE_DIR"
    curl -fsSL --retry 3 -o "$archive.partial" "$LIBRDKAFKA_SOURCE_URL" ||
      die "download of $LIBRDKAFKA_SOURCE_URL failed"
    mv "$archive.partial" "$archive"
  fi
  local got
  got="$(sha256sum "$archive" | awk '{print $1}')"
  if [ "$got" != "$LIBRDKAFKA_SOURCE_SHA256" ]; then
    rm -f "$archive"
    die "$archive: sha256 $got, expected $LIBRDKAFKA_SOURCE_SHA256 (removed; run again to download it anew)"
  fi
  echo "$archive"
}

build() {
  local archive log="$TOOLS/librdkafka-build.log"
  archive="$(source_archive)"
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  tar -xzf "$archive" -C "$WORK" --strip-components=1
  local src="$WORK/librdkafka"
  [ -f "$src/src/rdkafka.h" ] || die "$archive holds no librdkafka/src/rdkafka.h"
  grep -q "^#define RD_KAFKA_VERSION 0x$(printf '%02x%02x%02x' ${LIBRDKAFKA_VERSION//./ })ff" "$src/src/rdkafka.h" ||
    die "$archive is not librdkafka $LIBRDKAFKA_VERSION (RD_KAFKA_VERSION in rdkafka.h differs)"
  # An explicit --enable fails the build when its library is missing, instead of quietly building without it.
  # No configure cache, no module downloads: the result depends on this host's -dev packages only.
  if ! (cd "$src" && ./configure --no-cache --no-download --disable-debug-symbols \
    --enable-ssl --enable-zlib --enable-zstd --enable-lz4-ext \
    --disable-gssapi --disable-curl &&
    make -C src -j"$(nproc)" librdkafka.so.1) >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "build of $LIBRDKAFKA_VERSION failed (full log: $log)"
  fi
  rm -rf "$PREFIX.partial"
  mkdir -p "$PREFIX.partial/lib" "$PREFIX.partial/include/librdkafka"
  cp "$src/src/librdkafka.so.1" "$PREFIX.partial/lib/"
  strip --strip-unneeded "$PREFIX.partial/lib/librdkafka.so.1"
  cp "$src/src/rdkafka.h" "$PREFIX.partial/include/librdkafka/"
  rm -rf "$PREFIX"
  mv "$PREFIX.partial" "$PREFIX"
}

mkdir -p "$TOOLS"
if [ ! -f "$LIBRARY" ]; then
  # Two checkouts sharing .tools may both get here: one builds, the other waits and uses its result.
  exec 9>"$TOOLS/librdkafka.lock"
  flock 9
  [ -f "$LIBRARY" ] || build
  exec 9>&-
fi
# The physical path: .tools may be a link shared by several checkouts.
echo "$(cd "$PREFIX/lib" && pwd -P)/librdkafka.so.1" >"$TOOLS/librdkafka-path"
