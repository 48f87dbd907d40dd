/**
 * The HTTP listener under connection attacks, with its default limits (docs/security.md, Limits): 500 slowloris
 * connections sending one header byte a second (each reconnects when it is dropped) and 5,000 idle keep-alive
 * connections, while a normal client posts 10,000 messages. The real service runs as a child process with
 * Kafka down, so messages go to the WAL. Prints the normal client's statuses and latencies, how many attack
 * connections were dropped, and the service's peak resident memory.
 *
 * Run: deno run --allow-all bench/slowloris.ts [seconds of slowloris, default 60]
 * It raises its open-file limit (ulimit -n) by running itself again under bash.
 */
import { memoryOf, readReply, servicePid } from "../tests/support/attack.ts";
import { freePort, startService } from "../tests/support/service.ts";
import { delay } from "../tests/support/wait.ts";

const SLOW = 500;
const IDLE = 5_000;
const MESSAGES = 10_000;
const CLIENT_CONCURRENCY = 4;
const FILES = 20_000;

const encoder = new TextEncoder();

async function main(seconds: number): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ka-slowloris-" });
  await using svc = await startService({
    // 60 s rather than the default 30 minutes: the idle connections are to be closed within the run.
    server: { http: { listen: `127.0.0.1:${freePort()}`, idle_timeout: "60s" } },
    kafka: { brokers: ["127.0.0.1:1"] },
    producer: { wal: { mode: "fallback", path: `${dir}/wal` } },
  }, { dir });
  const pid = servicePid(svc);
  const { hostname, port } = new URL(svc.http);
  const connect = () => Deno.connect({ hostname, port: Number(port) });

  // Idle keep-alive connections: one request each, then silence.
  const idle: Deno.Conn[] = [];
  let idleClosed = 0;
  for (let i = 0; i < IDLE; i += 100) {
    await Promise.all(Array.from({ length: 100 }, async () => {
      const conn = await connect();
      await conn.write(
        encoder.encode(`POST /topics/bench/messages HTTP/1.1\r\nHost: bench\r\nContent-Length: 1\r\n\r\nm`),
      );
      await readReply(conn);
      idle.push(conn);
      conn.read(new Uint8Array(64)).then(() => idleClosed++, () => idleClosed++);
    }));
  }

  const idleOpened = performance.now();

  // Slowloris: a header byte a second; a dropped connection is opened again until the end.
  const end = Date.now() + seconds * 1000;
  let slowDropped = 0;
  const head = encoder.encode(
    `POST /topics/bench/messages HTTP/1.1\r\nHost: bench\r\nX-Pad: ${"p".repeat(200)}`,
  );
  const slowloris = async () => {
    while (Date.now() < end) {
      const conn = await connect();
      try {
        for (let i = 0; Date.now() < end; i = (i + 1) % head.byteLength) {
          await conn.write(head.subarray(i, i + 1));
          await delay(1000);
        }
      } catch {
        slowDropped++;
      } finally {
        try {
          conn.close();
        } catch { /* closed */ }
      }
    }
  };
  const attack = Promise.all(Array.from({ length: SLOW }, slowloris));

  // The normal client, meanwhile.
  await delay(2_000);
  const statuses = new Map<number, number>();
  const latencies: number[] = [];
  let sent = 0;
  const url = `${svc.http}/topics/bench/messages`;
  const client = async () => {
    while (sent < MESSAGES) {
      sent++;
      const started = performance.now();
      let status = 0;
      try {
        const res = await fetch(url, { method: "POST", body: "m".repeat(100) });
        await res.body?.cancel();
        status = res.status;
      } catch {
        status = 0; // no reply
      }
      latencies.push(performance.now() - started);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
    }
  };
  const clientStart = performance.now();
  await Promise.all(Array.from({ length: CLIENT_CONCURRENCY }, client));
  const clientSeconds = (performance.now() - clientStart) / 1000;
  await attack;
  const memory = memoryOf(pid);
  // The idle connections were opened before the attack: by now they are near their idle_timeout (60 s).
  for (let i = 0; i < 150 && idleClosed < IDLE; i++) await delay(100);
  const idleSeconds = (performance.now() - idleOpened) / 1000;
  for (const conn of idle) {
    try {
      conn.close();
    } catch { /* closed */ }
  }

  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  console.log(JSON.stringify({
    slowloris: { connections: SLOW, seconds, dropped: slowDropped },
    idle: { connections: IDLE, closed_by_server: idleClosed, seconds_since_opened: Math.round(idleSeconds) },
    client: {
      messages: MESSAGES,
      statuses: Object.fromEntries(statuses),
      seconds: Number(clientSeconds.toFixed(1)),
      p50_ms: Number(at(0.5).toFixed(2)),
      p99_ms: Number(at(0.99).toFixed(2)),
      max_ms: Number(latencies[latencies.length - 1].toFixed(2)),
    },
    service_peak_rss_mib: Math.round(memory.hwmKiB / 1024),
  }));
  await svc.stop("SIGKILL");
  await Deno.remove(dir, { recursive: true });
}

if (Deno.env.get("KA_SLOWLORIS_CHILD") === undefined) {
  // Thousands of sockets on each side: raise the open-file limit, then run again.
  const self = new URL(import.meta.url).pathname;
  const out = await new Deno.Command("bash", {
    args: [
      "-c",
      `ulimit -n ${FILES} && exec "$0" run --allow-all "$1" "$2"`,
      Deno.execPath(),
      self,
      ...Deno.args,
    ],
    env: { KA_SLOWLORIS_CHILD: "1" },
  }).spawn().status;
  Deno.exit(out.code);
} else {
  await main(Number(Deno.args[0] || 60));
}
