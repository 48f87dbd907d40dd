/** The bound on per-topic series: room for `max` topics, the rest under OTHER_TOPICS, idle topics swept. */
import assert from "node:assert/strict";
import { OTHER_TOPICS, TopicSeries } from "../src/topic_series.ts";
import { acks, removeIdleTopics, topicLabel, topicSeries } from "../src/metrics.ts";
import { FakeClock } from "./support/fake_clock.ts";

Deno.test("TopicSeries: topics past max share OTHER_TOPICS; known topics keep their own label", () => {
  const series = new TopicSeries({ max: 2, clock: new FakeClock() });
  assert.equal(series.label("a"), "a");
  assert.equal(series.label("b"), "b");
  assert.equal(series.label("c"), OTHER_TOPICS);
  assert.equal(series.label("a"), "a");
  assert.equal(series.size, 2);
  assert.equal(series.has("c"), false);
});

Deno.test("TopicSeries: a topic idle for idleMs since the sweep that found it used is swept, and its place is free again", () => {
  const clock = new FakeClock();
  const series = new TopicSeries({ max: 2, idleMs: 1000, clock });
  series.label("a");
  clock.advance(600);
  series.label("b");
  // Both used since the last sweep: stamped now (600), whenever they were used.
  assert.deepEqual(series.sweep(), []);
  clock.advance(999);
  series.label("b");
  series.label("b"); // the topic used last: no lookup, still counted as a use
  assert.deepEqual(series.sweep(), []);
  clock.advance(1);
  assert.deepEqual(series.sweep(), ["a"]);
  assert.equal(series.label("c"), "c");
  assert.equal(series.label("d"), OTHER_TOPICS);
  clock.advance(999);
  // c, used since the last sweep, is stamped by this one.
  assert.deepEqual(series.sweep(), ["b"]);
  clock.advance(999);
  assert.deepEqual(series.sweep(), []);
  clock.advance(1);
  assert.deepEqual(series.sweep(), ["c"]);
});

Deno.test("TopicSeries: the topic used last is used again after a sweep", () => {
  const clock = new FakeClock();
  const series = new TopicSeries({ max: 1, idleMs: 1000, clock });
  series.label("a");
  series.sweep(); // a stamped 0
  clock.advance(900);
  series.label("a"); // must count as a use, though it was the last topic before the sweep
  clock.advance(100);
  assert.deepEqual(series.sweep(), []);
  clock.advance(999);
  assert.deepEqual(series.sweep(), []);
  clock.advance(1);
  assert.deepEqual(series.sweep(), ["a"]);
  assert.equal(series.label("b"), "b");
});

Deno.test("TopicSeries: bad options are a RangeError", () => {
  assert.throws(() => new TopicSeries({ max: -1 }), RangeError);
  assert.throws(() => new TopicSeries({ max: 1.5 }), RangeError);
  assert.throws(() => new TopicSeries({ idleMs: 0 }), RangeError);
});

Deno.test("metrics: 5,000 topic names add at most max series to a per-topic counter", async () => {
  for (let i = 0; i < 5_000; i++) acks.inc({ topic: topicLabel(`flood-${i}`) });
  const series = (await acks.get()).values;
  assert.ok(series.length <= topicSeries.max + 1, `${series.length} series`);
  const other = series.find((v) => v.labels.topic === OTHER_TOPICS);
  assert.ok(other !== undefined && other.value >= 5_000 - topicSeries.max);
  // Nothing is idle yet: sweeping keeps every series.
  await removeIdleTopics();
  assert.equal((await acks.get()).values.length, series.length);
});
