/**
 * The config reference, written from the key table in two places: `config/example.yaml` (every key with its
 * default, or an example for keys that are off by default, and its line of documentation) and the marked section
 * of README.md (one table row per key). A test fails when either differs from the table.
 *
 * Run: deno task config-reference   (rewrites config/example.yaml and README.md's section)
 */
import { BROKERS, GO_KEYS_WITHOUT_EFFECT, Key, KEYS, SCHEMA } from "./config_keys.ts";
import { LIBRDKAFKA_DEFAULTS } from "./kafka/defaults.ts";

const HEADER =
  `# kafka-ambassador configuration: every key with its default, or an example where the service has none
# to offer (the listeners, off when unset) or one unfit to copy (the WAL path, its default in the comment).
# It names no broker: set kafka.brokers before using it.
# Written from the key table (src/config_keys.ts) by \`deno task config-reference\`; do not edit by hand.
#
# Keys may be nested (producer: {cb: {fails: 5}}), flat with dots (producer.cb.fails: 5) or mixed.
# Durations: Go-style strings (250ms, 20s, 10m, 1h30m, 1.5s, 300us, 0); a bare number means SECONDS (20 = 20s).
# Sizes: bytes, or a number with a unit: decimal (100k, 2GB) or binary (512MiB, 4Mi).
# Environment overrides win over this file: KA_<KEY IN UPPER CASE>, dots kept or written as "__"
# (KA_PRODUCER.RESEND.PERIOD=5s or KA_PRODUCER__RESEND__PERIOD=5s); list values are separated by commas or white space
# (global.log.outputPaths: by commas only).
`;

const KAFKA_FOOTER =
  `# Every other key goes verbatim to librdkafka (see librdkafka's CONFIGURATION.md), for example:
# compression.codec: lz4
# batch.num.messages: 10000
# message.timeout.ms: 300000
# acks: all
# security.protocol: ssl
# ssl.ca.location: /etc/kafka/ca.pem
# These are set unless given here (librdkafka's own defaults apply to the rest):
${Object.entries(LIBRDKAFKA_DEFAULTS).map(([key, value]) => `# ${key}: ${value}`).join("\n")}
`;

/** GO_KEYS_WITHOUT_EFFECT, grouped by reason. */
function goFooter(): string {
  let out =
    "# Keys of the Go service that are accepted and have no effect here (the start logs each one it finds):\n";
  for (const [why, keys] of Map.groupBy(GO_KEYS_WITHOUT_EFFECT, ([, why]) => why)) {
    out += `# - ${why}:\n${keys.map(([key]) => `#     ${key}\n`).join("")}`;
  }
  return out;
}

/** The reference file's text. */
export function configReference(): string {
  const sections = Object.entries(SCHEMA).map(([name, node]) => section(name, node, ""));
  sections.push(section("kafka", { brokers: BROKERS }, "") + KAFKA_FOOTER, goFooter());
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

/** The markers around README.md's generated section; what lies between them is `readmeTable()`. */
export const README_START = "<!-- config-reference:start -->";
export const README_END = "<!-- config-reference:end -->";

/**
 * The config table of README.md: one row per key (name, default, meaning), in table order, padded as `deno fmt`
 * pads a Markdown table so that formatting the README leaves it alone.
 */
export function readmeTable(): string {
  const rows = [...KEYS.values()].map((key) => {
    const unset = key.defaultValue === undefined || key.defaultValue === "";
    const meaning = unset && key.example !== undefined ? `${key.doc}; e.g. \`${key.example}\`` : key.doc;
    return [`\`${key.name}\``, unset ? "unset" : `\`${key.kind.show(key.defaultValue)}\``, meaning];
  });
  const table = [["key", "default", "meaning"], ...rows].map((row) =>
    row.map((cell) => cell.replaceAll("|", "\\|"))
  );
  const widths = table[0].map((_, column) => Math.max(3, ...table.map((row) => row[column].length)));
  const format = (row: string[]) => `| ${row.map((cell, i) => cell.padEnd(widths[i])).join(" | ")} |`;
  return [format(table[0]), format(widths.map((width) => "-".repeat(width))), ...table.slice(1).map(format)]
    .join("\n");
}

/** `readme` with the text between the markers replaced by the table; throws when a marker is missing. */
export function withReadmeTable(readme: string): string {
  const start = readme.indexOf(README_START);
  const end = readme.indexOf(README_END);
  if (start < 0 || end < start) {
    throw new Error(`README.md: the config table needs ${README_START} and then ${README_END}`);
  }
  return `${readme.slice(0, start + README_START.length)}\n\n${readmeTable()}\n\n${readme.slice(end)}`;
}

if (import.meta.main) {
  const example = new URL("../config/example.yaml", import.meta.url);
  await Deno.writeTextFile(example, configReference());
  console.log(`wrote ${example.pathname}`);
  const readme = new URL("../README.md", import.meta.url);
  await Deno.writeTextFile(readme, withReadmeTable(await Deno.readTextFile(readme)));
  console.log(`wrote the config table of ${readme.pathname}`);
}
