/** The one-file bundle (`deno task bundle`) and the permissions it runs with, for the bundle and rootfs tests. */
import { runCommand } from "../kafka/command.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
export const DENO = Deno.env.get("KA_DENO") ?? Deno.execPath();
/** Where `deno task bundle` writes the bundle. */
export const BUNDLE_PATH = `${ROOT}dist/kafka-ambassador.js`;

/** The permission flags of deploy/permissions.txt (the ones the compiled binary gets). */
export async function servicePermissions(): Promise<string[]> {
  const text = await Deno.readTextFile(`${ROOT}deploy/permissions.txt`);
  return text.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"));
}

/** Runs `deno task bundle` in the checkout and returns the bundle's path. */
export async function buildBundle(): Promise<string> {
  await Deno.remove(BUNDLE_PATH).catch(() => {});
  const r = await runCommand("bash", ["-c", `cd "${ROOT}" && "${DENO}" task bundle`], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`deno task bundle exited ${r.code}: ${r.stderr}`);
  return BUNDLE_PATH;
}
