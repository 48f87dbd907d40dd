/** The key table is the one source: config/example.yaml is written from it, and says what the code does. */
import assert from "node:assert/strict";
import { parse } from "yaml";
import { Key, KEYS, SCHEMA } from "../src/config_keys.ts";
import { configReference } from "../src/config_reference.ts";
import { parseConfig } from "../src/config.ts";

const EXAMPLE = new URL("../config/example.yaml", import.meta.url);

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
  assert.deepEqual([...file.keys()].sort(), [...KEYS.keys()].sort());
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

/** Each key of a schema subtree with the value at the same place in `values`. */
function valuesByKey(schema: object, values: Record<string, unknown>): Array<[Key<unknown>, unknown]> {
  return Object.entries(schema).flatMap(([field, node]): Array<[Key<unknown>, unknown]> =>
    node instanceof Key
      ? [[node, values[field]]]
      : valuesByKey(node, values[field] as Record<string, unknown>)
  );
}
