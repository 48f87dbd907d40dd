/** Time and timers behind an interface, so that time-driven logic can be tested on a fake clock. */

/** Time and timers, injectable so tests can run the breaker on a fake clock. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): number;
  clearTimeout(id: number): void;
}

/** The real clock: monotonic time in milliseconds and the runtime's timers. */
export const realClock: Clock = {
  now: () => performance.now(),
  // Deno's timer ids are numbers already; Number() satisfies the Node typings that npm packages bring in.
  setTimeout: (fn, ms) => Number(setTimeout(fn, ms)),
  clearTimeout: (id) => clearTimeout(id),
};
