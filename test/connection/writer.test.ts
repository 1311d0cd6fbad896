/**
 * Unit tests of FrameWriter (src/connection/writer.ts) without sockets: a
 * fake sink records what the writer hands to the transport and the real
 * FrameDecoder reads it back, checking every frame and trailer.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { crc32c } from "../../src/codec/crc32c.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { MAX_OPEN_CHUNKED } from "../../src/connection/bulk-pump.ts";
import { Pacer } from "../../src/connection/pacer.ts";
import { useStreamEngine } from "../../src/connection/stream-engine.ts";
import * as streams from "../../src/connection/streams.ts";
import { FrameWriter, type OutMessage, type StreamItem, writePoolsAllocated } from "../../src/connection/writer.ts";
import { PointSubError } from "../../src/errors/error.ts";
import { Queue } from "../../src/util/queue.ts";
import { assertBytes, concat, decodeFrames, leadingVarint, outerFrames, RecordingSink } from "../helpers/frame-sink.ts";

/** The writer's clock (monotonic `performance.now()`), set by hand until `t` ends. */
function stubClock(t: { after(fn: () => void): void }, start: number): { set(ms: number): void } {
  const realNow = performance.now;
  let now = start;
  performance.now = () => now;
  t.after(() => {
    performance.now = realNow;
  });
  return {
    set(ms: number) {
      now = ms;
    },
  };
}

// The writer's bulk pump comes with the stream engine (installed up front, as the Node entry does).
useStreamEngine(streams);

const EMPTY = new Uint8Array(0);
const WHOLE = Flag.START | Flag.END;
const KiB = 1024;
/** Lets queued microtasks (the writer's flush) and I/O callbacks run. */
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

function bytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed * 7 + (i >>> 8)) & 0xff;
  return out;
}

function setup(): { w: FrameWriter; sink: RecordingSink } {
  const sink = new RecordingSink();
  const w = new FrameWriter(sink);
  w.connCredit = 1 << 30;
  return { w, sink };
}

interface Tracked {
  m: OutMessage;
  resolved: number;
  rejected: PointSubError[];
}

/** An OutMessage whose resolve and reject calls are counted. */
function message(
  id: number,
  data: Uint8Array,
  o: { type?: number; head?: Uint8Array; single?: boolean; chunk?: number; credit?: number } = {},
): Tracked {
  const t: Tracked = {
    m: {
      type: o.type ?? FrameType.MSG,
      id,
      head: o.head ?? EMPTY,
      data,
      crc: -1,
      offset: 0,
      started: false,
      credit: o.credit ?? 1 << 30,
      chunk: o.chunk ?? 16 * KiB,
      single: o.single ?? false,
      resolve: () => t.resolved++,
      reject: (e) => t.rejected.push(e),
    },
    resolved: 0,
    rejected: [],
  };
  return t;
}

/** A STREAM entry whose frames come from `items`. */
function streamMessage(id: number, credit: number): Tracked & { items: Queue<StreamItem>; sent: StreamItem[] } {
  const items = new Queue<StreamItem>();
  const sent: StreamItem[] = [];
  const t = message(id, EMPTY, { type: FrameType.STREAM, credit });
  t.m.items = items;
  t.m.onItem = (item) => sent.push(item);
  return Object.assign(t, { items, sent });
}

/** The data carried by the frames of message `id` (the START prefix of `prefix` bytes removed). */
function dataOf(frames: ReturnType<typeof decodeFrames>, id: number, prefix: number): Uint8Array {
  const own = frames.filter((f) => f.id === id);
  return concat(own.map((f, i) => (i === 0 ? f.payload.subarray(prefix) : f.payload)));
}

const err = (msg = "test") => new PointSubError("ERR_CANCELLED", msg);

describe("FrameWriter: trySendNow", () => {
  it("writes a single frame at once, consumes connection credit, and hands it over in a microtask", async () => {
    const { w, sink } = setup();
    w.connCredit = 100;
    const data = bytes(40);
    assert.equal(w.trySendNow(FrameType.MSG, 1, EMPTY, data), true);
    assert.equal(w.connCredit, 60);
    assert.equal(sink.writes.length, 0, "nothing is handed over synchronously");
    await tick();
    assert.equal(sink.writes.length, 1);
    const frames = sink.frames();
    assert.equal(frames.length, 1);
    assert.deepEqual(
      { type: frames[0].type, flags: frames[0].flags, id: frames[0].id },
      { type: FrameType.MSG, flags: Flag.START | Flag.END, id: 1 },
    );
    assert.deepEqual(frames[0].payload, data);
    assert.equal(w.framesOut, 1);
    assert.equal(w.bytesOut, sink.bytes().length);
  });

  it("puts the head (route or status) before the data", async () => {
    const { w, sink } = setup();
    const head = new Uint8Array([3, 0x2f, 0x61, 0x62]);
    assert.equal(w.trySendNow(FrameType.REQ, 5, head, bytes(10)), true);
    await tick();
    const [f] = sink.frames();
    assert.equal(f.type, FrameType.REQ);
    assert.deepEqual(f.payload, concat([head, bytes(10)]));
  });

  it("hands every frame written in one turn to the transport in one write", async () => {
    const { w, sink } = setup();
    for (let i = 0; i < 20; i++) assert.equal(w.trySendNow(FrameType.MSG, 2 * i + 1, EMPTY, bytes(50, i)), true);
    await tick();
    assert.equal(sink.writes.length, 1);
    const frames = sink.frames();
    assert.deepEqual(
      frames.map((f) => f.id),
      Array.from({ length: 20 }, (_, i) => 2 * i + 1),
    );
    for (let i = 0; i < 20; i++) assert.deepEqual(frames[i].payload, bytes(50, i));
  });

  it("a turn's batch goes out as one buffer however full the shared pool is (no batch split between pools)", async () => {
    const { w, sink } = setup();
    w.batching = true;
    // 40 rounds of ~9.6 KB batches (as 128 pipelined 64 B requests) walk through several 64 KiB pools.
    for (let round = 0; round < 40; round++) {
      for (let i = 0; i < 128; i++) w.trySendNow(FrameType.REQ, 2 * i + 1, EMPTY, bytes(64, round + i));
      await tick();
    }
    assert.equal(sink.writes.length, 40);
    const split = sink.writes.filter((chunks) => chunks.length !== 1).length;
    assert.equal(split, 0, `${split} of 40 writes split into several buffers`);
    assert.equal(sink.frames().length, 40 * 128);
  });

  it("flushes synchronously once 32 KiB of single frames are batched (two BATCH frames per write)", () => {
    const { w, sink } = setup();
    for (const id of [1, 3, 5]) {
      assert.equal(w.trySendNow(FrameType.MSG, id, EMPTY, bytes(9000)), true);
      assert.equal(sink.writes.length, 0, "under 32 KiB: batched");
    }
    assert.equal(w.trySendNow(FrameType.MSG, 7, EMPTY, bytes(9000)), true);
    assert.equal(sink.writes.length, 1, "32 KiB reached: handed over at once");
    assert.deepEqual(
      sink.frames().map((f) => f.id),
      [1, 3, 5, 7],
    );
  });

  it("returns false and changes nothing when credit is short, the transport waits, a single is queued, or closed", async () => {
    const short = setup();
    short.w.connCredit = 9;
    assert.equal(short.w.trySendNow(FrameType.MSG, 1, EMPTY, bytes(10)), false);
    assert.equal(short.w.connCredit, 9);

    const waiting = setup();
    waiting.w.writable = false;
    assert.equal(waiting.w.trySendNow(FrameType.MSG, 1, EMPTY, bytes(10)), false);

    const queued = setup();
    queued.w.connCredit = 50;
    queued.w.enqueue(message(1, bytes(100), { single: true }).m); // blocked on credit
    assert.equal(queued.w.trySendNow(FrameType.MSG, 3, EMPTY, bytes(10)), false, "must not overtake a queued single");
    assert.equal(queued.w.connCredit, 50);

    const closed = setup();
    closed.w.close(err());
    assert.equal(closed.w.trySendNow(FrameType.MSG, 1, EMPTY, bytes(10)), false);

    await tick();
    for (const s of [short, waiting, queued, closed]) assert.equal(s.sink.writes.length, 0);
  });
});

describe("FrameWriter: priorities and order", () => {
  it("control frames jump ahead of data queued for credit", async () => {
    const { w, sink } = setup();
    w.connCredit = 0;
    const a = message(1, bytes(100), { single: true });
    const b = message(3, bytes(50_000), { chunk: 16 * KiB });
    w.enqueue(a.m);
    w.enqueue(b.m);
    w.control(FrameType.CANCEL, 0, 9, new Uint8Array([0x0f, 0xa4]));
    await tick();
    assert.deepEqual(
      sink.frames().map((f) => [f.type, f.id]),
      [[FrameType.CANCEL, 9]],
    );
    w.addConnCredit(1 << 20);
    await tick();
    const types = sink.frames().map((f) => [f.type, f.id]);
    assert.deepEqual(types.slice(0, 3), [
      [FrameType.CANCEL, 9],
      [FrameType.MSG, 1],
      [FrameType.MSG, 3],
    ]);
    assert.equal(a.resolved, 1);
    assert.equal(b.resolved, 1);
  });

  it("control frames are written even while the transport asked to wait, and counted in controlBacklog", async () => {
    const { w, sink } = setup();
    sink.accept = false;
    assert.equal(w.trySendNow(FrameType.MSG, 1, EMPTY, bytes(10)), true);
    await tick();
    assert.equal(w.writable, false);
    assert.equal(w.controlBacklog, 0);
    w.enqueue(message(3, bytes(10), { single: true }).m);
    w.control(FrameType.PING, 0, 0, bytes(8));
    assert.equal(w.controlBacklog, 8 + 16);
    await tick();
    assert.equal(sink.writes.length, 2);
    assert.deepEqual(
      decodeFrames(sink.copies[1]).map((f) => f.type),
      [FrameType.PING],
      "the PING goes out, the queued message does not",
    );
    sink.accept = true;
    w.onDrain();
    assert.equal(w.controlBacklog, 0, "reset on drain");
    await tick();
    assert.deepEqual(
      sink.frames().map((f) => f.id),
      [1, 0, 3],
    );
  });

  it("single-frame messages blocked on credit keep their order (a smaller one does not overtake)", async () => {
    const { w, sink } = setup();
    w.connCredit = 50;
    const a = message(1, bytes(100), { single: true });
    const b = message(3, bytes(10), { single: true });
    w.enqueue(a.m);
    w.enqueue(b.m);
    await tick();
    assert.equal(sink.writes.length, 0);
    assert.equal(b.resolved, 0);
    w.addConnCredit(60);
    await tick();
    assert.deepEqual(
      sink.frames().map((f) => f.id),
      [1, 3],
    );
    assert.equal(w.connCredit, 0);
    assert.deepEqual([a.resolved, b.resolved], [1, 1]);
  });

  it("queued single-frame messages go before chunks of a chunked message", async () => {
    const { w, sink } = setup();
    w.connCredit = 0;
    w.enqueue(message(1, bytes(40_000)).m);
    w.enqueue(message(3, bytes(20), { single: true }).m);
    w.enqueue(message(5, bytes(30), { single: true }).m);
    w.addConnCredit(1 << 20);
    await tick();
    assert.deepEqual(
      sink.frames().map((f) => f.id),
      [3, 5, 1, 1, 1],
    );
  });
});

describe("FrameWriter: batching", () => {
  it("packs small frames of one turn into one BATCH with one valid CRC when batching is on", async () => {
    const { w, sink } = setup();
    w.batching = true;
    for (const id of [1, 3, 5]) w.trySendNow(FrameType.MSG, id, EMPTY, bytes(20, id));
    await tick();
    assert.equal(sink.writes.length, 1);
    const outer = sink.outer();
    assert.equal(outer.length, 1);
    assert.equal(outer[0].type, FrameType.BATCH);
    assert.equal(outer[0].id, 0);
    assert.equal(outer[0].crcOk, true);
    assert.deepEqual(
      outer[0].inner.map((f) => f.id),
      [1, 3, 5],
    );
    const frames = sink.frames();
    assert.deepEqual(
      frames.map((f) => [f.type, f.flags, f.id]),
      [1, 3, 5].map((id) => [FrameType.MSG, Flag.START | Flag.END, id]),
    );
    for (const f of frames) assert.deepEqual(f.payload, bytes(20, f.id));
  });

  it("does not batch when batching is off: every frame is its own, with its own CRC", async () => {
    const { w, sink } = setup();
    for (const id of [1, 3, 5]) w.trySendNow(FrameType.MSG, id, EMPTY, bytes(20, id));
    await tick();
    const outer = sink.outer();
    assert.deepEqual(
      outer.map((f) => [f.type, f.id, f.crcOk]),
      [1, 3, 5].map((id) => [FrameType.MSG, id, true]),
    );
  });

  it("sends a lone small frame as itself, not as a BATCH of one", async () => {
    const { w, sink } = setup();
    w.batching = true;
    w.trySendNow(FrameType.MSG, 7, EMPTY, bytes(20));
    await tick();
    const outer = sink.outer();
    assert.deepEqual(
      outer.map((f) => [f.type, f.id, f.length, f.crcOk]),
      [[FrameType.MSG, 7, 20, true]],
    );
  });

  it("keeps every BATCH payload within batchMax, splitting into several BATCH frames", async () => {
    const { w, sink } = setup();
    w.batching = true;
    w.batchMax = 4096;
    // Traffic first: the slab grows to full size (a new writer's is small, and a
    // batch never spans two slabs).
    for (let i = 0; i < 100; i++) w.trySendNow(FrameType.MSG, 1001 + 2 * i, EMPTY, bytes(1000, i));
    await tick();
    const warm = sink.copies.length;
    // Each inner frame: 1 + 1 (id) + 2 (length) + 1000 = 1004 bytes: four fit in 4096, five do not.
    for (let i = 0; i < 10; i++) w.trySendNow(FrameType.MSG, 2 * i + 1, EMPTY, bytes(1000, i));
    await tick();
    const after = new RecordingSink();
    for (const c of sink.copies.slice(warm)) after.write([c]);
    const outer = after.outer();
    assert.deepEqual(
      outer.map((f) => [f.type, f.inner.length]),
      [
        [FrameType.BATCH, 4],
        [FrameType.BATCH, 4],
        [FrameType.BATCH, 2],
      ],
    );
    for (const f of outer) {
      assert.ok(f.length <= 4096, `BATCH of ${f.length} bytes over batchMax`);
      assert.equal(f.crcOk, true);
    }
    assert.deepEqual(
      after.frames().map((f) => f.id),
      Array.from({ length: 10 }, (_, i) => 2 * i + 1),
    );
  });

  it("sends a frame that does not fit batchMax on its own, between batches, keeping the order", async () => {
    const { w, sink } = setup();
    w.batching = true;
    w.batchMax = 4096;
    w.trySendNow(FrameType.MSG, 1, EMPTY, bytes(10));
    w.trySendNow(FrameType.MSG, 3, EMPTY, bytes(10));
    w.trySendNow(FrameType.MSG, 5, EMPTY, bytes(5000));
    w.trySendNow(FrameType.MSG, 7, EMPTY, bytes(10));
    await tick();
    assert.deepEqual(
      sink.outer().map((f) => [f.type, f.id, f.inner.map((i) => i.id)]),
      [
        [FrameType.BATCH, 0, [1, 3]],
        [FrameType.MSG, 5, []],
        [FrameType.MSG, 7, []],
      ],
    );
    assert.deepEqual(
      sink.frames().map((f) => f.id),
      [1, 3, 5, 7],
    );
  });

  it("appends to the open BATCH in place exactly as encode would: heads and start flags kept, a frame that fills batchMax to the byte stays, one byte more starts the next", async () => {
    const { w, sink } = setup();
    w.batching = true;
    w.batchMax = 1024;
    // Traffic first: the writer's region grows, so that room in the slab is not what splits batches.
    for (let i = 0; i < 40; i++) w.trySendNow(FrameType.MSG, 2001 + 2 * i, EMPTY, bytes(900, i));
    await tick();
    const warm = sink.copies.length;
    const route = new Uint8Array([3, 0x2f, 0x61, 0x62]);
    // First frame opens the batch (encode); the others are appended while they fit.
    w.trySendNow(FrameType.MSG, 1, EMPTY, bytes(10, 1)); // 1 + 1 + 1 + 10 = 13 bytes
    w.trySendNow(FrameType.RES, 2, new Uint8Array([0]), bytes(20, 2)); // 1 + 1 + 1 + 21 = 24
    w.trySendNow(FrameType.REQ, 3, route, bytes(30, 3), Flag.KEYED); // 1 + 1 + 1 + 34 = 37
    // Exactly the rest of batchMax: 1024 - 74 = 950 bytes = 1 + 1 + 2 + 946.
    w.trySendNow(FrameType.MSG, 5, EMPTY, bytes(946, 5));
    // Nothing left: the next frame, of one byte, starts a new batch.
    w.trySendNow(FrameType.MSG, 7, EMPTY, bytes(1, 7));
    w.trySendNow(FrameType.MSG, 9, EMPTY, bytes(2, 9));
    await tick();
    const after = new RecordingSink();
    for (const c of sink.copies.slice(warm)) after.write([c]);
    const outer = after.outer();
    assert.deepEqual(
      outer.map((f) => [f.type, f.length, f.crcOk, f.inner.map((i) => i.id)]),
      [
        [FrameType.BATCH, 1024, true, [1, 2, 3, 5]],
        [FrameType.BATCH, 9, true, [7, 9]],
      ],
    );
    const frames = after.frames();
    assert.deepEqual(
      frames.map((f) => [f.type, f.flags, f.id, f.payload.length]),
      [
        [FrameType.MSG, Flag.START | Flag.END, 1, 10],
        [FrameType.RES, Flag.START | Flag.END, 2, 21],
        [FrameType.REQ, Flag.START | Flag.END | Flag.KEYED, 3, 34],
        [FrameType.MSG, Flag.START | Flag.END, 5, 946],
        [FrameType.MSG, Flag.START | Flag.END, 7, 1],
        [FrameType.MSG, Flag.START | Flag.END, 9, 2],
      ],
    );
    assert.deepEqual(frames[1].payload, concat([new Uint8Array([0]), bytes(20, 2)]));
    assert.deepEqual(frames[2].payload, concat([route, bytes(30, 3)]));
    assert.deepEqual(frames[3].payload, bytes(946, 5));
  });

  it("batches control frames with data frames of the same turn", async () => {
    const { w, sink } = setup();
    w.batching = true;
    w.control(FrameType.CREDIT, 0, 0, new Uint8Array([0x80, 0x80, 0x01]));
    w.trySendNow(FrameType.MSG, 1, EMPTY, bytes(5));
    await tick();
    const outer = sink.outer();
    assert.equal(outer.length, 1);
    assert.deepEqual(
      outer[0].inner.map((f) => f.type),
      [FrameType.CREDIT, FrameType.MSG],
    );
  });
});

describe("FrameWriter: checksums and memory handed over", () => {
  /** Small, medium and chunked (by-reference) frames in one go. */
  async function mixed(w: FrameWriter): Promise<Uint8Array> {
    const big = bytes(70_000, 9);
    w.trySendNow(FrameType.MSG, 1, EMPTY, bytes(10));
    w.trySendNow(FrameType.MSG, 3, EMPTY, bytes(3000));
    w.enqueue(message(5, big, { chunk: 32 * KiB }).m);
    w.control(FrameType.PING, 0, 0, bytes(8));
    await tick();
    return big;
  }

  it("with checksum on, every frame ends in the CRC32C of its header and payload", async () => {
    for (const batching of [false, true]) {
      const { w, sink } = setup();
      w.batching = batching;
      const big = await mixed(w);
      const outer = sink.outer();
      assert.ok(outer.length >= 4);
      for (const f of outer) assert.equal(f.crcOk, true, `frame ${f.type}/${f.id} has a bad trailer`);
      const frames = sink.frames(); // the real decoder verifies the trailers too
      assertBytes(dataOf(frames, 5, 3), big);
    }
  });

  it("with checksum off, frames carry no trailer and decode with checksums off", async () => {
    const { w, sink } = setup();
    w.checksum = false;
    const big = await mixed(w);
    const all = sink.bytes();
    const outer = sink.outer(false);
    assert.equal(
      outer.reduce((n, f) => n + f.size, 0),
      all.length,
    );
    for (const f of outer)
      assert.equal(f.size, 1 + (f.id < 128 ? 1 : 2) + (f.length < 128 ? 1 : f.length < 16384 ? 2 : 3) + f.length);
    const frames = sink.frames(false);
    assert.deepEqual(
      frames.map((f) => f.id),
      [1, 3, 5, 5, 5, 0],
    );
    assertBytes(dataOf(frames, 5, 3), big);
    assert.throws(() => decodeFrames(all, true), "bytes without trailers do not pass a checking decoder");
  });

  it("hands payloads of 16 KiB and more over by reference, smaller ones copied", async () => {
    const { w, sink } = setup();
    const big = bytes(40_000);
    const small = bytes(1000);
    w.enqueue(message(1, big, { chunk: 32 * KiB }).m);
    w.trySendNow(FrameType.MSG, 3, EMPTY, small);
    await tick();
    const chunks = sink.writes.flat();
    const view = chunks.find((c) => c.buffer === big.buffer);
    assert.ok(view !== undefined, "the big chunk is a view of the caller's data");
    assert.deepEqual(
      [view.byteOffset, view.length],
      [0, 32 * KiB - 3],
      "the START frame's data (after the 3-byte total)",
    );
    assert.equal(
      chunks.find((c) => c.buffer === small.buffer),
      undefined,
    );
  });

  it("never changes bytes it handed over, across many writes and new slabs", async () => {
    const { w, sink } = setup();
    w.batching = true;
    for (let round = 0; round < 12; round++) {
      for (let i = 0; i < 40; i++) w.trySendNow(FrameType.MSG, 2 * i + 1, EMPTY, bytes(200 + i * 13, round));
      w.enqueue(message(1001 + 2 * round, bytes(50_000, round), { chunk: 16 * KiB }).m);
      w.control(FrameType.CREDIT, 0, 0, new Uint8Array([0x40]));
      await tick();
      if (round % 3 === 2) w.trim();
    }
    assert.ok(sink.writes.length >= 12);
    for (let i = 0; i < sink.writes.length; i++) {
      assertBytes(concat(sink.writes[i]), sink.copies[i], `write ${i} (changed after it was handed over)`);
    }
    assert.equal(sink.frames().length, 12 * (40 + 4 + 1));
  });

  it("two writers on the shared pool, their transports holding views until they drain (pools reused once confirmed): every frame arrives as sent", async () => {
    // Covers the BATCH appended to in trySendNow and the pool a writer holds as itself (no list).
    let seed = 7;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return Math.floor((seed / 0x80000000) * n);
    };
    const sides = [0, 1].map(() => {
      const side = { held: [] as Uint8Array[], idle: true, out: [] as Uint8Array[], data: [] as string[] };
      const w = new FrameWriter({
        write(chunks) {
          side.held.push(...chunks);
          side.idle = false;
          return rnd(5) !== 0;
        },
        idle: () => side.idle,
      });
      w.batching = true;
      w.batchMax = 16 * KiB;
      w.connCredit = 2 ** 40;
      return Object.assign(side, { w, next: 1, pings: 0 });
    });
    /** The transport wrote what it held: its bytes are read only now (a pool reused too early shows here). */
    const drain = (side: (typeof sides)[number]) => {
      for (const c of side.held) side.out.push(c.slice());
      side.held = [];
      side.idle = true;
      side.w.onDrain();
    };
    const poolsBefore = writePoolsAllocated();
    let payloadBytes = 0;
    for (let step = 0; step < 30_000; step++) {
      const side = sides[rnd(2)];
      const r = rnd(100);
      if (r < 70) {
        const n = rnd(20) === 0 ? 16 * KiB + rnd(20_000) : rnd(rnd(2) === 0 ? 40 : 3000);
        const data = bytes(n, step);
        const head = rnd(3) === 0 ? bytes(1 + rnd(3), step + 1) : EMPTY;
        const type = [FrameType.MSG, FrameType.RES, FrameType.REQ][rnd(3)];
        const keyed = type === FrameType.REQ && rnd(3) === 0 ? Flag.KEYED : 0;
        const id = side.next;
        side.next += 2;
        side.data.push(`${type}/${WHOLE | keyed}/${id}/${Buffer.from(concat([head, data])).toString("hex")}`);
        payloadBytes += n;
        if (!side.w.trySendNow(type, id, head, data, keyed)) {
          const m = message(id, data, { type, head, single: true }).m;
          m.startFlags = keyed;
          side.w.enqueue(m);
        }
      } else if (r < 80) {
        side.w.control(FrameType.PING, 0, 0, bytes(8, side.pings++));
      } else if (r < 88) side.w.flush();
      else if (r < 96) drain(side);
      else await Promise.resolve();
    }
    for (const side of sides) {
      side.w.flush();
      drain(side);
      await tick();
      drain(side);
    }
    assert.ok(writePoolsAllocated() - poolsBefore < payloadBytes / (64 * KiB), "pools were reused");
    for (const side of sides) {
      const all = concat(side.out);
      for (const f of outerFrames(all))
        if (f.type === FrameType.BATCH) assert.ok(f.length <= 16 * KiB, `a BATCH of ${f.length} B (batchMax 16 KiB)`);
      const frames = decodeFrames(all);
      const got = frames
        .filter((f) => f.type !== FrameType.PING)
        .map((f) => `${f.type}/${f.flags}/${f.id}/${Buffer.from(f.payload).toString("hex")}`);
      assert.equal(got.length, side.data.length);
      for (let i = 0; i < got.length; i++) assert.equal(got[i], side.data[i], `frame ${i}`);
      assert.deepEqual(
        frames.filter((f) => f.type === FrameType.PING).map((f) => f.payload),
        Array.from({ length: side.pings }, (_, i) => bytes(8, i)),
      );
    }
  });
});

describe("FrameWriter: chunked messages", () => {
  it("chunks a large message at its chunk size: START with the total, middle frames, END", async () => {
    const { w, sink } = setup();
    const data = bytes(40_000);
    const t = message(7, data, { chunk: 16 * KiB });
    w.enqueue(t.m);
    await tick();
    const frames = sink.frames();
    assert.deepEqual(
      frames.map((f) => [f.type, f.flags, f.id, f.payload.length]),
      [
        [FrameType.MSG, Flag.START, 7, 16 * KiB],
        [FrameType.MSG, 0, 7, 16 * KiB],
        [FrameType.MSG, Flag.END, 7, 40_000 - (16 * KiB - 3) - 16 * KiB],
      ],
    );
    const total = leadingVarint(frames[0].payload);
    assert.deepEqual(total, { value: 40_000, length: 3 });
    assertBytes(dataOf(frames, 7, 3), data);
    assert.equal(t.resolved, 1);
    assert.equal(w.pending, 0);
  });

  it("puts the total, then the head, in the START frame of a chunked REQ", async () => {
    const { w, sink } = setup();
    const head = new Uint8Array([4, 0x2f, 0x61, 0x62, 0x63]);
    const data = bytes(20_000);
    w.enqueue(message(9, data, { type: FrameType.REQ, head, chunk: 16 * KiB }).m);
    await tick();
    const frames = sink.frames();
    assert.deepEqual(
      frames.map((f) => [f.type, f.flags]),
      [
        [FrameType.REQ, Flag.START],
        [FrameType.REQ, Flag.END],
      ],
    );
    const total = leadingVarint(frames[0].payload);
    assert.equal(total.value, 20_000);
    assert.deepEqual(frames[0].payload.subarray(total.length, total.length + head.length), head);
    assertBytes(dataOf(frames, 9, total.length + head.length), data);
  });

  it("interleaves two large messages chunk by chunk, round robin", async () => {
    const { w, sink } = setup();
    w.connCredit = 0;
    const a = message(1, bytes(60_000, 1), { chunk: 16 * KiB });
    const b = message(3, bytes(60_000, 2), { chunk: 16 * KiB });
    w.enqueue(a.m);
    w.enqueue(b.m);
    w.addConnCredit(1 << 20);
    await tick();
    const frames = sink.frames();
    assert.deepEqual(
      frames.map((f) => f.id),
      [1, 3, 1, 3, 1, 3, 1, 3],
    );
    assertBytes(dataOf(frames, 1, 3), bytes(60_000, 1));
    assertBytes(dataOf(frames, 3, 3), bytes(60_000, 2));
    assert.deepEqual([a.resolved, b.resolved], [1, 1]);
  });

  it("a small message sent during a large transfer goes out before the large one's next chunk", async () => {
    const { w, sink } = setup();
    sink.accept = false; // every write fills the transport: one round of the pump per drain
    const big = message(1, bytes(200_000), { chunk: 16 * KiB });
    w.enqueue(big.m);
    await tick();
    assert.deepEqual(
      sink.frames().map((f) => f.id),
      [1],
    );
    const small = message(3, bytes(10), { single: true });
    w.enqueue(small.m);
    await tick();
    assert.equal(small.resolved, 0, "waits for the drain");
    w.onDrain();
    await tick();
    assert.equal(small.resolved, 1);
    assert.deepEqual(
      sink.frames().map((f) => f.id),
      [1, 3, 1],
    );
    for (let i = 0; i < 20 && big.resolved === 0; i++) {
      w.onDrain();
      await tick();
    }
    assert.equal(big.resolved, 1);
    assertBytes(dataOf(sink.frames(), 1, 3), bytes(200_000));
  });

  it("starts a chunked message only when the peer's assembly budget has room", async () => {
    const { w, sink } = setup();
    w.assemblyBudget = 100_000;
    const a = message(1, bytes(80_000), { chunk: 16 * KiB, credit: 16 * KiB });
    const b = message(3, bytes(30_000), { chunk: 16 * KiB });
    w.enqueue(a.m);
    w.enqueue(b.m);
    await tick();
    assert.deepEqual(
      sink.frames().map((f) => f.id),
      [1],
      "b waits: 80,000 + 30,000 > 100,000",
    );
    assert.equal(b.m.started, false);
    w.addStreamCredit(1, 1 << 20);
    await tick();
    assert.equal(a.resolved, 1);
    assert.equal(b.resolved, 1, "a ended: its total no longer counts");
    assertBytes(dataOf(sink.frames(), 3, 3), bytes(30_000));
  });

  it(`keeps at most MAX_OPEN_CHUNKED (${MAX_OPEN_CHUNKED}) chunked messages started and not ended`, async () => {
    const { w, sink } = setup();
    const msgs: Tracked[] = [];
    for (let i = 0; i <= MAX_OPEN_CHUNKED; i++) {
      const t = message(2 * i + 1, bytes(40_000), { chunk: 16 * KiB, credit: 16 * KiB });
      msgs.push(t);
      w.enqueue(t.m);
    }
    await tick();
    const starts = () => sink.frames().filter((f) => (f.flags & Flag.START) !== 0).length;
    assert.equal(starts(), MAX_OPEN_CHUNKED);
    assert.equal(msgs[MAX_OPEN_CHUNKED].m.started, false);
    w.addStreamCredit(1, 1 << 20);
    await tick();
    assert.equal(msgs[0].resolved, 1);
    assert.equal(msgs[MAX_OPEN_CHUNKED].m.started, true, "one ended, the next may start");
    assert.equal(starts(), MAX_OPEN_CHUNKED + 1);
  });
});

describe("FrameWriter: flow control", () => {
  it("a single-frame message waits for connection credit and goes once it suffices", async () => {
    const { w, sink } = setup();
    w.connCredit = 0;
    const t = message(1, bytes(100), { single: true });
    w.enqueue(t.m);
    await tick();
    assert.equal(sink.writes.length, 0);
    w.addConnCredit(99);
    await tick();
    assert.equal(sink.writes.length, 0, "99 bytes of credit for a 100-byte payload");
    assert.equal(t.resolved, 0);
    w.addConnCredit(1);
    await tick();
    assert.equal(t.resolved, 1);
    assert.equal(w.connCredit, 0);
    assert.deepEqual(sink.frames()[0].payload, bytes(100));
  });

  it("connection credit stops a chunked message and more credit restarts it", async () => {
    const { w, sink } = setup();
    w.connCredit = 32 * KiB;
    const t = message(1, bytes(100_000), { chunk: 16 * KiB });
    w.enqueue(t.m);
    await tick();
    assert.equal(sink.frames().length, 2);
    assert.equal(w.connCredit, 0);
    w.addConnCredit(16 * KiB);
    await tick();
    assert.equal(sink.frames().length, 3);
    w.addConnCredit(1 << 20);
    await tick();
    assert.equal(t.resolved, 1);
    assertBytes(dataOf(sink.frames(), 1, 3), bytes(100_000));
  });

  it("sends a partial chunk when at least 16 KiB of credit is there, never a smaller sliver", async () => {
    const { w, sink } = setup();
    w.connCredit = 10_000;
    w.enqueue(message(1, bytes(200_000), { chunk: 64 * KiB }).m);
    await tick();
    assert.equal(sink.writes.length, 0, "10,000 bytes of credit: no sliver");
    w.addConnCredit(10_000);
    await tick();
    assert.deepEqual(
      sink.frames().map((f) => f.payload.length),
      [20_000],
    );
    assert.equal(w.connCredit, 0);
  });

  it("message (stream) credit stops a chunked message; addStreamCredit restarts it", async () => {
    const { w, sink } = setup();
    const t = message(5, bytes(100_000), { chunk: 16 * KiB, credit: 32 * KiB });
    w.enqueue(t.m);
    await tick();
    assert.equal(sink.frames().length, 2);
    assert.equal(t.m.credit, 0);
    assert.ok(w.connCredit > 1 << 20, "connection credit is not what stops it");
    assert.equal(w.addStreamCredit(5, 16 * KiB), true);
    await tick();
    assert.equal(sink.frames().length, 3);
    assert.equal(w.addStreamCredit(5, 1 << 20), true);
    await tick();
    assert.equal(t.resolved, 1);
    assertBytes(dataOf(sink.frames(), 5, 3), bytes(100_000));
    assert.equal(w.addStreamCredit(5, 1), false, "ended: no such message in progress");
    assert.equal(w.addStreamCredit(77, 1), false);
  });

  it("sends stream items in order under stream credit; a COMPRESSED item costs its content length", async () => {
    const { w, sink } = setup();
    const s = streamMessage(3, 1000);
    w.enqueue(s.m);
    s.items.push({ flags: Flag.START, head: bytes(12), data: EMPTY, content: 0, crc: -1 });
    s.items.push({
      flags: Flag.COMPRESSED,
      head: new Uint8Array([0x88, 0x0e]),
      data: bytes(100),
      content: 1800,
      crc: -1,
    });
    w.wake();
    await tick();
    assert.equal(sink.frames().length, 1, "the compressed item costs 1800 > 988 credit left");
    assert.equal(s.m.credit, 1000 - 12);
    w.addStreamCredit(3, 812); // 1800 exactly
    await tick();
    assert.equal(s.m.credit, 0);
    s.items.push({ flags: Flag.END, head: EMPTY, data: bytes(5), content: 0, crc: -1 });
    w.wake();
    await tick();
    assert.equal(s.resolved, 0, "the END item waits for credit too");
    w.addStreamCredit(3, 5);
    await tick();
    assert.equal(s.resolved, 1);
    assert.equal(w.pending, 0);
    assert.deepEqual(
      sink.frames().map((f) => [f.type, f.flags, f.id, f.payload.length]),
      [
        [FrameType.STREAM, Flag.START, 3, 12],
        [FrameType.STREAM, Flag.COMPRESSED, 3, 102],
        [FrameType.STREAM, Flag.END, 3, 5],
      ],
    );
    assert.deepEqual(
      s.sent.map((i) => i.flags),
      [Flag.START, Flag.COMPRESSED, Flag.END],
    );
  });

  it("uses a stream item's precomputed CRC for the frame trailer, and releases its buffer only after a drain", async () => {
    const { w, sink } = setup();
    sink.accept = false;
    const s = streamMessage(1, 1 << 20);
    w.enqueue(s.m);
    const data = bytes(40_000);
    let released = 0;
    s.items.push({
      flags: 0,
      head: EMPTY,
      data,
      content: data.length,
      crc: crc32c(data),
      release: () => released++,
    });
    w.wake();
    await tick();
    const outer = sink.outer();
    assert.equal(outer.length, 1);
    assert.equal(outer[0].crcOk, true);
    assert.equal(released, 0, "the transport may still hold the bytes");
    w.onDrain();
    assert.equal(released, 1);
    w.onDrain();
    assert.equal(released, 1, "once");
  });
});

describe("FrameWriter: backpressure", () => {
  it("writes nothing more after the sink returned false, until onDrain", async () => {
    const { w, sink } = setup();
    sink.accept = false;
    assert.equal(w.trySendNow(FrameType.MSG, 1, EMPTY, bytes(10)), true);
    await tick();
    assert.equal(w.writable, false);
    assert.equal(w.trySendNow(FrameType.MSG, 3, EMPTY, bytes(10)), false);
    const a = message(5, bytes(10), { single: true });
    const b = message(7, bytes(50_000));
    w.enqueue(a.m);
    w.enqueue(b.m);
    w.addConnCredit(100);
    await tick();
    assert.equal(sink.writes.length, 1);
    assert.equal(w.pending, 2);
    sink.accept = true;
    w.onDrain();
    await tick();
    assert.equal(w.writable, true);
    assert.deepEqual([a.resolved, b.resolved], [1, 1]);
    assert.deepEqual(
      sink.frames().map((f) => f.id),
      [1, 5, 7, 7, 7, 7],
    );
  });
});

describe("FrameWriter: remove", () => {
  it("removes a queued single-frame message: 'queued', rejected, never written", async () => {
    const { w, sink } = setup();
    w.connCredit = 0;
    const t = message(1, bytes(10), { single: true });
    w.enqueue(t.m);
    const e = err();
    assert.equal(w.remove(FrameType.MSG, 1, e), "queued");
    assert.deepEqual(t.rejected, [e]);
    assert.equal(w.pending, 0);
    w.addConnCredit(1000);
    await tick();
    assert.equal(sink.writes.length, 0);
    assert.equal(t.resolved, 0);
  });

  it("removes a chunked message before its START: 'queued'", async () => {
    const { w, sink } = setup();
    w.connCredit = 0;
    const t = message(1, bytes(50_000));
    w.enqueue(t.m);
    assert.equal(w.remove(FrameType.MSG, 1, err()), "queued");
    assert.equal(t.rejected.length, 1);
    w.addConnCredit(1 << 20);
    await tick();
    assert.equal(sink.writes.length, 0);
  });

  it("removes a partially sent chunked message: 'started', rejected, nothing more of it written", async () => {
    const { w, sink } = setup();
    const t = message(3, bytes(100_000), { credit: 16 * KiB });
    const other = message(5, bytes(20), { single: true });
    w.enqueue(t.m);
    await tick();
    assert.equal(sink.frames().length, 1);
    const e = err("peer refused");
    assert.equal(w.remove(FrameType.MSG, 3, e), "started");
    assert.deepEqual(t.rejected, [e]);
    assert.equal(w.addStreamCredit(3, 1 << 20), false);
    w.enqueue(other.m);
    await tick();
    assert.deepEqual(
      sink.frames().map((f) => f.id),
      [3, 5],
    );
    assert.equal(t.resolved, 0);
  });

  it("removing a started chunked message frees its share of the assembly budget", async () => {
    const { w, sink } = setup();
    w.assemblyBudget = 100_000;
    const a = message(1, bytes(80_000), { credit: 16 * KiB });
    const b = message(3, bytes(30_000));
    w.enqueue(a.m);
    w.enqueue(b.m);
    await tick();
    assert.equal(b.m.started, false);
    assert.equal(w.remove(FrameType.MSG, 1, err()), "started");
    await tick();
    assert.equal(b.resolved, 1);
    assertBytes(dataOf(sink.frames(), 3, 3), bytes(30_000));
  });

  it("answers 'none' for an unknown id or a different type, and leaves the message queued", async () => {
    const { w, sink } = setup();
    w.connCredit = 0;
    const t = message(1, bytes(10), { type: FrameType.REQ, single: true });
    w.enqueue(t.m);
    assert.equal(w.remove(FrameType.REQ, 3, err()), "none");
    assert.equal(w.remove(FrameType.RES, 1, err()), "none");
    assert.equal(t.rejected.length, 0);
    w.addConnCredit(100);
    await tick();
    assert.equal(t.resolved, 1);
    assert.equal(sink.frames()[0].type, FrameType.REQ);
  });
});

describe("FrameWriter: close", () => {
  it("close(err) rejects everything queued with err and stops writing", async () => {
    const { w, sink } = setup();
    w.connCredit = 16 * KiB;
    const partial = message(1, bytes(100_000)); // one chunk fits the credit
    const queuedChunked = message(3, bytes(50_000));
    const single = message(5, bytes(10), { single: true });
    const stream = streamMessage(7, 1 << 20);
    w.enqueue(partial.m);
    w.enqueue(queuedChunked.m);
    w.enqueue(single.m);
    w.enqueue(stream.m);
    await tick();
    const before = sink.writes.length;
    assert.equal(before, 1);
    const e = new PointSubError("ERR_CONNECTION_CLOSED", "gone");
    w.close(e);
    for (const t of [partial, queuedChunked, single, stream]) {
      assert.deepEqual(t.rejected, [e]);
      assert.equal(t.resolved, 0);
    }
    assert.equal(w.pending, 0);
    w.addConnCredit(1 << 20);
    w.control(FrameType.PING, 0, 0, bytes(8));
    assert.equal(w.trySendNow(FrameType.MSG, 9, EMPTY, bytes(1)), false);
    w.onDrain();
    await tick();
    assert.equal(sink.writes.length, before, "nothing is written after close");
    w.close(new PointSubError("ERR_PROTOCOL", "again"));
    assert.equal(partial.rejected.length, 1, "a second close changes nothing");
  });

  it("frames encoded but not yet handed over when it closes are dropped", async () => {
    const { w, sink } = setup();
    w.trySendNow(FrameType.MSG, 1, EMPTY, bytes(10));
    w.close(err());
    await tick();
    assert.equal(sink.writes.length, 0);
  });
});

describe("FrameWriter: accounting", () => {
  it("answerQueued counts queued RES bytes until they are handed over; MSG and REQ do not count", async () => {
    const { w } = setup();
    w.connCredit = 0;
    const status = new Uint8Array([0]);
    w.enqueue(message(1, bytes(100), { type: FrameType.RES, head: status, single: true }).m);
    w.enqueue(message(3, bytes(100), { type: FrameType.MSG, single: true }).m);
    w.enqueue(message(5, bytes(100), { type: FrameType.REQ, single: true }).m);
    assert.equal(w.answerQueued, 101);
    w.enqueue(message(7, bytes(50_000), { type: FrameType.RES, head: status }).m);
    assert.equal(w.answerQueued, 101 + 50_001);
    w.addConnCredit(401 + 16 * KiB); // the three singles and the RES's first chunk
    await tick();
    assert.equal(w.answerQueued, 50_001 - (16 * KiB - 3));
    w.addConnCredit(1 << 20);
    await tick();
    assert.equal(w.answerQueued, 0);
    assert.equal(w.pending, 0);
  });

  it("answerQueued drops what a removed RES still owed, whether queued or partially sent", async () => {
    const { w } = setup();
    const status = new Uint8Array([0]);
    w.connCredit = 0;
    w.enqueue(message(1, bytes(100), { type: FrameType.RES, head: status, single: true }).m);
    w.enqueue(message(3, bytes(60_000), { type: FrameType.RES, head: status, credit: 16 * KiB }).m);
    assert.equal(w.answerQueued, 101 + 60_001);
    assert.equal(w.remove(FrameType.RES, 1, err()), "queued");
    assert.equal(w.answerQueued, 60_001);
    w.addConnCredit(1 << 20);
    await tick();
    assert.equal(w.answerQueued, 60_001 - (16 * KiB - 3), "the START went out");
    assert.equal(w.remove(FrameType.RES, 3, err()), "started");
    assert.equal(w.answerQueued, 0);
  });

  it("answerQueued goes back to 0 on close", () => {
    const { w } = setup();
    w.connCredit = 0;
    w.enqueue(message(1, bytes(100), { type: FrameType.RES, single: true }).m);
    assert.equal(w.answerQueued, 100);
    w.close(err());
    assert.equal(w.answerQueued, 0);
  });

  it("blockedSince: set when work cannot go out, kept while nothing moves, renewed by progress, 0 when clear", async (t) => {
    const clock = stubClock(t, 1000);
    const { w, sink } = setup();
    assert.equal(w.blockedSince, 0);
    w.connCredit = 0;
    w.enqueue(message(1, bytes(100), { single: true }).m);
    assert.equal(w.blockedSince, 1000, "a single waits for connection credit");
    clock.set(2000);
    w.enqueue(message(3, bytes(10), { single: true }).m);
    w.addConnCredit(50);
    assert.equal(w.blockedSince, 1000, "no frame went out: still blocked since 1000");
    w.addConnCredit(1000);
    assert.equal(w.blockedSince, 0, "everything went out");
    await tick();

    clock.set(3000);
    w.connCredit = 16 * KiB;
    w.enqueue(message(5, bytes(100_000)).m);
    assert.equal(w.blockedSince, 3000, "a chunked message waits for credit");
    clock.set(4000);
    w.addConnCredit(16 * KiB);
    assert.equal(w.blockedSince, 4000, "a frame went out: blocked anew from now");
    w.addConnCredit(1 << 20);
    assert.equal(w.blockedSince, 0);
    await tick();

    clock.set(5000);
    sink.accept = false;
    w.trySendNow(FrameType.MSG, 7, EMPTY, bytes(5));
    await tick();
    assert.equal(w.blockedSince, 5000, "the transport asked to wait");
    sink.accept = true;
    w.onDrain();
    assert.equal(w.blockedSince, 0);
  });

  it("blockedSince: a stream waiting for its items or its stream credit does not count", async (t) => {
    stubClock(t, 1000);
    const { w } = setup();
    const s = streamMessage(1, 10);
    w.enqueue(s.m);
    assert.equal(w.blockedSince, 0, "no items yet");
    s.items.push({ flags: 0, head: EMPTY, data: bytes(100), content: 100, crc: -1 });
    w.wake();
    assert.equal(w.pending, 1);
    assert.equal(w.blockedSince, 0, "the reader has not returned stream credit: its choice");
    const c = message(3, bytes(50_000), { credit: 16 * KiB });
    w.enqueue(c.m);
    assert.equal(w.blockedSince, 1000, "a chunked message waiting for its credit counts");
  });
});

describe("FrameWriter: whenDrained and trim", () => {
  it("whenDrained resolves once everything queued was handed over", async () => {
    const { w } = setup();
    w.connCredit = 0;
    w.enqueue(message(1, bytes(100), { single: true }).m);
    let drained = false;
    void w.whenDrained().then(() => (drained = true));
    await tick();
    assert.equal(drained, false);
    w.addConnCredit(100);
    await tick();
    assert.equal(drained, true);
  });

  it("whenDrained waits for the transport's drain", async () => {
    const { w, sink } = setup();
    sink.accept = false;
    w.trySendNow(FrameType.MSG, 1, EMPTY, bytes(10));
    await tick();
    let drained = false;
    void w.whenDrained().then(() => (drained = true));
    await tick();
    assert.equal(drained, false);
    w.onDrain();
    await tick();
    assert.equal(drained, true);
  });

  it("whenDrained resolves when the writer closes", async () => {
    const { w } = setup();
    w.connCredit = 0;
    w.enqueue(message(1, bytes(100), { single: true }).m);
    let drained = false;
    void w.whenDrained().then(() => (drained = true));
    w.close(err());
    await tick();
    assert.equal(drained, true);
  });

  it("whenDrained resolves on an idle writer (nothing queued, transport writable)", async () => {
    const { w } = setup();
    let drained = false;
    void w.whenDrained().then(() => (drained = true));
    await tick();
    await tick();
    assert.equal(drained, true);
  });

  it("writers share one write pool and keep no slack after a flush: an idle writer holds no write memory", async () => {
    const a = setup();
    const b = setup();
    // Interleaved one-frame writers (a broadcast, chatty sessions): each frame
    // lands right after the previous one in the same pool, so no writer keeps
    // a private buffer or reserved bytes between flushes.
    for (let i = 0; i < 20; i++) {
      a.w.trySendNow(FrameType.MSG, 2 * i + 1, EMPTY, bytes(100, i));
      b.w.trySendNow(FrameType.MSG, 2 * i + 1, EMPTY, bytes(60, i));
      await tick();
    }
    const only = (writes: Uint8Array[][]) =>
      writes.map((w) => {
        assert.equal(w.length, 1);
        return w[0];
      });
    const ca = only(a.sink.writes);
    const cb = only(b.sink.writes);
    let adjacent = 0;
    for (let i = 0; i < 20; i++) {
      // b's frame starts where a's ended (unless the pool ran out between them).
      if (ca[i].buffer === cb[i].buffer && cb[i].byteOffset === ca[i].byteOffset + ca[i].length) adjacent++;
      // and a's next frame where b's ended.
      if (i < 19 && cb[i].buffer === ca[i + 1].buffer) {
        assert.equal(ca[i + 1].byteOffset, cb[i].byteOffset + cb[i].length, "no bytes kept back between flushes");
      }
    }
    assert.ok(adjacent >= 19, `${adjacent} of 20 frames of b right after a's`);
    assert.equal(a.sink.frames().length, 20);
    assert.equal(b.sink.frames().length, 20);
  });

  it("a flood's frames go out in few chunks: the writer's region grows in place", async () => {
    const { w, sink } = setup();
    for (let i = 0; i < 2000; i++) w.trySendNow(FrameType.MSG, 1 + 2 * i, EMPTY, bytes(100, i));
    await tick();
    const chunks = sink.writes.flat();
    // ~216 KB in 16 KiB flushes: one chunk per flush, plus one where a pool ends.
    const bytesOut = chunks.reduce((n, c) => n + c.length, 0);
    assert.ok(
      chunks.length <= Math.ceil(bytesOut / (16 * KiB)) + Math.ceil(bytesOut / (64 * KiB)) + 2,
      `${chunks.length} chunks`,
    );
    assert.equal(sink.frames().length, 2000);
  });

  it("trim keeps frames encoded and not yet handed over, and queued messages", async () => {
    const { w, sink } = setup();
    w.batching = true;
    w.trySendNow(FrameType.MSG, 1, EMPTY, bytes(30, 1));
    w.trySendNow(FrameType.MSG, 3, EMPTY, bytes(30, 3)); // an open BATCH
    w.trim();
    await tick();
    w.connCredit = 0;
    const q = message(5, bytes(40_000));
    w.enqueue(q.m);
    w.trim();
    w.addConnCredit(1 << 20);
    await tick();
    const frames = sink.frames();
    assert.deepEqual(
      frames.map((f) => f.id),
      [1, 3, 5, 5, 5],
    );
    assert.deepEqual(frames[0].payload, bytes(30, 1));
    assert.deepEqual(frames[1].payload, bytes(30, 3));
    assertBytes(dataOf(frames, 5, 3), bytes(40_000));
  });
});

describe("FrameWriter: paced chunks grouped into writes", () => {
  /** A writer whose bulk is paced by a real Pacer (window 256 KiB, frames of 64 KiB before any measurement). */
  function paced(readingPaused = false): { w: FrameWriter; sink: RecordingSink } {
    const { w, sink } = setup();
    w.pacing = (writer) => {
      const p = new Pacer(writer);
      p.readingPaused = readingPaused;
      return p;
    };
    return { w, sink };
  }

  it("frames cut by the pacer go to the transport together, unchanged and in order", async () => {
    const { w, sink } = paced();
    const big = message(1, bytes(200_000), { chunk: 256 * KiB });
    w.enqueue(big.m);
    await tick();
    const frames = sink.frames().filter((f) => f.type === FrameType.MSG);
    assert.ok(frames.length >= 3, `the pacer cut the message into ${frames.length} frames`);
    for (const f of frames.slice(0, -1)) assert.ok(f.payload.length <= 64 * KiB);
    assertBytes(dataOf(frames, 1, 3), bytes(200_000));
    assert.equal(big.resolved, 1);
    assert.ok(sink.writes.length < frames.length, `${sink.writes.length} writes for ${frames.length} frames`);
  });

  it("stays within the pacer's window: the rest waits for its acknowledgement, and a small message goes first", async () => {
    const { w, sink } = paced();
    const big = message(1, bytes(1_000_000), { chunk: 256 * KiB });
    w.enqueue(big.m);
    await tick();
    const sent = sink.frames().filter((f) => f.type === FrameType.MSG);
    const bytesSent = sent.reduce((n, f) => n + f.payload.length, 0);
    assert.ok(bytesSent <= 256 * KiB + 64 * KiB, `${bytesSent} bytes before any acknowledgement`);
    assert.equal(big.resolved, 0);
    const small = message(3, bytes(10), { single: true });
    w.enqueue(small.m);
    await tick();
    assert.equal(small.resolved, 1);
    const ids = sink
      .frames()
      .filter((f) => f.type === FrameType.MSG)
      .map((f) => f.id);
    assert.equal(ids[ids.length - 1], 3, "the small message is the last frame: nothing of the big one after it");
  });

  it("with an unbounded window (reading paused) every frame is written at once, as unpaced", async () => {
    const { w, sink } = paced(true);
    sink.accept = false; // every write fills the transport: one frame per drain
    const big = message(1, bytes(200_000), { chunk: 16 * KiB });
    w.enqueue(big.m);
    await tick();
    assert.deepEqual(
      sink
        .frames()
        .filter((f) => f.type === FrameType.MSG)
        .map((f) => f.id),
      [1],
    );
    const small = message(3, bytes(10), { single: true });
    w.enqueue(small.m);
    w.onDrain();
    await tick();
    assert.deepEqual(
      sink
        .frames()
        .filter((f) => f.type === FrameType.MSG)
        .map((f) => f.id),
      [1, 3, 1],
    );
  });
});
