import assert from "node:assert/strict";
import { RecordBudget } from "../src/server/grpc/record_budget.ts";

Deno.test("RecordBudget: past the bound a stream waits, and every waiter resumes once at half of it", () => {
  const budget = new RecordBudget(100);
  assert.equal(budget.take(60), false);
  assert.equal(budget.take(50), true);
  const resumed: string[] = [];
  const a = () => resumed.push("a");
  const b = () => resumed.push("b");
  budget.whenHalfFree(a);
  budget.whenHalfFree(b);
  budget.give(50); // 60 in flight: over half
  assert.deepEqual(resumed, []);
  budget.give(10); // 50: half
  assert.deepEqual(resumed, ["a", "b"]);
  budget.give(50);
  assert.deepEqual(resumed, ["a", "b"]); // each once
  assert.equal(budget.used, 0);
});

Deno.test("RecordBudget: a forgotten waiter is not called; one at half the bound already is called at once", () => {
  const budget = new RecordBudget(10);
  budget.take(11);
  let called = 0;
  const resume = () => called++;
  budget.whenHalfFree(resume);
  budget.forget(resume);
  budget.give(11);
  assert.equal(called, 0);
  budget.whenHalfFree(resume);
  assert.equal(called, 1);
});

Deno.test("RecordBudget: the bound must be a whole number of at least 1", () => {
  for (const bad of [0, -1, 1.5, NaN, Infinity]) {
    assert.throws(() => new RecordBudget(bad), RangeError, String(bad));
  }
});
