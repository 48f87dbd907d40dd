#!/usr/bin/env bash
# Compiles the service into one executable with `deno compile` (default output: dist/kafka-ambassador), with
# the Deno flags of deploy/deno-flags.txt (permissions, V8 settings). The proto file is imported as text, so it
# is inside the binary.
# `deno compile` downloads its runtime (denort) from Deno's download server on first use; where that server
# cannot be reached this says so in one line and exits 1 (a local denort can be given with DENORT_BIN).
# Usage: bash scripts/compile.sh [OUTPUT]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTPUT="${1:-$ROOT/dist/kafka-ambassador}"
DENO="${KA_DENO:-$(cat "$ROOT/.tools/deno-path" 2>/dev/null || command -v deno || true)}"
[ -n "$DENO" ] || { echo "compile: no deno found (run scripts/setup.sh --runtime)" >&2; exit 1; }

mapfile -t flags < <(grep -v -e '^#' -e '^$' "$ROOT/deploy/deno-flags.txt")
mkdir -p "$(dirname "$OUTPUT")"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! (cd "$ROOT" && "$DENO" compile --quiet "${flags[@]}" --output "$OUTPUT" src/main.ts) >"$log" 2>&1; then
  if grep -q 'denort' "$log"; then
    url="$(grep -o 'https://[^ )]*denort[^ )]*' "$log" | head -n 1)"
    echo "compile: deno compile could not download its runtime (${url:-denort}); this needs Deno's download server (the Docker build reaches it) or DENORT_BIN=/path/to/denort" >&2
  else
    cat "$log" >&2
    echo "compile: deno compile failed" >&2
  fi
  exit 1
fi
echo "compile: $OUTPUT"
