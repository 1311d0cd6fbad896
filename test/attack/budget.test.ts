/**
 * Finding 4 (and 7) of the hardening issue: a server-wide memory budget for
 * what peers make the server hold, per-message overhead charged, and
 * unfinished work that makes no progress cancelled; a client's upload that
 * never gets credit times out.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { Feature } from "../../src/codec/settings.ts";
import { writeVarint } from "../../src/codec/varint.ts";
import { connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { handshake, type RawPeer, rawClient, rawServer } from "../helpers/raw-peer.ts";
import { sleep, until } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** The START frame of a chunked `type` message declaring `total` bytes, carrying `first` of them. */
function startFrame(type: number, id: number, total: number, first: number, route?: string): Uint8Array {
  const head = new Uint8Array(16);
  let n = writeVarint(head, 0, total);
  if (route !== undefined) {
    const r = Buffer.from(route);
    head[n++] = r.length;
    return encodeFrame(type, Flag.START, id, Buffer.concat([head.subarray(0, n), r, new Uint8Array(first)]));
  }
  return encodeFrame(type, Flag.START, id, Buffer.concat([head.subarray(0, n), new Uint8Array(first)]));
}

/** CANCEL frames (id, errno) in what a raw peer received (single frames and BATCHes). */
function cancels(bytes: Buffer): { id: number; errno: number }[] {
  const out: { id: number; errno: number }[] = [];
  const varint = (b: Buffer, p: number): [number, number] => {
    let v = 0;
    for (let shift = 0; ; shift += 7) {
      const x = b[p++];
      v += (x & 0x7f) * 2 ** shift;
      if (x < 0x80) return [v, p];
    }
  };
  const walk = (b: Buffer, p: number, end: number, crc: boolean) => {
    while (p < end) {
      const type = b[p] >> 4;
      const [id, q] = varint(b, p + 1);
      const [len, r] = varint(b, q);
      if (type === FrameType.CANCEL) out.push({ id, errno: (b[r] << 8) | b[r + 1] });
      if (type === FrameType.BATCH) walk(b, r, r + len, false);
      p = r + len + (crc ? 4 : 0);
    }
  };
  walk(bytes, 6, bytes.length, true);
  return out;
}

async function budgetServer(options = {}) {
  const server: Server = createServer(options);
  const closes: (PointSubError | undefined)[] = [];
  server.on("sessionClose", (_s, err) => closes.push(err));
  server.handle("/echo/1.0.0", (req) => req.data);
  const [url] = await server.listen("tcp://127.0.0.1:0");
  return { server, url, closes };
}

describe("attack: memory budget", () => {
  it("unfinished messages from several connections share one budget: beyond it they are refused with ERR_OVERLOADED, and it is all returned", async () => {
    const { server, url, closes } = await budgetServer({ memoryBudget: 4 * MiB });
    const peers: RawPeer[] = [];
    for (let c = 0; c < 3; c++) {
      const peer = await rawClient(url);
      peers.push(peer);
      const frames = [handshake()];
      for (let i = 0; i < 3; i++) frames.push(startFrame(FrameType.MSG, 2 * i + 1, MiB, 4 * KiB));
      peer.socket.write(Buffer.concat(frames));
    }
    await until(() => server.memory.refused >= 5 && peers.every((p) => p.received().length > 0));
    await until(() => peers.reduce((n, p) => n + cancels(p.received()).length, 0) >= 5);
    const refused = peers.flatMap((p) => cancels(p.received()));
    assert.ok(
      refused.every((c) => c.errno === 2003),
      "refused with ERR_OVERLOADED",
    );
    assert.ok(server.memory.used <= server.memory.limit);
    // 9 MiB declared + overhead would not fit in 4 MiB: at most 3 accepted.
    assert.ok(refused.length >= 6, `${refused.length} refused`);
    assert.equal(closes.length, 0, "refusing is not a connection error");
    for (const p of peers) p.socket.destroy();
    await until(() => closes.length === 3);
    assert.equal(server.memory.used, 0, "every charge returned");
    await server.close();
  });

  it("a refused message's frames still in flight are dropped, not a protocol error; the connection goes on", async () => {
    const { server, url, closes } = await budgetServer({ memoryBudget: 1 * MiB });
    const peer = await rawClient(url);
    const total = 2 * MiB; // over the budget: refused at START
    peer.socket.write(Buffer.concat([handshake(), startFrame(FrameType.REQ, 1, total, 16 * KiB, "/echo/1.0.0")]));
    await until(() => cancels(peer.received()).length === 1);
    assert.deepEqual(cancels(peer.received()), [{ id: 1, errno: 2003 }]);
    // The rest of that request was already on its way.
    let sent = 16 * KiB;
    const rest: Uint8Array[] = [];
    while (sent < total) {
      const n = Math.min(512 * KiB, total - sent);
      sent += n;
      rest.push(encodeFrame(FrameType.REQ, sent === total ? Flag.END : 0, 1, new Uint8Array(n)));
    }
    const route = Buffer.from("/echo/1.0.0");
    const small = encodeFrame(
      FrameType.REQ,
      Flag.START | Flag.END,
      3,
      Buffer.concat([Buffer.from([route.length]), route, Buffer.from("hi")]),
    );
    const before = peer.received().length;
    peer.socket.write(Buffer.concat([...rest, small]));
    await until(() => peer.received().length > before);
    await sleep(50);
    assert.equal(closes.length, 0);
    assert.equal(server.memory.used, 0);
    peer.socket.destroy();
    await server.close();
  });

  it("an honest client sees a retryable ERR_OVERLOADED while another peer holds the budget, and succeeds once it is free", async () => {
    const { server, url } = await budgetServer({ memoryBudget: 2 * MiB });
    const hog = await rawClient(url);
    hog.socket.write(Buffer.concat([handshake(), startFrame(FrameType.MSG, 1, 1536 * KiB, 1024)]));
    await until(() => server.memory.used > MiB);
    const client = await connect(url);
    const err = await client.request("/echo/1.0.0", new Uint8Array(MiB)).catch((e: PointSubError) => e);
    assert.equal((err as PointSubError).code, "ERR_OVERLOADED");
    assert.equal((err as PointSubError).retryable, true);
    hog.socket.destroy();
    await until(() => server.memory.used === 0);
    const ok = await client.request("/echo/1.0.0", new Uint8Array(MiB).fill(5));
    assert.equal(ok.length, MiB);
    await client.close();
    await server.close();
  });

  it("an unfinished message that gets no frame for progressTimeoutMs is cancelled with ERR_TIMEOUT and its memory returned", async () => {
    const { server, url, closes } = await budgetServer({ progressTimeoutMs: 300 });
    const peer = await rawClient(url);
    peer.socket.write(Buffer.concat([handshake(), startFrame(FrameType.REQ, 1, 100 * KiB, 1024, "/echo/1.0.0")]));
    await until(() => server.memory.used > 0);
    await until(() => cancels(peer.received()).length === 1);
    assert.deepEqual(cancels(peer.received()), [{ id: 1, errno: 1001 }]);
    assert.equal(server.memory.used, 0);
    assert.equal(closes.length, 0);
    peer.socket.destroy();
    await server.close();
  });

  it("a client's upload that never gets stream credit fails with ERR_TIMEOUT instead of hanging", async () => {
    const raw = await rawServer();
    const connP = connect(raw.url, { progressTimeoutMs: 300 });
    const peer = await raw.peer;
    peer.socket.write(handshake({ features: Feature.STREAMS, streamWindow: 16 * KiB }));
    const conn = await connP;
    // The hostile receiver reads everything and never returns credit.
    const source = (async function* () {
      for (let i = 0; i < 100; i++) yield new Uint8Array(8 * KiB);
    })();
    const err = await conn.sendStream("/upload", source).then(
      () => undefined,
      (e: unknown) => e as PointSubError,
    );
    assert.equal(err?.code, "ERR_TIMEOUT");
    conn.destroy();
    await raw.close();
  });

  it("more than 1024 unfinished messages from one peer are refused with ERR_OVERLOADED whatever the budget; a pointsub sender keeps at most 256 open", async () => {
    const { server, url, closes } = await budgetServer();
    const peer = await rawClient(url);
    const frames = [handshake()];
    for (let i = 0; i < 1100; i++) frames.push(startFrame(FrameType.MSG, 2 * i + 1, 64 * KiB, 16));
    peer.socket.write(Buffer.concat(frames));
    await until(() => cancels(peer.received()).length >= 76);
    const refused = cancels(peer.received());
    assert.equal(refused.length, 76);
    assert.ok(refused.every((c) => c.errno === 2003));
    assert.equal(closes.length, 0);
    peer.socket.destroy();
    await until(() => closes.length === 1 && server.memory.used === 0);
    // An honest pointsub sender with 600 chunked messages in flight is never refused.
    let got = 0;
    server.on("message", () => got++);
    const client = await connect(url);
    await Promise.all(Array.from({ length: 600 }, (_, i) => client.send(new Uint8Array(100 * KiB).fill(i))));
    await until(() => got === 600);
    await client.close();
    await server.close();
  });
});
