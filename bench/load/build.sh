#!/usr/bin/env bash
# Builds the Go load generator (this folder) and prints the binary's path. The binary lives in the user's cache
# directory under a name made from a hash of the sources, so a build happens only when they change, and
# checkouts of different versions do not overwrite each other's binary. The first build fetches the modules
# pinned in go.sum from the Go module proxy into Go's module cache; later builds need no network.
set -euo pipefail
cd "$(dirname "$0")"
sources=(go.mod go.sum)
for f in *.go; do [[ $f == *_test.go ]] || sources+=("$f"); done
out="${XDG_CACHE_HOME:-$HOME/.cache}/kafka-ambassador/ka-load-$(cat "${sources[@]}" | sha256sum | cut -c1-16)"
if [[ -x $out ]]; then
  echo "$out"
  exit 0
fi
go=$(command -v go || true)
if [[ -z $go && -x /usr/local/go/bin/go ]]; then go=/usr/local/go/bin/go; fi
if [[ -z $go ]]; then
  echo "bench/load: Go is not installed; the load generator needs Go $(sed -n 's/^go //p' go.mod) or newer (https://go.dev/doc/install)" >&2
  exit 3
fi
mkdir -p "$(dirname "$out")"
# GOTOOLCHAIN=local: an older Go says so instead of downloading a newer toolchain.
GOTOOLCHAIN=local "$go" build -trimpath -o "$out.tmp.$$" . >&2
mv "$out.tmp.$$" "$out"
echo "$out"
