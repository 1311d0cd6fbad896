/**
 * The ws transport's in-flight bound (docs/PROTOCOL.md §1.2, Backpressure):
 * a sender reports not-writable once more than 512 KiB it sent are not yet
 * acknowledged by the pong to a WebSocket ping sent after them, so bulk data
 * waits in pointsub's scheduler (where a small frame can overtake it), not
 * in kernel buffers. A peer that never answers pings does not stall it: the
 * bound lifts after a short wait for a pong and everything arrives.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { WebSocket, WebSocketServer } from "ws";
import { wsTransport } from "../../src/node/ws-adapter.ts";

/** A plain `ws` server counting the bytes it receives; `autoPong` false: it never answers pings. */
async function rawServer(
  autoPong: boolean,
): Promise<{ url: string; bytes: () => number; pings: () => number; close: () => Promise<void> }> {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", autoPong, handleProtocols: () => "pointsub.v1" });
  await new Promise((r) => wss.once("listening", r));
  let bytes = 0;
  let pings = 0;
  wss.on("connection", (ws) => {
    ws.on("message", (d: Buffer) => {
      bytes += d.length;
    });
    ws.on("ping", () => pings++);
  });
  const { port } = wss.address() as { port: number };
  return {
    url: `ws://127.0.0.1:${port}/`,
    bytes: () => bytes,
    pings: () => pings,
    close: () => {
      for (const c of wss.clients) c.terminate();
      return new Promise((r) => wss.close(() => r()));
    },
  };
}

/**
 * Writes `total` bytes in 64 KiB chunks, honouring write()/onDrain; resolves
 * with how often write returned false and the bytes written before the first time.
 */
async function writeAll(url: string, total: number, maxInFlightBytes?: number): Promise<number> {
  return (await writeCounting(url, total, maxInFlightBytes)).refusals;
}

async function writeCounting(
  url: string,
  total: number,
  maxInFlightBytes?: number,
): Promise<{ refusals: number; beforeFirst: number }> {
  const t = await wsTransport.connect(new URL(url), { ws: { maxInFlightBytes } });
  let drain: (() => void) | undefined;
  t.attach({ onData: () => true, onClose() {}, onDrain: () => drain?.() });
  const chunk = new Uint8Array(64 * 1024).fill(1);
  let refusals = 0;
  let beforeFirst = -1;
  for (let sent = 0; sent < total; sent += chunk.length) {
    if (!t.write([chunk])) {
      if (refusals === 0) beforeFirst = sent + chunk.length;
      refusals++;
      await new Promise<void>((r) => {
        drain = r;
      });
    }
  }
  t.end();
  return { refusals, beforeFirst };
}

describe("ws transport: in-flight bound by ping/pong", () => {
  it("holds the sender back past 512 KiB unacknowledged, and every byte arrives", async () => {
    const s = await rawServer(true);
    try {
      const refusals = await writeAll(s.url, 8 * 1024 * 1024);
      assert.ok(refusals >= 1, "write() reported not-writable at least once");
      while (s.bytes() < 8 * 1024 * 1024) await new Promise((r) => setTimeout(r, 10));
      assert.ok(
        s.pings() >= (8 * 1024 * 1024) / (64 * 1024) / 2,
        `the byte stream was marked with pings (${s.pings()})`,
      );
    } finally {
      await s.close();
    }
  });

  it("ws.maxInFlightBytes sets the bound: 128 KiB unacknowledged holds the sender back, and every byte arrives", async () => {
    // The peer never answers pings: the bound is reached at 128 KiB (+ the write that crosses it) whatever the kernel takes.
    const s = await rawServer(false);
    try {
      const { refusals, beforeFirst } = await writeCounting(s.url, 1024 * 1024, 128 * 1024);
      assert.ok(refusals >= 1);
      assert.ok(beforeFirst > 0 && beforeFirst <= 192 * 1024, `first refusal after ${beforeFirst} bytes`);
      while (s.bytes() < 1024 * 1024) await new Promise((r) => setTimeout(r, 10));
      assert.equal(s.bytes(), 1024 * 1024);
      await assert.rejects(wsTransport.connect(new URL(s.url), { ws: { maxInFlightBytes: 0 } }), {
        code: "ERR_INVALID_ARGUMENT",
      });
    } finally {
      await s.close();
    }
  });

  it("a peer that never answers pings does not stall the sender", async () => {
    const s = await rawServer(false);
    try {
      await writeAll(s.url, 2 * 1024 * 1024);
      while (s.bytes() < 2 * 1024 * 1024) await new Promise((r) => setTimeout(r, 10));
      assert.equal(s.bytes(), 2 * 1024 * 1024);
    } finally {
      await s.close();
    }
  });

  it("answers the pings of one read with one pong, for the newest (RFC 6455 §5.5.3): a ping flood costs one write per read", async () => {
    const listener = await wsTransport.listen(new URL("ws://127.0.0.1:0/"), {}, (t) =>
      t.attach({ onData: () => true, onClose() {}, onDrain() {} }),
    );
    const ws = new WebSocket(listener.url, ["pointsub.v1"]);
    try {
      await new Promise((r, j) => ws.once("open", r).once("error", j));
      const pongs: number[] = [];
      ws.on("pong", (d: Buffer) => pongs.push(d.readUInt32BE(0)));
      // 200 pings in one write: the server reads them at once (a flood would otherwise get 200 pongs).
      const socket = (ws as unknown as { _socket: import("node:net").Socket })._socket;
      socket.cork();
      for (let i = 0; i < 200; i++) ws.ping(Buffer.from([0, 0, 0, i]));
      socket.uncork();
      while (!pongs.includes(199)) await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, 50));
      assert.ok(pongs.length < 20, `${pongs.length} pongs for 200 pings`);
      assert.equal(pongs.at(-1), 199, "the last pong answers the newest ping");
    } finally {
      ws.terminate();
      await listener.close();
    }
  });
});
