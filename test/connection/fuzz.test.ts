/**
 * Connection-level fuzzing over real loopback sockets: a raw peer completes
 * the handshake, then sends well-formed frames (valid headers and CRCs) with
 * random types, flags, ids and payloads, some random and some plausible
 * (routed requests, stream starts with metadata, credits, cancels, pings).
 * Whatever arrives, the server must never throw or crash, must close each
 * bad session with a typed error, must drop every session it opened, and
 * must keep serving well-behaved clients.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { encodeMeta, encodeStreamHead } from "../../src/codec/stream-prefix.ts";
import { varintLength, writeVarint } from "../../src/codec/varint.ts";
import { connect, createServer, PointSubError, type Server } from "../../src/index.ts";
import { handshake, rawServer } from "../helpers/raw-peer.ts";

/** xorshift32: the same cases on every run. */
function rng(seed: number): () => number {
  let x = seed | 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const ROUTES = ["/echo/1.0.0", "/slow/1.0.0", "/pointsub/resume/1", "/nope"];
const STREAM_ROUTES = ["/hash/1.0.0", "/nope"];

function varint(n: number): Uint8Array {
  const out = new Uint8Array(varintLength(n));
  writeVarint(out, 0, n);
  return out;
}

function cat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

/** One random frame, well formed on the wire; its payload may or may not make sense. */
function randomFrame(r: () => number): Uint8Array {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const exact = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
  const bytes = (max: number) => exact(Math.floor(r() * max));
  // Client-initiated ids are odd; a few even ones test the parity rules.
  const id = r() < 0.1 ? pick([0, 2, 4]) : 1 + 2 * Math.floor(r() * 6);
  const type = pick([
    FrameType.MSG,
    FrameType.REQ,
    FrameType.REQ,
    FrameType.RES,
    FrameType.CANCEL,
    FrameType.CREDIT,
    FrameType.PING,
    FrameType.GOAWAY,
    FrameType.STREAM,
    FrameType.STREAM,
  ]);
  const route = new TextEncoder().encode(pick(ROUTES));
  switch (type) {
    case FrameType.MSG: {
      const flags = pick([Flag.START | Flag.END, Flag.START, 0, Flag.END]);
      const body =
        (flags & Flag.START) !== 0 && (flags & Flag.END) === 0
          ? cat(varint(Math.floor(r() * 5000)), bytes(300))
          : bytes(300);
      return encodeFrame(type, flags, id, body);
    }
    case FrameType.REQ: {
      const flags = pick([Flag.START | Flag.END, Flag.START, 0, Flag.END]);
      const head = (flags & Flag.START) !== 0 ? cat(varint(route.length), route) : new Uint8Array(0);
      const total =
        (flags & Flag.START) !== 0 && (flags & Flag.END) === 0 ? varint(Math.floor(r() * 5000)) : new Uint8Array(0);
      return encodeFrame(type, flags, id, r() < 0.2 ? bytes(40) : cat(total, head, bytes(200)));
    }
    case FrameType.RES:
      return encodeFrame(
        type,
        pick([Flag.START | Flag.END, Flag.START, 0]),
        id,
        cat(Uint8Array.of(pick([0, 1, 7])), bytes(50)),
      );
    case FrameType.CANCEL:
      return encodeFrame(type, 0, id, r() < 0.8 ? Uint8Array.of(0x0f, Math.floor(r() * 12)) : bytes(4));
    case FrameType.CREDIT:
      return encodeFrame(type, 0, r() < 0.3 ? 0 : id, r() < 0.8 ? varint(1 + Math.floor(r() * 2 ** 20)) : bytes(6));
    case FrameType.PING:
      return encodeFrame(type, pick([0, Flag.ACK]), 0, r() < 0.9 ? exact(8) : bytes(12));
    case FrameType.GOAWAY:
      return encodeFrame(type, 0, 0, cat(Uint8Array.of(0, pick([0, 0, 3])), bytes(20)));
    default: {
      const flags = pick([Flag.START, 0, 0, Flag.END, Flag.COMPRESSED, Flag.START | Flag.END]);
      if ((flags & Flag.START) !== 0 && r() < 0.8) {
        const head = encodeStreamHead({
          total: r() < 0.5 ? undefined : Math.floor(r() * 10_000),
          offset: 0,
          prefixCrc: 0,
          route: pick(STREAM_ROUTES),
          codec: pick([0, 0, 0, 1, 9]),
          meta: r() < 0.8 ? encodeMeta({ name: "f.bin", n: Math.floor(r() * 9) }) : bytes(10),
        });
        return encodeFrame(type, flags, id, cat(head, bytes(300)));
      }
      if ((flags & Flag.END) !== 0 && r() < 0.7) {
        return encodeFrame(type, flags, id, cat(varint(Math.floor(r() * 400)), bytes(4)));
      }
      return encodeFrame(type, flags, id, bytes(r() < 0.1 ? 5000 : 400));
    }
  }
}

describe("connection fuzzing (real sockets)", () => {
  let server: Server;
  let url: string;
  const closeErrors: unknown[] = [];
  let opened = 0;

  before(async () => {
    server = createServer({ handshakeTimeoutMs: 2000, keepAliveMs: 0 });
    server.handle("/echo/1.0.0", (req) => req.data);
    server.handle("/slow/1.0.0", (_req, ctx) => new Promise((r) => setTimeout(r, 20, ctx.signal.aborted ? "x" : "y")));
    server.handleStream("/hash/1.0.0", async (stream) => {
      let n = 0;
      for await (const c of stream) n += c.length;
      return String(n);
    });
    server.on("session", () => opened++);
    server.on("sessionClose", (_s, err) => closeErrors.push(err));
    [url] = await server.listen("tcp://127.0.0.1:0");
  });

  after(async () => {
    await server.close();
  });

  it("survives 1,500 connections of random well-formed frames: typed errors, no leaks, still serving", async () => {
    const port = Number(new URL(url).port);
    const cases = 1500;
    for (let c = 0; c < cases; c++) {
      const r = rng(c + 1);
      const frames = Array.from({ length: 1 + Math.floor(r() * 12) }, () => randomFrame(r));
      const socket = net.connect(port, "127.0.0.1");
      socket.on("error", () => {});
      socket.on("data", () => {});
      await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
      const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
      socket.write(cat(handshake(), ...frames));
      // Give the server a moment to act on them (answer, fail, or wait), then leave.
      await new Promise((resolve) => setTimeout(resolve, r() < 0.05 ? 30 : 1));
      socket.destroy();
      await closed;
    }
    // Every session the server opened is gone, each closed cleanly or with a typed error.
    const deadline = Date.now() + 5000;
    while ((server.sessions.size !== 0 || closeErrors.length < opened) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(server.sessions.size, 0);
    assert.equal(closeErrors.length, opened);
    assert.ok(opened >= cases * 0.9, `${opened} sessions opened`);
    for (const e of closeErrors) assert.ok(e === undefined || e instanceof PointSubError, String(e));
    const codes = new Set(closeErrors.map((e) => (e as PointSubError | undefined)?.code));
    // Protocol violations were noticed as such, not only as dropped connections.
    assert.ok(codes.has("ERR_PROTOCOL"), [...codes].join(","));
    // A well-behaved client is still served.
    const conn = await connect(url);
    assert.equal(new TextDecoder().decode(await conn.request("/echo/1.0.0", "still here")), "still here");
    await conn.close();
  });

  it("a client whose server sends 300 sequences of random frames settles every call with a typed error or an answer", async () => {
    for (let c = 0; c < 300; c++) {
      const r = rng(10_000 + c);
      const raw = await rawServer();
      const conn = await Promise.all([
        connect(raw.url, { keepAliveMs: 0, requestTimeoutMs: 5000 }),
        raw.peer.then((p) => p.socket.write(handshake())),
      ]).then(([conn]) => conn);
      conn.on("message", () => {});
      const outcomes: Promise<unknown>[] = [];
      const settle = (p: PromiseLike<unknown>) =>
        outcomes.push(
          Promise.resolve(p).then(
            () => "ok",
            (e: unknown) => {
              assert.ok(e instanceof PointSubError, String(e));
              return (e as PointSubError).code;
            },
          ),
        );
      for (let k = 0; k < 4; k++) settle(conn.request("/echo/1.0.0", "hi"));
      settle(conn.sendStream("/hash/1.0.0", [new Uint8Array(3000), new Uint8Array(100)], { total: 3100 }));
      settle(conn.send("one-way"));
      const peer = await raw.peer;
      const frames = Array.from({ length: 1 + Math.floor(r() * 12) }, () => randomFrame(r));
      peer.socket.write(cat(...frames));
      await new Promise((resolve) => setTimeout(resolve, 2));
      peer.socket.destroy();
      // Every call settles once the connection is gone: nothing hangs.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const results = await Promise.race([
        Promise.all(outcomes),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`case ${c}: a call never settled`)), 5000);
        }),
      ]).finally(() => clearTimeout(timer));
      assert.equal((results as unknown[]).length, outcomes.length);
      await conn.closed;
      await raw.close();
    }
  });
});
