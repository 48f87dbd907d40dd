/** logRepeated: the first line of a burst at once, then one line per window with the count held back. */
import assert from "node:assert/strict";
import {
  checkLogOutputs,
  holdLogLines,
  log,
  logRepeated,
  releaseLogLines,
  setLogLevel,
  setLogOutputs,
} from "../src/log.ts";
import { captured } from "./support/log_capture.ts";
import { delay } from "./support/wait.ts";

Deno.test("logRepeated: 1,000 lines in a burst become the first line and one line with repeated=999", async () => {
  const key = `burst-${crypto.randomUUID()}`;
  let lastAt = 0;
  const lines = await captured(async () => {
    for (let i = 0; i < 1000; i++) logRepeated(key, "error", "wal write failed", { attempt: i }, 50);
    lastAt = Date.now() / 1000;
    await delay(80);
  });
  assert.deepEqual(lines.map((l) => [l.msg, l.attempt, l.repeated]), [
    ["wal write failed", 0, undefined],
    ["wal write failed", 999, 999],
  ]);
  // The summary says when the last line it stands for came, before its own ts (the end of the window).
  const summary = lines[1] as { ts: number; last_ts: number };
  assert.ok(Math.abs(summary.last_ts - lastAt) < 0.01, `${summary.last_ts} vs ${lastAt}`);
  assert.ok(summary.ts - summary.last_ts >= 0.04, JSON.stringify(summary));
});

Deno.test("logRepeated: a quiet window ends the burst; the next line is written at once", async () => {
  const key = `quiet-${crypto.randomUUID()}`;
  const lines = await captured(async () => {
    logRepeated(key, "warn", "kafka: cannot list topics", {}, 30);
    await delay(70);
    logRepeated(key, "warn", "kafka: cannot list topics", {}, 30);
    await delay(50);
  });
  assert.equal(lines.length, 2);
  assert.ok(lines.every((l) => l.repeated === undefined));
});

Deno.test("log: one JSON object per line, ts in seconds since the epoch as the Go service's zap wrote it", async () => {
  const before = Date.now() / 1000;
  const [line] = await captured(() => Promise.resolve(log("warn", "kafka error", { code: -195 })));
  assert.deepEqual(Object.keys(line), ["ts", "level", "msg", "code"]);
  assert.equal(typeof line.ts, "number");
  assert.ok((line.ts as number) >= before && (line.ts as number) <= Date.now() / 1000, String(line.ts));
  assert.deepEqual([line.level, line.msg, line.code], ["warn", "kafka error", -195]);
});

Deno.test("setLogOutputs: each line goes to every output, files appended to; a file that cannot be opened is named", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ka-log-" });
  try {
    const first = `${dir}/first.log`;
    await Deno.writeTextFile(first, "kept\n");
    const second = `${dir}/second log.log`;
    const lines = await captured(() => {
      setLogOutputs([first, `file://${encodeURI(second)}`, "stdout"]);
      try {
        log("warn", "to all three", { n: 1 });
        // Neither opened: the outputs stay as they were.
        assert.throws(
          () => setLogOutputs(["stdout", `${dir}/missing/x.log`]),
          (err: Error) => err.message.startsWith(`cannot open ${dir}/missing/x.log: `),
        );
        log("warn", "still to all three", { n: 2 });
      } finally {
        setLogOutputs(["stdout"]);
      }
      log("warn", "to stdout only", { n: 3 });
    });
    assert.deepEqual(lines.map((l) => l.n), [1, 2, 3]);
    const inFile = (path: string) =>
      Deno.readTextFileSync(path).split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l).n);
    assert.ok(Deno.readTextFileSync(first).startsWith("kept\n"));
    assert.deepEqual(inFile(first), [1, 2]);
    assert.deepEqual(inFile(second), [1, 2]);
    assert.throws(() => setLogOutputs([]), /no output given/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("holdLogLines: what is logged before the outputs are set goes to them once set, or where lines went", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ka-log-held-" });
  try {
    const file = `${dir}/held.log`;
    const printed = await captured(() => {
      holdLogLines();
      log("warn", "held", { n: 1 });
      assert.throws(() => setLogOutputs([`${dir}/missing/x.log`]));
      log("warn", "held too", { n: 2 });
      setLogOutputs([file]);
      log("warn", "after", { n: 3 });
      setLogOutputs(["stdout"]);
      holdLogLines();
      log("warn", "released", { n: 4 });
      releaseLogLines();
      log("warn", "as usual", { n: 5 });
    });
    const inFile = Deno.readTextFileSync(file).trim().split("\n").map((l) => JSON.parse(l).n);
    assert.deepEqual(inFile, [1, 2, 3]);
    assert.deepEqual(printed.map((l) => l.n), [4, 5]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkLogOutputs: refuses what setLogOutputs would, and creates nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ka-log-check-" });
  try {
    checkLogOutputs(["stdout", "stderr", `${dir}/new.log`, `file://${dir}/also new.log`]);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
    assert.throws(() => checkLogOutputs([`${dir}/missing/x.log`]), {
      message: `cannot open ${dir}/missing/x.log: ${dir}/missing is not a directory`,
    });
    assert.throws(
      () => checkLogOutputs([dir]),
      (err: Error) => err.message.startsWith(`cannot open ${dir}: `),
    );
    assert.throws(() => checkLogOutputs([]), /no output given/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("holdLogLines: held lines are written at the level set by the time they are released", async () => {
  const printed = await captured(() => {
    setLogLevel("info");
    holdLogLines();
    log("debug", "held debug", { n: 1 });
    log("warn", "held warn", { n: 2 });
    setLogLevel("error");
    releaseLogLines();
    setLogLevel("info");
  });
  assert.deepEqual(printed.map((l) => l.n), []);
  const again = await captured(() => {
    holdLogLines();
    log("debug", "held debug", { n: 3 });
    setLogLevel("debug");
    releaseLogLines();
    setLogLevel("info");
  });
  assert.deepEqual(again.map((l) => l.n), [3]);
});
