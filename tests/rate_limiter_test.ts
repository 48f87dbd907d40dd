/** RateLimiter: exact token accounting on a fake clock, FIFO order, close(), and the rate on the real clock. */
import assert from "node:assert/strict";
import { FakeClock } from "./support/fake_clock.ts";
import { RateLimiter } from "../src/producer/rate_limiter.ts";
import { settle } from "./support/wait.ts";

/** Advances the fake clock by `totalMs` in 10 ms steps, letting resolved takes record the time after each step. */
async function run(clock: FakeClock, totalMs: number): Promise<void> {
  for (let t = 0; t < totalMs; t += 10) {
    clock.advance(10);
    await settle();
  }
}

/** Starts take(n) and records in `done` the fake time at which it resolved. */
function track(
  limiter: RateLimiter,
  clock: FakeClock,
  done: Map<string, number>,
  label: string,
  n: number,
): void {
  limiter.take(n).then(() => done.set(label, clock.now()));
}

Deno.test("rate limiter: starts full at the default burst (rate/10, at least 1) and refills at the rate", () => {
  const clock = new FakeClock();
  const limiter = new RateLimiter(100, { clock });
  assert.equal(limiter.burst, 10);
  for (let i = 0; i < 10; i++) assert.equal(limiter.tryTake(), true, `token ${i}`);
  assert.equal(limiter.tryTake(), false);
  clock.advance(9);
  assert.equal(limiter.tryTake(), false);
  clock.advance(1);
  assert.equal(limiter.tryTake(), true);
  assert.equal(limiter.tryTake(), false);
  clock.advance(30);
  assert.equal(limiter.tryTake(3), true);
  assert.equal(limiter.tryTake(), false);
  assert.equal(new RateLimiter(5, { clock }).burst, 1);
  assert.equal(new RateLimiter(5, { clock, burst: 4 }).burst, 4);
});

Deno.test("rate limiter: an idle bucket fills only up to the burst", () => {
  const clock = new FakeClock();
  const limiter = new RateLimiter(1000, { clock });
  assert.equal(limiter.tryTake(100), true);
  clock.advance(60_000);
  assert.equal(limiter.tryTake(100), true);
  assert.equal(limiter.tryTake(1), false);
});

Deno.test("rate limiter: take() waits on a timer, first come first served, with exact accounting", async () => {
  const clock = new FakeClock();
  const limiter = new RateLimiter(10, { clock });
  const done = new Map<string, number>();
  assert.equal(limiter.tryTake(), true);
  track(limiter, clock, done, "a", 1);
  track(limiter, clock, done, "b", 2);
  track(limiter, clock, done, "c", 1);
  await settle();
  assert.equal(done.size, 0);
  assert.equal(clock.pending, 1, "one timer for the head of the queue, not one per waiter");
  // Tokens are there at 100 ms, but "c" must not overtake "b", and tryTake() must not overtake anyone.
  await run(clock, 150);
  assert.deepEqual([...done], [["a", 100]]);
  assert.equal(limiter.tryTake(), false);
  await run(clock, 350);
  assert.deepEqual([...done], [["a", 100], ["b", 300], ["c", 400]]);
  assert.equal(clock.pending, 0);
  assert.equal(limiter.tryTake(), true, "one token refilled between 400 and 500 ms");
  assert.equal(limiter.tryTake(), false);
});

Deno.test("rate limiter: take(n) larger than the burst collects tokens as they come", async () => {
  const clock = new FakeClock();
  const limiter = new RateLimiter(10, { clock });
  const done = new Map<string, number>();
  track(limiter, clock, done, "big", 3);
  await run(clock, 190);
  assert.equal(done.size, 0);
  await run(clock, 10);
  assert.deepEqual([...done], [["big", 200]], "1 token from the full bucket, 2 more at 10/s");
  assert.equal(limiter.tryTake(), false);
});

Deno.test("rate limiter: tryTake() never overtakes a waiter, even with tokens in the bucket", async () => {
  const clock = new FakeClock();
  const limiter = new RateLimiter(10, { clock, burst: 2 });
  const done = new Map<string, number>();
  assert.equal(limiter.tryTake(2), true);
  track(limiter, clock, done, "waiter", 5);
  await run(clock, 100);
  assert.equal(limiter.tryTake(), false, "1 token is in the bucket but belongs to the waiter");
  await run(clock, 400);
  assert.deepEqual([...done], [["waiter", 500]]);
  limiter.close();
});

Deno.test("rate limiter: take(0) resolves at once; bad arguments are refused", async () => {
  const clock = new FakeClock();
  const limiter = new RateLimiter(10, { clock });
  assert.equal(limiter.tryTake(), true);
  await limiter.take(0);
  assert.throws(() => new RateLimiter(0), RangeError);
  assert.throws(() => new RateLimiter(-1), RangeError);
  assert.throws(() => new RateLimiter(Infinity), RangeError);
  assert.throws(() => new RateLimiter(10, { burst: 0 }), RangeError);
  assert.throws(() => limiter.take(-1), RangeError);
  assert.throws(() => limiter.tryTake(2), /burst is 1/);
});

Deno.test("rate limiter: close() rejects waiters, clears its timer and refuses later takes", async () => {
  const clock = new FakeClock();
  const limiter = new RateLimiter(10, { clock });
  assert.equal(limiter.tryTake(), true);
  const waiting = [limiter.take(), limiter.take(5)];
  assert.equal(clock.pending, 1);
  limiter.close();
  assert.equal(clock.pending, 0);
  for (const waiter of waiting) await assert.rejects(waiter, /rate limiter: closed/);
  await assert.rejects(limiter.take(), /rate limiter: closed/);
  clock.advance(10_000);
  assert.equal(limiter.tryTake(), false);
});

Deno.test("rate limiter: on the real clock, 500 tokens at 1000/s take about half a second, in order", async () => {
  const limiter = new RateLimiter(1000);
  const order: number[] = [];
  const start = performance.now();
  await Promise.all(Array.from({ length: 500 }, (_, i) => limiter.take().then(() => order.push(i))));
  const elapsedMs = performance.now() - start;
  limiter.close();
  // 100 tokens from the full bucket, 400 more at 1000/s: 0.4 s. Wide bounds: this checks the rate, not speed.
  assert.ok(elapsedMs >= 350 && elapsedMs <= 1500, `took ${elapsedMs.toFixed(0)} ms`);
  assert.deepEqual(order, Array.from({ length: 500 }, (_, i) => i));
});
