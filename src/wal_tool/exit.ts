/** The exit codes of `kafka-ambassador wal ...` (docs/wal-tool.md lists them). */
export const EXIT = {
  /** Done: healthy (verify), empty (replay). */
  ok: 0,
  /** The WAL or Kafka could not be used: unreadable directory, librdkafka refused the config. */
  failed: 1,
  /** Bad command line or config, or a config without a WAL on disk. */
  usage: 2,
  /** verify found damaged lines. */
  damaged: 3,
  /** A running service (or another wal command) holds the WAL directory. */
  inUse: 4,
  /** replay ended with records still in the WAL. */
  remaining: 5,
} as const;
