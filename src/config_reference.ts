/**
 * The reference config file, written from the key table: every key with its default (or an example for keys
 * that are off by default) and its line of documentation. `config/example.yaml` is this text; a test fails when
 * they differ.
 *
 * Run: deno task config-reference   (rewrites config/example.yaml)
 */
import { BROKERS, Key, SCHEMA } from "./config_keys.ts";

const HEADER = `# kafka-ambassador configuration: every key with its default.
# Written from the key table (src/config_keys.ts) by \`deno task config-reference\`; do not edit by hand.
#
# Keys may be nested (producer: {cb: {fails: 5}}), flat with dots (producer.cb.fails: 5) or mixed.
# Durations: Go-style strings (250ms, 20s, 10m, 1h30m, 1.5s, 300us, 0); a bare number means SECONDS (20 = 20s).
# Sizes: bytes, or a number with a unit: decimal (100k, 2GB) or binary (512MiB, 4Mi).
# Environment overrides win over this file: KA_<KEY IN UPPER CASE>, dots kept or written as "__"
# (KA_PRODUCER.RESEND.PERIOD=5s or KA_PRODUCER__RESEND__PERIOD=5s); list values are comma-separated.
`;

const KAFKA_FOOTER =
  `# Every other key goes verbatim to librdkafka (see librdkafka's CONFIGURATION.md), for example:
# compression.codec: lz4
# batch.num.messages: 10000
# message.timeout.ms: 300000
# acks: all
# security.protocol: ssl
# ssl.ca.location: /etc/kafka/ca.pem
`;

/** The reference file's text. */
export function configReference(): string {
  const sections = Object.entries(SCHEMA).map(([name, node]) => section(name, node, ""));
  sections.push(section("kafka", { brokers: BROKERS }, "") + KAFKA_FOOTER);
  return `${HEADER}\n${sections.join("\n")}`;
}

/** A section and what it holds, indented two spaces a level; `path` is the dotted name of its parent. */
function section(name: string, node: object, indent: string, path = ""): string {
  const here = path === "" ? name : `${path}.${name}`;
  let out = `${indent}${name}:\n`;
  for (const [field, child] of Object.entries(node)) {
    out += child instanceof Key
      ? line(child, here, `${indent}  `)
      : section(field, child, `${indent}  `, here);
  }
  return out;
}

function line(key: Key<unknown>, path: string, indent: string): string {
  const leaf = key.name.slice(path.length + 1);
  let doc = key.doc;
  if (key.example !== undefined && key.defaultValue !== undefined) {
    doc += ` (default ${key.kind.show(key.defaultValue)})`;
  }
  return `${indent}${leaf}: ${key.example ?? key.kind.show(key.defaultValue)} # ${doc}\n`;
}

if (import.meta.main) {
  const path = new URL("../config/example.yaml", import.meta.url);
  await Deno.writeTextFile(path, configReference());
  console.log(`wrote ${path.pathname}`);
}
