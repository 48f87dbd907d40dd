/**
 * Replay progress: a bar redrawn in place on a terminal, plain lines (at most one a second) when stdout is a
 * file or a pipe, so that logs stay readable.
 */
const encoder = new TextEncoder();
const BAR_WIDTH = 30;
const REDRAW_MS = 100;
const LINE_MS = 1000;

export class Progress {
  readonly #total: number;
  readonly #terminal: boolean;
  readonly #write: (text: string) => void;
  #shownAt = 0;

  constructor(
    total: number,
    terminal: boolean,
    write = (text: string) => Deno.stdout.writeSync(encoder.encode(text)),
  ) {
    this.#total = total;
    this.#terminal = terminal;
    this.#write = write;
  }

  /** Records `done` (delivered) and `kept` (left in the WAL) so far; shown when the last show is old enough. */
  update(done: number, kept: number, now = Date.now()): void {
    if (now - this.#shownAt < (this.#terminal ? REDRAW_MS : LINE_MS)) return;
    this.#shownAt = now;
    this.#show(done, kept);
  }

  /** Shows the final figures and ends the bar's line. */
  finish(done: number, kept: number): void {
    this.#show(done, kept);
    if (this.#terminal) this.#write("\n");
  }

  #show(done: number, kept: number): void {
    const share = this.#total === 0 ? 1 : (done + kept) / this.#total;
    const percent = Math.floor(share * 100);
    const figures = `${done}/${this.#total} delivered${kept > 0 ? `, ${kept} kept` : ""} (${percent}%)`;
    if (this.#terminal) {
      const filled = Math.round(share * BAR_WIDTH);
      this.#write(`\r[${"#".repeat(filled)}${"-".repeat(BAR_WIDTH - filled)}] ${figures}\x1b[K`);
    } else {
      this.#write(`wal replay: ${figures}\n`);
    }
  }
}
