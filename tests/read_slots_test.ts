/** ReadSlots on a fake clock: how many batches are read at once, in what order the others follow, the lease. */
import assert from "node:assert/strict";
import { ReadSlot, ReadSlots } from "../src/server/read_slots.ts";
import { FakeClock } from "./support/fake_clock.ts";

/** Settles the microtasks a resolved promise's reactions run in. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

Deno.test("read slots: the first ones enter at once, the next waits for a release, in arrival order", async () => {
  const slots = new ReadSlots({ slots: 2, clock: new FakeClock() });
  const a = slots.enter();
  const b = slots.enter();
  assert.ok(a instanceof ReadSlot && b instanceof ReadSlot, "free slots are given without a promise");
  const entered: string[] = [];
  const c = Promise.resolve(slots.enter()).then((slot) => (entered.push("c"), slot));
  const d = Promise.resolve(slots.enter()).then((slot) => (entered.push("d"), slot));
  await settle();
  assert.deepEqual(entered, []);
  assert.equal(slots.waiting, 2);
  a.release();
  await settle();
  assert.deepEqual(entered, ["c"]);
  assert.equal(slots.taken, 2, "the slot passed on, not freed");
  a.release(); // released twice: no second slot for anyone
  await settle();
  assert.deepEqual(entered, ["c"]);
  (await c).release();
  (await d).release();
  b.release();
  assert.equal(slots.taken, 0);
  assert.equal(slots.waiting, 0);
});

Deno.test("read slots: the lease gives a slow read's slot to the next batch; releasing after it changes nothing", async () => {
  const clock = new FakeClock();
  const slots = new ReadSlots({ slots: 1, leaseMs: 100, clock });
  const slow = slots.enter() as ReadSlot;
  clock.advance(1_000); // waiting for room before the read: no lease runs yet
  const entered: ReadSlot[] = [];
  Promise.resolve(slots.enter()).then((slot) => entered.push(slot));
  slow.startLease();
  clock.advance(99);
  await settle();
  assert.equal(entered.length, 0, "within the lease the slot stays");
  clock.advance(1);
  await settle();
  assert.equal(entered.length, 1, "past the lease the next batch is let in");
  const next = entered[0];
  slow.release();
  assert.equal(slots.taken, 1, "the late release frees nothing more");
  next.startLease();
  next.release();
  assert.equal(clock.pending, 0, "a release stops the lease timer");
  assert.equal(slots.taken, 0);
});

Deno.test("read slots: bad options are refused", () => {
  assert.throws(() => new ReadSlots({ slots: 0 }), RangeError);
  assert.throws(() => new ReadSlots({ slots: 1.5 }), RangeError);
  assert.throws(() => new ReadSlots({ leaseMs: 0 }), RangeError);
  assert.throws(() => new ReadSlots({ leaseMs: Number.NaN }), RangeError);
});
