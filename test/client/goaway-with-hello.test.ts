/**
 * A server whose GOAWAY(0) arrives in the same read as its HELLO (it began
 * a graceful close — a restart, an idle timeout — right after the
 * handshake): `connect()` resolved with a connection already closing, whose
 * `goaway` event had fired before anyone listened. The resilient client
 * adopted it as "connected" and every call made then (the offline queue
 * flushed into it included) failed at once with ERR_GOING_AWAY, nothing
 * sent and never sent again; the pool kept it too (robustness review).
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { encodeGoAway } from "../../src/codec/control.ts";
import { FrameDecoder } from "../../src/codec/decoder.ts";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { Client, connect, connectResilient } from "../../src/index.ts";
import { handshake } from "../helpers/raw-peer.ts";

/**
 * Its first connection gets HELLO and GOAWAY(0) in one write (ended 300 ms
 * later, as a draining server does); later ones HELLO, and every request
 * answered "ok" (single-frame REQ START|END only).
 */
async function goingAwayFirst(): Promise<{ url: string; count: () => number; close(): Promise<void> }> {
  let n = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
    if (++n === 1) {
      s.write(Buffer.concat([handshake(), encodeFrame(FrameType.GOAWAY, 0, 0, encodeGoAway(0, "restarting"))]));
      setTimeout(() => s.end(), 300);
      return;
    }
    s.write(handshake());
    const d = new FrameDecoder(
      {
        onPreface: () => {},
        onFrame: (type, flags, id, buf, start, end) => {
          if (type === FrameType.PING && (flags & Flag.ACK) === 0) {
            s.write(encodeFrame(FrameType.PING, Flag.ACK, 0, buf.slice(start, end)));
          }
          if (type === FrameType.REQ && (flags & Flag.START) !== 0) {
            s.write(encodeFrame(FrameType.RES, Flag.START | Flag.END, id, Uint8Array.from([0, 0x6f, 0x6b])));
          }
        },
      },
      16 * 1024 * 1024 - 1,
    );
    s.on("data", (c: Buffer) => d.push(new Uint8Array(c.buffer, c.byteOffset, c.length)));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    count: () => n,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("a server's GOAWAY in the same read as its HELLO", () => {
  it("connect() rejects (retryable) instead of resolving with a connection already closing", async () => {
    const s = await goingAwayFirst();
    try {
      const out = await connect(s.url).then(
        (c) => {
          const state = c.state;
          c.destroy();
          return `resolved, ${state}`;
        },
        (e: { code: string; retryable: boolean }) => `${e.code} retryable ${e.retryable}`,
      );
      assert.match(out, /^ERR_\w+ retryable true$/);
    } finally {
      await s.close();
    }
  });

  it("the resilient client sends its calls on the next connection (they failed at once with ERR_GOING_AWAY)", async () => {
    const s = await goingAwayFirst();
    const rc = await connectResilient(s.url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    try {
      assert.equal(text(await rc.request("/x", "y", { timeoutMs: 5000 })), "ok");
      await rc.send("m");
      assert.ok(s.count() >= 2, `${s.count()} connections`);
    } finally {
      await rc.close();
      await s.close();
    }
  });

  it("the pool does not keep such a connection: a call goes to a new one", async () => {
    const s = await goingAwayFirst();
    const client = new Client({ rttProbeMs: 0 });
    try {
      const first = await client
        .request(s.url, "/x", "y", { timeoutMs: 5000 })
        .then(text, (e: { code: string }) => e.code);
      // The first connection is refused; the next call (or a retry of it) is served.
      const second = await client
        .request(s.url, "/x", "y", { timeoutMs: 5000 })
        .then(text, (e: { code: string }) => e.code);
      assert.equal(second, "ok", `first ${first}, second ${second}`);
    } finally {
      await client.close();
      await s.close();
    }
  });
});
