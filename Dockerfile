# Builds the single-binary service. Deno comes from the npm package `deno`, at the version pinned in
# scripts/setup.sh; `deno compile` fetches its runtime (denort) during the build.
FROM node:22-bookworm-slim AS build
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN npm install --prefix /opt/deno --no-audit --no-fund --loglevel=error \
      "deno@$(sed -n 's/^DENO_VERSION=//p' scripts/setup.sh)" \
 && ln -s "$(ls /opt/deno/node_modules/@deno/*/deno | head -n 1)" /usr/local/bin/deno \
 && deno --version
COPY deno.json deno.lock ./
RUN deno install
COPY src/ src/
COPY proto/ proto/
RUN deno compile --allow-all --include proto/ --output /kafka-ambassador src/main.ts

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends librdkafka1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/kafka-ambassador --create-home kafka-ambassador \
 && chmod 0700 /var/lib/kafka-ambassador
COPY --from=build /kafka-ambassador /kafka-ambassador
COPY config/default.yaml /etc/kafka-ambassador/config.yaml
# The default config keeps its WAL under ./data/wal, relative to this directory.
WORKDIR /var/lib/kafka-ambassador
USER kafka-ambassador
VOLUME /var/lib/kafka-ambassador
EXPOSE 18080 18282 28080
ENTRYPOINT ["/kafka-ambassador"]
CMD ["-config", "/etc/kafka-ambassador/config.yaml"]
