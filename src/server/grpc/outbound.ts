/**
 * Reply bytes of one HTTP/2 connection that the client has not taken yet. The runtime's HTTP/2 streams accept
 * every write at once and hold what the peer's flow-control window does not let out, without bound and without
 * telling (`writableLength` stays 0). What did go out shows in the connection's socket, so the backlog is the
 * DATA written by the calls minus the bytes the socket has written.
 */

/** The part of a socket this needs. */
interface ByteCounter {
  readonly bytesWritten?: number;
}

/** Outbound bookkeeping of one session (connection). */
export class SessionOutbound {
  readonly #socket: ByteCounter | undefined;
  /** DATA bytes handed to the streams, on the socket's scale (see `unsent`). */
  #queued: number;

  constructor(socket: ByteCounter | undefined) {
    this.#socket = socket;
    this.#queued = this.#socketBytes();
  }

  /** Counts `bytes` of DATA written to a stream of this connection. */
  queued(bytes: number): void {
    this.#rebase();
    this.#queued += bytes;
  }

  /** Reply bytes written to streams that have not reached the socket yet. */
  unsent(): number {
    this.#rebase();
    return this.#queued - this.#socketBytes();
  }

  /**
   * The socket also carries frame headers, HEADERS, SETTINGS and PING frames, which would count as DATA that went
   * out; catching up here keeps that overhead from building a credit that would hide a later backlog.
   */
  #rebase(): void {
    const sent = this.#socketBytes();
    if (sent > this.#queued) this.#queued = sent;
  }

  #socketBytes(): number {
    return this.#socket?.bytesWritten ?? 0;
  }
}
