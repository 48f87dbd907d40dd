/**
 * An HTTP/2 listener: accepts connections, plain text with prior knowledge (node:net) or TLS with ALPN h2
 * (node:tls, the only Deno TLS server that verifies client certificates and takes a new certificate without
 * closing the port), counts them against the listener's limits (limits.ts), and runs an Http2Connection on
 * each.
 *
 * Plain text is node:net rather than Deno.listen, although reading a Deno.Conn with `conn.read` cost about a
 * third less CPU per record under gRPC load (bench/h2_probe.ts): in Deno 2.8, closing a Deno.Conn while a write
 * is pending leaves the socket open (the write goes on), so a peer that reads nothing would keep its socket after
 * we close it; node:net's destroy() closes it.
 */
import net from "node:net";
import tls from "node:tls";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { log, logRepeated } from "../../log.ts";
import { formatHostPort, type ListenAddress } from "../../listen_address.ts";
import type { Connection, Connections } from "../limits.ts";
import { type Counted, countFromAccept, listenNode } from "../listener.ts";
import { certNameOf, nodeTlsOptions, type TlsSource } from "../tls.ts";
import { type ConnectionOptions, Http2Connection, type Transport } from "./connection.ts";
import { ErrorCode } from "./frame.ts";
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
  /** "host:port" as bound: the real port when the config said 0, `[::]` for the wildcard (listener.ts). */
  readonly address: string;
  readonly port: number;
  /**
   * Stops accepting; each connection gets GOAWAY and closes once its streams are over. Resolves when every
   * connection has closed.
   */
  close(): Promise<void>;
  /** Closes every connection now. */
  destroyAll(): void;
}

/** How long a closing connection may take to send what it has queued before its socket is destroyed. */
const CLOSE_GRACE_MS = 2000;

/** Binds the listener; throws, naming it and the address, when it cannot. */
export async function listenHttp2(opts: Http2ListenOptions): Promise<Http2Listener> {
  const open = new Set<Http2Connection>();
  const sockets = new Set<Socket>();
  let idle: (() => void) | undefined;
  const onSocket = (socket: Socket, certName: () => string | undefined, counted?: Counted) => {
    const h2 = serveConnection(opts, socketTransport(socket), certName, () => {
      open.delete(h2!);
      if (open.size === 0) idle?.();
    }, counted);
    if (h2 === undefined) return void socket.destroy(); // nothing can be said before the client's preface
    open.add(h2);
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
  };
  const source = opts.tls;
  let server: net.Server;
  if (source === undefined) {
    server = net.createServer({ noDelay: true }, (socket) => {
      stopReadingOnClose(socket);
      onSocket(socket, () => undefined);
    });
  } else {
    const options = () => ({ ...nodeTlsOptions(source.material), ALPNProtocols: ["h2"] });
    const secure = tls.createServer(options(), (socket: TLSSocket) => {
      const counted = countOf(socket);
      if (counted === undefined) return void socket.destroy();
      onSocket(socket, () => certNameOf(socket), counted);
    });
    const countOf = countFromAccept(secure, opts.conns);
    // A new certificate applies to new connections; the listening socket stays open (tls.ts).
    source.subscribe(() => secure.setSecureContext(options()));
    secure.on("tlsClientError", (err: Error) => {
      logRepeated(`${opts.name}: tls handshake failed`, "debug", `${opts.name}: tls handshake failed`, {
        error: err.message,
      });
    });
    server = secure;
  }
  const bound = await listenNode(server, opts.name, opts.address);
  const addr = formatHostPort(bound);
  const mtls = source?.material.ca !== undefined;
  log("info", `${opts.name} listening`, source === undefined ? { addr } : { addr, tls: true, mtls });
  return {
    address: addr,
    port: bound.port,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      const drained = new Promise<void>((resolve) => idle = resolve);
      for (const conn of open) conn.shutdown();
      // A TLS socket still in its handshake is no Http2Connection yet, and node:tls's close waits for it.
      opts.conns.closeWhenDone((conn) => !conn.busy);
      if (open.size === 0) idle!();
      await drained;
      await closed;
    },
    destroyAll: () => {
      for (const socket of sockets) socket.destroy();
    },
  };
}

/**
 * Starts an Http2Connection on a transport, counted by `conns` (or already, as `counted`); undefined when over
 * max_connections.
 */
function serveConnection(
  opts: Http2ListenOptions,
  transport: Transport,
  certName: () => string | undefined,
  onClose: () => void,
  counted?: Counted,
): Http2Connection | undefined {
  // Past a deadline (limits.ts) the connection ends with GOAWAY; the callback runs only after h2 is set.
  const abort = () => h2.abort();
  const tracked: Connection | undefined = counted?.conn ?? opts.conns.open(abort);
  if (tracked === undefined) return undefined;
  if (counted !== undefined) counted.close = abort;
  const h2: Http2Connection = new Http2Connection(transport, {
    ...opts.connection,
    onStream: (stream) => {
      tracked.requestStarted();
      opts.onStream(stream, certName);
    },
    onStreamDone: () => tracked.requestEnded(),
    onClose: () => {
      tracked.closed();
      onClose();
    },
    // A flood is worth an operator's attention (a misbehaving client, or an attack); other errors are the peer's.
    onProtocolError: (what, code) =>
      code === ErrorCode.ENHANCE_YOUR_CALM
        ? logRepeated(`${opts.name}: http2 ${what}`, "warn", `${opts.name}: connection ended for a flood`, {
          reason: what,
        })
        : logRepeated(`${opts.name}: http2 protocol error`, "debug", `${opts.name}: http2 protocol error`, {
          reason: what,
          code,
        }),
  });
  return h2;
}

/** A node:net or node:tls socket as a Transport. */
function socketTransport(socket: Socket): Transport {
  return {
    write: (bytes) => void socket.write(bytes),
    get writableLength() {
      return socket.writableLength;
    },
    pause: () => void socket.pause(),
    resume: () => void socket.resume(),
    end: () => {
      socket.end();
      // A peer that does not read what is queued would hold the socket: destroy it after a grace period.
      const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
      socket.once("close", () => clearTimeout(timer));
    },
  };
}

/**
 * Deno 2.8's node:net leaks every socket closed while it reads (denoland/deno#35876, fixed in Deno 2.9): the read
 * in progress holds the socket's handle, so the handle, the socket, its native buffers and all that its listeners
 * reach (the whole Http2Connection) stay for good. Stopping the read just before the handle closes, as Deno's
 * fix does, lets them go.
 */
function stopReadingOnClose(socket: Socket): void {
  type Handle = { readStop?: () => unknown; close?: (...args: unknown[]) => unknown };
  const handle = (socket as unknown as { _handle?: Handle })._handle;
  const { readStop, close } = handle ?? {};
  if (typeof readStop !== "function" || typeof close !== "function") return;
  handle!.close = (...args: unknown[]) => {
    try {
      readStop.call(handle);
    } catch {
      // The handle is closed next whatever happened here.
    }
    return close.apply(handle, args);
  };
}
