/** Where a {@linkcode FaultProxy} forwards connections to. */
export interface ProxyTarget {
  host: string;
  port: number;
}

/** Options for {@linkcode startFaultProxy}. */
export interface FaultProxyOptions {
  /** Port to listen on (default: a free one). A fixed port can be reused by a later proxy. */
  port?: number;
}

const CHUNK_BYTES = 64 * 1024;
const CLOSE_WAIT_MS = 5_000;

/**
 * Closes a connection so that a read pending on it ends: close() alone does not interrupt one on Deno 2.8,
 * but the FIN from closeWrite() makes the peer close its end, which does.
 */
export function hangUp(conn: Deno.TcpConn): void {
  conn.closeWrite().catch(() => {}); // already shut down
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/** One client connection and, once connected, its upstream to the target. */
class Link {
  upstream: Deno.TcpConn | null = null;
  /** Set while a blackhole holds this link: it forwards nothing until it is closed. */
  frozen = false;
  closed = false;
  readonly #whenClosed: Promise<void>;
  readonly #markClosed: () => void;

  constructor(readonly client: Deno.TcpConn) {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#whenClosed = promise;
    this.#markClosed = resolve;
  }

  /** Resolves when the link is closed: a frozen link waits here instead of forwarding. */
  untilClosed(): Promise<void> {
    return this.#whenClosed;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    hangUp(this.client);
    if (this.upstream) hangUp(this.upstream);
    this.#markClosed();
  }
}

/**
 * A TCP proxy on 127.0.0.1 that can cut connections or act as a network partition, for fault tests.
 *
 * @example
 * await using proxy = await startFaultProxy({ host: "127.0.0.1", port: broker.port });
 * proxy.blackhole(true);
 */
export class FaultProxy implements AsyncDisposable {
  readonly port: number;
  readonly #target: ProxyTarget;
  readonly #listener: Deno.TcpListener;
  readonly #links = new Set<Link>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #acceptLoop: Promise<void>;
  #blackholed = false;
  #closed = false;
  /** Milliseconds each chunk waits before it is forwarded, either way (see delay). */
  #delayMs = 0;

  constructor(listener: Deno.TcpListener, target: ProxyTarget) {
    this.#listener = listener;
    this.#target = target;
    this.port = listener.addr.port;
    this.#acceptLoop = this.#accept();
  }

  /** Number of client connections currently open through the proxy. */
  get connections(): number {
    return this.#links.size;
  }

  /**
   * On: every connection, open or new, stops forwarding bytes both ways (new ones are accepted but never
   * reach the target). Off: the held connections are closed and new ones forward normally.
   */
  blackhole(on: boolean): void {
    this.#blackholed = on;
    for (const link of this.#links) {
      if (on) link.frozen = true;
      else if (link.frozen) link.close();
    }
  }

  /**
   * A slow link: from now on each chunk read, either way, on every connection waits `ms` before it is written
   * (one at a time, so a round trip takes twice `ms` and a connection's handshakes a multiple of that). 0 ends it.
   */
  delay(ms: number): void {
    this.#delayMs = ms;
  }

  /** Closes every current connection, both sides. */
  cutAll(): void {
    for (const link of this.#links) link.close();
  }

  /** Stops listening, closes every connection and waits until all forwarding has stopped. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listener.close();
    this.cutAll();
    await this.#acceptLoop;
    // Bounded: a peer that never answers our FIN keeps its pump's read pending (see hangUp).
    const deadline = Date.now() + CLOSE_WAIT_MS;
    while (this.#tasks.size > 0 && Date.now() < deadline) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<void>((r) => timer = setTimeout(r, Math.max(0, deadline - Date.now())));
      await Promise.race([Promise.all([...this.#tasks]), late]);
      clearTimeout(timer);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #accept(): Promise<void> {
    while (true) {
      let client: Deno.TcpConn;
      try {
        client = await this.#listener.accept();
      } catch {
        return; // listener closed
      }
      if (this.#closed) {
        client.close();
        return;
      }
      const link = new Link(client);
      link.frozen = this.#blackholed;
      this.#links.add(link);
      this.#track(
        this.#serve(link).finally(() => {
          link.close();
          this.#links.delete(link);
        }),
      );
    }
  }

  #track(task: Promise<void>): void {
    this.#tasks.add(task);
    task.finally(() => this.#tasks.delete(task));
  }

  async #serve(link: Link): Promise<void> {
    if (link.frozen) return await link.untilClosed();
    let upstream: Deno.TcpConn;
    try {
      upstream = await Deno.connect({ hostname: this.#target.host, port: this.#target.port });
    } catch {
      return; // target down: the client sees its connection closed, as with a refused connect
    }
    if (link.closed) {
      upstream.close();
      return;
    }
    link.upstream = upstream;
    const delayMs = () => this.#delayMs;
    await Promise.all([
      pump(link.client, upstream, link, delayMs),
      pump(upstream, link.client, link, delayMs),
    ]);
  }
}

/**
 * Copies src to dst until either side ends, each chunk after `delayMs()`; a frozen link holds its bytes until it is
 * closed.
 */
async function pump(src: Deno.TcpConn, dst: Deno.TcpConn, link: Link, delayMs: () => number): Promise<void> {
  const buf = new Uint8Array(CHUNK_BYTES);
  try {
    while (!link.closed) {
      if (link.frozen) return await link.untilClosed();
      const n = await src.read(buf);
      if (n === null) return;
      const wait = delayMs();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      if (link.frozen) return await link.untilClosed();
      let written = 0;
      while (written < n) written += await dst.write(buf.subarray(written, n));
    }
  } catch {
    // a closed or reset connection ends the pump
  } finally {
    link.close();
  }
}

/**
 * Starts a fault proxy forwarding 127.0.0.1:<port> to the target. The target need not be up yet: each
 * connection dials it when accepted.
 */
export function startFaultProxy(target: ProxyTarget, opts: FaultProxyOptions = {}): Promise<FaultProxy> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: opts.port ?? 0, transport: "tcp" });
  return Promise.resolve(new FaultProxy(listener, target));
}
