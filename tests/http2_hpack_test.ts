/**
 * HPACK (src/server/http2/hpack.ts, huffman.ts): the examples of RFC 7541 Appendix C, header blocks made by
 * Python's hpack (another implementation, with its dynamic table and Huffman coding), malformed blocks, and our
 * encoder read back by Python's decoder.
 */
import assert from "node:assert/strict";
import { encodeHeaders, type HeaderField, HpackDecoder, HpackError } from "../src/server/http2/hpack.ts";
import { huffmanDecode } from "../src/server/http2/huffman.ts";
import { PYTHON, requireH2 } from "./support/h2_peer.ts";

const hex = (s: string) => Uint8Array.from(s.replace(/\s+/g, "").match(/../g)!.map((b) => parseInt(b, 16)));

/** RFC 7541 C.3 (plain literals) and C.4 (the same requests Huffman-coded), each a sequence on one decoder. */
const REQUESTS: Array<{ fields: HeaderField[]; tableBytes: number }> = [
  {
    fields: [[":method", "GET"], [":scheme", "http"], [":path", "/"], [":authority", "www.example.com"]],
    tableBytes: 57,
  },
  {
    fields: [
      [":method", "GET"],
      [":scheme", "http"],
      [":path", "/"],
      [":authority", "www.example.com"],
      ["cache-control", "no-cache"],
    ],
    tableBytes: 110,
  },
  {
    fields: [
      [":method", "GET"],
      [":scheme", "https"],
      [":path", "/index.html"],
      [":authority", "www.example.com"],
      ["custom-key", "custom-value"],
    ],
    tableBytes: 164,
  },
];

Deno.test("hpack: RFC 7541 C.3, requests without Huffman coding", () => {
  const decoder = new HpackDecoder();
  const blocks = [
    "828684410f7777772e6578616d706c652e636f6d",
    "828684be58086e6f2d6361636865",
    "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
  ];
  blocks.forEach((block, i) => {
    const got = decoder.decode(hex(block));
    assert.deepEqual(got.fields, REQUESTS[i].fields, `C.3.${i + 1}`);
    assert.equal(decoder.tableBytes, REQUESTS[i].tableBytes, `C.3.${i + 1} table size`);
  });
});

Deno.test("hpack: RFC 7541 C.4, requests with Huffman coding", () => {
  const decoder = new HpackDecoder();
  const blocks = [
    "828684418cf1e3c2e5f23a6ba0ab90f4ff",
    "828684be5886a8eb10649cbf",
    "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
  ];
  blocks.forEach((block, i) => {
    const got = decoder.decode(hex(block));
    assert.deepEqual(got.fields, REQUESTS[i].fields, `C.4.${i + 1}`);
    assert.equal(decoder.tableBytes, REQUESTS[i].tableBytes, `C.4.${i + 1} table size`);
  });
});

Deno.test("hpack: RFC 7541 C.5 and C.6, eviction from a 256-byte table (responses, plain and Huffman)", () => {
  const responses: HeaderField[][] = [
    [
      [":status", "302"],
      ["cache-control", "private"],
      ["date", "Mon, 21 Oct 2013 20:13:21 GMT"],
      ["location", "https://www.example.com"],
    ],
    [
      [":status", "307"],
      ["cache-control", "private"],
      ["date", "Mon, 21 Oct 2013 20:13:21 GMT"],
      ["location", "https://www.example.com"],
    ],
    [
      [":status", "200"],
      ["cache-control", "private"],
      ["date", "Mon, 21 Oct 2013 20:13:22 GMT"],
      ["location", "https://www.example.com"],
      ["content-encoding", "gzip"],
      ["set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"],
    ],
  ];
  const sizes = [222, 222, 215];
  const plain = [
    "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d546e1768747470" +
    "733a2f2f7777772e6578616d706c652e636f6d",
    "4803333037c1c0bf",
    "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f6f3d4153444a4b" +
    "48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b2076657273696f6e3d31",
  ];
  const huffman = [
    "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82" +
    "ae43d3",
    "4883640effc1c0bf",
    "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5" +
    "af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
  ];
  for (const [name, blocks] of [["C.5", plain], ["C.6", huffman]] as const) {
    // A table of 256 bytes: the peer's size update opens the first block.
    const decoder = new HpackDecoder();
    blocks.forEach((block, i) => {
      const got = decoder.decode(hex(i === 0 ? "3fe101" + block : block));
      assert.deepEqual(got.fields, responses[i], `${name}.${i + 1}`);
      assert.equal(decoder.tableBytes, sizes[i], `${name}.${i + 1} table size`);
    });
  }
});

Deno.test("hpack: malformed blocks are HpackErrors naming the fault", () => {
  const cases: Array<[string, string, RegExp]> = [
    ["80", "index 0", /index 0/],
    ["be", "index beyond both tables", /beyond the tables/],
    ["0f", "block ends inside an integer", /inside an integer/],
    ["0f ff ff ff ff 0f", "an integer past 2^28", /too large/],
    ["00 05 61 62", "a string longer than the block", /longer than the header block/],
    ["3fe21f", "a table size update over our SETTINGS", /over the limit 4096/],
    ["82 20", "a table size update after a field", /after a header field/],
    // 'a' (00011) then 11 one bits of padding: more than 7.
    ["00 82 1f ff 81 61", "Huffman padding longer than 7 bits", /padding longer than 7 bits/],
    // 'a' (00011) then 000: padding not of 1 bits.
    ["00 81 18 81 61", "Huffman padding of 0 bits", /padding not made of 1 bits/],
    // EOS (30 ones) then 2 more ones: EOS inside the data.
    ["00 84 ff ff ff ff 81 61", "the EOS symbol inside a string", /EOS/],
  ];
  for (const [block, what, reason] of cases) {
    assert.throws(() => new HpackDecoder().decode(hex(block)), (err: unknown) => {
      assert.ok(err instanceof HpackError, what);
      assert.match(err.message, reason, what);
      return true;
    });
  }
});

Deno.test("hpack: every Huffman code (RFC 7541 Appendix B) decodes back to its byte", async () => {
  await requireH2();
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  const out = await python(`
import sys
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
sys.stdout.write(HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(bytes(range(256))).hex())`);
  assert.deepEqual(huffmanDecode(hex(out)), all);
});

Deno.test("hpack: blocks from Python's encoder (dynamic table, Huffman) decode to what it was given", async () => {
  await requireH2();
  // Requests a gRPC client sends again and again on one connection, with metadata that evicts entries.
  const script = `
import json, random, sys
from hpack import Encoder
random.seed(7)
enc = Encoder()
enc.header_table_size = 4096
out = []
for i in range(200):
    fields = [(":method", "POST"), (":scheme", "http"), (":path", "/KafkaAmbassador/Produce"),
              (":authority", "127.0.0.1:18282"), ("content-type", "application/grpc"), ("te", "trailers"),
              ("user-agent", "grpc-go/1.7%d" % (i % 3)), ("x-request-id", "%032x" % random.getrandbits(128)),
              ("x-bin-bin", "".join(random.choice("ABCDEFabcdef0123456789+/") for _ in range(random.randint(0, 300))))]
    huffman = i % 2 == 0
    out.append({"block": enc.encode(fields, huffman=huffman).hex(), "fields": fields})
print(json.dumps(out))`;
  const blocks: Array<{ block: string; fields: HeaderField[] }> = JSON.parse(await python(script));
  const decoder = new HpackDecoder();
  for (const [i, { block, fields }] of blocks.entries()) {
    assert.deepEqual(decoder.decode(hex(block)).fields, fields, `block ${i}`);
  }
});

Deno.test("hpack: our response headers and trailers read back through Python's decoder", async () => {
  await requireH2();
  const sets: HeaderField[][] = [
    [[":status", "200"], ["content-type", "application/grpc"]],
    [[":status", "415"], ["content-type", "application/grpc"], ["grpc-status", "3"]],
    [["grpc-status", "0"]],
    [["grpc-status", "13"], ["grpc-message", "x".repeat(300)]],
  ];
  const blocks = sets.map((s) =>
    Array.from(encodeHeaders(s), (b) => b.toString(16).padStart(2, "0")).join("")
  );
  const out = await python(`
import json, sys
from hpack import Decoder
d = Decoder()
print(json.dumps([d.decode(bytes.fromhex(b)) for b in ${JSON.stringify(blocks)}]))`);
  assert.deepEqual(JSON.parse(out), sets);
  // :status 200 is one byte: index 8 of the static table.
  assert.deepEqual(encodeHeaders([[":status", "200"]]), Uint8Array.of(0x88));
});

async function python(script: string): Promise<string> {
  const out = await new Deno.Command(PYTHON, { args: ["-c", script], stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`python: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout).trim();
}
