/**
 * Bounds on what clients can make a listener hold (docs/security.md, Limits): open connections, how long a
 * connection may take to send a request head or sit idle, and the request body bytes the HTTP listener holds
 * at once.
 *
 * Deno.serve has none of these and no hook to add them, and node:http's `headersTimeout` does nothing in
 * Deno 2.8.3 (a client sending a header byte a second was held for good), so every listener counts its own
 * connections here and closes those past their deadline. What a listener reports is when a request starts and
 * ends: a connection is then waiting for a request head (deadline: the header timeout), busy (no deadline; the
 * body timeout bounds body reads), or idle between requests (deadline: the idle timeout).
 */
import { SCHEMA } from "../config_keys.ts";
import { logRepeated } from "../log.ts";

/** The connection bounds of one listener (`server.<listener>.max_connections`, `header_timeout`, `idle_timeout`). */
export interface ConnectionLimits {
  /** Most connections open at once; a new one past it is refused and closed. */
  maxConnections: number;
  /**
   * How long a new connection may take to send its first request head (HTTP) or open its first stream
   * (gRPC); slowloris clients are closed then.
   */
  headerTimeoutMs: number;
  /**
   * How long a connection with no request in flight stays open. This bounds the next request head too:
   * what arrives before its head is complete cannot be told apart from idling.
   */
  idleTimeoutMs: number;
}

/**
 * One open connection, as its listener reports it. A request only counts itself in and out; the sweep of its
 * Connections works out from the counts whether the connection is busy, or since when it has been idle (a clock
 * read per request cost the hot path more than the rest of this bookkeeping).
 */
export class Connection {
  #started = 0;
  #ended = 0;
  /** #ended as the sweep last saw it. */
  #seenEnded = 0;
  /** Since when (ms, Date.now()) the connection has been waiting for its first head, or idle. */
  #waitingSince: number;
  /** How long it may wait: the header timeout until a request ended, the idle timeout after. */
  #waitMs: number;
  /** To be closed by the sweep once no request is in flight (closeWhenDone). */
  #closing = false;
  readonly #owner: Connections;
  readonly close: () => void;

  constructor(owner: Connections, close: () => void, headerTimeoutMs: number) {
    this.#owner = owner;
    this.close = close;
    this.#waitingSince = Date.now();
    this.#waitMs = headerTimeoutMs;
  }

  /** A request head arrived (HTTP), or a stream opened (gRPC). */
  requestStarted(): void {
    this.#started++;
  }

  /** A request was answered, or a stream closed. */
  requestEnded(): void {
    this.#ended++;
  }

  /**
   * Has the sweep close the connection once no request is in flight, about a sweep period after the last one ended
   * (or after it opened, when it has had none), so that the last reply has that long to be written. For a reply that
   * closes its connection, which the server may not do itself (Deno's waits for the rest of a body it was not
   * asked to read, a 408's), and at shutdown for a connection that may be half way through a request head
   * (which a graceful close would wait for).
   */
  closeWhenDone(): void {
    this.#closing = true;
  }

  /** Whether closeWhenDone was called. */
  get closing(): boolean {
    return this.#closing;
  }

  /** Whether a request ever started on it. */
  get used(): boolean {
    return this.#started > 0;
  }

  /** Whether a request is in flight. */
  get busy(): boolean {
    return this.#started !== this.#ended;
  }

  /** The connection closed, for whatever reason. */
  closed(): void {
    this.#owner.forget(this);
  }

  /**
   * For the sweep at `now`: whether the connection has waited past its bound. Idle time counts from the sweep
   * that first sees the connection's requests all ended, which is never before the last one ended. One to close
   * once done waits `graceMs` of that too, or from its opening when it has had no request: long enough for its
   * last reply to be written, or for a client that has just connected to send the request it connected for.
   */
  expired(now: number, idleTimeoutMs: number, graceMs: number): boolean {
    if (this.#started !== this.#ended) return false;
    if (this.#ended !== this.#seenEnded) {
      this.#seenEnded = this.#ended;
      this.#waitingSince = now;
      this.#waitMs = idleTimeoutMs;
      return false;
    }
    const waited = now - this.#waitingSince;
    return waited >= this.#waitMs || (this.#closing && waited >= graceMs);
  }
}

/**
 * The open connections of one listener. One interval sweeps them all (a timer per connection or per request
 * would cost the hot path more than the rest of a small request); it runs only while connections are open. It
 * runs every quarter of the shortest timeout (at most a second): a connection that has not sent its first head
 * is closed up to one such period after the header timeout, an idle one up to two after the idle timeout (the
 * sweep notices the end of its last request up to a period late).
 * @example
 * const conns = new Connections("http", { maxConnections: 10_000, headerTimeoutMs: 10_000, idleTimeoutMs: 60_000 });
 * const conn = conns.open(() => socket.destroy()); // undefined: over the limit, refuse the connection
 */
export class Connections {
  readonly limits: ConnectionLimits;
  readonly #name: string;
  readonly #periodMs: number;
  readonly #open = new Set<Connection>();
  readonly #closeIdleWhenFull: boolean;
  #timer: ReturnType<typeof setInterval> | undefined;

  /**
   * `closeIdleWhenFull`: at max_connections a new connection closes the oldest one with no request in flight
   * (waiting for its first head, or idle) and takes its place; refused only when every one is busy. For a
   * listener whose requests a client may simply send again (monitoring's GETs): idle connections cannot lock
   * its health checks out. @default false
   */
  constructor(name: string, limits: ConnectionLimits, closeIdleWhenFull = false) {
    this.#closeIdleWhenFull = closeIdleWhenFull;
    const { maxConnections, headerTimeoutMs, idleTimeoutMs } = limits;
    if (!(maxConnections >= 1) || !(headerTimeoutMs > 0) || !(idleTimeoutMs > 0)) {
      throw new RangeError(
        `${name}: max_connections must be at least 1 and timeouts positive, got ${maxConnections}, ` +
          `${headerTimeoutMs} ms and ${idleTimeoutMs} ms`,
      );
    }
    this.limits = limits;
    this.#name = name;
    this.#periodMs = Math.min(1000, Math.max(5, Math.min(headerTimeoutMs, idleTimeoutMs) / 4));
  }

  /** Connections open now. */
  get size(): number {
    return this.#open.size;
  }

  /**
   * Counts a new connection, whose head must arrive within the header timeout; `close` ends it when a
   * deadline passes. Undefined when max_connections are open: the caller refuses the connection.
   */
  open(close: () => void): Connection | undefined {
    if (this.#open.size >= this.limits.maxConnections && this.#closeIdleWhenFull) this.#closeOldestIdle();
    if (this.#open.size >= this.limits.maxConnections) {
      logRepeated(`${this.#name}: connection refused`, "warn", `${this.#name}: connection refused`, {
        reason: "max_connections",
        max: this.limits.maxConnections,
      });
      return undefined;
    }
    const conn = new Connection(this, close, this.limits.headerTimeoutMs);
    this.#open.add(conn);
    if (this.#timer === undefined) {
      const timer = setInterval(() => this.#sweep(), this.#periodMs);
      // Idle clients must not keep a stopping process alive.
      Deno.unrefTimer(Number(timer));
      this.#timer = timer;
    }
    return conn;
  }

  forget(conn: Connection): void {
    this.#open.delete(conn);
    if (this.#open.size === 0) this.stop();
  }

  /** Stops the sweep; for shutdown. */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #closeOldestIdle(): void {
    // A Set iterates in insertion order: the first idle one is the one open longest.
    for (const conn of this.#open) {
      if (conn.busy) continue;
      this.#open.delete(conn);
      logRepeated(`${this.#name}: idle connection closed`, "warn", `${this.#name}: idle connection closed`, {
        reason: "max_connections: a new connection took its place",
        max: this.limits.maxConnections,
      });
      conn.close();
      return;
    }
  }

  /**
   * At shutdown: has the sweep close each connection `which` picks once it has no request in flight
   * (Connection.closeWhenDone), and sweeps now, so that those without one for a while close at once (a
   * request head or a TLS handshake under way included, which a server's own close waits for).
   */
  closeWhenDone(which: (conn: Connection) => boolean): void {
    for (const conn of this.#open) {
      if (which(conn)) conn.closeWhenDone();
    }
    this.#sweep();
  }

  /** Closes the connections past their deadlines, and those to close once done. */
  #sweep(): void {
    const now = Date.now();
    for (const conn of this.#open) {
      // Half a period: the sweeps themselves come a period apart, give or take the timer's slack.
      if (!conn.expired(now, this.limits.idleTimeoutMs, this.#periodMs / 2)) continue;
      this.#open.delete(conn);
      logRepeated(`${this.#name}: connection timed out`, "debug", `${this.#name}: connection timed out`, {});
      conn.close();
    }
    if (this.#open.size === 0) this.stop();
  }
}

/**
 * The request body bytes a listener reads or holds at once, until the facade has answered: many large uploads
 * at once get 503 rather than exhausting memory.
 */
export class InFlightBytes {
  readonly max: number;
  #held = 0;

  constructor(max: number) {
    if (!(max >= 1)) throw new RangeError(`in-flight bytes: the bound must be at least 1, got ${max}`);
    this.max = max;
  }

  /** Bytes held now. */
  get held(): number {
    return this.#held;
  }

  /** Holds `bytes` if they fit under the bound; undefined (nothing held) if they do not. */
  hold(bytes: number): Held | undefined {
    if (this.#held + bytes > this.max) return undefined;
    this.#held += bytes;
    return new Held(this, bytes);
  }

  /** For Held only. */
  give(bytes: number): void {
    this.#held -= bytes;
  }
}

/** Bytes held in an InFlightBytes, until released. */
export class Held {
  #bytes: number;
  readonly #from: InFlightBytes;

  constructor(from: InFlightBytes, bytes: number) {
    this.#from = from;
    this.#bytes = bytes;
  }

  /** Gives back what is held past `bytes`: a body turned out smaller than it could have been. */
  shrinkTo(bytes: number): void {
    if (bytes >= this.#bytes) return;
    this.#from.give(this.#bytes - bytes);
    this.#bytes = bytes;
  }

  release(): void {
    this.#from.give(this.#bytes);
    this.#bytes = 0;
  }
}

/** The connection bounds of `listener` as `server.<listener>.*` defaults them. */
export function defaultLimits(listener: "http" | "grpc" | "monitoring"): ConnectionLimits {
  const keys = SCHEMA.server[listener];
  return {
    maxConnections: keys.maxConnections.defaultValue,
    headerTimeoutMs: keys.headerTimeoutMs.defaultValue,
    idleTimeoutMs: keys.idleTimeoutMs.defaultValue,
  };
}
