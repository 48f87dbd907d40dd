/**
 * A crash-consistency model of the WAL's disk, in the spirit of ALICE ("All File Systems Are Not Created Equal",
 * OSDI'14): an in-memory file system (one directory) that the real FileStorage and recovery run on through
 * `WalFs`, recording every write, truncate, fdatasync, create, rename, unlink and directory fsync, and that can
 * then build the disk states a crash at any point of the recording could leave:
 *
 * - a file keeps what its last fdatasync made durable, plus any prefix of its writes and truncates since then;
 *   the last write of that prefix may be torn (cut after a few representative byte counts, or zero-filled: the
 *   size reached the disk but not the data);
 * - a create, rename or unlink not followed by a directory fsync may or may not have happened, each on its own
 *   (file systems do reorder them; a rename whose source is absent in the chosen state does not happen);
 * - an fdatasync made to fail (`failNextSync`) leaves what it covered undecided: on disk or not at a crash, and
 *   never made durable by a later fdatasync (the kernel may drop those dirty pages, as PostgreSQL's "fsyncgate"
 *   found), while reads still see it.
 *
 * A process kill (`kill()`) keeps the page cache: the next process sees every write of the killed one.
 */
import type { WalFile, WalFileInfo, WalFs } from "../../src/wal/fs.ts";

/** One call that reached the file system, in order. `ino` names a file independently of its names. */
export type FsOp =
  | { kind: "write"; ino: number; offset: number; data: Uint8Array }
  | { kind: "truncate"; ino: number; size: number }
  | { kind: "fsync"; ino: number }
  /** An fdatasync that failed: see the header. */
  | { kind: "fsyncfail"; ino: number }
  | { kind: "create"; name: string; ino: number }
  | { kind: "unlink"; name: string }
  | { kind: "rename"; from: string; to: string }
  | { kind: "syncdir" };

type DataOp = Extract<FsOp, { kind: "write" | "truncate" }>;
type DirOp = Extract<FsOp, { kind: "create" | "unlink" | "rename" }>;

/** A disk state: file name -> content. */
export type DiskState = Map<string, Uint8Array>;

const EMPTY = new Uint8Array(0);

/** Thrown by every call of a process after `kill()`. */
export class KilledError extends Error {
  constructor() {
    super("process killed");
    this.name = "KilledError";
  }
}

/** The recording disk. `process()` gives the file-system view of one process; `kill()` ends every such view. */
export class CrashDisk {
  readonly dir: string;
  readonly ops: FsOp[] = [];
  /** Current (page cache) content by inode. */
  readonly #data = new Map<number, Uint8Array>();
  /** Current names. */
  readonly #names = new Map<string, number>();
  #nextIno = 1;
  #generation = 0;
  #dirExists = false;
  /** The next fdatasync of a file whose name matches fails. */
  #syncFault: ((name: string) => boolean) | null = null;
  /** The next create of a file whose name matches fails. */
  #createFault: ((name: string) => boolean) | null = null;

  /** A disk with `dir` holding `files` (all durable), or with no directory yet. */
  constructor(dir: string, files?: DiskState) {
    this.dir = dir;
    if (files === undefined) return;
    this.#dirExists = true;
    for (const [name, content] of [...files].sort(([a], [b]) => a < b ? -1 : 1)) {
      const ino = this.#nextIno++;
      this.#names.set(name, ino);
      this.#data.set(ino, content.slice());
    }
  }

  /** Current names and contents (what a process sees). */
  snapshot(): DiskState {
    const out: DiskState = new Map();
    for (const [name, ino] of this.#names) out.set(name, this.#data.get(ino)!.slice());
    return out;
  }

  /** The next fdatasync of a file with a name matching `match` fails with an I/O error. */
  failNextSync(match: (name: string) => boolean): void {
    this.#syncFault = match;
  }

  /** The next create of a file named like `match` fails as when the file system has no inode left. */
  failNextCreate(match: (name: string) => boolean): void {
    this.#createFault = match;
  }

  /** Every view handed out so far stops working: its calls throw KilledError. The page cache stays. */
  kill(): void {
    this.#generation++;
  }

  /** The file-system calls of one process. */
  process(): WalFs {
    const generation = this.#generation;
    const alive = () => {
      if (generation !== this.#generation) throw new KilledError();
    };
    const name = (path: string) => this.#name(path);
    return {
      open: (path, options) => {
        alive();
        return Promise.resolve(this.#open(name(path), options, alive));
      },
      stat: (path) => Promise.resolve(this.#stat(path, alive)),
      lstat: (path) => Promise.resolve(this.#stat(path, alive)),
      mkdir: () => {
        alive();
        this.#dirExists = true;
        return Promise.resolve();
      },
      chmod: () => {
        alive();
        return Promise.resolve();
      },
      readDir: () => {
        alive();
        return entries([...this.#names.keys()].sort());
      },
      readFile: (path) => {
        alive();
        return Promise.resolve(this.#data.get(this.#ino(name(path), path))!.slice());
      },
      remove: (path) => {
        alive();
        const n = name(path);
        this.#ino(n, path);
        this.#names.delete(n);
        this.ops.push({ kind: "unlink", name: n });
        return Promise.resolve();
      },
      rename: (from, to) => {
        alive();
        const a = name(from);
        const b = name(to);
        const ino = this.#ino(a, from);
        this.#names.delete(a);
        this.#names.set(b, ino);
        this.ops.push({ kind: "rename", from: a, to: b });
        return Promise.resolve();
      },
      syncDir: () => {
        alive();
        this.ops.push({ kind: "syncdir" });
        return Promise.resolve();
      },
    };
  }

  #name(path: string): string {
    if (!path.startsWith(`${this.dir}/`) || path.slice(this.dir.length + 1).includes("/")) {
      throw new Error(`crash disk: ${path} is not in ${this.dir}`);
    }
    return path.slice(this.dir.length + 1);
  }

  #ino(name: string, path: string): number {
    const ino = this.#names.get(name);
    if (ino === undefined) throw new Deno.errors.NotFound(`No such file or directory: '${path}'`);
    return ino;
  }

  #stat(path: string, alive: () => void): WalFileInfo {
    alive();
    if (path === this.dir) {
      if (!this.#dirExists) throw new Deno.errors.NotFound(`No such file or directory: '${path}'`);
      return { isFile: false, isDirectory: true, mode: 0o40700, size: 0 };
    }
    const ino = this.#ino(this.#name(path), path);
    return { isFile: true, isDirectory: false, mode: 0o100600, size: this.#data.get(ino)!.length };
  }

  #open(name: string, options: Deno.OpenOptions, alive: () => void): WalFile {
    let ino = this.#names.get(name);
    if (ino !== undefined && options.createNew) {
      throw new Deno.errors.AlreadyExists(`File exists: '${this.dir}/${name}'`);
    }
    if (ino === undefined) {
      if (!options.create && !options.createNew) {
        throw new Deno.errors.NotFound(`No such file or directory: '${this.dir}/${name}'`);
      }
      if (this.#createFault?.(name)) {
        this.#createFault = null;
        throw Object.assign(new Error(`No space left on device (os error 28): '${this.dir}/${name}'`), {
          code: "ENOSPC",
        });
      }
      ino = this.#nextIno++;
      this.#names.set(name, ino);
      this.#data.set(ino, EMPTY);
      this.ops.push({ kind: "create", name, ino });
    } else if (options.truncate) {
      this.#apply({ kind: "truncate", ino, size: 0 });
    }
    const file = ino;
    const append = options.append === true;
    let pos = 0;
    const write = (p: Uint8Array): number => {
      alive();
      const offset = append ? this.#data.get(file)!.length : pos;
      this.#apply({ kind: "write", ino: file, offset, data: p.slice() });
      pos = offset + p.length;
      return p.length;
    };
    return {
      read: (p) => {
        alive();
        const data = this.#data.get(file)!;
        if (pos >= data.length) return Promise.resolve(p.length === 0 ? 0 : null);
        const n = Math.min(p.length, data.length - pos);
        p.set(data.subarray(pos, pos + n));
        pos += n;
        return Promise.resolve(n);
      },
      writeSync: (p) => write(p),
      seek: (offset) => {
        alive();
        pos = offset;
        return Promise.resolve(pos);
      },
      truncate: (len = 0) => {
        alive();
        this.#apply({ kind: "truncate", ino: file, size: len });
        return Promise.resolve();
      },
      syncData: () => {
        alive();
        const fault = this.#syncFault;
        if (fault !== null && [...this.#names].some(([n, i]) => i === file && fault(n))) {
          this.#syncFault = null;
          this.ops.push({ kind: "fsyncfail", ino: file });
          return Promise.reject(new Error("Input/output error (os error 5)"));
        }
        this.ops.push({ kind: "fsync", ino: file });
        return Promise.resolve();
      },
      stat: () => {
        alive();
        return Promise.resolve({ size: this.#data.get(file)!.length });
      },
      close: () => {},
      [Symbol.dispose]: () => {},
    };
  }

  #apply(op: DataOp): void {
    this.ops.push(op);
    this.#data.set(op.ino, applyData(this.#data.get(op.ino)!, op));
  }
}

async function* entries(names: string[]): AsyncIterable<{ name: string; isFile: boolean }> {
  for (const name of names) yield { name, isFile: true };
}

function applyData(data: Uint8Array, op: DataOp): Uint8Array {
  if (op.kind === "truncate") {
    if (op.size <= data.length) return data.slice(0, op.size);
    const out = new Uint8Array(op.size);
    out.set(data);
    return out;
  }
  const out = new Uint8Array(Math.max(data.length, op.offset + op.data.length));
  out.set(data);
  out.set(op.data, op.offset);
  return out;
}

/** What is durable at a point of the recording, and what is not yet. */
interface Pending {
  names: Map<string, number>;
  dirOps: DirOp[];
  durable: Map<number, Uint8Array>;
  dataOps: Map<number, DataOp[]>;
  /** Pending operations that a failed fdatasync covered: a later fdatasync does not make them durable. */
  lost: Set<DataOp>;
}

function replay(ops: readonly FsOp[], upTo: number, base: DiskState | undefined): Pending {
  const p: Pending = {
    names: new Map(),
    dirOps: [],
    durable: new Map(),
    dataOps: new Map(),
    lost: new Set(),
  };
  let ino = 1;
  for (const [name, content] of [...(base ?? [])].sort(([a], [b]) => a < b ? -1 : 1)) {
    p.names.set(name, ino);
    p.durable.set(ino++, content);
  }
  for (let i = 0; i < upTo; i++) {
    const op = ops[i];
    switch (op.kind) {
      case "write":
      case "truncate": {
        const list = p.dataOps.get(op.ino);
        if (list) list.push(op);
        else p.dataOps.set(op.ino, [op]);
        break;
      }
      case "fsync": {
        const kept = (p.dataOps.get(op.ino) ?? []).filter((o) => !p.lost.has(o));
        p.durable.set(op.ino, kept.reduce(applyData, p.durable.get(op.ino) ?? EMPTY));
        p.dataOps.delete(op.ino);
        break;
      }
      case "fsyncfail":
        for (const o of p.dataOps.get(op.ino) ?? []) p.lost.add(o);
        break;
      case "syncdir":
        p.names = applyDir(p.names, p.dirOps);
        p.dirOps = [];
        break;
      default:
        p.dirOps.push(op);
    }
  }
  return p;
}

function applyDir(names: Map<string, number>, ops: readonly DirOp[]): Map<string, number> {
  const out = new Map(names);
  for (const op of ops) {
    if (op.kind === "create") out.set(op.name, op.ino);
    else if (op.kind === "unlink") out.delete(op.name);
    else if (out.has(op.from)) {
      out.set(op.to, out.get(op.from)!);
      out.delete(op.from);
    }
  }
  return out;
}

/** How much of one file's pending writes a crash state keeps. */
interface FileChoice {
  /** Whole operations kept, in order. */
  keep: number;
  /** The next write, cut after this many bytes (0 < cut < its length), or zero-filled when `zero`. */
  torn?: { cut: number } | { zero: true };
}

/** Every way to keep a file's pending operations: each prefix, and each write torn at representative cuts. */
function fileChoices(ops: readonly DataOp[]): FileChoice[] {
  const out: FileChoice[] = [];
  for (let keep = 0; keep <= ops.length; keep++) {
    out.push({ keep });
    const next = ops[keep];
    if (next?.kind !== "write") continue;
    const n = next.data.length;
    for (const cut of new Set([1, n >> 1, n - 1])) if (cut > 0 && cut < n) out.push({ keep, torn: { cut } });
    out.push({ keep, torn: { zero: true } });
  }
  return out;
}

function build(p: Pending, dirKeep: readonly boolean[], files: Map<number, FileChoice>): DiskState {
  const names = applyDir(p.names, p.dirOps.filter((_, i) => dirKeep[i]));
  const state: DiskState = new Map();
  for (const [name, ino] of names) {
    const ops = p.dataOps.get(ino) ?? [];
    const choice = files.get(ino) ?? { keep: ops.length };
    let data = ops.slice(0, choice.keep).reduce(applyData, p.durable.get(ino) ?? EMPTY);
    const next = ops[choice.keep];
    if (choice.torn && next?.kind === "write") {
      const torn = "zero" in choice.torn
        ? new Uint8Array(next.data.length)
        : next.data.subarray(0, choice.torn.cut);
      data = applyData(data, { ...next, data: torn });
    }
    state.set(name, data);
  }
  return state;
}

/** A short, stable key of a disk state, to explore each distinct state once. */
export function stateKey(state: DiskState): string {
  const parts: string[] = [];
  for (const name of [...state.keys()].sort()) {
    const data = state.get(name)!;
    let h = 0x811c9dc5;
    for (const b of data) h = Math.imul(h ^ b, 0x01000193);
    parts.push(`${name}:${data.length}:${(h >>> 0).toString(16)}`);
  }
  return parts.join(" ");
}

/** A small deterministic PRNG (mulberry32), so a failing state can be found again. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Distinct disk states a crash just before `ops[upTo]` could leave, at most `max`: first the systematic ones
 * (nothing pending kept, everything kept, each file's each choice with the others whole, each directory operation
 * dropped alone, every subset of up to 6 pending directory operations), then random combinations.
 */
export function crashStates(
  ops: readonly FsOp[],
  upTo: number,
  max: number,
  random: () => number,
  base?: DiskState,
): Array<{ label: string; state: DiskState }> {
  const p = replay(ops, upTo, base);
  const out = new Map<string, { label: string; state: DiskState }>();
  const add = (label: string, dirKeep: boolean[], files: Map<number, FileChoice>) => {
    if (out.size >= max) return;
    const state = build(p, dirKeep, files);
    const key = stateKey(state);
    if (!out.has(key)) out.set(key, { label, state });
  };
  const m = p.dirOps.length;
  const all = new Array(m).fill(true);
  const none = new Array(m).fill(false);
  const choices = [...p.dataOps].map(([ino, list]) => ({ ino, options: fileChoices(list) }));
  const nothing = new Map(choices.map(({ ino }) => [ino, { keep: 0 }]));
  add("everything kept", all, new Map());
  add("nothing pending kept", none, nothing);
  add("data kept, no directory change", none, new Map());
  add("directory changes kept, no data", all, nothing);
  for (const { ino, options } of choices) {
    for (const choice of options) add(`file ${ino} ${JSON.stringify(choice)}`, all, new Map([[ino, choice]]));
  }
  for (let i = 0; i < m; i++) {
    add(`directory op ${i} dropped`, all.map((_, j) => j !== i), new Map());
    add(`directory op ${i} alone`, none.map((_, j) => j === i), new Map());
  }
  if (m <= 6) {
    for (let bits = 0; bits < 1 << m; bits++) {
      add(`directory subset ${bits}`, all.map((_, j) => (bits & (1 << j)) !== 0), new Map());
    }
  }
  for (let tries = 0; out.size < max && tries < max * 4; tries++) {
    const dirKeep = all.map(() => random() < 0.5);
    const files = new Map<number, FileChoice>();
    for (const { ino, options } of choices) files.set(ino, options[Math.floor(random() * options.length)]);
    add("random", dirKeep, files);
  }
  return [...out.values()];
}
