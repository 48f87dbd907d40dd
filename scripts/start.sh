#!/usr/bin/env bash
# Starts kafka-ambassador from source with the pinned Deno, installing what is missing first.
# Usage: bash scripts/start.sh [CONFIG] (default: config/default.yaml, which needs no Kafka to start).
set -euo pipefail
case "${1:-}" in
-h | --help)
  echo "usage: bash scripts/start.sh [CONFIG]   (default: config/default.yaml)" >&2
  exit 0
  ;;
esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --runtime
# The librdkafka built by setup (scripts/librdkafka.sh), unless LIBRDKAFKA_PATH names another.
# The flags the binary gets (deploy/deno-flags.txt): the same permissions and V8 settings.
mapfile -t flags < <(grep -v -e '^#' -e '^$' deploy/deno-flags.txt)
LIBRDKAFKA_PATH="${LIBRDKAFKA_PATH:-$(cat .tools/librdkafka-path)}" exec "$(cat .tools/deno-path)" run "${flags[@]}" \
  src/main.ts -config "${1:-config/default.yaml}"
