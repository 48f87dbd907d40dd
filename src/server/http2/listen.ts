/**
 * An HTTP/2 listener: accepts connections, plain text with prior knowledge (Deno.listen) or TLS with ALPN h2
 * (node:tls), counts them against the listener's limits (limits.ts), and runs an Http2Connection on each.
 *
 * Plain text reads the socket with `conn.read` into one reused 64 KiB buffer: per record under gRPC load that
 * cost a third less CPU than a node:net socket's 'data' events (bench/h2_probe.ts). TLS stays on node:tls, the
 * only Deno TLS server that verifies client certificates and takes a new certificate without closing the port.
 */
import tls from "node:tls";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { log, logRepeated } from "../../log.ts";
import { formatHostPort, type ListenAddress } from "../../listen_address.ts";
import type { Connection, Connections } from "../limits.ts";
import { listenError, nodeListenError } from "../listener.ts";
import { certNameOf, nodeTlsOptions, type TlsSource } from "../tls.ts";
import { type ConnectionOptions, Http2Connection, type Transport } from "./connection.ts";
import type { Http2Stream } from "./stream.ts";

/** How an HTTP/2 listener is built. */
export interface Http2ListenOptions {
  /** "grpc": in log lines and errors. */
  name: string;
  address: ListenAddress;
  tls?: TlsSource;
  conns: Connections;
  /** Limits of each connection. */
  connection: Pick<ConnectionOptions, "maxConcurrentStreams" | "maxSessionMemory" | "maxHeaderListSize">;
  /** A new stream; `certName` is the CN of the client certificate (mTLS), looked up on first use. */
  onStream(stream: Http2Stream, certName: () => string | undefined): void;
}

/** A bound HTTP/2 listener. */
export interface Http2Listener {
  readonly port: number;
  /** Open connections. */
  readonly connections: number;
  /**
   * Stops accepting; each connection gets GOAWAY and closes once its streams are over. Resolves when every
   * connection has closed.
   */
  close(): Promise<void>;
  /** Closes every connection now. */
  destroyAll(): void;
}

/** Bytes asked of one read. */
const READ_BYTES = 64 * 1024;
/** How long a closing connection may take to send what it has queued before its socket is closed anyway. */
const CLOSE_GRACE_MS = 2000;

/** Binds the listener; throws, naming it and the address, when it cannot. */
export function listenHttp2(opts: Http2ListenOptions): Promise<Http2Listener> {
  return opts.tls === undefined ? Promise.resolve(listenPlain(opts)) : listenTls(opts, opts.tls);
}

/** The connections of a listener, and the wait for them to be gone. */
class Open {
  readonly all = new Set<Http2Connection>();
  #idle: (() => void) | undefined;

  add(conn: Http2Connection): void {
    this.all.add(conn);
  }

  delete(conn: Http2Connection): void {
    this.all.delete(conn);
    if (this.all.size === 0) this.#idle?.();
  }

  /** GOAWAY to each connection; resolves once none is left. */
  drain(): Promise<void> {
    const idle = new Promise<void>((resolve) => this.#idle = resolve);
    for (const conn of this.all) conn.shutdown();
    if (this.all.size === 0) this.#idle!();
    return idle;
  }
}

/** Starts an Http2Connection on a transport, counted by `conns`; undefined when over max_connections. */
function serveConnection(
  opts: Http2ListenOptions,
  open: Open,
  transport: Transport,
  certName: () => string | undefined,
): Http2Connection | undefined {
  // Past a deadline (limits.ts) the connection ends with GOAWAY; the callback runs only after h2 is set.
  const tracked: Connection | undefined = opts.conns.open(() => h2.abort());
  if (tracked === undefined) return undefined;
  const h2: Http2Connection = new Http2Connection(transport, {
    ...opts.connection,
    onStream: (stream) => {
      tracked.requestStarted();
      opts.onStream(stream, certName);
    },
    onStreamDone: () => tracked.requestEnded(),
    onClose: () => {
      tracked.closed();
      open.delete(h2);
    },
    onProtocolError: (what, code) =>
      logRepeated(`${opts.name}: http2 protocol error`, "debug", `${opts.name}: http2 protocol error`, {
        reason: what,
        code,
      }),
  });
  open.add(h2);
  return h2;
}

/** Plain text: Deno.listen, one read loop per connection, writes chained. */
function listenPlain(opts: Http2ListenOptions): Http2Listener {
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: opts.address.hostname, port: opts.address.port });
  } catch (err) {
    throw listenError(opts.name, opts.address, err);
  }
  const open = new Open();
  const accepting = (async () => {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (err instanceof Deno.errors.BadResource) return; // closed by close()
        logRepeated(`${opts.name}: accept failed`, "error", `${opts.name}: accept failed`, { error: err });
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      servePlain(opts, open, conn);
    }
  })();
  logListening(opts, listener.addr.port);
  return {
    port: listener.addr.port,
    get connections() {
      return open.all.size;
    },
    close: async () => {
      listener.close();
      await accepting;
      await open.drain();
    },
    destroyAll: () => {
      for (const conn of open.all) conn.abort();
    },
  };
}

function servePlain(opts: Http2ListenOptions, open: Open, conn: Deno.TcpConn): void {
  conn.setNoDelay(true);
  const transport = new DenoConnTransport(conn);
  const h2 = serveConnection(opts, open, transport, () => undefined);
  if (h2 === undefined) {
    // No HTTP/2 can be said before the client's preface: the connection just closes.
    transport.destroy();
    return;
  }
  transport.run(h2);
}

/** A Deno TCP connection as a Transport: reads into one buffer, writes one after another. */
class DenoConnTransport implements Transport {
  readonly #conn: Deno.Conn;
  #h2: Http2Connection | undefined;
  #writing: Promise<void> = Promise.resolve();
  #queued = 0;
  #paused = false;
  #wake: (() => void) | undefined;
  #closed = false;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  get writableLength(): number {
    return this.#queued;
  }

  write(bytes: Uint8Array): void {
    if (this.#closed) return;
    this.#queued += bytes.byteLength;
    this.#writing = this.#writing.then(async () => {
      if (this.#closed) return;
      try {
        for (let at = 0; at < bytes.byteLength;) at += await this.#conn.write(bytes.subarray(at));
      } catch {
        // The peer is gone; the read loop sees it too.
        this.destroy();
        return;
      }
      this.#queued -= bytes.byteLength;
      if (this.#queued === 0) this.#h2?.drained();
    });
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    this.#wake?.();
    this.#wake = undefined;
  }

  end(): void {
    const timer = setTimeout(() => this.destroy(), CLOSE_GRACE_MS);
    this.#writing.then(() => {
      clearTimeout(timer);
      this.destroy();
    });
  }

  destroy(): void {
    if (this.#closed) return;
    this.#closed = true;
    // close() alone leaves the socket open while our read is pending (the read holds it); shutting down
    // the write side first lets the peer see the end at once.
    this.#conn.closeWrite().catch(() => {}).finally(() => {
      try {
        this.#conn.close();
      } catch {
        // already closed
      }
    });
    this.resume();
  }

  /** Reads until the connection closes, handing each read to `h2`. */
  async run(h2: Http2Connection): Promise<void> {
    this.#h2 = h2;
    const buffer = new Uint8Array(READ_BYTES);
    try {
      while (!this.#closed) {
        if (this.#paused) await new Promise<void>((resolve) => this.#wake = resolve);
        if (this.#closed) break;
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        // A copy the size of the read: DATA payloads handed to streams are views of it and outlive the read.
        h2.receive(buffer.slice(0, n));
      }
    } catch {
      // Reset by the peer, or closed by us.
    }
    this.destroy();
    h2.transportClosed();
  }
}

/** TLS: node:tls with ALPN h2 (and a required client certificate with a client CA). */
async function listenTls(opts: Http2ListenOptions, source: TlsSource): Promise<Http2Listener> {
  const open = new Open();
  const sockets = new Set<Socket>();
  const options = () => ({ ...nodeTlsOptions(source.material), ALPNProtocols: ["h2"] });
  const server = tls.createServer(options(), (socket: TLSSocket) => {
    const transport: Transport = {
      write: (bytes) => void socket.write(bytes),
      get writableLength() {
        return socket.writableLength;
      },
      pause: () => void socket.pause(),
      resume: () => void socket.resume(),
      end: () => {
        socket.end();
        setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref?.();
      },
    };
    const h2 = serveConnection(opts, open, transport, () => certNameOf(socket));
    if (h2 === undefined) return void socket.destroy();
    sockets.add(socket);
    socket.on("data", (chunk: Uint8Array) => h2.receive(chunk));
    socket.on("drain", () => h2.drained());
    socket.on("close", () => {
      sockets.delete(socket);
      h2.transportClosed();
    });
    socket.on("error", (err: Error) => {
      logRepeated(`${opts.name}: connection error`, "debug", `${opts.name}: connection error`, {
        error: err.message,
      });
    });
  });
  // A new certificate applies to new connections; the listening socket stays open (tls.ts).
  source.subscribe(() => server.setSecureContext(options()));
  server.on("tlsClientError", (err: Error) => {
    logRepeated(`${opts.name}: tls handshake failed`, "debug", `${opts.name}: tls handshake failed`, {
      error: err.message,
    });
  });
  const port = await new Promise<number>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(listenError(opts.name, opts.address, nodeListenError(err)));
    };
    server.once("error", onError);
    server.listen({ port: opts.address.port, host: opts.address.hostname }, () => {
      server.off("error", onError);
      server.on("error", (err) => log("error", `${opts.name}: listener error`, { error: err }));
      resolve((server.address() as { port: number }).port);
    });
  });
  logListening(opts, port);
  return {
    port,
    get connections() {
      return open.all.size;
    },
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await open.drain();
      await closed;
    },
    destroyAll: () => {
      for (const socket of sockets) socket.destroy();
    },
  };
}

function logListening(opts: Http2ListenOptions, port: number): void {
  const addr = formatHostPort({ ...opts.address, port });
  const mtls = opts.tls?.material.ca !== undefined;
  log("info", `${opts.name} listening`, opts.tls === undefined ? { addr } : { addr, tls: true, mtls });
}
