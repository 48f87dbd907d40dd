#!/usr/bin/env bash
# Builds the runtime file set of the image from Debian packages (apt-get download + dpkg -x), without Docker.
# The packages are those of deploy/runtime-packages.txt.
#
#   bash scripts/rootfs.sh --layer DIR   only the shared libraries of the "add" packages: what the Dockerfile
#                                        copies onto gcr.io/distroless/cc-debian12 (what librdkafka links)
#   bash scripts/rootfs.sh DIR           a root filesystem standing in for the image: the "base" packages
#                                        distroless cc is made of, its users (nonroot is 65532), CA bundle and
#                                        /tmp, the layer above, and what the Dockerfile copies besides the
#                                        binary and librdkafka (the config, the WAL volume's directory).
#                                        tests/rootfs_test.ts puts those two in, chroots into it and runs the
#                                        service there.
#
# The .debs are cached in ${KA_CACHE_DIR:-~/.cache/kafka-ambassador}/debs: a second run downloads nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGES="$ROOT/deploy/runtime-packages.txt"
DEBS="${KA_CACHE_DIR:-$HOME/.cache/kafka-ambassador}/debs"
NONROOT=65532

die() {
  echo "rootfs: $*" >&2
  exit 1
}

LAYER_ONLY=false
if [ "${1:-}" = "--layer" ]; then
  LAYER_ONLY=true
  shift
fi
[ "$#" -eq 1 ] || die "usage: scripts/rootfs.sh [--layer] DIR"
TARGET="$1"

packages_of() {
  awk -v layer="$1" '!/^#/ && $2 == layer { print $1 }' "$PACKAGES"
}

# Prints the cached .deb of each package, downloading the missing ones (apt-get update once if apt has no lists).
debs_of() {
  local missing=() pkg
  mkdir -p "$DEBS"
  for pkg in "$@"; do
    compgen -G "$DEBS/${pkg}_*.deb" >/dev/null || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    local log="$DEBS/apt-download.log"
    if ! (cd "$DEBS" && apt-get download "${missing[@]}") >"$log" 2>&1; then
      { apt-get update && (cd "$DEBS" && apt-get download "${missing[@]}"); } >"$log" 2>&1 ||
        { tail -n 20 "$log" >&2; die "apt-get download ${missing[*]} failed (full log: $log)"; }
    fi
  fi
  for pkg in "$@"; do
    compgen -G "$DEBS/${pkg}_*.deb" | sort | tail -n 1
  done
}

extract() {
  local dir="$1" deb
  shift
  while read -r deb; do
    dpkg -x "$deb" "$dir"
  done < <(debs_of "$@")
}

mkdir -p "$TARGET"
mapfile -t added < <(packages_of add)
if [ "$LAYER_ONLY" = true ]; then
  extract "$TARGET" "${added[@]}"
  # Shared libraries only: no docs, no man pages, no empty plugin directories.
  find "$TARGET" ! -type d ! -name '*.so*' -delete
  find "$TARGET" -mindepth 1 -type d -empty -delete
  # All under /usr/lib (zlib1g ships in /lib): the loader searches both, and the image's /lib may be a link.
  if [ -d "$TARGET/lib" ]; then
    mkdir -p "$TARGET/usr/lib"
    cp -a "$TARGET/lib/." "$TARGET/usr/lib/"
    rm -rf "$TARGET/lib"
  fi
  exit 0
fi

mapfile -t base < <(packages_of base)
extract "$TARGET" "${base[@]}"
bash "$0" --layer "$TARGET/.layer"
cp -a "$TARGET/.layer/." "$TARGET/"
rm -rf "$TARGET/.layer"

# What distroless adds to its packages: users, a CA bundle (ca-certificates' postinst does not run), /tmp.
cat >"$TARGET/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:$NONROOT:$NONROOT:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$TARGET/etc/group" <<GROUP
root:x:0:
nobody:x:65534:
nonroot:x:$NONROOT:
GROUP
mkdir -p "$TARGET/etc/ssl/certs" "$TARGET/home/nonroot" "$TARGET/tmp" "$TARGET/proc" "$TARGET/dev"
find "$TARGET/usr/share/ca-certificates" -name '*.crt' -print0 | sort -z | xargs -0 cat \
  >"$TARGET/etc/ssl/certs/ca-certificates.crt"
chown "$NONROOT:$NONROOT" "$TARGET/home/nonroot"
chmod 1777 "$TARGET/tmp"

# What the Dockerfile copies besides the binary.
mkdir -p "$TARGET/etc/kafka-ambassador" "$TARGET/var/lib/kafka-ambassador"
cp "$ROOT/config/default.yaml" "$TARGET/etc/kafka-ambassador/config.yaml"
chown "$NONROOT:$NONROOT" "$TARGET/var/lib/kafka-ambassador"
