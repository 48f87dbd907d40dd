/** Server reflection that grpcurl can use for KafkaAmbassador and grpc.health.v1.Health. */
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";

/**
 * grpc.health.v1.Health as reflection describes it: the classic Check and Watch methods. The proto shipped with
 * grpc-health-check also has `List`, whose map field protobufjs turns into a descriptor that clients reject
 * ("invalid map: incorrect implicit map entry name"), which would make grpcurl refuse the whole service.
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

/** The lookup tables inside @grpc/reflection's v1 and v1alpha implementations. */
interface ReflectionIndex {
  services?: Record<string, unknown>;
  symbols?: Record<string, unknown>;
}

/**
 * Builds the reflection service for `definition` plus the health service.
 * @example reflectionFor(definition).addToServer(server)
 */
export function reflectionFor(definition: protoLoader.PackageDefinition): ReflectionService {
  const health = protoLoader.fromJSON(HEALTH_SCHEMA as Parameters<typeof protoLoader.fromJSON>[0]);
  const reflection = new ReflectionService({ ...definition, ...health });
  rekeyPackagelessSymbols(reflection);
  return reflection;
}

/**
 * @grpc/reflection keys the symbols of a proto without a `package` line with a leading dot (".KafkaAmbassador"),
 * so it lists a service that no client can then resolve (grpcurl: "Symbol not found: KafkaAmbassador").
 * Our proto must stay package-less (COMPAT.md), so the keys are rewritten to the real full names.
 */
function rekeyPackagelessSymbols(reflection: ReflectionService): void {
  const impls = reflection as unknown as { v1?: ReflectionIndex; v1Alpha?: ReflectionIndex };
  for (const impl of [impls.v1, impls.v1Alpha]) {
    for (const table of [impl?.services, impl?.symbols]) {
      if (table === undefined) continue;
      for (const name of Object.keys(table)) {
        if (!name.startsWith(".")) continue;
        table[name.slice(1)] = table[name];
        delete table[name];
      }
    }
  }
}
