/** librdkafka errors as the rest of the service sees them, and which of them are worth retrying. */

/**
 * Error codes (rd_kafka_resp_err_t) after which sending the same message again cannot succeed:
 * the message is dropped instead of being spooled. Every other code is retryable, fatal producer errors included:
 * the message is fine, the producer is not, so it is kept in the WAL for a producer that works.
 */
const NON_RETRYABLE: ReadonlyMap<number, string> = new Map([
  [-188, "_UNKNOWN_TOPIC"],
  [-186, "_INVALID_ARG"],
  [-190, "_UNKNOWN_PARTITION"],
  [2, "INVALID_MSG"],
  [3, "UNKNOWN_TOPIC_OR_PART"],
  [4, "INVALID_MSG_SIZE"],
  [10, "MSG_SIZE_TOO_LARGE"],
  [17, "TOPIC_EXCEPTION"],
  [18, "RECORD_LIST_TOO_LARGE"],
  [29, "TOPIC_AUTHORIZATION_FAILED"],
]);

/** Whether a message that failed with `code` may be sent again later (e.g. from the WAL). */
export function isRetryable(code: number): boolean {
  return !NON_RETRYABLE.has(code);
}

/** A librdkafka error: code (rd_kafka_resp_err_t), name (rd_kafka_err2name, e.g. "_MSG_TIMED_OUT"), retryable. */
export class KafkaError extends Error {
  /**
   * @example new KafkaError(-192, "_MSG_TIMED_OUT", "kafka: topic \"t\": Local: Message timed out", true)
   */
  constructor(
    readonly code: number,
    readonly errName: string,
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = "KafkaError";
  }
}
