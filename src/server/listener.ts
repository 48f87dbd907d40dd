/**
 * The shape every listener shares (HTTP, gRPC, monitoring): how it is bound, where it is bound, how it drains and
 * stops, how a failure to bind is reported, and its TLS and access check (docs/security.md).
 */
import type { Server } from "node:net";
import { formatHostPort, type ListenAddress } from "../listen_address.ts";
import { log } from "../log.ts";
import type { Gate } from "./auth.ts";
import type { ConnectionLimits } from "./limits.ts";
import type { TlsSource } from "./tls.ts";

/** How a listener is bound. */
export interface ListenerOptions {
  /** "host:port" or ":port" (all interfaces); port 0 picks a free one. */
  listen: string;
  /** TLS (and mTLS when it has a client CA); plain text when absent. */
  tls?: TlsSource;
  /** Who may write to which topic; absent: anyone, anywhere, at no cost per request. */
  gate?: Gate;
  /** Connection count and timeouts; absent: the defaults of `server.<listener>.*`. */
  limits?: ConnectionLimits;
}

/** A running listener. */
export interface Listener {
  /** "host:port" as bound: the real port when the config said 0. */
  readonly address: string;
  readonly port: number;
  /** While on, new requests are refused (503, or UNAVAILABLE), and health reports that the service is stopping. */
  setDraining(on: boolean): void;
  /** Stops taking requests, lets those in flight end (within a bound), then closes. */
  shutdown(): Promise<void>;
}

/**
 * The start-up error for a listener that cannot bind: names the listener and the address, as the OS error
 * alone ("Address already in use (os error 98)") does not say which port of which listener.
 * @example listenError("http", { hostname: "0.0.0.0", port: 18080 }, err).message
 * // "http listener 0.0.0.0:18080: address already in use"
 */
export function listenError(listener: string, addr: ListenAddress, err: unknown): Error {
  const text = (err instanceof Error ? err.message : String(err)).replace(/ \(os error \d+\)$/, "");
  const reason = text.charAt(0).toLowerCase() + text.slice(1);
  return new Error(`${listener} listener ${formatHostPort(addr)}: ${reason}`, { cause: err });
}

/** Errors of node's listen() in words, as Deno.serve reports them. */
const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: "address already in use",
  EACCES: "permission denied",
  EADDRNOTAVAIL: "address not available",
};

/** A node:net listen() error in the words listenError reports. */
function nodeListenError(err: NodeJS.ErrnoException): string {
  return LISTEN_ERRORS[err.code ?? ""] ?? err.message;
}

/**
 * Binds a node:net or node:tls server (the gRPC and TLS HTTP listeners) and resolves with its port; rejects with
 * listenError when it cannot bind. Later server errors are logged.
 */
export function listenNode(server: Server, listener: string, addr: ListenAddress): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => reject(listenError(listener, addr, nodeListenError(err)));
    server.once("error", onError);
    server.listen({ port: addr.port, host: addr.hostname }, () => {
      server.off("error", onError);
      server.on("error", (err) => log("error", `${listener}: listener error`, { error: err }));
      resolve((server.address() as { port: number }).port);
    });
  });
}
