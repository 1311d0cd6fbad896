/**
 * Hostile raw WebSocket clients against the server's own frame parser
 * (`node/ws-server-socket.ts`), over real sockets: hand-made frames after a
 * valid upgrade. A client that sends its close frame and then keeps its TCP
 * side open, or ends its side and never reads what is queued to it, does not
 * keep the server's socket (and session) open past the close timeout; random
 * splits of random frames (at every kind of boundary: inside the masking
 * key, the 16- and 64-bit lengths, control frames between fragments,
 * pause/resume mid-frame) deliver exactly the bytes a `ws` client's
 * messages deliver; connections that keep views of their reads and
 * connections that copy them, reading at once, never see each other's bytes;
 * a connection gone quiet pins no read buffer of its last burst.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import net from "node:net";
import { afterEach, describe, it } from "node:test";
import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import { WebSocket } from "ws";
import { WS_SUBPROTOCOL } from "../../src/index.ts";
import type { Transport } from "../../src/transport/transport.ts";
import { until } from "../helpers/wait.ts";
import { wsClientFrame as frame } from "../helpers/ws-client-frame.ts";
import { rawWsPeers } from "../helpers/ws-raw-peers.ts";
import { type ServerFrame, takeServerFrames, upgradeRequest } from "../helpers/ws-server-frames.ts";

v8.setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

const peers = rawWsPeers();
const sockets: net.Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await peers.cleanup();
});

/** A ws:// transport listener; the transports it accepted, in order. */
async function listen(): Promise<{ url: string; accepted: Transport[] }> {
  const { url, accepted } = await peers.listen();
  return { url: url.href, accepted };
}

/**
 * A raw TCP client that completed the upgrade by hand; `allowHalfOpen`: it
 * does not end its side when the server ends its own. The server's frames
 * are parsed (opcodes kept).
 */
async function rawClient(url: string, allowHalfOpen = false) {
  const u = new URL(url);
  const socket = net.connect({ port: Number(u.port), host: u.hostname, allowHalfOpen });
  sockets.push(socket);
  socket.on("error", () => {});
  await new Promise((r) => socket.once("connect", r));
  socket.write(upgradeRequest(u));
  let buf: Buffer = Buffer.alloc(0);
  let upgraded = false;
  const opcodes: number[] = [];
  const state = { ended: false, closed: false };
  socket.on("end", () => {
    state.ended = true;
  });
  socket.on("close", () => {
    state.closed = true;
  });
  socket.on("data", (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    if (!upgraded) {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      upgraded = true;
      buf = buf.subarray(end + 4);
    }
    const frames: ServerFrame[] = [];
    buf = takeServerFrames(buf, frames);
    for (const f of frames) opcodes.push(f.opcode);
  });
  await until(() => upgraded);
  return { socket, opcodes, state };
}

/** Waits up to `turns` event-loop turns for `pred` (for tests whose timers are mocked). */
async function turnsUntil(pred: () => boolean, turns = 5000): Promise<boolean> {
  for (let i = 0; i < turns && !pred(); i++) await new Promise((r) => setImmediate(r));
  return pred();
}

/** Random binary messages of sizes at every length-field boundary. */
function randomMessages(count: number): Buffer[] {
  const sizes = [0, 1, 3, 63, 64, 65, 125, 126, 127, 4093, 65535, 65536, 65537, 70_001, 150_003];
  return Array.from({ length: count }, () => randomBytes(sizes[Math.floor(Math.random() * sizes.length)]));
}

/** `messages` as frames: each in 1 to 3 fragments, pings and unsolicited pongs between some. */
function randomFrames(messages: Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const msg of messages) {
    const cuts = Math.floor(Math.random() * 3);
    let at = 0;
    for (let k = 0; k <= cuts; k++) {
      const end = k === cuts ? msg.length : at + Math.floor(Math.random() * (msg.length - at + 1));
      parts.push(frame(k === 0 ? 2 : 0, msg.subarray(at, end), k === cuts));
      if (Math.random() < 0.3) parts.push(frame(9, randomBytes(Math.floor(Math.random() * 126))));
      if (Math.random() < 0.1) parts.push(frame(10, randomBytes(4)));
      at = end;
    }
  }
  return Buffer.concat(parts);
}

/** Attaches to `t`, collecting its bytes (copied, or views kept when `keep` says so); `pauses`: pauses and resumes at random. */
function collect(t: Transport, o: { keep?: () => boolean; pauses?: boolean } = {}) {
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  let closed = false;
  t.attach({
    onData(d) {
      const keep = o.keep?.() ?? false;
      chunks.push(keep ? d : Uint8Array.prototype.slice.call(d));
      bytes += d.length;
      if (o.pauses && Math.random() < 0.3) {
        t.pause();
        setImmediate(() => t.resume());
      }
      return keep;
    },
    onDrain() {},
    onClose() {
      closed = true;
    },
  });
  return { bytes: () => bytes, all: () => Buffer.concat(chunks), closed: () => closed };
}

describe("attack: raw WebSocket frames against the server's own parser", () => {
  it("a close frame and then a TCP side kept open: the socket is destroyed after the close timeout", async (t) => {
    const { url, accepted } = await listen();
    const c = await rawClient(url, true);
    await until(() => accepted.length === 1);
    const got = collect(accepted[0]);
    t.mock.timers.enable({ apis: ["setTimeout"] });
    try {
      c.socket.write(frame(8, Buffer.from([0x03, 0xe8])));
      // The server answers with its close frame and ends its side; the client never ends its own.
      assert.ok(await turnsUntil(() => c.opcodes.includes(8) && c.state.ended), "the close is answered");
      assert.equal(got.closed(), false);
      // As `ws`: 30 s for the peer to close its side, then the socket is destroyed (before: never).
      t.mock.timers.tick(30_000);
      assert.ok(await turnsUntil(got.closed), "the socket is closed after the timeout");
    } finally {
      t.mock.timers.reset();
    }
  });

  it("a client that ends its side while leaving what was written to it unread: destroyed after the close timeout", async (t) => {
    const { url, accepted } = await listen();
    const c = await rawClient(url, true);
    await until(() => accepted.length === 1);
    const got = collect(accepted[0]);
    // The client reads nothing more; the server's socket holds what the kernel buffers cannot.
    c.socket.pause();
    accepted[0].write([new Uint8Array(16 * 1024 * 1024)]);
    t.mock.timers.enable({ apis: ["setTimeout"] });
    try {
      c.socket.end();
      // The server sees the end and ends its side once its queue drained — which never happens.
      assert.equal(await turnsUntil(got.closed, 200), false);
      t.mock.timers.tick(30_000);
      assert.ok(await turnsUntil(got.closed), "the socket is closed after the timeout");
    } finally {
      t.mock.timers.reset();
    }
  });

  it("random frames split at random (1 byte to 100 KB) deliver exactly what a ws client's messages deliver", async () => {
    const { url, accepted } = await listen();
    for (let round = 0; round < 8; round++) {
      const messages = randomMessages(25);
      const want = Buffer.concat(messages);
      // Reference: the same messages from a `ws` client.
      const ws = new WebSocket(url, [WS_SUBPROTOCOL], { perMessageDeflate: false });
      await new Promise((r, j) => ws.once("open", r).once("error", j));
      await until(() => accepted.length === 2 * round + 1);
      const viaWs = collect(accepted[2 * round]);
      for (const m of messages) ws.send(m);
      await until(() => viaWs.bytes() >= want.length);
      ws.terminate();
      assert.ok(viaWs.all().equals(want), "a ws client's messages");
      // Raw frames, split anywhere (inside headers, keys and lengths too), some reads paused mid-frame.
      const c = await rawClient(url);
      await until(() => accepted.length === 2 * round + 2);
      const raw = collect(accepted[2 * round + 1], { pauses: round % 2 === 0 });
      const all = randomFrames(messages);
      for (let off = 0; off < all.length; ) {
        const n = Math.random() < 0.6 ? 1 + Math.floor(Math.random() * 16) : 1 + Math.floor(Math.random() * 100_000);
        c.socket.write(all.subarray(off, off + n));
        off += n;
        if (Math.random() < 0.1) await new Promise((r) => setImmediate(r));
      }
      await until(() => raw.bytes() >= want.length);
      assert.equal(raw.bytes(), want.length);
      assert.ok(raw.all().equals(viaWs.all()), `round ${round}: the bytes differ from the ws client's`);
      c.socket.destroy();
    }
  });

  it("connections reading at once, some keeping views of their reads: no bytes cross between them", async () => {
    const { url, accepted } = await listen();
    const n = 10;
    const clients = [];
    for (let i = 0; i < n; i++) clients.push(await rawClient(url));
    await until(() => accepted.length === n);
    // Half keep views of some reads (the next read must land elsewhere), half copy everything.
    const got = accepted.map((t, i) => collect(t, { keep: () => i % 2 === 0 && Math.random() < 0.5 }));
    const wants = clients.map((c) => {
      const messages = randomMessages(20);
      const all = randomFrames(messages);
      for (let off = 0; off < all.length; ) {
        const len = 1 + Math.floor(Math.random() * 70_000);
        c.socket.write(all.subarray(off, off + len));
        off += len;
      }
      return Buffer.concat(messages);
    });
    await until(() => got.every((g, i) => g.bytes() >= wants[i].length));
    for (let i = 0; i < n; i++) assert.ok(got[i].all().equals(wants[i]), `connection ${i} got other bytes`);
  });

  it("a connection gone quiet (trimmed) pins no 64 KiB read buffer of its last burst", async () => {
    const { url, accepted } = await listen();
    const c = await rawClient(url);
    await until(() => accepted.length === 1);
    const t = accepted[0];
    /** The memory of the last payload of 64 bytes or more (unmasked a word at a time). */
    let last: ArrayBufferLike | undefined;
    let bytes = 0;
    t.attach({
      onData(d) {
        if (d.length >= 64) last = d.buffer;
        bytes += d.length;
        // Not kept: the next read lands in the same 64 KiB buffer.
        return false;
      },
      onDrain() {},
      onClose() {},
    });
    // A burst whose last large read went into the reused 64 KiB buffer (not a copy: reads under 16 KiB are).
    let sent = 0;
    for (let i = 0; i < 20 && last?.byteLength !== 64 * 1024; i++) {
      c.socket.write(frame(2, randomBytes(40_000)));
      sent += 40_000;
      await until(() => bytes === sent);
    }
    assert.equal(last?.byteLength, 64 * 1024, "the burst was read into a 64 KiB buffer");
    const ref = new WeakRef(last as ArrayBufferLike);
    last = undefined;
    // The connection went quiet: back to the small shared buffer (after the read already posted).
    t.trim?.();
    // Then a client's keepalive traffic: small frames (unmasked a byte at a time), each its own read.
    for (let i = 1; i <= 3; i++) {
      c.socket.write(frame(2, new Uint8Array(10)));
      await until(() => bytes === sent + 10 * i);
    }
    gc();
    await new Promise((r) => setImmediate(r));
    gc();
    assert.equal(
      ref.deref(),
      undefined,
      "the 64 KiB read buffer of the burst is still reachable from an idle connection",
    );
  });
});
