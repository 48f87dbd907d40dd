# The service as one compiled binary on gcr.io/distroless/cc-debian12 (no shell, non-root).
# Build stage: Deno comes from the npm package `deno`, at the version pinned in scripts/setup.sh; librdkafka is
# built from source at the version pinned in scripts/librdkafka.sh and goes next to the binary, where the binary
# looks for it; `deno compile` (scripts/compile.sh) fetches its runtime (denort) here, and scripts/rootfs.sh
# extracts exactly the libraries librdkafka links from the Debian 12 packages in deploy/runtime-packages.txt.
# Without Docker, tests/rootfs_test.ts proves this file set: docs/deploy.md.
FROM node:22-bookworm-slim AS build
WORKDIR /src
COPY scripts/librdkafka.sh scripts/librdkafka.sh
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(bash scripts/librdkafka.sh --deps) \
 && bash scripts/librdkafka.sh
COPY scripts/setup.sh scripts/setup.sh
RUN npm install --prefix /opt/deno --no-audit --no-fund --loglevel=error \
      "deno@$(sed -n 's/^DENO_VERSION=//p' scripts/setup.sh)" \
 && ln -s "$(ls /opt/deno/node_modules/@deno/*/deno | head -n 1)" /usr/local/bin/deno \
 && deno --version
COPY deno.json deno.lock ./
RUN deno install
COPY deploy/ deploy/
COPY scripts/ scripts/
COPY src/ src/
COPY proto/ proto/
# The layer first: rootfs.sh --layer keeps nothing but shared libraries in its directory.
RUN bash scripts/rootfs.sh --layer /image \
 && bash scripts/compile.sh /image/kafka-ambassador \
 && cp "$(cat .tools/librdkafka-path)" /image/librdkafka.so.1 \
 && mkdir /wal

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /image/ /
COPY config/default.yaml /etc/kafka-ambassador/config.yaml
# The default config keeps its WAL under ./data/wal, relative to this directory: mount a volume here.
COPY --from=build --chown=65532:65532 /wal /var/lib/kafka-ambassador
WORKDIR /var/lib/kafka-ambassador
VOLUME /var/lib/kafka-ambassador
USER 65532:65532
EXPOSE 18080 18282 28080
ENTRYPOINT ["/kafka-ambassador"]
CMD ["-config", "/etc/kafka-ambassador/config.yaml"]
