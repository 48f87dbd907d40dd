/**
 * Hostile HTTP/2 frame sequences against the gRPC port of the real service (tests/h2/cases.py). After each one
 * the process must still be running and answer a normal call.
 */
import assert from "node:assert/strict";
import {
  alive,
  grpcPort,
  requireH2,
  rssBytes,
  runCase,
  runHeldCase,
  servicePid,
  startServiceForPeers,
  type StreamResult,
} from "./support/h2_peer.ts";
import type { Service } from "./support/service.ts";

const PRODUCE = { grpc_type: "bidi_stream", grpc_service: "KafkaAmbassador", grpc_method: "Produce" };

/** The service survived, and a normal Produce call gets its reply and grpc-status 0. */
async function assertServing(svc: Service, after: string): Promise<void> {
  assert.ok(await alive(svc), `the service died after ${after}:\n${await Deno.readTextFile(svc.logPath)}`);
  const ok = await runCase("produce_ok", grpcPort(svc));
  assert.deepEqual(
    [ok.status, ok.grpc_status, ok.data_bytes > 0],
    [200, 0, true],
    `${after}: ${JSON.stringify(ok)}`,
  );
}

Deno.test("hostile HTTP/2 peers do not end the process, and get the gRPC answers the protocol asks for", async (t) => {
  await requireH2();
  const svc = await startServiceForPeers();
  const port = grpcPort(svc);
  try {
    await assertServing(svc, "start-up");
    const survives = async (name: string, check?: (r: StreamResult) => void) => {
      await t.step(name, async () => {
        const result = await runCase(name, port);
        check?.(result);
        await assertServing(svc, name);
      });
    };

    await survives("goaway_no_content_type");
    await survives("headers_then_rst");
    await survives("h2spec_5_1_6");
    await survives("h2spec_6_9_2", (r) => {
      // RFC 9113 6.9: an increment of 0 on a stream is a stream error, PROTOCOL_ERROR (1).
      assert.deepEqual([r.rst, r.goaway], [1, []], JSON.stringify(r));
    });
    await survives("h2spec_6_9_1_3");
    await survives("wrong_content_type", (r) => {
      assert.equal(r.status, 415, JSON.stringify(r));
      assert.ok(r.data_bytes > 0, `the 415 response has a plain-text reason: ${JSON.stringify(r)}`);
      assert.ok(r.ended, "the 415 response ends the stream");
    });
    await survives("compressed_no_encoding", (r) => {
      assert.deepEqual([r.status, r.grpc_status], [200, 13], JSON.stringify(r));
    });
    await t.step("compressed_gzip: a gzip message and a plain one in a gzip call are both read", async () => {
      const before = await svc.metric("grpc_server_msg_received_total", PRODUCE);
      const r = await runCase("compressed_gzip", port);
      assert.deepEqual([r.status, r.grpc_status], [200, 0], JSON.stringify(r));
      assert.ok(r.data_bytes > 0, `replies came: ${JSON.stringify(r)}`);
      assert.equal(await svc.metric("grpc_server_msg_received_total", PRODUCE), before + 2);
      await assertServing(svc, "compressed_gzip");
    });
    await survives("unknown_encoding", (r) => {
      assert.deepEqual(
        [r.status, r.grpc_status, r.grpc_message, r.grpc_accept_encoding],
        [200, 12, "grpc-encoding snappy is not supported", "identity,gzip,deflate"],
        JSON.stringify(r),
      );
    });

    await t.step("malformed_timeout: INTERNAL, and the record is not read", async () => {
      const before = await svc.metric("grpc_server_msg_received_total", PRODUCE);
      const r = await runCase("malformed_timeout", port);
      assert.deepEqual(
        [r.status, r.grpc_status, r.grpc_message],
        [200, 13, "malformed grpc-timeout: 99999999999H"],
        JSON.stringify(r),
      );
      assert.equal(await svc.metric("grpc_server_msg_received_total", PRODUCE), before);
      await assertServing(svc, "malformed_timeout");
    });

    await t.step("truncated_prefix: INTERNAL, and the cut record is not read", async () => {
      const before = await svc.metric("grpc_server_msg_received_total", PRODUCE);
      const r = await runCase("truncated_prefix", port);
      assert.deepEqual([r.status, r.grpc_status], [200, 13], JSON.stringify(r));
      assert.equal(
        await svc.metric("grpc_server_msg_received_total", PRODUCE),
        before + 1,
        "only the whole record",
      );
      await assertServing(svc, "truncated_prefix");
    });

    await t.step(
      "window_zero: a client that never takes its replies cannot make the server read on",
      async () => {
        const pid = await servicePid(svc);
        const rssBefore = await rssBytes(pid);
        const receivedBefore = await svc.metric("grpc_server_msg_received_total", PRODUCE);
        const peer = await runHeldCase("window_zero", port, ["3"]);
        let read: number, rssAfter: number;
        try {
          read = await svc.metric("grpc_server_msg_received_total", PRODUCE) - receivedBefore;
          rssAfter = await rssBytes(pid);
        } finally {
          await peer.release();
        }
        const mb = (n: number) => Math.round(n / 1e5) / 10;
        console.log(
          `window 0: client sent ~${peer.report.records_sent_approx} records (${peer.report.bytes_sent} bytes), ` +
            `server read ${read}; RSS ${mb(rssBefore)} MB -> ${mb(rssAfter)} MB`,
        );
        // MAX_IN_FLIGHT records unanswered plus 64 KiB of ~10-byte replies, and what the windows held.
        assert.ok(read < 20_000, `the server read ${read} records from a client that takes no replies`);
        assert.ok(rssAfter - rssBefore < 50e6, `RSS grew by ${mb(rssAfter - rssBefore)} MB`);
        await assertServing(svc, "window_zero");
      },
    );

    await t.step(
      "window_zero on reflection: a client that takes no answers cannot make the server read on",
      async () => {
        const pid = await servicePid(svc);
        const rssBefore = await rssBytes(pid);
        const peer = await runHeldCase("window_zero", port, ["3", "reflection"]);
        let rssAfter: number;
        try {
          rssAfter = await rssBytes(pid);
        } finally {
          await peer.release();
        }
        const mb = (n: number) => Math.round(n / 1e5) / 10;
        const sent = Number(peer.report.bytes_sent);
        console.log(
          `reflection, window 0: client sent ${sent} bytes of requests; RSS ${mb(rssBefore)} MB -> ${
            mb(rssAfter)
          } MB`,
        );
        // Answers of a few hundred bytes each: 256 KiB of them, then what the windows let the client send.
        assert.ok(sent <= 1.5 * 2 ** 20, `the server took ${sent} bytes from a client that takes no answers`);
        assert.ok(rssAfter - rssBefore < 50e6, `RSS grew by ${mb(rssAfter - rssBefore)} MB`);
        await assertServing(svc, "window_zero on reflection");
      },
    );
  } finally {
    await svc.stop("SIGKILL");
  }
});
