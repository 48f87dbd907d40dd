/**
 * The file-system calls the WAL makes on disk. FileStorage and recovery go through this interface, real (Deno) by
 * default, so that a test can record every write, fdatasync, rename, unlink, create and directory fsync and
 * rebuild the states a crash could leave.
 */

/** An open file: the subset of Deno.FsFile the WAL uses. */
export interface WalFile extends Disposable {
  read(p: Uint8Array): Promise<number | null>;
  /**
   * Writes at the file position (at the end for a file opened with `append`); may write fewer bytes. Blocking: the
   * WAL's writes only reach the page cache (see writeAllSync).
   */
  writeSync(p: Uint8Array): number;
  seek(offset: number, whence: Deno.SeekMode): Promise<number>;
  truncate(len?: number): Promise<void>;
  syncData(): Promise<void>;
  stat(): Promise<{ size: number }>;
  close(): void;
}

/** What `stat`/`lstat` tell. */
export interface WalFileInfo {
  isFile: boolean;
  isDirectory: boolean;
  mode: number | null;
  size: number;
}

/** File-system calls by path. Errors are Deno's (Deno.errors.NotFound, AlreadyExists...). */
export interface WalFs {
  open(path: string, options: Deno.OpenOptions): Promise<WalFile>;
  stat(path: string): Promise<WalFileInfo>;
  lstat(path: string): Promise<WalFileInfo>;
  mkdir(path: string, options: { recursive: boolean; mode: number }): Promise<void>;
  chmod(path: string, mode: number): Promise<void>;
  readDir(path: string): AsyncIterable<{ name: string; isFile: boolean }>;
  readFile(path: string): Promise<Uint8Array>;
  remove(path: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  /** fsync of a directory: makes the creates, renames and unlinks in it durable. */
  syncDir(path: string): Promise<void>;
}

/** The real file system. */
export const denoFs: WalFs = {
  open: (path, options) => Deno.open(path, options),
  stat: (path) => Deno.stat(path),
  lstat: (path) => Deno.lstat(path),
  mkdir: (path, options) => Deno.mkdir(path, options),
  chmod: (path, mode) => Deno.chmod(path, mode),
  readDir: (path) => Deno.readDir(path),
  readFile: (path) => Deno.readFile(path),
  remove: (path) => Deno.remove(path),
  rename: (from, to) => Deno.rename(from, to),
  async syncDir(path) {
    using dir = await Deno.open(path, { read: true });
    await dir.sync();
  },
};
