#!/usr/bin/env bash
# Installs everything the build and the tests need: Debian packages, the pinned Deno, the Apache Kafka broker
# jars (cached across runs) and the npm dependencies from deno.lock. Idempotent, quiet on success.
# Leaves .tools/deno-path, .tools/librdkafka-path and .tools/kafka-libs-path for scripts/start.sh,
# scripts/test.sh and tests/kafka/broker.ts.
# With --runtime: only what running the service needs (librdkafka, built from source by scripts/librdkafka.sh;
# Deno; the npm dependencies).
set -euo pipefail

RUNTIME_ONLY=false
[ "${1:-}" = "--runtime" ] && RUNTIME_ONLY=true

# Not 2.9.x: Deno 2.9.6 aborts in node:http2 when a gRPC client closes its connection (GOAWAY; denoland/deno#36788).
# Not 2.8.3: its HTTP/1.1 server closes the connection after every request whose body did not come with its head
# (over about 450 bytes; denoland/deno#36657), which makes a 1 KB message cost three times the CPU
# (docs/architecture.md, The runtime).
DENO_VERSION=2.8.2
# The broker the tests run against; KAFKA_VERSION picks another from Maven Central (3.9.1 and 4.4.0 pass too).
# Not a KA_* name: the services the tests start read those as config overrides.
KAFKA_VERSION="${KAFKA_VERSION:-4.2.2}"
LOG4J_VERSION=2.25.5 # matches the log4j-core that kafka 4.2.2 depends on

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
CACHE_DIR="${KA_CACHE_DIR:-$HOME/.cache/kafka-ambassador}"

die() {
  echo "setup: $*" >&2
  exit 1
}

# Prints the last lines of a log file to stderr, then fails with a one-line reason.
die_with_log() {
  local log="$1"
  shift
  tail -n 20 "$log" >&2 || true
  die "$* (full log: $log)"
}

install_debian_packages() {
  local wanted
  read -r -a wanted <<<"$(bash "$ROOT/scripts/librdkafka.sh" --deps)"
  if [ "$RUNTIME_ONLY" = false ]; then
    wanted+=(kcat openssl)
    command -v java >/dev/null 2>&1 || wanted+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || wanted+=(maven)
  fi
  local missing=() pkg
  for pkg in "${wanted[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    die "missing Debian packages: ${missing[*]} (run as root or: sudo apt-get install ${missing[*]})"
  fi
  local log="$TOOLS/apt.log"
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; } \
    >"$log" 2>&1 || die_with_log "$log" "apt-get install ${missing[*]} failed"
}

deno_version_of() {
  "$1" --version 2>/dev/null | head -n 1 | awk '{print $2}'
}

# Uses deno from PATH when it is exactly the pinned version, else the npm package `deno` under .tools/deno.
install_deno() {
  local deno
  deno="$(command -v deno 2>/dev/null || true)"
  if [ -n "$deno" ] && [ "$(deno_version_of "$deno")" = "$DENO_VERSION" ]; then
    echo "$deno" >"$TOOLS/deno-path"
    return 0
  fi
  local prefix="$TOOLS/deno"
  deno="$(find_npm_deno "$prefix")"
  if [ -z "$deno" ] || [ "$(deno_version_of "$deno")" != "$DENO_VERSION" ]; then
    command -v npm >/dev/null 2>&1 || die "npm is needed to install deno $DENO_VERSION (apt-get install npm)"
    local log="$TOOLS/npm-deno.log"
    rm -rf "$prefix"
    # The binary comes in the platform package (an optional dependency), so it is there even when npm
    # declines to run the postinstall script.
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "deno@$DENO_VERSION" >"$log" 2>&1 ||
      die_with_log "$log" "npm install deno@$DENO_VERSION failed"
    deno="$(find_npm_deno "$prefix")"
    [ -n "$deno" ] || die_with_log "$log" "no deno binary found under $prefix/node_modules/@deno after npm install"
    local got
    got="$(deno_version_of "$deno")"
    [ "$got" = "$DENO_VERSION" ] || die "deno at $deno reports version '$got', expected $DENO_VERSION"
  fi
  echo "$deno" >"$TOOLS/deno-path"
}

find_npm_deno() {
  local dir="$1/node_modules/@deno" candidate
  [ -d "$dir" ] || return 0
  for candidate in "$dir"/*/deno; do
    if [ -f "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
}

# Downloads the broker, the storage and topic tools and a log4j binding with Maven, once per Kafka version.
install_kafka_libs() {
  local home="$CACHE_DIR/kafka-$KAFKA_VERSION"
  local libs="$home/libs" marker="$home/.complete"
  if [ ! -f "$marker" ] || [ ! -d "$libs" ]; then
    command -v mvn >/dev/null 2>&1 || die "mvn not found (apt-get install maven)"
    mkdir -p "$home"
    # Another checkout may be downloading into the same cache: wait for it, then use its result.
    exec 9>"$home/.lock"
    flock 9
    if [ -f "$marker" ] && [ -d "$libs" ]; then
      exec 9>&-
      echo "$libs" >"$TOOLS/kafka-libs-path"
      return 0
    fi
    rm -rf "$libs" "$libs.partial" "$marker"
    local work log="$home/maven.log"
    work="$(mktemp -d)"
    cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.kafka-ambassador</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
      <exclusions>
        <!-- only needed by the Connect tools; TopicCommand does without it -->
        <exclusion>
          <groupId>org.apache.kafka</groupId>
          <artifactId>connect-runtime</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
    if ! (cd "$work" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$libs.partial") >"$log" 2>&1; then
      rm -rf "$work" "$libs.partial"
      die_with_log "$log" "maven download of kafka $KAFKA_VERSION failed"
    fi
    rm -rf "$work"
    [ -f "$libs.partial/kafka_2.13-$KAFKA_VERSION.jar" ] || die_with_log "$log" "kafka_2.13-$KAFKA_VERSION.jar missing after download"
    mv "$libs.partial" "$libs"
    touch "$marker"
    exec 9>&-
  fi
  echo "$libs" >"$TOOLS/kafka-libs-path"
}

cache_npm_dependencies() {
  local deno log="$TOOLS/deno-install.log"
  deno="$(cat "$TOOLS/deno-path")"
  (cd "$ROOT" && "$deno" install --quiet) >"$log" 2>&1 || die_with_log "$log" "deno install failed"
}

# ---- gRPC hostile-peer test tools (tests/grpc_h2_*_test.ts, tests/grpc_grpcurl_test.ts) ----------------------
# python3-h2 (with hpack and hyperframe) for the raw HTTP/2 peers in tests/h2/, and h2spec and grpcurl built
# with `go install` into .tools/bin. Each is skipped when already there.
H2SPEC_MODULE=github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible
GRPCURL_MODULE=github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3

install_grpc_test_tools() {
  if ! /usr/bin/python3 -c "import h2, hpack, hyperframe" >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || die "missing Debian package python3-h2 (run as root or: sudo apt-get install python3-h2)"
    local log="$TOOLS/apt-h2.log"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-h2; } \
      >"$log" 2>&1 || die_with_log "$log" "apt-get install python3-h2 failed"
  fi
  local tool module
  for tool in h2spec grpcurl; do
    [ -x "$TOOLS/bin/$tool" ] && continue
    command -v go >/dev/null 2>&1 || die "go is needed to build $tool (apt-get install golang-go)"
    module="$H2SPEC_MODULE"
    [ "$tool" = grpcurl ] && module="$GRPCURL_MODULE"
    mkdir -p "$TOOLS/bin"
    local log="$TOOLS/go-install-$tool.log"
    GOBIN="$TOOLS/bin" go install "$module" >"$log" 2>&1 || die_with_log "$log" "go install $module failed"
  done
}
# ---- end of gRPC hostile-peer test tools ---------------------------------------------------------------------

# ---- schemathesis (tests/schemathesis_test.ts) ---------------------------------------------------------------
# Pinned, in a venv under .tools: Debian's Python refuses pip installs outside one. Skipped when already there.
SCHEMATHESIS_VERSION=4.32.5

install_schemathesis() {
  local venv="$TOOLS/schemathesis-venv"
  if [ -x "$venv/bin/st" ] && [ "$("$venv/bin/st" --version 2>/dev/null | awk '{print $3}')" = "$SCHEMATHESIS_VERSION" ]; then
    return 0
  fi
  if ! /usr/bin/python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || die "missing Debian package python3-venv (run as root or: sudo apt-get install python3-venv)"
    local apt_log="$TOOLS/apt-venv.log"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv; } \
      >"$apt_log" 2>&1 || die_with_log "$apt_log" "apt-get install python3-venv failed"
  fi
  local log="$TOOLS/pip-schemathesis.log"
  rm -rf "$venv"
  { /usr/bin/python3 -m venv "$venv" && "$venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"; } \
    >"$log" 2>&1 || die_with_log "$log" "pip install schemathesis==$SCHEMATHESIS_VERSION failed"
}
# ---- end of schemathesis -------------------------------------------------------------------------------------

# ---- Python grpcio (tests/grpc_python_test.ts) ---------------------------------------------------------------
# gRPC's C core as a client we did not write, pinned, in a venv under .tools. Skipped when already there.
GRPCIO_VERSION=1.76.0

install_python_grpc() {
  local venv="$TOOLS/grpcio-venv"
  if [ -x "$venv/bin/python" ] &&
    [ "$("$venv/bin/python" -c 'import grpc, grpc_tools, grpc_health; print(grpc.__version__)' 2>/dev/null)" = "$GRPCIO_VERSION" ]; then
    return 0
  fi
  local log="$TOOLS/pip-grpcio.log"
  rm -rf "$venv"
  { /usr/bin/python3 -m venv "$venv" && "$venv/bin/pip" install --quiet "grpcio==$GRPCIO_VERSION" \
    "grpcio-tools==$GRPCIO_VERSION" "grpcio-health-checking==$GRPCIO_VERSION"; } \
    >"$log" 2>&1 || die_with_log "$log" "pip install grpcio==$GRPCIO_VERSION failed"
}
# ---- end of Python grpcio ------------------------------------------------------------------------------------

mkdir -p "$TOOLS"
install_debian_packages
bash "$ROOT/scripts/librdkafka.sh"
install_deno
[ "$RUNTIME_ONLY" = true ] || install_kafka_libs
[ "$RUNTIME_ONLY" = true ] || install_grpc_test_tools
[ "$RUNTIME_ONLY" = true ] || install_schemathesis
[ "$RUNTIME_ONLY" = true ] || install_python_grpc
cache_npm_dependencies
