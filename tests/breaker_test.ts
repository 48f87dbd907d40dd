/** Breaker: every transition on a fake clock, probe budget, the stuck-half-open regression, timer cleanup. */
import assert from "node:assert/strict";
import { Breaker, type BreakerOptions, type BreakerState } from "../src/producer/breaker.ts";
import { FakeClock } from "./support/fake_clock.ts";
import { delay, waitFor } from "./support/wait.ts";

type Change = [BreakerState, BreakerState, string];

function setup(
  opts: Partial<BreakerOptions> = {},
): { breaker: Breaker; clock: FakeClock; changes: Change[] } {
  const clock = new FakeClock();
  const changes: Change[] = [];
  const breaker = new Breaker({
    fails: 5,
    requests: 3,
    timeoutMs: 20_000,
    intervalMs: 0,
    clock,
    onChange: (from, to, reason) => changes.push([from, to, reason]),
    ...opts,
  });
  return { breaker, clock, changes };
}

function failTimes(breaker: Breaker, n: number, reason = "Local: Message timed out"): void {
  for (let i = 0; i < n; i++) breaker.failure(reason);
}

/** Opens the breaker and waits out the timeout, so it is half-open. */
function toHalf(breaker: Breaker, clock: FakeClock): void {
  breaker.trip("all brokers down");
  clock.advance(20_000);
  assert.equal(breaker.state, "half");
}

Deno.test("breaker: closed allows everything and opens after `fails` consecutive failures", () => {
  const { breaker, changes } = setup();
  assert.equal(breaker.state, "closed");
  assert.equal(breaker.allow(), true);
  failTimes(breaker, 4);
  assert.equal(breaker.state, "closed");
  breaker.failure("Local: Message timed out");
  assert.equal(breaker.state, "open");
  assert.deepEqual(changes, [["closed", "open", "5 consecutive failures: Local: Message timed out"]]);
  assert.equal(breaker.allow(), false);
  breaker.close();
});

Deno.test("breaker: a success resets the consecutive failure count", () => {
  const { breaker } = setup();
  failTimes(breaker, 4);
  breaker.success();
  failTimes(breaker, 4);
  assert.equal(breaker.state, "closed");
  breaker.failure("x");
  assert.equal(breaker.state, "open");
  breaker.close();
});

Deno.test("breaker: intervalMs resets the closed-state count every interval; 0 never does", () => {
  const withInterval = setup({ intervalMs: 1000 });
  failTimes(withInterval.breaker, 4);
  withInterval.clock.advance(1000);
  failTimes(withInterval.breaker, 4);
  assert.equal(withInterval.breaker.state, "closed");
  withInterval.breaker.failure("x");
  assert.equal(withInterval.breaker.state, "open");
  withInterval.breaker.close();

  const noInterval = setup({ intervalMs: 0 });
  failTimes(noInterval.breaker, 4);
  noInterval.clock.advance(3_600_000);
  noInterval.breaker.failure("x");
  assert.equal(noInterval.breaker.state, "open");
  noInterval.breaker.close();
});

Deno.test("breaker: open turns half after timeoutMs by itself, without traffic; late results are ignored", () => {
  const { breaker, clock, changes } = setup();
  failTimes(breaker, 5);
  breaker.success();
  breaker.success();
  breaker.success();
  breaker.failure("late");
  assert.equal(breaker.state, "open");
  clock.advance(19_999);
  assert.equal(breaker.state, "open");
  assert.equal(breaker.allow(), false);
  clock.advance(1);
  assert.equal(breaker.state, "half");
  assert.deepEqual(changes.map(([from, to]) => [from, to]), [["closed", "open"], ["open", "half"]]);
  assert.equal(changes[1][2], "open for 20000 ms");
  assert.equal(clock.pending, 0);
});

Deno.test("breaker: half-open grants at most `requests` probes at once; a success frees one", () => {
  const { breaker, clock } = setup();
  toHalf(breaker, clock);
  assert.equal(breaker.allow(), true);
  assert.equal(breaker.allow(), true);
  assert.equal(breaker.allow(), true);
  assert.equal(breaker.allow(), false);
  breaker.success();
  assert.equal(breaker.state, "half");
  assert.equal(breaker.allow(), true);
  assert.equal(breaker.allow(), false);
});

Deno.test("breaker: `requests` consecutive successes in half-open close it", () => {
  const { breaker, clock, changes } = setup();
  toHalf(breaker, clock);
  for (let i = 0; i < 3; i++) assert.equal(breaker.allow(), true);
  breaker.success();
  breaker.success();
  assert.equal(breaker.state, "half");
  breaker.success();
  assert.equal(breaker.state, "closed");
  assert.deepEqual(changes.at(-1), ["half", "closed", "3 consecutive successes in half-open"]);
  // Closed again with fresh counters: it takes `fails` new failures to open.
  failTimes(breaker, 4);
  assert.equal(breaker.state, "closed");
  breaker.close();
});

Deno.test("breaker: success(n) acts as n calls of success(), in every state and across the half -> closed change", () => {
  // Two breakers on one script; one hears each run of successes as one call, the other message by message.
  const script = [
    "allow",
    "allow",
    "s2",
    "f",
    "trip",
    "wait",
    "allow",
    "allow",
    "s1",
    "allow",
    "s5",
    "f",
    "f",
    "s3",
    "f",
    "trip",
    "wait",
    "allow",
    "s2",
    "f",
    "wait",
    "allow",
    "allow",
    "allow",
    "s3",
    "allow",
    "s4",
    "f",
  ];
  const runs = setup({ intervalMs: 1000 }), singles = setup({ intervalMs: 1000 });
  for (const [k, step] of script.entries()) {
    for (const [{ breaker, clock }, batched] of [[runs, true], [singles, false]] as const) {
      if (step === "allow") breaker.allow();
      else if (step === "f") breaker.failure("Local: Message timed out");
      else if (step === "trip") breaker.trip("all brokers down");
      else if (step === "wait") clock.advance(20_000);
      else {
        const n = Number(step.slice(1));
        if (batched) breaker.success(n);
        else for (let i = 0; i < n; i++) breaker.success();
      }
    }
    assert.equal(runs.breaker.state, singles.breaker.state, `step ${k} (${step})`);
    assert.deepEqual(runs.changes, singles.changes, `step ${k} (${step})`);
  }
  assert.ok(runs.changes.some(([from, to]) => from === "half" && to === "closed"), "the script closes it");
  runs.breaker.close();
  singles.breaker.close();
});

Deno.test("breaker: one failure in half-open re-opens it and restarts the timeout", () => {
  const { breaker, clock, changes } = setup();
  toHalf(breaker, clock);
  assert.equal(breaker.allow(), true);
  breaker.success();
  clock.advance(500);
  breaker.failure("Broker: Not enough in-sync replicas");
  assert.equal(breaker.state, "open");
  assert.deepEqual(changes.at(-1), [
    "half",
    "open",
    "failure in half-open: Broker: Not enough in-sync replicas",
  ]);
  clock.advance(19_999);
  assert.equal(breaker.state, "open");
  clock.advance(1);
  assert.equal(breaker.state, "half");
  // The probe budget is whole again after re-entering half-open.
  for (let i = 0; i < 3; i++) assert.equal(breaker.allow(), true);
  assert.equal(breaker.allow(), false);
});

Deno.test("breaker: trip opens at once from closed and from half; no-op while open", () => {
  const { breaker, clock, changes } = setup();
  breaker.trip("all brokers down");
  assert.equal(breaker.state, "open");
  breaker.trip("all brokers down again");
  assert.equal(changes.length, 1);
  clock.advance(10_000);
  breaker.trip("still down");
  clock.advance(10_000);
  assert.equal(breaker.state, "half", "a trip while open must not extend the timeout");
  breaker.trip("down in half");
  assert.equal(breaker.state, "open");
  assert.deepEqual(changes, [
    ["closed", "open", "all brokers down"],
    ["open", "half", "open for 20000 ms"],
    ["half", "open", "down in half"],
  ]);
  breaker.close();
});

Deno.test("breaker: retract closes a breaker trip opened, and only while trip's is the last change", () => {
  const { breaker, clock, changes } = setup();
  breaker.trip("all brokers down");
  breaker.retract("a broker answered");
  assert.equal(breaker.state, "closed");
  assert.equal(breaker.allow(), true);
  clock.advance(30_000);
  assert.equal(breaker.state, "closed", "the open timer was stopped");
  // Opened by failures: not trip's to undo.
  failTimes(breaker, 5);
  breaker.retract("a broker answered");
  assert.equal(breaker.state, "open");
  // Tripped from half-open, then retracted: closed.
  clock.advance(20_000);
  breaker.trip("down in half");
  breaker.retract("a broker answered");
  assert.equal(breaker.state, "closed");
  // A change after the trip (the timer, then a failed probe) makes a late retract a no-op.
  breaker.trip("all brokers down");
  clock.advance(20_000);
  breaker.allow();
  breaker.failure("Local: Message timed out");
  breaker.retract("a late answer");
  assert.equal(breaker.state, "open");
  assert.deepEqual(changes.map(([from, to]) => `${from}->${to}`), [
    "closed->open",
    "open->closed",
    "closed->open",
    "open->half",
    "half->open",
    "open->closed",
    "closed->open",
    "open->half",
    "half->open",
  ]);
  breaker.close();
});

Deno.test("breaker: regression, released probes never leave half-open stuck", () => {
  // The Go service counted a non-retryable error (unknown topic) neither way, used up the half-open
  // budget with it and then refused every request forever.
  const { breaker, clock } = setup();
  toHalf(breaker, clock);
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 3; i++) assert.equal(breaker.allow(), true, `round ${round} probe ${i}`);
    assert.equal(breaker.allow(), false);
    for (let i = 0; i < 3; i++) breaker.release();
  }
  assert.equal(breaker.state, "half");
  for (let i = 0; i < 3; i++) assert.equal(breaker.allow(), true);
  breaker.success();
  breaker.success();
  breaker.success();
  assert.equal(breaker.state, "closed");
  // Releases outside half-open change nothing.
  breaker.release();
  assert.equal(breaker.allow(), true);
  assert.equal(breaker.state, "closed");
});

Deno.test("breaker: onChange is called exactly once per change, in order", () => {
  const { breaker, clock, changes } = setup({ fails: 2, requests: 1, timeoutMs: 100 });
  failTimes(breaker, 2, "timeout");
  failTimes(breaker, 3, "late");
  clock.advance(100);
  assert.equal(breaker.allow(), true);
  breaker.failure("refused");
  clock.advance(100);
  assert.equal(breaker.allow(), true);
  breaker.success();
  breaker.success();
  assert.deepEqual(changes, [
    ["closed", "open", "2 consecutive failures: timeout"],
    ["open", "half", "open for 100 ms"],
    ["half", "open", "failure in half-open: refused"],
    ["open", "half", "open for 100 ms"],
    ["half", "closed", "1 consecutive successes in half-open"],
  ]);
});

Deno.test("breaker: close() clears the open timer", () => {
  const { breaker, clock, changes } = setup();
  breaker.trip("down");
  assert.equal(clock.pending, 1);
  breaker.close();
  assert.equal(clock.pending, 0);
  clock.advance(60_000);
  assert.equal(breaker.state, "open");
  breaker.failure("after close");
  assert.equal(clock.pending, 0);
  assert.equal(changes.length, 1);
});

Deno.test("breaker: on the real clock, close() stops the open timer", async () => {
  const breaker = new Breaker({ fails: 1, requests: 1, timeoutMs: 20, intervalMs: 0 });
  breaker.failure("down");
  assert.equal(breaker.state, "open");
  breaker.close();
  await delay(80);
  assert.equal(breaker.state, "open", "the cleared timer must not have fired");
});

Deno.test("breaker: on the real clock, open turns half after the timeout", async () => {
  const breaker = new Breaker({ fails: 1, requests: 1, timeoutMs: 20, intervalMs: 0 });
  breaker.trip("down");
  await waitFor("the breaker to turn half-open", () => breaker.state === "half", 2000, 10);
  breaker.close();
});

Deno.test("breaker: fails and requests below 1 are refused", () => {
  assert.throws(() => new Breaker({ fails: 0, requests: 3, timeoutMs: 1, intervalMs: 0 }), RangeError);
  assert.throws(() => new Breaker({ fails: 5, requests: 0, timeoutMs: 1, intervalMs: 0 }), RangeError);
});
