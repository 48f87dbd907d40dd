/**
 * `wal replay`: a one-shot drain of the WAL into Kafka, for a stopped service. Records go oldest first through
 * a librdkafka producer built from the same config; each is acked in the WAL once Kafka acknowledged it, as the
 * service's replay does. It stops when the WAL is empty, when Kafka fails a record in a way that a retry may
 * cure (broker down, timeout: the record stays), or when nothing was acknowledged for `idleTimeoutMs`. A record
 * that Kafka refuses for good (unknown topic, too large) stays in the WAL too, and the run goes on with the rest.
 */
import type { Config } from "../config.ts";
import { isAllBrokersDown, type KafkaError } from "../kafka/errors.ts";
import { KafkaProducer } from "../kafka/producer.ts";
import { openWal, type Wal, type WalOptions, type WalRecord } from "../wal/wal.ts";
import { EXIT } from "./exit.ts";
import { Progress } from "./progress.ts";

/** Records checked out and handed to librdkafka at a time. */
const CHUNK = 2000;
/**
 * When the run stops, how long the records in flight get to be acknowledged before they are purged: purged at
 * once, those Kafka had already written would be sent again by the next run.
 */
const STOP_GRACE_MS = 5000;

/** What a replay run is given besides the config. */
export interface ReplayCommandOptions {
  /** The run stops when Kafka acknowledged nothing for this long. */
  idleTimeoutMs: number;
  /**
   * Opens the WAL; tests wrap it to fail a read.
   * @default {openWal}
   */
  open?: (opts: WalOptions) => Promise<Wal>;
}

export async function replayCommand(config: Config, opts: ReplayCommandOptions): Promise<number> {
  const { path, maxBytes } = config.producer.wal;
  const wal = await (opts.open ?? openWal)({ path, inMemory: false, maxBytes });
  const total = wal.pendingCount();
  if (total === 0) {
    await wal.close();
    console.log(`wal replay: ${path}: nothing to replay`);
    return EXIT.ok;
  }
  let stopReason: string | null = null;
  let producer: KafkaProducer;
  try {
    producer = KafkaProducer.open({
      id: "wal-replay",
      config: config.kafka,
      onError: (err) => {
        if (isAllBrokersDown(err)) stop(err.message);
      },
    });
  } catch (err) {
    await wal.close();
    console.error(`wal replay: kafka: ${(err as Error).message}`);
    return EXIT.failed;
  }
  /**
   * Ends the run: no more records are handed over; those in flight get STOP_GRACE_MS to be acknowledged, the rest
   * are purged (their promises reject) and go back to the WAL.
   */
  const stop = (reason: string): void => {
    if (stopReason !== null) return;
    stopReason = reason;
    void producer.close(STOP_GRACE_MS);
  };

  // SIGINT or SIGTERM ends the run as a stop would, so that what Kafka acknowledged is acked and synced; a
  // second one exits at once.
  const signals = ["SIGINT", "SIGTERM"] as const;
  let interruptedBy: Deno.Signal | null = null;
  const interrupted = signals.map((signal) => () => {
    if (interruptedBy !== null) Deno.exit(EXIT.remaining);
    interruptedBy = signal;
    stop(`interrupted by ${signal}`);
  });
  signals.forEach((signal, i) => Deno.addSignalListener(signal, interrupted[i]));

  const progress = new Progress(total, Deno.stdout.isTerminal());
  let delivered = 0;
  /** Refused by Kafka for good: left checked out until the end, so that this run does not send them again. */
  const kept: number[] = [];
  let lastAckAt = Date.now();
  const watchdog = setInterval(() => {
    if (Date.now() - lastAckAt >= opts.idleTimeoutMs) {
      stop(`kafka acknowledged nothing for ${Math.round(opts.idleTimeoutMs / 1000)} s`);
    }
  }, Math.min(1000, opts.idleTimeoutMs));
  try {
    while (stopReason === null) {
      let records: WalRecord[];
      try {
        records = await wal.checkout(CHUNK);
      } catch (err) {
        // A failing disk: the run ends as any stop does, so that the acks of what was delivered are still synced
        // (thrown on, they would be lost, and those records sent again by the next run).
        stop(`reading the WAL failed: ${(err as Error).message}`);
        break;
      }
      if (records.length === 0) break;
      await Promise.all(records.map(async (record) => {
        try {
          await producer.produce(record);
          wal.ack(record.id);
          delivered++;
          lastAckAt = Date.now();
        } catch (err) {
          const kafkaError = err as KafkaError;
          if (kafkaError.retryable === false) {
            kept.push(record.id);
            console.error(`wal replay: record ${record.id} kept: ${kafkaError.message}`);
          } else {
            wal.release(record.id);
            stop(kafkaError.message);
          }
        }
        progress.update(delivered, kept.length);
      }));
    }
  } finally {
    clearInterval(watchdog);
    for (const id of kept) wal.release(id);
    await producer.close(0);
    progress.finish(delivered, kept.length);
  }
  const remaining = wal.stats().records;
  // Syncs the acks: delivered records are gone for good, also for the next start of the service.
  await wal.close();
  signals.forEach((signal, i) => Deno.removeSignalListener(signal, interrupted[i]));
  if (remaining === 0) {
    console.log(`wal replay: ${path}: ${delivered} records delivered; the WAL is empty`);
    return EXIT.ok;
  }
  const why = stopReason === null ? "" : ` (stopped: ${stopReason})`;
  console.error(`wal replay: ${path}: ${delivered} records delivered, ${remaining} remain${why}`);
  return EXIT.remaining;
}
