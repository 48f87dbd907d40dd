/** Replay on a fake clock: oldest first, paced, never while open, probes only in half-open, nothing sent twice. */
import assert from "node:assert/strict";
import { openWal } from "../src/wal/wal.ts";
import { ioError, openFaultyWal } from "./support/fault_storage.ts";
import { captured } from "./support/log_capture.ts";
import { replayRig, type ReplayRigOptions } from "./support/replay.ts";
import { settle } from "./support/wait.ts";

async function setup(records: number, opts: ReplayRigOptions = {}) {
  const wal = await openWal({ path: "", inMemory: true, maxBytes: 1 << 20 });
  const ids: number[] = [];
  for (let i = 0; i < records; i++) {
    ids.push(wal.append({ topic: "t", value: new TextEncoder().encode(`r${i}`) }).id);
  }
  await wal.sync();
  return { wal, ids, ...replayRig(wal, opts) };
}

Deno.test("replay: sends the records oldest first, paced by the rate limiter", async () => {
  await using r = await setup(5, { rate: 10 });
  r.replayer.kick();
  await settle();
  assert.deepEqual(r.sender.sent, r.ids.slice(0, 1), "one token at start (burst 1)");
  for (let i = 2; i <= 5; i++) {
    r.clock.advance(100);
    await settle();
    assert.equal(r.sender.sent.length, i, `after ${i - 1} x 100 ms at 10/s`);
  }
  assert.deepEqual(r.sender.sent, r.ids);
  r.sender.answerAll(true);
  await settle();
  assert.equal(r.wal.stats().records, 0);
});

Deno.test("replay: nothing is sent while the gate is open, and a kick after it closes sends all", async () => {
  await using r = await setup(3);
  r.gate.state = "open";
  r.replayer.kick();
  await settle();
  r.clock.advance(10);
  await settle();
  assert.deepEqual(r.sender.sent, []);
  r.gate.state = "closed";
  r.replayer.kick();
  for (let i = 0; i < 3; i++) {
    r.clock.advance(1);
    await settle();
  }
  assert.deepEqual(r.sender.sent, r.ids);
});

Deno.test("replay: in half-open only the probes go out, and the run waits for their answers", async () => {
  await using r = await setup(10);
  r.gate.state = "half";
  r.gate.probes = 2;
  r.replayer.kick();
  for (let i = 0; i < 5; i++) {
    r.clock.advance(1);
    await settle();
  }
  assert.deepEqual(r.sender.sent, r.ids.slice(0, 2));
  assert.equal(r.wal.pendingCount(), 8, "the records not sent went back to pending");
  // The breaker closes after the probes succeed; the next run takes the rest.
  r.sender.answerAll(true);
  r.gate.state = "closed";
  await settle();
  r.replayer.kick();
  for (let i = 0; i < 10; i++) {
    r.clock.advance(1);
    await settle();
  }
  assert.deepEqual(r.sender.sent, r.ids);
});

Deno.test("replay: a record in flight is never handed out again, however often replay is kicked", async () => {
  await using r = await setup(4);
  for (let kick = 0; kick < 5; kick++) {
    r.replayer.kick();
    r.clock.advance(1);
    await settle();
  }
  assert.deepEqual(r.sender.sent, r.ids);
  // Failed: released, and sent again by a later run, once each.
  r.sender.answerAll(false);
  await settle();
  r.replayer.kick();
  for (let i = 0; i < 5; i++) {
    r.clock.advance(1);
    await settle();
  }
  assert.deepEqual(r.sender.sent, [...r.ids, ...r.ids]);
});

Deno.test("replay: runs start every period by themselves once started", async () => {
  await using r = await setup(0, { periodMs: 1000 });
  r.replayer.start();
  r.wal.append({ topic: "t", value: new Uint8Array(1) });
  await r.wal.sync();
  r.clock.advance(999);
  await settle();
  assert.equal(r.sender.sent.length, 0);
  r.clock.advance(1);
  await settle();
  assert.equal(r.sender.sent.length, 1);
});

Deno.test("replay: stop() starts nothing new and resolves once the sends in flight are answered", async () => {
  await using r = await setup(3, { rate: 1 });
  r.replayer.kick();
  await settle();
  assert.equal(r.sender.sent.length, 1);
  let stopped = false;
  const stopping = r.replayer.stop().then(() => stopped = true);
  r.clock.advance(5_000);
  await settle();
  assert.equal(r.sender.sent.length, 1, "no send after stop");
  assert.equal(stopped, false, "waits for the send in flight");
  r.sender.answerAll(false);
  await stopping;
  assert.equal(r.wal.pendingCount(), 3, "every record is still in the WAL");
});

Deno.test("replay: a WAL read that fails ends the run with an error line; the records stay for the next run", async () => {
  const { wal, storage } = await openFaultyWal(null);
  const ids = [0, 1, 2].map((i) => wal.append({ topic: "t", value: new TextEncoder().encode(`r${i}`) }).id);
  await wal.sync();
  await using r = replayRig(wal);
  const read = storage.read;
  storage.read = () => Promise.reject(ioError());
  const lines = await captured(async () => {
    r.replayer.kick();
    await settle();
  });
  assert.deepEqual(lines.map((l) => l.msg), ["wal replay: reading the WAL failed; the run ends"]);
  assert.deepEqual(r.sender.sent, []);
  assert.equal(wal.pendingCount(), 3, "released for the next run");
  storage.read = read;
  r.replayer.kick();
  for (let i = 0; i < 3; i++) {
    r.clock.advance(1);
    await settle();
  }
  assert.deepEqual(r.sender.sent, ids);
});
