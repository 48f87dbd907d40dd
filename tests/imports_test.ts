/**
 * Module boundaries, read from the source: imports between the top-level parts of src/ (its folders, and its
 * top-level files) run one way, and only src/kafka/librdkafka.ts touches FFI pointers.
 */
import assert from "node:assert/strict";
import { filesUnder } from "./support/files.ts";

const SRC = new URL("../src/", import.meta.url).pathname;
const IMPORT = /^\s*(?:import|export)\s[^;]*?from\s+"(\.{1,2}\/[^"]+)"/gm;
const FFI = /\bDeno\.(?:UnsafePointer|UnsafePointerView|UnsafeCallback|UnsafeFnPointer|dlopen)\b/;
const FFI_HOME = "kafka/librdkafka.ts";

/** The part of src/ a file belongs to: its top-level folder, or the file itself when it sits in src/. */
function partOf(relative: string): string {
  const slash = relative.indexOf("/");
  return slash < 0 ? relative : relative.slice(0, slash);
}

async function* sourceFiles(dir: string): AsyncGenerator<string> {
  for await (const file of filesUnder(dir)) if (file.endsWith(".ts")) yield file;
}

/** Edges between parts: part -> parts it imports from, with one file that does it, for the message. */
async function partGraph(): Promise<Map<string, Map<string, string>>> {
  const graph = new Map<string, Map<string, string>>();
  for await (const file of sourceFiles(SRC)) {
    const text = await Deno.readTextFile(`${SRC}/${file}`);
    const from = partOf(file);
    const edges = graph.get(from) ?? new Map<string, string>();
    graph.set(from, edges);
    for (const [, specifier] of text.matchAll(IMPORT)) {
      const target = new URL(specifier, `file://${SRC}${file}`).pathname;
      if (!target.startsWith(SRC)) continue;
      const to = partOf(target.slice(SRC.length));
      if (to !== from && !edges.has(to)) edges.set(to, `${file} imports ${specifier}`);
    }
  }
  return graph;
}

/** Every cycle in `graph`, each as the list of its nodes (found by depth-first search). */
export function findCycles(graph: Map<string, Map<string, string>>): string[][] {
  const cycles: string[][] = [];
  const done = new Set<string>();
  const path: string[] = [];
  const visit = (node: string): void => {
    const at = path.indexOf(node);
    if (at >= 0) {
      cycles.push(path.slice(at));
      return;
    }
    if (done.has(node)) return;
    path.push(node);
    for (const next of graph.get(node)?.keys() ?? []) visit(next);
    path.pop();
    done.add(node);
  };
  for (const node of graph.keys()) visit(node);
  return cycles;
}

Deno.test("findCycles finds a cycle of two and of three, and none in a chain", () => {
  const graph = (edges: Array<[string, string]>) => {
    const g = new Map<string, Map<string, string>>();
    for (const [a, b] of edges) (g.get(a) ?? g.set(a, new Map()).get(a)!).set(b, "");
    return g;
  };
  assert.deepEqual(findCycles(graph([["a", "b"], ["b", "a"]])), [["a", "b"]]);
  assert.deepEqual(findCycles(graph([["a", "b"], ["b", "c"], ["c", "a"]])), [["a", "b", "c"]]);
  assert.deepEqual(findCycles(graph([["a", "b"], ["b", "c"], ["a", "c"]])), []);
});

Deno.test("imports between the parts of src/ have no cycle", async () => {
  const graph = await partGraph();
  const cycles = findCycles(graph).map((cycle) =>
    cycle.map((part, i) => graph.get(part)!.get(cycle[(i + 1) % cycle.length])).join("; ")
  );
  assert.deepEqual(cycles, [], `import cycles between parts of src/:\n${cycles.join("\n")}`);
});

Deno.test(`only src/${FFI_HOME} uses FFI pointers or dlopen`, async () => {
  const users: string[] = [];
  for await (const file of sourceFiles(SRC)) {
    if (file !== FFI_HOME && FFI.test(await Deno.readTextFile(`${SRC}/${file}`))) users.push(file);
  }
  assert.deepEqual(users, []);
});
