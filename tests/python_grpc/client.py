"""A gRPC client we did not write (grpcio, gRPC's C core) against the service: prints one JSON line of what it saw.

Usage: client.py HOST:PORT TOPIC RECORDS PROTO_DIR
Every call uncompressed but two Produce streams of 200 records, one in gzip and one in deflate.
Stubs are generated from the proto file at run time (grpc_tools), into a temporary directory.
"""
import json
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc

target, topic, records, proto_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
out = tempfile.mkdtemp(prefix="ka-pygrpc-")
if protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
                f"{proto_dir}/kafka_ambassador.proto"]) != 0:
    sys.exit("protoc failed")
sys.path.insert(0, out)
import kafka_ambassador_pb2 as pb  # noqa: E402
import kafka_ambassador_pb2_grpc as pbg  # noqa: E402

BAD_AT = records // 2
channel = grpc.insecure_channel(target)
stub = pbg.KafkaAmbassadorStub(channel)
seen = {}


def requests():
    for i in range(records):
        rq = pb.ProdRq(topic=topic if i != BAD_AT else "bad topic!", message=f"py-{i}".encode(),
                       streamOffset=i, ack="wal")
        if i % 2 == 0:
            rq.key = f"k{i % 7}".encode()
        if i % 3 == 0:
            rq.headers.append(pb.Header(key="h", value=b"v"))
        yield rq


for rs in stub.Produce(requests(), timeout=60):
    seen[rs.streamOffset] = (rs.code, rs.error)

result = {
    "answered": len(seen),
    "ok": sum(1 for code, _ in seen.values() if code == 0),
    "bad": list(seen.get(BAD_AT, (None, None))),
}


def status_of(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as err:
        return err.code().name


# Compressed calls: grpcio compresses every message of the channel and names the encoding in grpc-encoding.
COMPRESSED = 200
for name, compression in [("gzip", grpc.Compression.Gzip), ("deflate", grpc.Compression.Deflate)]:
    with grpc.insecure_channel(target, compression=compression) as zipped:
        rqs = (pb.ProdRq(topic=topic, message=f"{name}-{i}".encode() * 20, streamOffset=i, ack="wal")
               for i in range(COMPRESSED))
        replies = list(pbg.KafkaAmbassadorStub(zipped).Produce(rqs, timeout=30))
        result[name] = sum(1 for rs in replies if rs.code == 0)

big = pb.ProdRq(topic=topic, message=b"x" * (5 * 1024 * 1024), streamOffset=1)
result["too_large"] = status_of(lambda: list(stub.Produce(iter([big]), timeout=10)))
result["unknown_method"] = status_of(lambda: channel.unary_unary("/KafkaAmbassador/Nope")(b"", timeout=10))
result["list_topics"] = status_of(lambda: stub.ListTopics(pb.Empty(), timeout=10))
health = health_pb2_grpc.HealthStub(channel)
result["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(
    health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status)
print(json.dumps(result))
