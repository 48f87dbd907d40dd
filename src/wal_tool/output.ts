/** Buffered text output for the wal tool: export writes millions of lines, one write call per 64 KiB. */
const encoder = new TextEncoder();
const FLUSH_BYTES = 64 * 1024;

/** Lines to a writer, written in large chunks. A reader that went away (`| head`) ends the output quietly. */
export class LineWriter {
  readonly #out: { write(p: Uint8Array): Promise<number> };
  #chunks: string[] = [];
  #size = 0;
  #closed = false;

  constructor(out: { write(p: Uint8Array): Promise<number> } = Deno.stdout) {
    this.#out = out;
  }

  /** False once the reader has gone away: stop producing. */
  get open(): boolean {
    return !this.#closed;
  }

  async line(text: string): Promise<void> {
    this.#chunks.push(text, "\n");
    this.#size += text.length + 1;
    if (this.#size >= FLUSH_BYTES) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.#closed || this.#chunks.length === 0) return;
    const bytes = encoder.encode(this.#chunks.join(""));
    this.#chunks = [];
    this.#size = 0;
    try {
      for (let at = 0; at < bytes.length;) at += await this.#out.write(bytes.subarray(at));
    } catch (err) {
      if (!(err instanceof Deno.errors.BrokenPipe)) throw err;
      this.#closed = true;
    }
  }
}
