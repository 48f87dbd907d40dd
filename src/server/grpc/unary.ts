/** Calls with exactly one request message: the reply comes once the client has half-closed. */
import { logRepeated } from "../../log.ts";
import type { GrpcCall } from "./call.ts";
import { Status, type StatusCode } from "./status.ts";

/** A failed call: its status and message. */
export class CallError extends Error {
  constructor(readonly code: StatusCode, message: string) {
    super(message);
    this.name = "CallError";
  }
}

/**
 * Serves a unary call: `handle` gets the request bytes and returns the reply bytes, or throws a CallError.
 * `onEnd` gets the final status.
 */
export function serveUnary(
  call: GrpcCall,
  handle: (request: Uint8Array) => Promise<Uint8Array>,
  onEnd: (code: StatusCode) => void = () => {},
): void {
  let request: Uint8Array | undefined;
  call.start({
    onMessage: (bytes) => {
      if (request !== undefined) {
        call.end(Status.UNIMPLEMENTED, "more than one request message in a unary call");
      } else request = bytes;
    },
    onHalfClose: () => {
      if (request === undefined) {
        call.end(Status.UNIMPLEMENTED, "no request message in a unary call");
        return;
      }
      const bytes = request;
      Promise.resolve().then(() => handle(bytes)).then(
        (reply) => {
          call.send(reply);
          call.end(Status.OK);
        },
        (err) => {
          if (err instanceof CallError) call.end(err.code, err.message);
          else {
            // A bug, or a surprise; a client repeating the call must not write a line each time.
            logRepeated("grpc: call failed", "error", "grpc: call failed", { path: call.path, error: err });
            call.end(Status.INTERNAL, "internal error");
          }
        },
      );
    },
    onEnd,
  });
}
