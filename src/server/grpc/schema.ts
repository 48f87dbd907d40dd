/**
 * The services served, as protobufjs schemas: KafkaAmbassador from proto/kafka_ambassador.proto, the classic
 * grpc.health.v1.Health, and grpc.reflection (v1 and v1alpha, same messages). Used for the cold messages
 * (ListTopics, health, reflection) and to describe the services to reflection clients.
 */
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";
// Imported as text so that the compiled binary and the one-file bundle carry it: no file to find at run time.
import PROTO_TEXT from "../../../proto/kafka_ambassador.proto" with { type: "text" };

/** Where the service definition lives in the source tree, for clients that load it from disk. */
export const PROTO_PATH = fileURLToPath(new URL("../../../proto/kafka_ambassador.proto", import.meta.url));

/** The health service name. */
export const HEALTH_SERVICE = "grpc.health.v1.Health";

type Schema = Parameters<typeof protobuf.Root.fromJSON>[0];

/**
 * grpc.health.v1 with only Check and Watch. The upstream proto also has `List`, whose map field comes out of
 * protobufjs as a descriptor that clients reject ("invalid map: incorrect implicit map entry name"), which
 * would make grpcurl refuse the whole service.
 */
const HEALTH_SCHEMA = {
  nested: {
    grpc: {
      nested: {
        health: {
          nested: {
            v1: {
              nested: {
                HealthCheckRequest: { fields: { service: { type: "string", id: 1 } } },
                HealthCheckResponse: {
                  fields: { status: { type: "ServingStatus", id: 1 } },
                  nested: {
                    ServingStatus: { values: { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } },
                  },
                },
                Health: {
                  methods: {
                    Check: { requestType: "HealthCheckRequest", responseType: "HealthCheckResponse" },
                    Watch: {
                      requestType: "HealthCheckRequest",
                      responseType: "HealthCheckResponse",
                      responseStream: true,
                    },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
};

/** The messages of grpc.reflection.v1 (v1alpha has the same ones, with the same numbers). */
const REFLECTION_MESSAGES = {
  ServerReflectionRequest: {
    oneofs: {
      message_request: {
        oneof: [
          "file_by_filename",
          "file_containing_symbol",
          "file_containing_extension",
          "all_extension_numbers_of_type",
          "list_services",
        ],
      },
    },
    fields: {
      host: { type: "string", id: 1 },
      file_by_filename: { type: "string", id: 3 },
      file_containing_symbol: { type: "string", id: 4 },
      file_containing_extension: { type: "ExtensionRequest", id: 5 },
      all_extension_numbers_of_type: { type: "string", id: 6 },
      list_services: { type: "string", id: 7 },
    },
  },
  ExtensionRequest: {
    fields: { containing_type: { type: "string", id: 1 }, extension_number: { type: "int32", id: 2 } },
  },
  ServerReflectionResponse: {
    fields: {
      valid_host: { type: "string", id: 1 },
      original_request: { type: "ServerReflectionRequest", id: 2 },
      file_descriptor_response: { type: "FileDescriptorResponse", id: 4 },
      all_extension_numbers_response: { type: "ExtensionNumberResponse", id: 5 },
      list_services_response: { type: "ListServiceResponse", id: 6 },
      error_response: { type: "ErrorResponse", id: 7 },
    },
  },
  FileDescriptorResponse: { fields: { file_descriptor_proto: { rule: "repeated", type: "bytes", id: 1 } } },
  ExtensionNumberResponse: {
    fields: {
      base_type_name: { type: "string", id: 1 },
      extension_number: { rule: "repeated", type: "int32", id: 2 },
    },
  },
  ListServiceResponse: { fields: { service: { rule: "repeated", type: "ServiceResponse", id: 1 } } },
  ServiceResponse: { fields: { name: { type: "string", id: 1 } } },
  ErrorResponse: {
    fields: { error_code: { type: "int32", id: 1 }, error_message: { type: "string", id: 2 } },
  },
};

const REFLECTION_SCHEMA = {
  nested: {
    grpc: {
      nested: {
        reflection: {
          nested: { v1: { nested: REFLECTION_MESSAGES }, v1alpha: { nested: REFLECTION_MESSAGES } },
        },
      },
    },
  },
};

/** The subset of google/protobuf/descriptor.proto needed to describe our files, with field 17 included. */
const DESCRIPTOR_SCHEMA = {
  nested: {
    FileDescriptorProto: {
      fields: {
        name: { type: "string", id: 1 },
        package: { type: "string", id: 2 },
        dependency: { rule: "repeated", type: "string", id: 3 },
        messageType: { rule: "repeated", type: "DescriptorProto", id: 4 },
        enumType: { rule: "repeated", type: "EnumDescriptorProto", id: 5 },
        service: { rule: "repeated", type: "ServiceDescriptorProto", id: 6 },
        syntax: { type: "string", id: 12 },
      },
    },
    DescriptorProto: {
      fields: {
        name: { type: "string", id: 1 },
        field: { rule: "repeated", type: "FieldDescriptorProto", id: 2 },
        nestedType: { rule: "repeated", type: "DescriptorProto", id: 3 },
        enumType: { rule: "repeated", type: "EnumDescriptorProto", id: 4 },
        oneofDecl: { rule: "repeated", type: "OneofDescriptorProto", id: 8 },
      },
    },
    FieldDescriptorProto: {
      fields: {
        name: { type: "string", id: 1 },
        number: { type: "int32", id: 3 },
        label: { type: "int32", id: 4 },
        type: { type: "int32", id: 5 },
        typeName: { type: "string", id: 6 },
        oneofIndex: { type: "int32", id: 9 },
        jsonName: { type: "string", id: 10 },
        proto3Optional: { type: "bool", id: 17 },
      },
    },
    OneofDescriptorProto: { fields: { name: { type: "string", id: 1 } } },
    EnumDescriptorProto: {
      fields: {
        name: { type: "string", id: 1 },
        value: { rule: "repeated", type: "EnumValueDescriptorProto", id: 2 },
      },
    },
    EnumValueDescriptorProto: {
      fields: { name: { type: "string", id: 1 }, number: { type: "int32", id: 2 } },
    },
    ServiceDescriptorProto: {
      fields: {
        name: { type: "string", id: 1 },
        method: { rule: "repeated", type: "MethodDescriptorProto", id: 2 },
      },
    },
    MethodDescriptorProto: {
      fields: {
        name: { type: "string", id: 1 },
        inputType: { type: "string", id: 2 },
        outputType: { type: "string", id: 3 },
        clientStreaming: { type: "bool", id: 5 },
        serverStreaming: { type: "bool", id: 6 },
      },
    },
  },
};

/** The protobufjs types every cold path uses, resolved once. */
export interface Schemas {
  /** Types and services of proto/kafka_ambassador.proto. */
  service: protobuf.Root;
  health: protobuf.Root;
  reflection: protobuf.Root;
  listTopicsResponse: protobuf.Type;
  healthCheckRequest: protobuf.Type;
  healthCheckResponse: protobuf.Type;
}

/** Parses the service definition and builds the other schemas; throws naming the proto when it is invalid. */
export function loadSchemas(): Schemas {
  let service: protobuf.Root;
  try {
    service = protobuf.parse(PROTO_TEXT).root;
    service.resolveAll();
  } catch (err) {
    throw new Error(`grpc: cannot parse kafka_ambassador.proto: ${err instanceof Error ? err.message : err}`);
  }
  const health = protobuf.Root.fromJSON(HEALTH_SCHEMA as Schema);
  health.resolveAll();
  const reflection = protobuf.Root.fromJSON(REFLECTION_SCHEMA as Schema);
  reflection.resolveAll();
  return {
    service,
    health,
    reflection,
    listTopicsResponse: service.lookupType("ListTopicsResponse"),
    healthCheckRequest: health.lookupType("grpc.health.v1.HealthCheckRequest"),
    healthCheckResponse: health.lookupType("grpc.health.v1.HealthCheckResponse"),
  };
}

const descriptorRoot = protobuf.Root.fromJSON(DESCRIPTOR_SCHEMA as Schema);
const FileDescriptorProto = descriptorRoot.lookupType("FileDescriptorProto");

/** FieldDescriptorProto.Type numbers of the scalar types. */
const SCALAR_TYPES: Record<string, number> = {
  double: 1,
  float: 2,
  int64: 3,
  uint64: 4,
  int32: 5,
  fixed64: 6,
  fixed32: 7,
  bool: 8,
  string: 9,
  bytes: 12,
  uint32: 13,
  sfixed32: 15,
  sfixed64: 16,
  sint32: 17,
  sint64: 18,
};
const TYPE_MESSAGE = 11;
const TYPE_ENUM = 14;
const LABEL_OPTIONAL = 1;
const LABEL_REPEATED = 3;

/** A proto file as reflection serves it: its serialized FileDescriptorProto and the symbols it defines. */
export interface DescribedFile {
  name: string;
  descriptor: Uint8Array;
  /** Full names (no leading dot) of its services, methods, messages and enums. */
  symbols: string[];
  services: string[];
}

/**
 * Describes the top-level types and services of `ns` as one proto3 file. Type names are fully qualified
 * with a leading dot, and proto3 `optional` fields carry `proto3_optional` with their synthetic oneof, as protoc
 * writes them: clients resolve names by these rules.
 */
export function describeFile(name: string, pkg: string, ns: protobuf.Namespace): DescribedFile {
  const symbols: string[] = [];
  const services: string[] = [];
  const messageType: unknown[] = [];
  const enumType: unknown[] = [];
  const service: unknown[] = [];
  for (const item of ns.nestedArray) {
    if (item instanceof protobuf.Type) messageType.push(describeType(item, symbols));
    else if (item instanceof protobuf.Enum) enumType.push(describeEnum(item, symbols));
    else if (item instanceof protobuf.Service) {
      const full = item.fullName.slice(1);
      symbols.push(full);
      services.push(full);
      service.push({
        name: item.name,
        method: item.methodsArray.map((m) => {
          symbols.push(`${full}.${m.name}`);
          return {
            name: m.name,
            inputType: m.resolvedRequestType!.fullName,
            outputType: m.resolvedResponseType!.fullName,
            clientStreaming: m.requestStream === true,
            serverStreaming: m.responseStream === true,
          };
        }),
      });
    }
  }
  const file: Record<string, unknown> = { name, messageType, enumType, service, syntax: "proto3" };
  if (pkg !== "") file.package = pkg;
  const descriptor = FileDescriptorProto.encode(FileDescriptorProto.fromObject(file)).finish();
  return { name, descriptor, symbols, services };
}

function describeType(t: protobuf.Type, symbols: string[]): unknown {
  symbols.push(t.fullName.slice(1));
  const oneofs = t.oneofsArray;
  const nestedType: unknown[] = [];
  const enumType: unknown[] = [];
  for (const item of t.nestedArray) {
    if (item instanceof protobuf.Type) nestedType.push(describeType(item, symbols));
    else if (item instanceof protobuf.Enum) enumType.push(describeEnum(item, symbols));
  }
  return {
    name: t.name,
    field: t.fieldsArray.map((f) => {
      const d: Record<string, unknown> = {
        name: f.name,
        number: f.id,
        label: f.repeated ? LABEL_REPEATED : LABEL_OPTIONAL,
        jsonName: f.name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()),
      };
      const scalar = SCALAR_TYPES[f.type];
      if (scalar !== undefined) {
        d.type = scalar;
      } else {
        d.type = f.resolvedType instanceof protobuf.Enum ? TYPE_ENUM : TYPE_MESSAGE;
        d.typeName = f.resolvedType!.fullName;
      }
      if (f.partOf) d.oneofIndex = oneofs.indexOf(f.partOf);
      if (f.options?.proto3_optional === true) d.proto3Optional = true;
      return d;
    }),
    nestedType,
    enumType,
    oneofDecl: oneofs.map((o) => ({ name: o.name })),
  };
}

function describeEnum(e: protobuf.Enum, symbols: string[]): unknown {
  symbols.push(e.fullName.slice(1));
  return { name: e.name, value: Object.entries(e.values).map(([name, number]) => ({ name, number })) };
}
