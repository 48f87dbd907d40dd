/**
 * Resident memory of the service under hostile HTTP bodies, at full size: 13 chunked requests of 40,000
 * one-byte chunks, 2,000 connections that declare a 1,000,000-byte body and send 1 byte, and a 300,000,000-byte
 * body declared by two identical Content-Length headers. Each attack runs against a fresh service (no broker,
 * WAL in a temp dir) and is cut off after a time limit.
 *
 * Run: deno run --allow-all bench/http_attack_memory.ts [seconds per attack, default 120]
 * Prints, per attack, the peak RSS (VmHWM) before -> after, the RSS after, and whether an ordinary POST still
 * gets 200.
 */
import {
  closeAll,
  memoryOf,
  openUnsentBodies,
  portOf,
  postDuplicatedLength,
  postNormal,
  postTinyChunks,
  servicePid,
} from "../tests/support/attack.ts";
import { type Service, startService } from "../tests/support/service.ts";

const LIMIT_MS = Number(Deno.args[0] ?? 120) * 1000;
const TOPIC = "attack";

interface Attack {
  name: string;
  /** Runs the attack; returns a note for the table. `check` reads memory and posts while the attack holds. */
  run(svc: Service, check: () => Promise<void>): Promise<string>;
}

const attacks: Attack[] = [
  {
    name: "13 x 40,000 one-byte chunks",
    async run(svc, check) {
      const statuses = [];
      for (let i = 0; i < 13; i++) statuses.push(await postTinyChunks(portOf(svc.http), TOPIC, 40_000));
      await check();
      return `replies ${[...new Set(statuses)].join(",")}`;
    },
  },
  {
    name: "2,000 x Content-Length 1,000,000, 1 byte sent",
    async run(svc, check) {
      const conns = await openUnsentBodies(portOf(svc.http), TOPIC, 2_000, 1_000_000);
      try {
        await new Promise((r) => setTimeout(r, 2000));
        await check();
        return `${conns.length} connections held`;
      } finally {
        closeAll(conns);
      }
    },
  },
  {
    name: "300,000,000 bytes, Content-Length twice",
    async run(svc, check) {
      const { status, sent } = await postDuplicatedLength(portOf(svc.http), TOPIC, 300_000_000);
      await check();
      return `reply ${status} after ${(sent / 1e6).toFixed(0)} MB sent`;
    },
  },
];

function mib(kib: number): string {
  return `${(kib / 1024).toFixed(0)} MiB`;
}

async function measure(attack: Attack): Promise<string[]> {
  const dir = await Deno.makeTempDir({ prefix: "ka-attack-bench-" });
  const svc = await startService({
    kafka: { brokers: ["127.0.0.1:1"] },
    producer: { wal: { mode: "fallback", path: `${dir}/wal` } },
  }, { dir });
  const started = Date.now();
  try {
    const pid = servicePid(svc);
    await postNormal(svc.http, TOPIC);
    const before = memoryOf(pid);
    let after = before;
    let post = 0;
    const check = async () => {
      after = memoryOf(pid);
      post = await postNormal(svc.http, TOPIC).catch(() => 0);
    };
    let timer: ReturnType<typeof setTimeout> | undefined;
    const limit = new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve(`cut off after ${LIMIT_MS / 1000} s`), LIMIT_MS);
    });
    const note = await Promise.race([attack.run(svc, check), limit]).finally(() => clearTimeout(timer));
    if (after === before) after = memoryOf(pid);
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    return [
      attack.name,
      `${mib(before.hwmKiB)} -> ${mib(after.hwmKiB)}`,
      mib(after.rssKiB),
      String(post),
      `${seconds} s`,
      note,
    ];
  } finally {
    await svc.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
}

const rows = [["attack", "peak RSS before -> after", "RSS after", "POST after", "time", "note"]];
for (const attack of attacks) rows.push(await measure(attack));
const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
for (const row of rows) console.log(row.map((cell, i) => cell.padEnd(widths[i])).join("  "));
// A cut-off attack may leave its sockets open; they belong to this process, so end it.
Deno.exit(0);
