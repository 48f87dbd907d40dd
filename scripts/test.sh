#!/usr/bin/env bash
# The project's full check: installs what is missing (scripts/setup.sh), then formatting, lint, type check
# and the whole test suite with the pinned Deno. Exits non-zero on the first failure.
set -euo pipefail

if [ $# -gt 0 ]; then
  echo "usage: bash scripts/test.sh   (the whole check; to run one test file, see README.md, Run the tests)" >&2
  exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
KA_DENO="$(cat .tools/deno-path)"
KAFKA_LIBS="$(cat .tools/kafka-libs-path)"
# The pinned librdkafka build, for the tests' own producers and every service they start.
LIBRDKAFKA_PATH="$(cat .tools/librdkafka-path)"
export KA_DENO KAFKA_LIBS LIBRDKAFKA_PATH

"$KA_DENO" fmt --check
"$KA_DENO" lint

check_dirs=()
for dir in src tests bench; do
  if [ -n "$(find "$dir" -name '*.ts' -print -quit 2>/dev/null)" ]; then
    check_dirs+=("$dir/")
  fi
done
if [ "${#check_dirs[@]}" -gt 0 ]; then
  "$KA_DENO" check "${check_dirs[@]}"
fi

# Test files run three at a time (DENO_JOBS overrides): a fault test spends most of its time waiting out the
# outage it made, so on two cores three files at once take 3.5 minutes where one at a time took 8.5. Every file
# starts its own brokers and services on free ports, in its own temporary directories.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
DENO_JOBS="${DENO_JOBS:-3}" "$KA_DENO" test --allow-all --parallel tests/ 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
set -e
# Deno's summary line is "ok | 12 passed (3 steps) | 0 failed (40s)"; repeat it in the plain form.
summary="$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -n 1 || true)"
if [ -n "$summary" ]; then
  passed="$(echo "$summary" | sed -E 's/.*\| ([0-9]+) passed.*/\1/')"
  failed="$(echo "$summary" | sed -E 's/.*\| ([0-9]+) failed.*/\1/')"
  echo "tests: $passed passed, $failed failed"
fi
exit "$status"
