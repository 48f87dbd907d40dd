/** A small tmpfs for disk-fault tests: a disk that fills up, turns read-only and recovers on demand (needs root). */
import { runCommand } from "../kafka/command.ts";

/** Mounting needs root; tests that need a tmpfs are skipped otherwise. */
export const canMount: boolean = Deno.uid() === 0;

/** A mounted tmpfs; disposing unmounts it (lazily if something still holds a file in it). */
export interface Tmpfs extends AsyncDisposable {
  readonly path: string;
  /** `mount -o remount,<options>`, e.g. "ro", "rw" or "size=64m". */
  remount(options: string): Promise<void>;
}

/**
 * Mounts a tmpfs of `sizeBytes` at `path` (created if missing), owned by root with mode 0700.
 * @example await using disk = await mountTmpfs(`${dir}/disk`, 1 << 20); await disk.remount("ro");
 */
export async function mountTmpfs(path: string, sizeBytes: number): Promise<Tmpfs> {
  if (!canMount) throw new Error("mounting a tmpfs needs root");
  await Deno.mkdir(path, { recursive: true });
  await mount(["-t", "tmpfs", "-o", `size=${sizeBytes},mode=0700`, "tmpfs", path]);
  return {
    path,
    remount: (options) => mount(["-o", `remount,${options}`, path]),
    async [Symbol.asyncDispose]() {
      const r = await runCommand("umount", [path], { timeoutMs: 10_000 });
      if (r.code !== 0) await runCommand("umount", ["-l", path], { timeoutMs: 10_000 });
    },
  };
}

async function mount(args: string[]): Promise<void> {
  const r = await runCommand("mount", args, { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`mount ${args.join(" ")}: exit ${r.code}: ${r.stderr.trim()}`);
}

/** Fills the filesystem holding `path` with a file `path` until only about `leaveBytes` are free. */
export async function fillUp(path: string, leaveBytes: number): Promise<void> {
  const size = (await freeBytes(path.slice(0, path.lastIndexOf("/")))) - leaveBytes;
  if (size > 0) await Deno.writeFile(path, new Uint8Array(size), { createNew: true });
}

async function freeBytes(path: string): Promise<number> {
  const r = await runCommand("df", ["-B1", "--output=avail", path], { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`df ${path}: ${r.stderr.trim()}`);
  return Number(new TextDecoder().decode(r.stdout).trim().split("\n").pop());
}
