/** A temp dir that cleans up after itself: `await using dir = await tempDir("ka-x-")`. */

/** A fresh directory; disposing removes it and everything in it. */
export interface TempDir extends AsyncDisposable {
  readonly path: string;
}

/** Makes a temp dir named `prefix` plus a random suffix. */
export async function tempDir(prefix: string): Promise<TempDir> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true });
    },
  };
}
