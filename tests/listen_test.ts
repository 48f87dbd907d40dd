/**
 * Listen addresses as bound: `:port` and `0.0.0.0:port` take IPv4 and IPv6 on every listener kind (plain HTTP on
 * Deno.listen, TLS HTTP on node:https, gRPC on node:net and node:tls, monitoring both ways), as the Go service's
 * net.Listen did; an explicit address is bound as given.
 */
import assert from "node:assert/strict";
import { startGrpcServer } from "../src/server/grpc/server.ts";
import { startHttpServer } from "../src/server/http.ts";
import { bindHost, type Listener } from "../src/server/listener.ts";
import { startMonitoringServer } from "../src/server/monitoring.ts";
import { readTls, TlsSource } from "../src/server/tls.ts";
import { FakeFacade } from "./support/fake_facade.ts";
import { freePort, shippedFlags, startService } from "./support/service.ts";
import { makeCa } from "./support/tls.ts";
import { delay } from "./support/wait.ts";

/**
 * Whether a wildcard listener here takes IPv6 beside IPv4: an IPv6 loopback to connect from, and sockets not
 * IPv6-only by default (net.ipv6.bindv6only). Otherwise the IPv6 cases are skipped.
 */
const dualStack = (() => {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
  } catch {
    console.warn("listen_test: no IPv6 loopback (::1) on this machine, skipping the IPv6 cases");
    return false;
  }
  if (Deno.readTextFileSync("/proc/sys/net/ipv6/bindv6only").trim() === "1") {
    console.warn("listen_test: net.ipv6.bindv6only is 1 (wildcards bind 0.0.0.0), skipping the IPv6 cases");
    return false;
  }
  return true;
})();

const dir = await Deno.makeTempDir({ prefix: "ka-listen-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const serverPair = await (await makeCa(dir)).server();
const tls = () =>
  new TlsSource(readTls("test", { certFile: serverPair.cert, keyFile: serverPair.key, clientCaFile: "" }));

/** Each listener kind, started on `listen`. */
const KINDS: Record<string, (listen: string) => Promise<Listener>> = {
  "http": (listen) => startHttpServer({ listen, facade: new FakeFacade() }),
  "http tls": (listen) => startHttpServer({ listen, facade: new FakeFacade(), tls: tls() }),
  "grpc": (listen) => startGrpcServer({ listen, facade: new FakeFacade(), maxRequestSize: 1024 }),
  "grpc tls": (listen) =>
    startGrpcServer({ listen, facade: new FakeFacade(), maxRequestSize: 1024, tls: tls() }),
  "monitoring": (listen) => startMonitoringServer({ listen, readiness }),
  "monitoring tls": (listen) => startMonitoringServer({ listen, readiness, tls: tls() }),
};

function readiness() {
  return { ready: true, reasons: [] };
}

/** Whether a TCP connection to hostname:port is accepted (rather than refused). */
async function accepts(hostname: string, port: number): Promise<boolean> {
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname, port });
  } catch (err) {
    if (err instanceof Deno.errors.ConnectionRefused) return false;
    throw err;
  }
  conn.close();
  return true;
}

async function withListener(
  kind: string,
  listen: string,
  fn: (listener: Listener) => Promise<void>,
): Promise<void> {
  const listener = await KINDS[kind](listen);
  try {
    await fn(listener);
  } finally {
    await listener.shutdown();
  }
}

for (const kind of Object.keys(KINDS)) {
  for (const host of ["0.0.0.0", ""]) {
    Deno.test({
      name: `${kind}: "${host}:port" accepts on 127.0.0.1 and [::1], and says it is bound to [::]`,
      ignore: !dualStack,
      fn: () =>
        withListener(kind, `${host}:0`, async (listener) => {
          assert.deepEqual(listener.address, `[::]:${listener.port}`);
          assert.deepEqual(await accepts("127.0.0.1", listener.port), true, "127.0.0.1");
          assert.deepEqual(await accepts("::1", listener.port), true, "[::1]");
        }),
    });
  }

  Deno.test({
    name: `${kind}: "127.0.0.1:port" is bound to 127.0.0.1 alone`,
    ignore: !dualStack,
    fn: () =>
      withListener(kind, "127.0.0.1:0", async (listener) => {
        assert.deepEqual(listener.address, `127.0.0.1:${listener.port}`);
        assert.deepEqual(await accepts("127.0.0.1", listener.port), true, "127.0.0.1");
        assert.deepEqual(await accepts("::1", listener.port), false, "[::1]");
      }),
  });
}

Deno.test("plain HTTP on ':port' answers requests over IPv6", {
  ignore: !dualStack,
}, () =>
  withListener("http", ":0", async (listener) => {
    const res = await fetch(`http://[::1]:${listener.port}/topics`);
    assert.deepEqual([res.status, await res.text()], [200, ""]);
  }));

Deno.test("a wildcard listener whose port is taken names the address as configured", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    for (const kind of ["http", "grpc tls"]) {
      await assert.rejects(() => KINDS[kind](`:${taken.addr.port}`), {
        message: `${kind.split(" ")[0]} listener 0.0.0.0:${taken.addr.port}: address already in use`,
      });
    }
  } finally {
    taken.close();
  }
});

/** An error as Deno.listen and node:net report a socket of an address family the kernel does not have. */
function noAddressFamily(): Error {
  return Object.assign(new Error("Address family not supported by protocol (os error 97)"), {
    code: "EAFNOSUPPORT",
  });
}

Deno.test("bindHost: the IPv4 wildcard binds ::, and 0.0.0.0 on a host without IPv6", async () => {
  const tried: string[] = [];
  const bound = await bindHost("0.0.0.0", (hostname) => {
    tried.push(hostname);
    if (hostname === "::") throw noAddressFamily();
    return hostname;
  }, true);
  assert.deepEqual([bound, tried], ["0.0.0.0", ["::", "0.0.0.0"]]);

  tried.length = 0;
  assert.deepEqual(await bindHost("0.0.0.0", (hostname) => (tried.push(hostname), hostname), true), "::");
  assert.deepEqual(tried, ["::"]);
});

Deno.test("bindHost: where sockets are IPv6-only by default, the IPv4 wildcard binds 0.0.0.0", async () => {
  const tried: string[] = [];
  const bound = await bindHost("0.0.0.0", (hostname) => (tried.push(hostname), hostname), false);
  assert.deepEqual([bound, tried], ["0.0.0.0", ["0.0.0.0"]]);
});

Deno.test("bindHost: other errors, and other hosts, are not tried again", async () => {
  const tried: string[] = [];
  const inUse = Object.assign(new Error("Address already in use (os error 98)"), { code: "EADDRINUSE" });
  await assert.rejects(
    () =>
      bindHost("0.0.0.0", (hostname) => {
        tried.push(hostname);
        return Promise.reject(inUse);
      }, true),
    inUse,
  );
  for (const host of ["::", "127.0.0.1"]) {
    await assert.rejects(() =>
      bindHost(host, (hostname) => {
        tried.push(hostname);
        throw noAddressFamily();
      }), { code: "EAFNOSUPPORT" });
  }
  assert.deepEqual(tried, ["::", "::", "127.0.0.1"]);
});

Deno.test({
  name:
    "listen: out of file descriptors for a while, the gRPC listener (node:net) accepts again once they are back",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const root = new URL("../", import.meta.url).pathname;
    const deno = Deno.env.get("KA_DENO") ?? Deno.execPath();
    await using svc = await startService({
      producer: { wal: { mode: "fallback", in_memory: true } },
      kafka: { brokers: [`127.0.0.1:${freePort()}`] },
    }, {
      command: (config) => ({
        cmd: "bash",
        // A limit the connections below go past (the soft and hard limit both: Deno raises the soft one).
        args: [
          "-c",
          'ulimit -n 200 && exec "$@"',
          "-",
          deno,
          "run",
          ...shippedFlags(root),
          `${root}src/main.ts`,
          "-config",
          config,
        ],
      }),
    });
    const port = Number(svc.grpc.slice(svc.grpc.lastIndexOf(":") + 1));
    const held: Deno.Conn[] = [];
    for (let i = 0; i < 260; i++) held.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    // The service took what it could, and then ran out of descriptors.
    await delay(1000);
    for (const conn of held) conn.close();
    await delay(2500);
    assert.ok(
      await answersSettings(port),
      "no SETTINGS from the gRPC listener after the descriptors came back",
    );
    assert.equal(await svc.stop(), 0);
  },
});

/** Whether an HTTP/2 server on `port` answers a client preface with its SETTINGS within 3 s. */
async function answersSettings(port: number): Promise<boolean> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const preface = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    await conn.write(new Uint8Array([...preface, 0, 0, 0, 4, 0, 0, 0, 0, 0]));
    const head = new Uint8Array(9);
    const timer = setTimeout(() => conn.close(), 3000);
    try {
      let got = 0;
      while (got < 9) {
        const n = await conn.read(head.subarray(got));
        if (n === null) return false;
        got += n;
      }
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
    return head[3] === 4; // SETTINGS
  } finally {
    try {
      conn.close();
    } catch { /* closed on time-out */ }
  }
}
