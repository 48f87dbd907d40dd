/** kafka-ambassador: the command line, the wiring of every part, and the signals. */
import { X509Certificate } from "node:crypto";
import { type Config, ConfigError, loadConfig } from "./config.ts";
import { checkKafkaConfig, KafkaError, KafkaProducer, librdkafkaVersion } from "./kafka/producer.ts";
import { log } from "./log.ts";
import * as metrics from "./metrics.ts";
import { Breaker, type BreakerState } from "./producer/breaker.ts";
import { Facade } from "./producer/facade.ts";
import { RateLimiter } from "./producer/rate_limiter.ts";
import { startGrpcServer } from "./server/grpc.ts";
import { startHttpServer } from "./server/http.ts";
import { startMonitoringServer } from "./server/monitoring.ts";
import { Replayer } from "./wal/replay.ts";
import { openWal, type Wal } from "./wal/wal.ts";

/** The product version, printed by --version. */
export const VERSION = "0.1.0";

const USAGE = `usage: kafka-ambassador -config PATH [--check-config]
       kafka-ambassador --version`;

/** librdkafka error codes the breaker listens to. */
const ERR_ALL_BROKERS_DOWN = -187;
const STATE_GAUGE: Record<BreakerState, number> = { closed: 0, half: 0.5, open: 1 };
/** At shutdown, how long listeners may take to finish open requests once the producer is closed, at least. */
const LISTENER_GRACE_MS = 2_000;

interface Args {
  configPath?: string;
  checkOnly: boolean;
  version: boolean;
}

/** Parses Go-style (`-config x`) and GNU-style (`--config=x`) flags. */
export function parseArgs(argv: string[]): Args {
  const args: Args = { checkOnly: false, version: false };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].replace(/^--?/, "").split(/=(.*)/s, 2);
    switch (flag) {
      case "config":
        args.configPath = inline ?? argv[++i];
        if (!args.configPath) throw new ConfigError("flag -config needs a path");
        break;
      case "check-config":
        args.checkOnly = true;
        break;
      case "version":
        args.version = true;
        break;
      default:
        throw new ConfigError(`unknown flag ${argv[i]}\n${USAGE}`);
    }
  }
  return args;
}

async function main(): Promise<number> {
  let args: Args;
  let config: Config;
  try {
    args = parseArgs(Deno.args);
    if (args.version) {
      console.log(`kafka-ambassador ${VERSION} (librdkafka ${librdkafkaVersion()})`);
      return 0;
    }
    if (!args.configPath) throw new ConfigError(`no config file given\n${USAGE}`);
    config = await loadConfig(args.configPath, Deno.env.toObject());
    const kafkaProblem = checkKafkaConfig(config.kafka);
    if (kafkaProblem) throw new ConfigError(`config: ${kafkaProblem}`);
    if (!config.kafka["bootstrap.servers"]?.trim()) {
      throw new ConfigError(
        "config: kafka.brokers: no broker given (set kafka.brokers or kafka.bootstrap.servers)",
      );
    }
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    log("error", err.message);
    return 2;
  }
  if (args.checkOnly) {
    console.log(`config ok: ${args.configPath}`);
    return 0;
  }
  try {
    await run(config);
  } catch (err) {
    // Start-up failures (a port in use, an unreadable key file, a WAL directory we may not write) end here.
    log("error", "kafka-ambassador cannot run", { error: (err as Error).message });
    return 1;
  }
  return 0;
}

/** Starts every part from `config` and serves until SIGTERM or SIGINT. */
async function run(config: Config): Promise<void> {
  const version = librdkafkaVersion();
  metrics.librdkafkaVersion.set({ version }, 1);
  exportCertificateExpiry(config.kafka);

  const wal = await openConfiguredWal(config);
  let replayer: Replayer | null = null;
  const breaker = new Breaker({
    fails: config.producer.cb.fails,
    requests: config.producer.cb.requests,
    timeoutMs: config.producer.cb.timeoutMs,
    intervalMs: config.producer.cb.intervalMs,
    onChange: (from, to, reason) => {
      log(to === "open" ? "warn" : "info", "circuit breaker state changed", { from, to, reason });
      metrics.cbStateChanges.inc({ name: "kafka", state: to });
      metrics.cbCurrentState.set(STATE_GAUGE[to]);
      if (to !== "open") replayer?.kick();
    },
  });
  metrics.cbCurrentState.set(0);

  let producerSeq = 0;
  const newProducer = (): KafkaProducer => {
    const id = `producer-${++producerSeq}`;
    const producer = KafkaProducer.open({
      id,
      config: config.kafka,
      onError: (err: KafkaError) => {
        if (err.code === ERR_ALL_BROKERS_DOWN) breaker.trip("all brokers down");
      },
    });
    metrics.activeProducer.set({ producer_id: id }, 1);
    metrics.lastProducerStart.set(Date.now() / 1000);
    return producer;
  };

  const facade = new Facade({ config, wal, breaker, producer: newProducer() });
  if (wal) {
    replayer = new Replayer({
      wal,
      gate: breaker,
      limiter: new RateLimiter(config.producer.resend.rateLimit),
      send: (record) => facade.replay(record.id, record),
      periodMs: config.producer.resend.periodMs,
    });
    replayer.start();
  }

  const { http, grpc, monitoring } = config.server;
  const httpServer = http.listen ? startHttpServer({ listen: http.listen, facade }) : null;
  const grpcServer = grpc.listen
    ? await startGrpcServer({ listen: grpc.listen, facade, maxRequestSize: grpc.maxRequestSize })
    : null;
  const monitoringServer = monitoring.listen
    ? startMonitoringServer({ listen: monitoring.listen, readiness: () => facade.readiness() })
    : null;
  log("info", "kafka-ambassador started", {
    version: VERSION,
    http: http.listen ?? null,
    grpc: grpc.listen ?? null,
    monitoring: monitoring.listen ?? null,
    wal: config.producer.wal.mode === "disable"
      ? "disabled"
      : config.producer.wal.inMemory
      ? "memory"
      : config.producer.wal.path,
  });

  /** Replaced producers still draining, with the promise of their drain. */
  const drains = new Map<KafkaProducer, Promise<void>>();
  Deno.addSignalListener("SIGHUP", () => {
    let next: KafkaProducer;
    try {
      next = newProducer();
    } catch (err) {
      // e.g. a rotated certificate that cannot be read: keep serving with the producer we have.
      log("error", "SIGHUP: cannot start a new kafka producer; keeping the current one", {
        error: (err as Error).message,
      });
      return;
    }
    exportCertificateExpiry(config.kafka);
    const old = facade.swapProducer(next);
    metrics.activeProducer.set({ producer_id: old.id }, 0);
    log("info", "kafka producer replaced; the old one drains", {
      old: old.id,
      new: next.id,
      timeout_ms: config.producer.oldProducerKillTimeoutMs,
    });
    const drain = drainProducer(old, config.producer.oldProducerKillTimeoutMs);
    drains.set(old, drain);
    drain.finally(() => drains.delete(old));
  });

  const { promise: stopSignal, resolve: stop } = Promise.withResolvers<string>();
  let stopping = false;
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => {
      if (stopping) {
        log("warn", "second signal: exiting at once", { signal });
        Deno.exit(1);
      }
      stopping = true;
      stop(signal);
    });
  }
  const signal = await stopSignal;

  // Everything below shares one deadline: Kafka gets what is left of it, every later step is bounded too.
  const deadline = Date.now() + config.producer.shutdownTimeoutMs;
  const remaining = () => Math.max(0, deadline - Date.now());
  log("info", "shutting down", { signal, flush_timeout_ms: config.producer.shutdownTimeoutMs });
  facade.setDraining(true);
  httpServer?.setDraining(true);
  grpcServer?.setDraining(true);
  // Replay starts nothing new; what it has in flight is delivered by the flush or purged by the close below.
  const replayStopped = replayer?.stop();
  // With the breaker open nothing would be delivered: spool at once instead of waiting out the deadline.
  const delivered = await facade.producer.flush(
    breaker.state === "open" ? Math.min(remaining(), 1000) : remaining(),
  );
  await facade.producer.close(0);
  // Replaced producers still draining are cut short the same way: what they hold goes to the WAL.
  await Promise.allSettled([...drains.keys()].map((old) => old.close(0)));
  await Promise.allSettled([...drains.values(), replayStopped]);
  await facade.settle();
  const grace = Math.max(remaining(), LISTENER_GRACE_MS);
  await bounded(
    Promise.allSettled([httpServer?.shutdown(), grpcServer?.shutdown()]),
    grace,
    "listeners still had requests open",
  );
  const left = wal?.stats().records ?? 0;
  await wal?.close();
  breaker.close();
  await bounded(monitoringServer?.shutdown(), LISTENER_GRACE_MS, "monitoring still had requests open");
  log("info", "stopped", { all_delivered: delivered, wal_records: left });
}

async function openConfiguredWal(config: Config): Promise<Wal | null> {
  const { mode, inMemory, path, maxBytes } = config.producer.wal;
  if (mode === "disable") return null;
  const wal = await openWal({ path, inMemory, maxBytes });
  const stats = wal.stats();
  log("info", "wal opened", {
    path: inMemory ? ":memory:" : path,
    records: stats.records,
    bytes: stats.bytes,
  });
  return wal;
}

/** Waits for `work` at most `ms`; past that, logs `what` and goes on (the process is about to exit). */
async function bounded(work: Promise<unknown> | undefined, ms: number, what: string): Promise<void> {
  if (work === undefined) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(true), ms));
  const cut = await Promise.race([work.then(() => false, () => false), late]);
  clearTimeout(timer);
  if (cut) log("warn", `shutdown: ${what} after ${ms} ms; going on`);
}

/** Lets a replaced producer deliver what it holds, then closes it; what it could not deliver is spooled. */
async function drainProducer(old: KafkaProducer, timeoutMs: number): Promise<void> {
  const delivered = await old.flush(timeoutMs);
  await old.close(0);
  metrics.activeProducer.remove({ producer_id: old.id });
  metrics.inTransit.remove({ producer_id: old.id });
  log("info", "old kafka producer closed", { producer_id: old.id, all_delivered: delivered });
}

function exportCertificateExpiry(kafka: Record<string, string>): void {
  const gauges = [
    ["ssl.certificate.location", metrics.certExpiration],
    ["ssl.ca.location", metrics.caExpiration],
  ] as const;
  for (const [key, gauge] of gauges) {
    const path = kafka[key];
    if (!path) continue;
    try {
      const cert = new X509Certificate(Deno.readFileSync(path));
      gauge.set(Date.parse(cert.validTo) / 1000);
    } catch (err) {
      log("warn", "cannot read certificate expiry", { key, path, error: (err as Error).message });
    }
  }
}

if (import.meta.main) Deno.exit(await main());
