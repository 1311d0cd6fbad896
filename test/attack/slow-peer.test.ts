/**
 * Finding 2 of the hardening issue: a peer that never reads must not make
 * this side buffer answers without limit. PING answers coalesce, requests
 * stay open until their answer is handed to the transport, a peer that owes
 * more than `slowPeerBytes` is read no further, and one that takes nothing for
 * `slowPeerTimeoutMs` is closed with ERR_SLOW_PEER.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { encodePing } from "../../src/codec/control.ts";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { type Connection, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { echoRequest, handshake, rawClient } from "../helpers/raw-peer.ts";
import { sleep, until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;

async function echoServer(options = {}) {
  const server: Server = createServer(options);
  server.handle("/echo/1.0.0", (req) => req.data);
  const sessions: Connection[] = [];
  const closes: (PointSubError | undefined)[] = [];
  server.on("session", (s) => sessions.push(s));
  server.on("sessionClose", (_s, err) => closes.push(err));
  const [url] = await server.listen("tcp://127.0.0.1:0");
  return { server, url, sessions, closes };
}

/** A unix-socket client of `path` that reads nothing (paused); what it reads once resumed lands in `got`. */
function pausedUnixClient(path: string): { socket: net.Socket; got: Buffer[] } {
  const socket = net.connect({ path });
  const got: Buffer[] = [];
  socket.on("data", (c: Buffer) => got.push(c));
  socket.on("error", () => {});
  socket.pause();
  return { socket, got };
}

/** Resolves once `socket` connected; rejects with its error. */
function connected(socket: net.Socket): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
}

describe("attack: a peer that never reads", () => {
  it("a PING flood costs one answer while the transport is full, not one per PING", async () => {
    const { server, url, sessions } = await echoServer();
    const peer = await rawClient(url);
    try {
      peer.socket.pause(); // never reads
      peer.socket.write(handshake());
      const ping = encodeFrame(FrameType.PING, 0, 0, new Uint8Array(8));
      const burst = Buffer.concat(Array.from({ length: 10_000 }, () => ping)); // 150 KB
      const bursts = 160; // 24 MB of PINGs in all
      // The server may also cut the flooder off (it never reads): then the flood ends there —
      // waiting for a 'drain' that cannot come would hang the test.
      for (let i = 0; i < bursts && !peer.socket.destroyed; i++) {
        if (!peer.socket.write(burst)) {
          await Promise.race([new Promise((r) => peer.socket.once("drain", r)), peer.closed]);
        }
      }
      await until(
        () =>
          sessions.length === 1 && (peer.socket.destroyed || sessions[0].stats().wire.bytesIn >= bursts * burst.length),
        60_000,
      );
      const { bytesOut, bytesIn } = sessions[0].stats().wire;
      assert.ok(bytesIn > 8 * MiB, `the server read only ${bytesIn} bytes of PINGs`);
      // Before: every PING answered (bytesOut ~ bytesIn). Now: what the socket took, then one per drain.
      assert.ok(bytesOut < 8 * MiB, `server wrote ${bytesOut} bytes for ${bytesIn} bytes of PINGs`);
    } finally {
      peer.socket.destroy();
      await server.close();
    }
  });

  it("PINGs arriving one by one from a peer that never reads: Node's write queue holds a few thousand answers, not one per PING", async () => {
    // A unix socket: the kernel takes ~200 KiB of a peer that does not read (a few hundred tiny
    // writes), Node's queue the rest. Each PING arrives alone (one per turn) and its answer is a
    // write of its own, which Node keeps as an object and a Buffer (~150 B of heap for 15 bytes):
    // before, ~70,000 of them fitted under the transport's 1 MiB of bytes (~10 MB of heap).
    const dir = mkdtempSync(join(tmpdir(), "ps-pings-"));
    const server: Server = createServer();
    const sessions: Connection[] = [];
    server.on("session", (s) => sessions.push(s));
    await server.listen(`unix://${join(dir, "s.sock")}`);
    const { socket, got } = pausedUnixClient(join(dir, "s.sock"));
    try {
      await connected(socket);
      socket.write(handshake());
      await until(() => sessions.length === 1, 10_000);
      // Node's queue of writes (`writableBuffer`, a copy of it, not in @types/node).
      const serverSocket = (sessions[0] as unknown as { transport: { socket: { writableBuffer: unknown[] } } })
        .transport.socket;
      const pings = 12_000;
      let most = 0;
      for (let seq = 1; seq <= pings && !socket.destroyed; seq++) {
        socket.write(encodeFrame(FrameType.PING, 0, 0, encodePing(seq)));
        await new Promise(setImmediate);
        if (seq % 500 === 0) most = Math.max(most, serverSocket.writableBuffer.length);
      }
      await until(() => sessions[0].stats().wire.bytesIn >= pings * 15, 10_000);
      most = Math.max(most, serverSocket.writableBuffer.length);
      assert.ok(most <= 4_096, `Node's queue held ${most} writes for ${pings} PINGs`);
      // Once it reads, the latest PING is answered (each answer answers those before it, §3.7).
      socket.resume();
      const last = Buffer.from(encodeFrame(FrameType.PING, Flag.ACK, 0, encodePing(pings)));
      await until(() => Buffer.concat(got).includes(last), 10_000);
      assert.equal(server.sessions.size, 1, "the session is open");
    } finally {
      socket.destroy();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("requests to a missing route from a peer that never reads: at most maxConcurrentRequests answers are held", async () => {
    const { server, url, closes, sessions } = await echoServer();
    const peer = await rawClient(url);
    try {
      peer.socket.pause();
      peer.socket.write(handshake());
      const route = Buffer.from("/missing");
      let id = 1;
      const nextId = () => {
        id += 2;
        return id;
      };
      const reqs = () =>
        Buffer.concat(
          Array.from({ length: 5000 }, () =>
            encodeFrame(
              FrameType.REQ,
              Flag.START | Flag.END,
              nextId(),
              Buffer.concat([Buffer.from([route.length]), route]),
            ),
          ),
        );
      // Up to 600k requests (~10 MB); the server must close long before.
      for (let i = 0; i < 120 && closes.length === 0 && !peer.socket.destroyed; i++) {
        if (!peer.socket.write(reqs())) {
          await Promise.race([new Promise((r) => peer.socket.once("drain", r)), peer.closed]);
        }
      }
      await until(() => closes.length === 1);
      assert.equal(closes[0]?.code, "ERR_TOO_MANY_REQUESTS");
      assert.ok(sessions[0].stats().wire.bytesOut < 64 * MiB);
    } finally {
      peer.socket.destroy();
      await server.close();
    }
  });

  it("16 MiB echo requests from a peer that never reads: the server stops reading it, and every answer arrives once it reads", async () => {
    const { server, url, sessions } = await echoServer({ maxMessageSize: 64 * MiB });
    const peer = await rawClient(url);
    try {
      peer.socket.pause();
      // Windows large enough that the answers need no CREDIT from this raw peer.
      peer.socket.write(handshake({ connectionWindow: 2 ** 31 - 1, streamWindow: 2 ** 31 - 1 }));
      // Credit is granted as the server receives, so a peer may send blindly within it.
      const count = 8;
      const sent = (async () => {
        for (let i = 0; i < count; i++) {
          for (const f of echoRequest(2 * i + 1, 16 * MiB, i + 1)) {
            if (!peer.socket.write(f))
              await Promise.race([new Promise((r) => peer.socket.once("drain", r)), peer.closed]);
            if (peer.socket.destroyed) return;
          }
        }
      })();
      await until(() => sessions.length === 1 && sessions[0].stats().wire.bytesIn > 8 * MiB);
      // Let it settle: the server must stop reading well before all 128 MiB.
      let last = -1;
      for (let i = 0; i < 100; i++) {
        await sleep(100);
        const now = sessions[0].stats().wire.bytesIn;
        if (now === last) break;
        last = now;
      }
      assert.ok(last < 80 * MiB, `server read ${last} bytes from a peer that reads nothing`);
      // The peer reads again: the server drains, reads on, and answers everything.
      peer.socket.resume();
      await sent;
      // waitFor, not a poll of received(): concatenating up to 128 MiB every 5 ms in the server's own process
      // slowed the server down to a crawl on a loaded machine.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        peer.waitFor(count * 16 * MiB),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error("the answers did not all arrive within 60 s")), 60_000);
        }),
      ]).finally(() => clearTimeout(timer));
      assert.ok(sessions[0].stats().wire.bytesIn >= count * 16 * MiB);
      assert.equal(sessions[0].state, "open");
    } finally {
      peer.socket.destroy();
      await server.close();
    }
  });

  it("answers a peer has not taken keep their budget charge while the transport holds them, and give it back once written", async () => {
    // A unix socket: the kernel takes ~200 KiB of a peer that does not read, Node's buffer the rest.
    const dir = mkdtempSync(join(tmpdir(), "ps-held-"));
    // Unpaced: the writer hands frames over as fast as the socket takes them, as it does for a
    // peer that acknowledges what it never reads.
    const server: Server = createServer({ pacing: false });
    server.handle("/echo/1.0.0", (req) => req.data);
    const [url] = await server.listen(`unix://${join(dir, "s.sock")}`);
    const { socket, got } = pausedUnixClient(join(dir, "s.sock"));
    try {
      await connected(socket);
      // 16 KiB frames toward this peer: each 256 KiB answer goes out as views of the echoed
      // body, and the writer hands them to the socket until Node's buffer holds ~1 MiB.
      socket.write(handshake({ maxFrameSize: 16 * 1024, connectionWindow: 2 ** 31 - 1, streamWindow: 2 ** 31 - 1 }));
      const count = 8;
      const size = 256 * 1024;
      const route = Buffer.from("/echo/1.0.0");
      for (let i = 0; i < count; i++) {
        const body = Buffer.concat([Buffer.from([route.length]), route, Buffer.alloc(size, i + 1)]);
        socket.write(encodeFrame(FrameType.REQ, Flag.START | Flag.END, 2 * i + 1, body));
      }
      assert.ok(url.startsWith("unix://"));
      await until(() => [...server.sessions][0]?.stats().wire.bytesIn >= count * size, 10_000);
      // Settled: every answer is handed over or queued. Before, an answer's charge went back when
      // its last frame was handed to the socket, though Node still held it (and the whole body).
      await sleep(200);
      const held = server.memory.used;
      assert.ok(
        held >= (count - 1) * size,
        `${held} bytes charged while ~${count * size} wait for a peer that reads nothing`,
      );
      socket.resume();
      await until(() => server.memory.used === 0, 10_000);
      const all = Buffer.concat(got);
      for (let i = 1; i <= count; i++) assert.ok(all.includes(Buffer.alloc(1024, i)), `answer ${i} arrived`);
    } finally {
      socket.destroy();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a peer that takes nothing for slowPeerTimeoutMs is closed with ERR_SLOW_PEER", async () => {
    const { server, url, closes } = await echoServer({ slowPeerTimeoutMs: 400, maxMessageSize: 64 * MiB });
    const peer = await rawClient(url);
    try {
      peer.socket.pause();
      peer.socket.write(handshake());
      for (const f of echoRequest(1, 16 * MiB, 1)) peer.socket.write(f);
      await until(() => closes.length === 1);
      assert.equal(closes[0]?.code, "ERR_SLOW_PEER");
    } finally {
      peer.socket.destroy();
      await server.close();
    }
  });
});
