/**
 * The most record bytes librdkafka's queue holds (`queue.buffering.max.kbytes`, 64 MiB). librdkafka's own default,
 * 1 GiB, leaves the bound to `queue.buffering.max.messages` (100,000): when the broker is slower than the clients
 * the queue fills to 100,000 records of any size, and the service keeps each one's bytes too until its report (to
 * spool it should it fail). With 4 KB gRPC records that took RSS to 860 to 990 MB, still rising; with this
 * bound, 410 to 420 MB (bench/README.md). Records under 671 bytes (key and value) still stop at 100,000.
 */
const QUEUE_KBYTES = 65_536;

/**
 * The librdkafka properties set unless the config sets them (applied by producer.ts, listed by the config
 * reference): stats feed the rdkafka_* gauges; librdkafka's own log lines come through the event queue so that
 * they are written as JSON lines like every other log; the queue is bounded in bytes (QUEUE_KBYTES). The rest are
 * the Go service's defaults, so that a config written for it produces the same way (gzip above all), except its
 * `max.in.flight.requests.per.connection: 20`, with which `enable.idempotence: true` would refuse to start.
 */
export const LIBRDKAFKA_DEFAULTS: Readonly<Record<string, string>> = {
  "statistics.interval.ms": "15000",
  "log.queue": "true",
  "queue.buffering.max.kbytes": String(QUEUE_KBYTES),
  "compression.codec": "gzip",
  "batch.num.messages": "100000",
  "socket.timeout.ms": "10000",
  "message.timeout.ms": "60000",
};
