/**
 * The deployment files, checked offline against the config they carry, read with the service's own parser:
 * the Kubernetes manifests (deploy/kubernetes), compose.yaml and the Dockerfile. Ports, probes, grace periods,
 * security settings and the WAL's volume must agree with that config. Plus the `--healthcheck` flag the compose
 * health check runs, against a running service.
 */
import assert from "node:assert/strict";
import { parse, parseAllDocuments, stringify } from "yaml";
import { type Config, parseConfig } from "../src/config.ts";
import { parseDuration } from "../src/duration.ts";
import { listenAddress } from "../src/listen_address.ts";
import { runCommand } from "./kafka/command.ts";
import { serviceFlags } from "./support/bundle.ts";
import { freePort, startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { makeCa, signedPair } from "./support/tls.ts";
import { listening } from "./support/wait.ts";

const REPO = new URL("../", import.meta.url).pathname;
/** The permissions the service ships with: the probe runs in the same binary, with nothing more. */
const SHIPPED = await serviceFlags();
const K8S = `${REPO}deploy/kubernetes/`;
const DENO = Deno.env.get("KA_DENO") ?? Deno.execPath();
/** Past producer.shutdown_timeout, stop() may take up to 5 s + 2 s + 2 s more (docs/architecture.md). */
const STOP_OVERRUN_S = 9;
/** The highest peak RSS measured under load: HTTP batches while Kafka lagged (bench/README.md, Results). */
const PEAK_RSS_BYTES = 626e6;

// deno-lint-ignore no-explicit-any
type Doc = any;

/** The port of each listener the config turns on, by the name the manifests give it. */
function listenerPorts(config: Config): Record<string, number> {
  const ports: Record<string, number> = {};
  for (const name of ["http", "grpc", "monitoring"] as const) {
    const listen = config.server[name].listen;
    if (listen) ports[name] = listenAddress(listen).port;
  }
  return ports;
}

/** Kubernetes quantities: "512Mi", "1G", "500m", "2". */
function quantity(q: string | number): number {
  const m = /^([0-9.]+)(m|Ki|Mi|Gi|k|M|G)?$/.exec(String(q));
  assert.ok(m, `bad quantity ${q}`);
  const unit: Record<string, number> = {
    m: 1e-3,
    Ki: 2 ** 10,
    Mi: 2 ** 20,
    Gi: 2 ** 30,
    k: 1e3,
    M: 1e6,
    G: 1e9,
  };
  return Number(m[1]) * (m[2] ? unit[m[2]] : 1);
}

function isUnder(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith("/") ? dir : `${dir}/`);
}

async function kubernetesDocs(): Promise<Doc[]> {
  const kustomization = parse(await Deno.readTextFile(`${K8S}kustomization.yaml`));
  const listed: string[] = kustomization.resources;
  const present = [...Deno.readDirSync(K8S)].map((e) => e.name).filter((n) => n !== "kustomization.yaml");
  assert.deepEqual([...present].sort(), [...listed].sort(), "every manifest is listed in kustomization.yaml");
  const docs: Doc[] = [];
  for (const file of listed) {
    for (const doc of parseAllDocuments(await Deno.readTextFile(`${K8S}${file}`))) {
      assert.deepEqual(doc.errors, [], `${file}: ${doc.errors}`);
      docs.push(doc.toJS());
    }
  }
  return docs;
}

function only(docs: Doc[], kind: string): Doc {
  const found = docs.filter((d) => d.kind === kind);
  assert.equal(found.length, 1, `one ${kind}, found ${found.length}`);
  return found[0];
}

function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

Deno.test("kubernetes: the StatefulSet, Services, PDB and ServiceMonitor agree with the ConfigMap's config", async () => {
  const docs = await kubernetesDocs();
  for (const d of docs) assert.ok(d.apiVersion && d.kind && d.metadata?.name, JSON.stringify(d).slice(0, 80));
  const configMap = only(docs, "ConfigMap");
  const config = parseConfig(configMap.data["config.yaml"], {});
  const ports = listenerPorts(config);
  assert.deepEqual(Object.keys(ports).sort(), ["grpc", "http", "monitoring"]);

  const sts = only(docs, "StatefulSet");
  const pod = sts.spec.template.spec;
  const podLabels = sts.spec.template.metadata.labels;
  assert.ok(selects(sts.spec.selector.matchLabels, podLabels));
  assert.equal(pod.containers.length, 1);
  const [c] = pod.containers;
  const containerPorts = Object.fromEntries(c.ports.map((p: Doc) => [p.name, p.containerPort]));
  assert.deepEqual(containerPorts, ports);

  const probePort = (probe: Doc) =>
    typeof probe.httpGet.port === "number" ? probe.httpGet.port : containerPorts[probe.httpGet.port];
  assert.equal(c.readinessProbe.httpGet.path, "/readyz");
  assert.equal(c.livenessProbe.httpGet.path, "/healthz");
  for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe]) {
    assert.equal(probePort(probe), ports.monitoring);
  }

  const preStopS = c.lifecycle.preStop.sleep.seconds;
  assert.ok(preStopS > 0 && preStopS <= 10, `preStop sleep ${preStopS} s`);
  assert.ok(
    pod.terminationGracePeriodSeconds > preStopS + config.producer.shutdownTimeoutMs / 1000 + STOP_OVERRUN_S,
    `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} vs shutdown_timeout ` +
      `${config.producer.shutdownTimeoutMs} ms`,
  );

  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.ok(pod.securityContext.runAsUser > 0);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.equal(c.securityContext.allowPrivilegeEscalation, false);

  const { requests, limits } = c.resources;
  for (const r of ["cpu", "memory"]) assert.ok(quantity(requests[r]) <= quantity(limits[r]), r);
  assert.ok(
    quantity(limits.memory) > PEAK_RSS_BYTES,
    `memory limit ${limits.memory} under the measured peak`,
  );

  // The config file is the ConfigMap, where the container's -config points.
  const configPath = c.args[c.args.indexOf("-config") + 1];
  const configMount = c.volumeMounts.find((m: Doc) => isUnder(configPath, m.mountPath));
  const configVolume = pod.volumes.find((v: Doc) => v.name === configMount.name);
  assert.equal(configVolume.configMap.name, configMap.metadata.name);
  assert.equal(configPath, `${configMount.mountPath}/config.yaml`);

  // The WAL is on the pod's own claim, and is the only writable place besides /tmp.
  assert.equal(config.producer.wal.mode, "fallback");
  assert.ok(config.producer.wal.path.startsWith("/"), "an absolute WAL path");
  const walMount = c.volumeMounts.find((m: Doc) => isUnder(config.producer.wal.path, m.mountPath));
  assert.ok(walMount, `no volume holds ${config.producer.wal.path}`);
  const claim = sts.spec.volumeClaimTemplates.find((t: Doc) => t.metadata.name === walMount.name);
  assert.ok(claim, `the WAL mount ${walMount.name} is not a volumeClaimTemplate`);
  assert.ok(
    quantity(claim.spec.resources.requests.storage) > config.producer.wal.maxBytes,
    "claim under max_bytes",
  );
  assert.ok(pod.securityContext.fsGroup > 0, "fsGroup makes the claim writable by the service's user");

  const services = docs.filter((d) => d.kind === "Service");
  const headless = services.find((s) => s.metadata.name === sts.spec.serviceName);
  assert.equal(headless?.spec.clusterIP, "None");
  for (const s of services) {
    assert.ok(selects(s.spec.selector, podLabels), `${s.metadata.name} selects the pods`);
    for (const p of s.spec.ports) {
      assert.ok(p.targetPort in containerPorts, `${s.metadata.name} ${p.targetPort}`);
    }
  }

  const pdb = only(docs, "PodDisruptionBudget");
  assert.ok(selects(pdb.spec.selector.matchLabels, podLabels));

  const monitor = only(docs, "ServiceMonitor");
  const [endpoint] = monitor.spec.endpoints;
  assert.equal(endpoint.path, "/metrics");
  const scraped = services.filter((s) =>
    selects(monitor.spec.selector.matchLabels, s.metadata.labels) &&
    s.spec.ports.some((p: Doc) => p.name === endpoint.port && p.targetPort === "monitoring")
  );
  assert.equal(scraped.length, 1, "the pods are scraped once, on the monitoring port");
});

Deno.test("compose: ports, grace period, health checks and the WAL volume agree with the config it mounts", async () => {
  const compose = parse(await Deno.readTextFile(`${REPO}compose.yaml`));
  const kafka = compose.services.kafka;
  assert.match(kafka.image, /^apache\/kafka:4\./);
  assert.equal(kafka.environment.KAFKA_PROCESS_ROLES, "broker,controller");
  assert.ok(kafka.healthcheck.test);

  const svc = compose.services["kafka-ambassador"];
  assert.equal(svc.depends_on.kafka.condition, "service_healthy");
  const volumes: string[][] = svc.volumes.map((v: string) => v.split(":"));
  const [configFile, configPath] = volumes.find(([, inside]) =>
    inside === "/etc/kafka-ambassador/config.yaml"
  )!;
  const config = parseConfig(await Deno.readTextFile(`${REPO}${configFile}`), svc.environment);
  assert.equal(config.kafka["bootstrap.servers"], "kafka:9092");

  const ports = listenerPorts(config);
  const published = svc.ports.map((p: string) => Number(p.split(":").at(-1)));
  assert.deepEqual([...published].sort(), Object.values(ports).sort());

  const grace = parseDuration(svc.stop_grace_period) / 1000;
  assert.ok(grace > config.producer.shutdownTimeoutMs / 1000 + STOP_OVERRUN_S, `stop_grace_period ${grace}s`);

  const check: string[] = svc.healthcheck.test;
  assert.deepEqual(check.slice(0, 2), ["CMD", "/kafka-ambassador"]);
  assert.deepEqual(check.slice(2), ["-config", configPath, "--healthcheck"]);

  // The WAL's relative path resolves against the image's WORKDIR, which is the named volume.
  const dockerfile = await Deno.readTextFile(`${REPO}Dockerfile`);
  const workdir = [...dockerfile.matchAll(/^WORKDIR (\S+)$/gm)].at(-1)![1];
  const walDir = new URL(config.producer.wal.path, `file://${workdir}/`).pathname;
  const [walVolume, walMount] = volumes.find(([, inside]) => isUnder(walDir, inside))!;
  assert.ok(walVolume in compose.volumes, `the WAL (${walDir}) is on the named volume ${walVolume}`);
  assert.equal(walMount, workdir);
});

Deno.test("Dockerfile: distroless, non-root, exposes the default config's ports", async () => {
  const dockerfile = await Deno.readTextFile(`${REPO}Dockerfile`);
  const stages = [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]);
  assert.equal(stages.at(-1), "gcr.io/distroless/cc-debian12:nonroot");
  const final = dockerfile.slice(dockerfile.lastIndexOf("\nFROM "));
  assert.match(final, /^USER 65532:65532$/m);
  assert.match(final, /^COPY config\/default\.yaml \/etc\/kafka-ambassador\/config\.yaml$/m);
  const config = parseConfig(await Deno.readTextFile(`${REPO}config/default.yaml`), {});
  const exposed = /^EXPOSE (.+)$/m.exec(final)![1].split(/\s+/).map(Number);
  assert.deepEqual(exposed.sort(), Object.values(listenerPorts(config)).sort());
});

Deno.test({
  name: "--healthcheck exits 0 while the service answers /healthz, 1 with one line once it is gone, never 2",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using dir = await tempDir("ka-healthcheck-");
    await using svc = await startService({
      producer: { wal: { mode: "disable" } },
      kafka: { brokers: ["127.0.0.1:9"] },
    }, { dir: dir.path });
    const probe = (configPath = svc.configPath, env: Record<string, string> = {}) =>
      runCommand(DENO, [
        "run",
        ...SHIPPED,
        `${REPO}src/main.ts`,
        "-config",
        configPath,
        "--healthcheck",
      ], {
        timeoutMs: 30_000,
        env,
      });
    const up = await probe();
    assert.equal(up.code, 0, up.stderr);
    // A proxy in the environment is not asked about loopback.
    const proxied = await probe(svc.configPath, { HTTP_PROXY: `http://127.0.0.1:${freePort()}` });
    assert.equal(proxied.code, 0, proxied.stderr);
    // Files the health check does not need are not read: a tokens file caught empty while it is rewritten.
    const config = parse(await Deno.readTextFile(svc.configPath)) as Record<string, unknown>;
    await Deno.writeTextFile(`${dir.path}/tokens`, "");
    const withTokens = `${dir.path}/tokens.yaml`;
    await Deno.writeTextFile(
      withTokens,
      stringify({ ...config, auth: { tokens_file: `${dir.path}/tokens` } }),
    );
    const tokens = await probe(withTokens);
    assert.equal(tokens.code, 0, tokens.stderr);
    // What it does need, missing: unhealthy (1), not 2, which Docker reserves.
    const badTls = `${dir.path}/tls.yaml`;
    const server = config.server as Record<string, Record<string, unknown>>;
    server.monitoring.tls = { cert_file: `${dir.path}/none.crt`, key_file: `${dir.path}/none.key` };
    await Deno.writeTextFile(badTls, stringify(config));
    const tls = await probe(badTls);
    assert.equal(tls.code, 1, tls.stderr);
    assert.match(tls.stderr, /healthcheck: config: server\.monitoring\.tls\.cert_file: /);
    assert.equal(await svc.stop(), 0);
    const down = await probe();
    assert.equal(down.code, 1);
    assert.equal(down.stderr.trim().split("\n").length, 1, down.stderr);
    assert.match(down.stderr, /healthcheck: http:\/\/127\.0\.0\.1:\d+\/healthz: /);
  },
});

/** Runs `--healthcheck` against the config at `configPath`. */
function healthcheck(configPath: string) {
  return runCommand(DENO, [
    "run",
    ...SHIPPED,
    `${REPO}src/main.ts`,
    "-config",
    configPath,
    "--healthcheck",
  ], {
    timeoutMs: 30_000,
  });
}

Deno.test({
  name:
    "--healthcheck over TLS and mTLS: 0 while the service answers, 1 with one line when its CA refuses it",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using dir = await tempDir("ka-healthcheck-");
    const ca = await makeCa(dir.path);
    const other = await makeCa(dir.path, "other-ca");
    // Certificates for both ends, as many PKIs issue them: the listener may present its own to itself.
    const pair = await signedPair({
      dir: dir.path,
      file: "monitoring",
      cn: "ka.example",
      extensions: "subjectAltName=DNS:ka.example\nextendedKeyUsage=serverAuth,clientAuth\n",
      ca,
    });
    const port = freePort();
    const run = async (clientCa: string, expectUp: boolean) => {
      const configPath = `${dir.path}/config-${clientCa === "" ? "tls" : "mtls"}-${expectUp}.yaml`;
      await Deno.writeTextFile(
        configPath,
        stringify({
          kafka: { brokers: ["127.0.0.1:9"] },
          producer: { wal: { mode: "disable" } },
          server: {
            http: { listen: `127.0.0.1:${freePort()}` },
            grpc: { listen: `127.0.0.1:${freePort()}` },
            monitoring: {
              listen: `0.0.0.0:${port}`,
              tls: { cert_file: pair.cert, key_file: pair.key, client_ca_file: clientCa },
            },
          },
        }),
      );
      const child = new Deno.Command(DENO, {
        args: ["run", ...SHIPPED, `${REPO}src/main.ts`, "-config", configPath],
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        await listening(port);
        if (expectUp) {
          // curl, an independent client, sees /healthz answer over TLS too.
          const curl = ["-sk", "-o", "/dev/null", "-w", "%{http_code}", `https://127.0.0.1:${port}/healthz`];
          if (clientCa !== "") curl.push("--cert", pair.cert, "--key", pair.key);
          const out = await runCommand("curl", curl, { timeoutMs: 5_000 });
          assert.equal(new TextDecoder().decode(out.stdout), "200", out.stderr);
        }
        const probe = await healthcheck(configPath);
        if (expectUp) assert.equal(probe.code, 0, probe.stderr);
        else {
          assert.equal(probe.code, 1);
          assert.equal(probe.stderr.trim().split("\n").length, 1, probe.stderr);
          assert.match(probe.stderr, /healthcheck: https:\/\/127\.0\.0\.1:\d+\/healthz: /);
        }
      } finally {
        child.kill("SIGTERM");
        await child.status;
      }
      if (expectUp) {
        const down = await healthcheck(configPath);
        assert.equal(down.code, 1, "once the service is gone");
      }
    };
    await run("", true);
    await run(ca.cert, true);
    // mTLS with a client CA that did not sign the listener's certificate: the probe is refused, and says so.
    await run(other.cert, false);
  },
});
