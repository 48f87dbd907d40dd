/** The files below a directory, for tests that read the repository's own sources. */

/**
 * Every file below `dir`, at any depth, as a path relative to it (`kafka/producer.ts`).
 * @example for await (const file of filesUnder("src")) if (file.endsWith(".ts")) console.log(file);
 */
export async function* filesUnder(dir: string, prefix = ""): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const relative = `${prefix}${entry.name}`;
    if (entry.isDirectory) yield* filesUnder(`${dir}/${entry.name}`, `${relative}/`);
    else yield relative;
  }
}
