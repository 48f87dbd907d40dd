/** librdkafka errors as the rest of the service sees them, and which of them are worth retrying. */

/** The librdkafka error codes the service acts on; no other module writes these numbers. */
export const ERR = {
  /** Local: the producer queue is full (`queue.buffering.max.*`): back-pressure, says nothing about brokers. */
  QUEUE_FULL: -184,
  /** Local: every known broker is down. */
  ALL_BROKERS_DOWN: -187,
  /** Local: the producer was destroyed before the message was delivered. */
  DESTROY: -197,
  /** Local: purged from the queue (rd_kafka_purge) before it was sent. */
  PURGE_QUEUE: -152,
  /** Local: purged while in flight (rd_kafka_purge): its fate is unknown. */
  PURGE_INFLIGHT: -151,
  /** Local: the producer raised a fatal error; it can produce no more. */
  FATAL: -150,
  /** Local: SASL authentication failed (user, password or mechanism refused). */
  AUTHENTICATION: -169,
  /** Local: TLS failed (handshake, certificate verification, hostname mismatch). */
  SSL: -181,
  /** Local: the message names a partition its topic does not have (librdkafka knows the topic's partitions). */
  UNKNOWN_PARTITION: -190,
  /**
   * Broker: the request for a partition was over the topic's `max.message.bytes`, or (refused by librdkafka as it
   * is handed over) the message is over `message.max.bytes`.
   */
  MSG_SIZE_TOO_LARGE: 10,
} as const;

/**
 * Error codes (rd_kafka_resp_err_t) after which sending the same message again cannot succeed:
 * the message is dropped instead of being spooled. Every other code is retryable, fatal producer errors included:
 * the message is fine, the producer is not, so it is kept in the WAL for a producer that works.
 */
const NON_RETRYABLE: ReadonlyMap<number, string> = new Map([
  [-188, "_UNKNOWN_TOPIC"],
  [-186, "_INVALID_ARG"],
  [ERR.UNKNOWN_PARTITION, "_UNKNOWN_PARTITION"],
  [2, "INVALID_MSG"],
  [3, "UNKNOWN_TOPIC_OR_PART"],
  [4, "INVALID_MSG_SIZE"],
  [ERR.MSG_SIZE_TOO_LARGE, "MSG_SIZE_TOO_LARGE"],
  [17, "TOPIC_EXCEPTION"],
  [18, "RECORD_LIST_TOO_LARGE"],
  [29, "TOPIC_AUTHORIZATION_FAILED"],
  // Outside the time range the topic accepts; it only grows older.
  [32, "INVALID_TIMESTAMP"],
  // Headers to a topic in an old message format.
  [43, "UNSUPPORTED_FOR_MESSAGE_FORMAT"],
  [44, "POLICY_VIOLATION"],
  // The broker's check of the record itself, e.g. no key for a compacted topic.
  [87, "INVALID_RECORD"],
]);

/** Whether `err` is librdkafka's local "queue full". */
export function isQueueFull(err: unknown): boolean {
  return err instanceof KafkaError && err.code === ERR.QUEUE_FULL;
}

/** Failures a producer gives its messages on its own: closed, purged (on close, or after a fatal error), fatal. */
const PRODUCER_ENDED: ReadonlySet<number> = new Set([
  ERR.DESTROY,
  ERR.PURGE_QUEUE,
  ERR.PURGE_INFLIGHT,
  ERR.FATAL,
]);

/**
 * Whether `err` comes from the producer's own end (it was closed, or raised a fatal error and is being replaced)
 * rather than from the brokers: such a failure says nothing about them.
 */
export function isProducerEnded(err: unknown): boolean {
  return err instanceof KafkaError && PRODUCER_ENDED.has(err.code);
}

/** Whether `err` says the message named a partition its topic does not have. */
export function isUnknownPartition(err: unknown): boolean {
  return err instanceof KafkaError && err.code === ERR.UNKNOWN_PARTITION;
}

/** Whether `err` says every broker is down. */
export function isAllBrokersDown(err: unknown): boolean {
  return err instanceof KafkaError && err.code === ERR.ALL_BROKERS_DOWN;
}

/** Whether `code` says the credentials or certificates are refused: retrying will not help, an operator must act. */
export function isSecurityFailure(code: number): boolean {
  return code === ERR.AUTHENTICATION || code === ERR.SSL;
}

/** Whether a message that failed with `code` may be sent again later (e.g. from the WAL). */
export function isRetryable(code: number): boolean {
  return !NON_RETRYABLE.has(code);
}

/**
 * A librdkafka error: code (rd_kafka_resp_err_t), name (rd_kafka_err2name, e.g. "_MSG_TIMED_OUT"), whether it is
 * retryable, and librdkafka's text for the code (rd_kafka_err2str, e.g. "Local: Message timed out").
 */
export class KafkaError extends Error {
  /**
   * @example new KafkaError(-192, "_MSG_TIMED_OUT", "kafka: topic \"t\": Local: Message timed out", true,
   *   "Local: Message timed out")
   */
  constructor(
    readonly code: number,
    readonly errName: string,
    message: string,
    readonly retryable: boolean,
    readonly errText: string,
    /**
     * The message failed without a partition of its own: its topic's partitions were never known (a topic that
     * does not exist, or not yet), or the one librdkafka chose for it is gone (_UNKNOWN_PARTITION: its topic was
     * deleted, or made again with fewer). Neither says anything about the brokers, and in the second case the
     * message is retryable: sent again, it gets a partition the topic has now.
     */
    readonly unpartitioned = false,
    /**
     * librdkafka refused the message as it was handed over for a partition its topic does not have: the request's
     * own mistake, which its client hears (400), so not a dropped message.
     */
    readonly badPartition = false,
  ) {
    super(message);
    this.name = "KafkaError";
  }
}

/**
 * The `error` label of kafka_client_err_cnt and kafka_client_dropped_cnt: librdkafka's text for the error, which
 * the Go service's labels hold too (e.g. "Broker: Message size too large"), so that its dashboards still match.
 */
export function errorLabel(err: unknown): string {
  return err instanceof KafkaError ? err.errText : (err as Error)?.name ?? "error";
}
