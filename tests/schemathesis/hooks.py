"""Schemathesis hooks for tests/schemathesis_test.ts: batch bodies, and the one reply OpenAPI cannot describe."""
import json

import schemathesis
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

BATCH_TYPES = ("application/x-ndjson", "application/jsonl")


@schemathesis.serializer(*BATCH_TYPES)
def ndjson(ctx, value):
    """A batch body: each generated item is one line of JSON."""
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode()


@schemathesis.check
def documented_reply(ctx, response, case):
    """content_type_conformance and response_schema_conformance, except for a single message's 200 with
    ack=none or ack=wal: empty, without Content-Type, beside the JSON 200 of ack=kafka and of batches."""
    # What was sent, not what the case meant to send: a case may carry a batch media type and no body.
    sent_type = response.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    single = sent_type not in BATCH_TYPES
    ack = (case.query or {}).get("ack")
    if response.status_code == 200 and single and ack != "kafka":
        if response.content:
            raise AssertionError(f"a single message's 200 with ack={ack} has a body: {response.content[:80]!r}")
        if "content-type" in {k.lower() for k in response.headers}:
            raise AssertionError("a single message's empty 200 has a Content-Type")
        return None
    content_type_conformance(ctx, response, case)
    response_schema_conformance(ctx, response, case)
    return None
