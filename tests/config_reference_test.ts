/**
 * The key table is the one source: config/example.yaml and README.md's config table are written from it, and say
 * what the code does.
 */
import assert from "node:assert/strict";
import { parse } from "yaml";
import { Key, KEYS, SCHEMA } from "../src/config_keys.ts";
import {
  configReference,
  README_END,
  README_START,
  readmeTable,
  withReadmeTable,
} from "../src/config_reference.ts";
import { parseConfig } from "../src/config.ts";

const EXAMPLE = new URL("../config/example.yaml", import.meta.url);
const README = new URL("../README.md", import.meta.url);

/** A flat view of a parsed config file: dotted key -> value. */
function flatten(value: unknown, prefix = "", out = new Map<string, unknown>()): Map<string, unknown> {
  for (const [name, child] of Object.entries(value as Record<string, unknown>)) {
    const key = prefix === "" ? name : `${prefix}.${name}`;
    if (typeof child === "object" && child !== null && !Array.isArray(child)) flatten(child, key, out);
    else out.set(key, child);
  }
  return out;
}

Deno.test("config/example.yaml is the reference written from the key table (deno task config-reference)", async () => {
  assert.equal(await Deno.readTextFile(EXAMPLE), configReference());
});

Deno.test("the reference lists every key of the table, and only those", async () => {
  const file = flatten(parse(await Deno.readTextFile(EXAMPLE)));
  assert.deepEqual([...file.keys()].sort(), [...KEYS.values()].map((key) => key.name).sort());
});

Deno.test("every key's default, as the reference writes it, reads back as the default", () => {
  for (const key of KEYS.values()) {
    const shown = key.kind.show(key.defaultValue);
    const raw = parse(`v: ${shown}`, { schema: "failsafe", customTags: ["null", "bool"] }).v;
    assert.deepEqual(key.kind.read(raw), key.defaultValue, `${key.name}: ${shown}`);
  }
});

Deno.test("parsing the reference gives the defaults for every key it does not show as an example", async () => {
  const config = parseConfig(await Deno.readTextFile(EXAMPLE), {});
  const pairs = valuesByKey(SCHEMA, config as unknown as Record<string, unknown>);
  assert.equal(pairs.length, KEYS.size - 1, "every key but kafka.brokers has a Config field");
  for (const [key, value] of pairs) {
    if (key.example === undefined) assert.deepEqual(value, key.defaultValue, key.name);
    else assert.notEqual(value, undefined, `${key.name}: the example is a value`);
  }
});

Deno.test("README.md's config table is the one written from the key table (deno task config-reference)", async () => {
  const readme = await Deno.readTextFile(README);
  const start = readme.indexOf(README_START);
  const end = readme.indexOf(README_END);
  assert.ok(start >= 0 && end > start, `README.md has ${README_START} ... ${README_END}`);
  assert.equal(readme.slice(start + README_START.length, end).trim(), readmeTable());
});

Deno.test("the README table has one row per key, in table order, with the key's default", () => {
  const rows = readmeTable().split("\n").slice(2).map((row) =>
    row.slice(1, -1).split(" | ").map((cell) => cell.trim())
  );
  assert.deepEqual(rows.map(([name]) => name), [...KEYS.values()].map((key) => `\`${key.name}\``));
  for (const key of KEYS.values()) {
    const unset = key.defaultValue === undefined || key.defaultValue === "";
    const row = rows.find(([name]) => name === `\`${key.name}\``)!;
    assert.equal(row[1], unset ? "unset" : `\`${key.kind.show(key.defaultValue)}\``, key.name);
  }
});

Deno.test("rewriting README.md's config table changes only what lies between the markers", () => {
  const readme = `# Title\n\ntext before\n\n${README_START}\nstale\n${README_END}\n\ntext after\n`;
  const written = withReadmeTable(readme);
  assert.equal(
    written,
    `# Title\n\ntext before\n\n${README_START}\n\n${readmeTable()}\n\n${README_END}\n\ntext after\n`,
  );
  assert.equal(withReadmeTable(written), written);
  assert.throws(() => withReadmeTable("# no markers\n"), /config-reference:start/);
});

/** Each key of a schema subtree with the value at the same place in `values`. */
function valuesByKey(schema: object, values: Record<string, unknown>): Array<[Key<unknown>, unknown]> {
  return Object.entries(schema).flatMap(([field, node]): Array<[Key<unknown>, unknown]> =>
    node instanceof Key
      ? [[node, values[field]]]
      : valuesByKey(node, values[field] as Record<string, unknown>)
  );
}
