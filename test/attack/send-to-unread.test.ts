/**
 * `sendTo` to a session that does not read (session 35): a server relaying
 * what one peer sends to another queued without bound for a peer that took
 * nothing — 340 MB in 4 s — until `slowPeerTimeoutMs` (30 s) closed it.
 * Now a sendTo to a session already holding more than
 * `sendToHighWaterMark` bytes queued (default 64 MiB) sends nothing and
 * rejects with ERR_SLOW_PEER; a reading session is not affected.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer, type PointSubError, type Server, type ServerOptions } from "../../src/index.ts";
import { connectPeer, type Peer, type WireSettings } from "../helpers/attacker.ts";
import { until } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK = new Uint8Array(64 * KiB).fill(7);

/** Calls sendTo `n` times without waiting; returns how many rejected at once with each code, and the peak queue. */
async function relayTo(server: Server, id: string, n: number): Promise<{ codes: Map<string, number>; peak: number }> {
  const codes = new Map<string, number>();
  const pending: Promise<void>[] = [];
  let peak = 0;
  for (let i = 0; i < n; i++) {
    pending.push(
      server.sendTo(id, CHUNK).catch((err: PointSubError) => {
        codes.set(err.code, (codes.get(err.code) ?? 0) + 1);
      }),
    );
    peak = Math.max(peak, server.session(id)?.bufferedAmount ?? 0);
  }
  // Refusals reject at once: let their handlers run (the queued sends stay pending).
  await new Promise((r) => setImmediate(r));
  return { codes, peak };
}

/** A server with `options` and one session whose raw peer (HELLO `settings`) completed the handshake and reads nothing. */
async function withNonReader(
  options: ServerOptions,
  body: (server: Server, id: string) => Promise<void>,
  settings: Partial<WireSettings> = {},
): Promise<void> {
  const server = createServer(options);
  const ids: string[] = [];
  server.on("session", (s) => ids.push(s.id));
  const [url] = await server.listen("tcp://127.0.0.1:0");
  let peer: Peer | undefined;
  try {
    peer = await connectPeer({ port: Number(new URL(url).port), read: "paused", settings });
    await until(() => ids.length === 1);
    await body(server, ids[0]);
  } finally {
    peer?.destroy();
    await server.close({ timeoutMs: 500 });
  }
}

describe("sendTo to a session that does not read", () => {
  it("queues at most sendToHighWaterMark (plus the message that crossed it), then rejects with ERR_SLOW_PEER", async () => {
    await withNonReader(
      { sendToHighWaterMark: 1 * MiB },
      async (server, id) => {
        // 1,000 × 64 KiB (62.5 MiB) without the mark.
        const { codes, peak } = await relayTo(server, id, 1000);
        assert.ok((codes.get("ERR_SLOW_PEER") ?? 0) > 900, `refused: ${JSON.stringify([...codes])}`);
        assert.equal(codes.size, 1, `only ERR_SLOW_PEER: ${JSON.stringify([...codes])}`);
        assert.ok(peak <= 1 * MiB + CHUNK.length, `queued ${peak} bytes`);
        assert.ok((server.session(id)?.bufferedAmount ?? 0) <= 1 * MiB + CHUNK.length);
        // The refusal names the session and the mark.
        await assert.rejects(server.sendTo(id, CHUNK), (err: PointSubError) => {
          assert.equal(err.code, "ERR_SLOW_PEER");
          assert.match(err.message, /sendToHighWaterMark 1048576/);
          // Its suggestion does not tell the operator the session was disconnected (it stays open): before,
          // ERR_SLOW_PEER's only suggestion was "…; it was disconnected."
          assert.match(err.suggestion, /sendTo refused with it queued nothing and the session stays open/);
          return true;
        });
        assert.equal(server.session(id)?.state, "open");
        // Over the mark, a payload that could never be sent gets its own error, not the retryable ERR_SLOW_PEER
        // (before: ERR_SLOW_PEER, which invites a retry that cannot succeed).
        await assert.rejects(server.sendTo(id, new Uint8Array(2 * MiB + 1)), { code: "ERR_MESSAGE_TOO_LARGE" });
        await assert.rejects(server.sendTo(id, 42 as unknown as Uint8Array), { code: "ERR_INVALID_ARGUMENT" });
        assert.equal(server.session(id)?.state, "open");
      },
      { maxMessageSize: 2 * MiB },
    );
  });

  it("over the mark, a payload the peer's maxAssemblyBytes refuses gets ERR_MESSAGE_TOO_LARGE, not the retryable ERR_SLOW_PEER", async () => {
    await withNonReader(
      { sendToHighWaterMark: 1 * MiB },
      async (server, id) => {
        const { codes } = await relayTo(server, id, 1000);
        assert.ok((codes.get("ERR_SLOW_PEER") ?? 0) > 900, `refused: ${JSON.stringify([...codes])}`);
        // Larger than one frame, and the peer assembles none: it could never be sent (before: ERR_SLOW_PEER).
        await assert.rejects(server.sendTo(id, new Uint8Array(256 * KiB)), (err: PointSubError) => {
          assert.equal(err.code, "ERR_MESSAGE_TOO_LARGE");
          assert.match(err.message, /maxAssemblyBytes of 0/);
          return true;
        });
        assert.equal(server.session(id)?.state, "open");
      },
      { maxAssemblyBytes: 0 },
    );
  });

  it("has a default mark (64 MiB): a relay to a non-reader is bounded without any option", async () => {
    await withNonReader({}, async (server, id) => {
      // 1,500 × 64 KiB (~94 MiB; one buffer, queued by reference).
      const { codes, peak } = await relayTo(server, id, 1500);
      // At least 1,500 - 1,024 (the mark) less what the kernel's socket buffers took before the queue
      // filled (loopback autotuning: 397 refused once under load, ~5 MiB taken); the queue's bound is `peak`.
      assert.ok((codes.get("ERR_SLOW_PEER") ?? 0) > 300, `refused: ${JSON.stringify([...codes])}`);
      assert.ok(peak <= 64 * MiB + CHUNK.length, `queued ${peak} bytes`);
    });
  });

  it("a session that reads gets every message of a burst larger than its socket takes at once", async () => {
    const server = createServer({ sendToHighWaterMark: 4 * MiB });
    const ids: string[] = [];
    server.on("session", (s) => ids.push(s.id));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    let got = 0;
    client.on("message", () => got++);
    try {
      await until(() => ids.length === 1);
      // 48 × 64 KiB (3 MiB) at once: under the mark, all queued and delivered.
      const sends = Array.from({ length: 48 }, () => server.sendTo(ids[0], CHUNK));
      await Promise.all(sends);
      await until(() => got === 48);
      // Awaiting each send keeps the queue short: 200 more (12.5 MiB) all arrive.
      for (let i = 0; i < 200; i++) await server.sendTo(ids[0], CHUNK);
      await until(() => got === 248);
    } finally {
      await client.close();
      await server.close({ timeoutMs: 500 });
    }
  });

  it("what sendTo queues for sessions that do not read is charged to the server's memoryBudget: many of them together are bounded, and it returns when they go", async () => {
    // Each non-reader may hold 4 MiB (the mark); three of them would hold 12 MiB, over the 8 MiB budget.
    const server = createServer({ sendToHighWaterMark: 4 * MiB, memoryBudget: 8 * MiB });
    const ids: string[] = [];
    server.on("session", (s) => ids.push(s.id));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peers: Peer[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        peers.push(await connectPeer({ port: Number(new URL(url).port), read: "paused" }));
        await until(() => ids.length === i + 1);
      }
      const pending: Promise<unknown>[] = [];
      const codes = new Map<string, number>();
      for (const id of ids) {
        for (let i = 0; i < 200; i++) {
          pending.push(
            server.sendTo(id, CHUNK).catch((err: PointSubError) => {
              codes.set(err.code, (codes.get(err.code) ?? 0) + 1);
            }),
          );
        }
        await new Promise((r) => setImmediate(r));
      }
      // Refused: ERR_SLOW_PEER for a session over its share of a budget past half, ERR_OVERLOADED when full.
      const refused = (codes.get("ERR_OVERLOADED") ?? 0) + (codes.get("ERR_SLOW_PEER") ?? 0);
      assert.ok(refused > 0, `refused: ${JSON.stringify([...codes])}`);
      const mem = server.memory;
      assert.ok(mem.used <= 8 * MiB, `charged ${mem.used} bytes`);
      const queued = ids.reduce((n, id) => n + (server.session(id)?.bufferedAmount ?? 0), 0);
      // The socket and kernel took some of each session's first sends; what waits beyond that is bounded by the budget.
      assert.ok(queued <= 8 * MiB + 3 * CHUNK.length, `queued ${queued} bytes over the sessions`);
      await assert.rejects(server.sendTo(ids[2], CHUNK), (err: PointSubError) => {
        assert.ok(err.code === "ERR_OVERLOADED" || err.code === "ERR_SLOW_PEER", err.code);
        return true;
      });
      // The non-readers go: their queued sends fail, and what they held returns to the budget.
      for (const p of peers) p.destroy();
      await Promise.all(pending);
      await until(() => server.sessions.size === 0);
      assert.equal(server.memory.used, 0, "everything charged came back");
    } finally {
      for (const p of peers) p.destroy();
      await server.close({ timeoutMs: 500 });
    }
  });

  it("refuses a mark that is not a number >= 0", () => {
    for (const bad of [-1, Number.NaN, "1" as unknown as number]) {
      assert.throws(() => createServer({ sendToHighWaterMark: bad }), { code: "ERR_INVALID_ARGUMENT" });
    }
    assert.doesNotThrow(() => createServer({ sendToHighWaterMark: Number.POSITIVE_INFINITY }));
  });
});
