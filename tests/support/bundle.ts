/** The one-file bundle (`deno task bundle`) and the permissions it runs with, for the bundle and rootfs tests. */
import { runCommand } from "../kafka/command.ts";
import { denoFlags } from "./service.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
export const DENO = Deno.env.get("KA_DENO") ?? Deno.execPath();
/** Where `deno task bundle` writes the bundle. */
export const BUNDLE_PATH = `${ROOT}dist/kafka-ambassador.js`;

/** The Deno flags of deploy/deno-flags.txt (the ones the compiled binary gets): permissions and V8 settings. */
export async function serviceFlags(): Promise<string[]> {
  return denoFlags(await Deno.readTextFile(`${ROOT}deploy/deno-flags.txt`));
}

/** Runs `deno task bundle` in the checkout and returns the bundle's path. */
export async function buildBundle(): Promise<string> {
  await Deno.remove(BUNDLE_PATH).catch(() => {});
  const r = await runCommand("bash", ["-c", `cd "${ROOT}" && "${DENO}" task bundle`], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`deno task bundle exited ${r.code}: ${r.stderr}`);
  return BUNDLE_PATH;
}
