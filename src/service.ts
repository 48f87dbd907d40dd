/**
 * The service: every part built from a Config, started in order, and stopped in the reverse order within
 * `producer.shutdown_timeout`. main.ts adds only the command line and the signals.
 * @example
 * await using service = await startService(config);
 * console.log(service.addresses.http); // "127.0.0.1:18080"
 */
import { X509Certificate } from "node:crypto";
import { type Config, ConfigError, noWalOnDisk } from "./config.ts";
import { isAllBrokersDown } from "./kafka/errors.ts";
import { type KafkaError, KafkaProducer, librdkafkaVersion } from "./kafka/producer.ts";
import { scramVersionProblem } from "./kafka/scram_version.ts";
import { log, logRepeated } from "./log.ts";
import { startMallocTrim } from "./malloc_trim.ts";
import * as metrics from "./metrics.ts";
import { Breaker, type BreakerState } from "./producer/breaker.ts";
import { Facade } from "./producer/facade.ts";
import { KeyOrder, orderGroupOf } from "./producer/key_order.ts";
import { RateLimiter } from "./producer/rate_limiter.ts";
import { Replayer } from "./producer/replay.ts";
import { startGrpcServer } from "./server/grpc/server.ts";
import { startHttpServer } from "./server/http.ts";
import type { Listener } from "./server/listener.ts";
import { startMonitoringServer } from "./server/monitoring.ts";
import { loadSecurity } from "./server/security.ts";
import { VERSION } from "./version.ts";
import { lockWalDirectory, type WalLock } from "./wal/lock.ts";
import { openWal, type Wal } from "./wal/wal.ts";

/** A running service. Disposing of it stops it. */
export interface Service extends AsyncDisposable {
  /** Where each listener is bound ("host:port", the real port when the config said 0); absent when off. */
  readonly addresses: { http?: string; grpc?: string; monitoring?: string };
  /**
   * Reads the listeners' certificates and the tokens file again (docs/security.md), starts a new librdkafka
   * producer for new messages (rotated certificates are read again) and lets the old one drain for
   * `producer.old_producer_kill_timeout`. Returns false when a file or the new producer cannot be used; what
   * cannot be replaced is kept as it was.
   */
  reload(): boolean;
  /**
   * Stops accepting (503), flushes to Kafka for up to `producer.shutdown_timeout`, spools the rest to the WAL,
   * syncs it and closes every listener. Idempotent; `reason` is logged (e.g. the signal's name).
   */
  stop(reason?: string): Promise<StopSummary>;
}

/** How a stop ended. */
export interface StopSummary {
  /**
   * Every message handed to Kafka was reported before the producer closed: delivered, or failed and spooled (a
   * message still in flight was purged to the WAL instead).
   */
  allReported: boolean;
  /** Records left in the WAL for the next start. */
  walRecords: number;
}

const STATE_GAUGE: Record<BreakerState, number> = { closed: 0, half: 0.5, open: 1 };
/** At shutdown, how long listeners may take to finish open requests once the producer is closed, at least. */
const LISTENER_GRACE_MS = 2_000;
/**
 * A producer that raised a fatal error is replaced at once, but at most once per this long: a configuration that
 * is fatal every time must not start producers in a loop. Meanwhile the dead producer fails every message, and
 * those go to the WAL like any failed delivery.
 */
const FATAL_REPLACEMENT_INTERVAL_MS = 10_000;
/**
 * Test hook, off unless this environment variable is "1": SIGUSR2 then makes the producer taking new messages raise
 * a fabricated fatal librdkafka error (docs/delivery.md, "Fatal producer errors").
 */
const TEST_FATAL_ERROR_ENV = "KA_TEST_FATAL_ERROR_ON_SIGUSR2";

/**
 * Starts every part from `config`: WAL, breaker, producer, replay, then the listeners. When a part cannot start
 * (a port in use, a WAL directory that cannot be written), what was started is stopped again and the error says
 * which part failed.
 */
export async function startService(config: Config): Promise<Service> {
  const librdkafka = librdkafkaVersion();
  metrics.librdkafkaVersion.set({ version: librdkafka }, 1);
  const scramProblem = scramVersionProblem(librdkafka, config.kafka);
  if (scramProblem) log("warn", scramProblem);
  exportCertificateExpiry(config.kafka);
  /** What to undo, in start order, if a later part cannot start. */
  const started: Array<() => Promise<unknown> | unknown> = [];
  try {
    return await wire(config, started);
  } catch (err) {
    for (const undo of started.reverse()) await Promise.resolve().then(undo).catch(() => {});
    throw err;
  }
}

async function wire(config: Config, started: Array<() => Promise<unknown> | unknown>): Promise<Service> {
  // First: a certificate or tokens file that cannot be used stops the start before anything is opened.
  const security = loadSecurity(config);
  // Taken before the WAL is opened (recovery writes to it), held until it is closed.
  const walLock = await step("wal", () => lockConfiguredWal(config));
  if (walLock) started.push(() => walLock.release());
  const wal = await step("wal", () => openConfiguredWal(config));
  if (wal) started.push(() => wal.close());
  // Key order: the groups of the records recovered are known before the first new record is routed.
  const order = wal && config.producer.wal.preserveOrder === "key"
    ? new KeyOrder({ recovered: wal.recoveredTags() })
    : null;

  let replayer: Replayer | null = null;
  /** Set once it exists: neither the breaker nor the producer's errors come before the facade does. */
  const late: { facade?: Facade } = {};
  const idempotent = /^(true|t|1)$/i.test(config.kafka["enable.idempotence"]?.trim() ?? "");
  let confirming = false;
  /**
   * Asks whether a broker answers a metadata request within producer.cb.confirm_timeout (one question at a time),
   * after all brokers were reported down or the breaker opened. A single broker's connection closed and opened
   * again (an idle close, a reset, a load balancer's cut) is reported so too, and the new connection's handshakes
   * take round trips: a slow link's answer comes after seconds. One answers: a connection cut and made again, not
   * an outage; a breaker that report opened closes again, rather than sending everything to the WAL, and ack=kafka
   * to 503, for cb.timeout. None does:
   * - a half-open breaker opens again, so that its probes do not wait message.timeout.ms for a cluster still down
   *   (librdkafka 2.10 and later says all brokers down again every re-bootstrap round: acted on unconfirmed, it
   *   would keep the breaker open for up to cb.timeout after Kafka is back);
   * - what librdkafka holds unacknowledged fails now, to the WAL or to its client as 503, rather than after
   *   message.timeout.ms. Not when a broker answers: what librdkafka sent before the cut and queued again may be
   *   in Kafka. Never with enable.idempotence (key order turns it on): a purge would break the sequence that keeps
   *   it from duplicating and reordering.
   */
  const confirmDown = () => {
    const producer = late.facade?.producer;
    if (producer === undefined || confirming) return;
    confirming = true;
    producer.brokerAnswers(config.producer.cb.confirmTimeoutMs).then((answered) => {
      if (answered) {
        late.facade!.clusterDown = false;
        breaker.retract("a broker answered after all were reported down");
      } else {
        // The trip's onChange comes back here while this question is still the one asked: it adds none.
        if (breaker.state === "half") breaker.trip("all brokers down, and none answered");
        if (breaker.state === "open") {
          if (!idempotent) producer.purgeQueued();
          // A closing producer answers no too: that is no news about the brokers.
          if (stopping === null && late.facade?.producer === producer) {
            logRepeated(
              "no broker answered",
              "warn",
              "kafka: no broker answered within producer.cb.confirm_timeout",
              {
                confirm_timeout_ms: config.producer.cb.confirmTimeoutMs,
                queued_messages: idempotent ? "kept (enable.idempotence)" : "purged",
              },
            );
          }
        }
      }
    }, () => {}).finally(() => confirming = false);
  };
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
      else confirmDown();
      if (to === "closed" && late.facade) late.facade.clusterDown = false;
    },
  });
  metrics.cbCurrentState.set(0);
  started.push(() => breaker.close());

  const newProducer = (): KafkaProducer => {
    // Its producer_id is librdkafka's name for it (`rdkafka#producer-1`, `-2` after a replacement), as with the
    // Go service.
    const producer: KafkaProducer = KafkaProducer.open({
      config: config.kafka,
      onError: (err, fatal) => {
        // All brokers down opens a closed breaker at once; confirmDown closes it again, or acts on the outage.
        if (isAllBrokersDown(err)) {
          if (late.facade) late.facade.clusterDown = true;
          if (breaker.state === "closed") breaker.trip("all brokers down"); // confirms through onChange
          else if (breaker.state === "half") confirmDown();
        }
        if (fatal) replaceAfterFatal(producer.id, err);
      },
    });
    metrics.activeProducer.set({ producer_id: producer.id }, 1);
    metrics.lastProducerStart.set(Date.now() / 1000);
    return producer;
  };

  const firstProducer = (): KafkaProducer => {
    try {
      return newProducer();
    } catch (err) {
      // librdkafka refuses a producer for its config (a file it names that cannot be read): exit 2, as
      // --check-config says, rather than "cannot start".
      throw new ConfigError(`config: kafka: ${(err as Error).message}`);
    }
  };
  const facade = new Facade({
    config,
    wal,
    breaker,
    producer: await step("kafka producer", firstProducer),
    order,
  });
  started.push(() => facade.producer.close(0));
  late.facade = facade;

  /** Replaced producers still draining, with the promise of their drain. */
  const drains = new Map<KafkaProducer, Promise<void>>();
  let stopping: Promise<StopSummary> | null = null;

  /**
   * The one producer swap, for SIGHUP and after a fatal error: a new producer takes new messages, the old one
   * drains for up to `producer.old_producer_kill_timeout` and is closed; what it could not deliver is spooled like
   * any failed delivery. False when the new producer cannot start: the current one stays.
   */
  function replaceProducer(reason: "reload" | "fatal", cause?: KafkaError): boolean {
    let next: KafkaProducer;
    try {
      next = newProducer();
    } catch (err) {
      // e.g. a rotated certificate that cannot be read: keep serving with the producer we have.
      const after = reason === "reload" ? "SIGHUP" : "fatal kafka error";
      log("error", `${after}: cannot start a new kafka producer; keeping the current one`, {
        error: (err as Error).message,
      });
      return false;
    }
    const old = facade.swapProducer(next);
    metrics.activeProducer.set({ producer_id: old.id }, 0);
    metrics.producerReplaced.inc({ reason });
    const fatal = reason === "fatal";
    log(
      fatal ? "error" : "info",
      `kafka producer replaced${fatal ? " after a fatal error" : ""}; the old one drains`,
      {
        reason,
        old: old.id,
        new: next.id,
        timeout_ms: config.producer.oldProducerKillTimeoutMs,
        ...(cause && { error: cause.errName }),
      },
    );
    const drain = drainProducer(old, config.producer.oldProducerKillTimeoutMs);
    drains.set(old, drain);
    drain.finally(() => drains.delete(old));
    return true;
  }

  /** performance.now() of the last replacement after a fatal error, and the timer of one waiting its turn. */
  let lastFatalReplacement = -Infinity;
  let fatalTimer: ReturnType<typeof setTimeout> | undefined;
  /** A fatal error makes a producer useless: replace it, at most once per FATAL_REPLACEMENT_INTERVAL_MS. */
  function replaceAfterFatal(producerId: string, err: KafkaError): void {
    // A producer already replaced is draining anyway; a replacement already waiting will do.
    if (stopping !== null || facade.producer.id !== producerId || fatalTimer !== undefined) return;
    const wait = lastFatalReplacement + FATAL_REPLACEMENT_INTERVAL_MS - performance.now();
    if (wait > 0) {
      log("error", "kafka producer replacement postponed: at most one per interval after fatal errors", {
        producer_id: producerId,
        error: err.errName,
        interval_ms: FATAL_REPLACEMENT_INTERVAL_MS,
        wait_ms: Math.ceil(wait),
      });
      fatalTimer = setTimeout(() => {
        fatalTimer = undefined;
        replaceAfterFatal(producerId, err);
      }, wait);
      return;
    }
    lastFatalReplacement = performance.now();
    // A producer that cannot start now is tried again after the interval.
    if (!replaceProducer("fatal", err)) replaceAfterFatal(producerId, err);
  }
  const removeTestHook = installTestFatalErrorHook(() => facade.producer);
  started.push(() => {
    clearTimeout(fatalTimer);
    removeTestHook();
  });
  if (wal && config.producer.resend.periodMs <= 0) {
    log(
      "warn",
      "producer.resend.period is 0: records the WAL takes stay there until `wal replay` sends them",
      {
        wal_records: wal.stats().records,
      },
    );
  }
  if (wal) {
    const running = new Replayer({
      wal,
      gate: breaker,
      limiter: new RateLimiter(config.producer.resend.rateLimit),
      send: (record) => facade.replay(record.id, record),
      periodMs: config.producer.resend.periodMs,
      groupOf: order ? orderGroupOf : undefined,
    });
    replayer = running;
    running.start();
    started.push(() => running.stop());
  }
  const trim = startMallocTrim();
  started.push(() => trim.stop());

  // Each listener's start-up error names it and its address (`http listener 0.0.0.0:18080: address in use`).
  const { http, grpc, monitoring } = config.server;
  const { tls, gate } = security;
  if (http.listen === undefined && grpc.listen === undefined) {
    // Allowed (an instance that only replays its WAL), but more likely a config that forgot the ports.
    log(
      "warn",
      "no produce listener: server.http.listen and server.grpc.listen are unset, no message is taken",
    );
  }
  const httpServer = http.listen === undefined ? null : await startHttpServer({
    listen: http.listen,
    tls: tls.http,
    gate,
    facade,
    batch: http.batch,
    limits: http,
    bodyTimeoutMs: http.bodyTimeoutMs,
    maxInflightBytes: http.maxInflightBytes,
  });
  if (httpServer) started.push(() => httpServer.shutdown());
  const grpcServer = grpc.listen === undefined ? null : await startGrpcServer({
    listen: grpc.listen,
    tls: tls.grpc,
    gate,
    facade,
    maxRequestSize: grpc.maxRequestSize,
    limits: grpc,
    maxConcurrentStreams: grpc.maxConcurrentStreams,
    maxSessionMemory: grpc.maxSessionMemory,
    maxInflightBytes: grpc.maxInflightBytes,
  });
  if (grpcServer) started.push(() => grpcServer.shutdown());
  const monitoringServer = monitoring.listen === undefined ? null : await startMonitoringServer({
    listen: monitoring.listen,
    tls: tls.monitoring,
    limits: monitoring,
    readiness: () => facade.readiness(),
  });
  const listeners: Array<Listener | null> = [httpServer, grpcServer, monitoringServer];

  const addresses = {
    http: httpServer?.address,
    grpc: grpcServer?.address,
    monitoring: monitoringServer?.address,
  };
  log("info", "kafka-ambassador started", {
    version: VERSION,
    http: addresses.http ?? null,
    grpc: addresses.grpc ?? null,
    monitoring: addresses.monitoring ?? null,
    wal: config.producer.wal.mode === "disable"
      ? "disabled"
      : config.producer.wal.inMemory
      ? "memory"
      : config.producer.wal.path,
  });

  const reload = (): boolean => {
    if (stopping !== null) {
      log("warn", "reload ignored: the service is stopping");
      return false;
    }
    const filesRead = security.reload();
    if (!replaceProducer("reload")) return false;
    exportCertificateExpiry(config.kafka);
    return filesRead;
  };

  const shutdown = async (reason: string): Promise<StopSummary> => {
    // Everything below shares one deadline: Kafka gets what is left of it, every later step is bounded too.
    const deadline = Date.now() + config.producer.shutdownTimeoutMs;
    const remaining = () => Math.max(0, deadline - Date.now());
    log("info", "shutting down", { reason, flush_timeout_ms: config.producer.shutdownTimeoutMs });
    facade.setDraining(true);
    clearTimeout(fatalTimer);
    removeTestHook();
    for (const listener of listeners) listener?.setDraining(true);
    // Replay starts nothing new; what it has in flight is delivered by the flush or purged by the close below.
    const replayStopped = replayer?.stop();
    // With the breaker open nothing would be delivered: spool at once instead of waiting out the deadline.
    const allReported = await facade.producer.flush(
      breaker.state === "open" ? Math.min(remaining(), 1000) : remaining(),
    );
    await facade.producer.close(0);
    // Replaced producers still draining are cut short the same way: what they hold goes to the WAL.
    await Promise.allSettled([...drains.keys()].map((old) => old.close(0)));
    await Promise.allSettled([...drains.values(), replayStopped]);
    await facade.settle();
    await bounded(
      Promise.allSettled([httpServer?.shutdown(), grpcServer?.shutdown()]),
      Math.max(remaining(), LISTENER_GRACE_MS),
      "listeners still had requests open",
    );
    await wal?.close();
    // After the close: records held in memory that could not be written are not in the WAL.
    const walRecords = wal?.stats().records ?? 0;
    walLock?.release();
    breaker.close();
    trim.stop();
    await bounded(monitoringServer?.shutdown(), LISTENER_GRACE_MS, "monitoring still had requests open");
    if (walRecords > 0 && config.producer.wal.inMemory) {
      log("error", "stopped with records in the in-memory WAL: they are lost", { records: walRecords });
    }
    log("info", "stopped", { all_reported: allReported, wal_records: walRecords });
    return { allReported, walRecords };
  };

  const stop = (reason = "stop") => stopping ??= shutdown(reason);
  return { addresses, reload, stop, [Symbol.asyncDispose]: async () => void await stop() };
}

/** Runs one start-up step; its error names the part (`wal: directory /x is not writable: ...`). */
async function step<T>(part: string, start: () => T | Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(message.startsWith(part) ? message : `${part}: ${message}`);
  }
}

/** One process at a time may use a WAL directory: the lock says "in use by another process" otherwise. */
async function lockConfiguredWal(config: Config): Promise<WalLock | null> {
  const { path } = config.producer.wal;
  const why = noWalOnDisk(config.producer.wal);
  if (why !== undefined) {
    await warnOfStrandedSegments(path, why);
    return null;
  }
  return await lockWalDirectory(path);
}

/**
 * Without a WAL on disk, records a WAL directory still holds (from before the config changed) are not replayed:
 * say so, rather than leave them unnoticed.
 */
async function warnOfStrandedSegments(path: string, why: string): Promise<void> {
  let segments = 0;
  try {
    for await (const entry of Deno.readDir(path)) if (entry.isFile && entry.name.endsWith(".wal")) segments++;
  } catch {
    return; // no directory there (or not readable): nothing to say
  }
  if (segments === 0) return;
  const files = segments === 1 ? "1 segment file" : `${segments} segment files`;
  log(
    "warn",
    `wal: ${path} holds ${files}, not read (${why}): records pending there are not replayed; ` +
      "`kafka-ambassador wal stats` counts them and `wal replay` drains them (with a config whose WAL is there)",
    { path, segments },
  );
}

async function openConfiguredWal(config: Config): Promise<Wal | null> {
  const { mode, inMemory, path, maxBytes, preserveOrder } = config.producer.wal;
  if (mode === "disable") return null;
  const started = performance.now();
  // Key order: recovery counts the pending records per order group from the lines it reads anyway.
  const wal = await openWal({
    path,
    inMemory,
    maxBytes,
    tagOf: preserveOrder === "key" ? orderGroupOf : undefined,
  });
  const stats = wal.stats();
  log("info", "wal opened", {
    path: inMemory ? ":memory:" : path,
    records: stats.records,
    bytes: stats.bytes,
    ms: Math.round(performance.now() - started),
    ...(preserveOrder === "key" && { order_groups: wal.recoveredTags().size }),
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
  // Reported, not delivered: a message that failed (an outage) is reported too, and was spooled.
  const allReported = await old.flush(timeoutMs);
  await old.close(0);
  metrics.activeProducer.remove({ producer_id: old.id });
  metrics.inTransit.remove({ producer_id: old.id });
  log("info", "old kafka producer closed", { producer_id: old.id, all_reported: allReported });
}

/**
 * The test hook of TEST_FATAL_ERROR_ENV: when it is on, SIGUSR2 raises a fabricated fatal error on `current()`.
 * Returns what removes the signal listener.
 */
function installTestFatalErrorHook(current: () => KafkaProducer): () => void {
  if (Deno.env.get(TEST_FATAL_ERROR_ENV) !== "1") return () => {};
  const raise = () => current().raiseTestFatalError(`${TEST_FATAL_ERROR_ENV} and SIGUSR2`);
  Deno.addSignalListener("SIGUSR2", raise);
  log("warn", "test hook on: SIGUSR2 raises a fatal kafka producer error", { env: TEST_FATAL_ERROR_ENV });
  return () => Deno.removeSignalListener("SIGUSR2", raise);
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
      const expires = Date.parse(cert.validTo);
      gauge.set(expires / 1000);
      // The broker's refusal of an expired certificate reads like any other TLS failure: say it here.
      if (expires < Date.now()) {
        log("error", `kafka.${key}: the certificate expired on ${new Date(expires).toISOString()}`, { path });
      }
    } catch (err) {
      log("warn", "cannot read certificate expiry", { key, path, error: (err as Error).message });
    }
  }
}
