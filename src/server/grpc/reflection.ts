/**
 * gRPC server reflection, v1 and v1alpha (grpcurl asks v1 first, older clients v1alpha): lists the services and
 * returns file descriptors by symbol or file name. Extensions are not used by our protos, so extension
 * queries get NOT_FOUND.
 */
import type protobuf from "protobufjs";
import type { GrpcCall } from "./call.ts";
import type { DescribedFile, Schemas } from "./schema.ts";
import { Status } from "./status.ts";

/** Method paths of the two reflection versions. */
export const REFLECTION_PATHS = [
  "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
  "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/** Response bytes a reflection stream's client may leave untaken before its requests wait. */
const MAX_UNSENT_BYTES = 256 * 1024;

/** Answers reflection requests from an index of the files served. */
export class Reflection {
  readonly #files: DescribedFile[];
  readonly #byName = new Map<string, DescribedFile>();
  readonly #bySymbol = new Map<string, DescribedFile>();
  readonly #types: Map<string, { request: protobuf.Type; response: protobuf.Type }>;

  constructor(schemas: Schemas, files: DescribedFile[]) {
    this.#files = files;
    for (const file of files) {
      this.#byName.set(file.name, file);
      for (const symbol of file.symbols) this.#bySymbol.set(symbol, file);
    }
    this.#types = new Map(
      REFLECTION_PATHS.map((path) => {
        const pkg = path.slice(1, path.indexOf(".ServerReflection/"));
        return [path, {
          request: schemas.reflection.lookupType(`${pkg}.ServerReflectionRequest`),
          response: schemas.reflection.lookupType(`${pkg}.ServerReflectionResponse`),
        }];
      }),
    );
  }

  /**
   * Serves one ServerReflectionInfo stream: one response per request, until the client half-closes. While the
   * client has not taken MAX_UNSENT_BYTES of them, its requests are not read (HTTP/2 flow control then holds it
   * back): a response may be a hundred times its request.
   */
  serve(path: string, call: GrpcCall): void {
    const types = this.#types.get(path)!;
    call.onDrain = () => {
      if (call.bufferedBytes <= MAX_UNSENT_BYTES / 2) call.resumeReading();
    };
    call.start({
      onMessage: (bytes) => {
        let request: Record<string, unknown>;
        try {
          request = types.request.toObject(types.request.decode(bytes), { oneofs: true });
        } catch (err) {
          call.end(Status.INTERNAL, `cannot decode ServerReflectionRequest: ${(err as Error).message}`);
          return;
        }
        const response = {
          valid_host: request.host ?? "",
          original_request: request,
          ...this.#answer(request),
        };
        call.send(types.response.encode(types.response.fromObject(response)).finish());
        if (call.bufferedBytes > MAX_UNSENT_BYTES) call.pauseReading();
      },
      onHalfClose: () => call.end(Status.OK),
      onEnd: () => {},
    });
  }

  #answer(request: Record<string, unknown>): Record<string, unknown> {
    switch (request.message_request) {
      case "list_services":
        return {
          list_services_response: {
            service: this.#files.flatMap((f) => f.services).map((name) => ({ name })),
          },
        };
      case "file_containing_symbol": {
        const symbol = String(request.file_containing_symbol);
        const file = this.#bySymbol.get(symbol.startsWith(".") ? symbol.slice(1) : symbol);
        return file ? described(file) : notFound(`symbol not found: ${symbol}`);
      }
      case "file_by_filename": {
        const file = this.#byName.get(String(request.file_by_filename));
        return file ? described(file) : notFound(`file not found: ${request.file_by_filename}`);
      }
      case "file_containing_extension":
        return notFound("extensions are not used");
      case "all_extension_numbers_of_type": {
        const type = String(request.all_extension_numbers_of_type);
        if (!this.#bySymbol.has(type)) return notFound(`type not found: ${type}`);
        return { all_extension_numbers_response: { base_type_name: type, extension_number: [] } };
      }
    }
    return { error_response: { error_code: Status.INVALID_ARGUMENT, error_message: "empty request" } };
  }
}

function described(file: DescribedFile): Record<string, unknown> {
  return { file_descriptor_response: { file_descriptor_proto: [file.descriptor] } };
}

function notFound(message: string): Record<string, unknown> {
  return { error_response: { error_code: Status.NOT_FOUND, error_message: message } };
}
