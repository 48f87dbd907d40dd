/**
 * Key order (`producer.wal.preserve_order: key`): the KeyOrder rules on their own, replay one record per group on a
 * fake clock, recovery's count per group, and the facade's routing on librdkafka's mock cluster.
 */
import assert from "node:assert/strict";
import { KeyOrder, orderGroupOf } from "../src/producer/key_order.ts";
import { openWal } from "../src/wal/wal.ts";
import { KafkaProducer } from "../src/kafka/producer.ts";
import { facadeRig, MOCK_KAFKA, refusal } from "./support/facade_rig.ts";
import { replayRig, type ReplayRigOptions } from "./support/replay.ts";
import { tempDir } from "./support/temp_dir.ts";
import { settle, waitFor } from "./support/wait.ts";

/** Replay with key order and no pacing to speak of. */
const ORDERED: ReplayRigOptions = { rate: 1_000_000, groupOf: orderGroupOf };

const text = (s: string) => new TextEncoder().encode(s);
const keyed = (key: string, value: string) => ({ topic: "t", key: text(key), value: text(value) });

Deno.test("key order: the group is (topic, key), else (topic, partition), else the topic", () => {
  const value = text("v");
  assert.equal(
    orderGroupOf({ topic: "t", key: text("k"), value }),
    orderGroupOf({ topic: "t", key: text("k"), value }),
  );
  assert.notEqual(
    orderGroupOf({ topic: "t", key: text("k"), value }),
    orderGroupOf({ topic: "u", key: text("k"), value }),
  );
  assert.notEqual(
    orderGroupOf({ topic: "t", key: text("a"), value }),
    orderGroupOf({ topic: "t", key: text("b"), value }),
  );
  // The key wins over the partition; an empty key counts as none.
  assert.equal(
    orderGroupOf({ topic: "t", key: text("k"), partition: 1, value }),
    orderGroupOf({ topic: "t", key: text("k"), partition: 2, value }),
  );
  assert.equal(
    orderGroupOf({ topic: "t", key: new Uint8Array(0), partition: 2, value }),
    orderGroupOf({ topic: "t", partition: 2, value }),
  );
  assert.notEqual(
    orderGroupOf({ topic: "t", partition: 1, value }),
    orderGroupOf({ topic: "t", partition: 2, value }),
  );
  assert.equal(orderGroupOf({ topic: "t", value }), orderGroupOf({ topic: "t", key: null, value }));
  assert.notEqual(orderGroupOf({ topic: "t", value }), orderGroupOf({ topic: "t", partition: 0, value }));
});

Deno.test("key order: a group with records in the WAL sends new ones there until its last one leaves", () => {
  const order = new KeyOrder();
  assert.equal(order.mustSpool("a"), false);
  order.appended("a");
  order.appended("a");
  assert.equal(order.mustSpool("a"), true);
  assert.equal(order.mustSpool("b"), false, "other groups are not affected");
  order.left("a");
  assert.equal(order.mustSpool("a"), true, "one record is still in the WAL");
  order.left("a");
  assert.equal(order.mustSpool("a"), false);
  assert.equal(order.groups, 0, "a group with nothing left is forgotten");
  order.left("a");
  assert.equal(order.walCount("a"), 0, "a stray ack does not go below zero");
});

Deno.test("key order: an append for the WAL waits until the group's records in flight are reported", () => {
  const order = new KeyOrder();
  const ran: string[] = [];
  const first = order.sent("a");
  const second = order.sent("a");
  assert.equal(order.holds("a"), true);
  assert.equal(order.inTurn("a", () => ran.push("new")), false, "held while records are in flight");
  assert.equal(order.inTurn("b", () => ran.push("other group")), true, "another group's append runs at once");
  assert.equal(order.mustSpool("a"), true, "later records of the group follow the held one");
  order.delivered(first);
  assert.deepEqual(ran, ["other group"], "one record is still in flight");
  order.failed(second);
  assert.deepEqual(ran, ["other group", "new"]);
  assert.equal(order.waiting, 0);
  assert.equal(order.groups, 0, "nothing was appended (the closures did not say so): nothing is tracked");
});

Deno.test("key order: failed direct deliveries are spooled in acceptance order, before later appends", () => {
  const order = new KeyOrder();
  const ran: string[] = [];
  const spool = (name: string) => () => {
    ran.push(name);
    order.appended("a");
  };
  const tickets = [order.sent("a"), order.sent("a"), order.sent("a")];
  // Reports out of order, and a new record accepted after the three.
  order.failed(tickets[2], spool("m2"));
  order.failed(tickets[0], spool("m0"));
  order.inTurn("a", spool("m3"));
  assert.deepEqual(ran, [], "m1 is still in flight");
  order.failed(tickets[1], spool("m1"));
  assert.deepEqual(ran, ["m0", "m1", "m2", "m3"]);
  assert.equal(order.walCount("a"), 4);
  assert.equal(order.holds("a"), false);
  assert.equal(order.broken, 0, "nothing of the group reached Kafka ahead of them");
});

Deno.test("key order: a failure spooled after a newer record of its key was delivered is counted as broken", () => {
  const order = new KeyOrder();
  const noop = () => {};
  // Delivered first, then the older one fails (a timeout inside librdkafka).
  let [older, newer] = [order.sent("a"), order.sent("a")];
  order.delivered(newer);
  order.failed(older, noop);
  assert.equal(order.broken, 1);
  // The older one fails first and waits for its turn; then the newer one is delivered.
  [older, newer] = [order.sent("b"), order.sent("b")];
  order.failed(older, noop);
  order.delivered(newer);
  assert.equal(order.broken, 2);
  // In order: nothing is counted.
  [older, newer] = [order.sent("c"), order.sent("c")];
  order.delivered(older);
  order.failed(newer, noop);
  assert.equal(order.broken, 2);
});

Deno.test("key order: a delivered record in flight lets the held ones go; the group is then in the WAL", () => {
  const order = new KeyOrder();
  const ran: string[] = [];
  const t = order.sent("a");
  order.inTurn("a", () => {
    ran.push("held");
    order.appended("a");
  });
  order.delivered(t);
  assert.deepEqual(ran, ["held"]);
  assert.equal(order.mustSpool("a"), true);
  order.left("a");
  assert.equal(order.groups, 0);
});

Deno.test("key order: after a producer swap, a group with records in flight on the old one takes the WAL path", () => {
  const order = new KeyOrder();
  const t = order.sent("a");
  const other = order.sent("b");
  order.delivered(other);
  order.replacedProducer();
  assert.equal(order.mustSpool("a"), true, "a new producer could deliver ahead of the old one's records");
  assert.equal(order.mustSpool("b"), false, "nothing of b was in flight");
  order.failed(t);
  assert.equal(order.mustSpool("a"), false, "once they are reported, direct sends are safe again");
  assert.equal(order.groups, 0);
});

Deno.test("key order: groups recovered from the WAL are known from the start", () => {
  const order = new KeyOrder({ recovered: new Map([["a", 2], ["b", 0]]) });
  assert.equal(order.mustSpool("a"), true);
  assert.equal(order.mustSpool("b"), false);
  assert.equal(order.groups, 1);
});

Deno.test("key order: replay sends one record per group at a time, oldest first, many groups at once", async () => {
  const wal = await openWal({ path: "", inMemory: true, maxBytes: 1 << 20 });
  const names = ["a0", "b0", "a1", "c0", "a2", "b1"];
  const ids = new Map(names.map((n) => [n, wal.append(keyed(n[0], n)).id]));
  const name = new Map([...ids].map(([n, id]) => [id, n]));
  await using r = replayRig(wal, ORDERED);
  r.replayer.kick();
  await r.step();
  const sent = () => r.sender.sent.map((id) => name.get(id));
  assert.deepEqual(sent(), ["a0", "b0", "c0"], "the first record of each group");
  assert.equal(wal.pendingCount(), 0, "the others wait checked out, behind their group");
  r.sender.answer(ids.get("b0")!, true);
  await r.step();
  assert.deepEqual(sent(), ["a0", "b0", "c0", "b1"]);
  r.sender.answer(ids.get("a0")!, true);
  await r.step();
  assert.deepEqual(sent().slice(4), ["a1"]);
  r.sender.answer(ids.get("a1")!, true);
  await r.step();
  assert.deepEqual(sent().slice(5), ["a2"]);
  r.sender.answerAll(true);
  await r.step();
  assert.equal(wal.stats().records, 0);
});

Deno.test("key order: a record checked out behind a group whose next one is about to go waits its turn", async () => {
  const wal = await openWal({ path: "", inMemory: true, maxBytes: 1 << 20 });
  const [a0, a1, b0, a2] = ["a0", "a1", "b0", "a2"].map((n) => wal.append(keyed(n[0], n)).id);
  // 10 records/s: the run waits 100 ms for b0's token, and a0 is delivered meanwhile.
  await using r = replayRig(wal, { ...ORDERED, rate: 10 });
  r.replayer.kick();
  await settle();
  assert.deepEqual(r.sender.sent, [a0]);
  r.sender.answer(a0, true);
  await settle();
  r.clock.advance(100);
  await settle();
  assert.deepEqual(r.sender.sent, [a0, b0], "a2, checked out after a1, did not jump ahead of it");
  r.clock.advance(100);
  await settle();
  assert.deepEqual(r.sender.sent, [a0, b0, a1]);
  r.sender.answer(a1, true);
  await settle();
  r.clock.advance(100);
  await settle();
  assert.deepEqual(r.sender.sent, [a0, b0, a1, a2]);
});

Deno.test("key order: a failed replay sends its group's waiting records back; the next run starts from it", async () => {
  const wal = await openWal({ path: "", inMemory: true, maxBytes: 1 << 20 });
  const a = [0, 1, 2].map((i) => wal.append(keyed("a", `a${i}`)).id);
  const b = wal.append(keyed("b", "b0")).id;
  await using r = replayRig(wal, ORDERED);
  r.replayer.kick();
  await r.step();
  assert.deepEqual(r.sender.sent, [a[0], b]);
  r.sender.answer(a[0], false);
  await r.step();
  assert.equal(wal.pendingCount(), 3, "a0 and the two behind it are back in the WAL");
  r.sender.answer(b, true);
  await r.step();
  assert.deepEqual(r.sender.sent, [a[0], b], "the run stopped after the failure");
  const [next] = await wal.checkout(1);
  assert.equal(next.id, a[0], "the WAL hands released records out oldest first");
  wal.release(next.id);
  r.replayer.kick();
  await r.step();
  assert.deepEqual(r.sender.sent.slice(2), [a[0]]);
  r.sender.answer(a[0], true);
  await r.step();
  r.sender.answer(a[1], true);
  await r.step();
  assert.deepEqual(r.sender.sent.slice(2), a);
});

Deno.test("key order: recovery counts the records left in the WAL per group, from the pass it makes anyway", async () => {
  await using dir = await tempDir("ka-order-");
  const path = `${dir.path}/wal`;
  const first = await openWal({ path, inMemory: false, maxBytes: 1 << 20, tagOf: orderGroupOf });
  assert.equal(first.recoveredTags().size, 0);
  const a0 = first.append(keyed("a", "a0")).id;
  first.append(keyed("a", "a1"));
  first.append(keyed("b", "b0"));
  first.append({ topic: "t", value: text("keyless") });
  const c0 = first.append(keyed("c", "c0")).id;
  await first.sync();
  first.ack(a0);
  first.ack(c0);
  await first.close();
  const again = await openWal({ path, inMemory: false, maxBytes: 1 << 20, tagOf: orderGroupOf });
  assert.deepEqual(
    new Map(again.recoveredTags()),
    new Map([
      [orderGroupOf(keyed("a", "")), 1],
      [orderGroupOf(keyed("b", "")), 1],
      [orderGroupOf({ topic: "t", value: text("") }), 1],
    ]),
  );
  await again.close();
  const plain = await openWal({ path, inMemory: false, maxBytes: 1 << 20 });
  assert.equal(plain.recoveredTags().size, 0, "without a tag function nothing is decoded");
  await plain.close();
});

Deno.test("key order: the facade sends a key with records in the WAL there; ack=kafka for it gets 503", async () => {
  await using r = await facadeRig({ order: true, breakerTimeoutMs: 10 });
  r.breaker.trip("test");
  assert.equal((await r.facade.produce(keyed("a", "a0"), "wal")).where, "wal");
  await waitFor("the breaker to half-open", () => r.breaker.state === "half", 5_000);
  for (let i = 0; i < 3; i++) r.breaker.success();
  assert.equal(r.breaker.state, "closed");
  assert.equal((await r.facade.produce(keyed("a", "a1"), "wal")).where, "wal", "behind a0, not to Kafka");
  assert.equal((await r.facade.produce(keyed("b", "b0"), "wal")).where, "kafka", "another key goes to Kafka");
  const refused = await refusal(r.facade.produce(keyed("a", "a2"), "kafka"));
  assert.equal(refused.kind, "unavailable");
  assert.equal(refused.message, "key has records waiting in the WAL");
  assert.equal(refused.retryAfterSeconds, 5);
  // Replay delivers both; the key then goes to Kafka directly again.
  for (const record of await r.wal.checkout(10)) assert.equal(await r.facade.replay(record.id, record), true);
  assert.equal(r.order!.groups, 0);
  assert.equal((await r.facade.produce(keyed("a", "a3"), "kafka")).where, "kafka");
});

Deno.test("key order: records in flight that fail are spooled in order, ahead of a record held behind them", async () => {
  // A long linger keeps the first records in librdkafka until the fatal error purges them.
  await using r = await facadeRig({ order: true, kafka: { "linger.ms": "500" } });
  const inFlight = [0, 1, 2, 3].map((i) => r.facade.produce(keyed("a", `a${i}`), "wal"));
  r.breaker.trip("test");
  const held = r.facade.produce(keyed("a", "a4"), "wal");
  await settle();
  assert.equal(r.wal.stats().records, 0, "a4 waits for a0..a3 instead of being appended first");
  assert.equal(r.order!.waiting, 1);
  r.producer.raiseTestFatalError("key order test");
  const results = await Promise.all([...inFlight, held]);
  assert.deepEqual(results.map((x) => x.where), Array(5).fill("wal"));
  const records = await r.wal.checkout(10);
  assert.deepEqual(records.map((x) => new TextDecoder().decode(x.value)), ["a0", "a1", "a2", "a3", "a4"]);
  assert.equal(r.order!.walCount(orderGroupOf(keyed("a", ""))), 5);
});

Deno.test("key order: after a producer swap, a key with a record in flight on the old producer goes through the WAL", async () => {
  await using r = await facadeRig({ order: true, kafka: { "linger.ms": "300" } });
  const first = r.facade.produce(keyed("a", "a0"), "wal");
  const next = KafkaProducer.open({
    id: "key-order-next",
    config: { ...MOCK_KAFKA, "enable.idempotence": "true" },
  });
  const old = r.facade.swapProducer(next);
  try {
    const second = r.facade.produce(keyed("a", "a1"), "wal");
    const other = r.facade.produce(keyed("b", "b0"), "wal");
    assert.equal((await first).where, "kafka", "the old producer delivered a0");
    assert.equal((await second).where, "wal", "a1 did not race a0 through the new producer");
    assert.equal((await other).where, "kafka", "a key with nothing in flight goes to the new producer");
    const [record] = await r.wal.checkout(10);
    assert.equal(new TextDecoder().decode(record.value), "a1");
  } finally {
    r.facade.swapProducer(old);
    await next.close(1000);
  }
});
