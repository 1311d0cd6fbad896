/**
 * A peer that never reads while it makes this side write tiny frames one by
 * one — here CANCEL answers: it opens a chunked request and cancels it, one
 * pair per read (docs/PROTOCOL.md §3.4: the answer to a requester's CANCEL is
 * a CANCEL). Each answer is a write of its own, which Node keeps in its queue
 * (socket-transport.ts counts them against its high-water mark).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { encodeCancel } from "../../src/codec/control.ts";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { writeVarint } from "../../src/codec/varint.ts";
import { type Connection, createServer, type Server } from "../../src/index.ts";
import { echoRequest, handshake } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";
import { wsClientFrame } from "../helpers/ws-client-frame.ts";
import { upgradeRequest } from "../helpers/ws-server-frames.ts";

const ROUTE = Buffer.from("/echo/1.0.0");

/** A single-frame echo request of `size` bytes of `fill`. */
function echo(id: number, size: number, fill: number): Uint8Array {
  return encodeFrame(
    FrameType.REQ,
    Flag.START | Flag.END,
    id,
    Buffer.concat([Buffer.from([ROUTE.length]), ROUTE, Buffer.alloc(size, fill)]),
  );
}

/** The START frame of a chunked echo request (100,000 bytes announced, 1 sent) and its CANCEL. */
function startAndCancel(id: number): Uint8Array {
  const total = new Uint8Array(9);
  const n = writeVarint(total, 0, 100_000);
  const payload = Buffer.concat([total.subarray(0, n), Buffer.from([ROUTE.length]), ROUTE, Buffer.alloc(1)]);
  return Buffer.concat([
    encodeFrame(FrameType.REQ, Flag.START, id, payload),
    encodeFrame(FrameType.CANCEL, 0, id, encodeCancel(4004)),
  ]);
}

/**
 * An echo server on a unix socket (the kernel takes ~200 KiB of a peer that
 * does not read, Node's queue the rest) and a raw peer connected to it,
 * paused, its handshake sent.
 */
async function setUp() {
  const dir = mkdtempSync(join(tmpdir(), "ps-cancels-"));
  const server: Server = createServer();
  server.handle("/echo/1.0.0", (req) => req.data);
  const sessions: Connection[] = [];
  server.on("session", (s) => sessions.push(s));
  await server.listen(`unix://${join(dir, "s.sock")}`);
  const socket = net.connect({ path: join(dir, "s.sock") });
  const got: Buffer[] = [];
  socket.on("data", (c: Buffer) => got.push(c));
  socket.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  socket.pause();
  socket.write(handshake());
  await until(() => sessions.length === 1, 10_000);
  // Node's queue of writes (`writableBuffer`, a copy of it, not in @types/node).
  const serverSocket = (sessions[0] as unknown as { transport: { socket: net.Socket & { writableBuffer: unknown[] } } })
    .transport.socket;
  return {
    server,
    session: sessions[0],
    socket,
    serverSocket,
    received: (b: Buffer) => Buffer.concat(got).includes(b),
    receivedBytes: () => got.reduce((n, c) => n + c.length, 0),
    async close() {
      socket.destroy();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Writes `frames(i)` for i < n, one per event-loop turn (each arrives alone). */
async function oneByOne(socket: net.Socket, n: number, frames: (i: number) => Uint8Array, each?: (i: number) => void) {
  for (let i = 0; i < n && !socket.destroyed; i++) {
    socket.write(frames(i));
    await new Promise(setImmediate);
    each?.(i);
  }
}

describe("attack: a peer that never reads cancels requests one by one", () => {
  it("Node's write queue holds a few thousand answers, not one write per CANCEL", async () => {
    const t = await setUp();
    try {
      let sent = handshake().length;
      const pairs = 20_000;
      let most = 0;
      await oneByOne(
        t.socket,
        pairs,
        (i) => {
          const b = startAndCancel(2 * i + 1);
          sent += b.length;
          return b;
        },
        (i) => {
          if (i % 500 === 0) most = Math.max(most, t.serverSocket.writableBuffer.length);
        },
      );
      await until(() => t.session.stats().wire.bytesIn >= sent, 10_000);
      most = Math.max(most, t.serverSocket.writableBuffer.length);
      // Before: every answer a write of its own, each an object and a Buffer in Node's queue (~180 B of
      // heap for 11 bytes): ~13,000 of them here, ~470,000 (~90 MB) before the slow-peer bound stops reading.
      assert.ok(most <= 4_096, `Node's queue held ${most} writes for ${pairs} CANCELs`);
      // Once it reads, every byte written arrives, in order (the last answer, then an echo).
      const out = t.session.stats().wire.bytesOut;
      t.socket.resume();
      await until(() => t.receivedBytes() >= out, 10_000);
      const last = Buffer.from(encodeFrame(FrameType.CANCEL, 0, 2 * pairs - 1, encodeCancel(4004)));
      assert.ok(t.received(last), "the last CANCEL is answered");
      t.socket.write(echo(2 * pairs + 1, 20, 9));
      await until(() => t.received(Buffer.alloc(20, 9)), 10_000);
      assert.equal(t.session.state, "open");
    } finally {
      await t.close();
    }
  });

  it("once it reads again, answers keep coming after the drain (the writer is not left waiting for one)", async () => {
    const t = await setUp();
    try {
      // A 300 KB answer: past Node's own mark (16 KiB), so Node emits 'drain' once its queue empties.
      let sent = handshake().length;
      const send = (b: Uint8Array) => {
        sent += b.length;
        return b;
      };
      t.socket.write(send(echo(1, 300_000, 3)));
      await until(() => t.serverSocket.writableNeedDrain, 10_000);
      const pairs = 8_000;
      await oneByOne(t.socket, pairs, (i) => send(startAndCancel(2 * i + 3)));
      // An answer over 32 KiB queued meanwhile: at the drain it is written at once.
      const first = 2 * pairs + 3;
      t.socket.write(send(echo(first, 40_000, 7)));
      await until(() => t.session.stats().wire.bytesIn >= sent, 10_000);
      t.socket.resume();
      await until(() => t.received(Buffer.alloc(40_000, 7)), 10_000);
      // Before: 'drain' came before Node called the done writes' callbacks, still counted then: the
      // answer's write said "full", none of Node's to report a drain, and the writer waited for ever.
      t.socket.write(echo(first + 2, 20, 9));
      await until(() => t.received(Buffer.alloc(20, 9)), 10_000);
      assert.equal(t.session.state, "open");
    } finally {
      await t.close();
    }
  });
});

describe("attack: a ws:// client that never reads cancels requests one by one", () => {
  it("the server's socket holds a few writes, not two per CANCEL answer", async () => {
    const server: Server = createServer();
    server.handle("/echo/1.0.0", (req) => req.data);
    const sessions: Connection[] = [];
    server.on("session", (s) => sessions.push(s));
    const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
    const u = new URL(url);
    const socket = net.connect(Number(u.port), u.hostname);
    socket.on("error", () => {});
    let response = Buffer.alloc(0);
    socket.on("data", (d: Buffer) => {
      response = Buffer.concat([response, d]);
    });
    try {
      await new Promise((r) => socket.once("connect", r));
      socket.write(upgradeRequest(u), "latin1");
      await until(() => response.includes("\r\n\r\n"), 10_000);
      assert.match(response.toString("latin1"), /^HTTP\/1\.1 101 /);
      socket.pause(); // never reads again
      // Windows large enough that the answer below needs no CREDIT from this raw peer.
      const hello = handshake({ connectionWindow: 2 ** 31 - 1, streamWindow: 2 ** 31 - 1 });
      let sent = hello.length;
      socket.write(wsClientFrame(0x2, hello));
      await until(() => sessions.length === 1, 10_000);
      const serverSocket = (
        sessions[0] as unknown as { transport: { socket: net.Socket & { writableBuffer: unknown[] } } }
      ).transport.socket;
      // Loopback TCP takes MBs of a peer that does not read: a 6 MiB answer fills the kernel first.
      for (const f of echoRequest(1, 6 * 1024 * 1024, 5)) {
        sent += f.length;
        socket.write(wsClientFrame(0x2, f));
      }
      await until(() => serverSocket.writableLength !== 0, 10_000);
      const pairs = 20_000;
      let most = 0;
      await oneByOne(
        socket,
        pairs,
        (i) => {
          const b = startAndCancel(2 * i + 3);
          sent += b.length;
          return wsClientFrame(0x2, b);
        },
        (i) => {
          if (i % 500 === 0) most = Math.max(most, serverSocket.writableBuffer.length);
        },
      );
      // Every pair read (each answered), then the most Node's queue held.
      await until(() => sessions[0].stats().wire.bytesIn >= sent, 10_000);
      most = Math.max(most, serverSocket.writableBuffer.length);
      // Before: each answer a ws message of its own, two writes in Node's queue (header and payload)
      // and a copy: ~520 B of memory per 11-byte answer, ~470,000 answers before the slow-peer bound.
      assert.ok(most <= 4_096, `Node's queue held ${most} writes for ${pairs} CANCELs`);
      assert.equal(sessions[0].state, "open");
    } finally {
      socket.destroy();
      await server.close();
    }
  });
});
