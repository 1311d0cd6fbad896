/**
 * Large chunks a tcp or unix socket writes go through staging buffers
 * (src/node/socket-transport.ts): copied, so the kernel reads memory it
 * has read before (on a VM with shadow paging its first read of a page the
 * process filled costs a fault per page). A staging buffer is reused only
 * once the socket wrote it, staging memory is bounded for all sockets of
 * the thread together, and a closed socket's is uncounted.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { type NodeTransportOptions, tcpTransport, unixTransport } from "../../src/node/net-adapter.ts";
import { stagingBytes } from "../../src/node/socket-transport.ts";
import type { Transport, TransportAdapter } from "../../src/transport/transport.ts";
import { KiB, MiB, pattern, sha256 } from "../helpers/data.ts";
import { until } from "../helpers/wait.ts";

const dir = mkdtempSync(join(tmpdir(), "pointsub-staging-"));
let n = 0;

async function pair(adapter: TransportAdapter<NodeTransportOptions>, url: string) {
  let accept!: (t: Transport) => void;
  const accepted = new Promise<Transport>((r) => {
    accept = r;
  });
  const listener = await adapter.listen(new URL(url), {}, (t) => accept(t));
  const client = await adapter.connect(new URL(listener.url), {});
  return { listener, client, server: await accepted };
}

/** Attaches a receiver to `to` that copies what arrives; returns what it got so far. */
function receive(to: Transport) {
  const got: Uint8Array[] = [];
  let bytes = 0;
  const closed = new Promise<void>((resolve) => {
    to.attach({
      onData(c) {
        got.push(c.slice());
        bytes += c.length;
        return false;
      },
      onDrain() {},
      onClose: () => resolve(),
    });
  });
  return { got, closed, bytes: () => bytes };
}

for (const [scheme, adapter, url] of [
  ["tcp", tcpTransport, () => "tcp://127.0.0.1:0"],
  ["unix", unixTransport, () => `unix://${join(dir, `s${n++}.sock`)}`],
] as const) {
  describe(`staged writes: ${scheme}`, () => {
    it("chunks queued behind a reader that does not read arrive as they were when written (staging reused only once written)", async () => {
      const { listener, client, server } = await pair(adapter, url());
      const r = receive(server);
      // The receiver stops reading: the sender's writes queue in Node, their staging buffers held.
      server.pause();
      client.attach({ onData: () => false, onDrain() {}, onClose() {} });
      const want: Uint8Array[] = [];
      try {
        for (let i = 0; i < 48; i++) {
          const size = i % 3 === 0 ? 512 * KiB : i % 3 === 1 ? 200 * KiB + i : MiB;
          const chunk = pattern(size, i + 1);
          want.push(chunk.slice());
          client.write([chunk]);
          // The application's memory may change once written: the bytes sent were copied.
          chunk.fill(0);
        }
        const total = want.reduce((s, c) => s + c.length, 0);
        const peak = stagingBytes().staged;
        assert.ok(peak > 0 && peak <= 32 * MiB, `${peak} B staged`);
        server.resume();
        await until(() => r.bytes() >= total, 20_000);
        assert.equal(sha256(Buffer.concat(r.got)), sha256(Buffer.concat(want)), "a staged chunk was overwritten");
        // Written: every staging buffer is free again (some kept for reuse, at most 8 MiB).
        await until(() => stagingBytes().staged === 0, 5000);
        assert.ok(stagingBytes().free <= 8 * MiB, `${stagingBytes().free} B kept free`);
      } finally {
        client.destroy();
        await listener.close();
      }
    });

    it("staging memory stops at 32 MiB for the thread (later chunks go as they are), and a closed socket's is uncounted", async () => {
      const pairs = await Promise.all(Array.from({ length: 3 }, () => pair(adapter, url())));
      const receivers = pairs.map((p) => {
        const r = receive(p.server);
        p.server.pause();
        p.client.attach({ onData: () => false, onDrain() {}, onClose() {} });
        return r;
      });
      try {
        const chunk = pattern(MiB, 9);
        // 3 × 24 MiB into sockets nobody reads: the kernel takes a few MiB each, the rest queues.
        for (let i = 0; i < 24; i++) for (const p of pairs) p.client.write([chunk]);
        const peak = stagingBytes().staged;
        assert.ok(peak <= 32 * MiB, `${peak} B staged`);
        assert.ok(peak >= 16 * MiB, `${peak} B staged (the budget was used)`);
        for (const p of pairs) p.client.destroy();
        for (const p of pairs) p.server.destroy();
        await Promise.all(receivers.map((r) => r.closed));
        await until(() => stagingBytes().staged === 0, 5000);
      } finally {
        for (const p of pairs) await p.listener.close();
      }
    });
  });
}
